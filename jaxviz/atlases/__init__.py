"""A layer's atlas: every channel's visualization beside the real images that drive it.

:func:`atlas` runs four phases — examples (:func:`jaxviz.stats.examples.collect_examples`), visualizations,
measures (:mod:`jaxviz.realism.neurons`), site (:func:`jaxviz.report.atlas_site.write_site`); README "Atlas"
says what each computes. Each is saved in ``out`` when done, so a rerun (after kill -9 too) skips it, and the
two long ones are checkpointed inside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from typing import Sequence

import numpy as np

from jaxviz.common.errors import UsageError, check_integer
from jaxviz.common.files import atomic_write, atomic_write_json, to_json

__all__ = ["atlas", "Atlas", "claim_out", "parse_channels", "DEFAULT_PASSES", "DEFAULT_SIZE"]

DEFAULT_PASSES = 256   # the deep-neuron stick's budget (README "Experiments"): ~4 s per channel on 2 cores
DEFAULT_SIZE = 128
RUN_FILE = "atlas-run.json"
DIVERSITY_WEIGHT = 100.0  # Lucid's weight of its diversity term


def parse_channels(text: str | Sequence[int] | None, count: int) -> list[int]:
    """``"0-31"``, ``"3,5,9-12"``, ``"all"``, ``None`` (all) or a list → channel numbers in ``0..count-1``."""
    if text is None or (isinstance(text, str) and text.strip() == "all"):
        return list(range(count))
    items: list[int] = []
    if isinstance(text, str):
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, dash, b = part.partition("-")
            if not (a.isdigit() and a.isascii() and (not dash or (b.isdigit() and b.isascii()))):
                raise UsageError(f"channels must look like 0-31 or 3,5,9-12, got {text[:40]!r}")
            lo, hi = int(a), int(b) if dash else int(a)
            if hi < lo:
                raise UsageError(f"channel range {part} is empty")
            items += range(lo, hi + 1)
    else:
        items = [int(c) for c in text]
    if not items:
        raise UsageError("no channels given")
    bad = [c for c in items if not 0 <= c < count]
    if bad:
        raise UsageError(f"channel {bad[-1]} out of range: the layer has {count} channels (0-{count - 1})")
    return sorted(set(items))


def claim_out(out: str, run: dict, *, force: bool = False) -> None:
    """Makes ``out`` this run's folder (the one output-folder rule of the atlas, in one place).

    An empty or missing folder, or one holding this same run (resumed), is taken as it is; one holding
    another run's atlas is refused unless ``force`` (then its atlas files are removed); a folder with
    other files and no atlas is refused (``force`` writes beside them).
    """
    from jaxviz.common.files import check_writable_dir

    out = check_writable_dir(out, "out=")
    path = os.path.join(out, RUN_FILE)
    run = to_json(run, sort_keys=True)
    if os.path.exists(path):
        import json

        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old == run:
            return
        if not force:
            differ = sorted(k for k in set(old or {}) | set(run) if (old or {}).get(k) != run.get(k))
            raise UsageError(f"{out} holds another run's atlas (differs in {', '.join(differ[:3]) or 'run.json'}); "
                             "pass force=True to replace it, or choose another folder")
        for name in ("channels", "img", "data", ".checkpoint", "index.html", "atlas.json", "timings.json"):
            target = os.path.join(out, name)
            shutil.rmtree(target, ignore_errors=True) if os.path.isdir(target) else (
                os.path.exists(target) and os.remove(target))
    elif [n for n in os.listdir(out) if not n.startswith(".")] and not force:
        raise UsageError(f"{out} is not empty and holds no atlas; choose an empty folder or pass force=True")
    atomic_write_json(path, run, sort_keys=True)


class Atlas:
    """A finished atlas: ``records`` (one dict per channel, as ``atlas.json``), and the site in ``out``."""

    def __init__(self, out: str, meta: dict, records: list[dict], timings: dict):
        self.out, self.meta, self.records, self.timings = out, meta, records, timings

    @property
    def index(self) -> str:
        return os.path.join(self.out, "index.html")

    def _repr_html_(self) -> str:
        from jaxviz.report.atlas_site import notebook_html

        return notebook_html(self.out, self.meta, self.records)

    def show(self, *, open: bool = False) -> str | None:
        """Inline in a notebook; elsewhere prints (and with ``open`` opens) the layer page's path."""
        with contextlib.suppress(ImportError):
            from IPython import get_ipython

            if get_ipython() is not None and "IPKernelApp" in get_ipython().config:
                from IPython.display import HTML, display

                display(HTML(self._repr_html_()))
                return None
        print(self.index)
        if open:
            import webbrowser

            webbrowser.open("file://" + os.path.abspath(self.index))
        return self.index

    def __repr__(self):
        dead = sum(not r["alive"] for r in self.records)
        return f"Atlas({self.meta['model']} {self.meta['layer']}: {len(self.records)} channels, {dead} dead; {self.index})"


def _saved(path, compute):
    """The arrays in ``path`` if a finished phase left them, else ``compute()`` saved there atomically."""
    if os.path.exists(path):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    arrays = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return arrays


def atlas(model, layer: str, channels=None, data: str = "photos", out: str | None = None, *, k: int = 8,
          images_per_channel: int = 1, recipe=None, config=None, max_images: int | None = None,
          data_dir: str | None = None, seed: int = 0, judge="efficientnet_lite2", copy_side: int | None = None,
          diversity: float = DIVERSITY_WEIGHT, checkpoint_dir: str | None = None, checkpoint_every: int = 50,
          force: bool = False, pre_activation: bool = True,
          quiet: bool = False, title: str | None = None) -> Atlas:
    """The atlas of ``channels`` of ``layer`` over the data ``data``, written to ``out``.

    Args:
      model: a :class:`jaxviz.Model` (any adapter: ``from_linen``, ``from_nnx``) or a model name.
      layer: a spatial layer.
      channels: ``"0-31"``, ``"3,5,9-12"``, a list, or ``None`` for every channel.
      data: ``photos``, ``folder:DIR`` or ``tfds:NAME`` (:func:`jaxviz.stats.examples.open_examples_source`).
      out: the folder (default a new temporary one); see :func:`claim_out`.
      k: dataset examples per channel.
      images_per_channel: visualizations per channel (several: with ``diversity``).
      recipe: a recipe name or :class:`jaxviz.recipes.Recipe` (default ``maco`` at 128 px and 256 passes).
      config: a :class:`jaxviz.RenderConfig` (default the recipe's, batch 8).
      max_images: read at most this many images (photos: the number of crops, default 256).
      judge: the held-out model of plausibility (name or :class:`jaxviz.realism.Judge`); ``None``: skipped.
      copy_side: input side of the copy count (default twice the model's side, as the stick's 448).
      diversity: weight of the diversity term when ``images_per_channel > 1``.
      checkpoint_dir: where the long phases checkpoint (default ``out/.checkpoint``, removed when done).
      force: replace another run's atlas in ``out``.
      pre_activation: maximize each channel before the layer's activation where the model has that point
        (``head.bn`` for ``head``: README "Pre-activation targets"), so no channel starts dead; the measures
        read the layer itself. ``False``: the layer's own channel.

    Returns:
      An :class:`Atlas` (``_repr_html_`` in a notebook, :meth:`Atlas.show`).
    """
    import tempfile

    from jaxviz import recipes as recipes_lib
    from jaxviz.common.outputs import lock_dir
    from jaxviz.models import load_model
    from jaxviz.stats import examples as ex_lib

    model = load_model(model) if isinstance(model, str) else model
    layer = model.check_layers([layer])[0]
    shape = tuple(model.layers[layer])
    if len(shape) != 3:
        raise UsageError(f"an atlas needs a spatial layer; {layer} is {shape}")
    channels = parse_channels(channels, shape[-1])
    ex_lib.check_channels(model, layer, channels)
    for name, value, low in (("k", k, 1), ("images_per_channel", images_per_channel, 1)):
        check_integer(f"{name}=", value, low, 1024)
    if recipe is None or isinstance(recipe, str):
        recipe = recipes_lib.get(recipe or "maco", size=DEFAULT_SIZE).at_budget(DEFAULT_PASSES)
    config = config or recipe.config(batch_size=8, seed=seed)
    config.check()
    source = ex_lib.open_examples_source(data, model, data_dir=data_dir, max_images=max_images, seed=seed)
    if len(source) == 0:
        raise UsageError(f"the data source {data} holds no images")
    if len(source) < k:
        raise UsageError(f"{k} examples per channel need at least {k} images; {data} holds {len(source)}")
    from jaxviz.common.pytree import describe

    copy_side = int(copy_side or 2 * (model.resolution or 224))
    judge_name = None if judge is None else (judge if isinstance(judge, str) else judge.model.name)
    run = {"kind": "atlas", "model": model.name, "layer": layer, "channels": channels, "data": data,
           "data_description": source.describe(), "images": len(source), "k": int(k),
           "images_per_channel": int(images_per_channel), "recipe": recipe.name, "parts": describe(recipe),
           "config": config.numbers(), "judge": judge_name, "copy_side": copy_side, "seed": seed,
           "diversity": float(diversity) if images_per_channel > 1 else 0.0,
           "target_layer": model.pre_activation(layer) if pre_activation else layer,
           "files": source.fingerprint() if hasattr(source, "fingerprint") else None}
    out = out or tempfile.mkdtemp(prefix="jaxviz-atlas-")
    claim_out(out, run, force=force)
    with lock_dir(out, what="out="):
        return _run(model, layer, channels, source, out, run, recipe=recipe, config=config, judge=judge,
                    checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, quiet=quiet, title=title)


def _run(model, layer, channels, source, out, run, *, recipe, config, judge, checkpoint_dir, checkpoint_every, quiet,
         title):
    from jaxviz.atlases.phases import examples_phase, measures_phase, render_phase
    from jaxviz.report import atlas_site

    data_dir = os.path.join(out, "data")
    ckpt = checkpoint_dir or os.path.join(out, ".checkpoint")
    timings = {}
    phases = (("examples", lambda: examples_phase(model, layer, channels, source, run, ckpt, checkpoint_every,
                                                  quiet)),
              ("visualizations", lambda: render_phase(model, layer, channels, run, recipe, config, ckpt, quiet)),
              ("measures", lambda: measures_phase(model, layer, channels, source, run, arrays["examples"],
                                                  arrays["visualizations"], judge, quiet)))
    arrays = {}  # the measures read the phases before them
    for name, compute in phases:
        t = time.perf_counter()
        arrays[name] = _saved(os.path.join(data_dir, f"{name}.npz"), compute)
        timings[name] = round(time.perf_counter() - t, 2)
        if not quiet:
            print(f"jaxviz atlas: {name} done in {timings[name]:.1f} s", file=sys.stderr)
    t = time.perf_counter()
    from jaxviz.atlases.phases import channel_records, example_images
    from jaxviz.common.progress import progress_bar

    meta = {k: run[k] for k in ("model", "layer", "data", "data_description", "images", "k", "images_per_channel",
                                "recipe", "judge", "copy_side", "target_layer")}
    meta.update(passes=run["config"]["steps"], size=run["config"]["size"], title=title or f"{model.name} {layer}")
    ex, vis, meas = arrays["examples"], arrays["visualizations"], arrays["measures"]
    records = channel_records(channels, ex, vis, meas)
    c, n = len(channels), run["images_per_channel"]
    update, close = progress_bar("atlas site", unit="channel", quiet=quiet, total=c)
    try:
        atlas_site.write_site(out, meta, records, vis["images"].reshape(c, n, *vis["images"].shape[1:]),
                              example_images(source, ex["index"]), meas["example_maps"],
                              vis["history"].reshape(c, n, -1), ex["boxes"], progress=update)
    finally:
        close()
    timings["site"] = round(time.perf_counter() - t, 2)
    if not quiet:
        print(f"jaxviz atlas: site done in {timings['site']:.1f} s", file=sys.stderr)
    atomic_write_json(os.path.join(out, "timings.json"), timings)
    for name in ("examples", "render"):  # only what this run wrote there
        shutil.rmtree(os.path.join(ckpt, name), ignore_errors=True)
    if checkpoint_dir is None:
        shutil.rmtree(ckpt, ignore_errors=True)
    return Atlas(out, meta, records, timings)
