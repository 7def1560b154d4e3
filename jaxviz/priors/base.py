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

import collections
import dataclasses
import math
import os
from typing import Any, Mapping, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part

__all__ = ["Prior", "PriorBase", "PriorSpec", "ordered", "LayerMoments", "NoPrior", "none", "moments", "load_moments", "stats_moments_of", "check_options",
           "feature_view", "spatial_map", "describe", "shipped_or"]


@runtime_checkable
class Prior(Protocol):
    """What :func:`jaxviz.render.render_images` needs of a prior (all methods for ONE image).

    Make it a pytree (:func:`jaxviz.common.pytree.part`: statistics as leaves, settings static): the
    render programs take it as an argument. Subclass :class:`PriorBase` for the declared attributes'
    defaults. Every prior accepts every keyword below, and ignores those it does not use.
    """

    pooled: bool  # a batch-level prior: render calls apply(..., pool=) with the launch's images mapped
    trace_name: str | None  # what apply's trace is called in results (None: "prior")
    warmup: int  # steps before it acts (render refuses warmup >= steps)

    @property
    def layers(self) -> tuple[str, ...]:
        """Layers whose features ``init``, ``apply`` and ``report`` read."""

    def init(self, features: Mapping[str, jax.Array], *, canvas: Mapping[str, tuple] | None = None) -> Any:
        """Initial state (a pytree) from the features of the first transformed image; ``canvas``: each
        layer's activation shape on the untransformed image (given when the transform's geometry is known)."""

    def apply(self, features: Mapping[str, jax.Array], state: Any, step: jax.Array, *, pool=None,
              locate=None) -> tuple[Any, Any, Any]:
        """``(penalty, new_state, trace)``: scalar subtracted from the objective, next state, logged scalar.

        ``pool(tree)``: the sum of ``tree`` over the launch's images (only for ``pooled`` priors, else
        ``None``); ``locate``: canvas cells of feature positions (:func:`jaxviz.image.canvas.canvas_cells`),
        given with ``init(canvas=)``, else ``None``."""

    def report(self, features: Mapping[str, jax.Array], state: Any) -> dict:
        """Per-image diagnostics ``{name: array}`` of the final image; every scalar goes into
        ``metrics.json`` (``times/L`` and ``score/L`` make its ``suppressed`` list)."""


class PriorBase:
    """Defaults of the :class:`Prior` protocol's declared attributes."""

    pooled = False
    trace_name = None
    warmup = 0


def ordered(mapping: Mapping) -> "collections.OrderedDict":
    """``mapping`` as an ``OrderedDict``: a pytree that keeps its layers in order (a plain dict's are
    sorted when flattened, and a prior's first layer and its sums follow the given order)."""
    return collections.OrderedDict(mapping.items())


class LayerMoments(NamedTuple):
    """What a prior needs of one layer's statistics (host arrays)."""

    mean: jax.Array
    precision: jax.Array
    std: jax.Array


@part
class NoPrior(PriorBase):
    """Plain activation maximization: no penalty."""

    layers = ()

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
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
    return {layer: LayerMoments(jnp.asarray(s.mean), jnp.asarray(s.precision),
                                jnp.sqrt(jnp.clip(jnp.diagonal(jnp.asarray(s.cov)), 1e-12)))
            for layer, s in layer_stats.items()}


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


def shipped_or(stats, model, layers, who: str, view: str | None = None):
    """``(stats, layers)``: the given statistics, or those shipped for ``model`` in ``view`` (default
    ``pixel``, at the prior layers of README "Shipped statistics") when ``stats`` is ``None``.

    Raises:
      UsageError: no statistics given and none ship for the model.
    """
    if stats is not None:
        return stats, layers
    from jaxviz.stats import store as stats_store

    view = view or "pixel"
    shipped = stats_store.shipped_stats_dir(model.name, view) if model is not None else None
    if shipped is None:
        raise UsageError(f"{who} needs statistics: no statistics ship for {getattr(model, 'name', 'this model')} "
                         f"in the {view} view (pass stats= / --stats DIR; make them with `jaxviz stats`)")
    if layers is None and view == "pixel":
        layers = list(stats_store.SHIPPED_PRIOR_LAYERS)
    return shipped, layers


def stats_moments_of(stats, model, layers, view):
    """``(moments, view)`` from a stats directory, :class:`jaxviz.stats.Statistics`, a StatsBundle, or
    ``{layer: LayerMoments | LayerStats | StatsState}`` (states are finalized first)."""
    if isinstance(stats, (str, os.PathLike)):
        if model is None:
            raise UsageError("stats= as a directory needs model= (to check the statistics against it)")
        return load_moments(os.fspath(stats), model, layers)
    from jaxviz.stats.moments import StatsState, estimate

    if hasattr(stats, "layers") and hasattr(stats, "view"):  # jaxviz.collect_stats's Statistics, a StatsBundle
        missing = [l for l in (layers or ()) if l not in stats.layers]
        if missing:
            raise UsageError(f"stats= holds layers {', '.join(stats.layers)}, not {', '.join(missing)}")
        chosen = {l: stats.layers[l] for l in (layers or stats.layers)}
        return moments(chosen), stats.view
    if not isinstance(stats, Mapping) or not stats:
        raise UsageError("stats= must be a stats directory, jaxviz.collect_stats's result, a StatsBundle or a "
                         "non-empty {layer: LayerMoments}")
    missing = [l for l in (layers or ()) if l not in stats]
    if missing:
        raise UsageError(f"stats= holds layers {', '.join(stats)}, not {', '.join(missing)}")
    chosen = {l: estimate(stats[l]) if isinstance(stats[l], StatsState) else stats[l] for l in (layers or stats)}
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
        elif key == "outlier_map_canvas":
            record["outlier_map_coordinates"] = "canvas" if bool(np.asarray(value[index])) else "model input"
        elif not key.startswith("score/") and np.ndim(value[index]) == 0:  # every scalar a prior reports
            record[key] = round(float(np.asarray(value[index])), 5)
    if suppressed or "times/" in "".join(info):
        record["suppressed"] = sorted(suppressed, key=lambda e: -e["count"] * e["mean_contribution"])[:top]
    return record


@dataclasses.dataclass(frozen=True)
class PriorSpec:
    """A prior to build for a model: a factory and its options (a recipe's prior is one).

    Like ``functools.partial`` (optax's variants are partials of their base), but its options can be
    read and edited: ``spec.edit(weight=2.0)`` keeps every other option, and refuses one the factory
    does not take, in one line.

    Attributes:
      factory: ``factory(*, model, **options) -> Prior`` (``model`` only if it takes one).
      options: ``((name, value), ...)``.
      label: the registered name it was made from (:func:`jaxviz.registry.prior_spec`), else ``None``.
    """

    factory: Any
    options: tuple = ()
    label: str | None = None  # the registered name it was built from (errors and records say it)

    @property
    def name(self) -> str:
        return self.label or getattr(self.factory, "__name__", repr(self.factory))

    def accepts(self) -> tuple[str, ...]:
        """The option names the factory takes (``model`` aside), and ``"*"`` if it takes any others."""
        import inspect

        params = inspect.signature(self.factory).parameters.values()
        named = tuple(p.name for p in params if p.name != "model" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        return named + (("*",) if any(p.kind is p.VAR_KEYWORD for p in params) else ())

    def edit(self, *, names: Mapping[str, str] | None = None, **changes) -> "PriorSpec":
        """This spec with ``changes`` applied to its options (``None`` values are left out).

        Args:
          names: how to name each option in errors (``{"weight": "--weight"}``); default ``weight=``.

        Raises:
          UsageError: an option the factory does not take.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        taken = self.accepts()
        bad = [k for k in changes if "*" not in taken and k not in taken]
        if bad:
            shown = ", ".join((names or {}).get(k, f"{k}=") for k in bad)
            raise UsageError(f"{shown} does not apply to the prior {self.name} (it takes "
                             f"{', '.join(taken) or 'no options'})")
        return dataclasses.replace(self, options=tuple({**dict(self.options), **changes}.items()))

    def build(self, model) -> Any:
        """The prior for ``model``."""
        import inspect

        takes_model = "model" in inspect.signature(self.factory).parameters
        return self.factory(**({"model": model} if takes_model else {}), **dict(self.options))

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.options)})"
