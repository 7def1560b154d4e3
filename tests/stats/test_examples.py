"""Dataset examples (jaxviz.stats.topk, jaxviz.stats.examples) against a numpy reference; resume after kill -9."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.common.errors import UsageError
from jaxviz.stats import examples, topk
from tests.toys import ROOT, make_toy


def reference_topk(scores, k):
    """numpy: per channel, indices of the k largest (stable: ties to the lower index)."""
    return np.stack([np.argsort(-scores[:, c], kind="stable")[:k] for c in range(scores.shape[1])])


def test_running_topk_equals_a_sort_of_the_whole_stream():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, (53, 4)).astype(np.float32)  # many ties
    pos = rng.integers(0, 9, (53, 4, 2)).astype(np.int32)
    state = topk.init(4, 7)
    for start in range(0, 53, 10):
        s = slice(start, start + 10)
        n = len(scores[s])
        # a padded last batch: the padding must never enter
        sc = np.concatenate([scores[s], np.full((10 - n, 4), 99, np.float32)])
        ps = np.concatenate([pos[s], np.zeros((10 - n, 4, 2), np.int32)])
        idx = np.arange(start, start + 10)
        state = jax.jit(topk.update)(state, sc, idx, ps, (idx < 53).astype(np.float32))
    ref = reference_topk(scores, 7)
    np.testing.assert_array_equal(np.asarray(state.index), ref)
    np.testing.assert_array_equal(np.asarray(state.score), np.take_along_axis(scores.T, ref, 1))
    np.testing.assert_array_equal(np.asarray(state.position), pos[ref, np.arange(4)[:, None]])


def test_merge_of_two_halves_is_the_whole():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 3)).astype(np.float32)
    pos = np.zeros((40, 3, 2), np.int32)
    odd, even = np.arange(1, 40, 2), np.arange(0, 40, 2)
    a = topk.update(topk.init(3, 5), scores[odd], odd, pos[odd])
    b = topk.update(topk.init(3, 5), scores[even], even, pos[even])
    np.testing.assert_array_equal(np.asarray(topk.merge(a, b).index), reference_topk(scores, 5))


def test_fewer_images_than_k_leaves_empty_slots():
    state = topk.update(topk.init(2, 4), np.ones((2, 2), np.float32), np.array([0, 1]), np.zeros((2, 2, 2)))
    assert np.asarray(state.index).tolist() == [[0, 1, -1, -1]] * 2


def _numpy_pass(model, images, layer, channels):
    feats = np.asarray(model.features(model.params, model.normalize(jnp.asarray(images, jnp.float32)), [layer])[layer],
                       np.float64)[..., list(channels)]
    b, h, w, c = feats.shape
    flat = feats.reshape(b, h * w, c)
    arg = flat.argmax(1)
    return flat.mean(1), np.stack([arg // w, arg % w], -1)


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def test_examples_pass_on_8_devices_equals_numpy(toy):
    images = np.random.default_rng(2).integers(0, 256, (37, 16, 16, 3), dtype=np.uint8)
    channels = [5, 0, 3]
    ex = examples.collect_examples(toy, "conv2", channels, images, k=4, batch_size=5)
    scores, pos = _numpy_pass(toy, images, "conv2", channels)
    ref = reference_topk(scores, 4)
    np.testing.assert_array_equal(ex.index, ref)
    np.testing.assert_allclose(ex.score, np.take_along_axis(scores.T, ref, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ex.position, pos[ref, np.arange(3)[:, None]])
    assert ex.map_shape == (8, 8) and ex.images == 37 and ex.channels.tolist() == channels
    one = examples.collect_examples(toy, "conv2", channels, images, k=4, batch_size=37,
                                    mesh=examples.data_mesh(jax.devices()[:1]))
    np.testing.assert_array_equal(one.index, ex.index)


def test_examples_agree_with_the_sticks_definition(toy):
    """realism.neurons.top_photos of photo_activations (experiments.neurons' examples) picks the same images."""
    from jaxviz.realism import neurons

    images = np.random.default_rng(4).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    ex = examples.collect_examples(toy, "conv1", range(8), images, k=5, batch_size=8)
    acts = neurons.photo_activations(toy, images.astype(np.float32) / 255.0, ["conv1"])["conv1"]
    np.testing.assert_array_equal(ex.index, neurons.top_photos(acts, range(8), 5))


def test_bad_arguments_are_usage_errors(toy):
    images = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(UsageError, match="outside conv2"):
        examples.collect_examples(toy, "conv2", [6], images)
    with pytest.raises(UsageError, match="spatial"):
        examples.collect_examples(toy, "head", [0], images)
    with pytest.raises(UsageError, match="no images"):
        examples.collect_examples(toy, "conv2", [0], np.zeros((0, 16, 16, 3), np.uint8))


def test_patch_boxes_stay_inside_the_image():
    boxes = examples.patch_boxes(np.array([[0, 0], [7, 7], [3, 4]]), (8, 8), 64, 24)
    assert boxes.tolist() == [[0, 0, 24], [40, 40, 24], [16, 24, 24]]


def test_receptive_field_grows_with_depth(toy):
    assert examples.receptive_field(toy, "conv1", 16) <= examples.receptive_field(toy, "conv2", 16) <= 16


@pytest.mark.slow
def test_killed_with_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    worker = os.path.join(ROOT, "tests", "stats", "_examples_worker.py")
    ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "killed.npz")
    proc = subprocess.Popen([sys.executable, worker, out, ckpt, "0.05"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    step_dir = os.path.join(ckpt, "examples")
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(step_dir) and any(n.isdigit() and int(n) >= 6 for n in os.listdir(step_dir)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not os.path.exists(out)
    done = max(int(n) for n in os.listdir(step_dir) if n.isdigit())
    assert 6 <= done < 100
    for args in ([out, ckpt, "0"], [str(tmp_path / "ref.npz"), "-", "0"]):
        run = subprocess.run([sys.executable, worker, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with np.load(out) as a, np.load(str(tmp_path / "ref.npz")) as b:
        for field in ("score", "index", "position"):
            np.testing.assert_array_equal(a[field], b[field])
