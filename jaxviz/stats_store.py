"""Reading and writing ``jaxviz stats`` output: Orbax moments + ``stats.json`` metadata.

A stats directory holds ``moments-N/`` (an Orbax checkpoint of every layer's
:class:`~jaxviz.stats.StatsState`, float64, each entry naming its layer) and ``stats.json`` (model,
view, layers, shrinkage, the moments folder's name, data spec, seed, image count, jaxviz version,
...). Replacing statistics writes a new moments folder, then swaps ``stats.json`` atomically, so
the old statistics stay usable until the new ones are complete. :func:`load_stats` finalizes the moments in
float64 (mean, unbiased covariance, shrunk precision and its Cholesky factor) and refuses
statistics made for another model, layer or view.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import stats, views
from jaxviz.errors import OutputError, StatsMismatchError, StatsNotFoundError, UsageError
from jaxviz.files import atomic_write_json, to_json
from jaxviz.stats import LayerStats, StatsState

__all__ = ["StatsBundle", "LayerStats", "StatsMismatchError", "StatsNotFoundError", "save_stats", "load_stats",
           "read_metadata", "STATS_FILE"]

FORMAT = 1
STATS_FILE = "stats.json"
MOMENTS_DIR = "moments"


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
                         "use --shrinkage oas or a positive coefficient")
    return est._replace(shrinkage=float(est.shrinkage), condition=float(est.condition), count=float(est.count),
                        dim=int(est.dim))


def save_stats(directory: str, states: Mapping[str, StatsState], *, model: str, view: str,
               shrinkage="oas", metadata: Mapping[str, Any] | None = None) -> StatsBundle:
    """Writes per-layer moments (Orbax) and ``stats.json`` (metadata) to ``directory``.

    Args:
      directory: output directory (created if needed).
      states: ``{layer: StatsState}``.
      model: model name.
      view: the feature view the states were collected with.
      shrinkage: default shrinkage for :func:`load_stats`.
      metadata: extra JSON-able fields (data spec, seed, images, ...).

    Returns:
      The finalized :class:`StatsBundle`.
    """
    import orbax.checkpoint as ocp

    from jaxviz import __version__
    from jaxviz.checkpoint import check_writable_dir

    directory = check_writable_dir(directory)
    view = views.parse_view(view).name
    shrinkage = stats.check_shrinkage(shrinkage)
    layers = list(states)
    bundle = {layer: _estimate(states[layer], shrinkage, layer) for layer in layers}
    path = os.path.join(directory, STATS_FILE)
    primary = jax.process_index() == 0
    # New moments go to a new folder; stats.json, replaced atomically, is the commit point: until
    # it names the new folder, the old statistics stay whole and usable (disk full, crash).
    try:
        previous = read_metadata(directory)
    except (StatsNotFoundError, StatsMismatchError):
        previous = {}
    old_moments = previous.get("moments", MOMENTS_DIR) if previous else None
    generation = previous.get("generation", 0) if isinstance(previous.get("generation"), int) else 0
    moments_name = f"{MOMENTS_DIR}-{generation + 1}"
    moments_path = os.path.join(directory, moments_name)
    tree = {f"{i:03d}": {**{k: np.asarray(v, np.float64) for k, v in StatsState(*states[layer])._asdict().items()},
                         "name": np.frombuffer(layer.encode("utf-8"), np.uint8)}  # looked up by name on load
            for i, layer in enumerate(layers)}
    meta = {
        "format": FORMAT, "jaxviz": __version__, "model": model, "view": view, "layers": layers,
        "shrinkage": shrinkage, "samples": {l: bundle[l].count for l in layers},
        "dims": {l: bundle[l].dim for l in layers}, **dict(metadata or {}),
        "moments": moments_name, "generation": generation + 1,
    }
    try:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(moments_path, tree, force=True)
            ckpt.wait_until_finished()
        if primary:
            atomic_write_json(path, meta)
    except Exception as e:  # noqa: BLE001 - OSError, or tensorstore's errors for the same causes
        if primary:
            shutil.rmtree(moments_path, ignore_errors=True)
        kept = " (the previous statistics are kept)" if previous else ""
        raise OutputError(f"cannot write statistics to {directory}: {_reason(e)}{kept}") from None
    if primary and old_moments and old_moments != moments_name and _is_plain_name(old_moments):
        shutil.rmtree(os.path.join(directory, old_moments), ignore_errors=True)
    return StatsBundle(bundle, model, view, shrinkage, to_json(meta))


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"


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
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), STATS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise StatsNotFoundError(f"no statistics in {directory} (make them with `jaxviz stats`)") from None
    except (OSError, ValueError) as e:
        raise StatsNotFoundError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StatsMismatchError(f"{path} has an unknown format; recompute it with `jaxviz stats`")
    _check_metadata(meta, path)
    return meta


def load_stats(directory: str, *, model=None, layers: Sequence[str] | None = None, view=None,
               shrinkage=None) -> StatsBundle:
    """Reads ``jaxviz stats`` output and finalizes it (mean, covariance, shrunk precision).

    Args:
      directory: the stats directory.
      model: expected model (a name or a :class:`~jaxviz.features.Model`, whose layer shapes are
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
