"""The atlas's computing phases: dataset examples, visualizations, measures (each returns its arrays).

Measures (alive, copies, plausibility, objective: README "Atlas", phase 3) follow the deep-neuron stick's
definitions (:func:`jaxviz.realism.neurons.copy_count` at input side ``copy_side``,
:func:`jaxviz.realism.neurons.plausibility`); a dead channel's map on its visualization has no positive maximum.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["examples_phase", "render_phase", "measures_phase", "example_images"]


def examples_phase(model, layer, channels, source, run, ckpt, checkpoint_every, quiet) -> dict:
    from jaxviz.common.progress import progress_bar
    from jaxviz.stats import examples as ex_lib

    update, close = progress_bar("atlas examples", unit="img", quiet=quiet, total=len(source))
    try:
        ex = ex_lib.collect_examples(model, layer, channels, source, k=run["k"], batch_size=32,
                                     checkpoint_dir=os.path.join(ckpt, "examples"), checkpoint_every=checkpoint_every,
                                     metadata={"data": run["data"], "files": run["files"]},
                                     progress=update and (lambda done, total: update(done, total)))
    finally:
        close()
    side = int(source.size)
    rf = ex_lib.receptive_field(model, layer, side)
    return {"score": ex.score, "index": ex.index, "position": ex.position, "map_shape": np.asarray(ex.map_shape),
            "images": np.asarray(ex.images), "receptive_field": np.asarray(rf),
            "boxes": ex_lib.patch_boxes(ex.position, ex.map_shape, side, rf)}


def render_phase(model, layer, channels, run, recipe, config, ckpt, quiet) -> dict:
    import jax

    from jaxviz import objectives
    from jaxviz.common.progress import progress_bar
    from jaxviz.render import render_images

    n = run["images_per_channel"]
    target_layer = run.get("target_layer", layer)  # head.bn for head: no channel starts dead
    targets = []
    for c in channels:
        obj = objectives.channel(target_layer, c)
        if n > 1 and run["diversity"]:
            obj = obj + run["diversity"] * objectives.diversity(target_layer)
        targets.append(obj)
    update, close = progress_bar("atlas visualizations", quiet=quiet)
    try:
        result = render_images(model, targets, key=jax.random.key(run["seed"]), config=config,
                               checkpoint_dir=os.path.join(ckpt, "render"), progress=update or False,
                               images_per_target=n, **recipe.parts(model))
    finally:
        close()
    return {"images": np.asarray(result.images, np.float32), "activation": np.asarray(result.activation, np.float64),
            "history": np.asarray(result.history, np.float64)}


def example_images(source, index) -> np.ndarray:
    """uint8 ``[C, K, S, S, 3]`` of the examples (the source read again at their indices)."""
    from jaxviz.stats.examples import read_images

    index = np.asarray(index)
    return read_images(source, index.ravel()).reshape(*index.shape, *([source.size] * 2), 3)


def measures_phase(model, layer, channels, source, run, examples, visualizations, judge, quiet) -> dict:
    from jaxviz.common.progress import progress_bar
    from jaxviz.realism import neurons

    c, k = examples["index"].shape
    n = run["images_per_channel"]
    side = run["copy_side"]
    update, close = progress_bar("atlas measures", unit="part", quiet=quiet, total=4)
    try:
        ex01 = example_images(source, examples["index"]).reshape(c * k, source.size, source.size, 3)
        ex01 = ex01.astype(np.float32) / 255.0
        ex_targets = [(layer, ch) for ch in channels for _ in range(k)]
        ex_maps = neurons.channel_maps(model, ex01, ex_targets)          # at the pass's side: the overlays
        update and update(1, 4)
        ex_copies = neurons.copies(model, ex01, ex_targets, side=side)
        update and update(2, 4)
        vis = visualizations["images"]
        vis_targets = [(layer, ch) for ch in channels for _ in range(n)]
        vis_maps = neurons.channel_maps(model, vis, vis_targets, side=side)
        vis_max = vis_maps.reshape(len(vis_maps), -1).max(axis=1)
        vis_copies = neurons.copy_count(vis_maps)
        # the layer's own objective at the render's size (the render maximized its pre-activation point)
        vis_objective = neurons.channel_maps(model, vis, vis_targets).reshape(c * n, -1).mean(axis=1)
        update and update(3, 4)
        cos = rank = np.full(c * n, np.nan)
        if judge is not None:
            from jaxviz import realism

            judge = realism.load_judge(judge) if isinstance(judge, str) else judge
            ex_feats = realism.judge_features(judge, ex01).pool
            vis_feats = realism.judge_features(judge, vis).pool
            p = neurons.plausibility(vis_feats, np.repeat(np.arange(c), n), ex_feats,
                                     np.arange(c * k).reshape(c, k), np.arange(c))
            cos, rank = p["cos_own"], p["rank"]
        update and update(4, 4)
    finally:
        close()
    return {"example_maps": ex_maps.reshape(c, k, *ex_maps.shape[1:]).astype(np.float32),
            "example_copies": ex_copies.reshape(c, k), "vis_max": vis_max.reshape(c, n),
            "vis_copies": vis_copies.reshape(c, n), "vis_objective": vis_objective.reshape(c, n),
            "plausibility": np.asarray(cos).reshape(c, n),
            "rank": np.asarray(rank).reshape(c, n)}


def channel_records(channels, examples, visualizations, measures) -> list[dict]:
    """One JSON-able dict per channel: the measures ``atlas.json`` and the pages show."""
    n = measures["vis_max"].shape[1]
    act = (measures["vis_objective"] if "vis_objective" in measures  # atlases measured before it: the render's
           else visualizations["activation"]).reshape(len(channels), n)
    out = []
    for i, ch in enumerate(channels):
        best = float(examples["score"][i, 0])
        objective = float(np.mean(act[i]))

        def clean(x):
            x = float(x)
            return None if not np.isfinite(x) else round(x, 6)

        out.append({
            "channel": int(ch),
            "alive": bool(np.all(measures["vis_max"][i] > 0)),
            "alive_on_data": bool(best > 0),
            "objective": clean(objective),
            "objective_vs_best_example": clean(objective / best) if best > 0 else None,
            "best_example_objective": clean(best),
            "copies": clean(np.mean(measures["vis_copies"][i])),
            "copies_examples": clean(np.mean(measures["example_copies"][i])),
            "plausibility": clean(np.nanmean(measures["plausibility"][i])) if np.isfinite(
                measures["plausibility"][i]).any() else None,
            "plausibility_rank": clean(np.nanmean(measures["rank"][i])) if np.isfinite(
                measures["rank"][i]).any() else None,
            "examples": [{"image": int(examples["index"][i, j]), "objective": clean(examples["score"][i, j]),
                          "max_at": [int(v) for v in examples["position"][i, j]],
                          "patch": [int(v) for v in examples["boxes"][i, j]]}
                         for j in range(examples["index"].shape[1]) if examples["index"][i, j] >= 0],
        })
    return out
