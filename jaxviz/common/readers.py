"""Every file jaxviz reads can be damaged: one reader per format, each failure one line (README "Guarantees").

Each reader first checks that the path is a regular file (a FIFO, a device or a folder is refused
without being opened, so nothing blocks), reads it whole, verifies the content hash jaxviz wrote
for it when there is one (the folder's manifest, :mod:`jaxviz.common.outputs`, or a hash a caller
passes, e.g. ``stats.json``'s), then parses it. Any failure — missing, truncated, bit-flipped,
wrong types — raises one :class:`~jaxviz.common.errors.DataError` (or the ``error`` class a caller
passes) whose message names the file and what to do. A bad hash means the content is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from typing import Any

import numpy as np

from jaxviz.common.errors import DataError

__all__ = ["damaged", "regular_file", "read_bytes", "read_json", "read_npy", "read_npz", "sha256"]

MAX_BYTES = 4 << 30


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def damaged(path, reason: str, fix: str, error: type = DataError) -> Exception:
    """The one-line error for a file that cannot be used."""
    return error(f"{os.fspath(path)} cannot be used: {reason}; {fix}")


def regular_file(path, *, fix: str, error: type = DataError) -> str:
    """``path`` (absolute) if it is a regular file (symlinks followed); never opens it."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise damaged(path, "it is missing", fix, error) from None
    except (OSError, ValueError) as e:
        raise damaged(path, getattr(e, "strerror", None) or str(e), fix, error) from None
    if not stat.S_ISREG(st.st_mode):
        raise damaged(path, "it is not a regular file", fix, error)
    if st.st_size > MAX_BYTES:
        raise damaged(path, f"it is {st.st_size} bytes, more than any file jaxviz writes", fix, error)
    return path


def regular_tree(folder, *, fix: str, error: type = DataError) -> str:
    """``folder`` (absolute) if everything under it is a regular file or a folder (a FIFO among the files of an
    Orbax checkpoint would block its reader forever); never opens a file."""
    folder = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if not os.path.isdir(folder):
        raise damaged(folder, "it is missing or not a folder", fix, error)
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError as e:
                raise damaged(path, e.strerror or str(e), fix, error) from None
            if not regular:
                raise damaged(path, "it is not a regular file", fix, error)
    return folder


def read_bytes(path, *, fix: str, verify: bool = False, expected: str | None = None, error: type = DataError) -> bytes:
    """The bytes of a regular file, checked against ``expected`` (a SHA-256) or, with ``verify``, the hash
    the folder's manifest records for it."""
    path = regular_file(path, fix=fix, error=error)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in since the check
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise damaged(path, "it is not a regular file", fix, error)
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read()
        finally:
            os.close(fd)
    except OSError as e:
        raise damaged(path, e.strerror or str(e), fix, error) from None
    if verify and expected is None:
        from jaxviz.common.outputs import recorded_hash

        expected = recorded_hash(path)
    if expected is not None and sha256(data) != expected:
        raise damaged(path, "its content does not match the hash jaxviz recorded when writing it (damaged or "
                      "edited)", fix, error)
    return data


def read_json(path, *, fix: str, verify: bool = False, expected: str | None = None, error: type = DataError) -> Any:
    """Parsed JSON of a regular file (see :func:`read_bytes`)."""
    data = read_bytes(path, fix=fix, verify=verify, expected=expected, error=error)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise damaged(path, f"it is not valid JSON ({type(e).__name__})", fix, error) from None


def read_npy(path, *, fix: str, verify: bool = False, expected: str | None = None, error: type = DataError) -> np.ndarray:
    """The array of a ``.npy`` file (no pickles)."""
    data = read_bytes(path, fix=fix, verify=verify, expected=expected, error=error)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError, EOFError, OSError... for one cause
        raise damaged(path, f"it is not a readable .npy array ({type(e).__name__})", fix, error) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise damaged(path, "it holds no numeric array", fix, error)
    return array


def read_npz(path, *, fix: str, verify: bool = False, expected: str | None = None,
             error: type = DataError) -> dict[str, np.ndarray]:
    """``{name: array}`` of an ``.npz`` file (no pickles), every member read and checked now."""
    data = read_bytes(path, fix=fix, verify=verify, expected=expected, error=error)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # noqa: BLE001 - zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError...
        raise damaged(path, f"it is not a readable .npz archive ({type(e).__name__})", fix, error) from None
    if any(a.dtype.kind not in "biuf" for a in arrays.values()):
        raise damaged(path, "it holds a non-numeric array", fix, error)
    return arrays
