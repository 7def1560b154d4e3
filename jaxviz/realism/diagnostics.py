"""Evaluation metrics for rendered visualizations used by ``experiments/``.

Realism against real photos in held-out judges (plausibility, KID/FID, blobs, colourfulness) lives in
:mod:`jaxviz.realism`; the ``D²`` "naturalness" here is kept as a diagnostic of the method's own layers.

Two layers:

- **pure array functions** (numpy, float64 on the host): top-k hits, class probability,
  Mahalanobis means, normalized entropy and peak counts of spatial maps, activation percentages,
  summaries and the paired Wilcoxon test. They are what the tests check against plain numpy.
- **model wrappers** that run a :class:`jaxviz.Model` on ``[T, S, S, 3]`` images in ``[0, 1]`` and feed
  those functions: :func:`transferability`, :func:`heldout_naturalness`, :func:`repetition`.

Choices that change numbers (all stated here so tables can cite them):

- *Transferability* evaluates each held-out classifier at its **native resolution**: the rendered
  image is resized (bilinear, antialiased) to ``model.resolution`` (240 for Lite1, 260 for Lite2)
  before the model's own normalization. The classifiers were trained at that size, so this is the
  condition under which their top-1 is meaningful.
- *Held-out naturalness* is the mean squared Mahalanobis distance ``D²`` of the **pixel**-view
  feature vectors (every spatial position) of a layer, divided by the layer's channel count so that
  a Gaussian sample from the statistics scores ≈ 1 whatever the width. Images are evaluated at the
  size they were rendered at, which must be the size the statistics were collected at.
- *Repetition* uses the spatial map of the target's evidence on the optimized model at the render
  size: for a class ``c`` the class-activation map ``relu(head · W[:, c])`` (``W`` the final dense
  kernel; the logit is the spatial mean of ``head · W[:, c]`` plus the bias), for a channel target
  the channel's activation map. Its normalized entropy is 1 when the evidence is spread evenly over
  every position ("ten dogs") and 0 when it sits at one position; peaks are strict local maxima
  (3×3 neighbourhood) that reach at least ``rel`` of the map's maximum.
"""

from __future__ import annotations

import functools
import operator
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "topk_hits", "class_probability", "softmax", "mean_d2", "normalized_entropy", "count_peaks",
    "class_activation_maps", "activation_percent", "summarize", "paired_wilcoxon",
    "run_features", "resize_images", "transferability", "heldout_naturalness", "repetition",
    "image_steps_per_second",
]


# ------------------------------------------------------------------------------------ pure functions


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64 (max-shifted)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk_hits(logits: np.ndarray, classes: Sequence[int], k: int) -> np.ndarray:
    """``[T]`` bool: whether ``classes[t]`` is among the ``k`` largest of ``logits[t]``.

    Ties are resolved against the class: a class is a hit only if fewer than ``k`` logits are
    strictly larger than it.
    """
    logits = np.asarray(logits, np.float64)
    classes = np.asarray(classes, np.int64)
    own = logits[np.arange(len(classes)), classes]
    larger = np.sum(logits > own[:, None], axis=-1)
    return larger < k


def class_probability(logits: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``[T]`` softmax probability of ``classes[t]`` under ``logits[t]``."""
    p = softmax(logits)
    return p[np.arange(len(classes)), np.asarray(classes, np.int64)]


def mean_d2(samples: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mean squared Mahalanobis distance of each image's feature vectors.

    Args:
      samples: ``[T, M, dim]`` (M vectors per image, e.g. every position).
      mean: ``[dim]``; precision: ``[dim, dim]`` symmetric.

    Returns:
      ``[T]`` float64: ``mean_m (x_m − μ)ᵀ P (x_m − μ)`` (:func:`jaxviz.stats.outliers.mahalanobis`). A
      diagnostic of the method's own layers, not a realism score: it rewards low contrast (a flat grey
      image is "natural"); realism is measured by :mod:`jaxviz.realism`.
    """
    import jax

    from jaxviz.stats.outliers import mahalanobis

    # The one D² formula of the project, evaluated in float64 (jax would otherwise cast to float32).
    with jax.enable_x64(True):
        d2 = mahalanobis(np.asarray(samples, np.float64), np.asarray(mean, np.float64),
                         np.asarray(precision, np.float64))
        return np.asarray(d2, np.float64).mean(axis=1)


def normalized_entropy(maps: np.ndarray) -> np.ndarray:
    """``[T]`` Shannon entropy of each non-negative map, normalized by ``log(#positions)``.

    Args:
      maps: ``[T, H, W]`` (negative values are clipped to 0).

    Returns:
      Values in ``[0, 1]``; ``nan`` for an all-zero map (no evidence anywhere), and ``nan`` for a
      single-position map (entropy is undefined there).
    """
    m = np.clip(np.asarray(maps, np.float64), 0.0, None).reshape(len(maps), -1)
    n = m.shape[1]
    total = m.sum(axis=1)
    out = np.full(len(m), np.nan)
    if n < 2:
        return out
    for t in range(len(m)):
        if total[t] <= 0:
            continue
        p = m[t] / total[t]
        nz = p[p > 0]
        out[t] = float(-(nz * np.log(nz)).sum() / np.log(n))
    return out


def count_peaks(maps: np.ndarray, *, rel: float = 0.5) -> np.ndarray:
    """``[T]`` number of separated peaks of each map.

    A peak is a position strictly larger than its 8 neighbours (positions outside the map count
    as ``-inf``) whose value is at least ``rel`` times the map's maximum, which must be positive.
    Plateaus (equal neighbours) are not peaks. An all-zero map has 0 peaks.
    """
    maps = np.asarray(maps, np.float64)
    t, h, w = maps.shape
    padded = np.full((t, h + 2, w + 2), -np.inf)
    padded[:, 1:-1, 1:-1] = maps
    is_peak = np.ones_like(maps, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            is_peak &= maps > padded[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    top = maps.reshape(t, -1).max(axis=1)
    strong = maps >= rel * top[:, None, None]
    return np.sum(is_peak & strong & (top[:, None, None] > 0), axis=(1, 2))


def class_activation_maps(head: np.ndarray, kernel: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``[T, H, W]`` ``relu(head[t] · kernel[:, classes[t]])``.

    Args:
      head: ``[T, H, W, C]`` last spatial features (before global pooling).
      kernel: ``[C, num_classes]`` dense kernel of the classifier.
      classes: ``[T]`` class per image.
    """
    head = np.asarray(head, np.float64)
    w = np.asarray(kernel, np.float64)[:, np.asarray(classes, np.int64)]  # [C, T]
    cam = np.einsum("thwc,ct->thw", head, w)
    return np.maximum(cam, 0.0)


def activation_percent(activation: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``100 · activation / reference`` elementwise (``nan`` where the reference is not positive).

    ``reference`` is the activation of the unconstrained (``none`` prior) run of the same
    parameterization, target and seed.
    """
    a = np.asarray(activation, np.float64)
    r = np.asarray(reference, np.float64)
    out = np.full(np.broadcast(a, r).shape, np.nan)
    ok = r > 0
    np.divide(100.0 * a, r, out=out, where=ok)
    return out


def summarize(values: np.ndarray) -> dict:
    """``{"mean", "std", "n"}`` over the finite entries (std with ddof=1; nan if n < 2)."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}


def paired_wilcoxon(a: np.ndarray, b: np.ndarray) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples ``a`` vs ``b``.

    Pairs with a non-finite member are dropped. Zero differences use scipy's ``zero_method="wilcox"``
    (they are discarded). Returns ``{"p", "n", "median_diff"}`` with ``median_diff`` = median of
    ``a − b``; ``p`` is 1.0 when every difference is zero and ``nan`` when fewer than 2 pairs remain.
    """
    from scipy.stats import wilcoxon

    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal shapes, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    diff = a[ok] - b[ok]
    n = int(diff.size)
    if n < 2:
        return {"p": float("nan"), "n": n, "median_diff": float(np.median(diff)) if n else float("nan")}
    if np.all(diff == 0):
        return {"p": 1.0, "n": n, "median_diff": 0.0}
    return {"p": float(wilcoxon(a[ok], b[ok], zero_method="wilcox").pvalue), "n": n,
            "median_diff": float(np.median(diff))}


def image_steps_per_second(n_images: int, steps: int, seconds: float) -> float:
    """Throughput of a render: optimized images × steps per wall second."""
    return float(n_images * steps / seconds) if seconds > 0 else float("nan")


# ------------------------------------------------------------------------------------ model wrappers


@functools.lru_cache(maxsize=32)
def _features_fn(model, layers: tuple[str, ...]):
    import jax

    def fn(params, images01):
        return model.features(params, model.normalize(images01 * 255.0), layers)

    return jax.jit(fn)


def resize_images(images01: np.ndarray, size: int) -> np.ndarray:
    """``[T, H, W, 3]`` → ``[T, size, size, 3]`` float32 with the project's one resizer.

    That is :func:`jaxviz.common.images.resize_batch01` (bilinear, antialiased when shrinking, centre crop of
    non-square images), the filter ``Model.preprocess`` applies to photos.
    """
    from jaxviz.common.images import resize_batch01

    return resize_batch01(images01, int(size))


def run_features(model, images01: np.ndarray, layers: Sequence[str], *, batch_size: int = 8) -> dict:
    """``{layer: float32 [T, ...]}`` of ``model`` on images in ``[0, 1]`` (as given, no resize).

    The last batch is padded to ``batch_size`` so that one image shape compiles one program.
    """
    layers = tuple(model.check_layers(list(layers)))
    fn = _features_fn(model, layers)
    images01 = np.asarray(images01, np.float32)
    chunks: dict[str, list] = {l: [] for l in layers}
    for start in range(0, len(images01), batch_size):
        batch = images01[start:start + batch_size]
        n = len(batch)
        if len(images01) > batch_size and n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        out = fn(model.params, batch)
        for l in layers:
            chunks[l].append(np.asarray(out[l])[:n])
    if not chunks[layers[0]]:
        raise ValueError("run_features needs at least one image")
    return {l: np.concatenate(v) for l, v in chunks.items()}


def transferability(model, images01: np.ndarray, classes: Sequence[int], *, batch_size: int = 8) -> dict:
    """How a held-out classifier sees rendered class visualizations.

    Args:
      model: a classifier whose ``features`` return ``logits`` (e.g. EfficientNet-Lite1).
      images01: ``[T, S, S, 3]`` in ``[0, 1]``; resized to ``model.resolution`` (native) if set.
      classes: ``[T]`` the class each image was optimized for.

    Returns:
      ``{"top1": [T] float (0/1), "top5": [T] float, "prob": [T] float}``.
    """
    if model.resolution:
        images01 = resize_images(images01, int(model.resolution))
    logits = run_features(model, images01, ["logits"], batch_size=batch_size)["logits"]
    return {"top1": topk_hits(logits, classes, 1).astype(np.float64),
            "top5": topk_hits(logits, classes, 5).astype(np.float64),
            "prob": class_probability(logits, classes)}


def heldout_naturalness(model, images01: np.ndarray, moments: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        *, batch_size: int = 8) -> dict:
    """Per-layer mean ``D²/dim`` (pixel view) of each image under natural-image statistics.

    Args:
      model: the model the statistics belong to.
      images01: ``[T, S, S, 3]`` in ``[0, 1]``, at the size the statistics were collected at.
      moments: ``{layer: (mean [C], precision [C, C])}`` — layers the method did not use.

    Returns:
      ``{layer: [T]}`` plus ``"mean"``: the average over layers, all float64.
    """
    feats = run_features(model, images01, list(moments), batch_size=batch_size)
    out = {}
    for layer, (mu, prec) in moments.items():
        a = feats[layer]
        samples = a.reshape(a.shape[0], -1, a.shape[-1])
        out[layer] = mean_d2(samples, mu, prec) / samples.shape[-1]
    out["mean"] = np.mean(np.stack([out[l] for l in moments]), axis=0)
    return out


def repetition(model, images01: np.ndarray, targets: Sequence[tuple[str, int]], *, rel: float = 0.5,
               kernel_path: Sequence[str] = ("fc", "kernel"), batch_size: int = 8) -> dict:
    """Spread of each target's spatial evidence (see the module docstring).

    Args:
      model: the model that was optimized.
      images01: ``[T, S, S, 3]`` in ``[0, 1]`` at the render size.
      targets: ``[(layer, channel)]`` per image; ``layer == "logits"`` uses the class-activation map
        over ``head`` with the dense kernel at ``kernel_path`` in ``model.params``.
      rel: peak threshold relative to the map's maximum.

    Returns:
      ``{"entropy": [T], "peaks": [T], "maps": [T, h, w]}`` (maps of one image size share ``h, w``).
    """
    layers = sorted({"head" if l == "logits" else l for l, _ in targets})
    feats = run_features(model, images01, layers, batch_size=batch_size)
    kernel = np.asarray(functools.reduce(operator.getitem, kernel_path, model.params))
    maps = []
    for t, (layer, channel) in enumerate(targets):
        if layer == "logits":
            maps.append(class_activation_maps(feats["head"][t:t + 1], kernel, [channel])[0])
        else:
            a = feats[layer][t]
            if a.ndim != 3:
                raise ValueError(f"repetition needs a spatial layer, {layer} is {a.shape}")
            maps.append(np.maximum(np.asarray(a[..., channel], np.float64), 0.0))
    maps = np.stack(maps)
    return {"entropy": normalized_entropy(maps), "peaks": count_peaks(maps, rel=rel).astype(np.float64),
            "maps": maps}
