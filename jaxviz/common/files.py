"""Writing files so that a reader never sees half of one, and JSON of numpy values.

Every output of jaxviz (images, metrics, statistics metadata, cached weights) goes through
:func:`atomic_write`: the bytes go to a uniquely named temporary sibling, are flushed to disk
(``fsync``) and then renamed over the target, so a crash, a full disk or a second process writing
the same file leaves either the old file or the new one, never a mix. The temporary is removed when
writing fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Any, Callable

import numpy as np

__all__ = ["check_writable_dir", "atomic_write", "atomic_write_json", "json_default", "to_json", "dumps", "npy_bytes",
           "content_hash"]


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[Any], None]) -> str:
    """Replaces ``path`` with ``data`` in one rename.

    Args:
      path: target file; its folder must exist.
      data: bytes, text (UTF-8), or a function ``write(binary_file)`` that writes the content
        (e.g. ``lambda f: np.save(f, array)``).

    Returns:
      ``path`` as given.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy scalars and arrays as Python values, else ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__array__"):  # jax arrays
        return np.asarray(value).tolist()
    return str(value)


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` with :func:`json_default`."""
    return json.dumps(value, default=json_default, **kwargs)


def to_json(value: Any, *, sort_keys: bool = False) -> Any:
    """``value`` as plain JSON types (what a JSON round trip would give back)."""
    return json.loads(dumps(value, sort_keys=sort_keys))


def atomic_write_json(path: str | os.PathLike, value: Any, *, indent: int | None = 1, sort_keys: bool = False) -> str:
    """Writes ``value`` as JSON with :func:`atomic_write` (numpy values converted)."""
    return atomic_write(path, dumps(value, indent=indent, sort_keys=sort_keys))


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in ``.npy`` format (for :func:`atomic_write`)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def content_hash(*arrays) -> str:
    """A SHA-256 (hex, 16 digits) of arrays' dtypes, shapes and bytes: equal iff the contents are."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_writable_dir(path: str, what: str = "--out") -> str:
    """Creates ``path`` if needed and checks it is a writable directory.

    Raises:
      UsageError: not creatable or not writable.
    """
    from jaxviz.common.errors import UsageError

    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise UsageError(f"{what} must name a folder, got {path!r}")
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the name
        shown = path if len(path) <= 80 else f"{path[:77]}..."
        raise UsageError(f"{what} {shown} cannot be created: {getattr(e, 'strerror', None) or e}") from None
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path} is not a writable directory")
    return path


def write_failure(error: BaseException) -> str:
    """The cause of a failed write in a few words: the OS's (``No space left on device``), also when
    tensorstore (Orbax) wraps it in its own error text."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error)
    for phrase in ("No space left on device", "Disk quota exceeded", "Read-only file system", "Permission denied"):
        if phrase in text:
            return phrase
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


@contextlib.contextmanager
def stderr_held():
    """Holds what is printed to file descriptor 2 while in the block (Orbax's worker threads and tensorstore's
    C++ callbacks print their tracebacks there, not through Python): replayed if the block succeeds, dropped
    if it raises, so a failed write is the caller's one line.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        held = tempfile.TemporaryFile()
    except OSError:  # no descriptor to spare: print as usual
        yield
        return
    failed = False
    try:
        os.dup2(held.fileno(), 2)
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not failed:
            held.seek(0)
            with contextlib.suppress(OSError):
                os.write(2, held.read())
        held.close()
