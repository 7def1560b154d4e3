"""Spectra: the 1/f scale of Fourier images and the magnitude spectrum of real photos (MaCo).

Why the magnitude is the *RMS* spectrum of photos resized whole to the size: by Parseval, an image
with that magnitude and any phase has exactly the photos' mean contrast (per-pixel variance). The
earlier asset, the *mean* magnitude of the 10 embedded photos over native-resolution corner crops,
gave images with a third of the photos' contrast (pixel std 0.078 vs 0.22) around their brown mean
colour (0.46, 0.36, 0.32): the uniformly brown, low-contrast MaCo images of earlier versions. The
decorrelated spectra depend on ``COLOR_SQRT`` (recorded in the asset): rerun the script if it changes.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.common import ASSETS
from jaxviz.image.color import COLOR_SQRT

__all__ = ["MACO_SPECTRUM_PATH", "frequencies", "spectrum_scale", "irfft2", "periodic", "photo_spectrum", "spectrum_asset",
           "maco_mean", "power_law", "maco_magnitude"]


MACO_SPECTRUM_PATH = os.path.join(ASSETS, "maco_spectrum.npz")


def frequencies(size: int) -> np.ndarray:
    """|f| in cycles per pixel on the rfft2 grid ``[size, size // 2 + 1]``."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.sqrt(fx**2 + fy**2)


@functools.lru_cache(maxsize=16)
def spectrum_scale(size: int, decay: float, normalize: bool = True) -> np.ndarray:
    # 1/f^decay, with the DC term treated as the lowest non-zero frequency (Lucid's formula).
    # normalize: divide by the RMS so that the image's initial contrast and step size do not depend
    # on size or decay; Lucid does not (its DC gain is then `size`, hence its image / 4)
    scale = 1.0 / np.maximum(frequencies(size), 1.0 / size) ** decay
    if normalize:
        scale = scale / np.sqrt(np.mean(scale**2))
    return scale.astype(np.float32)


def irfft2(spectrum: jax.Array, size: int) -> jax.Array:
    # explicit s=: the rfft grid alone cannot tell an even from an odd side
    return jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho")


def periodic(x: np.ndarray) -> np.ndarray:
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
    colour removed, its border cross removed (:func:`periodic`), and mapped to the decorrelated
    colour space (``z = rgb @ inv(COLOR_SQRT).T``) when ``decorrelate``.

    Args:
      photos: uint8 ``[H, W, 3]`` arrays.
      size: image side.
      decorrelate: measure in the decorrelated colour space (else per RGB channel).

    Returns:
      ``(magnitude [size, size // 2 + 1, 3], mean colour [3])`` in float64; ``norm="ortho"`` units
      (so ``Σ magnitude² / size²`` over the full grid is the mean per-pixel variance), DC term 0.
    """
    from jaxviz.common.images import resize_center_crop

    inverse = np.linalg.inv(COLOR_SQRT.astype(np.float64)) if decorrelate else np.eye(3)
    power, means = 0.0, []
    for photo in photos:
        x = resize_center_crop(np.asarray(photo), size).astype(np.float64) / 255.0
        means.append(x.mean((0, 1)))
        z = periodic(x - means[-1]) @ inverse.T
        power = power + np.abs(np.fft.rfft2(z, axes=(0, 1), norm="ortho")) ** 2
    magnitude = np.sqrt(power / len(means))
    magnitude[0, 0] = 0.0  # the mean colour is fixed separately
    return magnitude, np.mean(means, 0)


@functools.lru_cache(maxsize=1)
def spectrum_asset() -> dict:
    with np.load(MACO_SPECTRUM_PATH) as data:
        return {k: data[k] for k in data.files}


def maco_mean() -> np.ndarray:
    """Mean colour ``[3]`` of the photos the MaCo spectrum was measured on (MaCo's fixed DC term)."""
    return spectrum_asset()["mean"].astype(np.float32)


def power_law(magnitude: np.ndarray):
    """Per-channel fit ``A_c k^-alpha_c`` (k in cycles per image) of a stored rfft magnitude."""
    size = magnitude.shape[0]
    k = frequencies(size) * size
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
    asset = spectrum_asset()
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
        for c, (amplitude, alpha) in enumerate(power_law(source)):
            out[..., c] = np.where(inside, out[..., c], amplitude * np.maximum(k, 1) ** -alpha * (size / source_size))
    out[0, 0] = 0.0
    return out.astype(np.float32)
