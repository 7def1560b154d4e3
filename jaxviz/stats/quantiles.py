"""Per-channel quantiles of natural images' features (the quantile prior's reference), collected and stored
next to the moments (same folder, metadata and content hash as :mod:`jaxviz.stats.store`)."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common import readers
from jaxviz.common.errors import StatsMismatchError, StatsNotFoundError, UsageError

__all__ = ["QuantileSampler", "QuantileStats", "collect_quantiles", "save_quantiles", "load_quantiles", "shipped_quantiles_dir",
           "default_levels", "quantiles_of", "sort_match_targets", "QUANTILES_FILE", "LEVELS", "QUANTILE_LAYERS",
           "MAX_POSITIONS"]

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
    sampler = QuantileSampler(model, layers, max_positions=max_positions, seed=seed)
    for batch in source.batches(batch_size):
        sampler.add(batch)
        if progress:
            progress(sampler.images, len(source))
    return sampler.finish(levels)


class QuantileSampler:
    """The positions :func:`collect_quantiles` keeps, gathered batch by batch (host memory: at most
    ``max_positions`` per image and layer), so another pass over the data can feed it too.

    Args:
      model: the model; layers: its layers (``pixel`` positions of each).
      max_positions: positions kept per image and layer (a random subset seeded by ``(seed, image index)``).
    """

    def __init__(self, model, layers: Sequence[str], *, max_positions: int = MAX_POSITIONS, seed: int = 0):
        self.layers, self.max_positions, self.seed, self.images = list(layers), max_positions, seed, 0
        self._forward = jax.jit(lambda p, x: model.features(p, model.normalize(x.astype(jnp.float32)), self.layers))
        self._params = model.params
        self._kept: dict[str, list[np.ndarray]] = {l: [] for l in self.layers}

    def add(self, batch) -> None:
        """Adds a uint8 batch ``[b, S, S, 3]`` (the next ``b`` images of the pass)."""
        feats = jax.device_get(self._forward(self._params, jnp.asarray(batch)))
        for b in range(batch.shape[0]):
            rng = np.random.default_rng((self.seed, self.images))
            for layer in self.layers:
                a = np.asarray(feats[layer][b], np.float32)
                a = a.reshape(-1, a.shape[-1])
                if a.shape[0] > self.max_positions:
                    a = a[np.sort(rng.choice(a.shape[0], self.max_positions, replace=False))]
                self._kept[layer].append(a)
            self.images += 1

    def finish(self, levels: int = LEVELS) -> dict[str, QuantileStats]:
        """``{layer: QuantileStats}`` of every position kept."""
        if not self.images:
            raise UsageError("quantiles: the data source holds no images")
        grid = default_levels(levels)
        return {l: quantiles_of(np.concatenate(self._kept[l]), grid) for l in self.layers}


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
    from jaxviz.common import __version__
    from jaxviz.common.files import atomic_write, atomic_write_json
    from jaxviz.stats.store import content_hash

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
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, old))
    return meta


def _read_json(directory: str) -> dict:
    from jaxviz.stats.store import read_json

    path, meta = read_json(directory, QUANTILES_FILE, missing=f"no quantiles in {directory} (scripts/ship_stats.py "
                           "--views quantiles or jaxviz.stats.quantiles.collect_quantiles make them)")
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
    from jaxviz.stats.store import content_hash

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
    # a regular file only (a FIFO never blocks); a truncated or bit-flipped archive is one line
    packed = readers.read_npz(path, fix="recompute the quantiles", error=StatsMismatchError)
    if content_hash(packed) != meta.get("sha256"):
        raise StatsMismatchError(f"{path} does not match the hash in {QUANTILES_FILE}; recompute the quantiles")
    try:
        return {layer: _layer_quantiles(packed, meta, stored.index(layer), layer, model, directory) for layer in wanted}
    except (KeyError, ValueError, TypeError, IndexError):  # quantiles.json names arrays or counts not there
        raise StatsMismatchError(f"{path} does not hold what {QUANTILES_FILE} names (layers, samples); recompute "
                                 "the quantiles") from None


def _layer_quantiles(packed, meta, i: int, layer: str, model, directory) -> QuantileStats:
    values = np.asarray(packed[f"{i:03d}/values"], np.float64)
    if hasattr(model, "layers") and (layer not in model.layers or model.layers[layer][-1] != values.shape[0]):
        raise StatsMismatchError(f"layer {layer} of {model.name} does not match the quantiles in {directory}")
    return QuantileStats(np.asarray(packed["levels"], np.float64), values,
                         np.asarray(packed[f"{i:03d}/mean"], np.float64),
                         np.asarray(packed[f"{i:03d}/std"], np.float64), int(meta["samples"][layer]))


def shipped_quantiles_dir(model_name: str) -> str | None:
    """The folder of the quantiles shipped for ``model_name`` (its ``pixel`` statistics), or ``None``."""
    from jaxviz.stats.store import shipped_stats_dir

    folder = shipped_stats_dir(model_name, "pixel")
    return folder if folder and os.path.isfile(os.path.join(folder, QUANTILES_FILE)) else None


def sort_match_targets(q: QuantileStats, n: int) -> np.ndarray:
    """``[n, C]``: the natural quantile function of each channel at the ranks ``(r + ½)/n``."""
    ranks = (np.arange(n, dtype=np.float64) + 0.5) / n
    return np.stack([np.interp(ranks, q.levels, v) for v in np.asarray(q.values)], axis=1)
