"""Renders of the experiments, kept on disk and resumable: one method × one seed × its targets per file.

A render is saved as ``<path>.npz`` with a signature of everything that made it (the method's full
description, the targets, the seed, the budget): a rerun with the same signature loads it, any change
renders anew. While it renders, Orbax checkpoints go to ``<path>.ckpt/`` (``RenderConfig.checkpoint_every``
steps apart), so a killed long run (DeepInversion's 2,000 steps, MaCo's 8,192 passes) resumes where it
stopped; the folder is removed once the ``.npz`` is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time

import numpy as np


def signature_of(data: dict) -> str:
    """A short stable hash of JSON-able ``data``."""
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render_cached(name: str, model, make_targets, *, path: str, key_data: dict, passes: int, size: int,
                  seed_value: int, quiet: bool, redirect_steps: int = 0):
    """Images ``[T,S,S,3]``, final objectives ``[T]`` and render seconds of method ``name``.

    Args:
      name: a method of :func:`experiments.realism.method_parts` (a recipe name with ``@`` options).
      make_targets: ``f(recipe_target) -> [objectives]`` (``recipe_target(class) -> objective``).
      path: the ``.npz`` file; its ``.ckpt`` sibling holds checkpoints while rendering.
      key_data: what besides the method's description identifies the render: the targets and the seed
        (``seed_value`` is not added by itself, so that a caller's signatures stay what they were).
      seed_value: the integer of the render's PRNG key.
      redirect_steps: passes with redirected ReLU gradients (:class:`jaxviz.RenderConfig`).
    """
    import jax

    import jaxviz
    from experiments.realism import method_parts
    from jaxviz import render
    from jaxviz.common.errors import CheckpointMismatchError
    from jaxviz.common.files import atomic_write
    from jaxviz.common.progress import progress_bar

    config, parts, notes, target = method_parts(name, model, passes=passes, size=size)
    if redirect_steps:
        config = dataclasses.replace(config, redirect_steps=min(redirect_steps, config.steps))
    described = f"{notes} | {config.numbers()} | " + " | ".join(
        f"{k}={jaxviz.describe(v)}" for k, v in sorted(parts.items()))
    signature = signature_of({**key_data, "described": described})
    if os.path.exists(path):
        with np.load(path) as f:
            if str(f["signature"]) == signature:
                return f["images"], f["activation"], float(f["seconds"])
    checkpoints = path[: -len(".npz")] + ".ckpt"
    objs = make_targets(target)
    update, close = progress_bar(name, quiet=quiet)

    def run():
        return render.render_images(model, objs, key=jax.random.key(seed_value), config=config,
                                    progress=update or False, checkpoint_dir=checkpoints, **parts)

    t = time.perf_counter()
    try:
        try:
            result = run()
        except CheckpointMismatchError:  # left by a render of other settings: start over
            shutil.rmtree(checkpoints)
            result = run()
    finally:
        close()
    seconds = time.perf_counter() - t
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, images=result.images, activation=result.activation,
                                          seconds=seconds, signature=signature))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return result.images, result.activation, seconds
