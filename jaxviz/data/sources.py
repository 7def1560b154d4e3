"""Image sources for the statistics pass: embedded photos, an image folder, a prepared TFDS dataset.

Every source is a frozen dataclass with ``len(src)``, ``src.sample(i)`` and ``src.batches(...)``.
Sample ``i`` is a pure function of ``(spec, seed, i)``: a resumed or sharded pass sees exactly the
images an uninterrupted single-host pass would.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import operator
import os
from typing import Any, Iterator

import numpy as np

from jaxviz.common.errors import DataError, UsageError
from jaxviz.common.images import EVAL_CROP_FRACTION, decode_image_bytes, read_image, resize_center_crop
from jaxviz.data.folders import FolderScan, scan_folder

__all__ = ["check_shard",
    "EMBEDDED_PHOTOS", "embedded_photos", "DataError", "open_source", "PhotoSource",
    "FolderSource", "TfdsSource", "FolderScan", "scan_folder", "build_tfds_from_folder",
]

# Colour photos that ship inside scikit-image and scikit-learn (no download needed).
EMBEDDED_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "stereo_motorcycle", "china", "flower",
)
DEFAULT_PHOTO_SAMPLES = 256
# Random crops of the embedded photos span this fraction of the photo's short side.
CROP_RANGE = (0.35, 1.0)
SPEC_FORMS = "'photos', 'folder:PATH' or 'tfds:NAME[/SPLIT]'"


@functools.lru_cache(maxsize=None)
def _embedded_photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pairs: the left view
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def embedded_photos(names=EMBEDDED_PHOTOS) -> dict[str, np.ndarray]:
    """The embedded natural photos as ``{name: [H,W,3] uint8}`` (sizes differ)."""
    return {name: _embedded_photo(name) for name in names}


class _Batching:
    """``len`` / ``batches`` shared by all sources; subclasses define ``count`` and ``sample``."""

    count: int
    skipped: int = 0
    converted: int = 0

    def __len__(self) -> int:
        return self.count

    def sample(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def _samples(self, indices: range) -> list[np.ndarray]:
        return [self.sample(i) for i in indices]

    def batches(
        self, batch_size: int, *, start: int = 0, shard_index: int = 0, shard_count: int = 1
    ) -> Iterator[np.ndarray]:
        """Iterates over the samples ``start, start+1, ... < len(self)`` that belong to one shard.

        Args:
          batch_size: samples per batch; the last batch may be smaller.
          start: first sample index (resume a pass where it stopped).
          shard_index, shard_count: this host takes the indices ``i % shard_count == shard_index``.

        Returns:
          An iterator of uint8 arrays ``[B, size, size, 3]``, indices in increasing order.
        """
        check_shard(batch_size, start, shard_index, shard_count)
        first = start + (shard_index - start) % shard_count
        indices = range(first, len(self), shard_count)
        # A generator made here (not a generator function) so bad arguments fail at the call.
        return (np.stack(self._samples(indices[k:k + batch_size]))
                for k in range(0, len(indices), batch_size))

    def _check_index(self, i: int) -> int:
        if not 0 <= i < self.count:
            raise IndexError(f"sample {i} out of range for a source of {self.count}")
        return int(i)


@dataclasses.dataclass(frozen=True)
class PhotoSource(_Batching):
    """Random square crops (35-100 % of the short side), flips and rescales of the embedded photos.

    Sample ``i`` crops photo ``i % 10`` with a numpy Generator seeded by ``(seed, i)``.
    """

    size: int
    count: int = DEFAULT_PHOTO_SAMPLES
    seed: int = 0

    def sample(self, i: int) -> np.ndarray:
        i = self._check_index(i)
        photo = _embedded_photo(EMBEDDED_PHOTOS[i % len(EMBEDDED_PHOTOS)])
        rng = np.random.default_rng((self.seed, i))
        h, w = photo.shape[:2]
        side = max(1, round(min(h, w) * rng.uniform(*CROP_RANGE)))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = photo[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return resize_center_crop(np.ascontiguousarray(crop), self.size)

    def describe(self) -> str:
        return f"photos ({len(EMBEDDED_PHOTOS)} photos, {self.count} samples, seed {self.seed})"

    @property
    def preprocessing(self) -> str:
        lo, hi = CROP_RANGE
        return (f"random square crops of {lo:.0%}-{hi:.0%} of the short side, random flips, "
                f"resized (bicubic) to {self.size}")


class _EvalCropped(_Batching):
    """A source read as the model's evaluation sees it: short side resized, then the centre square."""

    @property
    def preprocessing(self) -> str:
        return (f"short side resized (bicubic) to {_resized_side(self)}, centre crop {self.size} "
                f"(crop fraction {self.crop_fraction:g})")


@dataclasses.dataclass(frozen=True)
class FolderSource(_EvalCropped):
    """Every readable image under a folder, as the model's evaluation sees it.

    Short side resized (bicubic) to ``size / crop_fraction``, then the central ``size`` square
    (:func:`jaxviz.common.images.resize_center_crop`, the transform of ``Model.preprocess``).
    """

    root: str
    files: tuple[str, ...]
    size: int
    seed: int = 0
    skipped: int = 0
    converted: int = 0
    ignored: int = 0
    crop_fraction: float = EVAL_CROP_FRACTION

    @property
    def count(self) -> int:
        return len(self.files)

    def sample(self, i: int) -> np.ndarray:
        image, _ = read_image(self.files[self._check_index(i)], draft_size=_resized_side(self))
        return resize_center_crop(image, self.size, crop_fraction=self.crop_fraction)

    def fingerprint(self) -> str:
        """A hash of every file's name, size and modification time: changes when an image does."""
        h = hashlib.sha256()
        for path in self.files:
            try:
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{path}\0missing\n".encode())
        return h.hexdigest()[:16]

    def describe(self) -> str:
        return (f"folder:{self.root} ({self.count} images, {self.skipped} skipped, "
                f"{self.converted} converted, {self.ignored} non-image files ignored)")


@dataclasses.dataclass(frozen=True)
class TfdsSource(_EvalCropped):
    """The ``image`` feature of a prepared TFDS split (array_record), read without TensorFlow."""

    name: str
    split: str
    data_dir: str
    size: int
    count: int
    seed: int = 0
    converted: int = 0
    records: Any = dataclasses.field(default=None, repr=False, compare=False)
    crop_fraction: float = EVAL_CROP_FRACTION

    def sample(self, i: int) -> np.ndarray:
        i = self._check_index(i)
        return self._decode(i, self._read(lambda: self.records[i])["image"])

    def _samples(self, indices: range) -> list[np.ndarray]:
        # One batched read: array_record fetches the records of a batch in parallel.
        records = self._read(lambda: self.records.__getitems__(list(indices)))
        return [self._decode(i, r["image"]) for i, r in zip(indices, records)]

    def _read(self, read):
        from jaxviz.data.tfds import damaged_records

        try:
            return read()
        except RuntimeError as e:  # array_record's reader: a truncated or damaged record file
            raise damaged_records(f"{self.name}/{self.split}", self.data_dir, e) from None

    def _decode(self, i: int, data: bytes) -> np.ndarray:
        label = f"tfds:{self.name}/{self.split} example {i}"
        image, _ = decode_image_bytes(data, label=label, draft_size=_resized_side(self))
        return resize_center_crop(image, self.size, crop_fraction=self.crop_fraction)

    def describe(self) -> str:
        return f"tfds:{self.name}/{self.split} ({self.count} images from {self.data_dir})"


def _resized_side(source) -> int:
    # JPEG draft decoding must not go below the short side the resize aims at
    return max(source.size, math.floor(source.size / source.crop_fraction + 1e-9))


def open_source(spec: str, *, size: int, data_dir: str | None = None,
                max_images: int | None = None, seed: int = 0, crop_fraction: float = EVAL_CROP_FRACTION):
    """Opens an image source.

    Args:
      spec: ``photos`` (embedded photos, random crops), ``folder:PATH`` or ``tfds:NAME[/SPLIT]``
        (split ``train`` by default; ``NAME`` may be ``name/config`` or carry ``:VERSION``, and
        then the split must be given).
      size: side of the square uint8 samples.
      data_dir: where prepared TFDS datasets live (tfds only; default ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``). Nothing is ever downloaded.
      max_images: number of samples (photos: default 256) or the first N images (folder, tfds).
      seed: seeds the photo crops; folder and tfds samples are in file / record order.
      crop_fraction: folder and tfds images are resized and centre-cropped like ``Model.preprocess``
        with this fraction (0.875: the reference evaluation; the photos' random crops ignore it).

    Returns:
      A :class:`PhotoSource`, :class:`FolderSource` or :class:`TfdsSource`.

    Raises:
      UsageError: malformed spec or arguments. DataError: the data cannot be used.
    """
    kind, _, arg = spec.partition(":")
    try:
        side = operator.index(size)  # ints and numpy ints; not floats or strings
    except TypeError:
        side = 0
    if side < 1:
        raise UsageError(f"image size must be a positive integer, got {size!r}")
    size = side
    if max_images is not None and max_images < 1:
        raise UsageError(f"max_images= must be >= 1, got {max_images}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    if not 0.0 < crop_fraction <= 1.0:
        raise UsageError(f"crop fraction must be in (0, 1], got {crop_fraction}")
    if data_dir is not None and kind != "tfds":
        raise UsageError(f"a data dir only applies to tfds: sources, not {spec!r}")
    if spec == "photos":
        return PhotoSource(size, max_images or DEFAULT_PHOTO_SAMPLES, seed)
    if kind == "folder" and arg:
        scan = scan_folder(arg, max_images=max_images, draft_size=size)
        return FolderSource(scan.root, scan.files, size, seed, len(scan.skipped), len(scan.converted),
                            len(scan.ignored), crop_fraction)
    if kind == "tfds" and arg:
        from jaxviz.data import tfds as tfds_folder  # imports tensorflow_datasets: only when asked for

        name, split = tfds_folder.parse_name(arg)
        root = tfds_folder.resolve_data_dir(data_dir)
        records, channels = tfds_folder.open_split(name, split, root)
        count = len(records) if max_images is None else min(max_images, len(records))
        # Records are decoded lazily; a 1- or 4-channel feature means every image gets converted.
        return TfdsSource(name, split, root, size, count, seed,
                          count if channels != 3 else 0, records, crop_fraction)
    raise UsageError(f"unknown data source {spec!r}: expected {SPEC_FORMS}")


def build_tfds_from_folder(folder: str | os.PathLike, name: str, data_dir: str | os.PathLike,
                           **kwargs):
    """Prepares an image folder as TFDS dataset ``name`` (array_record) under ``data_dir``.

    See :func:`jaxviz.data.tfds.build_tfds_from_folder` for the keyword arguments. Read it back
    with ``open_source(f"tfds:{name}/train", size=..., data_dir=data_dir)``.
    """
    from jaxviz.data import tfds as tfds_folder

    return tfds_folder.build_tfds_from_folder(folder, name, data_dir, **kwargs)


def check_shard(batch_size: int, start: int, shard_index: int, shard_count: int) -> None:
    """Raises :class:`UsageError` for a batch size, start or shard that cannot be read."""
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}")
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise UsageError(f"shard index {shard_index} is not in 0..{shard_count - 1}")
    if start < 0:
        raise UsageError(f"start must be >= 0, got {start}")
