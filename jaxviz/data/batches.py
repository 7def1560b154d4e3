"""Your own images as a statistics source: numpy arrays and any iterable of batches.

:func:`as_source` turns what a user has into what :func:`jaxviz.stats.collect.collect_moments` reads
(``batches(batch_size, *, start, shard_index, shard_count)``, ``len`` when known, ``size``):

- a numpy array ``[N, S, S, 3]`` (an :class:`ArraySource`: length known, content hashed, resumable);
- any iterable of batches ``[B, S, S, 3]`` or single images ``[S, S, 3]`` — a list, a generator, a
  ``tf.data`` dataset's ``as_numpy_iterator()``, a ``grain`` loader — whose items may also be dicts
  holding the images under ``image`` (an :class:`IterableSource`: length optional, read once, in order).

Images are uint8 in 0..255, or float in ``[0, 1]`` (rounded to uint8); all share one square size
(resize first, e.g. with :func:`jaxviz.common.images.resize_center_crop`). jaxviz's own sources
(:mod:`jaxviz.data.sources`) pass through unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Iterable, Iterator

import numpy as np

from jaxviz.common.errors import DataError, UsageError
from jaxviz.data.sources import check_shard

__all__ = ["ArraySource", "IterableSource", "as_source", "as_uint8_images", "length"]

IMAGE_KEYS = ("image", "images")


def as_uint8_images(item: Any, *, where: str = "batch", key: str | None = None) -> np.ndarray:
    """One item of a user's source as uint8 ``[B, S, S, 3]``.

    Args:
      item: an array-like ``[B, H, W, 3]`` or ``[H, W, 3]`` (uint8, or float in ``[0, 1]``), or a
        mapping holding one under ``key`` (default: ``image`` or ``images``).
      where: how to name the item in an error (``batch 3``).
      key: the mapping key of the images.

    Raises:
      DataError: not images, not square, or float values outside ``[0, 1]``.
    """
    if isinstance(item, dict) or hasattr(item, "keys") and hasattr(item, "__getitem__") and not hasattr(item, "shape"):
        keys = (key,) if key else IMAGE_KEYS
        found = next((k for k in keys if k in item), None)
        if found is None:
            raise DataError(f"{where} is a mapping without an image key (looked for {', '.join(map(repr, keys))}; "
                            f"it has {', '.join(map(repr, list(item)[:6]))}); pass image_key=")
        item = item[found]
    array = np.asarray(item)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise DataError(f"{where} must hold RGB images [B, H, W, 3] or [H, W, 3], got shape {array.shape}")
    if array.shape[1] != array.shape[2]:
        raise DataError(f"{where} holds {array.shape[1]}x{array.shape[2]} images; the statistics pass needs square "
                        "images of one size (e.g. jaxviz.common.images.resize_center_crop)")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise DataError(f"{where}: float images must be in [0, 1] (or uint8 0..255), got values in "
                            f"[{float(np.nanmin(array)):.3g}, {float(np.nanmax(array)):.3g}]")
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    raise DataError(f"{where}: images must be uint8 0..255 or float in [0, 1], got dtype {array.dtype}")


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """A numpy array of images ``[N, S, S, 3]`` (uint8) as a source: sample ``i`` is ``images[i]``."""

    images: np.ndarray

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int, *, start: int = 0, shard_index: int = 0,
                shard_count: int = 1) -> Iterator[np.ndarray]:
        """Images ``start, start+1, ...`` of this shard (``i % shard_count == shard_index``), in batches."""
        check_shard(batch_size, start, shard_index, shard_count)
        first = start + (shard_index - start) % shard_count
        mine = self.images[first::shard_count]
        return (mine[k:k + batch_size] for k in range(0, len(mine), batch_size))

    def fingerprint(self) -> str:
        """A hash of the images' bytes: another array is another pass (checkpoint identity)."""
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()[:16]

    def describe(self) -> str:
        return f"array ({len(self)} images of {self.size} px)"

    preprocessing = "as given (a numpy array)"


class IterableSource:
    """An iterable of batches (or images, or dicts holding them) read once, in order.

    Args:
      iterable: what to read; ``len(iterable)``, when it has one, is taken as the number of *images*
        only if ``count`` is not given and its items are single images; otherwise the total is unknown
        (progress then shows no total).
      count: the number of images, if you know it (for progress).
      image_key: the key of the images when items are mappings (default ``image`` or ``images``).
    """

    preprocessing = "as given (an iterable of batches)"

    def __init__(self, iterable: Iterable, *, count: int | None = None, image_key: str | None = None):
        if count is not None and (isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1):
            raise UsageError(f"count= must be a positive integer, got {count!r}")
        self._iterable = iterable
        self._count = None if count is None else int(count)
        self._key = image_key
        self._head: list[np.ndarray] = []
        self._it: Iterator | None = None
        self._used = False

    def _items(self) -> Iterator[np.ndarray]:
        if self._it is None:
            self._it = iter(self._iterable)
        n = 0
        for item in self._it:
            n += 1
            yield as_uint8_images(item, where=f"batch {n - 1} of the source", key=self._key)

    @property
    def count(self) -> int | None:
        """The number of images when known, else ``None``."""
        return self._count

    @property
    def size(self) -> int:
        """The images' side (reads the first batch and keeps it for :meth:`batches`)."""
        if not self._head:
            first = next(self._items(), None)
            if first is None:
                raise UsageError("the data source holds no images")
            self._head.append(first)
        return int(self._head[0].shape[1])

    def batches(self, batch_size: int, *, start: int = 0, shard_index: int = 0,
                shard_count: int = 1) -> Iterator[np.ndarray]:
        """Rebatches the stream into ``batch_size`` images (the last batch may be smaller).

        The stream is read once: a second call raises :class:`UsageError` (a generator cannot rewind).
        """
        check_shard(batch_size, start, shard_index, shard_count)
        if self._used:
            raise UsageError("this iterable source was already read (a generator cannot be read twice); "
                             "pass a new iterable or a numpy array")
        self._used = True
        return self._rebatch(batch_size, start, shard_index, shard_count)

    def _rebatch(self, batch_size, start, shard_index, shard_count):
        pending: list[np.ndarray] = []
        have, index, shape = 0, 0, None

        def stream():
            yield from self._head
            self._head.clear()
            yield from self._items()

        for number, images in enumerate(stream()):
            if shape is None:
                shape = images.shape[1:]
            elif images.shape[1:] != shape:  # the pass compiles for one shape: say which batch broke it
                raise DataError(f"batch {number} of the source holds images of {images.shape[1]}x{images.shape[2]} "
                                f"px, the batches before it {shape[0]}x{shape[1]} px; the statistics pass needs "
                                "one size (resize them to one side first)")
            n = len(images)
            keep = [j for j in range(n) if index + j >= start and (index + j) % shard_count == shard_index]
            index += n
            if len(keep) != n:
                images = images[keep]
            if not len(images):
                continue
            pending.append(images)
            have += len(images)
            while have >= batch_size:
                joined = np.concatenate(pending)
                yield joined[:batch_size]
                pending, have = ([joined[batch_size:]] if have > batch_size else []), have - batch_size
        if have:
            yield np.concatenate(pending)

    def __repr__(self):
        total = "unknown length" if self._count is None else f"{self._count} images"
        return f"IterableSource({type(self._iterable).__name__}, {total})"

    def describe(self) -> str:
        total = "unknown length" if self._count is None else f"{self._count} images"
        return f"iterable ({type(self._iterable).__name__}, {total})"


def as_source(source, *, count: int | None = None, image_key: str | None = None):
    """What :func:`jaxviz.stats.collect.collect_moments` reads, from a jaxviz source, an array or an iterable.

    Raises:
      UsageError: ``source`` is none of these (e.g. a string: use :func:`jaxviz.data.open_source`).
    """
    if hasattr(source, "batches") and hasattr(source, "__len__"):
        return source  # a jaxviz.data source (or one of ours)
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__") and hasattr(source, "shape")):
        return ArraySource(as_uint8_images(source, where="the images array"))
    if isinstance(source, (str, bytes)):
        raise UsageError(f"source={source!r} is a string; open it with jaxviz.data.open_source({source!r}, size=...)")
    if isinstance(source, dict) or not hasattr(source, "__iter__"):
        raise UsageError(f"source= must be a numpy array, an iterable of image batches or a jaxviz.data source, "
                         f"got {type(source).__name__}")
    return IterableSource(source, count=count, image_key=image_key)


def length(source) -> int | None:
    """The number of images of a source, or ``None`` when it is not known up front."""
    if isinstance(source, IterableSource):
        return source.count
    return len(source)
