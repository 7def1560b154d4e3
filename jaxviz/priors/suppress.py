"""The method: suppress the shallow neurons that make the image an outlier of natural statistics.

Maximize ``target − λ·Σ_selected relu(z_i)`` with ``z_i = (a_i − μ_i)/σ_i``; the selected neurons
are re-chosen every ``every`` steps among the over-activated contributors to the Mahalanobis
distance at outlier positions; the first ``warmup`` steps are plain DeepDream (the seed's two-phase
schedule). README "The method", docs/design.md §1.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jaxviz.common.pytree import part, static
from jaxviz.priors.base import (
    LayerMoments,
    PriorBase,
    check_options,
    feature_view,
    ordered,
    shipped_or,
    spatial_map,
    stats_moments_of,
)
from jaxviz.stats import outliers as outliers_lib

__all__ = ["OutlierPrior", "outliers"]


class _OutlierState(NamedTuple):
    mask: dict          # layer -> [dim] 1.0 for the currently suppressed entries
    times: dict         # layer -> [dim] how many selection rounds chose each entry
    score: dict         # layer -> [dim] summed contribution when chosen
    outlier_map: dict   # layer -> how often each position was an outlier at selection: [M] positions of the
                        # model input, or [rows, cols] of the canvas when render maps them (jaxviz.image.canvas)
    rounds: jax.Array


@part
class OutlierPrior(PriorBase):
    """The method: suppress the shallow neurons that make the image an outlier.

    Attributes:
      stats: ``{layer: LayerMoments}`` of natural images.
      view: feature view the stats were collected with (``pixel``, ``pooled``, ``patchK``).
      weight: λ.
      k: neurons selected per layer and round.
      every: steps between re-selections (K).
      warmup: steps of plain DeepDream before suppression starts.
      quantile: χ²(dim) quantile above which a position is an outlier.
      penalty: what is pushed down for the selected neurons: ``activation`` (their standardized
        activation ``relu(z_i)``, the default) or ``contribution`` (their positive share of the
        Mahalanobis distance, ``relu(c_i)``, so a neuron stops counting once it fits the others).
      scope: where the penalty acts: ``outliers`` (only at the positions that are outliers at this
        step; the default, chosen by the method study in README "Experiments") or ``image`` (every
        position).
    """

    trace_name = "d2"  # what apply's trace is: mean D² at the stats layers

    stats: Mapping[str, LayerMoments]
    view: str = static("pixel")
    weight: float = static(10.0)
    k: int = static(8)
    every: int = static(16)
    warmup: int = static(32)
    quantile: float = static(0.99)
    penalty: str = static("activation")
    scope: str = static("outliers")

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.stats)

    def _samples(self, features, layer):
        return feature_view(self.view, features[layer])

    def _penalty(self, x, m: LayerMoments, mask, outlier):
        per_neuron = jax.nn.relu(outliers_lib.contributions(x, m.mean, m.precision) if self.penalty == "contribution"
                                 else (x - m.mean) / m.std)
        per_position = jnp.sum(mask * per_neuron, axis=-1)
        if self.scope == "outliers":
            per_position = per_position * jax.lax.stop_gradient(outlier).astype(per_position.dtype)
        return jnp.mean(per_position)

    def init(self, features, *, canvas=None):
        """``canvas``: ``{layer: activation shape on the canvas}`` to keep the outlier map in canvas cells."""
        zeros = {l: jnp.zeros_like(m.mean) for l, m in self.stats.items()}
        maps = {l: jnp.zeros(self._samples(features, l).shape[0]) for l in self.stats}
        for layer in (canvas or {}) if self.view != "pooled" else ():
            k = int(self.view[5:]) if self.view.startswith("patch") else 1
            h, w = canvas[layer][:2]
            maps[layer] = jnp.zeros((h - k + 1, w - k + 1))
        return _OutlierState(zeros, zeros, zeros, maps, jnp.zeros((), jnp.int32))

    def _hits(self, features, layer, outlier, old, locate):
        """This round's outlier positions added to ``old``: flat (model input) or in canvas cells."""
        if old.ndim == 1 or locate is None:
            return outlier.astype(old.dtype).reshape(old.shape) if old.ndim == 1 else jnp.zeros_like(old)
        k = int(self.view[5:]) if self.view.startswith("patch") else 1
        rows, cols = old.shape
        cells = locate(features[layer].shape[:2], (rows + k - 1, cols + k - 1), self.view)
        flat = jnp.zeros(rows * cols, old.dtype).at[jnp.where(cells >= 0, cells, rows * cols)].max(
            outlier.astype(old.dtype), mode="drop")
        return flat.reshape(rows, cols)

    def apply(self, features, state: _OutlierState, step, *, pool=None, locate=None):
        """``locate``: see :func:`jaxviz.image.canvas.canvas_cells` (given by render with ``init(canvas=)``)."""
        refresh = (step >= self.warmup) & ((step - self.warmup) % self.every == 0)
        penalty, trace = jnp.zeros(()), jnp.zeros(())
        mask, times, score, maps = {}, {}, {}, {}
        for layer, m in self.stats.items():
            x = self._samples(features, layer)
            dim = x.shape[-1]
            sel = outliers_lib.select(jax.lax.stop_gradient(x), m.mean, m.precision, k=min(self.k, dim),
                                      threshold=outliers_lib.chi2_threshold(dim, self.quantile))
            mask[layer] = jnp.where(refresh, sel.mask, state.mask[layer])
            times[layer] = state.times[layer] + refresh * sel.mask
            chosen = jnp.zeros_like(sel.mask).at[sel.neurons].set(sel.score)
            score[layer] = state.score[layer] + refresh * chosen
            old = state.outlier_map[layer]
            maps[layer] = old + refresh * self._hits(features, layer, sel.outlier, old, locate)
            penalty = penalty + self._penalty(x, m, mask[layer], sel.outlier)
            trace = trace + jnp.mean(sel.d2) / len(self.stats)
        active = jnp.asarray(step >= self.warmup, penalty.dtype)
        state = _OutlierState(mask, times, score, maps, state.rounds + refresh)
        return self.weight * active * penalty, state, trace

    def report(self, features, state: _OutlierState):
        out = {"d2": jnp.zeros(())}
        for layer, m in self.stats.items():
            x = self._samples(features, layer)
            out["d2"] = out["d2"] + jnp.mean(outliers_lib.mahalanobis(x, m.mean, m.precision)) / len(self.stats)
            out[f"times/{layer}"] = state.times[layer]
            out[f"score/{layer}"] = state.score[layer]
        first = self.layers[0]
        out["outlier_map"] = spatial_map(features[first], state.outlier_map[first], self.view)
        out["outlier_map_canvas"] = jnp.asarray(state.outlier_map[first].ndim == 2)  # else: model-input positions
        out["rounds"] = state.rounds
        return out

    def __repr__(self):
        return (f"outliers(layers={list(self.layers)}, view={self.view}, weight={self.weight}, k={self.k}, "
                f"every={self.every}, warmup={self.warmup}, quantile={self.quantile}, penalty={self.penalty}, "
                f"scope={self.scope})")


def outliers(stats=None, *, model=None, layers=None, view: str | None = None, **options) -> OutlierPrior:
    """The method: suppress the shallow neurons that make the image an outlier of ``stats``.

    Args:
      stats: a ``jaxviz stats`` directory (needs ``model``), a StatsBundle, :class:`jaxviz.stats.Statistics`
        or ``{layer: LayerMoments}``; default the statistics shipped for ``model`` (README "Shipped statistics").
      model: the model being visualized (checks the statistics' layers and shapes).
      layers: use only these layers of ``stats`` (default all of them; of the shipped ones, blocks.2 and blocks.4).
      view: the feature view, for ``{layer: LayerMoments}`` (directories and bundles record theirs).
      **options: :class:`OutlierPrior` fields (``weight``, ``k``, ``every``, ``warmup``, ``quantile``).

    Raises:
      UsageError: bad options or statistics.

    >>> import jaxviz
    >>> model = jaxviz.load_model("efficientnet_lite0")
    >>> jaxviz.priors.outliers(model=model, weight=5.0).layers    # the shipped statistics' prior layers
    ('blocks.2', 'blocks.4')
    """
    check_options("outliers", OutlierPrior, **options)
    stats, layers = shipped_or(stats, model, layers, "prior 'outliers'", view)
    stats_moments, stats_view = stats_moments_of(stats, model, layers, view)
    return OutlierPrior(ordered(stats_moments), view=stats_view, **options)
