"""Quantile (distribution) matching prior, and the per-channel quantiles of natural photos it reads.

Issue 21, design 2 (README "The method"): instead of only pushing outlier neurons down, push a
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

import dataclasses
import json
import os
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.errors import StatsMismatchError, StatsNotFoundError, UsageError

__all__ = ["QuantileStats", "QuantilePrior", "quantile", "collect_quantiles", "save_quantiles", "load_quantiles",
           "shipped_quantiles_dir", "sort_match_targets", "QUANTILE_LAYERS", "QUANTILES_FILE", "LEVELS"]

QUANTILES_FILE = "quantiles.json"
FORMAT = 1
STORAGE = "npz-float32"
LEVELS = 65  # stored quantiles per channel, at the levels (j + ½)/65
# Lite0 layers whose quantiles ship: the outlier prior's default layers and two deeper ones
QUANTILE_LAYERS = ("blocks.2", "blocks.4", "blocks.8", "blocks.12")
MAX_POSITIONS = 784  # positions kept per photo and layer (a fixed random subset where a layer has more)


class QuantileStats(NamedTuple):
    """Per-channel quantiles of one layer over natural images (host arrays).

    Attributes:
      levels: ``[Q]`` increasing probabilities in (0, 1).
      values: ``[C, Q]`` the quantiles of each channel at ``levels``.
      mean, std: ``[C]`` each channel's mean and standard deviation (of the same samples).
      count: samples (positions) per channel.
    """

    levels: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    count: int


def default_levels(n: int = LEVELS) -> np.ndarray:
    """``(j + ½)/n`` for ``j = 0 … n−1``."""
    return (np.arange(n, dtype=np.float64) + 0.5) / n


# ------------------------------------------------------------------------------------ the pass


def quantiles_of(samples: np.ndarray, levels: np.ndarray) -> QuantileStats:
    """Exact quantiles (numpy's linear interpolation, float64) of ``samples [N, C]``."""
    x = np.asarray(samples, np.float64)
    values = np.quantile(x, levels, axis=0).T  # [C, Q]
    return QuantileStats(np.asarray(levels, np.float64), values, x.mean(0), x.std(0), int(x.shape[0]))


def collect_quantiles(model, layers: Sequence[str], source, *, levels: int = LEVELS,
                      max_positions: int = MAX_POSITIONS, batch_size: int = 16, seed: int = 0,
                      progress=None) -> dict[str, QuantileStats]:
    """Per-channel quantiles of ``layers`` (``pixel`` view) over the images of ``source``.

    Every image contributes all its positions of a layer, or a random subset of ``max_positions``
    of them (drawn by a generator seeded with ``(seed, image index)``) where a layer has more.

    Args:
      model: the model.
      layers: its layers.
      source: a :mod:`jaxviz.data` source (uint8 batches at the model's resolution).
      levels: quantiles per channel (:func:`default_levels`).
      max_positions: positions kept per image and layer.
      batch_size: images per forward pass.
      seed: seeds the position subsets.
      progress: optional ``callback(done_images, total)``.
    """
    layers = list(model.check_layers(list(layers)))
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise UsageError(f"quantiles: levels must be an integer ≥ 2, got {levels!r}")
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) or max_positions < 1:
        raise UsageError(f"quantiles: max_positions must be an integer ≥ 1, got {max_positions!r}")
    forward = jax.jit(lambda p, x: model.features(p, model.normalize(x.astype(jnp.float32)), layers))
    kept: dict[str, list[np.ndarray]] = {l: [] for l in layers}
    index = 0
    for batch in source.batches(batch_size):
        feats = jax.device_get(forward(model.params, jnp.asarray(batch)))
        for b in range(batch.shape[0]):
            rng = np.random.default_rng((seed, index))
            for layer in layers:
                a = np.asarray(feats[layer][b], np.float32)
                a = a.reshape(-1, a.shape[-1])
                if a.shape[0] > max_positions:
                    a = a[np.sort(rng.choice(a.shape[0], max_positions, replace=False))]
                kept[layer].append(a)
            index += 1
        if progress:
            progress(index, len(source))
    if not index:
        raise UsageError("quantiles: the data source holds no images")
    grid = default_levels(levels)
    return {l: quantiles_of(np.concatenate(kept[l]), grid) for l in layers}


# ------------------------------------------------------------------------------------ storage


def _pack(quantiles: Mapping[str, QuantileStats]) -> dict[str, np.ndarray]:
    first = next(iter(quantiles.values()))
    out = {"levels": np.asarray(first.levels, np.float32)}
    for i, (layer, q) in enumerate(quantiles.items()):
        if not np.array_equal(np.asarray(q.levels, np.float32), out["levels"]):
            raise UsageError("quantiles: every layer must use the same levels")
        out.update({f"{i:03d}/values": np.asarray(q.values, np.float32), f"{i:03d}/mean": np.asarray(q.mean, np.float32),
                    f"{i:03d}/std": np.asarray(q.std, np.float32)})
    return out


def save_quantiles(directory: str, quantiles: Mapping[str, QuantileStats], *, model: str, view: str = "pixel",
                   metadata: Mapping[str, Any] | None = None) -> dict:
    """Writes ``quantiles-N.npz`` and then (the commit point) ``quantiles.json`` into ``directory``.

    Returns:
      The metadata written.
    """
    from jaxviz import __version__
    from jaxviz.files import atomic_write, atomic_write_json
    from jaxviz.stats_store import content_hash

    if not quantiles:
        raise UsageError("quantiles: nothing to save")
    os.makedirs(directory, exist_ok=True)
    packed = _pack(quantiles)
    try:
        previous = _read_json(directory)
    except (StatsNotFoundError, StatsMismatchError):
        previous = {}
    generation = previous.get("generation", 0) if isinstance(previous.get("generation"), int) else 0
    name = f"quantiles-{generation + 1}.npz"
    atomic_write(os.path.join(directory, name), lambda f: np.savez_compressed(f, **packed))
    meta = {"format": FORMAT, "jaxviz": __version__, "model": model, "view": view, "layers": list(quantiles),
            "dims": {l: int(q.values.shape[0]) for l, q in quantiles.items()},
            "samples": {l: int(q.count) for l, q in quantiles.items()}, "levels": int(packed["levels"].shape[0]),
            **dict(metadata or {}), "storage": STORAGE, "sha256": content_hash(packed), "quantiles": name,
            "generation": generation + 1}
    atomic_write_json(os.path.join(directory, QUANTILES_FILE), meta)
    old = previous.get("quantiles")
    if isinstance(old, str) and old != name and os.path.basename(old) == old and old.startswith("quantiles-"):
        try:
            os.remove(os.path.join(directory, old))
        except FileNotFoundError:
            pass
    return meta


def _read_json(directory: str) -> dict:
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), QUANTILES_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise StatsNotFoundError(f"no quantiles in {directory} (scripts/ship_stats.py --views quantiles "
                                 "or jaxviz.prior_quantile.collect_quantiles make them)") from None
    except (OSError, ValueError) as e:
        raise StatsNotFoundError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("layers"), list) \
            or not isinstance(meta.get("quantiles"), str) or os.path.basename(meta["quantiles"]) != meta["quantiles"]:
        raise StatsMismatchError(f"{path} is malformed; recompute the quantiles")
    return meta


def load_quantiles(directory: str, *, model=None, layers: Sequence[str] | None = None) -> dict[str, QuantileStats]:
    """``{layer: QuantileStats}`` from a folder written by :func:`save_quantiles` (hash checked).

    Raises:
      StatsNotFoundError: no quantiles there. StatsMismatchError: another model, missing layers,
      shapes that do not match ``model``, or files that do not match their hash.
    """
    from jaxviz.stats_store import content_hash

    meta = _read_json(directory)
    name = getattr(model, "name", model)
    if name is not None and name != meta.get("model"):
        raise StatsMismatchError(f"quantiles in {directory} are for model {meta.get('model')}, not {name}")
    stored = list(meta["layers"])
    wanted = stored if layers is None else list(layers)
    missing = [l for l in wanted if l not in stored]
    if missing:
        raise StatsMismatchError(f"quantiles in {directory} hold layers {', '.join(stored)}, not {', '.join(missing)}")
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), meta["quantiles"])
    try:
        with np.load(path) as f:
            packed = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise StatsNotFoundError(f"cannot read the quantiles in {path} ({type(e).__name__})") from None
    if content_hash(packed) != meta.get("sha256"):
        raise StatsMismatchError(f"{path} does not match the hash in {QUANTILES_FILE}; recompute the quantiles")
    out = {}
    for layer in wanted:
        i = stored.index(layer)
        values = np.asarray(packed[f"{i:03d}/values"], np.float64)
        if hasattr(model, "layers") and (layer not in model.layers or model.layers[layer][-1] != values.shape[0]):
            raise StatsMismatchError(f"layer {layer} of {name} does not match the quantiles in {directory}")
        out[layer] = QuantileStats(np.asarray(packed["levels"], np.float64), values,
                                   np.asarray(packed[f"{i:03d}/mean"], np.float64),
                                   np.asarray(packed[f"{i:03d}/std"], np.float64), int(meta["samples"][layer]))
    return out


def shipped_quantiles_dir(model_name: str) -> str | None:
    """The folder of the quantiles shipped for ``model_name`` (its ``pixel`` statistics), or ``None``."""
    from jaxviz.stats_store import shipped_stats_dir

    folder = shipped_stats_dir(model_name, "pixel")
    return folder if folder and os.path.isfile(os.path.join(folder, QUANTILES_FILE)) else None


# ------------------------------------------------------------------------------------ the prior


def sort_match_targets(q: QuantileStats, n: int) -> np.ndarray:
    """``[n, C]``: the natural quantile function of each channel at the ranks ``(r + ½)/n``."""
    ranks = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.stack([np.interp(ranks, q.levels, v) for v in np.asarray(q.values)], axis=1)


class _Layer(NamedTuple):
    quantiles: QuantileStats
    moments: Any  # priors.LayerMoments, for channels="outliers"


class _SelectState(NamedTuple):
    mask: dict       # layer -> [C] channels currently matched
    times: dict      # layer -> [C] rounds that selected each channel
    rounds: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class QuantilePrior:
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
    weight: float = 1.0
    channels: str = "all"
    k: int = 8
    every: int = 16
    warmup: int = 0
    threshold_quantile: float = 0.99

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layers_)

    def _per_channel(self, a, q: QuantileStats):
        x = a.reshape(-1, a.shape[-1])
        target = jnp.asarray(sort_match_targets(q, x.shape[0]), x.dtype)
        z = (jnp.sort(x, axis=0) - target) / jnp.asarray(np.maximum(q.std, 1e-6), x.dtype)
        return jnp.mean(z * z, axis=0)  # [C]

    def init(self, features):
        if self.channels == "all":
            return ()
        zeros = {l: jnp.zeros(entry.quantiles.values.shape[0]) for l, entry in self.layers_.items()}
        return _SelectState(zeros, zeros, jnp.zeros((), jnp.int32))

    def apply(self, features, state, step):
        from jaxviz import outliers as outliers_lib

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

    @property
    def fingerprint(self) -> str:
        from jaxviz.files import content_hash

        arrays = [np.asarray(a) for e in self.layers_.values() for a in (e.quantiles.values, e.quantiles.std)]
        arrays += [np.asarray(a) for e in self.layers_.values() if e.moments is not None for a in e.moments]
        return content_hash(*arrays)

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


def quantile(quantiles=None, *, model, layers: Sequence[str] | None = None, stats=None, weight: float = 1.0,
             channels: str = "all", k: int = 8, every: int = 16, warmup: int = 0,
             threshold_quantile: float = 0.99) -> QuantilePrior:
    """The quantile-matching prior for ``model``.

    Args:
      quantiles: a folder with ``quantiles.json`` or ``{layer: QuantileStats}``; default the
        quantiles shipped for ``model``.
      model: the model being visualized.
      layers: which layers (default: ``stats_store.SHIPPED_PRIOR_LAYERS``, the outlier prior's).
      stats: moments for ``channels="outliers"`` (a stats folder, a StatsBundle or
        ``{layer: LayerMoments}``); default the shipped ``pixel`` statistics.
      weight, channels, k, every, warmup, threshold_quantile: see :class:`QuantilePrior`.

    Raises:
      UsageError: bad options; StatsNotFoundError / StatsMismatchError: no or wrong quantiles.
    """
    from jaxviz import priors, stats_store

    _number("weight", weight)
    _number("k", k, low=1, integer=True)
    _number("every", every, low=1, integer=True)
    _number("warmup", warmup, integer=True)
    if not (isinstance(threshold_quantile, (int, float)) and 0 < threshold_quantile < 1):
        raise UsageError(f"quantile: threshold_quantile must be strictly between 0 and 1, got {threshold_quantile!r}")
    if channels not in ("all", "outliers"):
        raise UsageError(f"quantile: channels must be 'all' or 'outliers', got {channels!r}")
    layers = list(layers) if layers is not None else list(stats_store.SHIPPED_PRIOR_LAYERS)
    if not layers:
        raise UsageError("quantile: layers is empty")
    model.check_layers(layers)
    if quantiles is None:
        quantiles = shipped_quantiles_dir(model.name)
        if quantiles is None:
            raise UsageError(f"quantile: no quantiles ship for {model.name}; pass quantiles= "
                             "(jaxviz.prior_quantile.collect_quantiles and save_quantiles make them)")
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
        moments, view = priors._stats_moments(source, model, layers, "pixel")
        if view != "pixel":
            raise UsageError(f"quantile: channels='outliers' needs pixel-view statistics, got {view}")
    return QuantilePrior({l: _Layer(table[l], moments[l]) for l in layers}, weight=float(weight), channels=channels,
                         k=k, every=every, warmup=warmup, threshold_quantile=float(threshold_quantile))
