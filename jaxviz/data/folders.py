"""Which files under a folder are images: decided once, so that sample indices stay stable.

Shared by the folder source of :mod:`jaxviz.data` and the TFDS builder of :mod:`jaxviz.data.tfds`.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from PIL import Image

from jaxviz.common.errors import DataError, ImageError
from jaxviz.common.images import read_image

__all__ = ["FolderScan", "scan_folder"]


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The readable images under a folder, decided once so that sample indices stay stable.

    Attributes:
      root: the folder, absolute.
      files: readable image paths in sorted order of their path relative to ``root``.
      converted: the subset of ``files`` that are not RGB (grayscale, RGBA, palette...).
      skipped: image files that failed to decode (truncated or corrupt JPEGs...) and entries that
        are not regular files (FIFOs, sockets, devices: never opened).
      ignored: files that are not images at all (text files, archives...).
    """

    root: str
    files: tuple[str, ...]
    converted: frozenset[str]
    skipped: tuple[str, ...]
    ignored: tuple[str, ...] = ()


def scan_folder(path: str | os.PathLike, *, max_images: int | None = None,
                draft_size: int | None = None) -> FolderScan:
    """Lists and test-decodes every file under ``path`` (recursively, hidden entries ignored).

    Args:
      path: a folder.
      max_images: stop after this many readable images.
      draft_size: decode JPEGs at reduced scale while testing (see :func:`read_image`).

    Returns:
      A :class:`FolderScan`.

    Raises:
      DataError: the folder is missing or holds no readable image.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"image folder {root} {what}")
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .cache...: never images
        found += [os.path.join(folder, n) for n in names if not n.startswith(".")]
    # Sort on the relative path split into parts: the same order on every OS and file system.
    found.sort(key=lambda p: os.path.relpath(p, root).split(os.sep))
    files, converted, skipped, ignored = [], set(), [], []
    image_extensions = set(Image.registered_extensions())
    for p in found:
        if max_images is not None and len(files) >= max_images:
            break
        if not _is_regular_file(p):  # a FIFO, socket or device would block or never end: never opened
            skipped.append(p)
            continue
        try:
            # A full decode: a truncated JPEG only fails here, not at Image.open or verify().
            _, was_converted = read_image(p, draft_size=draft_size)
        except ImageError:
            # an image that fails to decode is "skipped"; a file that never was one is "ignored"
            is_image = os.path.splitext(p)[1].lower() in image_extensions or _has_image_header(p)
            (skipped if is_image else ignored).append(p)
            continue
        files.append(p)
        if was_converted:
            converted.add(p)
    if not files:
        detail = f" ({len(skipped)} unreadable images skipped, {len(ignored)} other files)" if found else ""
        raise DataError(f"image folder {root} holds no readable image{detail}")
    return FolderScan(root, tuple(files), frozenset(converted), tuple(skipped), tuple(ignored))


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _has_image_header(path: str) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - any failure to identify means "not an image"
        return False
