"""Transforms: shapes, keys, jit, gradients, identities and geometric correctness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.common.errors import UsageError
from jaxviz.image import resample
from jaxviz.image import transforms as T

IMAGE = jax.random.uniform(jax.random.key(0), (21, 21, 3))
KEY = jax.random.key(1)

CASES = {  # transform, expected output side for a 21-px input
    "pad_reflect": (T.pad(3), 27),
    "pad_constant": (T.pad(3, "constant", value=0.5), 27),
    "jitter": (T.jitter(4), 17),
    "scale": (T.random_scale((0.9, 1.1)), 21),
    "rotate": (T.random_rotate(10.0), 21),
    "rotate_choices": (T.random_rotate((-5.0, 5.0)), 21),
    "crop": (T.crop_or_resize_to(16), 16),
    "resize": (T.crop_or_resize_to(30), 30),
    "default": (T.default(), 33),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shape_determinism_jit_and_gradient(name):
    t, side = CASES[name]
    weights = jax.random.normal(jax.random.key(2), (side, side, 3))

    @jax.jit
    def value_and_grad(image, key):  # one compile for both
        out, pullback = jax.vjp(lambda im: t(im, key=key), image)
        return out, pullback(weights)[0]

    out, grad = value_and_grad(IMAGE, KEY)
    assert out.shape == (side, side, 3)
    np.testing.assert_array_equal(value_and_grad(IMAGE, KEY)[0], out)
    np.testing.assert_allclose(t(IMAGE, key=KEY), out, atol=1e-5)  # eager == jit
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


@pytest.mark.parametrize("name", ["jitter", "scale", "rotate", "rotate_choices", "default"])
def test_keys_matter(name):
    t, _ = CASES[name]
    jitted = jax.jit(lambda k: t(IMAGE, key=k))
    outs = [np.asarray(jitted(jax.random.key(i))) for i in range(6)]
    assert any(not np.allclose(outs[0], o) for o in outs[1:])


def test_identity_at_zero_magnitude():
    for t in (T.pad(0), T.jitter(0), T.random_scale((1.0,)), T.random_rotate(0.0), T.chain()):
        np.testing.assert_array_equal(t(IMAGE, key=KEY), IMAGE)


def test_jitter_is_a_crop_within_range():
    out = np.asarray(T.jitter(3)(IMAGE, key=KEY))
    image = np.asarray(IMAGE)
    hits = [(dy, dx) for dy in range(4) for dx in range(4) if np.array_equal(image[dy : dy + 18, dx : dx + 18], out)]
    assert len(hits) == 1
    jitted = jax.jit(lambda k: T.jitter(3)(IMAGE, key=k))
    seen = {tuple(np.argwhere(np.asarray(jitted(jax.random.key(i)))[0, 0, 0] == image[:, :, 0])[0]) for i in range(40)}
    assert len(seen) > 4 and all(0 <= y <= 3 and 0 <= x <= 3 for y, x in seen)


def test_pad_modes():
    image = np.asarray(IMAGE)
    np.testing.assert_array_equal(T.pad(2, "constant", value=0.25)(IMAGE, key=KEY)[:2], 0.25)
    np.testing.assert_array_equal(T.pad(2)(IMAGE, key=KEY), np.pad(image, ((2, 2), (2, 2), (0, 0)), mode="reflect"))


def test_rotate_90_degrees_is_a_quarter_turn():
    out = T.random_rotate((90.0,))(IMAGE, key=KEY)
    np.testing.assert_allclose(out, np.rot90(np.asarray(IMAGE), k=-1), atol=1e-5)


def test_scale_zooms_about_the_centre():
    ramp = jnp.broadcast_to(jnp.arange(21.0)[:, None, None], (21, 21, 3))
    out = np.asarray(T.random_scale((2.0,))(ramp, key=KEY))
    # a zoom by 2 samples the input at c + (y - c) / 2; bilinear is exact on a linear ramp
    np.testing.assert_allclose(out[:, 10, 0], 10 + (np.arange(21) - 10) / 2, atol=1e-5)


def test_chain_splits_the_key_and_vmaps():
    t = T.chain(T.jitter(2), T.jitter(2))
    keys = jax.random.split(KEY, 4)
    batch = jax.jit(jax.vmap(lambda k: t(IMAGE, key=k)))(keys)
    assert batch.shape == (4, 17, 17, 3)
    np.testing.assert_array_equal(batch[2], t(IMAGE, key=keys[2]))


def test_default_is_hashable_and_sized():
    assert T.default() == T.default() and hash(T.default()) == hash(T.default())
    assert jax.eval_shape(lambda im: T.default()(im, key=KEY), jnp.zeros((224, 224, 3))).shape == (236, 236, 3)


def test_errors():
    with pytest.raises(UsageError):
        T.pad(2, "wrap")
    with pytest.raises(UsageError):
        T.jitter(-1)
    with pytest.raises(UsageError):
        T.jitter(1.5)
    with pytest.raises(UsageError):
        T.random_scale(())
    with pytest.raises(UsageError):
        T.random_scale((0.0,))
    with pytest.raises(UsageError):
        T.random_rotate(-3)
    with pytest.raises(UsageError, match="larger"):
        T.jitter(30)(IMAGE, key=KEY)


def test_warp_matches_map_coordinates_and_is_stable_under_jit_jvp():
    image = jax.random.uniform(jax.random.key(3), (20, 23, 3))
    h, w = image.shape[:2]
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")

    @jax.jit
    def warped_and_tangent(im, scale, angle):
        return jax.jvp(lambda i: resample.affine(i, scale, angle), (im,), (jnp.ones_like(im),))

    for scale, degrees in [(0.9, 0.0), (1 / 0.9, 0.0), (0.95, 3.0), (1.05, -5.0), (1.0, 30.0)]:
        angle = np.deg2rad(degrees)
        out = np.asarray(resample.affine(image, jnp.float32(scale), jnp.float32(angle)))
        # reference: scipy-style bilinear sampling at the same (2^-10-snapped) inverse map
        c = np.round(np.cos(angle) / scale * 1024) / 1024
        s = np.round(np.sin(angle) / scale * 1024) / 1024
        cy, cx = (h - 1) / 2, (w - 1) / 2
        coords = [cy + c * (yy - cy) - s * (xx - cx), cx + s * (yy - cy) + c * (xx - cx)]
        ref = np.stack([jax.scipy.ndimage.map_coordinates(image[..., k], coords, order=1, mode="reflect")
                        for k in range(3)], -1)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        # XLA recomputes coordinates per consumer under jit(jvp); a whole-pixel slip showed up here once
        primal, tangent = warped_and_tangent(image, jnp.float32(scale), jnp.float32(angle))
        np.testing.assert_allclose(primal, out, atol=1e-5)
        np.testing.assert_allclose(tangent, np.ones_like(out), atol=1e-5)


def _ramp(side):
    # bilinear interpolation is exact on a linear image: resampling it once or twice must agree
    yy, xx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    c = (side - 1) / 2
    return jnp.asarray(np.stack([0.5 + a * (yy - c) + b * (xx - c) for a, b in [(4e-3, 3e-3), (-2e-3, 5e-3),
                                                                                (1e-3, -6e-3)]], -1), jnp.float32)


def test_fused_chain_draws_the_same_geometry_as_one_by_one():
    image = _ramp(64)
    transforms = T.default().transforms
    fused, separate = T.chain(*transforms), T.chain(*transforms, fuse=False)
    for i in range(6):
        key = jax.random.key(10 + i)
        a, b = np.asarray(fused(image, key=key)), np.asarray(separate(image, key=key))
        assert a.shape == b.shape == (76, 76, 3)
        # the centre samples the photo itself (not the pad) in both; off by the 2^-10 snapping only
        np.testing.assert_allclose(a[18:58, 18:58], b[18:58, 18:58], atol=2e-3)


def _bilinear_matrix(M, t, in_hw, out_hw):
    """float64 reference: the sampling as a dense [out pixels, in pixels] matrix (outside = fill)."""
    W = np.zeros((out_hw[0] * out_hw[1], in_hw[0] * in_hw[1]))
    for qy in range(out_hw[0]):
        for qx in range(out_hw[1]):
            sy, sx = M @ np.array([qy, qx], np.float64) + t
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            for y, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for x, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= y < in_hw[0] and 0 <= x < in_hw[1]:
                        W[qy * out_hw[1] + qx, y * in_hw[1] + x] += wy * wx
    return W


@pytest.mark.parametrize("scale,degrees", [(1.0, 0.0), (0.95, 5.0), (1.05, -5.0), (1.3, 30.0), (0.7, -40.0)])
def test_fused_resampling_and_its_gradient_match_a_dense_float64_reference(scale, degrees):
    image = jax.random.uniform(jax.random.key(4), (15, 17, 3))
    t = T.chain(T.pad(3, "constant", value=0.25), T.jitter(2), T.random_scale((scale,)),
                T.random_rotate((degrees,)), T.jitter(1))
    g = jax.random.normal(jax.random.key(5), (18, 20, 3))
    out, pullback = jax.vjp(lambda im: t(im, key=KEY), image)
    grad = pullback(g)[0]
    # the map the chain drew, from its own composition; the reference checks sampling and transpose
    out_hw, M, shift, fill, _ = T._compose(t.transforms, jax.random.split(KEY, 5), (15, 17))
    assert out_hw == (18, 20) and fill == 0.25
    W = _bilinear_matrix(np.asarray(M, np.float64), np.asarray(shift, np.float64), (15, 17), out_hw)
    flat = np.asarray(image, np.float64).reshape(-1, 3)
    expected = W @ flat + fill * (1 - W.sum(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(out).reshape(-1, 3), expected, atol=1e-5)
    expected_grad = W.T @ np.asarray(g, np.float64).reshape(-1, 3)
    np.testing.assert_allclose(np.asarray(grad).reshape(-1, 3), expected_grad, atol=1e-5)
