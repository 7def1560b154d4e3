"""The anchors' own transforms: MaCo's random crop and noise, DeepInversion's roll and flip, Lucent's upsampling.

Each is a frozen dataclass satisfying :class:`jaxviz.image.transforms.Transform`; the presets that
combine them (``transforms.lucid``, ``maco``, ``deepinversion``) live in :mod:`jaxviz.image.transforms`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.image.resample import bilinear

__all__ = ["RandomCrop", "ScheduledCrop", "scheduled_crop", "Noise", "RandomFlip", "Roll", "Upsample", "random_crop", "noise", "random_flip", "roll",
           "upsample_to", "pixel_count"]


def pixel_count(value, what: str) -> int:
    """``value`` checked as a non-negative integer number of pixels."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{what} must be a non-negative integer number of pixels, got {value!r}")
    return value


@part
class RandomCrop:
    """Random square crop, resized (bilinear) to ``out`` × ``out`` (``None``: the input side).

    The crop side is a fraction of the image side drawn uniformly from ``side``; its centre is
    ``0.5 + N(0, centre_sd)`` of the image in each axis, clipped so the crop stays inside the
    image. Not fused with its neighbours (its zoom depends on the input size).
    """

    side: tuple[float, float] = static((0.6, 1.0))
    out: int | None = static(None)
    centre_sd: float = static(0.15)

    affine = False  # not fusable: see the class docstring

    def draw(self, hw, *, key):
        """``(out, step, t)``: output side, and output pixel ``q`` samples the input at ``q * step + t``."""
        h, w = hw
        out = self.out or h
        k_side, k_centre = jax.random.split(key)
        side = jax.random.uniform(k_side, (), jnp.float32, *self.side)
        centre = jnp.clip(0.5 + self.centre_sd * jax.random.normal(k_centre, (2,)), side / 2, 1 - side / 2)
        # output pixel q samples the input at top-left + (q + 0.5) * step - 0.5 (pixel centres)
        step = side * jnp.asarray([h, w], jnp.float32) / out
        return out, step, (centre - side / 2) * jnp.asarray([h, w], jnp.float32) + 0.5 * step - 0.5

    def __call__(self, image, *, key, step=None):
        out, step, t = self.draw(image.shape[:2], key=key)
        M = jnp.diag(step)
        return bilinear(image, jax.lax.stop_gradient(M), jax.lax.stop_gradient(t), (out, out), None)


@part
class ScheduledCrop:
    """A random square crop whose side shrinks over the render (Xplique's MaCo), resized to ``out``.

    At optimizer step ``i = pass // crops`` (the ``step`` argument counts passes) the crop side, as a
    fraction of the image side, is ``N(mean_i, sd)`` clipped to ``[low, 1]``, where ``mean_i`` goes
    linearly from ``start`` at step 0 to ``end`` at step ``steps - 1`` (and stays there after). Its
    centre is ``0.5 + N(0, centre_sd)`` in each axis, clipped so the crop stays inside the image.
    ``step=None`` (outside a render) draws at step 0. :meth:`at_steps` rescales the schedule
    (``Recipe.at_budget`` does).
    """

    start: float = static(0.5)
    end: float = static(0.05)
    steps: int = static(256)
    crops: int = static(1)
    sd: float = static(0.05)
    low: float = static(0.05)
    out: int | None = static(None)
    centre_sd: float = static(0.15)

    affine = False  # its zoom depends on the step: never fused

    def mean_side(self, step) -> jax.Array:
        """The mean crop side (a fraction of the image side) at pass ``step``."""
        i = jnp.asarray(0 if step is None else step, jnp.int32) // self.crops
        frac = jnp.clip(i.astype(jnp.float32) / max(self.steps - 1, 1), 0.0, 1.0)
        return self.start + (self.end - self.start) * frac

    def at_steps(self, steps: int, crops: int | None = None) -> "ScheduledCrop":
        """The same schedule spread over ``steps`` optimizer steps (of ``crops`` passes; default as it is)."""
        return dataclasses.replace(self, steps=max(1, int(steps)), crops=self.crops if crops is None else max(1, int(crops)))

    def __call__(self, image, *, key, step=None):
        h, w = image.shape[:2]
        out = self.out or h
        k_side, k_centre = jax.random.split(key)
        side = jnp.clip(self.mean_side(step) + self.sd * jax.random.normal(k_side, (), jnp.float32), self.low, 1.0)
        centre = jnp.clip(0.5 + self.centre_sd * jax.random.normal(k_centre, (2,)), side / 2, 1 - side / 2)
        scale = side * jnp.asarray([h, w], jnp.float32) / out
        t = (centre - side / 2) * jnp.asarray([h, w], jnp.float32) + 0.5 * scale - 0.5
        return bilinear(image, jax.lax.stop_gradient(jnp.diag(scale)), jax.lax.stop_gradient(t), (out, out), None)


@part
class Noise:
    """Adds ``N(0, sd)`` and ``U(-sd/2, sd/2)`` noise to every pixel (Xplique's MaCo)."""

    sd: float = static()

    def __call__(self, image, *, key, step=None):
        k_normal, k_uniform = jax.random.split(key)
        return (image + self.sd * jax.random.normal(k_normal, image.shape, image.dtype)
                + jax.random.uniform(k_uniform, image.shape, image.dtype, -self.sd / 2, self.sd / 2))


@part
class RandomFlip:
    """Mirrors the image left-right with probability 1/2."""

    def __call__(self, image, *, key, step=None):
        return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


@part
class Roll:
    """Circular shift by ``-d..d`` pixels in each direction (DeepInversion's ``torch.roll``); same shape."""

    d: int = static()

    def __call__(self, image, *, key, step=None):
        dy, dx = jax.random.randint(key, (2,), -self.d, self.d + 1)
        return jnp.roll(image, (dy, dx), axis=(0, 1))


@part
class Upsample:
    """Bilinear resize to ``size`` × ``size`` of an image smaller than that; larger ones pass as they are.

    Lucent's ``render_vis`` does this to every image under 224 px before the model.
    """

    size: int = static()

    def __call__(self, image, *, key=None, step=None):
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
    if out is not None and pixel_count(out, "out") == 0:
        raise UsageError("out must be positive")
    if not centre_sd >= 0:
        raise UsageError(f"centre_sd must be >= 0, got {centre_sd}")
    return RandomCrop(_fraction_pair(side), out, float(centre_sd))


def scheduled_crop(start: float = 0.5, end: float = 0.05, *, steps: int = 256, crops: int = 1, sd: float = 0.05,
                   low: float = 0.05, out: int | None = None, centre_sd: float = 0.15) -> ScheduledCrop:
    """A :class:`ScheduledCrop` (Xplique's MaCo defaults: mean side 0.5 → 0.05 over 256 steps, sd 0.05)."""
    if not (0 < low <= 1 and 0 < start <= 1 and 0 < end <= 1):
        raise UsageError(f"scheduled_crop sides must be fractions in (0, 1], got start={start}, end={end}, low={low}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or isinstance(crops, bool) \
            or not isinstance(crops, int) or crops < 1:
        raise UsageError(f"scheduled_crop steps and crops must be integers >= 1, got {steps}, {crops}")
    if not (sd >= 0 and centre_sd >= 0):
        raise UsageError(f"scheduled_crop sd and centre_sd must be >= 0, got {sd}, {centre_sd}")
    if out is not None and pixel_count(out, "out") == 0:
        raise UsageError("out must be positive")
    return ScheduledCrop(float(start), float(end), steps, crops, float(sd), float(low), out, float(centre_sd))


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
    return Roll(pixel_count(d, "roll"))


def upsample_to(size: int) -> Upsample:
    """An :class:`Upsample` to ``size``."""
    if pixel_count(size, "size") == 0:
        raise UsageError("size must be positive")
    return Upsample(size)
