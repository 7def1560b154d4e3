"""Input-image methods: which pixels drive a target, and which shallow neurons make a photo unusual.

**Saliency** (``jaxviz attribute``): the gradient of a target (a :mod:`jaxviz.objectives` objective)
with respect to the input image, under one of three ReLU backward rules:

- ``gradient``: the ordinary gradient (Simonyan et al., 2014);
- ``deconvnet``: every ReLU passes only the positive part of the incoming gradient, whatever its
  forward input (Zeiler & Fergus, 2014);
- ``guided``: guided backpropagation, the ordinary gradient masked by a positive incoming gradient
  (Springenberg et al., 2015); for ReLU6 a unit passes it where ``0 < x < 6``.

**Methods** built on those gradients (any rule):

- ``smoothgrad`` (Smilkov et al., 2017): the mean gradient over ``samples`` copies of the image with
  Gaussian noise of standard deviation ``noise × (max − min)`` of that image; the noise of image
  ``n`` is ``jax.random.normal(jax.random.fold_in(key, n), (samples, H, W, 3))``;
- ``integrated_gradients`` (Sundararajan et al., 2017): ``(x − x') ⊙ (1/m) Σ_k ∇f(x' + α_k (x − x'))``
  with midpoints ``α_k = (k − ½)/m``; its sum over pixels approaches ``f(x) − f(x')`` as ``m`` grows
  (baseline ``x'``: black by default).

The rules swap the model's activation, so they need a model that offers them
(``Model.backward_rules``; EfficientNet-Lite from :func:`jaxviz.load_model` does, see
:mod:`jaxviz.models.activations`); ``gradient`` works for every model.

**Outlier report** (``jaxviz outliers``): for one image and natural-image statistics of shallow
layers, the squared Mahalanobis distance of every position and the over-activated neurons with the
largest contributions at the outlier positions (:func:`jaxviz.stats.outliers.select`; README, "The method").

Everything is written for one image and vmapped; images are ``[H, W, 3]`` float in ``[0, 1]``.
"""

from __future__ import annotations

import functools
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import objectives as objectives_lib
from jaxviz.common.errors import UsageError, check_integer
from jaxviz.stats import outliers as outliers_lib
from jaxviz.stats import views

__all__ = ["RULES", "METHODS", "rule_apply", "input_gradient", "saliency", "gradients", "smoothgrad",
           "integrated_gradients", "attribute", "specificity", "check_images", "heat", "overlay", "LayerOutliers", "layer_outliers", "image_outliers"]

RULES = ("gradient", "deconvnet", "guided")


def rule_apply(model, rule: str = "gradient"):
    """The model's ``apply`` with the ReLU backward ``rule`` (same forward values).

    Raises:
      UsageError: unknown rule, or a rule the model does not offer.
    """
    if rule not in RULES:
        raise UsageError(f"unknown rule '{rule}' (choose {', '.join(RULES)})")
    if rule == "gradient":
        return model.apply
    apply = getattr(model, "backward_rules", {}).get(rule)
    if apply is None:
        raise UsageError(f"rule '{rule}' needs a model with swappable ReLUs; {model.name} offers only 'gradient'")
    return apply


def input_gradient(model, params, image: jax.Array, objective, *, rule: str = "gradient") -> jax.Array:
    """Gradient of ``objective`` w.r.t. ONE image under a backward rule.

    Args:
      model: a :class:`jaxviz.Model`.
      params: its parameters (usually ``model.params``).
      image: ``[H, W, 3]`` float in ``[0, 1]`` (any size the model accepts).
      objective: a :mod:`jaxviz.objectives` objective of one image.
      rule: ``gradient``, ``deconvnet`` or ``guided``.

    Returns:
      ``[H, W, 3]`` float32, d objective / d image.
    """
    apply = rule_apply(model, rule)
    layers = model.check_layers(objective.layers)

    def value(img):
        out = apply(params, model.normalize(img * 255.0)[None], layers)
        return objective({name: out[name][0] for name in layers})

    return jax.grad(value)(jnp.asarray(image, jnp.float32))


@functools.lru_cache(maxsize=32)
def _batched(model, rule: str):
    # one image, a stack of same-structure targets (vmapped); images one after another (flat memory)
    def one(params, image, stacked):
        return jax.vmap(lambda obj: input_gradient(model, params, image, obj, rule=rule))(stacked)

    return jax.jit(lambda params, images, stacked: jax.lax.map(lambda im: one(params, im, stacked), images))


def saliency(model, images, targets: Sequence, *, rule: str = "gradient", params=None) -> np.ndarray:
    """Input gradients of every target for every image.

    Args:
      model: a :class:`jaxviz.Model`.
      images: ``[N, H, W, 3]`` float in ``[0, 1]``, or uint8 (divided by 255); anything else (e.g.
        ``model.preprocess`` output) is refused, since the model's own normalization is applied here.
      targets: objectives; targets of one structure are computed together (vmapped).
      rule: ``gradient``, ``deconvnet`` or ``guided``.
      params: model parameters (default ``model.params``).

    Returns:
      ``[N, T, H, W, 3]`` float32 gradients (per ``[0, 1]`` unit), targets in the given order.

    Raises:
      UsageError: bad images (shape, range), rule or targets.
    """
    rule_apply(model, rule)  # fail early on a bad rule
    return gradients(model, check_images(images), targets, rule=rule, params=params)


def gradients(model, images, targets: Sequence, *, rule: str = "gradient", params=None) -> np.ndarray:
    """:func:`saliency` without the ``[0, 1]`` check (for noisy or interpolated inputs)."""
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"images must be [N, H, W, 3], got shape {tuple(images.shape)}")
    targets = list(targets)
    if not targets:
        raise UsageError("targets is empty")
    params = model.params if params is None else params
    out = np.zeros((images.shape[0], len(targets), *images.shape[1:]), np.float32)
    groups: dict = {}
    for i, target in enumerate(targets):
        groups.setdefault(jax.tree.structure(target), []).append(i)
    for indices in groups.values():
        stacked = objectives_lib.stack([targets[i] for i in indices])
        out[:, indices] = np.asarray(_batched(model, rule)(params, images, stacked))
    return out


def heat(gradient: np.ndarray) -> np.ndarray:
    """Saliency map ``[..., H, W]``: the largest absolute gradient over the colour channels."""
    return np.abs(np.asarray(gradient)).max(axis=-1)


def overlay(image: np.ndarray, heat_map: np.ndarray, *, quantile: float = 0.99) -> np.ndarray:
    """The image, dimmed to grey, under a red-to-yellow heat map (uint8 ``[H, W, 3]``).

    The map is scaled by its ``quantile`` (robust to a few extreme pixels) and clipped to 1.
    """
    image = np.asarray(image, np.float64)
    h = np.asarray(heat_map, np.float64)
    top = np.quantile(h, quantile)
    h = np.clip(h / top, 0.0, 1.0) if top > 0 else np.zeros_like(h)
    grey = 0.35 * image.mean(-1, keepdims=True) * np.ones(3)
    color = np.stack([np.ones_like(h), h, np.zeros_like(h)], -1)  # red, turning yellow at the peak
    mixed = grey * (1.0 - h[..., None]) + color * h[..., None]
    return np.clip(np.round(mixed * 255.0), 0, 255).astype(np.uint8)


class LayerOutliers(NamedTuple):
    """Why one image is (or is not) an outlier at one layer.

    Attributes:
      selection: :class:`jaxviz.stats.outliers.Selection` (neurons, score, count, mask, outlier, d2).
      d2_map: ``[h, w]`` squared Mahalanobis distance per position of the view.
      threshold: the χ²(dim) quantile above which a position is an outlier.
      dim: feature dimension.
    """

    selection: outliers_lib.Selection
    d2_map: jax.Array
    threshold: float
    dim: int


def layer_outliers(activation: jax.Array, mean: jax.Array, precision: jax.Array, *, view: str = "pixel",
                   k: int = 8, quantile: float = 0.99) -> LayerOutliers:
    """Outlier positions and neurons of ONE image's activation ``[H, W, C]`` at one layer.

    Args:
      activation: ``[H, W, C]`` (or ``[C]``).
      mean, precision: the layer's natural statistics (``[dim]``, ``[dim, dim]``).
      view: the view the statistics were collected with (``pixel``, ``pooled``, ``patchK``).
      k: how many neurons to select.
      quantile: χ²(dim) quantile of outlier positions.

    Returns:
      A :class:`LayerOutliers`.
    """
    parsed = views.parse_view(view)
    x = parsed(activation)
    dim = int(x.shape[-1])
    threshold = outliers_lib.chi2_threshold(dim, quantile)
    sel = outliers_lib.select(x, jnp.asarray(mean), jnp.asarray(precision), k=min(k, dim), threshold=threshold)
    if activation.ndim == 1 or parsed.kind == "pooled":
        side = (1, 1)
    else:
        crop = parsed.size - 1 if parsed.kind == "patch" else 0
        side = (activation.shape[0] - crop, activation.shape[1] - crop)
    return LayerOutliers(sel, sel.d2.reshape(side), threshold, dim)


def image_outliers(model, image, moments: Mapping, *, view: str = "pixel", k: int = 8, quantile: float = 0.99,
                   params=None) -> dict[str, LayerOutliers]:
    """:func:`layer_outliers` at every layer of ``moments`` for ONE image ``[H, W, 3]`` in ``[0, 1]``.

    Args:
      model: a :class:`jaxviz.Model`.
      image: ``[H, W, 3]`` float in ``[0, 1]``.
      moments: ``{layer: LayerMoments}`` (see :func:`jaxviz.priors.load_moments`).
      view, k, quantile: as :func:`layer_outliers`.
      params: model parameters (default ``model.params``).

    Returns:
      ``{layer: LayerOutliers}`` (host arrays).
    """
    params = model.params if params is None else params
    layers = model.check_layers(list(moments))
    feats = model.features(params, model.normalize(jnp.asarray(image, jnp.float32) * 255.0), layers)
    return {layer: jax.device_get(layer_outliers(feats[layer], moments[layer].mean, moments[layer].precision,
                                                 view=view, k=k, quantile=quantile)) for layer in layers}


# ------------------------------------------------------------ SmoothGrad, integrated gradients

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
    rule_apply(model, rule)
    images = check_images(images)
    samples = check_integer("samples=", samples, 1, MAX_SAMPLES)
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
    rule_apply(model, rule)
    images = check_images(images)
    steps = check_integer("steps=", steps, 1, MAX_SAMPLES)
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

