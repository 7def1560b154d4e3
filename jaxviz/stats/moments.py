"""Streaming mean and covariance of feature vectors: pure ``init`` / ``update`` / ``merge`` / ``finalize``.

The state is a :class:`StatsState` of sufficient statistics centred at the running mean (Chan et al.'s
pairwise form), so batches, devices and hosts combine by :func:`merge` in any order and stay accurate in
float32 even when the mean is large compared with the spread. Everything is written for one statistic;
``jax.vmap`` runs a stack of them::

    s = stats.init(dim)
    s = stats.update(s, samples)            # samples [N, dim], optional weights [N] (0/1 mask)
    s = stats.merge(s1, s2)
    mean, cov = stats.finalize(s)           # unbiased covariance (divides by count - 1)
    est = stats.estimate(s, shrinkage="oas")

Besides ``count``, ``mean`` and the comoment ``m2`` the state carries two cheap norm moments
(``m3 = Σ‖y‖²y``, ``m4 = Σ‖y‖⁴`` with ``y = x − mean``) so that the Ledoit–Wolf shrinkage, which
needs fourth moments, is exact for streamed data.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StatsState", "Precision", "LayerStats", "init", "batch_stats", "update", "merge", "merge_stack",
           "psum_merge", "check_shrinkage",
           "finalize", "oas_shrinkage", "ledoit_wolf_shrinkage", "precision", "estimate", "SHRINKAGE"]

SHRINKAGE = ("oas", "ledoit_wolf")
_HIGHEST = jax.lax.Precision.HIGHEST


class StatsState(NamedTuple):
    """Sufficient statistics of a weighted sample ``{(x_k, w_k)}``, centred at its own mean.

    Attributes:
      count: ``[]`` total weight ``n = Σ w_k`` (the number of samples for a 0/1 mask).
      mean: ``[dim]`` ``Σ w_k x_k / n``.
      m2: ``[dim, dim]`` comoment ``Σ w_k y_k y_kᵀ`` with ``y_k = x_k − mean``.
      m3: ``[dim]`` ``Σ w_k ‖y_k‖² y_k`` (only needed to merge ``m4``).
      m4: ``[]`` ``Σ w_k ‖y_k‖⁴`` (for the Ledoit–Wolf shrinkage).
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array
    m3: jax.Array
    m4: jax.Array


def init(dim: int, dtype=jnp.float32) -> StatsState:
    """The statistics of no samples."""
    return StatsState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), jnp.zeros((dim, dim), dtype),
                      jnp.zeros((dim,), dtype), jnp.zeros((), dtype))


def _safe(n):
    return jnp.where(n > 0, n, jnp.ones_like(n))


def batch_stats(samples: jax.Array, weights: jax.Array | None = None, *, dtype=None) -> StatsState:
    """The state of one batch alone.

    The batch mean is refined by a second pass over the centred samples, and the comoment is
    corrected for the tiny residual, so a large common offset costs no accuracy.

    Args:
      samples: ``[N, dim]``.
      weights: ``[N]`` non-negative frequency weights (a 0/1 mask drops padded rows); default all 1.
      dtype: accumulation dtype (default: ``samples``' floating dtype).
    """
    dtype = dtype or (samples.dtype if jnp.issubdtype(samples.dtype, jnp.floating) else jnp.float32)
    x = samples.astype(dtype)
    w = jnp.ones(x.shape[:1], dtype) if weights is None else weights.astype(dtype)
    n = jnp.sum(w)
    rough = jnp.sum(w[:, None] * x, axis=0) / _safe(n)
    y = x - rough
    r = jnp.sum(w[:, None] * y, axis=0) / _safe(n)  # residual of the rough mean
    wy = w[:, None] * y
    m2 = jnp.matmul(wy.T, y, precision=_HIGHEST) - n * jnp.outer(r, r)
    y = y - r
    sq = jnp.sum(y * y, axis=1)
    return StatsState(n, rough + r, m2, jnp.sum((w * sq)[:, None] * y, axis=0), jnp.sum(w * sq * sq))


def _shift(s: StatsState, d: jax.Array):
    """``(m2, m3, m4)`` of ``s``'s sample about ``s.mean + d`` instead of its own mean."""
    dd = jnp.dot(d, d)
    m2d = jnp.matmul(s.m2, d, precision=_HIGHEST)
    tr = jnp.trace(s.m2)
    m2 = s.m2 + s.count * jnp.outer(d, d)
    m3 = s.m3 - tr * d - 2.0 * m2d - s.count * dd * d
    m4 = s.m4 + s.count * dd * dd + 4.0 * jnp.dot(d, m2d) + 2.0 * dd * tr - 4.0 * jnp.dot(d, s.m3)
    return m2, m3, m4


def merge(a: StatsState, b: StatsState) -> StatsState:
    """Statistics of the union of two samples (exact up to rounding; symmetric; associative)."""
    n = a.count + b.count
    fa, fb = a.count / _safe(n), b.count / _safe(n)
    delta = b.mean - a.mean
    mean = a.mean + delta * fb
    m2 = a.m2 + b.m2 + jnp.outer(delta, delta) * (a.count * fb)  # Chan et al.
    _, m3a, m4a = _shift(a, delta * fb)
    _, m3b, m4b = _shift(b, -delta * fa)
    return StatsState(n, mean, m2, m3a + m3b, m4a + m4b)


def psum_merge(state: StatsState, axis_name) -> StatsState:
    """Merges the states along a named mapped axis (inside ``shard_map``, ``pmap`` or ``vmap``).

    Each member is shifted to the common mean and the shifted moments are summed with ``psum``, so
    memory stays at one state per device whatever the device count.
    """
    n = jax.lax.psum(state.count, axis_name)
    w = state.count / _safe(n)
    rough = jax.lax.psum(w * state.mean, axis_name)
    mean = rough + jax.lax.psum(w * (state.mean - rough), axis_name)
    m2, m3, m4 = _shift(state, mean - state.mean)
    m2, m3, m4 = jax.lax.psum((m2, m3, m4), axis_name)
    return StatsState(n, mean, m2, m3, m4)


def update(state: StatsState, samples: jax.Array, weights: jax.Array | None = None) -> StatsState:
    """Adds a batch ``samples [N, dim]`` (optionally weighted, e.g. a 0/1 mask ``[N]``) to ``state``."""
    return merge(state, batch_stats(samples, weights, dtype=state.mean.dtype))


def merge_stack(stack: StatsState) -> StatsState:
    """Merges a stack of states (leading axis) by a balanced pairwise tree."""
    while stack.count.shape[0] > 1:
        k = stack.count.shape[0]
        half = k // 2
        merged = jax.vmap(merge)(jax.tree.map(lambda x: x[:half], stack),
                                 jax.tree.map(lambda x: x[half:2 * half], stack))
        if k % 2:
            merged = jax.tree.map(lambda m, x: jnp.concatenate([m, x[-1:]]), merged, stack)
        stack = merged
    return jax.tree.map(lambda x: x[0], stack)


def finalize(state: StatsState, *, ddof: int = 1) -> tuple[jax.Array, jax.Array]:
    """``(mean, cov)``; ``cov = m2 / (count − ddof)``: unbiased by default, maximum likelihood with ``ddof=0``."""
    m2 = 0.5 * (state.m2 + state.m2.T)
    return state.mean, m2 / (state.count - ddof)


def oas_shrinkage(cov_ml: jax.Array, count) -> jax.Array:
    """Oracle Approximating Shrinkage coefficient ρ towards ``tr(S)/p · I`` (Chen et al. 2010).

    ``ρ = min(1, (tr(S²) + tr²(S)) / ((n + 1)(tr(S²) − tr²(S)/p)))`` — the real-valued form of the
    authors' implementation (also scikit-learn's); the paper's eq. 23 carries extra ``2/p`` terms.

    Args:
      cov_ml: the maximum-likelihood sample covariance ``S`` (``ddof=0``).
      count: number of samples ``n``.
    """
    p = cov_ml.shape[-1]
    tr = jnp.trace(cov_ml)
    tr2 = jnp.sum(cov_ml * cov_ml)  # tr(S²) for symmetric S
    num = tr2 + tr * tr
    den = (count + 1.0) * (tr2 - tr * tr / p)
    return jnp.where(den > 0, jnp.minimum(num / jnp.where(den > 0, den, 1.0), 1.0), 1.0)


def ledoit_wolf_shrinkage(cov_ml: jax.Array, count, m4) -> jax.Array:
    """Ledoit–Wolf (2004) coefficient ρ towards ``tr(S)/p · I``, from streamed moments.

    Uses ``Σ_k ‖y_k y_kᵀ − S‖²_F = Σ_k ‖y_k‖⁴ − n‖S‖²_F``: only ``m4`` is needed besides ``S``.

    Args:
      cov_ml: the maximum-likelihood sample covariance ``S``.
      count: number of samples ``n``.
      m4: ``Σ_k ‖y_k‖⁴`` (:attr:`StatsState.m4`).
    """
    p = cov_ml.shape[-1]
    tr = jnp.trace(cov_ml)
    s2 = jnp.sum(cov_ml * cov_ml)
    delta = s2 - tr * tr / p  # ‖S − μI‖²
    beta = jnp.clip((m4 - count * s2) / (count * count), 0.0, None)
    return jnp.where(delta > 0, jnp.minimum(beta, delta) / jnp.where(delta > 0, delta, 1.0), 1.0)


class Precision(NamedTuple):
    """A shrunk covariance ``Σ̂ = (1 − ρ)·C + ρ·tr(C)/p·I`` and its inverse.

    Attributes:
      precision: ``[dim, dim]`` ``P = Σ̂⁻¹``.
      chol: ``[dim, dim]`` lower Cholesky factor ``L`` of ``Σ̂`` (``Σ̂ = L Lᵀ``, ``D² = ‖L⁻¹ d‖²``).
      shrinkage: ``[]`` the coefficient ρ used.
      condition: ``[]`` condition number of ``Σ̂`` (equal to that of ``P``).
    """

    precision: jax.Array
    chol: jax.Array
    shrinkage: jax.Array
    condition: jax.Array


def check_shrinkage(value) -> str | float:
    """Normalizes a shrinkage choice: ``"oas"``, ``"ledoit_wolf"`` or a number in ``[0, 1]`` (a string
    such as ``"0.1"`` is accepted); anything else is a :class:`~jaxviz.common.errors.UsageError`."""
    from jaxviz.common.errors import UsageError

    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        if key in SHRINKAGE:
            return key
        try:
            value = float(key)
        except ValueError:
            raise UsageError(f"unknown shrinkage '{value}' (choose oas, ledoit_wolf or a number in [0, 1])") from None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"shrinkage {value} is outside [0, 1]")
    return value


def _coefficient(cov, count, shrinkage, m4):
    shrinkage = check_shrinkage(shrinkage)
    if shrinkage == "oas":
        return oas_shrinkage(cov * ((count - 1.0) / count), count)
    if shrinkage == "ledoit_wolf":
        if m4 is None:
            raise ValueError("ledoit_wolf shrinkage needs m4 (use stats.estimate on a StatsState)")
        return ledoit_wolf_shrinkage(cov * ((count - 1.0) / count), count, m4)
    return jnp.asarray(shrinkage, cov.dtype)


def precision(cov: jax.Array, count, shrinkage="oas", *, m4=None) -> Precision:
    """Shrinks an unbiased covariance and inverts it through its Cholesky factor.

    Args:
      cov: ``[dim, dim]`` unbiased sample covariance (as from :func:`finalize`).
      count: number of samples behind it.
      shrinkage: ``"oas"``, ``"ledoit_wolf"`` (needs ``m4``) or a fixed coefficient in ``[0, 1]``.
      m4: ``Σ‖y‖⁴`` of the sample (:attr:`StatsState.m4`), for ``"ledoit_wolf"``.

    Returns:
      A :class:`Precision` (NaNs if the shrunk covariance is not positive definite, e.g. ρ = 0 with
      a dead neuron).
    """
    p = cov.shape[-1]
    rho = _coefficient(cov, count, shrinkage, m4).astype(cov.dtype)
    target = jnp.trace(cov) / p
    shrunk = (1.0 - rho) * cov + rho * target * jnp.eye(p, dtype=cov.dtype)
    chol = jnp.linalg.cholesky(shrunk)
    inv_l = jax.scipy.linalg.solve_triangular(chol, jnp.eye(p, dtype=cov.dtype), lower=True)
    prec = jnp.matmul(inv_l.T, inv_l, precision=_HIGHEST)
    eig = jnp.linalg.eigvalsh(shrunk)
    return Precision(0.5 * (prec + prec.T), chol, rho, eig[-1] / eig[0])


class LayerStats(NamedTuple):
    """Finalized statistics of one layer.

    Attributes:
      mean: ``[dim]``.
      cov: ``[dim, dim]`` unbiased sample covariance (not shrunk).
      precision: ``[dim, dim]`` inverse of the shrunk covariance.
      chol: ``[dim, dim]`` lower Cholesky factor of the shrunk covariance.
      shrinkage: the coefficient ρ.
      condition: condition number of the shrunk covariance.
      count: number of samples (feature vectors).
      dim: feature dimension.
    """

    mean: jax.Array
    cov: jax.Array
    precision: jax.Array
    chol: jax.Array
    shrinkage: float
    condition: float
    count: float
    dim: int


def estimate(state: StatsState, *, shrinkage="oas") -> LayerStats:
    """Finalizes a state: mean, unbiased covariance and the shrunk precision.

    A host float64 state (what :func:`jaxviz.stats.collect.collect_moments` returns) is finalized in float64
    and gives host float64 arrays, as :func:`jaxviz.stats.store.load_stats` does; anything else keeps
    its dtype (and jits).
    """
    if not jax.config.jax_enable_x64 and any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in state):
        with jax.enable_x64(True):
            est = estimate(StatsState(*(jnp.asarray(a) for a in state)), shrinkage=shrinkage)
            return LayerStats(*(np.asarray(v) if isinstance(v, jax.Array) else v for v in est))
    mean, cov = finalize(state)
    est = precision(cov, state.count, shrinkage, m4=state.m4)
    return LayerStats(mean, cov, est.precision, est.chol, est.shrinkage, est.condition, state.count,
                      int(mean.shape[-1]))
