"""The output-folder rule: jaxviz owns only what it wrote (README "Guarantees": the manifest, refusing
folders with files of others, ``force``, one writer per folder).

Every folder jaxviz writes (a gallery, a demo, statistics) goes through :func:`claim`. New files are staged
in a hidden folder inside the output folder, then each is renamed into place, so a failure while staging
leaves the previous files whole; only files the previous manifest lists and the new run did not write again
are removed. The lock file lives inside the folder (a writable folder under a read-only parent works); a
claim is re-entrant within one thread.

API: ``with claim(folder, force=..., what="--out") as out:`` then ``out.stage()`` (a folder to write
into), ``out.commit(staging)``, ``out.own(*names)`` (record names written in place, e.g. sub-folders,
checkpoints) and ``out.disown(*names)``; :func:`recorded_hash` gives a file's recorded hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from typing import Iterable, Iterator

from jaxviz.common.errors import OutputError

__all__ = ["MANIFEST", "LOCK", "OutputFolder", "claim", "recorded_hash", "file_hash", "foreign_entries", "record", "lock_dir"]

MANIFEST = ".jaxviz-files.json"
LOCK = ".jaxviz.lock"
_STAGING = ".jaxviz-staging-"
_TOOL = "jaxviz"
_held: dict = {}  # abspath -> (thread id, OutputFolder): claims of this process
_held_lock = threading.Lock()


def file_hash(path: str) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(folder: str) -> dict | None:
    """``{name: sha256 or None}`` of the folder's manifest; ``None`` when there is none or it is damaged."""
    path = os.path.join(folder, MANIFEST)
    try:
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        entries = data["files"] if data.get("tool") == _TOOL else None
        if not isinstance(entries, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                    for k, v in entries.items()):
            return None
        return {k: v for k, v in entries.items() if _plain(k)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_manifest(folder: str, entries: dict) -> None:
    from jaxviz.common.files import atomic_write

    atomic_write(os.path.join(folder, MANIFEST), json.dumps({"tool": _TOOL, "files": dict(sorted(entries.items()))},
                                                            indent=1))


def _plain(name) -> bool:
    return isinstance(name, str) and bool(name) and os.path.basename(name) == name and name not in (".", "..")


def _ours(name: str) -> bool:
    """Names jaxviz uses for its own bookkeeping (never a user's file)."""
    return name in (MANIFEST, LOCK) or name.startswith(_STAGING) or (name.startswith(".") and name.endswith(".tmp"))


def recorded_hash(path: str) -> str | None:
    """The SHA-256 the manifest beside ``path`` records for it (``None``: no manifest or no hash)."""
    folder, name = os.path.split(os.path.abspath(path))
    return (_read_manifest(folder) or {}).get(name)


def foreign_entries(folder: str) -> list[str]:
    """Entries of ``folder`` that jaxviz did not write (not in its manifest), sorted."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    listed = _read_manifest(folder) or {}
    return sorted(n for n in names if n not in listed and not _ours(n))


def record(folder: str, names: Iterable[str]) -> None:
    """Re-hashes files rewritten in place (e.g. ``metrics.json`` after a judge's verdict) in the manifest."""
    folder = os.path.abspath(folder)
    entries = _read_manifest(folder)
    if entries is None:
        return
    for name in names:
        path = os.path.join(folder, name)
        entries[name] = file_hash(path) if os.path.isfile(path) else None
    _write_manifest(folder, entries)


class OutputFolder:
    """A claimed output folder (see the module docstring). ``path`` is absolute."""

    def __init__(self, path: str, what: str):
        self.path, self.what = path, what
        self.previous = _read_manifest(path) or {}
        self.entries = dict(self.previous)
        self._owned: set = set()  # names recorded by own() during this claim (kept by commit)

    def _fail(self, error: OSError, tail: str = "") -> OutputError:
        return OutputError(f"{self.what} {self.path} cannot be written ({error.strerror or error}){tail}")

    def own(self, *names: str) -> None:
        """Records ``names`` (written in place, or about to be) as ours, now."""
        for name in names:
            if not _plain(name):
                raise ValueError(f"not a plain file name: {name!r}")
            self._owned.add(name)
            if name not in self.entries:
                self.entries[name] = None
        try:
            _write_manifest(self.path, self.entries)
        except OSError as e:
            raise self._fail(e) from None

    def disown(self, *names: str) -> None:
        """Drops ``names`` (removed by their writer) from the manifest."""
        for name in names:
            self.entries.pop(name, None)
        with contextlib.suppress(OSError):
            _write_manifest(self.path, self.entries)

    def stage(self) -> str:
        """A new empty hidden folder inside :attr:`path` to write a run's files into."""
        try:
            return tempfile.mkdtemp(prefix=_STAGING, dir=self.path)
        except OSError as e:
            raise self._fail(e) from None

    def discard(self, staging: str) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: str) -> None:
        """Moves the staged files into place, records them and removes the previous run's files it did
        not rewrite (only those the previous manifest lists).

        Raises:
          OutputError: a staged name is taken by a file we did not write (the run stays in ``staging``).
        """
        names = sorted(os.listdir(staging))
        taken = [n for n in names if n not in self.previous and os.path.lexists(os.path.join(self.path, n))]
        if taken:
            kept = os.path.join(self.path, os.path.basename(staging))
            raise OutputError(f"{self.what} {self.path} holds {taken[0]}, which jaxviz did not write; nothing of it "
                              f"was replaced and the new files are in {kept}")
        fresh = {}
        try:
            for name in names:
                src = os.path.join(staging, name)
                fresh[name] = file_hash(src) if os.path.isfile(src) else None
            for name in names:
                dst = os.path.join(self.path, name)
                if os.path.isdir(dst) and not os.path.islink(dst):
                    shutil.rmtree(dst)  # a sub-folder of ours (listed) is replaced
                os.replace(os.path.join(staging, name), dst)
        except OSError as e:
            raise self._fail(e, "; its previous contents are kept where not yet replaced") from None
        stale = [n for n in self.previous if n not in fresh and n not in self._owned]
        self.entries = {**{n: h for n, h in self.entries.items() if n not in stale}, **fresh}
        try:
            _write_manifest(self.path, self.entries)
        except OSError as e:
            raise self._fail(e) from None
        for name in stale:
            path = os.path.join(self.path, name)
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.remove(path)
        shutil.rmtree(staging, ignore_errors=True)


def _check_folder(path: str, what: str) -> str:
    from jaxviz.common.files import check_writable_dir

    return check_writable_dir(os.fspath(path) if isinstance(path, os.PathLike) else path, what)


@contextlib.contextmanager
def _lock(folder: str, what: str) -> Iterator[None]:
    import fcntl

    path = os.path.join(folder, LOCK)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise OutputError(f"{what} {folder} cannot be written ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                with open(path, encoding="ascii", errors="replace") as f:
                    holder = f.read().strip() or "?"
            except OSError:
                holder = "?"
            raise OutputError(f"{what} {folder} is being written by another jaxviz run (PID {holder}); "
                              "wait for it or choose another folder") from None
        try:  # the file may have been removed and recreated between open and flock: lock the one at path
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        try:  # the PID is a courtesy for the message above: the lock is the flock
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise OutputError(f"{what} {folder} cannot be written ({e.strerror or e})") from None
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)  # closing releases the lock, after the file is gone


@contextlib.contextmanager
def claim(folder, *, force: bool = False, what: str = "--out", names: Iterable[str] = ()) -> Iterator[OutputFolder]:
    """Claims ``folder`` for writing (creating it): the lock, the writability check, the foreign-file check.

    Args:
      folder: the output folder.
      force: write beside files jaxviz did not write (they are still never touched).
      what: how messages name the folder (``--out``, ``out=``, ``statistics folder``).
      names: files the run will write; one of them held by a file we did not write is refused even
        with ``force`` (before the work, not after).

    Raises:
      UsageError: not a writable folder, or it holds files we did not write and not ``force``.
      OutputError: another live run writes it.
    """
    from jaxviz.common.errors import UsageError

    path = _check_folder(folder, what)
    me = threading.get_ident()
    with _held_lock:
        held = _held.get(path)
    if held is not None and held[0] == me:  # re-entrant: the CLI claims, then RenderResult.save claims again
        yield held[1]
        return
    with _lock(path, what):
        foreign = foreign_entries(path)
        if foreign and not force:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UsageError(f"{what} {path} holds files jaxviz did not write ({foreign[0][:60]}{more}); choose an "
                             "empty or new folder, or pass force=True to write beside them (they are never touched)")
        taken = [n for n in names if n in foreign]
        if taken:
            raise UsageError(f"{what} {path} holds {taken[0]}, which jaxviz did not write and would replace; "
                             "move it or choose another folder")
        handle = OutputFolder(path, what)
        with _held_lock:
            _held[path] = (me, handle)
        try:
            yield handle
        finally:
            with _held_lock:
                _held.pop(path, None)


@contextlib.contextmanager
def lock_dir(folder: str | os.PathLike, *, what: str = "out=") -> Iterator[str]:
    """Holds the write lock of ``folder`` (``.jaxviz.lock`` inside it, holding the PID) while in the block.

    The lock is an OS file lock, so a run that died (kill -9, power loss) leaves a stale file whose
    lock is free: the next run takes it over. Output folders take it through
    :func:`jaxviz.common.outputs.claim`, which adds the output-folder rule.

    Raises:
      OutputError: another live process holds the lock.
    """
    from jaxviz.common.files import check_writable_dir

    folder = check_writable_dir(folder, what)
    with _lock(folder, what):
        yield folder
