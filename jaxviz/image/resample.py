"""Bilinear resampling along affine maps, the one resampler every geometric transform uses.

A map ``q -> M q + t`` sends output pixel ``q`` to an input position; :func:`bilinear` samples
there (mirroring outside the input), :func:`bilinear_filled` shows a constant outside it with a
hand-written gradient. Kept apart from :mod:`jaxviz.image.transforms` so the transforms read as
what they do, not how pixels are interpolated.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

__all__ = ["reflect_index", "snap", "pixel_grid", "source_coords", "bilinear", "bilinear_filled", "about_centre",
           "zoom_rotate", "affine", "draw"]


def reflect_index(i, n: int):
    # half-sample symmetric extension (… 1 0 | 0 1 … n-1 | n-1 n-2 …): fills the few corner pixels a
    # zoom-out or rotation uncovers with nearby content instead of a hard-edged constant
    i = jnp.mod(i, 2 * n)
    return jnp.where(i >= n, 2 * n - 1 - i, i)


def snap(x, bits: int = 10):
    # Map entries are snapped to multiples of 2^-10 (at most 0.06° or 0.1 % off), offsets to 2^-11
    # (as the centre offsets c - M c are). Then every product and sum in ``M q + t`` is exact in
    # float32 for sides up to 2048 px. XLA may compute one value
    # twice for different consumers, once with a fused multiply-add and once without; inexact sums
    # could then put a tap index and its weight on different sides of an integer (a whole-pixel
    # error seen under jit(jvp)). Exact sums make every copy identical.
    return jnp.round(x * 2.0**bits) / 2.0**bits


def pixel_grid(hw):
    return jnp.meshgrid(jnp.arange(hw[0], dtype=jnp.float32), jnp.arange(hw[1], dtype=jnp.float32), indexing="ij")


def source_coords(M, t, qy, qx):
    """Where output pixels ``(qy, qx)`` sample the input: ``M q + t``, as ``(sy, sx)``."""
    return M[0, 0] * qy + M[0, 1] * qx + t[0], M[1, 0] * qy + M[1, 1] * qx + t[1]


def bilinear(image, M, t, out_hw, fill):
    """Bilinear sampling of ``image`` at ``M q + t``; outside: ``fill`` or, if None, the mirrored image."""
    h, w = image.shape[:2]
    sy, sx = source_coords(M, t, *pixel_grid(out_hw))
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

    def tap(yi, xi):  # all channels of one of the 4 neighbours at once
        if fill is None:
            return image[reflect_index(yi, h), reflect_index(xi, w)]
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        return jnp.where(inside, image[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)], fill)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def bilinear_filled(image, M, t, out_hw, fill, reach):
    return bilinear(image, M, t, out_hw, fill)


def _bilinear_filled_fwd(image, M, t, out_hw, fill, reach):
    return bilinear(image, M, t, out_hw, fill), (M, t, image.shape)


def _bilinear_filled_bwd(out_hw, fill, reach, residuals, g):
    # The transpose of the sampling, written as a gather: input pixel r receives g[q] * tent(M q + t - r)
    # from the outputs q whose sample point lies within one pixel of r. Those q lie within ``reach``
    # of M^-1 (r - t) on each axis, so a (2 half + 1)^2 window around it holds them all. Autodiff
    # would scatter-add instead, which XLA-CPU runs ~2x slower than this gather.
    M, t, shape = residuals
    h, w = shape[:2]
    ry, rx = pixel_grid((h, w))
    inverse = jnp.linalg.inv(M)
    cy = inverse[0, 0] * (ry - t[0]) + inverse[0, 1] * (rx - t[1])
    cx = inverse[1, 0] * (ry - t[0]) + inverse[1, 1] * (rx - t[1])
    qy0, qx0 = jnp.round(cy).astype(jnp.int32), jnp.round(cx).astype(jnp.int32)
    half = math.floor(reach + 0.5)
    grad = jnp.zeros(shape, g.dtype)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            qy, qx = qy0 + dy, qx0 + dx
            sy, sx = source_coords(M, t, qy.astype(jnp.float32), qx.astype(jnp.float32))
            weight = jnp.maximum(0.0, 1.0 - jnp.abs(sy - ry)) * jnp.maximum(0.0, 1.0 - jnp.abs(sx - rx))
            inside = (qy >= 0) & (qy < out_hw[0]) & (qx >= 0) & (qx < out_hw[1])
            value = g[jnp.clip(qy, 0, out_hw[0] - 1), jnp.clip(qx, 0, out_hw[1] - 1)]
            grad = grad + jnp.where(inside, weight, 0.0)[..., None] * value
    # the geometry is a random draw, not something to optimize: no gradient for it
    return grad, jnp.zeros_like(M), jnp.zeros_like(t)


bilinear_filled.defvjp(_bilinear_filled_fwd, _bilinear_filled_bwd)


def about_centre(hw, M):
    """The map ``q -> c + M (q - c)`` about the centre ``c`` of an ``hw`` image, as ``(M, t)``."""
    c = jnp.asarray([(hw[0] - 1) / 2.0, (hw[1] - 1) / 2.0], jnp.float32)
    return M, c - M @ c


def zoom_rotate(scale, angle):
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    return snap(jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])]))


def affine(image, scale, angle):
    """Bilinear zoom by ``scale`` and rotation by ``angle`` radians about the centre; same shape."""
    hw = image.shape[:2]
    M, t = about_centre(hw, zoom_rotate(scale, angle))
    return bilinear(image, M, t, hw, None)


def draw(key, values: tuple[float, ...]):
    return jnp.asarray(values, jnp.float32)[jax.random.randint(key, (), 0, len(values))]
