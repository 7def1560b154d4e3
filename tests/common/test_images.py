"""The one resizer (jaxviz.common.images.resize_center_crop) and the reference evaluation preprocessing.

Geometry is checked against Pillow driven by hand-computed box numbers; the effect on a real
photo against the ImageNet labels of skimage's ``chelsea`` (a tabby cat).
"""

import math

import numpy as np
import pytest
from PIL import Image

from jaxviz.common.errors import UsageError
from jaxviz.common.images import EVAL_CROP_FRACTION, as_uint8_batch, resize_center_crop

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _synthetic(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w,size,fraction,resized,box", [
    # landscape 300x400 -> short side floor(224 / 0.875) = 256, long floor(400 * 256 / 300) = 341;
    # crop starts at round((341 - 224) / 2) = round(58.5) = 58 (half to even) and (256 - 224) / 2 = 16
    (300, 400, 224, 0.875, (341, 256), (58, 16)),
    # portrait 500x333 at 240 px -> short floor(240 / 0.875) = 274, long floor(500 * 274 / 333) = 411
    (500, 333, 240, 0.875, (274, 411), (17, 86)),
    # crop fraction 1: short side straight to the size (the former behaviour), long floor(400*224/300)=298
    (300, 400, 224, 1.0, (298, 224), (37, 0)),
])
def test_geometry_matches_hand_computed_pil_boxes(h, w, size, fraction, resized, box):
    image = _synthetic(h, w)
    out = resize_center_crop(image, size, crop_fraction=fraction)
    left, top = box
    expected = Image.fromarray(image).resize(resized, Image.BICUBIC).crop((left, top, left + size, top + size))
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_eval_crop_keeps_the_central_share_of_the_photo():
    # A bright square covering exactly the central 87.5 % of a square photo fills the whole crop.
    side = 512
    image = np.zeros((side, side, 3), np.uint8)
    margin = round(side * (1 - EVAL_CROP_FRACTION) / 2)
    image[margin - 8:side - margin + 8, margin - 8:side - margin + 8] = 200  # 8 px slack for the filter
    out = resize_center_crop(image, 224, crop_fraction=EVAL_CROP_FRACTION)
    assert out.min() == 200
    full = resize_center_crop(image, 224, crop_fraction=1.0)
    assert full[0, 0].max() == 0 and full[112, 112].min() == 200  # the border is visible at fraction 1


def test_crop_fraction_is_validated():
    with pytest.raises(UsageError, match="crop fraction"):
        resize_center_crop(_synthetic(10, 10), 8, crop_fraction=0.0)
    with pytest.raises(UsageError, match="crop fraction"):
        as_uint8_batch(_synthetic(10, 10), 8, crop_fraction=1.5)


def test_fraction_one_leaves_model_sized_images_alone():
    image = _synthetic(32, 32)
    np.testing.assert_array_equal(as_uint8_batch(image, 32, crop_fraction=1.0)[0], image)
    assert not np.array_equal(as_uint8_batch(image, 32, crop_fraction=EVAL_CROP_FRACTION)[0], image)


def test_preprocess_is_the_eval_crop_then_normalization(lite0, photos):
    photo = photos["chelsea"]
    x = lite0.preprocess(photo)
    crop = resize_center_crop(photo, 224, crop_fraction=0.875).astype(np.float64)
    np.testing.assert_array_equal(x[0], ((crop - 127.0) / 128.0).astype(np.float32))
    assert math.floor(224 / 0.875) == 256


def test_reference_preprocessing_classifies_chelsea_with_a_larger_margin(lite0, photos):
    import jax

    forward = jax.jit(lambda p, x: jax.nn.softmax(lite0.features(p, x, ["logits"])["logits"]))
    probs = {f: np.asarray(forward(lite0.params, lite0.preprocess(photos["chelsea"], crop_fraction=f)))[0]
             for f in (1.0, EVAL_CROP_FRACTION)}
    for f, p in probs.items():
        assert int(np.argmax(p)) in CATS, f"crop fraction {f}: top-1 {int(np.argmax(p))}"

    def margin(p):  # probability of "a cat" minus the best class that is not a cat
        others = np.delete(p, list(CATS))
        return p[list(CATS)].sum() - others.max()

    assert margin(probs[EVAL_CROP_FRACTION]) > margin(probs[1.0])
