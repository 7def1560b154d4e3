"""Reading and writing ``jaxviz stats`` output: moments + ``stats.json`` metadata.

A stats directory holds ``stats.json`` (model, view, layers, shrinkage, the moments' name, data
spec, seed, image count, preprocessing, jaxviz version, ...) and the moments of every layer's
:class:`~jaxviz.stats.StatsState`: either ``moments-N/`` (an Orbax checkpoint, float64, each entry
naming its layer; the default) or, with ``compact=True`` (``jaxviz stats --compact``),
``moments-N.npz``: float32, the symmetric comoment stored as its upper triangle, and a content hash
in ``stats.json`` that :func:`load_stats` verifies. Replacing statistics writes new moments next to
the old ones, then swaps ``stats.json`` atomically, so the old statistics stay usable until the new
ones are complete. The statistics that ship with jaxviz use the compact form
(:func:`shipped_stats_dir`). :func:`load_stats` finalizes either in float64 (mean, unbiased
covariance, shrunk precision and its Cholesky factor) and refuses statistics made for another
model, layer or view.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common import ASSETS, readers
from jaxviz.common.errors import OutputError, StatsMismatchError, StatsNotFoundError, UsageError
from jaxviz.common.files import atomic_write, atomic_write_json, stderr_held, to_json, write_failure
from jaxviz.stats import moments as stats
from jaxviz.stats import views
from jaxviz.stats.moments import LayerStats, StatsState

__all__ = ["read_json", "StatsBundle", "LayerStats", "StatsMismatchError", "StatsNotFoundError", "save_stats", "load_stats",
           "read_metadata", "shipped_stats_dir", "content_hash", "STATS_FILE", "SHIPPED_PRIOR_LAYERS"]

FORMAT = 1
STATS_FILE = "stats.json"
MOMENTS_DIR = "moments"
MOMENTS_FILE = "moments.npz"
COMPACT = "npz-float32-triu"  # the "storage" of compact statistics
# Shallow layers the priors use by default with the shipped statistics (the demo's and experiments' choice).
SHIPPED_PRIOR_LAYERS = ("blocks.2", "blocks.4")
_SHIPPED_ROOT = os.path.join(ASSETS, "stats")


@dataclasses.dataclass(frozen=True, eq=False)
class StatsBundle:
    """Finalized statistics of several layers of one model, as written by ``jaxviz stats``.

    Attributes:
      layers: ``{layer: LayerStats}`` (host float64 arrays) in the order they were collected.
      model: model name.
      view: feature view (``pixel``, ``pooled``, ``patchK``).
      shrinkage: the shrinkage choice the precisions were made with.
      metadata: everything else recorded with them (data, seed, images, jaxviz version, ...).
    """

    layers: Mapping[str, LayerStats]
    model: str
    view: str
    shrinkage: str | float
    metadata: Mapping[str, Any]

    def __getitem__(self, layer: str) -> LayerStats:
        return self.layers[layer]



_estimate_jit = jax.jit(stats.estimate, static_argnames="shrinkage")


def _estimate(state: StatsState, shrinkage, layer: str) -> LayerStats:
    """Finalizes one layer in float64 on the host."""
    with jax.enable_x64(True):
        s = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), StatsState(*state))
        est = jax.tree.map(np.asarray, _estimate_jit(s, shrinkage=shrinkage))
    if float(est.count) < 2:
        raise UsageError(f"layer {layer} has {float(est.count):g} samples; statistics need at least 2")
    if not np.all(np.isfinite(est.chol)):
        raise UsageError(f"the covariance of layer {layer} is singular (dim {est.dim}, {float(est.count):g} samples); "
                         "use shrinkage='oas' or a positive coefficient")
    return est._replace(shrinkage=float(est.shrinkage), condition=float(est.condition), count=float(est.count),
                        dim=int(est.dim))


def save_stats(directory: str, states: Mapping[str, StatsState], *, model: str, view: str,
               shrinkage="oas", metadata: Mapping[str, Any] | None = None, compact: bool = False,
               force: bool = False) -> StatsBundle:
    """Writes per-layer moments (Orbax, or ``moments.npz`` if ``compact``) and ``stats.json`` to ``directory``.

    Args:
      directory: output directory (created if needed).
      states: ``{layer: StatsState}``.
      model: model name.
      view: the feature view the states were collected with.
      shrinkage: default shrinkage for :func:`load_stats`.
      metadata: extra JSON-able fields (data spec, seed, images, ...).
      compact: float32 ``moments.npz`` with packed comoments (about 1/4 of the Orbax size).
      force: write into a folder holding files jaxviz did not write (README "Guarantees").

    Returns:
      The finalized :class:`StatsBundle` (of the stored, possibly float32-rounded, moments).
    """
    from jaxviz.common import outputs

    options = dict(model=model, view=view, shrinkage=shrinkage, metadata=metadata, compact=compact)
    if jax.process_index() != 0:  # Orbax's save is collective; process 0 alone claims the folder and writes the rest
        return _save_stats(os.path.abspath(directory), None, states, **options)
    with outputs.claim(directory, force=force, what="statistics folder") as folder:
        return _save_stats(folder.path, folder, states, **options)


def _save_stats(directory, folder, states, *, model, view, shrinkage, metadata, compact) -> StatsBundle:
    """Writes the statistics; ``folder`` is the claimed output folder on process 0, None on the others."""
    import orbax.checkpoint as ocp

    from jaxviz.common import __version__

    view = views.parse_view(view).name
    shrinkage = stats.check_shrinkage(shrinkage)
    layers = list(states)
    packed = _pack(states) if compact else None
    if compact:
        states = _unpack(packed, layers)  # finalize what load_stats will read back
    bundle = {layer: _estimate(states[layer], shrinkage, layer) for layer in layers}
    path = os.path.join(directory, STATS_FILE)
    primary = folder is not None
    # New moments go next to the old ones; stats.json, replaced atomically, is the commit point: until
    # it names the new moments, the old statistics stay whole and usable (disk full, crash).
    try:
        previous = read_metadata(directory)
    except (StatsNotFoundError, StatsMismatchError):
        previous = {}
    old_moments = (previous.get("moments", MOMENTS_FILE if previous.get("storage") == COMPACT else MOMENTS_DIR)
                   if previous else None)
    generation = previous.get("generation", 0) if isinstance(previous.get("generation"), int) else 0
    moments_name = f"{MOMENTS_DIR}-{generation + 1}" + (".npz" if compact else "")
    moments_path = os.path.join(directory, moments_name)
    storage = {"storage": COMPACT, "sha256": content_hash(packed)} if compact else {}
    tree = {f"{i:03d}": {**{k: np.asarray(v, np.float64) for k, v in StatsState(*states[layer])._asdict().items()},
                         "name": np.frombuffer(layer.encode("utf-8"), np.uint8)}  # looked up by name on load
            for i, layer in enumerate(layers)}
    meta = {
        "format": FORMAT, "jaxviz": __version__, "model": model, "view": view, "layers": layers,
        "shrinkage": shrinkage, "samples": {l: bundle[l].count for l in layers},
        "dims": {l: bundle[l].dim for l in layers}, **dict(metadata or {}), **storage,
        "moments": moments_name, "generation": generation + 1,
    }
    try:
        if primary:
            folder.own(moments_name, STATS_FILE)
        if compact:
            if primary:
                atomic_write(moments_path, lambda f: np.savez_compressed(f, **packed))
        else:
            with stderr_held(), ocp.StandardCheckpointer() as ckpt:  # a full disk: one line, not Orbax's tracebacks
                ckpt.save(moments_path, tree, force=True)
                ckpt.wait_until_finished()
        if primary:
            atomic_write_json(path, meta)
    except Exception as e:  # noqa: BLE001 - OSError, or tensorstore's errors for the same causes
        if primary:
            _remove(moments_path)
            folder.disown(moments_name)
        kept = " (the previous statistics are kept)" if previous else ""
        raise OutputError(f"cannot write statistics to {directory}: {write_failure(e)}{kept}") from None
    if primary and old_moments and old_moments != moments_name and old_moments in folder.entries:
        _remove(os.path.join(directory, old_moments))  # only moments our manifest lists
        folder.disown(old_moments)
    return StatsBundle(bundle, model, view, shrinkage, to_json(meta))


def _remove(path: str) -> None:
    """Removes a moments file or folder, if there."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _is_plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and os.path.basename(name) == name and name not in (".", "..")


def _check_metadata(meta: dict, path: str) -> None:
    """One clear error for a hand-edited or damaged ``stats.json``."""
    layers, dims = meta.get("layers"), meta.get("dims")
    problem = None
    if not isinstance(layers, list) or not layers or not all(isinstance(l, str) for l in layers):
        problem = "'layers' is not a non-empty list of names"
    elif len(set(layers)) != len(layers):
        problem = "'layers' names a layer twice"
    elif not isinstance(dims, dict) or any(not isinstance(dims.get(l), int) for l in layers):
        problem = "'dims' does not give every layer's dimension"
    elif not isinstance(meta.get("model"), str) or not isinstance(meta.get("view"), str):
        problem = "'model' or 'view' is missing"
    elif "shrinkage" not in meta:
        problem = "'shrinkage' is missing"
    elif not _is_plain_name(meta.get("moments", MOMENTS_DIR)):
        problem = "'moments' is not a folder name"
    if problem:
        raise StatsMismatchError(f"{path} is malformed ({problem}); recompute it with `jaxviz stats`")


def read_metadata(directory: str) -> dict:
    """The ``stats.json`` of a stats directory; :class:`StatsNotFoundError` if there is none."""
    path, meta = read_json(directory, STATS_FILE, missing=f"no statistics in {directory} (make them with `jaxviz stats`)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StatsMismatchError(f"{path} has an unknown format; recompute it with `jaxviz stats`")
    _check_metadata(meta, path)
    return meta


def load_stats(directory: str, *, model=None, layers: Sequence[str] | None = None, view=None,
               shrinkage=None) -> StatsBundle:
    """Reads ``jaxviz stats`` output and finalizes it (mean, covariance, shrunk precision).

    Args:
      directory: the stats directory.
      model: expected model (a name or a :class:`~jaxviz.models.model.Model`, whose layer shapes are
        then checked too).
      layers: layers to load (default all); each must be present.
      view: expected view.
      shrinkage: override the stored shrinkage choice.

    Raises:
      StatsNotFoundError: no statistics there.
      StatsMismatchError: they were made for another model, layer or view.
    """
    import orbax.checkpoint as ocp

    meta = read_metadata(directory)
    stored = list(meta["layers"])
    name = getattr(model, "name", model)
    if name is not None and name != meta["model"]:
        raise StatsMismatchError(f"statistics in {directory} are for model {meta['model']}, not {name}")
    if view is not None and views.parse_view(view).name != meta["view"]:
        wanted_view = views.parse_view(view).name
        raise StatsMismatchError(f"statistics in {directory} use view {meta['view']}, not {wanted_view}")
    wanted = stored if layers is None else list(layers)
    missing = [l for l in wanted if l not in stored]
    if missing:
        raise StatsMismatchError(f"statistics in {directory} hold layers {', '.join(stored)}, not {', '.join(missing)}")
    if hasattr(model, "layers"):
        v = views.parse_view(meta["view"])
        for layer in wanted:
            if layer not in model.layers or v.dim(model.layers[layer]) != meta["dims"][layer]:
                raise StatsMismatchError(f"layer {layer} of {name} does not match the statistics in {directory}")
    shrinkage = stats.check_shrinkage(meta["shrinkage"] if shrinkage is None else shrinkage)
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), meta.get("moments", MOMENTS_DIR))
    if meta.get("storage") == COMPACT:
        moments = _read_compact(directory, meta)
        out = {l: _estimate(moments[l], shrinkage, l) for l in wanted}
        return StatsBundle(out, meta["model"], meta["view"], shrinkage, meta)
    readers.regular_tree(path, fix="recompute them with `jaxviz stats --force`", error=StatsNotFoundError)
    try:
        with ocp.StandardCheckpointer() as ckpt:
            tree = ckpt.restore(path)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many types for one cause: damaged files
        raise StatsNotFoundError(f"cannot read the moments in {path} ({type(e).__name__}); "
                                 "recompute them with `jaxviz stats --force`") from None
    by_name = _moments_by_name(tree, stored, path)
    out = {}
    for l in wanted:
        if l not in by_name:
            raise StatsMismatchError(f"the moments in {path} hold no layer {l}; recompute them with `jaxviz stats`")
        state = by_name[l]
        if np.shape(state.mean) != (meta["dims"][l],):
            raise StatsMismatchError(f"the moments of layer {l} in {path} do not match stats.json; "
                                     "recompute them with `jaxviz stats`")
        out[l] = _estimate(state, shrinkage, l)
    return StatsBundle(out, meta["model"], meta["view"], shrinkage, meta)


# ------------------------------------------------------------------------------ compact moments


def _pack(states: Mapping[str, StatsState]) -> dict[str, np.ndarray]:
    """``{"NNN/field": array}``: float32 moments, the symmetric ``m2`` as its upper triangle."""
    out = {}
    for i, layer in enumerate(states):
        s = StatsState(*(np.asarray(a, np.float64) for a in states[layer]))
        rows, cols = np.triu_indices(s.mean.shape[0])
        out.update({f"{i:03d}/count": s.count, f"{i:03d}/mean": s.mean.astype(np.float32),
                    f"{i:03d}/m2_triu": s.m2[rows, cols].astype(np.float32),
                    f"{i:03d}/m3": s.m3.astype(np.float32), f"{i:03d}/m4": s.m4})
    return out


def _unpack(packed: Mapping[str, np.ndarray], layers: Sequence[str]) -> dict[str, StatsState]:
    out = {}
    for i, layer in enumerate(layers):
        mean = np.asarray(packed[f"{i:03d}/mean"], np.float64)
        rows, cols = np.triu_indices(mean.shape[0])
        m2 = np.zeros((mean.shape[0],) * 2)
        m2[rows, cols] = packed[f"{i:03d}/m2_triu"]
        m2[cols, rows] = packed[f"{i:03d}/m2_triu"]
        out[layer] = StatsState(np.asarray(packed[f"{i:03d}/count"], np.float64), mean, m2,
                                np.asarray(packed[f"{i:03d}/m3"], np.float64),
                                np.asarray(packed[f"{i:03d}/m4"], np.float64))
    return out


def content_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (independent of the file container)."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_compact(directory: str, meta: Mapping[str, Any]) -> dict[str, StatsState]:
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), meta.get("moments", MOMENTS_FILE))
    # a regular file only (a FIFO never blocks); a truncated or bit-flipped archive is one line
    packed = readers.read_npz(path, fix="recompute them with `jaxviz stats --compact --force`",
                              error=StatsMismatchError)
    if content_hash(packed) != meta.get("sha256"):
        raise StatsMismatchError(f"{path} does not match the hash in {STATS_FILE}; "
                                 "recompute it with `jaxviz stats --compact --force`")
    try:
        return _unpack(packed, meta["layers"])
    except (KeyError, ValueError, TypeError, IndexError):  # stats.json edited to name arrays the file lacks
        raise StatsMismatchError(f"{path} does not hold the layers {STATS_FILE} names; recompute it with "
                                 "`jaxviz stats --compact --force`") from None


def shipped_stats_dir(model_name: str, view: str = "pixel") -> str | None:
    """The statistics that ship with jaxviz for ``model_name`` and ``view``, or ``None``.

    They were computed over 1,000 ImageNet photos (one per class) with the command recorded in
    their ``stats.json``; README "The method" shows how to recompute them.

    Args:
      model_name: e.g. ``"efficientnet_lite0"``.
      view: ``pixel``, ``pooled`` or ``patchK``.

    Returns:
      The packaged stats directory (read it with :func:`load_stats`), or ``None`` if none ships.
    """
    directory = os.path.join(_SHIPPED_ROOT, str(model_name), views.parse_view(view).name)
    return directory if os.path.isfile(os.path.join(directory, STATS_FILE)) else None


def _moments_by_name(tree, stored: Sequence[str], path: str) -> dict[str, StatsState]:
    """``{layer: StatsState}``; each entry names its layer (files of older versions: by position)."""
    out = {}
    try:
        for key in sorted(tree):
            entry = dict(tree[key])
            raw = entry.pop("name", None)
            name = bytes(np.asarray(raw, np.uint8)).decode("utf-8") if raw is not None else stored[int(key)]
            out[name] = StatsState(**entry)
    except (TypeError, ValueError, IndexError, UnicodeDecodeError, AttributeError) as e:
        raise StatsMismatchError(f"the moments in {path} are malformed ({type(e).__name__}); "
                                 "recompute them with `jaxviz stats`") from None
    return out


def read_json(directory: str, name: str, *, missing: str) -> tuple[str, Any]:
    """``(path, parsed JSON)`` of ``directory/name``.

    Raises:
      StatsNotFoundError: ``missing`` when there is no such file; the reason when it cannot be read.
    """
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), name)
    try:
        with open(path, encoding="utf-8") as f:
            return path, json.load(f)
    except FileNotFoundError:
        raise StatsNotFoundError(missing) from None
    except (OSError, ValueError) as e:
        raise StatsNotFoundError(f"cannot read {path}: {e}") from None
