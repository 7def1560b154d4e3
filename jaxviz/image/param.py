"""Image parameterizations: what the optimizer changes, and how it becomes an RGB image.

A parameterization is any object that satisfies the :class:`Parameterization` protocol: two pure
methods for ONE image, ``init(*, key, size) -> params`` and ``to_image(params) -> [size, size, 3]``
float32 in ``[0, 1]`` (jittable, differentiable; the size is read from the params' static shape).
Vmap them for batches. The built-in ones are frozen pytree dataclasses (:func:`jaxviz.common.pytree.part`), so
they compare and print by value and travel through ``jit`` as arguments; a user's own is just another such object.

- :func:`pixel`: one value per pixel and channel, squashed by a sigmoid (or clipped, DeepInversion).
- :func:`fourier`: Lucid-style. Real/imaginary parts of an ``rfft2`` spectrum, scaled by
  ``1 / f^decay`` so that every frequency band moves at a similar speed under gradient steps, then
  ``irfft2``, colour decorrelation and a sigmoid. By default the scale is normalized to unit RMS;
  ``fourier(normalize=False, gain=0.25, color="lucid")`` is Lucid/Lucent's exact recipe (their
  unnormalized scale, image divided by 4, their colour matrix :data:`LUCID_COLOR`).
- :func:`maco`: MaCo (Fel et al., 2023). Only the phase is optimized; the magnitude of every
  frequency is fixed to the magnitude spectrum of real photos, :func:`maco_magnitude`: the
  root-mean-square spectrum of the ImageNet sample (one photo per class), shipped as
  ``assets/maco_spectrum.npz`` (made by ``scripts/maco_spectrum.py``; see :func:`photo_spectrum`).

Colour decorrelation: :mod:`jaxviz.image.color`; the photos' spectrum: :mod:`jaxviz.image.spectrum`.

MaCo colour handling: with ``decorrelate=True`` (default) the spectra are measured, and the phases
optimized, per channel of the decorrelated space ``z``, then mapped to RGB with ``COLOR_SQRT``;
independent phases in a decorrelated basis then give images with the photos' colour covariance.
With ``decorrelate=False`` each RGB channel has its own measured spectrum and phase. The DC term is
fixed: the mean colour is the ImageNet sample's (stored with the spectrum). MaCo values are mapped
to ``[0, 1]`` with ``sigmoid(4 (x - 0.5))``, a soft clip with slope 1 at mid-grey, so in-range
values keep the photos' contrast.

"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxviz.common.pytree import part, static
from jaxviz.image.color import (
    COLOR_MEAN,
    COLOR_SQRT,
    COLORS,
    LUCID_COLOR,
    color_stats,
    decorrelated_to_rgb,
    rgb_to_decorrelated,
    spectrum_to_rgb,
)
from jaxviz.image.spectrum import MACO_SPECTRUM_PATH, irfft2, maco_magnitude, maco_mean, photo_spectrum, spectrum_scale

__all__ = [
    "Parameterization", "Pixel", "Fourier", "Maco", "pixel", "fourier", "maco",
    "COLOR_SQRT", "COLOR_MEAN", "LUCID_COLOR", "COLORS", "color_stats", "maco_magnitude", "maco_mean",
    "photo_spectrum", "MACO_SPECTRUM_PATH", "SeededPhase",
]


@runtime_checkable
class Parameterization(Protocol):
    """What :func:`jaxviz.render.render_images` needs of a parameterization (pure, for one image).

    Make it a pytree (:func:`jaxviz.common.pytree.part`): the render programs take it as an argument.
    """

    def init(self, *, key: jax.Array, size: int) -> Any:
        """Initial parameters (a pytree) of one ``size × size`` image."""

    def to_image(self, params: Any) -> jax.Array:
        """``[size, size, 3]`` float32 in ``[0, 1]``; differentiable in ``params``."""

    def inverse(self, image: jax.Array) -> Any:
        """Params with ``to_image(inverse(image)) ≈ image`` (to start from a photo: ``init_images=``);
        raise ``NotImplementedError`` where there is none."""


@part
class Pixel:
    """One free value per pixel and channel; params are ``[size, size, 3]`` float32.

    Attributes:
      sd: standard deviation of the initial values (the image starts as mid-grey plus noise).
      decorrelate: optimize in the decorrelated colour space (see the module docstring).
      squash: ``sigmoid`` (params are logits) or ``clip`` (params are the image itself, clipped to
        ``[0, 1]``; pair it with an optimizer that projects the params into the box, as
        DeepInversion does, see :func:`jaxviz.recipes.project_box`).
    """

    sd: float = static(0.01)
    decorrelate: bool = static(False)
    squash: str = static("sigmoid")

    def init(self, *, key, size):
        noise = self.sd * jax.random.normal(key, (size, size, 3), jnp.float32)
        return noise + 0.5 if self.squash == "clip" else noise

    def to_image(self, params):
        x = decorrelated_to_rgb(params, self.decorrelate)
        return jnp.clip(x, 0.0, 1.0) if self.squash == "clip" else jax.nn.sigmoid(x)

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        values = image if self.squash == "clip" else _logit(image)  # clip: the params are the image
        return rgb_to_decorrelated(values) if self.decorrelate else values


def _choice(value, allowed, what: str) -> str:
    if value not in allowed:
        from jaxviz.common.errors import UsageError

        raise UsageError(f"unknown {what} {value!r} (choose {', '.join(allowed)})")
    return value


def pixel(*, sd: float = 0.01, decorrelate: bool = False, squash: str = "sigmoid") -> Pixel:
    """A :class:`Pixel` parameterization (see its attributes)."""
    return Pixel(float(sd), bool(decorrelate), _choice(squash, ("sigmoid", "clip"), "squash"))


@part
class Fourier:
    """Lucid-style spectrum; params are ``[size, size // 2 + 1, 3, 2]`` float32 (real, imag).

    ``image = sigmoid(gain · irfft2(scale · C spectrum))`` with ``C`` the colour matrix.

    Attributes:
      decay: exponent of the ``1 / f^decay`` spectrum scaling (0: white, pixel-like).
      decorrelate: map through the colour matrix before the sigmoid.
      sd: standard deviation of the initial real and imaginary parts.
      normalize: scale the spectrum weights to unit RMS (ours); ``False`` is Lucid's raw
        ``1 / max(f, 1/size)^decay``.
      gain: factor on the image before the sigmoid (Lucid: 1/4).
      color: ``photos`` (:data:`COLOR_SQRT`) or ``lucid`` (:data:`LUCID_COLOR`).
    """

    decay: float = static(1.0)
    decorrelate: bool = static(True)
    sd: float = static(0.01)
    normalize: bool = static(True)
    gain: float = static(1.0)
    color: str = static("photos")

    def init(self, *, key, size):
        return self.sd * jax.random.normal(key, (size, size // 2 + 1, 3, 2), jnp.float32)

    def to_image(self, params):
        size = params.shape[0]
        # the gain is linear, so it rides on the (static) spectrum weights for free
        scale = self.gain * spectrum_scale(size, float(self.decay), bool(self.normalize))
        spectrum = spectrum_to_rgb(params[..., 0], params[..., 1], self.decorrelate, self.color)
        return jax.nn.sigmoid(irfft2(spectrum * jnp.asarray(scale, jnp.float32)[:, :, None], size))

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        size = image.shape[0]
        spectrum = jnp.fft.rfft2(_logit(image), axes=(0, 1), norm="ortho")
        scale = self.gain * spectrum_scale(size, float(self.decay), bool(self.normalize))
        spectrum = spectrum / jnp.asarray(scale, jnp.float32)[:, :, None]
        real, imag = jnp.real(spectrum), jnp.imag(spectrum)
        if self.decorrelate:  # the colour mix is real and linear: undo it on both parts
            real, imag = rgb_to_decorrelated(real, self.color), rgb_to_decorrelated(imag, self.color)
        return jnp.stack([real, imag], axis=-1).astype(jnp.float32)


def fourier(*, decay: float = 1.0, decorrelate: bool = True, sd: float = 0.01, normalize: bool = True,
            gain: float = 1.0, color: str = "photos") -> Fourier:
    """A :class:`Fourier` parameterization (see its attributes).

    ``fourier(normalize=False, gain=0.25, color="lucid")`` is Lucid/Lucent's ``image(size)``.
    """
    return Fourier(float(decay), bool(decorrelate), float(sd), bool(normalize), float(gain),
                   _choice(color, tuple(COLORS), "color"))


@part
class Maco:
    """MaCo: phase-only spectrum with the photos' magnitude (see the module docstring).

    Params are phases ``[size, size // 2 + 1, 3]`` float32.

    Attributes:
      decorrelate: per-channel spectra in the decorrelated colour space (default) or in RGB.
      normalize_phase: standardize the phases before use (zero mean, and the spread of a uniform
        phase on ``[-π, π)``, std ``π/√3``), as Xplique's MaCo does: with its large learning rate
        (NAdam 1.0) the phases' spread grows, and standardizing turns that growth into a shrinking
        effective step. Xplique standardizes to std 1, which concentrates the phases near 0: then
        ``E cos φ ≈ 0.6`` and every frequency adds up in phase at the image corners, a bright cusp
        that saturates the sigmoid; the spread of a uniform phase has ``E cos φ = 0``.
    """

    decorrelate: bool = static(True)
    normalize_phase: bool = static(False)

    def init(self, *, key, size):
        return jax.random.uniform(key, (size, size // 2 + 1, 3), jnp.float32, -jnp.pi, jnp.pi)

    def to_image(self, params):
        if isinstance(params, SeededPhase):
            return self.seeded_image(params)
        size = params.shape[0]
        if self.normalize_phase:
            params = (params - params.mean()) * (jnp.pi / jnp.sqrt(3.0)) / (params.std() + 1e-5)
        magnitude = jnp.asarray(maco_magnitude(size, self.decorrelate))
        spectrum = spectrum_to_rgb(magnitude * jnp.cos(params), magnitude * jnp.sin(params), self.decorrelate)
        rgb = jnp.asarray(maco_mean()) + irfft2(spectrum, size)
        return jax.nn.sigmoid(4.0 * (rgb - 0.5))


    def inverse(self, image):
        """A :class:`SeededPhase` whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255).

        A phase alone cannot make an arbitrary photo: the photo's own magnitude spectrum (its mean
        colour included) is kept and fixed, and only its phase is optimized.
        """
        rgb = 0.5 + _logit(image) / 4.0 - jnp.asarray(COLOR_MEAN)
        z = rgb_to_decorrelated(rgb) if self.decorrelate else rgb
        spectrum = jnp.fft.rfft2(z, axes=(0, 1), norm="ortho")
        return SeededPhase(jnp.angle(spectrum).astype(jnp.float32), jnp.abs(spectrum).astype(jnp.float32))

    def seeded_image(self, params: "SeededPhase"):
        """``to_image`` of a :class:`SeededPhase`: its own magnitude and mean colour, no gradient to either."""
        size = params.phase.shape[0]
        magnitude = jax.lax.stop_gradient(params.magnitude)
        dc = jnp.zeros(params.phase.shape[:2], bool).at[0, 0].set(True)[..., None]
        phase = jnp.where(dc, jax.lax.stop_gradient(params.phase), params.phase)  # the mean colour stays
        spectrum = spectrum_to_rgb(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase), self.decorrelate)
        rgb = jnp.asarray(COLOR_MEAN) + irfft2(spectrum, size)
        return jax.nn.sigmoid(4.0 * (rgb - 0.5))


class SeededPhase(NamedTuple):
    """MaCo params from a photo (:meth:`Maco.inverse`): optimized ``phase`` and the photo's fixed ``magnitude``.

    Both are ``[size, size // 2 + 1, 3]`` float32; the DC term (mean colour) is fixed too.
    """

    phase: jax.Array
    magnitude: jax.Array


def _logit(image) -> jax.Array:
    """Inverse sigmoid of ``[0, 1]`` values, clipped half a grey level inside (finite, error ≤ 0.5/255)."""
    x = jnp.clip(jnp.asarray(image, jnp.float32), 0.5 / 255.0, 1.0 - 0.5 / 255.0)
    return jnp.log(x) - jnp.log1p(-x)


def maco(*, decorrelate: bool = True, normalize_phase: bool = False) -> Maco:
    """A :class:`Maco` parameterization (see its attributes)."""
    return Maco(bool(decorrelate), bool(normalize_phase))
