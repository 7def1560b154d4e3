"""experiments.runs: a render is kept by signature, and checkpoints of another render never block one."""

import dataclasses
import os

import jax
import numpy as np

from experiments.realism import method_parts
from experiments.runs import render_cached
from jaxviz import render


def _cached(lite0, path, seed_value=7):
    return render_cached("jaxviz", lite0, lambda target: [target(1), target(2)], path=str(path),
                         key_data={"classes": [1, 2], "seed": seed_value}, passes=4, size=64, seed_value=seed_value, quiet=True)


def test_a_render_is_kept_and_its_checkpoints_removed(tmp_path, lite0):
    path = tmp_path / "runs" / "jaxviz" / "seed0.npz"
    images, activation, _ = _cached(lite0, path)
    assert images.shape == (2, 64, 64, 3) and activation.shape == (2,)
    assert path.is_file() and not (tmp_path / "runs" / "jaxviz" / "seed0.ckpt").exists()
    stamp = os.path.getmtime(path)
    again, _, _ = _cached(lite0, path)
    assert os.path.getmtime(path) == stamp and np.array_equal(again, images)   # loaded, not rendered
    other, _, _ = _cached(lite0, path, seed_value=8)                           # another seed: rendered anew
    assert os.path.getmtime(path) != stamp and not np.array_equal(other, images)


def test_checkpoints_of_other_settings_are_replaced(tmp_path, lite0):
    path = tmp_path / "seed0.npz"
    # a killed render of other settings left its checkpoints where this render keeps its own
    config, parts, _, target = method_parts("jaxviz", lite0, passes=8, size=64)
    config = dataclasses.replace(config, checkpoint_every=1, chunk_steps=1)
    render.render_images(lite0, [target(1), target(2)], key=jax.random.key(0), config=config, progress=False,
                         checkpoint_dir=str(tmp_path / "seed0.ckpt"), **parts)
    assert (tmp_path / "seed0.ckpt").is_dir()
    images, _, _ = _cached(lite0, path)
    assert images.shape == (2, 64, 64, 3) and not (tmp_path / "seed0.ckpt").exists()
