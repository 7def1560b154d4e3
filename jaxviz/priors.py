"""Priors subtracted from the objective during rendering (``--prior``).

A prior is any object satisfying the :class:`Prior` protocol (an immutable object, like an optax
transformation, whose state :func:`jaxviz.render.render` threads through the steps):

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

from jaxviz import outliers as outliers_lib
from jaxviz.errors import UsageError

__all__ = ["Prior", "LayerMoments", "NoPrior", "OutlierPrior", "MahalanobisPrior", "BatchNormPrior", "none",
           "outliers", "mahalanobis", "batchnorm_prior", "moments", "load_moments", "build", "describe", "PRIORS"]

PRIORS = ("none", "outliers", "mahalanobis", "bn", "bn-batch", "quantile", "gaussian")


@runtime_checkable
class Prior(Protocol):
    """What :func:`jaxviz.render.render` needs of a prior (all methods for ONE image)."""

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


class _OutlierState(NamedTuple):
    mask: dict          # layer -> [dim] 1.0 for the currently suppressed entries
    times: dict         # layer -> [dim] how many selection rounds chose each entry
    score: dict         # layer -> [dim] summed contribution when chosen
    outlier_map: dict   # layer -> [M] how often each position was an outlier at selection
    rounds: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class OutlierPrior:
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
    view: str = "pixel"
    weight: float = 10.0
    k: int = 8
    every: int = 16
    warmup: int = 32
    quantile: float = 0.99
    penalty: str = "activation"
    scope: str = "outliers"

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.stats)

    def _samples(self, features, layer):
        return _view(self.view, features[layer])

    def _penalty(self, x, m: LayerMoments, mask, outlier):
        if self.penalty == "contribution":
            per_neuron = jax.nn.relu(outliers_lib.contributions(x, m.mean, m.precision))
        else:
            per_neuron = jax.nn.relu((x - m.mean) / m.std)
        per_position = jnp.sum(mask * per_neuron, axis=-1)
        if self.scope == "outliers":
            per_position = per_position * jax.lax.stop_gradient(outlier).astype(per_position.dtype)
        return jnp.mean(per_position)

    def init(self, features):
        zeros = {l: jnp.zeros_like(m.mean) for l, m in self.stats.items()}
        maps = {l: jnp.zeros(self._samples(features, l).shape[0]) for l in self.stats}
        return _OutlierState(zeros, zeros, zeros, maps, jnp.zeros((), jnp.int32))

    def apply(self, features, state: _OutlierState, step):
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
            maps[layer] = state.outlier_map[layer] + refresh * sel.outlier
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
        out["outlier_map"] = _spatial_map(features[first], state.outlier_map[first], self.view)
        out["rounds"] = state.rounds
        return out

    def __repr__(self):
        return (f"outliers(layers={list(self.layers)}, view={self.view}, weight={self.weight}, k={self.k}, "
                f"every={self.every}, warmup={self.warmup}, quantile={self.quantile}, penalty={self.penalty}, "
                f"scope={self.scope})")


def _view(name, activation):
    from jaxviz import views

    return views.apply_view(name, activation)


def _spatial_map(activation, per_position, view):
    """Per-position values as an ``[h, w]`` map (valid positions of the view)."""
    h, w = activation.shape[0], activation.shape[1]
    if per_position.shape[0] == h * w:
        return per_position.reshape(h, w)
    side = int(round(per_position.shape[0] ** 0.5))
    if side * side == per_position.shape[0]:
        return per_position.reshape(side, side)
    return per_position.reshape(1, -1)


@dataclasses.dataclass(frozen=True, eq=False)
class MahalanobisPrior:
    """Ablation: penalize the mean ``D²/dim`` of every position (no neuron selection)."""

    trace_name = "d2"

    stats: Mapping[str, LayerMoments]
    view: str = "pixel"
    weight: float = 10.0
    warmup: int = 0

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.stats)

    def _d2(self, features):
        total = jnp.zeros(())
        for layer, m in self.stats.items():
            x = _view(self.view, features[layer])
            total = total + jnp.mean(outliers_lib.mahalanobis(x, m.mean, m.precision)) / x.shape[-1]
        return total / len(self.stats)

    def init(self, features):
        return ()

    def apply(self, features, state, step):
        d2 = self._d2(features)
        active = jnp.asarray(step >= self.warmup, d2.dtype)
        dims = [m.mean.shape[0] for m in self.stats.values()]
        return self.weight * active * d2, state, d2 * sum(dims) / len(dims)

    def report(self, features, state):
        dims = [m.mean.shape[0] for m in self.stats.values()]
        return {"d2": self._d2(features) * sum(dims) / len(dims)}

    def __repr__(self):
        return f"mahalanobis(layers={list(self.layers)}, view={self.view}, weight={self.weight})"


@dataclasses.dataclass(frozen=True, eq=False)
class BatchNormPrior:
    """DeepInversion: the BatchNorm inputs' statistics should match the running statistics.

    For each BatchNorm layer, the input ``x`` is recovered from the captured output and the
    ``‖μ_x − μ_run‖₂ + ‖σ²_x − σ²_run‖₂`` over the image's positions is summed over layers, the
    first layer's term times ``first_weight`` (DeepInversion uses 10: the stem's statistics are
    the colour and contrast of the image). DeepInversion takes the moments over a batch of images;
    here they are per image (one image per target).

    Attributes:
      bn: ``{layer: {"scale", "bias", "mean", "var"}}`` (the first entry is the first layer).
      eps: BatchNorm epsilon.
      weight: λ.
      first_weight: extra factor on the first layer's term.
    """

    trace_name = "bn"

    bn: Mapping[str, Mapping[str, jax.Array]]
    eps: float = 1e-3
    weight: float = 0.01
    first_weight: float = 1.0

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.bn)

    def _loss(self, features):
        total = jnp.zeros(())
        for i, (layer, p) in enumerate(self.bn.items()):
            y = features[layer].reshape(-1, features[layer].shape[-1])
            std = jnp.sqrt(p["var"] + self.eps)
            x = (y - p["bias"]) / p["scale"] * std + p["mean"]
            term = jnp.linalg.norm(x.mean(0) - p["mean"]) + jnp.linalg.norm(x.var(0) - p["var"])
            total = total + (self.first_weight if i == 0 else 1.0) * term
        return total

    def init(self, features):
        return ()

    def apply(self, features, state, step):
        loss = self._loss(features)
        return self.weight * loss, state, loss

    def report(self, features, state):
        return {"bn_loss": self._loss(features)}

    def __repr__(self):
        first = f", first_weight={self.first_weight}" if self.first_weight != 1.0 else ""
        return f"bn(layers={len(self.bn)}, weight={self.weight}{first})"


def batchnorm_prior(model, *, weight: float = 0.01, first_weight: float = 1.0) -> BatchNormPrior:
    """DeepInversion's prior over every BatchNorm layer of ``model`` (``first_weight``: see the class).

    Raises:
      UsageError: the model declares no BatchNorm layers, or a weight is not a finite number ≥ 0.
    """
    check_options("bn", BatchNormPrior, weight=weight)
    if isinstance(first_weight, bool) or not (isinstance(first_weight, (int, float)) and math.isfinite(first_weight)
                                              and first_weight >= 0):
        raise UsageError(f"bn: first_weight must be a finite number ≥ 0, got {first_weight!r}")
    if not model.batchnorm:
        raise UsageError(f"--prior bn needs BatchNorm layers; {model.name} declares none")
    bn = {}
    for layer, path in model.batchnorm.items():
        node = model.params
        for part in path:
            node = node[part]
        bn[layer] = {k: jnp.asarray(node[k]) for k in ("scale", "bias", "mean", "var")}
    return BatchNormPrior(bn, eps=model.batchnorm_eps, weight=weight, first_weight=float(first_weight))


def moments(layer_stats: Mapping[str, Any]) -> dict[str, LayerMoments]:
    """``{layer: LayerMoments}`` from finalized statistics.

    Args:
      layer_stats: ``{layer: LayerStats}`` (e.g. ``StatsBundle.layers`` from
        :func:`jaxviz.stats_store.load_stats`, or :func:`jaxviz.stats.estimate` results).
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
    from jaxviz import stats_store

    bundle = stats_store.load_stats(stats_dir, model=model, layers=layers)
    model.check_layers(list(bundle.layers))
    return moments(bundle.layers), bundle.view


def _stats_moments(stats, model, layers, view):
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


def outliers(stats, *, model=None, layers=None, view: str | None = None, **options) -> OutlierPrior:
    """The method: suppress the shallow neurons that make the image an outlier of ``stats``.

    Args:
      stats: a ``jaxviz stats`` directory (needs ``model``), a StatsBundle, or ``{layer: LayerMoments}``.
      model: the model being visualized (checks the statistics' layers and shapes).
      layers: use only these layers of ``stats`` (default all).
      view: the feature view, for ``{layer: LayerMoments}`` (directories and bundles record theirs).
      **options: :class:`OutlierPrior` fields (``weight``, ``k``, ``every``, ``warmup``, ``quantile``).

    Raises:
      UsageError: bad options or statistics.
    """
    check_options("outliers", OutlierPrior, **options)
    stats_moments, stats_view = _stats_moments(stats, model, layers, view)
    return OutlierPrior(stats_moments, view=stats_view, **options)


def mahalanobis(stats, *, model=None, layers=None, view: str | None = None, **options) -> MahalanobisPrior:
    """Ablation: penalize the whole Mahalanobis distance (arguments as :func:`outliers`)."""
    check_options("mahalanobis", MahalanobisPrior, **options)
    stats_moments, stats_view = _stats_moments(stats, model, layers, view)
    return MahalanobisPrior(stats_moments, view=stats_view, **options)


def build(name: str, *, model, stats_dir: str | None = None, layers=None, **options):
    """The prior called ``name`` (one of :data:`PRIORS`) for ``model``.

    Args:
      name: prior name.
      model: the model being visualized.
      stats_dir: output of ``jaxviz stats`` for ``outliers`` and ``mahalanobis``; ``None`` uses the
        pixel-view statistics that ship with jaxviz for ``model`` (README "The method").
      layers: which of the statistics' layers to use (default all; with the shipped statistics
        ``stats_store.SHIPPED_PRIOR_LAYERS``).
      **options: fields of the prior's dataclass (e.g. ``weight``, ``k``, ``every``).

    Raises:
      UsageError: unknown name, or statistics missing for a prior that needs them.
    """
    from jaxviz import registry

    if name in ("outliers", "mahalanobis"):
        if not stats_dir:
            from jaxviz import stats_store

            stats_dir = stats_store.shipped_stats_dir(model.name, "pixel")
            if stats_dir is None:
                raise UsageError(f"prior '{name}' needs statistics: no statistics ship for {model.name} "
                                 "(pass stats_dir= / --stats DIR; make them with `jaxviz stats`)")
            layers = stats_store.SHIPPED_PRIOR_LAYERS if layers is None else layers
        return registry.build("prior", name, stats=stats_dir, model=model, layers=layers, **options)
    if name in ("quantile", "gaussian"):  # jaxviz.prior_quantile, jaxviz.prior_gaussian_match
        sources = {"stats": stats_dir, **({"quantiles": stats_dir} if name == "quantile" else {})} if stats_dir else {}
        return registry.build("prior", name, model=model, layers=layers, **sources, **options)
    if name in ("bn", "bn-batch"):
        return registry.build("prior", name, model=model, **options)
    return registry.build("prior", name, **options)


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
    if suppressed or "times/" in "".join(info):
        record["suppressed"] = sorted(suppressed, key=lambda e: -e["count"] * e["mean_contribution"])[:top]
    return record
