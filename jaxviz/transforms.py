"""Random robustness transforms applied to the image before each forward pass.

Optimizing through small random shifts, zooms and rotations keeps the optimizer from exploiting
pixel-exact high-frequency patterns (Lucid's "transformation robustness").

A transform is any object satisfying :class:`Transform`: ``t(image [H, W, 3], *, key) -> image``
for one image, pure, jittable and differentiable in ``image``; output shapes depend only on input
shapes (static). The built-in ones are frozen dataclasses, so they compare, hash and print by value.
Vmap them for batches, with one key per image. A transform that also satisfies
:class:`GeometricTransform` (it can say which affine map it applies) is fused by :class:`Chain` with
its geometric neighbours into one resampling; any other transform is simply applied in turn.

Sizes: :func:`pad` grows the image by ``2 n``, :func:`jitter` shrinks it by ``d`` (a random crop),
:func:`random_scale` and :func:`random_rotate` keep it. :func:`default` therefore maps an
``S × S`` image to ``(S + 12) × (S + 12)``; the models are fully convolutional with global pooling,
so any size works (use :func:`crop_or_resize_to` when a fixed size is needed).

Presets of the anchors (see :mod:`jaxviz.recipes`): :func:`lucid` (Lucid/Lucent's standard
transforms, then Lucent's upsampling of small images to 224), :func:`maco` (one random
crop-and-resize plus noise per forward pass, as Xplique's MaCo does for each of its crops) and
:func:`deepinversion` (circular shift by up to 30 px and a random horizontal flip).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp

from jaxviz.errors import UsageError

__all__ = [
    "Transform", "GeometricTransform", "Identity", "identity", "Pad", "Jitter", "RandomScale", "RandomRotate", "Chain", "CropOrResize",
    "pad", "jitter", "random_scale", "random_rotate", "chain", "crop_or_resize_to", "default",
    "RandomCrop", "Noise", "RandomFlip", "Roll", "Upsample", "random_crop", "noise", "random_flip", "roll",
    "upsample_to", "lucid", "maco", "deepinversion",
]

@runtime_checkable
class Transform(Protocol):
    """What :func:`jaxviz.render.render` needs of a transform."""

    def __call__(self, image: jax.Array, *, key: jax.Array) -> jax.Array:
        """One image ``[H, W, 3]`` → the transformed image (shape static given the input's)."""


@runtime_checkable
class GeometricTransform(Protocol):
    """A transform that is an affine map of pixel positions (fusable by :class:`Chain`).

    ``geometry(hw, *, key)`` returns ``(out_hw, M, t)``: the output size and the map from output
    pixel ``q`` to input position ``M q + t`` (the same random draw as ``__call__`` with that key).
    ``stretch()`` returns ``(scale, degrees)``, static bounds on the zoom and rotation it may apply.
    An optional ``fill`` attribute (not ``None``) is the value it shows outside its input: such a
    transform can only open a fused run. ``affine = False`` opts out of fusion.
    """

    def __call__(self, image: jax.Array, *, key: jax.Array) -> jax.Array: ...

    def geometry(self, hw, *, key): ...

    def stretch(self) -> tuple[float, float]: ...


@dataclasses.dataclass(frozen=True)
class Identity:
    """Leaves the image as it is (``--transforms none``)."""

    def __call__(self, image, *, key=None):
        return image


def identity() -> Identity:
    """The :class:`Identity` transform."""
    return Identity()


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

    @property
    def affine(self) -> bool:
        return self.mode == "constant"  # a mirror is not an affine map

    @property
    def fill(self) -> float | None:
        return self.value if self.mode == "constant" else None

    def geometry(self, hw, *, key=None):
        return (hw[0] + 2 * self.n, hw[1] + 2 * self.n), jnp.eye(2), jnp.full((2,), -float(self.n))

    def stretch(self):
        return 1.0, 0.0


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Random crop of ``H - d`` by ``W - d`` pixels: a shift by 0..d pixels in each direction."""

    d: int

    def __call__(self, image, *, key):
        if self.d == 0:
            return image
        h, w = image.shape[:2]
        dy, dx = self._offset(image.shape, key)
        # the crop size is static; only the offset is random, so jit sees one shape
        return jax.lax.dynamic_slice(image, (dy, dx, 0), (h - self.d, w - self.d, image.shape[2]))

    def _offset(self, shape, key):
        if min(shape[:2]) <= self.d:
            raise UsageError(f"jitter of {self.d} px needs an image larger than that, got {tuple(shape)}")
        return jax.random.randint(key, (2,), 0, self.d + 1)

    def geometry(self, hw, *, key):
        offset = self._offset(hw, key).astype(jnp.float32)
        return (hw[0] - self.d, hw[1] - self.d), jnp.eye(2), offset

    def stretch(self):
        return 1.0, 0.0


def _reflect(i, n: int):
    # half-sample symmetric extension (… 1 0 | 0 1 … n-1 | n-1 n-2 …): fills the few corner pixels a
    # zoom-out or rotation uncovers with nearby content instead of a hard-edged constant
    i = jnp.mod(i, 2 * n)
    return jnp.where(i >= n, 2 * n - 1 - i, i)


def _snap(x, bits: int = 10):
    # Map entries are snapped to multiples of 2^-10 (at most 0.06° or 0.1 % off), offsets to 2^-11
    # (as the centre offsets c - M c are). Then every product and sum in ``M q + t`` is exact in
    # float32 for sides up to 2048 px. XLA may compute one value
    # twice for different consumers, once with a fused multiply-add and once without; inexact sums
    # could then put a tap index and its weight on different sides of an integer (a whole-pixel
    # error seen under jit(jvp)). Exact sums make every copy identical.
    return jnp.round(x * 2.0**bits) / 2.0**bits


def _grid(hw):
    return jnp.meshgrid(jnp.arange(hw[0], dtype=jnp.float32), jnp.arange(hw[1], dtype=jnp.float32), indexing="ij")


def _source_coords(M, t, qy, qx):
    """Where output pixels ``(qy, qx)`` sample the input: ``M q + t``, as ``(sy, sx)``."""
    return M[0, 0] * qy + M[0, 1] * qx + t[0], M[1, 0] * qy + M[1, 1] * qx + t[1]


def _bilinear(image, M, t, out_hw, fill):
    """Bilinear sampling of ``image`` at ``M q + t``; outside: ``fill`` or, if None, the mirrored image."""
    h, w = image.shape[:2]
    sy, sx = _source_coords(M, t, *_grid(out_hw))
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)

    def tap(yi, xi):  # all channels of one of the 4 neighbours at once
        if fill is None:
            return image[_reflect(yi, h), _reflect(xi, w)]
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        return jnp.where(inside, image[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)], fill)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _bilinear_filled(image, M, t, out_hw, fill, reach):
    return _bilinear(image, M, t, out_hw, fill)


def _bilinear_filled_fwd(image, M, t, out_hw, fill, reach):
    return _bilinear(image, M, t, out_hw, fill), (M, t, image.shape)


def _bilinear_filled_bwd(out_hw, fill, reach, residuals, g):
    # The transpose of the sampling, written as a gather: input pixel r receives g[q] * tent(M q + t - r)
    # from the outputs q whose sample point lies within one pixel of r. Those q lie within ``reach``
    # of M^-1 (r - t) on each axis, so a (2 half + 1)^2 window around it holds them all. Autodiff
    # would scatter-add instead, which XLA-CPU runs ~2x slower than this gather.
    M, t, shape = residuals
    h, w = shape[:2]
    ry, rx = _grid((h, w))
    inverse = jnp.linalg.inv(M)
    cy = inverse[0, 0] * (ry - t[0]) + inverse[0, 1] * (rx - t[1])
    cx = inverse[1, 0] * (ry - t[0]) + inverse[1, 1] * (rx - t[1])
    qy0, qx0 = jnp.round(cy).astype(jnp.int32), jnp.round(cx).astype(jnp.int32)
    half = math.floor(reach + 0.5)
    grad = jnp.zeros(shape, g.dtype)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            qy, qx = qy0 + dy, qx0 + dx
            sy, sx = _source_coords(M, t, qy.astype(jnp.float32), qx.astype(jnp.float32))
            weight = jnp.maximum(0.0, 1.0 - jnp.abs(sy - ry)) * jnp.maximum(0.0, 1.0 - jnp.abs(sx - rx))
            inside = (qy >= 0) & (qy < out_hw[0]) & (qx >= 0) & (qx < out_hw[1])
            value = g[jnp.clip(qy, 0, out_hw[0] - 1), jnp.clip(qx, 0, out_hw[1] - 1)]
            grad = grad + jnp.where(inside, weight, 0.0)[..., None] * value
    # the geometry is a random draw, not something to optimize: no gradient for it
    return grad, jnp.zeros_like(M), jnp.zeros_like(t)


_bilinear_filled.defvjp(_bilinear_filled_fwd, _bilinear_filled_bwd)


def _about_centre(hw, M):
    """The map ``q -> c + M (q - c)`` about the centre ``c`` of an ``hw`` image, as ``(M, t)``."""
    c = jnp.asarray([(hw[0] - 1) / 2.0, (hw[1] - 1) / 2.0], jnp.float32)
    return M, c - M @ c


def _zoom_rotate(scale, angle):
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    return _snap(jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])]))


def _affine(image, scale, angle):
    """Bilinear zoom by ``scale`` and rotation by ``angle`` radians about the centre; same shape."""
    hw = image.shape[:2]
    M, t = _about_centre(hw, _zoom_rotate(scale, angle))
    return _bilinear(image, M, t, hw, None)


def _draw(key, values: tuple[float, ...]):
    return jnp.asarray(values, jnp.float32)[jax.random.randint(key, (), 0, len(values))]


@dataclasses.dataclass(frozen=True)
class RandomScale:
    """Zoom about the centre by a factor drawn uniformly from ``scales``; same output shape."""

    scales: tuple[float, ...]

    def __call__(self, image, *, key):
        return _affine(image, _draw(key, self.scales), 0.0)

    def geometry(self, hw, *, key):
        return hw, *_about_centre(hw, _zoom_rotate(_draw(key, self.scales), 0.0))

    def stretch(self):
        return max(self.scales), 0.0


@dataclasses.dataclass(frozen=True)
class RandomRotate:
    """Rotation about the centre: angle uniform in ``[-degrees, degrees]``, or drawn from ``choices``."""

    degrees: float = 0.0
    choices: tuple[float, ...] | None = None

    def _angle(self, key):
        if self.choices is not None:
            angle = _draw(key, self.choices)
        else:
            angle = jax.random.uniform(key, (), jnp.float32, -self.degrees, self.degrees)
        return angle * (math.pi / 180.0)

    def __call__(self, image, *, key):
        return _affine(image, 1.0, self._angle(key))

    def geometry(self, hw, *, key):
        return hw, *_about_centre(hw, _zoom_rotate(1.0, self._angle(key)))

    def stretch(self):
        return 1.0, max((abs(a) for a in self.choices), default=0.0) if self.choices is not None else self.degrees


def _is_geometric(t, first: bool) -> bool:
    # a transform that shows a fill value outside its input can only open a run (inside a run,
    # "outside" would mean outside an intermediate image that is never materialized)
    if not isinstance(t, GeometricTransform) or not getattr(t, "affine", True):
        return False
    return first or getattr(t, "fill", None) is None


def _resamples(t) -> bool:
    return tuple(t.stretch()) != (1.0, 0.0)


def _compose(transforms, keys, hw):
    """One run of geometric transforms as a single map from output to input pixels.

    Returns:
      ``(out_hw, M, t, fill, reach)``: output size; the map ``q -> M q + t`` (snapped, see
      :func:`_snap`); the value outside the input (None: mirror it); a static bound on how far,
      in output pixels, the inputs within one pixel of any point map back to (per axis).
    """
    fill = getattr(transforms[0], "fill", None)
    M, t = jnp.eye(2, dtype=jnp.float32), jnp.zeros(2, jnp.float32)
    scale, degrees = 1.0, 0.0
    for transform, key in zip(transforms, keys):
        hw, M_i, t_i = transform.geometry(hw, key=key)
        # output -> input maps compose right to left: q -> M (M_i q + t_i) + t
        M, t = M @ M_i, M @ t_i + t
        s, d = transform.stretch()
        scale, degrees = scale * s, degrees + d
    # |M^-1| row sums <= prod(scale) * (|cos| + |sin|) of the total angle, over every draw
    angle = math.radians(min(degrees, 45.0))
    reach = scale * (math.cos(angle) + math.sin(angle)) + 1e-3
    return hw, _snap(M), _snap(t, 11), fill, reach


def _fused(transforms, keys, image):
    """Applies a run of geometric transforms as one affine map and a single bilinear resampling."""
    hw, M, t, fill, reach = _compose(transforms, keys, image.shape[:2])
    if fill is None:
        return _bilinear(image, M, t, hw, None)
    return _bilinear_filled(image, jax.lax.stop_gradient(M), jax.lax.stop_gradient(t), hw, float(fill), reach)


@dataclasses.dataclass(frozen=True)
class Chain:
    """Applies ``transforms`` in order, each with its own key split from ``key``.

    With ``fuse`` (the default), each run of jitters, zooms and rotations (optionally opened by a
    constant pad) is composed into one affine map and resampled once: one bilinear interpolation
    instead of one per zoom or rotation (sharper, and ~3-5x faster with its gradient). The random
    draws are the same as unfused; the pixels differ only by the interpolation of interpolations.
    """

    transforms: tuple
    fuse: bool = True

    def __call__(self, image, *, key):
        if not self.transforms:
            return image
        keys = list(jax.random.split(key, len(self.transforms)))
        i = 0
        while i < len(self.transforms):
            j = i
            while self.fuse and j < len(self.transforms) and _is_geometric(self.transforms[j], first=j == i):
                j += 1
            run = self.transforms[i:j]
            if any(_resamples(t) for t in run):
                image, i = _fused(run, keys[i:j], image), j
            else:  # nothing to resample (or not fusing): crops and pads are exact and cheap as they are
                image, i = self.transforms[i](image, key=keys[i]), i + 1
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


def chain(*transforms: Transform, fuse: bool = True) -> Chain:
    """Composes transforms left to right, splitting the key.

    Args:
      transforms: applied in order, each with its own key.
      fuse: resample each run of pad/jitter/zoom/rotate once (see :class:`Chain`); ``False``
        applies them one by one.
    """
    return Chain(tuple(transforms), bool(fuse))


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


# ------------------------------------------------------------------ the anchors' transforms


@dataclasses.dataclass(frozen=True)
class RandomCrop:
    """Random square crop, resized (bilinear) to ``out`` × ``out`` (``None``: the input side).

    The crop side is a fraction of the image side drawn uniformly from ``side``; its centre is
    ``0.5 + N(0, centre_sd)`` of the image in each axis, clipped so the crop stays inside the
    image. Not fused with its neighbours (its zoom depends on the input size).
    """

    side: tuple[float, float] = (0.6, 1.0)
    out: int | None = None
    centre_sd: float = 0.15

    affine = False  # not fusable: see the class docstring

    def __call__(self, image, *, key):
        h, w = image.shape[:2]
        out = self.out or h
        k_side, k_centre = jax.random.split(key)
        side = jax.random.uniform(k_side, (), jnp.float32, *self.side)
        centre = jnp.clip(0.5 + self.centre_sd * jax.random.normal(k_centre, (2,)), side / 2, 1 - side / 2)
        # output pixel q samples the input at top-left + (q + 0.5) * step - 0.5 (pixel centres)
        step = side * jnp.asarray([h, w], jnp.float32) / out
        t = (centre - side / 2) * jnp.asarray([h, w], jnp.float32) + 0.5 * step - 0.5
        M = jnp.diag(step)
        return _bilinear(image, jax.lax.stop_gradient(M), jax.lax.stop_gradient(t), (out, out), None)


@dataclasses.dataclass(frozen=True)
class Noise:
    """Adds ``N(0, sd)`` and ``U(-sd/2, sd/2)`` noise to every pixel (Xplique's MaCo)."""

    sd: float

    def __call__(self, image, *, key):
        k_normal, k_uniform = jax.random.split(key)
        return (image + self.sd * jax.random.normal(k_normal, image.shape, image.dtype)
                + jax.random.uniform(k_uniform, image.shape, image.dtype, -self.sd / 2, self.sd / 2))


@dataclasses.dataclass(frozen=True)
class RandomFlip:
    """Mirrors the image left-right with probability 1/2."""

    def __call__(self, image, *, key):
        return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


@dataclasses.dataclass(frozen=True)
class Roll:
    """Circular shift by ``-d..d`` pixels in each direction (DeepInversion's ``torch.roll``); same shape."""

    d: int

    def __call__(self, image, *, key):
        dy, dx = jax.random.randint(key, (2,), -self.d, self.d + 1)
        return jnp.roll(image, (dy, dx), axis=(0, 1))


@dataclasses.dataclass(frozen=True)
class Upsample:
    """Bilinear resize to ``size`` × ``size`` of an image smaller than that; larger ones pass as they are.

    Lucent's ``render_vis`` does this to every image under 224 px before the model.
    """

    size: int

    def __call__(self, image, *, key=None):
        h, w, c = image.shape
        if h >= self.size and w >= self.size:
            return image
        return jax.image.resize(image, (self.size, self.size, c), method="linear")


def _fraction_pair(side) -> tuple[float, float]:
    low, high = (float(v) for v in side)
    if not 0 < low <= high <= 1:
        raise UsageError(f"random_crop side must be fractions 0 < low <= high <= 1, got {side}")
    return low, high


def random_crop(side=(0.6, 1.0), *, out: int | None = None, centre_sd: float = 0.15) -> RandomCrop:
    """A :class:`RandomCrop`: side fraction uniform in ``side``, resized to ``out`` (default: input side)."""
    if out is not None and _count(out, "out") == 0:
        raise UsageError("out must be positive")
    if not centre_sd >= 0:
        raise UsageError(f"centre_sd must be >= 0, got {centre_sd}")
    return RandomCrop(_fraction_pair(side), out, float(centre_sd))


def noise(sd: float) -> Noise:
    """A :class:`Noise` of strength ``sd`` (in ``[0, 1]`` image units)."""
    if not sd >= 0:
        raise UsageError(f"noise sd must be >= 0, got {sd}")
    return Noise(float(sd))


def random_flip() -> RandomFlip:
    """A :class:`RandomFlip`."""
    return RandomFlip()


def roll(d: int) -> Roll:
    """A :class:`Roll` by up to ``d`` pixels."""
    return Roll(_count(d, "roll"))


def upsample_to(size: int) -> Upsample:
    """An :class:`Upsample` to ``size``."""
    if _count(size, "size") == 0:
        raise UsageError("size must be positive")
    return Upsample(size)


def lucid(*, upsample: int | None = 224) -> Chain:
    """Lucid/Lucent's ``standard_transforms``, then Lucent's upsampling of images under ``upsample`` px.

    Grey pad 12, jitter 8, scale by one of ``1 + (i - 5) / 50`` for ``i = 0..10``, rotate by an
    integer angle in ``-10..10`` (0 five times more likely: Lucent's list), jitter 4.
    """
    angles = tuple(range(-10, 11)) + (0,) * 5
    parts = [pad(12, "constant", value=0.5), jitter(8), random_scale([1 + (i - 5) / 50 for i in range(11)]),
             random_rotate(angles), jitter(4)]
    if upsample:
        parts.append(upsample_to(upsample))
    return chain(*parts)


def maco(*, side=(0.6, 1.0), out: int | None = 224, sd: float = 0.04) -> Chain:
    """One MaCo crop per forward pass: :func:`random_crop` resized to ``out``, then :func:`noise`.

    Xplique's MaCo adds noise 0.08 in ``[-1, 1]`` model units, i.e. 0.04 in ``[0, 1]``.
    """
    return chain(random_crop(side, out=out), noise(sd))


def deepinversion(*, shift: int = 30) -> Chain:
    """DeepInversion's jitter (circular shift by up to ``shift`` px) and random horizontal flip."""
    return chain(roll(shift), random_flip())
