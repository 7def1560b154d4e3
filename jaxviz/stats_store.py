"""Reading and writing ``jaxviz stats`` output: Orbax moments + ``stats.json`` metadata.

A stats directory holds ``moments/`` (an Orbax checkpoint of every layer's
:class:`~jaxviz.stats.StatsState`, float64) and ``stats.json`` (model, view, layers, shrinkage,
data spec, seed, image count, jaxviz version, ...). :func:`load_stats` finalizes the moments in
float64 (mean, unbiased covariance, shrunk precision and its Cholesky factor) and refuses
statistics made for another model, layer or view.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import stats, views
from jaxviz.errors import StatsMismatchError, StatsNotFoundError, UsageError
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
    if primary and os.path.exists(path):
        os.remove(path)  # never leave metadata that describes half-written moments
    tree = {f"{i:03d}": {k: np.asarray(v, np.float64) for k, v in StatsState(*states[layer])._asdict().items()}
            for i, layer in enumerate(layers)}
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.join(directory, MOMENTS_DIR), tree, force=True)
        ckpt.wait_until_finished()
    meta = {
        "format": FORMAT, "jaxviz": __version__, "model": model, "view": view, "layers": layers,
        "shrinkage": shrinkage, "samples": {l: bundle[l].count for l in layers},
        "dims": {l: bundle[l].dim for l in layers}, **dict(metadata or {}),
    }
    if primary:
        atomic_write_json(path, meta)
    return StatsBundle(bundle, model, view, shrinkage, to_json(meta))


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
    path = os.path.join(os.path.abspath(os.path.expanduser(directory)), MOMENTS_DIR)
    try:
        with ocp.StandardCheckpointer() as ckpt:
            tree = ckpt.restore(path)
    except (OSError, ValueError, KeyError) as e:
        raise StatsNotFoundError(f"cannot read the moments in {path} ({type(e).__name__}); "
                                 "recompute them with `jaxviz stats --force`") from None
    out = {l: _estimate(StatsState(**tree[f"{stored.index(l):03d}"]), shrinkage, l) for l in wanted}
    return StatsBundle(out, meta["model"], meta["view"], shrinkage, meta)
