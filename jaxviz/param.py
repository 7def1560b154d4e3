"""Image parameterizations: what the optimizer changes, and how it becomes an RGB image.

A parameterization is any object that satisfies the :class:`Parameterization` protocol: two pure
methods for ONE image, ``init(*, key, size) -> params`` and ``to_image(params) -> [size, size, 3]``
float32 in ``[0, 1]`` (jittable, differentiable; the size is read from the params' static shape).
Vmap them for batches. The built-in ones are frozen dataclasses, so they compare and print by value
(their ``repr`` identifies a run in checkpoints); a user's own is just another such object.

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
With ``decorrelate=False`` each RGB channel has its own measured spectrum and phase. The DC term is
fixed: the mean colour is the ImageNet sample's (stored with the spectrum). MaCo values are mapped
to ``[0, 1]`` with ``sigmoid(4 (x - 0.5))``, a soft clip with slope 1 at mid-grey, so in-range
values keep the photos' contrast.

Why the magnitude is the *RMS* spectrum of photos resized whole to the size: by Parseval, an image
with that magnitude and any phase has exactly the photos' mean contrast (per-pixel variance). The
earlier asset, the *mean* magnitude of the 10 embedded photos over native-resolution corner crops,
gave images with a third of the photos' contrast (pixel std 0.078 vs 0.22) around their brown mean
colour (0.46, 0.36, 0.32): the uniformly brown, low-contrast MaCo images of earlier versions. The
decorrelated spectra depend on ``COLOR_SQRT`` (recorded in the asset): rerun the script if it changes.
"""

from __future__ import annotations

import functools
import dataclasses
import os
from typing import Any, Iterable, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np


__all__ = [
    "Parameterization", "Pixel", "Fourier", "Maco", "pixel", "fourier", "maco", "get", "PARAMETERIZATIONS",
    "COLOR_SQRT", "COLOR_MEAN", "LUCID_COLOR", "COLORS", "color_stats", "maco_magnitude", "maco_mean",
    "photo_spectrum", "MACO_SPECTRUM_PATH", "SeededPhase",
]

# Written by scripts/color_stats.py from jaxviz.data.embedded_photos(); tests/test_param.py
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

MACO_SPECTRUM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "maco_spectrum.npz")


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


@functools.lru_cache(maxsize=None)
def _mixer(color: str):
    """``z -> z @ COLORS[color].T`` with a hand-written transpose (autodiff would emit reductions)."""
    matrix = COLORS[color]

    @jax.custom_vjp
    def mix(z):
        return _mix(z, matrix)

    mix.defvjp(lambda z: (_mix(z, matrix), None), lambda _, g: (_mix(g, matrix.T),))
    return mix


_to_rgb = _mixer("photos")


def _decorrelate(z: jax.Array, on: bool) -> jax.Array:
    """Decorrelated colour -> RGB, on an image ``[..., 3]``."""
    # a [H·W, 3] x [3, 3] dot (slow on XLA-CPU, ~0.6 ms at 224 px) but a fusion barrier: the
    # elementwise mix reads every channel three times, and XLA would fuse the gradient's producers
    # (the transforms' gathers) into it and recompute them per channel (8 ms)
    return z @ jnp.asarray(COLOR_SQRT).T if on else z


def _spectrum_to_rgb(real: jax.Array, imag: jax.Array, on: bool, color: str = "photos") -> jax.Array:
    """Decorrelated colour -> RGB on a spectrum's real and imaginary parts ``[..., 3]``, as complex.

    The mix is linear and real, so it commutes with the inverse FFT: applied to the spectrum it is
    separated from the image-side gradient by the FFT (no fusion trouble) and runs as cheap
    elementwise code.
    """
    if on:
        real, imag = _mixer(color)(real), _mixer(color)(imag)
    return jax.lax.complex(real, imag)


@dataclasses.dataclass(frozen=True)
class Pixel:
    """One free value per pixel and channel; params are ``[size, size, 3]`` float32.

    Attributes:
      sd: standard deviation of the initial values (the image starts as mid-grey plus noise).
      decorrelate: optimize in the decorrelated colour space (see the module docstring).
      squash: ``sigmoid`` (params are logits) or ``clip`` (params are the image itself, clipped to
        ``[0, 1]``; pair it with an optimizer that projects the params into the box, as
        DeepInversion does, see :func:`jaxviz.recipes.project_box`).
    """

    sd: float = 0.01
    decorrelate: bool = False
    squash: str = "sigmoid"

    def init(self, *, key, size):
        noise = self.sd * jax.random.normal(key, (size, size, 3), jnp.float32)
        return noise + 0.5 if self.squash == "clip" else noise

    def to_image(self, params):
        x = _decorrelate(params, self.decorrelate)
        return jnp.clip(x, 0.0, 1.0) if self.squash == "clip" else jax.nn.sigmoid(x)

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        values = image if self.squash == "clip" else _logit(image)  # clip: the params are the image
        return _undecorrelate(values) if self.decorrelate else values


def _choice(value, allowed, what: str) -> str:
    if value not in allowed:
        from jaxviz.errors import UsageError

        raise UsageError(f"unknown {what} {value!r} (choose {', '.join(allowed)})")
    return value


def pixel(*, sd: float = 0.01, decorrelate: bool = False, squash: str = "sigmoid") -> Pixel:
    """A :class:`Pixel` parameterization (see its attributes)."""
    return Pixel(float(sd), bool(decorrelate), _choice(squash, ("sigmoid", "clip"), "squash"))


def _frequencies(size: int) -> np.ndarray:
    """|f| in cycles per pixel on the rfft2 grid ``[size, size // 2 + 1]``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.sqrt(fx**2 + fy**2)


@functools.lru_cache(maxsize=16)
def _spectrum_scale(size: int, decay: float, normalize: bool = True) -> np.ndarray:
    # 1/f^decay, with the DC term treated as the lowest non-zero frequency (Lucid's formula).
    # normalize: divide by the RMS so that the image's initial contrast and step size do not depend
    # on size or decay; Lucid does not (its DC gain is then `size`, hence its image / 4)
    scale = 1.0 / np.maximum(_frequencies(size), 1.0 / size) ** decay
    if normalize:
        scale = scale / np.sqrt(np.mean(scale**2))
    return scale.astype(np.float32)


def _irfft2(spectrum: jax.Array, size: int) -> jax.Array:
    # explicit s=: the rfft grid alone cannot tell an even from an odd side
    return jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho")


@dataclasses.dataclass(frozen=True)
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

    decay: float = 1.0
    decorrelate: bool = True
    sd: float = 0.01
    normalize: bool = True
    gain: float = 1.0
    color: str = "photos"

    def init(self, *, key, size):
        return self.sd * jax.random.normal(key, (size, size // 2 + 1, 3, 2), jnp.float32)

    def to_image(self, params):
        size = params.shape[0]
        # the gain is linear, so it rides on the (static) spectrum weights for free
        scale = self.gain * _spectrum_scale(size, float(self.decay), bool(self.normalize))
        spectrum = _spectrum_to_rgb(params[..., 0], params[..., 1], self.decorrelate, self.color)
        return jax.nn.sigmoid(_irfft2(spectrum * jnp.asarray(scale, jnp.float32)[:, :, None], size))

    def inverse(self, image):
        """Params whose image is ``image`` ``[size, size, 3]`` in ``[0, 1]`` (within 0.5/255)."""
        size = image.shape[0]
        spectrum = jnp.fft.rfft2(_logit(image), axes=(0, 1), norm="ortho")
        scale = self.gain * _spectrum_scale(size, float(self.decay), bool(self.normalize))
        spectrum = spectrum / jnp.asarray(scale, jnp.float32)[:, :, None]
        real, imag = jnp.real(spectrum), jnp.imag(spectrum)
        if self.decorrelate:  # the colour mix is real and linear: undo it on both parts
            real, imag = _undecorrelate(real, self.color), _undecorrelate(imag, self.color)
        return jnp.stack([real, imag], axis=-1).astype(jnp.float32)


def fourier(*, decay: float = 1.0, decorrelate: bool = True, sd: float = 0.01, normalize: bool = True,
            gain: float = 1.0, color: str = "photos") -> Fourier:
    """A :class:`Fourier` parameterization (see its attributes).

    ``fourier(normalize=False, gain=0.25, color="lucid")`` is Lucid/Lucent's ``image(size)``.
    """
    return Fourier(float(decay), bool(decorrelate), float(sd), bool(normalize), float(gain),
                   _choice(color, tuple(COLORS), "color"))


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


def photo_spectrum(photos: Iterable[np.ndarray], size: int, *, decorrelate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Root-mean-square magnitude spectrum and mean colour of photos seen whole at ``size``.

    Each photo is resized (short side) and centre-cropped to ``size`` (the models' view), its mean
    colour removed, its border cross removed (:func:`_periodic`), and mapped to the decorrelated
    colour space (``z = rgb @ inv(COLOR_SQRT).T``) when ``decorrelate``.

    Args:
      photos: uint8 ``[H, W, 3]`` arrays.
      size: image side.
      decorrelate: measure in the decorrelated colour space (else per RGB channel).

    Returns:
      ``(magnitude [size, size // 2 + 1, 3], mean colour [3])`` in float64; ``norm="ortho"`` units
      (so ``Σ magnitude² / size²`` over the full grid is the mean per-pixel variance), DC term 0.
    """
    from jaxviz.images import resize_center_crop

    inverse = np.linalg.inv(COLOR_SQRT.astype(np.float64)) if decorrelate else np.eye(3)
    power, means = 0.0, []
    for photo in photos:
        x = resize_center_crop(np.asarray(photo), size).astype(np.float64) / 255.0
        means.append(x.mean((0, 1)))
        z = _periodic(x - means[-1]) @ inverse.T
        power = power + np.abs(np.fft.rfft2(z, axes=(0, 1), norm="ortho")) ** 2
    magnitude = np.sqrt(power / len(means))
    magnitude[0, 0] = 0.0  # the mean colour is fixed separately
    return magnitude, np.mean(means, 0)


@functools.lru_cache(maxsize=1)
def _spectrum_asset() -> dict:
    with np.load(MACO_SPECTRUM_PATH) as data:
        return {k: data[k] for k in data.files}


def maco_mean() -> np.ndarray:
    """Mean colour ``[3]`` of the photos the MaCo spectrum was measured on (MaCo's fixed DC term)."""
    return _spectrum_asset()["mean"].astype(np.float32)


def _power_law(magnitude: np.ndarray):
    """Per-channel fit ``A_c k^-alpha_c`` (k in cycles per image) of a stored rfft magnitude."""
    size = magnitude.shape[0]
    k = _frequencies(size) * size
    keep = (k >= 4) & (k <= size / 2)
    fits = []
    for c in range(magnitude.shape[-1]):
        slope, intercept = np.polyfit(np.log(k[keep]), np.log(magnitude[..., c][keep] + 1e-12), 1)
        fits.append((np.exp(intercept), -slope))
    return fits


@functools.lru_cache(maxsize=8)
def maco_magnitude(size: int, decorrelate: bool = True) -> np.ndarray:
    """The photos' magnitude spectrum at ``size`` (cached per size), see :func:`photo_spectrum`.

    Sizes stored in the asset are returned as measured. Other sizes use the smallest stored size
    ``S ≥ size`` at the same frequencies in cycles per image, times ``size / S`` (a photo shrunk
    from ``S`` to ``size`` keeps its cycles per image, and ortho units scale with the side);
    beyond the largest stored size, frequencies it lacks follow a per-channel power-law fit.

    Returns:
      ``[size, size // 2 + 1, 3]`` float32, ``norm="ortho"`` units, DC term 0.
    """
    asset = _spectrum_asset()
    prefix = "z" if decorrelate else "rgb"
    stored = sorted(int(k[len(prefix):]) for k in asset if k.startswith(prefix) and k[len(prefix):].isdigit())
    if size in stored:
        return asset[f"{prefix}{size}"].astype(np.float32)
    source_size = next((s for s in stored if s >= size), stored[-1])
    source = asset[f"{prefix}{source_size}"].astype(np.float64)
    ky = np.rint(np.fft.fftfreq(size) * size).astype(int)[:, None]   # signed cycles per image
    kx = np.arange(size // 2 + 1)[None, :]
    inside = (np.abs(ky) <= source_size // 2) & (kx <= source_size // 2)
    # the rfft grid holds kx ≥ 0 only; |F(-k)| = |F(k)| for real images
    out = source[np.where(inside, ky, 0) % source_size, np.where(inside, kx, 0)] * (size / source_size)
    if not inside.all():
        k = np.sqrt(ky.astype(np.float64) ** 2 + kx**2)
        for c, (amplitude, alpha) in enumerate(_power_law(source)):
            out[..., c] = np.where(inside, out[..., c], amplitude * np.maximum(k, 1) ** -alpha * (size / source_size))
    out[0, 0] = 0.0
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
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

    decorrelate: bool = True
    normalize_phase: bool = False

    def init(self, *, key, size):
        return jax.random.uniform(key, (size, size // 2 + 1, 3), jnp.float32, -jnp.pi, jnp.pi)

    def to_image(self, params):
        if isinstance(params, SeededPhase):
            return self.seeded_image(params)
        size = params.shape[0]
        if self.normalize_phase:
            params = (params - params.mean()) * (jnp.pi / jnp.sqrt(3.0)) / (params.std() + 1e-5)
        magnitude = jnp.asarray(maco_magnitude(size, self.decorrelate))
        spectrum = _spectrum_to_rgb(magnitude * jnp.cos(params), magnitude * jnp.sin(params), self.decorrelate)
        rgb = jnp.asarray(maco_mean()) + _irfft2(spectrum, size)
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


def _undecorrelate(rgb: jax.Array, color: str = "photos") -> jax.Array:
    """Inverse of the colour decorrelation map ``z -> z @ COLORS[color].T`` on ``[..., 3]``."""
    return rgb @ jnp.asarray(np.linalg.inv(COLORS[color].astype(np.float64)).T.astype(np.float32))


def maco(*, decorrelate: bool = True, normalize_phase: bool = False) -> Maco:
    """A :class:`Maco` parameterization (see its attributes)."""
    return Maco(bool(decorrelate), bool(normalize_phase))


PARAMETERIZATIONS = {"pixel": pixel, "fourier": fourier, "maco": maco}


def get(name: str, **kwargs) -> Parameterization:
    """The parameterization called ``name`` (``pixel``, ``fourier`` or ``maco``) built with ``kwargs``.

    Raises:
      UsageError: unknown name or options.
    """
    from jaxviz import registry

    return registry.build("parameterization", name, **kwargs)
