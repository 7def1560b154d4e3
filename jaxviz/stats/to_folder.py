"""The statistics pass into a folder, as ``jaxviz stats`` runs it: the arguments checked, statistics already
there reused or refused (never replaced without ``force``), the pass checkpointed and resumable, the result
saved (:func:`jaxviz.stats.store.save_stats`). The pass itself is :func:`jaxviz.stats.collect.collect_moments`.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Mapping, Sequence

import jax

from jaxviz.common.errors import JaxvizError, UsageError
from jaxviz.common.files import to_json
from jaxviz.common.progress import progress_bar
from jaxviz.stats import moments as stats
from jaxviz.stats import views
from jaxviz.stats.collect import check_pass_arguments, collect_moments, layer_shapes
from jaxviz.stats.store import COMPACT, STATS_FILE, StatsBundle, load_stats, read_metadata, save_stats

__all__ = ["collect_to_dir"]

def _run_metadata(model, layers, view, source, *, spec, seed, size, batch_size, max_images) -> dict:
    meta = {"model": model.name, "layers": list(layers), "view": view.name, "data": spec,
            "data_description": source.describe(), "seed": seed, "images": len(source), "size": size,
            "batch_size": batch_size, "max_images": max_images, "processes": jax.process_count(),
            "preprocessing": getattr(source, "preprocessing", None)}
    if hasattr(source, "fingerprint"):  # the files' sizes and times: a changed image is another pass
        meta["files"] = source.fingerprint()
    return meta


def _differences(old, new) -> list[str]:
    """Names of the run settings that differ between two ``run`` records."""
    if not isinstance(old, dict):
        return ["settings unknown"]
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _count(value) -> int:
    return len(value) if hasattr(value, "__len__") else int(value or 0)


def collect_to_dir(model, layers: Sequence[str], spec: str, directory: str, *, view="pixel", size=None,
                   batch_size: int = 32, data_dir=None, max_images=None, seed: int = 0, shrinkage="oas",
                   checkpoint_dir=None, checkpoint_every: int = 50, force: bool = False, quiet: bool = False,
                   progress=None, compact: bool = False,
                   metadata: Mapping[str, Any] | None = None) -> tuple[StatsBundle, bool]:
    """Statistics of ``layers`` over the data ``spec``, saved in ``directory`` (what ``jaxviz stats`` runs).

    Statistics already in ``directory`` with the same settings are reused unless ``force``;
    statistics of other layers there are replaced only with ``force``. The pass checkpoints to
    ``checkpoint_dir`` (default ``directory/.checkpoint``, removed when done; ``force`` discards it
    too) so an interrupted run resumes when rerun. A second live run on ``directory`` is refused.
    ``compact`` stores float32 moments (``moments-N.npz``, see :mod:`jaxviz.stats.store`);
    ``metadata`` adds fields to ``stats.json`` (e.g. the command that made them).

    Returns:
      ``(bundle, computed)``: the statistics and whether a pass ran.
    """
    from jaxviz.common import outputs

    check_pass_arguments(batch_size=batch_size, checkpoint_every=checkpoint_every, size=size, max_images=max_images,
                         seed=seed)
    view = views.parse_view(view)
    layers = list(model.check_layers(list(layers)))
    shrinkage = stats.check_shrinkage(shrinkage)
    with outputs.claim(directory, force=force, what="statistics folder") as folder:
        directory = folder.path
        return _collect_to_dir(model, layers, spec, directory, view=view, size=size, batch_size=batch_size,
                               data_dir=data_dir, max_images=max_images, seed=seed, shrinkage=shrinkage,
                               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, force=force,
                               quiet=quiet, progress=progress, compact=compact, metadata=metadata)


def _collect_to_dir(model, layers, spec, directory, *, view, size, batch_size, data_dir, max_images, seed, shrinkage,
                    checkpoint_dir, checkpoint_every, force, quiet, progress, compact, metadata):
    from jaxviz.data import sources as data

    size = int(size or model.resolution or 224)
    source = data.open_source(spec, size=size, data_dir=data_dir, max_images=max_images, seed=seed)
    run = _run_metadata(model, layers, view, source, spec=spec, seed=seed, size=size, batch_size=batch_size,
                        max_images=max_images)
    shapes = layer_shapes(model, tuple(layers), size)
    for layer in layers:
        view.check(shapes[layer], layer)
    if os.path.exists(os.path.join(directory, STATS_FILE)):
        try:
            old = read_metadata(directory)
        except JaxvizError:
            old = {}
        same_storage = (old.get("storage") == COMPACT) == bool(compact)
        if not force and same_storage and old.get("run") == to_json(run):
            return load_stats(directory, model=model, shrinkage=shrinkage), False
        lost = [l for l in old.get("layers") or () if l not in layers]
        if lost and not force:  # replacing them would lose statistics the user made
            raise UsageError(f"{directory} holds statistics of other layers ({', '.join(map(str, lost))}); "
                             "pass force=True to replace them, or choose another folder")
        if old and not force:  # the same layers made another way (seed, data, size...) are the user's work too
            differs = _differences(old.get("run"), to_json(run)) if same_storage else ["storage"]
            raise UsageError(f"{directory} holds statistics of these layers made with other settings "
                             f"({', '.join(differs[:3]) or 'unknown'}); pass force=True to replace them, or choose "
                             "another folder")
        if not quiet and jax.process_index() == 0:
            print(f"jaxviz: note: replacing the statistics in {directory}", file=sys.stderr)
    default_ckpt = checkpoint_dir is None
    checkpoint_dir = checkpoint_dir or os.path.join(directory, ".checkpoint")
    if default_ckpt:
        from jaxviz.common import outputs

        with outputs.claim(directory, what="statistics folder") as folder:  # re-entrant: the claim above
            folder.own(".checkpoint")
    if force and default_ckpt and jax.process_index() == 0:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # --force starts from scratch
    bar, close = (None, lambda: None) if (quiet or progress) else progress_bar("stats", unit="img", total=len(source))
    report = progress or bar
    first = []

    def on_progress(done, total):
        if not first:
            first.append(done)
            if done and jax.process_index() == 0:
                print(f"jaxviz: resuming at image {done}/{total} from {checkpoint_dir}", file=sys.stderr)
        if report is not None:
            report(done, total)

    try:
        states = collect_moments(model, layers, source, view=view, batch_size=batch_size,
                               checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                               metadata={"data": spec, "seed": seed, "max_images": max_images,
                                         "files": run.get("files")},
                               progress=on_progress)
    finally:
        close()
    extra = {"run": run, "data": spec, "data_description": run["data_description"], "seed": seed,
             "images": len(source), "size": size, "skipped": _count(getattr(source, "skipped", 0)),
             "converted": _count(getattr(source, "converted", 0)), "preprocessing": run["preprocessing"],
             **dict(metadata or {})}
    bundle = save_stats(directory, states, model=model.name, view=view.name, shrinkage=shrinkage, metadata=extra,
                        compact=compact)
    if default_ckpt and jax.process_index() == 0:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return bundle, True

