"""Colour: the decorrelated colour space every parameterization optimizes in.

Colour decorrelation. Natural RGB values are strongly correlated, so optimizing R, G and B
independently produces saturated rainbow noise. We optimize in a decorrelated space ``z`` and map
``rgb = z @ COLOR_SQRT.T``, where ``COLOR_SQRT`` is the symmetric square root of the RGB
covariance of all pixels of the 10 embedded photos (values in ``[0, 1]``, each photo weighted
equally, covariance about the pooled mean), scaled so that its largest column norm is 1.
The symmetric root is used because it is unique (an SVD or Cholesky root depends on signs or on
channel order). Recomputed by ``scripts/color_stats.py``::

    COLOR_SQRT = [[0.8984, 0.3731, 0.2317],     COLOR_MEAN = [0.4642, 0.3639, 0.3204]
                  [0.3731, 0.5642, 0.4378],
                  [0.2317, 0.4378, 0.6471]]
"""

from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["COLOR_SQRT", "COLOR_MEAN", "LUCID_COLOR", "COLORS", "color_stats", "mix_channels", "channel_mixer", "to_rgb",
           "decorrelated_to_rgb", "spectrum_to_rgb", "rgb_to_decorrelated"]


# Written by scripts/color_stats.py from jaxviz.data.embedded_photos(); tests/image/test_param.py
# recomputes them.
COLOR_SQRT = np.array([
    [0.898404, 0.373089, 0.231676],
    [0.373089, 0.564215, 0.437801],
    [0.231676, 0.437801, 0.647080],
], np.float32)


COLOR_MEAN = np.array([0.464229, 0.363925, 0.320417], np.float32)


# Lucid/Lucent's colour matrix (a square root of ImageNet's colour covariance), scaled as they do so
# that its largest column norm is 1; the image is ``z @ LUCID_COLOR.T``.
_LUCID_RAW = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float64)


LUCID_COLOR = (_LUCID_RAW / np.linalg.norm(_LUCID_RAW, axis=0).max()).astype(np.float32)


COLORS = {"photos": COLOR_SQRT, "lucid": LUCID_COLOR}  # Fourier(color=...)


def color_stats(photos: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour and normalized colour-covariance square root of photos.

    Args:
      photos: uint8 ``[H, W, 3]`` arrays (any sizes; each weighted equally).

    Returns:
      ``(mean [3], sqrt [3, 3])`` in float64; ``sqrt`` is symmetric with ``sqrt @ sqrt.T`` ∝ the
      covariance and largest column norm 1.
    """
    firsts, seconds = [], []
    for photo in photos:
        x = np.asarray(photo, np.float64).reshape(-1, 3) / 255.0
        firsts.append(x.mean(0))
        seconds.append(x.T @ x / len(x))
    mean = np.mean(firsts, 0)
    cov = np.mean(seconds, 0) - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    root = eigvec @ np.diag(np.sqrt(np.clip(eigval, 0, None))) @ eigvec.T
    return mean, root / np.linalg.norm(root, axis=0).max()


def mix_channels(z: jax.Array, matrix: np.ndarray) -> jax.Array:
    """``z @ matrix.T`` over the last axis, as broadcast multiply-adds (fused elementwise code)."""
    return sum(z[..., j : j + 1] * jnp.asarray(matrix[:, j], z.dtype) for j in range(matrix.shape[1]))


@functools.lru_cache(maxsize=None)
def channel_mixer(color: str):
    """``z -> z @ COLORS[color].T`` with a hand-written transpose (autodiff would emit reductions)."""
    matrix = COLORS[color]

    @jax.custom_vjp
    def mix(z):
        return mix_channels(z, matrix)

    mix.defvjp(lambda z: (mix_channels(z, matrix), None), lambda _, g: (mix_channels(g, matrix.T),))
    return mix


to_rgb = channel_mixer("photos")


def decorrelated_to_rgb(z: jax.Array, on: bool) -> jax.Array:
    """Decorrelated colour -> RGB, on an image ``[..., 3]``."""
    # a [H·W, 3] x [3, 3] dot (slow on XLA-CPU, ~0.6 ms at 224 px) but a fusion barrier: the
    # elementwise mix reads every channel three times, and XLA would fuse the gradient's producers
    # (the transforms' gathers) into it and recompute them per channel (8 ms)
    return z @ jnp.asarray(COLOR_SQRT).T if on else z


def spectrum_to_rgb(real: jax.Array, imag: jax.Array, on: bool, color: str = "photos") -> jax.Array:
    """Decorrelated colour -> RGB on a spectrum's real and imaginary parts ``[..., 3]``, as complex.

    The mix is linear and real, so it commutes with the inverse FFT: applied to the spectrum it is
    separated from the image-side gradient by the FFT (no fusion trouble) and runs as cheap
    elementwise code.
    """
    if on:
        real, imag = channel_mixer(color)(real), channel_mixer(color)(imag)
    return jax.lax.complex(real, imag)


def rgb_to_decorrelated(rgb: jax.Array, color: str = "photos") -> jax.Array:
    """Inverse of the colour decorrelation map ``z -> z @ COLORS[color].T`` on ``[..., 3]``."""
    return rgb @ jnp.asarray(np.linalg.inv(COLORS[color].astype(np.float64)).T.astype(np.float32))
