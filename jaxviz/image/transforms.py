"""Random robustness transforms applied to the image before each forward pass.

Optimizing through small random shifts, zooms and rotations keeps the optimizer from exploiting
pixel-exact high-frequency patterns (Lucid's "transformation robustness").

A transform is any object satisfying :class:`Transform`: ``t(image [H, W, 3], *, key, step) -> image``
for one image, pure, jittable and differentiable in ``image``; output shapes depend only on input
shapes (static). The built-in ones are frozen pytree dataclasses (:func:`jaxviz.common.pytree.part`) with
static settings, so they compare, hash and print by value and are arguments of the render programs.
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

import math
from typing import Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.image.crops import (
    Noise,
    RandomCrop,
    RandomFlip,
    Roll,
    ScheduledCrop,
    Upsample,
    noise,
    pixel_count,
    random_crop,
    random_flip,
    roll,
    scheduled_crop,
    upsample_to,
)
from jaxviz.image.resample import about_centre, affine, bilinear, bilinear_filled, draw, snap, zoom_rotate

__all__ = [
    "Transform", "GeometricTransform", "Identity", "identity", "Pad", "Jitter", "RandomScale", "RandomRotate", "Chain", "CropOrResize",
    "pad", "jitter", "random_scale", "random_rotate", "chain", "crop_or_resize_to", "default",
    "RandomCrop", "Noise", "RandomFlip", "Roll", "Upsample", "random_crop", "noise", "random_flip", "roll",
    "upsample_to", "lucid", "maco", "deepinversion", "ScheduledCrop", "scheduled_crop", "maco_full", "at_steps",
]

@runtime_checkable
class Transform(Protocol):
    """What :func:`jaxviz.render.render_images` needs of a transform."""

    def __call__(self, image: jax.Array, *, key: jax.Array, step: jax.Array | None = None) -> jax.Array:
        """One image ``[H, W, 3]`` → the transformed image (shape static given the input's).

        ``step``: the pass being run (an int32 scalar; ``None`` outside a render), for schedules;
        every transform accepts it, most ignore it."""


@runtime_checkable
class GeometricTransform(Protocol):
    """A transform that is an affine map of pixel positions (fusable by :class:`Chain`).

    ``geometry(hw, *, key)`` returns ``(out_hw, M, t)``: the output size and the map from output
    pixel ``q`` to input position ``M q + t`` (the same random draw as ``__call__`` with that key).
    ``stretch()`` returns ``(scale, degrees)``, static bounds on the zoom and rotation it may apply.
    An optional ``fill`` attribute (not ``None``) is the value it shows outside its input: such a
    transform can only open a fused run. ``affine = False`` opts out of fusion.
    """

    def __call__(self, image: jax.Array, *, key: jax.Array, step: jax.Array | None = None) -> jax.Array: ...

    def geometry(self, hw, *, key): ...

    def stretch(self) -> tuple[float, float]: ...


@part
class Identity:
    """Leaves the image as it is (``--transforms none``)."""

    def __call__(self, image, *, key=None, step=None):
        return image


def identity() -> Identity:
    """The :class:`Identity` transform."""
    return Identity()


@part
class Pad:
    """Pads ``n`` pixels on every side (``reflect``, or ``constant`` with ``value``)."""

    n: int = static()
    mode: str = static("reflect")
    value: float = static(0.5)

    def __call__(self, image, *, key=None, step=None):
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


@part
class Jitter:
    """Random crop of ``H - d`` by ``W - d`` pixels: a shift by 0..d pixels in each direction."""

    d: int = static()

    def __call__(self, image, *, key, step=None):
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


@part
class RandomScale:
    """Zoom about the centre by a factor drawn uniformly from ``scales``; same output shape."""

    scales: tuple[float, ...] = static()

    def __call__(self, image, *, key, step=None):
        return affine(image, draw(key, self.scales), 0.0)

    def geometry(self, hw, *, key):
        return hw, *about_centre(hw, zoom_rotate(draw(key, self.scales), 0.0))

    def stretch(self):
        return max(self.scales), 0.0


@part
class RandomRotate:
    """Rotation about the centre: angle uniform in ``[-degrees, degrees]``, or drawn from ``choices``."""

    degrees: float = static(0.0)
    choices: tuple[float, ...] | None = static(None)

    def _angle(self, key):
        if self.choices is not None:
            angle = draw(key, self.choices)
        else:
            angle = jax.random.uniform(key, (), jnp.float32, -self.degrees, self.degrees)
        return angle * (math.pi / 180.0)

    def __call__(self, image, *, key, step=None):
        return affine(image, 1.0, self._angle(key))

    def geometry(self, hw, *, key):
        return hw, *about_centre(hw, zoom_rotate(1.0, self._angle(key)))

    def stretch(self):
        return 1.0, max((abs(a) for a in self.choices), default=0.0) if self.choices is not None else self.degrees


def _is_geometric(t, first: bool) -> bool:
    # a transform that shows a fill value outside its input can only open a run (inside a run,
    # "outside" would mean outside an intermediate image that is never materialized)
    if not isinstance(t, GeometricTransform) or not getattr(t, "affine", True):
        return False
    return first or getattr(t, "fill", None) is None


def _compose(transforms, keys, hw):
    """One run of geometric transforms as a single map from output to input pixels.

    Returns:
      ``(out_hw, M, t, fill, reach)``: output size; the map ``q -> M q + t`` (snapped, see
      :func:`snap`); the value outside the input (None: mirror it); a static bound on how far,
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
    return hw, snap(M), snap(t, 11), fill, reach


def _fused(transforms, keys, image):
    """Applies a run of geometric transforms as one affine map and a single bilinear resampling."""
    hw, M, t, fill, reach = _compose(transforms, keys, image.shape[:2])
    if fill is None:
        return bilinear(image, M, t, hw, None)
    return bilinear_filled(image, jax.lax.stop_gradient(M), jax.lax.stop_gradient(t), hw, float(fill), reach)


@part
class Chain:
    """Applies ``transforms`` in order, each with its own key split from ``key``.

    With ``fuse`` (the default), each run of jitters, zooms and rotations (optionally opened by a
    constant pad) is composed into one affine map and resampled once: one bilinear interpolation
    instead of one per zoom or rotation (sharper, and ~3-5x faster with its gradient). The random
    draws are the same as unfused; the pixels differ only by the interpolation of interpolations.
    """

    transforms: tuple
    fuse: bool = static(True)

    def __call__(self, image, *, key, step=None):
        if not self.transforms:
            return image
        keys = list(jax.random.split(key, len(self.transforms)))
        i = 0
        while i < len(self.transforms):
            j = i
            while self.fuse and j < len(self.transforms) and _is_geometric(self.transforms[j], first=j == i):
                j += 1
            run = self.transforms[i:j]
            if any(tuple(t.stretch()) != (1.0, 0.0) for t in run):
                image, i = _fused(run, keys[i:j], image), j
            else:  # nothing to resample (or not fusing): crops and pads are exact and cheap as they are
                image, i = self.transforms[i](image, key=keys[i], step=step), i + 1
        return image


@part
class CropOrResize:
    """Deterministic: centre crop to ``size`` when larger, bilinear resize up when smaller."""

    size: int = static()

    def __call__(self, image, *, key=None, step=None):
        h, w = image.shape[:2]
        if h >= self.size and w >= self.size:
            top, left = (h - self.size) // 2, (w - self.size) // 2
            return image[top : top + self.size, left : left + self.size]
        return jax.image.resize(image, (self.size, self.size, image.shape[2]), method="linear")


def pad(n: int, mode: str = "reflect", *, value: float = 0.5) -> Pad:
    """Pads ``n`` pixels per side; output ``[H + 2n, W + 2n, 3]``.

    Args:
      n: pixels per side.
      mode: ``reflect`` (mirror the border) or ``constant`` (fill with ``value``; Lucid uses grey).
      value: fill value for ``constant``.
    """
    if mode not in ("reflect", "constant"):
        raise UsageError(f"unknown padding mode '{mode}' (choose reflect or constant)")
    return Pad(pixel_count(n, "pad"), mode, float(value))


def jitter(d: int) -> Jitter:
    """Random shift by 0..``d`` pixels as a random crop; output ``[H - d, W - d, 3]``."""
    return Jitter(pixel_count(d, "jitter"))


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
    if pixel_count(size, "size") == 0:
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


def maco_full(*, steps: int = 256, crops: int = 32, out: int | None = 224, sd: float = 0.04) -> Chain:
    """Xplique's MaCo crops as it runs them: :func:`scheduled_crop` (mean side 0.5 → 0.05 over ``steps``
    optimizer steps of ``crops`` passes each) resized to ``out``, then :func:`noise`."""
    return chain(scheduled_crop(0.5, 0.05, steps=steps, crops=crops, out=out), noise(sd))


def at_steps(transform, steps: int, crops: int | None = None):
    """``transform`` with every scheduled part (one with an ``at_steps`` method) spread over ``steps``
    optimizer steps of ``crops`` passes each (``None``: as it is); other transforms are returned as they are."""
    if isinstance(transform, Chain):
        return Chain(tuple(at_steps(t, steps, crops) for t in transform.transforms), transform.fuse)
    return transform.at_steps(steps, crops) if hasattr(transform, "at_steps") else transform
