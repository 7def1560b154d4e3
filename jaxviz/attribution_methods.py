"""SmoothGrad and integrated gradients on top of :func:`jaxviz.attribution.gradients`.

- ``smoothgrad`` (Smilkov et al., 2017): the mean gradient over ``samples`` copies of the image
  with Gaussian noise of standard deviation ``noise × (max − min)`` of that image (their 10-20 %);
  the noise of image ``n`` is ``jax.random.normal(jax.random.fold_in(key, n), (samples, H, W, 3))``.
- ``integrated_gradients`` (Sundararajan et al., 2017): ``(x − x') ⊙ (1/m) Σ_k ∇f(x' + α_k (x − x'))``
  with midpoints ``α_k = (k − ½)/m``, ``k = 1..m``; its sum over pixels approaches ``f(x) − f(x')``
  (completeness) as ``m`` grows. Baseline ``x'``: black (0) by default, or a number / an image.

Both take images ``[N, H, W, 3]`` in ``[0, 1]`` (uint8 is divided by 255), any backward rule of
:data:`jaxviz.attribution.RULES`, and return ``[N, T, H, W, 3]`` float32 like ``saliency``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxviz.errors import UsageError

__all__ = ["METHODS", "check_images", "smoothgrad", "integrated_gradients", "attribute", "specificity"]

METHODS = ("saliency", "smoothgrad", "integrated_gradients")
MAX_SAMPLES = 4096


def check_images(images) -> np.ndarray:
    """``images`` as float32 ``[N, H, W, 3]`` in ``[0, 1]`` (uint8 divided by 255).

    Raises:
      UsageError: not ``[N, H, W, 3]``, or float values outside ``[0, 1]`` (e.g. the output of
        ``model.preprocess``, or 0..255 floats).
    """
    if isinstance(images, jax.core.Tracer):
        raise UsageError("images= must be concrete arrays (saliency checks their range); use "
                         "jaxviz.attribution.input_gradient inside jit")
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise UsageError(f"images= must be [N, H, W, 3], got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise UsageError(f"images= must be float in [0, 1] or uint8, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
        hint = (" (model.preprocess output? pass the [0, 1] image: uint8 / 255)" if array.min() < 0.0
                else " (0..255 floats? divide by 255, or pass uint8)")
        raise UsageError(f"images= must be float in [0, 1] or uint8; got values in "
                         f"[{float(np.nanmin(array)):.3g}, {float(np.nanmax(array)):.3g}]{hint}")
    return array


def _count(name: str, value, high: int = MAX_SAMPLES) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= high:
        raise UsageError(f"{name}= must be an integer between 1 and {high}, got {value!r}")
    return int(value)


def smoothgrad(model, images, targets: Sequence, *, key: jax.Array, samples: int = 32, noise: float = 0.15,
               rule: str = "gradient", params=None) -> np.ndarray:
    """SmoothGrad: the mean gradient over noisy copies of each image (see the module docstring).

    Args:
      model, targets, rule, params: as :func:`jaxviz.attribution.saliency`.
      images: ``[N, H, W, 3]`` in ``[0, 1]`` (or uint8).
      key: PRNG key of the noise.
      samples: noisy copies per image.
      noise: noise standard deviation as a fraction of each image's value range.

    Returns:
      ``[N, T, H, W, 3]`` float32.
    """
    from jaxviz.attribution import gradients, rule_apply

    rule_apply(model, rule)
    images = check_images(images)
    samples = _count("samples", samples)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise <= 10.0:
        raise UsageError(f"noise= must be a number in [0, 10] (a fraction of the image's range), got {noise!r}")
    out = []
    for n, image in enumerate(images):
        sigma = float(noise) * float(image.max() - image.min())
        eps = np.asarray(jax.random.normal(jax.random.fold_in(key, n), (samples, *image.shape)), np.float32)
        grads = gradients(model, image[None] + sigma * eps, targets, rule=rule, params=params)  # [S, T, H, W, 3]
        out.append(grads.mean(axis=0))
    return np.stack(out)


def integrated_gradients(model, images, targets: Sequence, *, steps: int = 32, baseline=0.0,
                         rule: str = "gradient", params=None) -> np.ndarray:
    """Integrated gradients from ``baseline`` (midpoint rule, see the module docstring).

    Args:
      model, targets, rule, params: as :func:`jaxviz.attribution.saliency`.
      images: ``[N, H, W, 3]`` in ``[0, 1]`` (or uint8).
      steps: points on the straight path (``m``).
      baseline: a number in ``[0, 1]`` (0: black) or an image ``[H, W, 3]`` / ``[N, H, W, 3]`` in ``[0, 1]``.

    Returns:
      ``[N, T, H, W, 3]`` float32 attributions (their sum ≈ ``f(image) − f(baseline)``).
    """
    from jaxviz.attribution import gradients, rule_apply

    rule_apply(model, rule)
    images = check_images(images)
    steps = _count("steps", steps)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= baseline <= 1.0:
            raise UsageError(f"baseline= must be in [0, 1], got {baseline!r}")
        base = np.full_like(images, float(baseline))
    else:
        base = np.asarray(baseline)
        base = check_images(base[None] if base.ndim == 3 else base)
        if base.shape[1:] != images.shape[1:] or len(base) not in (1, len(images)):
            raise UsageError(f"baseline= must be one image shaped like the images {images.shape[1:]} or one per "
                             f"image, got shape {base.shape}")
        base = np.broadcast_to(base, images.shape)
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    out = []
    for image, b in zip(images, base):
        path = b[None] + alphas[:, None, None, None] * (image - b)[None]  # [m, H, W, 3]
        grads = gradients(model, path, targets, rule=rule, params=params)  # [m, T, H, W, 3]
        out.append(grads.mean(axis=0) * (image - b)[None])
    return np.stack(out).astype(np.float32)


def attribute(model, images, targets: Sequence, *, method: str = "saliency", rule: str = "gradient",
              key: jax.Array | None = None, samples: int = 32, noise: float = 0.15, steps: int = 32,
              baseline=0.0, params=None) -> np.ndarray:
    """One entry point for every method (what ``jaxviz attribute --method`` runs).

    ``method``: ``saliency``, ``smoothgrad`` (``key``, ``samples``, ``noise``) or
    ``integrated_gradients`` (``steps``, ``baseline``); ``-`` and ``_`` are interchangeable.
    """
    from jaxviz.attribution import saliency

    name = str(method).replace("-", "_")
    if name == "saliency":
        return saliency(model, images, targets, rule=rule, params=params)
    if name == "smoothgrad":
        return smoothgrad(model, images, targets, key=jax.random.key(0) if key is None else key, samples=samples,
                          noise=noise, rule=rule, params=params)
    if name == "integrated_gradients":
        return integrated_gradients(model, images, targets, steps=steps, baseline=baseline, rule=rule, params=params)
    raise UsageError(f"unknown method '{method}' (choose {', '.join(METHODS)})")


def specificity(a, b, *, top: float = 0.05) -> dict:
    """How different two heat maps ``[H, W]`` are: Pearson correlation and top-``top`` overlap.

    ``overlap``: the share of ``a``'s top ``top`` fraction of pixels that are also in ``b``'s
    (1: the same pixels; ``top``: what independent maps would share by chance).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    k = max(1, int(round(top * a.size)))
    top_a, top_b = set(np.argsort(-a)[:k].tolist()), set(np.argsort(-b)[:k].tolist())
    return {"correlation": float(np.corrcoef(a, b)[0, 1]), "overlap": len(top_a & top_b) / k}

