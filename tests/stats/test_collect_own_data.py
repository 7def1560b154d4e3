"""Own data for statistics: arrays, generators, tf.data/grain-style iterators, float64 estimates."""

import warnings

import jax
import numpy as np
import pytest

from jaxviz import data, stats
from jaxviz.common.errors import DataError, UsageError
from jaxviz.data.batches import IterableSource, as_source
from jaxviz.stats import collect
from tests.toys import features64, make_toy


@pytest.fixture(scope="module")
def toy():
    return make_toy()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (11, 16, 16, 3), dtype=np.uint8)


def _reference(toy, images, layer):
    f = features64(toy, images, layer, "pixel")  # float64 numpy: mean and unbiased covariance
    return f.mean(0), np.cov(f, rowvar=False), len(f)


def _check(state, reference):
    mean, cov, n = reference
    got_mean, got_cov = stats.finalize(state)
    assert float(state.count) == n
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-4, atol=1e-6)


class _TfDataLike:
    """What ``tf.data.Dataset.as_numpy_iterator()`` and grain loaders look like: dicts, no ``len``."""

    def __init__(self, images, batch):
        self.images, self.batch, self.i = images, batch, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= len(self.images):
            raise StopIteration
        self.i += self.batch
        chunk = self.images[self.i - self.batch:self.i]
        return {"image": chunk, "label": np.zeros(len(chunk), np.int64)}


def test_generator_of_uneven_batches_matches_float64(toy, images):
    def generator():  # batches of 3, 3, 3, 2 rebatched into 4s on 8 devices
        for i in range(0, len(images), 3):
            yield images[i:i + 3]

    calls = []
    out = collect.collect_moments(toy, ["conv1", "conv2"], generator(), batch_size=4,
                                progress=lambda done, total: calls.append((done, total)))
    for layer in ("conv1", "conv2"):
        _check(out[layer], _reference(toy, images, layer))
    assert calls[0] == (0, None) and calls[-1] == (len(images), None)  # progress without a total


def test_arrays_single_images_and_dict_iterators(toy, images):
    reference = _reference(toy, images, "conv2")
    _check(collect.collect_moments(toy, ["conv2"], images, batch_size=5)["conv2"], reference)
    floats = images.astype(np.float32) / 255.0  # [0, 1] floats round back to the same bytes
    _check(collect.collect_moments(toy, ["conv2"], floats, batch_size=5)["conv2"], reference)
    _check(collect.collect_moments(toy, ["conv2"], list(images), batch_size=3)["conv2"], reference)  # images, not batches
    _check(collect.collect_moments(toy, ["conv2"], _TfDataLike(images, 4), batch_size=6)["conv2"], reference)


def test_estimate_of_collected_stats_is_float64_without_warnings(toy):
    src = data.open_source("photos", size=16, max_images=6)
    out = collect.collect_moments(toy, ["conv1"], src, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float64 → float32 truncation warnings
        est = stats.estimate(out["conv1"])
    assert est.mean.dtype == np.float64 and est.precision.dtype == np.float64
    mean, cov = stats.finalize(out["conv1"])
    shrunk = (1 - est.shrinkage) * cov + est.shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    np.testing.assert_allclose(est.precision @ shrunk, np.eye(cov.shape[0]), atol=1e-8)
    jitted = jax.jit(stats.estimate)(jax.tree.map(lambda a: np.asarray(a, np.float32), out["conv1"]))
    assert jitted.mean.dtype == np.float32  # a float32 state stays float32 (and jits)


def test_user_mistakes_are_one_line(toy, images, tmp_path):
    gen = (images[i:i + 2] for i in range(0, 6, 2))
    with pytest.raises(UsageError, match="checkpoint_dir= cannot resume an iterable"):
        collect.collect_moments(toy, ["conv1"], gen, checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"float images must be in \[0, 1\]"):
        collect.collect_moments(toy, ["conv1"], [images.astype(np.float32)])  # 0..255 floats
    with pytest.raises(DataError, match="square"):
        collect.collect_moments(toy, ["conv1"], [images[:, :, :12]])
    with pytest.raises(DataError, match="without an image key"):
        collect.collect_moments(toy, ["conv1"], [{"pixels": images}])
    with pytest.raises(UsageError, match="holds no images"):
        collect.collect_moments(toy, ["conv1"], iter([]))
    with pytest.raises(UsageError, match="open_source"):
        collect.collect_moments(toy, ["conv1"], "photos")
    once = as_source(iter([images]))
    assert isinstance(once, IterableSource)
    list(once.batches(4))
    with pytest.raises(UsageError, match="already read"):
        once.batches(4)


def test_an_array_resumes_and_another_array_is_refused(toy, images, tmp_path):
    from jaxviz.common.checkpoint import CheckpointMismatchError

    ckpt = str(tmp_path / "ckpt")
    first = collect.collect_moments(toy, ["conv1"], images, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=1)
    again = collect.collect_moments(toy, ["conv1"], images, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=1)
    np.testing.assert_array_equal(first["conv1"].m2, again["conv1"].m2)
    other = images.copy()
    other[0, 0, 0, 0] ^= 1
    with pytest.raises(CheckpointMismatchError):
        collect.collect_moments(toy, ["conv1"], other, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=1)
