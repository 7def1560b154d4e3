"""Priors subtracted from the objective during rendering (``--prior``).

A prior is any object satisfying the :class:`Prior` protocol (an immutable object, like an optax
transformation, whose state :func:`jaxviz.render.render_images` threads through the steps):

- ``layers``: the layers it reads (static);
- ``init(features) -> state``: per-image state from the features of the initial image;
- ``apply(features, state, step) -> (penalty, state, trace)``: the penalty to subtract
  (differentiable in ``features``), the next state (e.g. re-selected outlier neurons; no gradient
  flows into it) and a scalar recorded every step (mean D² at the stats layers);
- ``report(features, state) -> {name: array}``: per-image diagnostics for ``metrics.json``.

All are written for one image; :mod:`jaxviz.render` vmaps them over the batch.

``outliers`` is the method (README, "The method"): maximize ``target − λ·Σ_selected relu(z_i)`` where
``z_i = (a_i − μ_i)/σ_i`` and the selected neurons are re-chosen every ``every`` steps among the
over-activated contributors to the Mahalanobis distance at outlier positions; the first
``warmup`` steps are plain DeepDream (the seed's two-phase schedule). ``mahalanobis`` (ablation)
penalizes the mean ``D²/dim`` of all positions, ``bn`` is DeepInversion's BatchNorm prior.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError

__all__ = ["Prior", "LayerMoments", "NoPrior", "none", "moments", "load_moments", "stats_moments_of", "check_options",
           "feature_view", "spatial_map", "describe"]


@runtime_checkable
class Prior(Protocol):
    """What :func:`jaxviz.render.render_images` needs of a prior (all methods for ONE image)."""

    @property
    def layers(self) -> tuple[str, ...]:
        """Layers whose features ``init``, ``apply`` and ``report`` read."""

    def init(self, features: Mapping[str, jax.Array]) -> Any:
        """Initial state (a pytree) from the features of the first transformed image."""

    def apply(self, features: Mapping[str, jax.Array], state: Any, step: jax.Array) -> tuple[Any, Any, Any]:
        """``(penalty, new_state, trace)``: scalar subtracted from the objective, next state, logged scalar."""

    def report(self, features: Mapping[str, jax.Array], state: Any) -> dict:
        """Per-image diagnostics ``{name: array}`` of the final image (may be empty)."""


class LayerMoments(NamedTuple):
    """What a prior needs of one layer's statistics (host arrays)."""

    mean: jax.Array
    precision: jax.Array
    std: jax.Array


@dataclasses.dataclass(frozen=True)
class NoPrior:
    """Plain activation maximization: no penalty."""

    layers: tuple[str, ...] = ()

    def init(self, features):
        return ()

    def apply(self, features, state, step):
        return jnp.zeros(()), state, jnp.zeros(())

    def report(self, features, state):
        return {}

    def __repr__(self):
        return "none"


def none() -> NoPrior:
    """The ``none`` prior."""
    return NoPrior()


def feature_view(name, activation):
    from jaxviz.stats import views

    return views.apply_view(name, activation)


def spatial_map(activation, per_position, view):
    """Per-position values as an ``[h, w]`` map (valid positions of the view)."""
    if per_position.ndim == 2:  # already a map (canvas cells)
        return per_position
    h, w = activation.shape[0], activation.shape[1]
    if per_position.shape[0] == h * w:
        return per_position.reshape(h, w)
    side = int(round(per_position.shape[0] ** 0.5))
    if side * side == per_position.shape[0]:
        return per_position.reshape(side, side)
    return per_position.reshape(1, -1)


def moments(layer_stats: Mapping[str, Any]) -> dict[str, LayerMoments]:
    """``{layer: LayerMoments}`` from finalized statistics.

    Args:
      layer_stats: ``{layer: LayerStats}`` (e.g. ``StatsBundle.layers`` from
        :func:`jaxviz.stats.store.load_stats`, or :func:`jaxviz.stats.estimate` results).
    """
    out = {}
    for layer, s in layer_stats.items():
        std = jnp.sqrt(jnp.clip(jnp.diagonal(jnp.asarray(s.cov)), 1e-12))
        out[layer] = LayerMoments(jnp.asarray(s.mean), jnp.asarray(s.precision), std)
    return out


def load_moments(stats_dir: str, model, layers=None) -> tuple[dict[str, LayerMoments], str]:
    """Reads ``jaxviz stats`` output for ``model``: ``({layer: LayerMoments}, view)``.

    Args:
      stats_dir: output of ``jaxviz stats``.
      model: the model (names and shapes are checked against the statistics).
      layers: the layers to use (default: all in ``stats_dir``).
    """
    from jaxviz.stats import store as stats_store

    bundle = stats_store.load_stats(stats_dir, model=model, layers=layers)
    model.check_layers(list(bundle.layers))
    return moments(bundle.layers), bundle.view


def stats_moments_of(stats, model, layers, view):
    """``(moments, view)`` from a stats directory, a StatsBundle or ``{layer: LayerMoments}``."""
    if isinstance(stats, (str, os.PathLike)):
        if model is None:
            raise UsageError("stats= as a directory needs model= (to check the statistics against it)")
        return load_moments(os.fspath(stats), model, layers)
    if hasattr(stats, "layers") and hasattr(stats, "view"):  # a StatsBundle
        chosen = {l: stats.layers[l] for l in (layers or stats.layers)}
        return moments(chosen), stats.view
    if not isinstance(stats, Mapping) or not stats:
        raise UsageError("stats= must be a stats directory, a StatsBundle or a non-empty {layer: LayerMoments}")
    chosen = {l: stats[l] for l in (layers or stats)}
    return ({l: m if isinstance(m, LayerMoments) else moments({l: m})[l] for l, m in chosen.items()},
            view or "pixel")


def check_options(name, cls=None, *, weight=None, k=None, every=None, warmup=None, quantile=None, penalty=None,
                  scope=None, **unknown):
    """Raises :class:`UsageError` (prefixed by ``name``) for options ``cls`` does not take or cannot use."""
    given = {k_: v for k_, v in dict(k=k, every=every, warmup=warmup, quantile=quantile, penalty=penalty,
                                     scope=scope).items() if v is not None}
    fields = {f.name for f in dataclasses.fields(cls)} if cls else {"weight"}
    bad = sorted(set(unknown) | (set(given) - fields))
    if bad:
        raise UsageError(f"{name}: unknown option(s) {', '.join(bad)} "
                         f"(choose {', '.join(sorted(fields - {'stats', 'view', 'bn', 'eps'}))})")

    def whole(value, what, low):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise UsageError(f"{name}: {what} must be an integer ≥ {low}, got {value!r}")

    whole(k, "k", 1)
    whole(every, "every", 1)
    whole(warmup, "warmup", 0)
    if weight is not None and not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise UsageError(f"{name}: weight must be a finite number ≥ 0, got {weight!r}")
    if penalty is not None and penalty not in ("activation", "contribution"):
        raise UsageError(f"{name}: penalty must be 'activation' or 'contribution', got {penalty!r}")
    if scope is not None and scope not in ("image", "outliers"):
        raise UsageError(f"{name}: scope must be 'image' or 'outliers', got {scope!r}")
    if quantile is not None and not (isinstance(quantile, (int, float)) and 0 < quantile < 1):
        raise UsageError(f"{name}: quantile must be strictly between 0 and 1, got {quantile!r}")


def describe(info: Mapping[str, "jax.Array"], index: int, *, top: int = 10) -> dict:
    """metrics.json fields of target ``index`` from the per-target arrays of ``prior.report``.

    Args:
      info: ``{name: [T, ...]}`` per-target diagnostics (``RenderResult.prior``).
      index: the target.
      top: how many suppressed neurons to list, over all layers (strongest first).

    Returns:
      ``{"suppressed": [{"layer", "channel", "count", "mean_contribution"}, ...], "d2": float, ...}``.
    """
    import numpy as np

    record: dict = {}
    suppressed = []
    for key, value in info.items():
        if key.startswith("times/"):
            layer = key.split("/", 1)[1]
            times = np.asarray(value[index])
            score = np.asarray(info[f"score/{layer}"][index])
            for j in np.argsort(-times):
                if times[j] > 0:
                    suppressed.append({"layer": layer, "channel": int(j), "count": int(times[j]),
                                       "mean_contribution": round(float(score[j] / times[j]), 4)})
        elif key in ("d2", "bn_loss", "rounds", "quantile", "gauss"):
            record[key] = round(float(np.asarray(value[index])), 5)
        elif key == "outlier_map_canvas":
            record["outlier_map_coordinates"] = "canvas" if bool(np.asarray(value[index])) else "model input"
    if suppressed or "times/" in "".join(info):
        record["suppressed"] = sorted(suppressed, key=lambda e: -e["count"] * e["mean_contribution"])[:top]
    return record
