"""Quantile (distribution) matching prior, and the per-channel quantiles of natural photos it reads.

README "The method": instead of only pushing outlier neurons down, push a
shallow layer's per-channel activation *distribution* toward the natural one. For every channel
``c`` of a layer, the image's ``M`` activations (one per position, ``pixel`` view) are sorted and
matched to the natural quantile function at the same ranks (sort-matching, as VITAL does with class
photos; here class-agnostic, with the 1,000 photos of the shipped statistics)::

    penalty_c = mean_r ((sort(a_c)[r] − Q_c((r + ½)/M)) / σ_c)²

``Q_c`` interpolates linearly between the stored quantiles (clamped at the outermost), ``σ_c`` is
the natural standard deviation. ``channels="all"`` matches every channel of the layers;
``channels="outliers"`` only the outlier neurons of the method (re-selected every ``every`` steps
after ``warmup``, like :class:`jaxviz.priors.OutlierPrior`), which needs the moments too.

Quantiles live next to the moments of a stats folder: ``quantiles.json`` (model, view, layers,
dims, levels, samples, the command, a content hash) and ``quantiles-N.npz`` (float32
``NNN/values [C, Q]``, ``NNN/mean``, ``NNN/std``, ``levels [Q]``). Those of EfficientNet-Lite0 ship
in its ``pixel`` folder (:data:`QUANTILE_LAYERS`), made by ``scripts/ship_stats.py --views quantiles``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import HostConstant, part, static
from jaxviz.priors.base import PriorBase, ordered
from jaxviz.stats.quantiles import (
    LEVELS,
    MAX_POSITIONS,
    QUANTILE_LAYERS,
    QUANTILES_FILE,
    QuantileStats,
    collect_quantiles,
    default_levels,
    load_quantiles,
    quantiles_of,
    save_quantiles,
    shipped_quantiles_dir,
    sort_match_targets,
)

# the reference data's functions are re-exported: the prior is used with them (``quantile(collect_quantiles(...))``)
__all__ = ["QuantilePrior", "quantile", "QuantileStats", "collect_quantiles", "save_quantiles", "load_quantiles",
           "shipped_quantiles_dir", "sort_match_targets", "default_levels", "quantiles_of", "QUANTILE_LAYERS",
           "QUANTILES_FILE", "LEVELS", "MAX_POSITIONS"]


# ------------------------------------------------------------------------------------ the pass


# ------------------------------------------------------------------------------------ storage


# ------------------------------------------------------------------------------------ the prior


@part
class _Layer:
    """One layer's natural quantiles (a static host table: read in float64 at trace time) and moments."""

    table: HostConstant = static()  # wraps a QuantileStats
    moments: Any = None  # priors.LayerMoments (leaves), for channels="outliers"

    @property
    def quantiles(self) -> QuantileStats:
        return self.table.value


class _SelectState(NamedTuple):
    mask: dict       # layer -> [C] channels currently matched
    times: dict      # layer -> [C] rounds that selected each channel
    rounds: jax.Array


@part
class QuantilePrior(PriorBase):
    """Sort-matching of per-channel activation distributions to natural quantiles (module docstring).

    Attributes:
      layers_: ``{layer: _Layer}`` (build with :func:`quantile`).
      weight: λ.
      channels: ``all`` (every channel) or ``outliers`` (the method's selected outlier neurons).
      k, every, warmup, threshold_quantile: the selection's settings (``outliers``); ``warmup``
        also delays ``all``.
    """

    trace_name = "quantile"

    layers_: Mapping[str, _Layer]
    weight: float = static(1.0)
    channels: str = static("all")
    k: int = static(8)
    every: int = static(16)
    warmup: int = static(0)
    threshold_quantile: float = static(0.99)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layers_)

    def _per_channel(self, a, q: QuantileStats):
        x = a.reshape(-1, a.shape[-1])
        target = jnp.asarray(sort_match_targets(q, x.shape[0]), x.dtype)
        z = (jnp.sort(x, axis=0) - target) / jnp.asarray(np.maximum(q.std, 1e-6), x.dtype)
        return jnp.mean(z * z, axis=0)  # [C]

    def init(self, features, *, canvas=None):
        if self.channels == "all":
            return ()
        zeros = {l: jnp.zeros(entry.quantiles.values.shape[0]) for l, entry in self.layers_.items()}
        return _SelectState(zeros, zeros, jnp.zeros((), jnp.int32))

    def apply(self, features, state, step, *, pool=None, locate=None):
        from jaxviz.stats import outliers as outliers_lib

        total = jnp.zeros(())
        if self.channels == "all":
            for layer, entry in self.layers_.items():
                total = total + jnp.mean(self._per_channel(features[layer], entry.quantiles)) / len(self.layers_)
            new_state = state
        else:
            refresh = (step >= self.warmup) & ((step - self.warmup) % self.every == 0)
            mask, times = {}, {}
            for layer, entry in self.layers_.items():
                m = entry.moments
                x = jax.lax.stop_gradient(features[layer].reshape(-1, features[layer].shape[-1]))
                dim = x.shape[-1]
                sel = outliers_lib.select(x, m.mean, m.precision, k=min(self.k, dim),
                                          threshold=outliers_lib.chi2_threshold(dim, self.threshold_quantile))
                mask[layer] = jnp.where(refresh, sel.mask, state.mask[layer])
                times[layer] = state.times[layer] + refresh * sel.mask
                per = self._per_channel(features[layer], entry.quantiles)
                total = total + jnp.sum(mask[layer] * per) / jnp.maximum(jnp.sum(mask[layer]), 1.0) / len(self.layers_)
            new_state = _SelectState(mask, times, state.rounds + refresh)
        active = jnp.asarray(step >= self.warmup, total.dtype)
        return self.weight * active * total, new_state, total

    def report(self, features, state):
        out = {"quantile": jnp.zeros(())}
        for layer, entry in self.layers_.items():
            per = self._per_channel(features[layer], entry.quantiles)
            out["quantile"] = out["quantile"] + jnp.mean(per) / len(self.layers_)
            if self.channels == "outliers":  # metrics.json lists the matched channels with their final loss
                out[f"times/{layer}"] = state.times[layer]
                out[f"score/{layer}"] = state.times[layer] * per
        if self.channels == "outliers":
            out["rounds"] = state.rounds
        return out

    def __repr__(self):
        sel = (f", k={self.k}, every={self.every}, threshold_quantile={self.threshold_quantile}"
               if self.channels == "outliers" else "")
        return (f"quantile(layers={list(self.layers)}, weight={self.weight}, channels={self.channels}, "
                f"warmup={self.warmup}{sel})")


def _number(name, value, *, low=0.0, integer=False, below=None):
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and np.isfinite(value) and value >= low and (below is None or value < below)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise UsageError(f"quantile: {name} must be {kind} ≥ {low}{f' and < {below}' if below else ''}, got {value!r}")


def quantile(stats=None, *, model, layers: Sequence[str] | None = None, quantiles=None, weight: float = 1.0,
             channels: str = "all", k: int = 8, every: int = 16, warmup: int = 0,
             threshold_quantile: float = 0.99) -> QuantilePrior:
    """The quantile-matching prior for ``model``.

    Args:
      stats: a stats folder (its ``quantiles.json``, and its moments for ``channels="outliers"``),
        :class:`jaxviz.stats.Statistics`, or ``{layer: QuantileStats}``; default those shipped for ``model``.
      model: the model being visualized.
      layers: which layers (default: all of ``stats``; of the shipped ones, those of the outlier prior).
      quantiles: the quantiles when not those of ``stats``: a folder or ``{layer: QuantileStats}``.
      weight, channels, k, every, warmup, threshold_quantile: see :class:`QuantilePrior`.

    Raises:
      UsageError: bad options; StatsNotFoundError / StatsMismatchError: no or wrong quantiles.
    """
    from jaxviz.priors.base import stats_moments_of
    from jaxviz.stats import store as stats_store

    _number("weight", weight)
    _number("k", k, low=1, integer=True)
    _number("every", every, low=1, integer=True)
    _number("warmup", warmup, integer=True)
    if not (isinstance(threshold_quantile, (int, float)) and 0 < threshold_quantile < 1):
        raise UsageError(f"quantile: threshold_quantile must be strictly between 0 and 1, got {threshold_quantile!r}")
    if channels not in ("all", "outliers"):
        raise UsageError(f"quantile: channels must be 'all' or 'outliers', got {channels!r}")
    if quantiles is None and isinstance(stats, Mapping) and stats and \
            all(isinstance(v, QuantileStats) for v in stats.values()):
        quantiles, stats = stats, None  # {layer: QuantileStats}: the quantiles themselves
    if quantiles is None and isinstance(stats, (str, os.PathLike)):
        quantiles = stats  # quantiles live next to the moments of a stats folder
    if quantiles is None and hasattr(stats, "quantiles"):  # jaxviz.stats.Statistics
        quantiles = stats.quantiles
    if quantiles is None:
        layers = list(stats_store.SHIPPED_PRIOR_LAYERS) if layers is None else layers
    elif layers is None and isinstance(quantiles, Mapping):
        layers = list(quantiles)
    elif layers is None:  # a folder: all its layers
        quantiles = load_quantiles(os.fspath(quantiles), model=model)
        layers = list(quantiles)
    layers = list(layers)
    if not layers:
        raise UsageError("quantile: layers is empty")
    model.check_layers(layers)
    if quantiles is None:
        quantiles = shipped_quantiles_dir(model.name)
        if quantiles is None:
            raise UsageError(f"quantile: no quantiles ship for {model.name}; pass quantiles= "
                             "(jaxviz.priors.quantile_match.collect_quantiles and save_quantiles make them)")
    if isinstance(quantiles, (str, os.PathLike)):
        table = load_quantiles(os.fspath(quantiles), model=model, layers=layers)
    elif isinstance(quantiles, Mapping):
        missing = [l for l in layers if l not in quantiles]
        if missing:
            raise UsageError(f"quantile: no quantiles for layer(s) {', '.join(missing)}")
        table = {l: quantiles[l] for l in layers}
    else:
        raise UsageError("quantile: quantiles= must be a folder or {layer: QuantileStats}")
    for layer, q in table.items():
        if model.layers[layer][-1] != np.shape(q.values)[0]:
            raise UsageError(f"quantile: layer {layer} has {model.layers[layer][-1]} channels, "
                             f"the quantiles {np.shape(q.values)[0]}")
    moments = {l: None for l in layers}
    if channels == "outliers":
        source = stats if stats is not None else stats_store.shipped_stats_dir(model.name, "pixel")
        if source is None:
            raise UsageError(f"quantile: channels='outliers' needs stats= (none ship for {model.name})")
        moments, view = stats_moments_of(source, model, layers, "pixel")
        if view != "pixel":
            raise UsageError(f"quantile: channels='outliers' needs pixel-view statistics, got {view}")
    return QuantilePrior(ordered({l: _Layer(HostConstant(table[l]), moments[l]) for l in layers}), weight=float(weight), channels=channels,
                         k=k, every=every, warmup=warmup, threshold_quantile=float(threshold_quantile))
