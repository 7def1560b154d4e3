"""Image parameterizations: what the optimizer changes, and how it becomes an RGB image.

A parameterization is any object that satisfies the :class:`Parameterization` protocol: two pure
methods for ONE image, ``init(*, key, size) -> params`` and ``to_image(params) -> [size, size, 3]``
float32 in ``[0, 1]`` (jittable, differentiable; the size is read from the params' static shape).
Vmap them for batches. The built-in ones are frozen dataclasses, so they compare and print by value
(their ``repr`` identifies a run in checkpoints); a user's own is just another such object.

- :func:`pixel`: one logit per pixel and channel, squashed by a sigmoid.
- :func:`fourier`: Lucid-style. Real/imaginary parts of an ``rfft2`` spectrum, scaled by
  ``1 / f^decay`` so that every frequency band moves at a similar speed under gradient steps, then
  ``irfft2``, colour decorrelation and a sigmoid.
- :func:`maco`: MaCo (Fel et al., 2023). Only the phase is optimized; the magnitude of every
  frequency is fixed to the average magnitude spectrum of the embedded natural photos at that size
  (computed on first use, cached per size; nothing is downloaded). Each photo contributes the mean
  over its views: the whole photo resized to the size, and its four corner crops at native
  resolution; the border cross of the FFT is removed first (periodic + smooth decomposition).

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

MaCo colour handling: with ``decorrelate=True`` (default) the spectra are measured, and the phases
optimized, per channel of the decorrelated space ``z``, then mapped to RGB with ``COLOR_SQRT``;
independent phases in a decorrelated basis then give images with the photos' colour covariance.
With ``decorrelate=False`` each RGB channel has its own measured spectrum and phase (the original
MaCo recipe). The DC term is fixed: the mean colour is ``COLOR_MEAN``. MaCo values are mapped to
``[0, 1]`` with ``sigmoid(4 (x - 0.5))``, a soft clip with slope 1 at mid-grey, so in-range
values keep the photos' contrast.
"""

from __future__ import annotations

import functools
import dataclasses
from typing import Any, Iterable, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


__all__ = [
    "Parameterization", "Pixel", "Fourier", "Maco", "pixel", "fourier", "maco", "get", "PARAMETERIZATIONS",
    "COLOR_SQRT", "COLOR_MEAN", "color_stats", "maco_magnitude", "SeededPhase",
]

# Written by scripts/color_stats.py from jaxviz.data.embedded_photos(); tests/test_param.py
# recomputes them.
COLOR_SQRT = np.array([
    [0.898404, 0.373089, 0.231676],
    [0.373089, 0.564215, 0.437801],
    [0.231676, 0.437801, 0.647080],
], np.float32)
COLOR_MEAN = np.array([0.464229, 0.363925, 0.320417], np.float32)


@runtime_checkable
class Parameterization(Protocol):
    """What :func:`jaxviz.render.render` needs of a parameterization (pure, for one image).

    Optional: ``inverse(image [size, size, 3]) -> params`` with ``to_image(inverse(x)) ≈ x``, needed
    to start from a photo (``render(..., init_images=...)``); the built-in ones have it.
    """

    def init(self, *, key: jax.Array, size: int) -> Any:
        """Initial parameters (a pytree) of one ``size × size`` image."""

    def to_image(self, params: Any) -> jax.Array:
        """``[size, size, 3]`` float32 in ``[0, 1]``; differentiable in ``params``."""


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


def _mix(z: jax.Array, matrix: np.ndarray) -> jax.Array:
    """``z @ matrix.T`` over the last axis, as broadcast multiply-adds (fused elementwise code)."""
    return sum(z[..., j : j + 1] * jnp.asarray(matrix[:, j], z.dtype) for j in range(matrix.shape[1]))


@jax.custom_vjp
def _to_rgb(z: jax.Array) -> jax.Array:
    return _mix(z, COLOR_SQRT)


# the transpose is the same mix with COLOR_SQRT.T (autodiff would emit reductions over the channels)
_to_rgb.defvjp(lambda z: (_mix(z, COLOR_SQRT), None), lambda _, g: (_mix(g, COLOR_SQRT.T),))


def _decorrelate(z: jax.Array, on: bool) -> jax.Array:
    """Decorrelated colour -> RGB, on an image ``[..., 3]``."""
    # a [H·W, 3] x [3, 3] dot (slow on XLA-CPU, ~0.6 ms at 224 px) but a fusion barrier: the
    # elementwise mix reads every channel three times, and XLA would fuse the gradient's producers
    # (the transforms' gathers) into it and recompute them per channel (8 ms)
    return z @ jnp.asarray(COLOR_SQRT).T if on else z


def _spectrum_to_rgb(real: jax.Array, imag: jax.Array, on: bool) -> jax.Array:
    """Decorrelated colour -> RGB on a spectrum's real and imaginary parts ``[..., 3]``, as complex.

    The mix is linear and real, so it commutes with the inverse FFT: applied to the spectrum it is
    separated from the image-side gradient by the FFT (no fusion trouble) and runs as cheap
    elementwise code.
    """
    if on:
        real, imag = _to_rgb(real), _to_rgb(imag)
    return jax.lax.complex(real, imag)


@dataclasses.dataclass(frozen=True)
class Pixel:
    """One free logit per pixel and channel; params are ``[size, size, 3]`` float32.

    Attributes:
      sd: standard deviation of the initial logits (the image starts as grey with faint noise).
      decorrelate: optimize in the decorrelated colour space (see the module docstring).
    """

    sd: float = 0.01
    decorrelate: bool = False

    def init(self, *, key, size):
        return self.sd * jax.random.normal(key, (size, size, 3), jnp.float32)

    def to_image(self, params):
        return jax.nn.sigmoid(_decorrelate(params, self.decorrelate))

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        logits = _logit(image)
        return _undecorrelate(logits) if self.decorrelate else logits


def pixel(*, sd: float = 0.01, decorrelate: bool = False) -> Pixel:
    """A :class:`Pixel` parameterization (see its attributes)."""
    return Pixel(float(sd), bool(decorrelate))


def _frequencies(size: int) -> np.ndarray:
    """|f| in cycles per pixel on the rfft2 grid ``[size, size // 2 + 1]``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.sqrt(fx**2 + fy**2)


@functools.lru_cache(maxsize=16)
def _spectrum_scale(size: int, decay: float) -> np.ndarray:
    # 1/f^decay, with the DC term treated as the lowest non-zero frequency; normalized to unit RMS so
    # that the image's initial contrast and step size do not depend on size or decay
    scale = 1.0 / np.maximum(_frequencies(size), 1.0 / size) ** decay
    return (scale / np.sqrt(np.mean(scale**2))).astype(np.float32)


def _irfft2(spectrum: jax.Array, size: int) -> jax.Array:
    # explicit s=: the rfft grid alone cannot tell an even from an odd side
    return jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho")


@dataclasses.dataclass(frozen=True)
class Fourier:
    """Lucid-style spectrum; params are ``[size, size // 2 + 1, 3, 2]`` float32 (real, imag).

    Attributes:
      decay: exponent of the ``1 / f^decay`` spectrum scaling (0: white, pixel-like).
      decorrelate: map through ``COLOR_SQRT`` before the sigmoid.
      sd: standard deviation of the initial real and imaginary parts.
    """

    decay: float = 1.0
    decorrelate: bool = True
    sd: float = 0.01

    def init(self, *, key, size):
        return self.sd * jax.random.normal(key, (size, size // 2 + 1, 3, 2), jnp.float32)

    def to_image(self, params):
        size = params.shape[0]
        scale = jnp.asarray(_spectrum_scale(size, float(self.decay)))[:, :, None]
        spectrum = _spectrum_to_rgb(params[..., 0], params[..., 1], self.decorrelate) * scale
        return jax.nn.sigmoid(_irfft2(spectrum, size))

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        size = image.shape[0]
        spectrum = jnp.fft.rfft2(_logit(image), axes=(0, 1), norm="ortho")
        spectrum = spectrum / jnp.asarray(_spectrum_scale(size, float(self.decay)))[:, :, None]
        real, imag = jnp.real(spectrum), jnp.imag(spectrum)
        if self.decorrelate:  # the colour mix is real and linear: undo it on both parts
            real, imag = _undecorrelate(real), _undecorrelate(imag)
        return jnp.stack([real, imag], axis=-1).astype(jnp.float32)


def fourier(*, decay: float = 1.0, decorrelate: bool = True, sd: float = 0.01) -> Fourier:
    """A :class:`Fourier` parameterization (see its attributes)."""
    return Fourier(float(decay), bool(decorrelate), float(sd))


def _views(photo: np.ndarray, size: int) -> list[np.ndarray]:
    """The whole photo resized to ``size``, plus (when large enough) its 4 native-resolution corners."""
    from jaxviz.images import resize_center_crop

    views = [resize_center_crop(photo, size)]
    h, w = photo.shape[:2]
    if min(h, w) >= size:
        # native-resolution crops keep the fine detail that resizing the whole photo blurs away
        views += [photo[t : t + size, l : l + size] for t in (0, h - size) for l in (0, w - size)]
    return views


def _periodic(x: np.ndarray) -> np.ndarray:
    """Periodic component of ``x [H, W, C]`` (Moisan's periodic + smooth decomposition).

    The FFT treats an image as tiled; a photo's mismatched opposite borders then add a bright cross
    along the frequency axes, which random phases would turn into a grid texture. Subtracting the
    smooth component that carries those border jumps removes the cross and keeps the rest.
    """
    h, w = x.shape[:2]
    v = np.zeros_like(x)
    v[0] += x[-1] - x[0]
    v[-1] += x[0] - x[-1]
    v[:, 0] += x[:, -1] - x[:, 0]
    v[:, -1] += x[:, 0] - x[:, -1]
    denom = (2 * np.cos(2 * np.pi * np.fft.fftfreq(h))[:, None]
             + 2 * np.cos(2 * np.pi * np.fft.fftfreq(w))[None, :] - 4)
    denom[0, 0] = 1.0  # the smooth part has zero mean
    smooth_hat = np.fft.fft2(v, axes=(0, 1)) / denom[..., None]
    smooth_hat[0, 0] = 0.0
    return x - np.real(np.fft.ifft2(smooth_hat, axes=(0, 1)))


@functools.lru_cache(maxsize=8)
def maco_magnitude(size: int, decorrelate: bool = True) -> np.ndarray:
    """Average magnitude spectrum of the embedded photos at ``size`` (cached per size).

    Args:
      size: image side.
      decorrelate: measure in the decorrelated colour space (else per RGB channel).

    Returns:
      ``[size, size // 2 + 1, 3]`` float32, ``norm="ortho"`` units, DC term 0.
    """
    from jaxviz.data import embedded_photos

    inverse = np.linalg.inv(COLOR_SQRT.astype(np.float64)) if decorrelate else np.eye(3)
    per_photo = []
    for photo in embedded_photos().values():
        mags = []
        for view in _views(photo, size):
            x = view.astype(np.float64) / 255.0
            z = _periodic(x - x.mean((0, 1))) @ inverse.T
            mags.append(np.abs(np.fft.rfft2(z, axes=(0, 1), norm="ortho")))
        per_photo.append(np.mean(mags, 0))
    magnitude = np.mean(per_photo, 0)
    magnitude[0, 0] = 0.0  # the mean colour is fixed separately (COLOR_MEAN)
    return magnitude.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Maco:
    """MaCo: phase-only spectrum with the photos' average magnitude (see the module docstring).

    Params are phases ``[size, size // 2 + 1, 3]`` float32.

    Attributes:
      decorrelate: per-channel spectra in the decorrelated colour space (default) or in RGB.
    """

    decorrelate: bool = True

    def init(self, *, key, size):
        return jax.random.uniform(key, (size, size // 2 + 1, 3), jnp.float32, -jnp.pi, jnp.pi)

    def to_image(self, params):
        if isinstance(params, SeededPhase):
            return self.seeded_image(params)
        size = params.shape[0]
        magnitude = jnp.asarray(maco_magnitude(size, self.decorrelate))
        spectrum = _spectrum_to_rgb(magnitude * jnp.cos(params), magnitude * jnp.sin(params), self.decorrelate)
        rgb = jnp.asarray(COLOR_MEAN) + _irfft2(spectrum, size)
        return jax.nn.sigmoid(4.0 * (rgb - 0.5))


    def inverse(self, image):
        """A :class:`SeededPhase` whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255).

        A phase alone cannot make an arbitrary photo: the photo's own magnitude spectrum (its mean
        colour included) is kept and fixed, and only its phase is optimized.
        """
        rgb = 0.5 + _logit(image) / 4.0 - jnp.asarray(COLOR_MEAN)
        z = _undecorrelate(rgb) if self.decorrelate else rgb
        spectrum = jnp.fft.rfft2(z, axes=(0, 1), norm="ortho")
        return SeededPhase(jnp.angle(spectrum).astype(jnp.float32), jnp.abs(spectrum).astype(jnp.float32))

    def seeded_image(self, params: "SeededPhase"):
        """``to_image`` of a :class:`SeededPhase`: its own magnitude and mean colour, no gradient to either."""
        size = params.phase.shape[0]
        magnitude = jax.lax.stop_gradient(params.magnitude)
        dc = jnp.zeros(params.phase.shape[:2], bool).at[0, 0].set(True)[..., None]
        phase = jnp.where(dc, jax.lax.stop_gradient(params.phase), params.phase)  # the mean colour stays
        spectrum = _spectrum_to_rgb(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase), self.decorrelate)
        rgb = jnp.asarray(COLOR_MEAN) + _irfft2(spectrum, size)
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


def _undecorrelate(rgb: jax.Array) -> jax.Array:
    """Inverse of the colour decorrelation map ``z -> z @ COLOR_SQRT.T`` on ``[..., 3]``."""
    return rgb @ jnp.asarray(np.linalg.inv(COLOR_SQRT.astype(np.float64)).T.astype(np.float32))


def maco(*, decorrelate: bool = True) -> Maco:
    """A :class:`Maco` parameterization (see its attributes)."""
    return Maco(bool(decorrelate))


PARAMETERIZATIONS = {"pixel": pixel, "fourier": fourier, "maco": maco}


def get(name: str, **kwargs) -> Parameterization:
    """The parameterization called ``name`` (``pixel``, ``fourier`` or ``maco``) built with ``kwargs``.

    Raises:
      UsageError: unknown name or options.
    """
    from jaxviz import registry

    return registry.build("parameterization", name, **kwargs)
