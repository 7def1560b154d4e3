"""Mahalanobis distance, per-neuron contributions, and the selection of outlier neurons.

For a feature vector ``x`` with ``d = x − μ`` and precision ``P``: ``D² = dᵀ P d`` and the
contribution of neuron ``i`` is ``c_i = d_i (P d)_i``, so ``Σ_i c_i = D²`` exactly. A position is
an *outlier* when its ``D²`` exceeds the χ²(dim) quantile; its *outlier neurons* are the
over-activated ones (``d_i > 0``) with the largest positive contributions (docs/design.md §1).

Everything is written for one vector (or one image's ``[M, dim]`` positions) and vmaps.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common.errors import UsageError

__all__ = ["mahalanobis", "contributions", "chi2_threshold", "Selection", "select"]


def contributions(x: jax.Array, mean: jax.Array, precision: jax.Array) -> jax.Array:
    """Per-neuron contributions ``c_i = d_i (P d)_i`` to the squared Mahalanobis distance.

    Args:
      x: ``[..., dim]`` feature vectors.
      mean: ``[dim]``.
      precision: ``[dim, dim]`` symmetric positive definite.

    Returns:
      ``[..., dim]``; summing the last axis gives ``D²``.
    """
    d = x - mean
    return d * (d @ precision)  # P is symmetric, so d @ P == (P d)ᵀ


def mahalanobis(x: jax.Array, mean: jax.Array, precision: jax.Array) -> jax.Array:
    """Squared Mahalanobis distance ``D² = dᵀ P d`` over the last axis (``[...]``)."""
    return jnp.sum(contributions(x, mean, precision), axis=-1)


def chi2_threshold(dim: int, quantile: float = 0.99) -> float:
    """The ``quantile`` of χ²(dim): ``D²`` of a Gaussian sample exceeds it with probability ``1 − quantile``.

    Raises:
      UsageError: ``dim`` is not a positive integer or ``quantile`` not strictly between 0 and 1.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise UsageError(f"chi2_threshold: dim must be a positive integer, got {dim!r}")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.floating)) or not 0 < quantile < 1:
        raise UsageError(f"chi2_threshold: quantile must be strictly between 0 and 1, got {quantile!r}")
    return _chi2_ppf(int(dim), float(quantile))


@functools.lru_cache(maxsize=None)
def _chi2_ppf(dim: int, quantile: float) -> float:
    from scipy.stats import chi2

    return float(chi2.ppf(quantile, dim))


class Selection(NamedTuple):
    """Outlier neurons of one image at one layer.

    Attributes:
      neurons: ``[k]`` channel indices, largest total contribution first.
      score: ``[k]`` their summed positive contribution over the outlier positions (0 = not an outlier).
      count: ``[k]`` number of outlier positions where each neuron was over-activated.
      mask: ``[dim]`` 1.0 for selected neurons with a positive score, else 0.0.
      outlier: ``[M]`` bool, positions whose ``D²`` exceeds the threshold.
      d2: ``[M]`` squared distance of each position.
    """

    neurons: jax.Array
    score: jax.Array
    count: jax.Array
    mask: jax.Array
    outlier: jax.Array
    d2: jax.Array


def select(x: jax.Array, mean: jax.Array, precision: jax.Array, *, k: int, threshold: float) -> Selection:
    """Finds the over-activated neurons that make the outlier positions outliers.

    Args:
      x: ``[M, dim]`` feature vectors of one image (e.g. every position of a layer).
      mean: ``[dim]``; precision: ``[dim, dim]``.
      k: how many neurons to select.
      threshold: ``D²`` above which a position is an outlier (see :func:`chi2_threshold`).

    Returns:
      A :class:`Selection`.
    """
    c = contributions(x, mean, precision)
    d2 = jnp.sum(c, axis=-1)
    outlier = d2 > threshold
    over = (x > mean) & (c > 0) & outlier[:, None]  # over-activated and pushing the position outward
    score = jnp.sum(jnp.where(over, c, 0.0), axis=0)
    count = jnp.sum(over, axis=0)
    top_score, neurons = jax.lax.top_k(score, k)
    mask = jnp.zeros_like(score).at[neurons].set((top_score > 0).astype(score.dtype))
    return Selection(neurons, top_score, count[neurons], mask, outlier, d2)
