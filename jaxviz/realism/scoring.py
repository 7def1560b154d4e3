"""Realism of visualizations measured the way the field does: against real photos, in held-out judges.

The optimization uses EfficientNet-Lite0; EfficientNet-Lite1 and Lite2 never see it and act as
*judges*. For class visualizations ``images01 [N,H,W,3]`` in ``[0, 1]`` with their ``classes``,
:func:`score` reports per image and judge (definitions in :mod:`jaxviz.realism.metrics`):

- transferability: ``top1``, ``top5``, ``p_target`` of the judge at its native resolution;
- plausibility: ``cos_own`` (cosine similarity of pooled features with the real photos of the class)
  and ``rank`` (0 = best) of the class among all reference classes;
- repetition: ``blobs`` and ``top_blob_share`` of the judge's class-activation map
  ``head · W[:, class]`` computed on the image resized to ``cam_scale`` (2) × the judge's resolution —
  the network is convolutional up to its pooling, so the larger input gives a finer map (17×17 for
  Lite2, 15×15 for Lite1) of where the evidence sits;
- ``colourfulness`` and ``slope`` of the image as given (no judge);

and per set and judge ``kid``/``fid`` between the images and the real photos of the same classes.
Every image is resized with the project's one resizer (:func:`jaxviz.common.images.resize_batch01`, the
filter of ``Model.preprocess``).

Real photos (the reference) come from ``real``: a folder whose sorted image *i* is class *i* (the
1,000-photo ImageNet sample; ``$JAXVIZ_REAL_DIR`` or the project's sibling data folder by default),
or ``tfds:imagenet2012[/SPLIT]``. Reference features use the photo's centre view (short side resized,
centre square). :func:`score_real` scores the photos themselves as the reference row, and there is a
catch: with one photo per class, leaving the photo out leaves its class without a reference, so the
real row is scored on a *second view* of the same photo (upper-left 80 % of the centre square,
mirrored). Its plausibility and KID are therefore optimistic — a ceiling, not a held-out figure.
"""

from __future__ import annotations

import hashlib
import os
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from jaxviz.common.errors import UsageError
from jaxviz.common.images import read_image, resize_center_crop
from jaxviz.data.sources import DataError, open_source
from jaxviz.realism import diagnostics as metrics
from jaxviz.realism import metrics as rm
from jaxviz.realism.judges import (
    DEFAULT_JUDGES,
    NUM_CLASSES,
    SECOND_VIEW_SIDE,
    Judge,
    as_judge,
    class_maps,
    default_real,
    judge_features,
)

__all__ = ["Reference", "second_view", "load_real", "reference_features", "reference_from_images", "Scores", "score",
           "score_real", "summarize"]

_SCANS: dict[str, tuple[str, ...]] = {}  # folder spec -> longest scanned prefix of its sorted images


_MEMORY: dict[tuple, Reference] = {}


class Reference(NamedTuple):
    """Real photos seen by one judge: ``features [m, D]`` float32 and their ``classes [m]``."""

    features: np.ndarray
    classes: np.ndarray


def second_view(image: np.ndarray, size: int) -> np.ndarray:
    """A second view of a photo: the upper-left 80 % of its centre square, mirrored, at ``size`` (uint8)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = max(1, round(SECOND_VIEW_SIDE * side))
    part = np.ascontiguousarray(image[top:top + crop, left:left + crop][:, ::-1])
    return resize_center_crop(part, size)


def _real_spec(real: str | None) -> str:
    real = real or default_real()
    if not real:
        raise DataError("no real photos: pass real= a folder (sorted image i = class i) or tfds:imagenet2012, "
                        "or set JAXVIZ_REAL_DIR")
    return real if real.startswith(("folder:", "tfds:")) else f"folder:{real}"


def _check_classes(classes) -> np.ndarray:
    c = np.asarray(classes, np.int64).ravel()
    if c.size and (c.min() < 0 or c.max() >= NUM_CLASSES):
        raise UsageError(f"classes must be in 0..{NUM_CLASSES - 1}, got {c.min()}..{c.max()}")
    return c


def _folder_files(spec: str, classes: np.ndarray | None) -> tuple[str, ...]:
    """Sorted images of a folder, at least up to ``max(classes)`` (``None``: up to 1,000)."""
    need = NUM_CLASSES if classes is None else int(classes.max()) + 1 if classes.size else 0
    files = _SCANS.get(spec, ())
    if len(files) >= need or (classes is None and spec in _SCANS):
        return files
    src = open_source(spec, size=8, max_images=max(need, 1))
    if src.skipped:
        raise DataError(f"{spec}: {src.skipped} unreadable images would shift the class order")
    if classes is not None and len(src) < need:
        raise DataError(f"{spec} holds {len(src)} images, class {need - 1} needs {need}")
    _SCANS[spec] = src.files
    return src.files


def _tfds_images(spec: str, classes: np.ndarray, size: int) -> list[np.ndarray]:
    from jaxviz.common.images import decode_image_bytes

    src = open_source(spec, size=size)
    wanted = {int(c) for c in classes}
    found: dict[int, bytes] = {}
    for start in range(0, len(src), 256):
        for r in src.records.__getitems__(list(range(start, min(start + 256, len(src))))):
            if "label" not in r:
                raise DataError(f"{spec} has no 'label' feature: real photos need their classes")
            label = int(r["label"])
            if label in wanted and label not in found:
                found[label] = r["image"]
        if len(found) == len(wanted):
            break
    if len(found) < len(wanted):
        raise DataError(f"{spec}: no photo of classes {sorted(wanted - set(found))[:5]}...")
    return [decode_image_bytes(found[int(c)], label=f"{spec} class {c}")[0] for c in classes]


def load_real(classes: Sequence[int], *, size: int, real: str | None = None, view: str = "centre") -> np.ndarray:
    """One real photo per class as ``[n, size, size, 3]`` uint8, in the order of ``classes``.

    Args:
      classes: ImageNet class indices.
      size: output side.
      real: a folder (sorted image *i* = class *i*), ``folder:PATH`` or ``tfds:NAME[/SPLIT]`` (the
        first photo of each class); ``None``: :func:`default_real`.
      view: ``"centre"`` (short side resized, centre square) or ``"second"`` (:func:`second_view`).
    """
    if view not in ("centre", "second"):
        raise UsageError(f"view must be 'centre' or 'second', got {view!r}")
    spec, classes = _real_spec(real), _check_classes(classes)
    if spec.startswith("tfds:"):
        photos = _tfds_images(spec, classes, size)
    else:
        files = _folder_files(spec, classes)
        photos = [read_image(files[c])[0] for c in classes]
    make = resize_center_crop if view == "centre" else second_view
    return np.stack([make(p, size) for p in photos]) if photos else np.zeros((0, size, size, 3), np.uint8)


def reference_from_images(judge: Judge, images01: np.ndarray, classes: Sequence[int], *,
                          batch_size: int = 8) -> Reference:
    """A :class:`Reference` from given images in ``[0, 1]`` (resized to the judge's resolution)."""
    return Reference(judge_features(judge, images01, batch_size=batch_size).pool, _check_classes(classes))


def _content_key(spec: str, classes: np.ndarray) -> str:
    h = hashlib.sha256(spec.encode())
    if spec.startswith("folder:"):
        for path in _folder_files(spec, classes):
            h.update(os.path.basename(path).encode())
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    h.update(classes.tobytes())
    return h.hexdigest()[:16]


def reference_features(judge: str | Judge, real: str | None = None, *, classes: Sequence[int] | None = None,
                       cache_dir: str | None = None, batch_size: int = 16) -> Reference:
    """Pooled features of the real photos (centre view) of ``classes`` (default: all, up to 1,000).

    Computed once per process and judge (kept in memory); with ``cache_dir`` also stored as
    ``<judge>-<resolution>-<hash>.npz``, the hash covering the photos' bytes and the classes.
    """
    judge = as_judge(judge)
    spec = _real_spec(real)
    if classes is None:  # every class the source holds: a folder may hold fewer than 1,000
        count = len(_folder_files(spec, None)) if spec.startswith("folder:") else NUM_CLASSES
        classes = np.arange(count)
    classes = _check_classes(classes)
    key = (judge.name, judge.resolution, spec, classes.tobytes())
    if key in _MEMORY:
        return _MEMORY[key]
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, f"{judge.name}-{judge.resolution}-{_content_key(spec, classes)}.npz")
        if os.path.exists(path):
            with np.load(path) as f:
                _MEMORY[key] = Reference(f["features"], f["classes"])
                return _MEMORY[key]
    if spec.startswith("folder:") and classes.size:
        _folder_files(spec, classes)  # scan the folder once, not once per chunk
    feats = []
    for start in range(0, len(classes), 64):  # bounded memory: decode and run 64 photos at a time
        part = classes[start:start + 64]
        photos = load_real(part, size=judge.resolution, real=spec)
        feats.append(judge_features(judge, photos.astype(np.float32) / 255.0, batch_size=batch_size).pool)
    ref = Reference(np.concatenate(feats), classes)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, features=ref.features, classes=ref.classes)
        os.replace(tmp, path)
    _MEMORY[key] = ref
    return ref


class Scores(NamedTuple):
    """``per_image``: ``{key: [N] float64}``; ``per_set``: ``{key: value}``. Judge keys are ``<judge>/<metric>``."""

    per_image: dict
    per_set: dict


def score(images01: np.ndarray, classes: Sequence[int], *, judges: Sequence[str | Judge] = DEFAULT_JUDGES,
          reference: Mapping[str, Reference] | None = None, real: str | None = None,
          cache_dir: str | None = None, cam_scale: int = 2, batch_size: int = 8) -> Scores:
    """Realism scores of class visualizations (see the module docstring).

    Args:
      images01: ``[N,H,W,3]`` in ``[0, 1]``, any size.
      classes: ``[N]`` the class each image shows.
      judges: held-out judges (names or :class:`Judge`).
      reference: ``{judge name: Reference}``; judges missing here use :func:`reference_features` of
        ``real`` (every class it holds, up to 1,000).
      real, cache_dir: see :func:`reference_features`.
      cam_scale: the class-activation map is computed at this multiple of the judge's resolution.

    Returns:
      :class:`Scores` with per image ``colourfulness``, ``slope`` and ``<judge>/top1``, ``top5``,
      ``p_target``, ``cos_own``, ``rank``, ``blobs``, ``top_blob_share``; per set ``<judge>/kid``,
      ``kid_std``, ``fid``, ``fid_dims``, ``fid_space`` and ``n``.
    """
    images01 = np.asarray(images01, np.float32)
    classes = _check_classes(classes)
    if len(images01) != len(classes) or images01.ndim != 4:
        raise UsageError(f"need images [N,H,W,3] and N classes, got {images01.shape} and {len(classes)}")
    per_image = {"colourfulness": rm.colourfulness(images01), "slope": rm.spectrum_slope(images01)}
    per_set: dict = {"n": len(classes)}
    for j in judges:
        judge = as_judge(j)
        ref = (reference or {}).get(judge.name)
        if ref is None:
            ref = reference_features(judge, real, cache_dir=cache_dir)
        out = judge_features(judge, images01, batch_size=batch_size)
        p = rm.plausibility(out.pool, classes, ref.features, ref.classes)
        b = rm.blobs(class_maps(judge, images01, classes, scale=cam_scale, batch_size=batch_size))
        per_image.update({
            f"{judge.name}/top1": metrics.topk_hits(out.logits, classes, 1).astype(np.float64),
            f"{judge.name}/top5": metrics.topk_hits(out.logits, classes, 5).astype(np.float64),
            f"{judge.name}/p_target": metrics.class_probability(out.logits, classes),
            f"{judge.name}/cos_own": p["cos_own"], f"{judge.name}/rank": p["rank"],
            f"{judge.name}/blobs": b["count"], f"{judge.name}/top_blob_share": b["top_share"],
        })
        same = np.isin(ref.classes, classes)
        if len(classes) >= 3 and same.sum() >= 3:
            per_set.update({f"{judge.name}/{k}": v for k, v in rm.kid(out.pool, ref.features[same]).items()})
            per_set.update({f"{judge.name}/{k}": v for k, v in rm.fid(out.pool, ref.features[same]).items()})
    return Scores(per_image, per_set)


def score_real(classes: Sequence[int], *, size: int, real: str | None = None, **kwargs) -> Scores:
    """The reference row: :func:`score` of the real photos' second views at ``size`` (see module docstring)."""
    photos = load_real(classes, size=size, real=real, view="second")
    return score(photos.astype(np.float32) / 255.0, classes, real=real, **kwargs)


def summarize(scores: Scores) -> dict:
    """``{key: {"mean", "std", "median", "n"}}`` over the finite per-image values, plus the per-set values."""
    out: dict = {}
    for key, values in scores.per_image.items():
        s = metrics.summarize(values)
        v = np.asarray(values, np.float64)
        s["median"] = float(np.median(v[np.isfinite(v)])) if s["n"] else float("nan")
        out[key] = s
    out.update(scores.per_set)
    return out
