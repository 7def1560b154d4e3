"""Random robustness transforms applied to the image before each forward pass.

Optimizing through small random shifts, zooms and rotations keeps the optimizer from exploiting
pixel-exact high-frequency patterns (Lucid's "transformation robustness").

A transform is ``t(image [H, W, 3], *, key) -> image``: one image, pure, jittable and
differentiable in ``image``; output shapes depend only on input shapes (static). Transforms are
frozen dataclasses, so they compare, hash and print by value. Vmap them for batches, with one key
per image.

Sizes: :func:`pad` grows the image by ``2 n``, :func:`jitter` shrinks it by ``d`` (a random crop),
:func:`random_scale` and :func:`random_rotate` keep it. :func:`default` therefore maps an
``S × S`` image to ``(S + 12) × (S + 12)``; the models are fully convolutional with global pooling,
so any size works (use :func:`crop_or_resize_to` when a fixed size is needed).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxviz.errors import UsageError

__all__ = [
    "Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Chain", "CropOrResize",
    "pad", "jitter", "random_scale", "random_rotate", "chain", "crop_or_resize_to", "default",
]

Transform = Callable[..., jax.Array]  # (image [H,W,3], *, key) -> image


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pads ``n`` pixels on every side (``reflect``, or ``constant`` with ``value``)."""

    n: int
    mode: str = "reflect"
    value: float = 0.5

    def __call__(self, image, *, key=None):
        if self.n == 0:
            return image
        widths = ((self.n, self.n), (self.n, self.n), (0, 0))
        if self.mode == "constant":
            return jnp.pad(image, widths, mode="constant", constant_values=self.value)
        if min(image.shape[:2]) <= self.n:
            raise UsageError(f"reflect padding of {self.n} px needs an image larger than that, got {image.shape}")
        return jnp.pad(image, widths, mode="reflect")


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Random crop of ``H - d`` by ``W - d`` pixels: a shift by 0..d pixels in each direction."""

    d: int

    def __call__(self, image, *, key):
        if self.d == 0:
            return image
        h, w = image.shape[:2]
        if min(h, w) <= self.d:
            raise UsageError(f"jitter of {self.d} px needs an image larger than that, got {image.shape}")
        # the crop size is static; only the offset is random, so jit sees one shape
        dy, dx = jax.random.randint(key, (2,), 0, self.d + 1)
        return jax.lax.dynamic_slice(image, (dy, dx, 0), (h - self.d, w - self.d, image.shape[2]))


def _reflect(i, n: int):
    # half-sample symmetric extension (… 1 0 | 0 1 … n-1 | n-1 n-2 …): fills the few corner pixels a
    # zoom-out or rotation uncovers with nearby content instead of a hard-edged constant
    i = jnp.mod(i, 2 * n)
    return jnp.where(i >= n, 2 * n - 1 - i, i)


def _affine(image, scale, angle):
    """Bilinear zoom by ``scale`` and rotation by ``angle`` radians about the centre; same shape."""
    h, w = image.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    # inverse map: for each output pixel, where it comes from in the input. The entries are snapped to
    # multiples of 2^-10 (at most 0.06° or 0.1 % off): with offsets that are multiples of 1/2, every
    # product and sum below is then exact in float32 for sides up to 2048 px. XLA may compute one value
    # twice for different consumers, once with a fused multiply-add and once without; inexact sums
    # could then put the tap index and the tap weight on different sides of an integer (a whole-pixel
    # error seen under jit(jvp)). Exact sums make every copy identical.
    cos = jnp.round(jnp.cos(angle) / scale * 1024.0) / 1024.0
    sin = jnp.round(jnp.sin(angle) / scale * 1024.0) / 1024.0
    sy = cy + cos * (yy - cy) - sin * (xx - cx)
    sx = cx + sin * (yy - cy) + cos * (xx - cx)
    # hand-written bilinear gather (4 taps, all channels at once): exact at integer positions
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    ya, yb = _reflect(y0, h), _reflect(y0 + 1, h)
    xa, xb = _reflect(x0, w), _reflect(x0 + 1, w)
    top = image[ya, xa] * (1 - wx) + image[ya, xb] * wx
    bottom = image[yb, xa] * (1 - wx) + image[yb, xb] * wx
    return top * (1 - wy) + bottom * wy


def _draw(key, values: tuple[float, ...]):
    return jnp.asarray(values, jnp.float32)[jax.random.randint(key, (), 0, len(values))]


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zoom about the centre by a factor drawn uniformly from ``scales``; same output shape."""

    scales: tuple[float, ...]

    def __call__(self, image, *, key):
        return _affine(image, _draw(key, self.scales), 0.0)


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotation about the centre: angle uniform in ``[-degrees, degrees]``, or drawn from ``choices``."""

    degrees: float = 0.0
    choices: tuple[float, ...] | None = None

    def __call__(self, image, *, key):
        if self.choices is not None:
            angle = _draw(key, self.choices)
        else:
            angle = jax.random.uniform(key, (), jnp.float32, -self.degrees, self.degrees)
        return _affine(image, 1.0, angle * (math.pi / 180.0))


@dataclasses.dataclass(frozen=True)
class Chain:
    """Applies ``transforms`` in order, each with its own key split from ``key``."""

    transforms: tuple

    def __call__(self, image, *, key):
        if not self.transforms:
            return image
        for t, k in zip(self.transforms, jax.random.split(key, len(self.transforms))):
            image = t(image, key=k)
        return image


@dataclasses.dataclass(frozen=True)
class CropOrResize:
    """Deterministic: centre crop to ``size`` when larger, bilinear resize up when smaller."""

    size: int

    def __call__(self, image, *, key=None):
        h, w = image.shape[:2]
        if h >= self.size and w >= self.size:
            top, left = (h - self.size) // 2, (w - self.size) // 2
            return image[top : top + self.size, left : left + self.size]
        return jax.image.resize(image, (self.size, self.size, image.shape[2]), method="linear")


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{what} must be a non-negative integer number of pixels, got {value!r}")
    return value


def pad(n: int, mode: str = "reflect", *, value: float = 0.5) -> Pad:
    """Pads ``n`` pixels per side; output ``[H + 2n, W + 2n, 3]``.

    Args:
      n: pixels per side.
      mode: ``reflect`` (mirror the border) or ``constant`` (fill with ``value``; Lucid uses grey).
      value: fill value for ``constant``.
    """
    if mode not in ("reflect", "constant"):
        raise UsageError(f"unknown padding mode '{mode}' (choose reflect or constant)")
    return Pad(_count(n, "pad"), mode, float(value))


def jitter(d: int) -> Jitter:
    """Random shift by 0..``d`` pixels as a random crop; output ``[H - d, W - d, 3]``."""
    return Jitter(_count(d, "jitter"))


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Random zoom by one of ``scales`` (e.g. ``(1, 0.975, 1.025, 0.95, 1.05)``); same shape."""
    scales = tuple(float(s) for s in scales)
    if not scales or any(not s > 0 for s in scales):
        raise UsageError(f"random_scale needs positive scale factors, got {scales}")
    return RandomScale(scales)


def random_rotate(degrees: float | Sequence[float]) -> RandomRotate:
    """Random rotation; same shape.

    Args:
      degrees: a number ``d`` (angle uniform in ``[-d, d]``) or a sequence of angles to choose from.
    """
    if isinstance(degrees, (int, float)):
        if degrees < 0:
            raise UsageError(f"random_rotate needs a non-negative range, got {degrees}")
        return RandomRotate(degrees=float(degrees))
    choices = tuple(float(a) for a in degrees)
    if not choices:
        raise UsageError("random_rotate needs at least one angle")
    return RandomRotate(choices=choices)


def chain(*transforms: Transform) -> Chain:
    """Composes transforms left to right, splitting the key."""
    return Chain(tuple(transforms))


def crop_or_resize_to(size: int) -> CropOrResize:
    """Makes the output exactly ``[size, size, 3]`` (centre crop, or upsampling when too small)."""
    if _count(size, "size") == 0:
        raise UsageError("size must be positive")
    return CropOrResize(size)


def default() -> Chain:
    """Lucid-like defaults: grey pad 12, jitter 8, scale ±5 %, rotate ±5°, jitter 4 (S → S + 12)."""
    return chain(
        pad(12, "constant", value=0.5),
        jitter(8),
        random_scale((1.0, 0.975, 1.025, 0.95, 1.05)),
        random_rotate(5.0),
        jitter(4),
    )
