"""The jobs behind the command line, as library calls: visualize targets, run the demo.

``jaxviz visualize`` and ``jaxviz demo`` parse their flags and call these; experiments call them
too, so a user, a script and the CLI all get the same run, gallery and ``metrics.json``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from jaxviz import render as render_lib
from jaxviz.common.errors import UsageError
from jaxviz.common.progress import progress_bar
from jaxviz.objectives.targets import expand_targets

__all__ = ["expand_targets", "target_label", "visualize", "demo", "check_demo", "DEMO_TARGETS", "DEMO_RUNS"]

DEMO_TARGETS = ("logits:207", "logits:281", "logits:947", "logits:980")  # retriever, tabby, mushroom, volcano
# MaCo, the best baseline, and the best measured statistics prior on it (README "Experiments": quantile matching,
# Lite2 top-5 0.81 vs 0.72 on 64 x 2 held-out class pairs); the seed's suppression is the `outliers` recipe
DEMO_RUNS = {"maco": "MaCo recipe (no prior)",
             "quantile": "MaCo recipe + quantile matching to real photos' shallow statistics"}
DEMO_BASE, DEMO_PRIOR = "maco", "quantile"
DEMO_PASSES = 256  # forward-backward passes per image
DEMO_SIZE = 160  # side of what the model sees
DEMO_JUDGE = "efficientnet_lite2"  # held out: the optimization never sees it


def target_label(model, spec: str) -> str:
    """A human caption: the class name for ``logits:N``."""
    layer, _, channel = spec.rpartition(":")
    if layer == "logits" and model.class_names and channel.isascii() and channel.isdigit() \
            and int(channel) < len(model.class_names):
        return model.class_names[int(channel)]
    return ""


def visualize(model, targets, out: str, *, config: render_lib.RenderConfig | None = None, prior=None,
              stats: str | None = None, checkpoint_dir: str | None = None, quiet: bool = False,
              title: str | None = None, force: bool = False, **render_options):
    """Renders ``LAYER:CHANNEL`` targets and writes the gallery and ``metrics.json`` to ``out``.

    Args:
      model: a :class:`jaxviz.Model`.
      targets: target specs (``logits:207``, ``blocks.10:7``, ``blocks.7``; ``LAYER:all`` /
        ``LAYER:A-B`` expand) or objectives, one or a list (:func:`jaxviz.objectives.as_targets`).
      out: output directory (created).
      config: a :class:`jaxviz.render.RenderConfig`; default the recipe's.
      prior: a prior object (e.g. from :func:`jaxviz.registry.build_prior`); default the recipe's.
      stats: where the prior's statistics came from (recorded in metrics.json).
      checkpoint_dir: resume / checkpoint here.
      quiet: no progress bar.
      title: page title.
      force: write beside files in ``out`` that jaxviz did not write (README "Guarantees": they are never
        touched; without it such a folder is refused before the render).
      **render_options: passed to :func:`jaxviz.render.render_images` (``recipe``, ``parameterization``,
        ``transform``...); ``metrics.json``'s ``config`` is the result's record (recipe and every part).

    Returns:
      ``(metrics dict, RenderResult)``.
    """
    from jaxviz.common import outputs
    from jaxviz.report.gallery import GALLERY_FILES

    # claimed before the render: writable, ours (or force), no second writer; the gallery takes it again
    with outputs.claim(out, force=force, what="out=", names=GALLERY_FILES) as folder:
        return _visualize(model, targets, folder.path, config=config, prior=prior, stats=stats,
                          checkpoint_dir=checkpoint_dir, quiet=quiet, title=title, force=force, **render_options)


def _visualize(model, targets, out, *, config, prior, stats, checkpoint_dir, quiet, title, force, **render_options):
    from jaxviz import objectives, report

    parsed = objectives.as_targets(targets, model.target_layers)
    title = title or f"jaxviz {model.name}"
    update, close = progress_bar(title, quiet=quiet)
    try:
        result = render_lib.render_images(model, parsed, config=config, prior=prior, checkpoint_dir=checkpoint_dir,
                                   progress=update or False, **render_options)
    finally:
        close()
    run_config = {**result.record, "stats": stats}
    names = list(result.targets)
    metrics = report.write_result(out, result, targets=names, labels=[target_label(model, s.split("#")[0])
                                                                      for s in names],
                                  config=run_config, title=title, force=force)
    return metrics, result


def check_demo(*, steps: int = DEMO_PASSES, size: int = DEMO_SIZE, targets: Sequence[str] | None = None) -> None:
    """Raises :class:`UsageError` for :func:`demo` arguments that cannot run (before any work)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= render_lib.MAX_SIZE:
        raise UsageError(f"size= must be an integer between 1 and {render_lib.MAX_SIZE}, got {size!r}")
    config = render_lib.RenderConfig(size=size, steps=steps, batch_size=max(1, len(targets or DEMO_TARGETS)))
    config.check()


def demo(model, out: str, *, steps: int = DEMO_PASSES, size: int = DEMO_SIZE, targets: Sequence[str] | None = None,
         quiet: bool = False, judge: str | None = DEMO_JUDGE, real: str | None = None,
         force: bool = False) -> tuple[str, dict]:
    """MaCo next to MaCo with the best measured statistics prior on a few classes, in one gallery, with a
    held-out verdict.

    Every target is rendered with the ``maco`` recipe (MaCo's settings, scaled) and with the
    ``quantile`` recipe (the same plus quantile matching to the statistics of real photos that ship
    with jaxviz), both at ``steps`` forward-backward passes with the model seeing ``size`` px.
    Then a judge the optimization never saw (EfficientNet-Lite2) gives its top-5 classes for each
    image and, when real photos are available (:func:`jaxviz.realism.default_real`), the
    plausibility rank of the target class (see :mod:`jaxviz.realism`).

    Args:
      model: a :class:`jaxviz.Model`.
      out: output folder (``maco/``, ``quantile/`` and a side-by-side ``index.html``).
      steps: forward-backward passes per image (MaCo takes 4 crops, so 4 passes, per optimizer step).
      size: side of what the model sees.
      targets: target specs (default :data:`DEMO_TARGETS`).
      quiet: no progress output.
      judge: held-out judge model name, or ``None`` for no verdict.
      real: real photos for plausibility (a folder or ``tfds:...``; default :func:`jaxviz.realism.default_real`).
      force: write beside files in ``out`` that jaxviz did not write (they are never touched).

    Returns:
      ``(path of index.html, {"maco": metrics, "quantile": metrics})``.
    """
    from jaxviz import recipes
    from jaxviz.common import outputs

    check_demo(steps=steps, size=size, targets=targets)
    low = render_lib.min_size(model)
    if recipes.get(DEMO_BASE, size=size).size < low:  # the canvas is what render checks
        need = next(s for s in range(size, render_lib.MAX_SIZE + 1) if recipes.get(DEMO_BASE, size=s).size >= low)
        raise UsageError(f"size= must be at least {need} for {model.name} (the demo's canvas must be at least "
                         f"{low} px), got {size}")
    with outputs.claim(out, force=force, what="out=", names=("index.html", *DEMO_RUNS)) as folder:
        folder.own(*DEMO_RUNS)  # each run's folder is ours (and holds its own manifest)
        page = _demo(model, folder.path, steps=steps, size=size, targets=targets, quiet=quiet, judge=judge, real=real)
        folder.own("index.html")
        return page


def _demo(model, out, *, steps, size, targets, quiet, judge, real):
    from jaxviz import recipes
    from jaxviz.report.gallery import write_comparison
    from jaxviz.stats.store import shipped_stats_dir

    specs = list(targets or DEMO_TARGETS)
    if any(recipes.get(name, size=size).prior for name in DEMO_RUNS):  # before any run: never half a demo
        _check_shipped_stats(model)
    runs, titles = {}, {}
    for name in DEMO_RUNS:
        recipe = recipes.get(name, size=size).at_budget(steps)
        titles[name] = f"jaxviz demo, {DEMO_RUNS[name]}"
        runs[name], _ = visualize(model, specs, os.path.join(out, name), config=recipe.config(batch_size=len(specs)),
                                  recipe=recipe, stats=shipped_stats_dir(model.name, "pixel") if recipe.prior else None,
                                  quiet=quiet, title=titles[name])
        runs[name]["config"]["recipe_notes"] = recipe.notes
    if judge:
        _add_verdict(model, runs, out, judge=judge, real=real, titles=titles, quiet=quiet)
    intro = (f"Each target rendered with MaCo's recipe (left) and with the same recipe plus quantile matching of "
             f"shallow features to those of real photos (right), {steps} passes, {model.name} seeing {size} px. "
             f"Under each image: the objective over the steps, the prior's final quantile distance"
             + (f", and the top 5 of {judge}, a model the optimization never saw." if judge else "."))
    page = write_comparison(out, runs, title=f"jaxviz demo: {model.name}", headers=DEMO_RUNS, intro=intro)
    return page, runs


def _check_shipped_stats(model) -> None:
    """The statistics shipped with jaxviz for ``model`` are there and whole (else one line: reinstall)."""
    from jaxviz.common.errors import DataError, JaxvizError
    from jaxviz.stats.store import load_stats, shipped_stats_dir

    folder = shipped_stats_dir(model.name, "pixel")
    if folder is None:
        raise DataError(f"the statistics shipped for {model.name} are missing (a damaged install); reinstall jaxviz")
    try:
        load_stats(folder, model=model)
    except JaxvizError as e:
        raise DataError(f"the statistics shipped for {model.name} are damaged ({e}); reinstall jaxviz") from None


def _add_verdict(model, runs, out, *, judge, real, titles, quiet) -> None:
    """Adds the held-out judge's verdict (top 5, p(target), plausibility) to every record and page."""
    import numpy as np

    from jaxviz import realism
    from jaxviz.common.cache import cache_dir
    from jaxviz.report.gallery import write_page

    j = realism.load_judge(judge)
    names = j.model.class_names or model.class_names or ()
    real = real or realism.default_real()
    if not real and not quiet:
        print("jaxviz: note: no real photos found (set JAXVIZ_REAL_DIR): plausibility is left out", file=sys.stderr)
    for name, metrics in runs.items():
        images = np.load(os.path.join(out, name, "images.npy"))
        logits = np.asarray(realism.judge_features(j, images).logits, np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        entries = metrics["targets"]
        classes = [_class_index(e["target"], p.shape[-1]) for e in entries]
        for e, probs, c in zip(entries, p, classes):
            top = np.argsort(-probs)[:5]
            e["judge"] = {"model": j.name, "top5": [{"class": int(k), "label": names[k] if k < len(names) else "",
                                                     "p": round(float(probs[k]), 4)} for k in top]}
            if c is not None:
                e["judge"].update(target_class=c, p_target=round(float(probs[c]), 4), top5_hit=bool(c in top))
        known = [i for i, c in enumerate(classes) if c is not None]
        if real and known:
            scores = realism.score(images[known], [classes[i] for i in known], judges=[j], real=real,
                                   cache_dir=os.path.join(cache_dir(), "realism"))
            reference = realism.reference_features(j, real, cache_dir=os.path.join(cache_dir(), "realism"))
            for row, i in enumerate(known):
                entries[i]["judge"].update(
                    plausibility_rank=float(scores.per_image[f"{j.name}/rank"][row]) + 1,
                    plausibility_of=int(len(np.unique(reference.classes))),
                    cos_own=round(float(scores.per_image[f"{j.name}/cos_own"][row]), 4))
        write_page(os.path.join(out, name), metrics, title=titles[name])


def _class_index(spec: str, classes: int) -> int | None:
    layer, _, channel = spec.rpartition(":")
    if layer == "logits" and channel.isascii() and channel.isdigit() and int(channel) < classes:
        return int(channel)
    return None
