"""The jobs behind the command line, as library calls: visualize targets, run the demo.

``jaxviz visualize`` and ``jaxviz demo`` parse their flags and call these; experiments call them
too, so a user, a script and the CLI all get the same run, gallery and ``metrics.json``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Mapping, Sequence

from jaxviz import priors as priors_lib
from jaxviz import render as render_lib
from jaxviz.errors import UsageError
from jaxviz.progress import progress_bar

__all__ = ["expand_targets", "target_label", "build_prior", "visualize", "demo", "check_demo", "DEMO_TARGETS"]

DEMO_TARGETS = ("logits:207", "logits:281", "logits:947", "logits:980")  # retriever, tabby, mushroom, volcano
DEMO_STATS_LAYERS = ("blocks.2", "blocks.3", "blocks.4", "blocks.5")
DEMO_METHOD_LAYERS = ("blocks.2", "blocks.4")  # the method sees these; blocks.3 and blocks.5 are held out


def expand_targets(specs: Sequence[str], layers: Mapping[str, Sequence[int]]) -> list[str]:
    """Expands ``LAYER:all`` and ``LAYER:A-B`` into single ``LAYER:CHANNEL`` specs."""
    out = []
    for spec in specs:
        layer, _, channels = spec.rpartition(":")
        match = re.fullmatch(r"([0-9]+)-([0-9]+)", channels, flags=re.ASCII)
        if layer in layers and (channels == "all" or match):
            n = layers[layer][-1]
            lo, hi = (0, n - 1) if channels == "all" else (int(match[1]), int(match[2]))
            if not 0 <= lo <= hi < n:
                raise UsageError(f"channel range {channels} is outside 0-{n - 1} of layer '{layer}'")
            out.extend(f"{layer}:{c}" for c in range(lo, hi + 1))
        else:
            out.append(spec)
    return out


def target_label(model, spec: str) -> str:
    """A human caption: the class name for ``logits:N``."""
    layer, _, channel = spec.rpartition(":")
    if layer == "logits" and model.class_names and channel.isascii() and channel.isdigit() \
            and int(channel) < len(model.class_names):
        return model.class_names[int(channel)]
    return ""


def build_prior(model, name: str = "none", *, stats: str | None = None, layers: Sequence[str] | None = None,
                **options):
    """The prior called ``name`` for ``model`` (see :func:`jaxviz.priors.build`)."""
    return priors_lib.build(name, model=model, stats_dir=stats, layers=list(layers) if layers else None, **options)


def visualize(model, targets: Sequence[str], out: str, *, config: render_lib.RenderConfig, prior=None,
              stats: str | None = None, checkpoint_dir: str | None = None, quiet: bool = False,
              title: str | None = None, **render_options):
    """Renders ``LAYER:CHANNEL`` targets and writes the gallery and ``metrics.json`` to ``out``.

    Args:
      model: a :class:`jaxviz.Model`.
      targets: target specs (``logits:207``, ``blocks.10:7``; ``LAYER:all`` / ``LAYER:A-B`` expand).
      out: output directory (created).
      config: a :class:`jaxviz.render.RenderConfig`.
      prior: a prior object (e.g. from :func:`build_prior`); default none.
      stats: where the prior's statistics came from (recorded in metrics.json).
      checkpoint_dir: resume / checkpoint here.
      quiet: no progress bar.
      title: page title.
      **render_options: passed to :func:`jaxviz.render.render` (``parameterization``, ``transform``...).

    Returns:
      ``(metrics dict, RenderResult)``.
    """
    from jaxviz.checkpoint import check_writable_dir
    from jaxviz.files import lock_dir

    out = check_writable_dir(out, "out=")
    with lock_dir(out, what="out="):  # a second run writing the same folder is refused
        return _visualize(model, targets, out, config=config, prior=prior, stats=stats,
                          checkpoint_dir=checkpoint_dir, quiet=quiet, title=title, **render_options)


def _visualize(model, targets, out, *, config, prior, stats, checkpoint_dir, quiet, title, **render_options):
    from jaxviz import objectives, report

    specs = expand_targets(targets, model.layers)
    parsed = [objectives.parse_target(spec, model.layers) for spec in specs]
    prior = prior or priors_lib.none()
    title = title or f"jaxviz {model.name}"
    update, close = progress_bar(title, quiet=quiet)
    try:
        result = render_lib.render(model, parsed, config=config, prior=prior, checkpoint_dir=checkpoint_dir,
                                   progress=update, **render_options)
    finally:
        close()
    run_config = {"model": model.name, "prior": repr(prior), "stats": stats, **config.numbers()}
    for name in ("parameterization", "transform"):
        if name in render_options:
            run_config[name] = repr(render_options[name])
    metrics = report.write_result(out, result, targets=specs, labels=[target_label(model, s) for s in specs],
                                  config=run_config, title=title)
    return metrics, result


def check_demo(*, steps: int = 128, size: int = 128, targets: Sequence[str] | None = None) -> None:
    """Raises :class:`UsageError` for :func:`demo` arguments that cannot run (before any work)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= render_lib.MAX_SIZE:
        raise UsageError(f"size= must be an integer between 1 and {render_lib.MAX_SIZE}, got {size!r}")
    config = render_lib.RenderConfig(size=size, steps=steps, batch_size=max(1, len(targets or DEMO_TARGETS)))
    config.check()
    warmup = priors_lib.OutlierPrior.warmup
    if steps <= warmup:
        raise UsageError(f"steps= must exceed the outlier prior's warmup ({warmup}), got {steps}")


def demo(model, out: str, *, steps: int = 128, size: int = 128, targets: Sequence[str] | None = None,
         quiet: bool = False) -> tuple[str, dict]:
    """The method next to plain activation maximization on a few classes, in one gallery.

    Statistics of shallow layers over the embedded photos are computed once and cached; then
    every target is rendered with ``prior none`` and with ``prior outliers`` (the method sees
    ``DEMO_METHOD_LAYERS``), and each image gets its mean D²/dim at the method's layers and at the
    held-out ones.

    Returns:
      ``(path of index.html, {"none": metrics, "outliers": metrics})``.
    """
    from jaxviz.checkpoint import check_writable_dir
    from jaxviz.collect import collect_to_dir
    from jaxviz.errors import CheckpointMismatchError, StatsMismatchError, StatsNotFoundError
    from jaxviz.files import lock_dir
    from jaxviz.models import cache_dir

    check_demo(steps=steps, size=size, targets=targets)
    out = check_writable_dir(out, "out=")
    stats_dir = os.path.join(cache_dir(), "stats", f"{model.name}-photos-{'+'.join(DEMO_STATS_LAYERS)}")
    if not quiet:
        print(f"statistics of {', '.join(DEMO_STATS_LAYERS)} over the embedded photos → {stats_dir}", file=sys.stderr)
    try:
        collect_to_dir(model, list(DEMO_STATS_LAYERS), "photos", stats_dir, quiet=quiet)
    except (StatsNotFoundError, StatsMismatchError, CheckpointMismatchError):  # a damaged cache: rebuild it
        if not quiet:
            print(f"jaxviz: note: the cached statistics in {stats_dir} are damaged; rebuilding them", file=sys.stderr)
        collect_to_dir(model, list(DEMO_STATS_LAYERS), "photos", stats_dir, quiet=quiet, force=True)
    with lock_dir(out, what="out="):
        return _demo(model, out, stats_dir, steps=steps, size=size, targets=targets, quiet=quiet)


def _demo(model, out, stats_dir, *, steps, size, targets, quiet):
    from jaxviz.report import write_comparison

    specs = list(targets or DEMO_TARGETS)
    config = render_lib.RenderConfig(size=size, steps=steps, batch_size=len(specs))
    runs = {}
    for name in ("none", "outliers"):
        prior = build_prior(model, name, stats=stats_dir, layers=DEMO_METHOD_LAYERS) if name != "none" else None
        runs[name], _ = visualize(model, specs, os.path.join(out, name), config=config, prior=prior,
                                  stats=stats_dir if prior else None, quiet=quiet, title=f"jaxviz demo, prior {name}")
    _add_naturalness(model, stats_dir, runs, out)
    page = write_comparison(out, runs, title=f"jaxviz demo: DeepDream (none) vs outlier suppression, {model.name}")
    return page, runs


def _add_naturalness(model, stats_dir, runs, out) -> None:
    """Mean D²/dim of every image at the method's layers and at held-out layers (both runs)."""
    import numpy as np

    from jaxviz.files import atomic_write_json
    from jaxviz.metrics import heldout_naturalness
    from jaxviz.stats_store import load_stats

    bundle = load_stats(stats_dir, model=model)
    moments = {l: (np.asarray(s.mean), np.asarray(s.precision)) for l, s in bundle.layers.items()}
    for name, metrics in runs.items():
        images = np.load(os.path.join(out, name, "images.npy"))
        d2 = heldout_naturalness(model, images, moments)
        for i, entry in enumerate(metrics["targets"]):
            entry["d2_used"] = float(np.mean([d2[l][i] for l in DEMO_METHOD_LAYERS]))
            entry["d2_heldout"] = float(np.mean([d2[l][i] for l in moments if l not in DEMO_METHOD_LAYERS]))
        atomic_write_json(os.path.join(out, name, "metrics.json"), metrics)
