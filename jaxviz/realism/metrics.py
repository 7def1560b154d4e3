"""Pure float64 statistics behind the realism scores of :mod:`jaxviz.realism`.

Every function takes numpy arrays (images in ``[0, 1]``, feature matrices, spatial maps) and returns
float64 numpy values; nothing here runs a model. Definitions, stated once so tables can cite them:

- **colourfulness** (Hasler & Süsstrunk 2003) on 0..255 RGB: ``rg = R − G``, ``yb = (R + G)/2 − B``,
  ``M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)`` (population σ over the pixels).
- **spectrum slope**: slope of ``log P(f)`` against ``log f`` where ``P`` is the power spectrum of the
  Rec. 601 luminance (mean removed, Hann-windowed), averaged over rings of width one frequency step,
  fitted by least squares over ``f ∈ [1/32, 1/4]`` cycles per pixel. Power, not amplitude: natural
  photos give about −2, white noise 0, noise whose power falls as ``f^−α`` gives −α.
- **plausibility** (MaCo, Fel et al. 2023): cosine similarity, in a judge's pooled features, between an
  image and the real photos of its class; the **rank** of its class (0 = best) among all reference
  classes ordered by cosine similarity of the image to each class's mean feature.
- **KID**: unbiased MMD² with the kernel ``k(x, y) = (x·y/d + 1)³`` (``d`` = feature dimension),
  averaged over random equal-size subsets when a set is larger than ``subset_size``.
- **FID**: Fréchet distance of Gaussians fitted to two feature sets. A covariance from ``n ≤ d`` samples
  is singular, so with fewer samples than dimensions both sets are first projected onto the leading
  ``min(n, m) − 1`` principal axes of the *reference* set (say so next to the figure: it is not
  comparable with published FIDs, only between methods scored against the same reference).
- **blobs**: connected components (8-connectivity) of a map's positions at or above ``rel`` (½) of its
  maximum; **top-blob share**: the map's sum over the strongest blob (largest sum) divided by its sum
  over all those positions — 1 for one blob, about 1/k for k equal blobs.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SLOPE_BAND", "colourfulness", "spectrum_slope", "cosine_similarity", "plausibility",
    "kid", "frechet_distance", "fid", "blobs",
]

SLOPE_BAND = (1.0 / 32.0, 1.0 / 4.0)  # cycles per pixel
_LUMA = np.array([0.299, 0.587, 0.114])


def _batch(images01) -> np.ndarray:
    x = np.asarray(images01, np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images [N,H,W,3], got shape {x.shape}")
    return x


def colourfulness(images01) -> np.ndarray:
    """``[N]`` Hasler–Süsstrunk colourfulness of ``[N,H,W,3]`` (or one ``[H,W,3]``) images in ``[0, 1]``."""
    x = _batch(images01) * 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = (r - g).reshape(len(x), -1)
    yb = (0.5 * (r + g) - b).reshape(len(x), -1)
    sigma = np.sqrt(rg.var(axis=1) + yb.var(axis=1))
    mu = np.sqrt(rg.mean(axis=1) ** 2 + yb.mean(axis=1) ** 2)
    return sigma + 0.3 * mu


def spectrum_slope(images01, *, band: tuple[float, float] = SLOPE_BAND) -> np.ndarray:
    """``[N]`` slope of log radial power vs log frequency over ``band`` (cycles per pixel).

    Args:
      images01: ``[N,H,W,3]`` (or one image) in ``[0, 1]``, at the size they are judged at (resizing
        moves frequencies, so compare images of one size).
      band: ``(low, high)`` frequencies of the fit.

    Returns:
      float64 slopes; ``nan`` for a flat image or when fewer than 3 rings fall in the band.
    """
    x = _batch(images01) @ _LUMA
    n, h, w = x.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    step = 1.0 / min(h, w)
    ring = np.rint(np.hypot(fy, fx) / step).astype(np.int64).ravel()
    rings = np.arange(ring.max() + 1)
    freq = rings * step
    use = (freq >= band[0]) & (freq <= band[1])
    counts = np.bincount(ring, minlength=len(rings))
    out = np.full(n, np.nan)
    if use.sum() < 3:
        return out
    for i in range(n):
        img = x[i] - x[i].mean()
        power = np.abs(np.fft.fft2(img * window)) ** 2
        mean_power = np.bincount(ring, weights=power.ravel(), minlength=len(rings)) / np.maximum(counts, 1)
        p = mean_power[use]
        if np.any(p <= 0):
            continue
        out[i] = np.polyfit(np.log(freq[use]), np.log(p), 1)[0]
    return out


def cosine_similarity(a, b) -> np.ndarray:
    """``[n, m]`` cosine similarities between the rows of ``a [n, d]`` and ``b [m, d]`` (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def plausibility(features, classes, ref_features, ref_classes) -> dict:
    """MaCo's plausibility of images against real photos, in one judge's pooled features.

    Args:
      features: ``[n, d]`` the images' features; classes: ``[n]`` their classes.
      ref_features: ``[m, d]`` features of real photos; ref_classes: ``[m]`` their classes.

    Returns:
      ``{"cos_own": [n], "rank": [n]}``: mean cosine similarity with the photos of the image's class,
      and the number of reference classes whose mean feature is strictly more similar to the image
      than its own class's mean (0 = best). Both ``nan`` for a class without reference photos.
    """
    classes = np.asarray(classes, np.int64)
    ref_classes = np.asarray(ref_classes, np.int64)
    ref_features = np.asarray(ref_features, np.float64)
    sim = cosine_similarity(features, ref_features)                     # [n, m]
    labels, inverse = np.unique(ref_classes, return_inverse=True)
    means = np.zeros((len(labels), ref_features.shape[1]))
    np.add.at(means, inverse, ref_features)
    means /= np.bincount(inverse)[:, None]
    sim_class = cosine_similarity(features, means)                      # [n, K]
    cos_own = np.full(len(classes), np.nan)
    rank = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        k = np.searchsorted(labels, c)
        if k == len(labels) or labels[k] != c:
            continue
        cos_own[i] = sim[i, ref_classes == c].mean()
        rank[i] = np.sum(sim_class[i] > sim_class[i, k])
    return {"cos_own": cos_own, "rank": rank}


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def kid(x, y, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0) -> dict:
    """Kernel Inception Distance between feature sets ``x [n, d]`` and ``y [m, d]`` (any feature space).

    Args:
      x, y: feature sets, at least 2 rows each.
      subset_size: above this many rows, average the estimate over random subsets of this size.
      subsets: number of subsets then.
      seed: seeds the subset draws.

    Returns:
      ``{"kid": mean estimate, "kid_std": std over subsets (nan when the full sets were used)}``.
      The estimate is unbiased, so two samples of one distribution may give a small negative value.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    if max(len(x), len(y)) <= subset_size:
        return {"kid": _mmd2_unbiased(x, y), "kid_std": float("nan")}
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(x), len(y))
    values = [_mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
              for _ in range(subsets)]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values, ddof=1))}


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(mean1, cov1, mean2, cov2) -> float:
    """``‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)`` for symmetric PSD covariances (float64)."""
    mean1, mean2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)))
    return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


def fid(x, y, *, dims: int | None = None) -> dict:
    """Fréchet distance between feature sets ``x [n, d]`` and the reference ``y [m, d]``.

    Args:
      x: features of the images scored; y: features of the reference photos.
      dims: project onto this many leading principal axes of ``y`` first. ``None``: the full space
        when ``min(n, m) > d``, else ``min(n, m) − 1`` axes (the most that keep both covariances
        full rank).

    Returns:
      ``{"fid": value, "fid_dims": dimensions used, "fid_space": "full" or "pca-of-reference"}``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, m, d = len(x), len(y), x.shape[1]
    if min(n, m) < 3:
        raise ValueError(f"FID needs at least 3 samples per set, got {n} and {m}")
    if dims is None and min(n, m) > d:
        space, k = "full", d
    else:
        k = min(n, m) - 1 if dims is None else int(dims)
        # principal axes of the reference: one fixed space for every method scored against it
        _, _, vt = np.linalg.svd(y - y.mean(axis=0), full_matrices=False)
        x, y = x @ vt[:k].T, y @ vt[:k].T
        space = "pca-of-reference"
    value = frechet_distance(x.mean(0), np.cov(x, rowvar=False).reshape(k, k),
                             y.mean(0), np.cov(y, rowvar=False).reshape(k, k))
    return {"fid": value, "fid_dims": k, "fid_space": space}


def blobs(maps, *, rel: float = 0.5) -> dict:
    """Separate blobs of each spatial map above ``rel`` of its maximum.

    Args:
      maps: ``[N, h, w]`` (e.g. class-activation maps); only the positive part counts as evidence.
      rel: threshold relative to the map's maximum.

    Returns:
      ``{"count": [N], "top_share": [N]}`` float64: number of 8-connected components of positions
      ``≥ rel · max``, and the share of the map's sum over those positions that lies in the blob with
      the largest sum. A map whose maximum is not positive has 0 blobs and share ``nan``.
    """
    from scipy import ndimage

    maps = np.asarray(maps, np.float64)
    count = np.zeros(len(maps))
    share = np.full(len(maps), np.nan)
    for i, m in enumerate(maps):
        top = m.max()
        if not top > 0:
            continue
        labels, k = ndimage.label(m >= rel * top, structure=np.ones((3, 3), bool))
        sums = ndimage.sum_labels(m, labels, index=np.arange(1, k + 1))
        count[i] = k
        share[i] = sums.max() / sums.sum()
    return {"count": count, "top_share": share}
