"""The Flax EfficientNet-Lite reproduces the original PyTorch port's logits.

``tests/golden/efficientnet_lite.npz`` was written by ``scripts/make_golden.py``, which ran
the ``efficientnet-lite-pytorch`` port under PyTorch (not our code) on uint8 centre crops of
the embedded photos. Here the same crops go through ``model.preprocess`` (with
``crop_fraction=1.0``: the stored crops already are the model inputs, so the reference
0.875 crop must not be applied a second time) and the jitted Flax forward pass; torch itself is
never imported.
"""

import os

import jax
import numpy as np
import pytest

import jaxviz
from tests.toys import GOLDEN as _GOLDEN

GOLDEN = os.path.join(_GOLDEN, "efficientnet_lite.npz")
RESOLUTION = {"lite0": 224, "lite1": 240, "lite2": 260}
TOLERANCE = 1e-3  # max |Δ logit|; logits span roughly ±20


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as f:
        return {k: f[k] for k in f.files}


def _logits(model, images):
    x = model.preprocess(images, crop_fraction=1.0)
    forward = jax.jit(lambda p, x: model.features(p, x, layers=["logits"])["logits"])
    return np.asarray(forward(model.params, x))


def test_golden_file_is_complete(golden):
    names = list(golden["photo_names"])
    assert len(names) >= 6 and len(set(names)) == len(names)
    for variant, size in RESOLUTION.items():
        assert golden[f"images_{variant}"].dtype == np.uint8
        assert golden[f"images_{variant}"].shape == (len(names), size, size, 3)
        assert golden[f"logits_{variant}"].dtype == np.float32
        assert golden[f"logits_{variant}"].shape == (len(names), 1000)


@pytest.mark.parametrize("variant,impl", [
    ("lite0", "auto"),
    ("lite0", "xla"),  # the library-conv path (used on GPU/TPU), checked against torch too
    ("lite1", "auto"),
    ("lite2", "auto"),
])
def test_logits_match_pytorch_port(golden, variant, impl):
    images = golden[f"images_{variant}"]
    expected = golden[f"logits_{variant}"]
    model = jaxviz.load_model(f"efficientnet_{variant}", impl=impl)
    assert model.resolution == RESOLUTION[variant]
    logits = _logits(model, images)
    assert logits.shape == expected.shape
    gap = np.abs(logits - expected).max(axis=1)
    worst = int(np.argmax(gap))
    assert gap.max() <= TOLERANCE, (
        f"{variant}/{impl}: max |Δ logit| {gap.max():.2e} on {golden['photo_names'][worst]}"
    )
    np.testing.assert_array_equal(logits.argmax(1), expected.argmax(1))


def test_preprocess_is_tf_lite_normalization(golden, lite0):
    images = golden["images_lite0"]
    x = lite0.preprocess(images, crop_fraction=1.0)
    assert x.dtype == np.float32 and x.shape == images.shape
    reference = (images.astype(np.float64) - 127.0) / 128.0  # exact in float32 for 0..255
    np.testing.assert_array_equal(x, reference.astype(np.float32))
    np.testing.assert_array_equal(lite0.preprocess(images[0], crop_fraction=1.0), x[:1])  # one [H,W,3] image
