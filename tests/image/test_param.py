"""Parameterizations: shapes, range, keys, gradients; colour statistics; MaCo keeps its magnitude."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import registry
from jaxviz.common.errors import UsageError
from jaxviz.image import param, spectrum

NAMES = ("pixel", "fourier", "maco")


@pytest.mark.parametrize("name,size", [("pixel", 32), ("fourier", 32), ("fourier", 33), ("maco", 32), ("maco", 33)])
def test_shapes_range_keys_and_gradient(name, size):
    p = registry.build("parameterization", name)
    params = p.init(key=jax.random.key(0), size=size)
    image_and_grad = jax.jit(jax.value_and_grad(lambda q: p.to_image(q).mean(), has_aux=False))
    image = jax.jit(p.to_image)(params)
    assert image.shape == (size, size, 3) and image.dtype == jnp.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    np.testing.assert_array_equal(p.init(key=jax.random.key(0), size=size), params)
    other = p.init(key=jax.random.key(1), size=size)
    assert not np.allclose(other, params)
    assert not np.allclose(jax.jit(p.to_image)(other), image)
    np.testing.assert_allclose(p.to_image(params), image, atol=1e-6)  # eager == jit
    mean, grad = image_and_grad(params)
    np.testing.assert_allclose(mean, image.mean(), atol=1e-6)
    assert grad.shape == params.shape
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


@pytest.mark.parametrize("name", NAMES)
def test_saturates_inside_unit_range(name):
    p = registry.build("parameterization", name)
    params = 100.0 * p.init(key=jax.random.key(2), size=32)
    image = jax.jit(p.to_image)(params)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_color_stats_match_the_photos():
    from jaxviz.data import embedded_photos

    mean, root = param.color_stats(embedded_photos().values())
    np.testing.assert_allclose(root, param.COLOR_SQRT, atol=1e-3)
    np.testing.assert_allclose(mean, param.COLOR_MEAN, atol=1e-3)
    assert np.allclose(param.COLOR_SQRT, param.COLOR_SQRT.T)
    assert np.isclose(np.linalg.norm(param.COLOR_SQRT, axis=0).max(), 1.0, atol=1e-5)


def test_color_stats_recover_a_known_covariance():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]])
    z = rng.normal(size=(200_000, 3)) @ mix.T * 20 + 128
    photo = np.clip(z, 0, 255).astype(np.uint8).reshape(400, 500, 3)
    _, root = param.color_stats([photo])
    cov = np.cov(photo.reshape(-1, 3).T / 255.0)
    product = root @ root.T
    np.testing.assert_allclose(product / product[0, 0], cov / cov[0, 0], atol=2e-3)


def test_fourier_spectrum_scale():
    flat = spectrum.spectrum_scale(32, 0.0)
    np.testing.assert_allclose(flat, 1.0)
    scale = spectrum.spectrum_scale(32, 1.0)
    assert np.isclose(np.sqrt(np.mean(scale**2)), 1.0, rtol=1e-5)
    assert scale[0, 1] > scale[0, 8] > scale[16, 16]  # low frequencies move faster


@pytest.mark.parametrize("size,normalize_phase", [(32, False), (33, True), (128, False)])
def test_maco_keeps_the_given_magnitude(size, normalize_phase):
    p = param.maco(normalize_phase=normalize_phase)
    magnitude = param.maco_magnitude(size)
    assert param.maco_magnitude(size) is magnitude  # cached per size
    assert magnitude.shape == (size, size // 2 + 1, 3) and magnitude[0, 0].max() == 0
    for seed in range(2):
        image = np.asarray(jax.jit(p.to_image)(p.init(key=jax.random.key(seed), size=size)), np.float64)
        # undo the soft clip, the mean colour and the colour mixing: the pre-sigmoid phase-only signal
        rgb = np.log(image / (1 - image)) / 4 + 0.5 - param.maco_mean()
        z = rgb @ np.linalg.inv(param.COLOR_SQRT.astype(np.float64)).T
        spectrum = np.abs(np.fft.rfft2(z, axes=(0, 1), norm="ortho"))
        # columns 1..n/2-1 have no Hermitian partner inside the rfft grid, so they survive exactly
        inner = slice(1, (size + 1) // 2)
        np.testing.assert_allclose(spectrum[:, inner], magnitude[:, inner], rtol=2e-3, atol=2e-3 * magnitude.max())


def test_maco_magnitude_falls_with_frequency():
    magnitude = param.maco_magnitude(32).mean(-1)
    f = spectrum.frequencies(32)
    low, high = magnitude[(f > 0) & (f < 0.1)].mean(), magnitude[f > 0.35].mean()
    assert low > 5 * high  # natural images: roughly 1/f amplitude


def test_photo_spectrum_of_a_known_sinusoid():
    size = 32
    x = np.arange(size)
    # 3 cycles across, sampled half a pixel off so that the first and last columns are equal: no border
    # jump, so the periodic component is the image itself
    wave = 0.5 + 0.2 * np.cos(2 * np.pi * 3 * (x + 0.5) / size)
    photo = np.round(255 * np.broadcast_to(wave[None, :, None], (size, size, 3))).astype(np.uint8)
    magnitude, mean = param.photo_spectrum([photo, photo], size, decorrelate=False)
    # ortho units: a 0.2-amplitude cosine puts 0.2 * size² / 2 / size at its bin; exactly, the 2-D
    # ortho transform of identical rows is the 1-D unnormalized transform of one row (uint8 values)
    row = photo[0, :, 0] / 255.0
    np.testing.assert_allclose(magnitude[0, 3], np.abs(np.fft.rfft(row))[3], rtol=1e-9)
    np.testing.assert_allclose(magnitude[0, 3], 0.1 * size, rtol=0.01)
    rest = magnitude.copy()
    rest[0, 3] = 0
    assert rest.max() < 0.01 * magnitude[0, 3].min()
    np.testing.assert_allclose(mean, photo[0, :, 0].mean() / 255.0, atol=1e-12)


def test_maco_contrast_and_colour_are_the_photos():
    """A random-phase MaCo image has the photos' mean colour and (Parseval) their mean pixel variance."""
    mean = param.maco_mean()
    assert np.all(np.abs(mean - 0.46) < 0.06) and mean.max() - mean.min() < 0.1  # near-neutral, not brown
    size = 128
    magnitude = param.maco_magnitude(size, decorrelate=False).astype(np.float64)
    # full-grid energy: interior columns count twice (their Hermitian partners), DC and Nyquist once
    energy = (magnitude**2).sum((0, 1)) * 2 - (magnitude[:, 0] ** 2).sum(0) - (magnitude[:, -1] ** 2).sum(0)
    std = np.sqrt(energy) / size
    assert np.all((std > 0.18) & (std < 0.25))  # ImageNet photos: ~0.21 per channel at 128 px


def test_maco_magnitude_at_unstored_sizes_follows_cycles_per_image():
    stored = param.maco_magnitude(128).astype(np.float64)
    half = param.maco_magnitude(64).astype(np.float64)
    ky = np.rint(np.fft.fftfreq(64) * 64).astype(int)  # signed cycles per image (row 32 is -32)
    np.testing.assert_allclose(half[:, 1:33], stored[ky % 128, 1:33] * 0.5, rtol=1e-6)
    big = param.maco_magnitude(300)
    assert big.shape == (300, 151, 3) and np.all(np.isfinite(big)) and big[0, 0].max() == 0
    assert big[0, 140].mean() < big[0, 100].mean() < big[0, 10].mean()


def test_registry_errors():
    with pytest.raises(UsageError, match="choose pixel, fourier, maco"):
        registry.build("parameterization", "wavelet")
    with pytest.raises(UsageError, match="bad options"):
        registry.build("parameterization", "pixel", bogus=1)
    assert jax.eval_shape(registry.build("parameterization", "fourier", decay=1.5, decorrelate=False).to_image,
                          jnp.zeros((8, 5, 3, 2))).shape == (8, 8, 3)


def test_vmap_over_keys():
    p = param.fourier()
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: p.init(key=k, size=16))(keys)
    images = jax.jit(jax.vmap(p.to_image))(params)
    assert images.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(images[1], jax.jit(p.to_image)(params[1]), atol=1e-6)
    np.testing.assert_array_equal(params[1], p.init(key=keys[1], size=16))


def test_colour_mix_and_its_hand_written_gradient_match_float64():
    from jaxviz.image import color as P

    z = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=(5, 7, 3)).astype(np.float32)
    out, pullback = jax.vjp(P.to_rgb, jnp.asarray(z))
    C = P.COLOR_SQRT.astype(np.float64)
    np.testing.assert_allclose(out, z.astype(np.float64) @ C.T, atol=1e-6)
    np.testing.assert_allclose(pullback(jnp.asarray(g))[0], g.astype(np.float64) @ C, atol=1e-6)
    A = np.random.default_rng(2).normal(size=(3, 3)).astype(np.float32)  # not symmetric: index order
    np.testing.assert_allclose(P.mix_channels(jnp.asarray(z), A), z.astype(np.float64) @ A.T.astype(np.float64), atol=1e-5)
