"""Joint Gaussian matching prior: the image's shallow feature mean and covariance against natural ones.

The full-covariance generalization of DeepInversion's BatchNorm prior (which
matches each channel's mean and variance, README "The method"). For each layer, the image's feature
vectors ``x [M, C]`` (one per position of the view) have mean ``m`` and covariance
``S = (x − m)ᵀ(x − m)/M``; the natural images' are ``μ, Σ`` (the moments of a stats folder). The
penalty is one of

- ``bures`` (default): the squared 2-Wasserstein (Bures–Wasserstein) distance between the two
  Gaussians, ``‖m − μ‖² + tr S + tr Σ − 2 tr (Σ^½ S Σ^½)^½``, divided by ``tr Σ`` (scale-free);
- ``kl``: ``KL(N(m, S) ‖ N(μ, Σ)) = ½ [tr(Σ⁻¹S) + (μ − m)ᵀΣ⁻¹(μ − m) − C + ln det Σ − ln det S]``
  divided by ``C``, with ``S`` ridged by ``1e-4 · tr Σ / C`` (an image with ``M < C`` positions has a
  singular ``S``).

averaged over the layers. ``Σ^½``, ``Σ⁻¹`` and ``ln det Σ`` are computed once, in float64, on the host.
The trace of the matrix square root has a hand-written gradient (``½ A^{-½}`` through one ``eigh``,
eigenvalues floored), so repeated or zero eigenvalues of a rank-deficient ``S`` never give NaN.
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.priors.base import PriorBase, ordered

__all__ = ["GaussianMatchPrior", "NaturalGaussian", "gaussian_match", "natural_gaussian", "bures_wasserstein",
           "gaussian_kl", "trace_sqrtm", "DISTANCES"]

DISTANCES = ("bures", "kl")
_KL_RIDGE = 1e-4


class NaturalGaussian(NamedTuple):
    """One layer's natural moments with the factors the distances need (float32 device arrays)."""

    mean: jax.Array
    cov: jax.Array
    sqrt_cov: jax.Array   # Σ^½ (symmetric)
    precision: jax.Array  # Σ⁻¹ (not shrunk)
    logdet: jax.Array     # ln det Σ
    trace: jax.Array      # tr Σ


def natural_gaussian(mean, cov) -> NaturalGaussian:
    """:class:`NaturalGaussian` from a mean ``[C]`` and covariance ``[C, C]`` (factored in float64).

    Raises:
      UsageError: the covariance is not symmetric positive definite.
    """
    mean = np.asarray(mean, np.float64)
    cov = np.asarray(cov, np.float64)
    if cov.ndim != 2 or cov.shape != (mean.shape[0],) * 2 or not np.all(np.isfinite(cov)):
        raise UsageError(f"gaussian_match: covariance of shape {cov.shape} does not fit a mean of shape {mean.shape}")
    cov = (cov + cov.T) / 2
    w, v = np.linalg.eigh(cov)
    if w.min() <= 0:
        raise UsageError("gaussian_match: the natural covariance is not positive definite")
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return NaturalGaussian(f32(mean), f32(cov), f32((v * np.sqrt(w)) @ v.T), f32((v / w) @ v.T),
                           f32(np.sum(np.log(w))), f32(np.trace(cov)))


@jax.custom_vjp
def trace_sqrtm(a: jax.Array) -> jax.Array:
    """``tr(A^½)`` of a symmetric positive semi-definite ``A`` (negative eigenvalues read as 0)."""
    w, _ = jnp.linalg.eigh((a + a.T) / 2)
    return jnp.sum(jnp.sqrt(jnp.clip(w, 0.0)))


def _trace_sqrtm_fwd(a):
    w, v = jnp.linalg.eigh((a + a.T) / 2)
    return jnp.sum(jnp.sqrt(jnp.clip(w, 0.0))), (w, v)


def _trace_sqrtm_bwd(res, g):
    w, v = res
    floor = 1e-6 * jnp.maximum(jnp.max(jnp.abs(w)), 1e-12)  # d tr(A^½)/dA = ½ A^{-½}, eigenvalues floored
    scale = 0.5 / jnp.sqrt(jnp.maximum(w, floor))
    return (g * (v * scale) @ v.T,)


trace_sqrtm.defvjp(_trace_sqrtm_fwd, _trace_sqrtm_bwd)


def _image_moments(x):
    m = jnp.mean(x, axis=0)
    d = x - m
    return m, d.T @ d / x.shape[0]


def bures_wasserstein(x: jax.Array, natural: NaturalGaussian) -> jax.Array:
    """Squared Bures–Wasserstein distance of the Gaussian fit of ``x [M, C]`` to ``natural`` (not normalized)."""
    m, s = _image_moments(x)
    cross = natural.sqrt_cov @ s @ natural.sqrt_cov
    return jnp.sum((m - natural.mean) ** 2) + jnp.trace(s) + natural.trace - 2.0 * trace_sqrtm(cross)


def gaussian_kl(x: jax.Array, natural: NaturalGaussian, ridge: float = _KL_RIDGE) -> jax.Array:
    """``KL(N(m, S + r·I) ‖ natural)`` of the Gaussian fit of ``x [M, C]``; ``r = ridge · tr Σ / C``."""
    m, s = _image_moments(x)
    c = x.shape[-1]
    s = s + (ridge * natural.trace / c) * jnp.eye(c, dtype=s.dtype)
    d = m - natural.mean
    chol = jnp.linalg.cholesky(s)
    logdet_s = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return 0.5 * (jnp.sum(natural.precision * s) + d @ natural.precision @ d - c + natural.logdet - logdet_s)


@part
class GaussianMatchPrior(PriorBase):
    """Matches each layer's feature mean and covariance to natural ones (module docstring).

    Attributes:
      natural: ``{layer: NaturalGaussian}``.
      view: feature view (``pixel``, ``patchK``) the moments were collected with.
      distance: ``bures`` or ``kl``.
      weight: λ.
      warmup: steps before the prior acts.
    """

    trace_name = "gauss"
    layers = property(lambda self: tuple(self.natural), doc="the layers the statistics cover")

    natural: Mapping[str, NaturalGaussian]
    view: str = static("pixel")
    distance: str = static("bures")
    weight: float = static(1.0)
    warmup: int = static(0)

    def _distance(self, features):
        from jaxviz.stats import views

        total = jnp.zeros(())
        for layer, g in self.natural.items():
            x = views.apply_view(self.view, features[layer])
            term = bures_wasserstein(x, g) / g.trace if self.distance == "bures" else gaussian_kl(x, g) / x.shape[-1]
            total = total + term / len(self.natural)
        return total

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        value = self._distance(features)
        active = jnp.asarray(step >= self.warmup, value.dtype)
        return self.weight * active * value, state, value

    def report(self, features, state):
        return {"gauss": self._distance(features)}

    def __repr__(self):
        return (f"gaussian_match(layers={list(self.layers)}, view={self.view}, distance={self.distance}, "
                f"weight={self.weight}, warmup={self.warmup})")


def gaussian_match(stats=None, *, model, layers: Sequence[str] | None = None, distance: str = "bures",
                   weight: float = 1.0, warmup: int = 0) -> GaussianMatchPrior:
    """The joint Gaussian matching prior for ``model``.

    Args:
      stats: a ``jaxviz stats`` folder, a StatsBundle or ``{layer: LayerStats}`` (anything with
        ``mean`` and ``cov``); default the ``pixel`` statistics shipped for ``model``.
      model: the model being visualized.
      layers: which layers (default: with the shipped statistics ``SHIPPED_PRIOR_LAYERS``, else all).
      distance, weight, warmup: see :class:`GaussianMatchPrior`.

    Raises:
      UsageError: bad options or statistics.
    """
    from jaxviz.stats import store as stats_store

    if distance not in DISTANCES:
        raise UsageError(f"gaussian_match: distance must be {' or '.join(DISTANCES)}, got {distance!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
        raise UsageError(f"gaussian_match: weight must be a finite number ≥ 0, got {weight!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"gaussian_match: warmup must be an integer ≥ 0, got {warmup!r}")
    view = "pixel"
    if stats is None:
        stats = stats_store.shipped_stats_dir(model.name, "pixel")
        if stats is None:
            raise UsageError(f"gaussian_match: no statistics ship for {model.name}; pass stats=")
        layers = list(stats_store.SHIPPED_PRIOR_LAYERS) if layers is None else layers
    if isinstance(stats, (str, os.PathLike)):
        bundle = stats_store.load_stats(os.fspath(stats), model=model, layers=layers)
        table, view = dict(bundle.layers), bundle.view
    elif hasattr(stats, "layers") and hasattr(stats, "view"):
        table, view = dict(stats.layers), stats.view
    elif isinstance(stats, Mapping) and stats:
        table = dict(stats)
    else:
        raise UsageError("gaussian_match: stats= must be a stats folder, a StatsBundle or {layer: LayerStats}")
    chosen = list(layers) if layers is not None else list(table)
    missing = [l for l in chosen if l not in table]
    if not chosen or missing:
        raise UsageError(f"gaussian_match: no statistics for layer(s) {', '.join(missing) or '(none chosen)'}")
    if view not in ("pixel",) and not view.startswith("patch"):
        raise UsageError(f"gaussian_match: needs per-position features (pixel or patchK view), got {view}")
    model.check_layers(chosen)
    natural = {l: natural_gaussian(table[l].mean, table[l].cov) for l in chosen}
    return GaussianMatchPrior(ordered(natural), view=view, distance=distance, weight=float(weight), warmup=warmup)
