"""Read PyTorch ``.pth`` state dicts with numpy only, safely.

PyTorch checkpoints are pickles, and unpickling runs arbitrary code. This reader uses a
restricted :class:`pickle.Unpickler` that resolves only a whitelist of globals (tensor and
storage rebuilds, ``OrderedDict``) to harmless stand-ins of our own; every other global is
refused with :class:`UnsafeWeightsError` before anything can run. Both the legacy stream
format and the zip format (``torch.save`` default since 1.6) are supported.

A weight file also cannot make the reader work or allocate without bound: every pickle is first
scanned without being run (opcode count, memo indices), the object graph is converted once per
object with a depth limit, and the tensors it asks for may not add up to more bytes than a fixed
multiple of the file's size. Every failure is a :class:`WeightFileError`.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from jaxviz.common.errors import UnsafeWeightsError, WeightFileError

__all__ = ["UnsafeWeightsError", "WeightFileError", "load_torch_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_OPS = 5_000_000  # a state dict of 10k tensors takes ~30 opcodes each
MAX_MEMO = 1_000_000        # the unpickler allocates its memo up to the largest index a PUT names
MAX_DEPTH = 64              # state dicts nest 2-3 levels
MAX_NODES = 5_000_000       # containers and their entries visited while converting
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _bfloat16():
    import ml_dtypes  # ships with jax

    return np.dtype(ml_dtypes.bfloat16)


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for ``torch.<Type>Storage``: only remembers the element dtype."""

    def __init__(self, name: str):
        dtype = _STORAGE_DTYPES[name]
        self.dtype = _bfloat16() if dtype == "bfloat16" else np.dtype(dtype)


class _Storage:
    """A flat typed buffer whose bytes may arrive after the pickle (legacy format)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *unused) -> "_LazyTensor":
    return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


class _LazyTensor:
    """A strided view into a storage, materialized once all storages are read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self, budget: "_Budget") -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise WeightFileError("tensor refers to a storage that is missing from the file")
        if (self.offset < 0 or len(self.size) != len(self.stride)
                or any(n < 0 for n in self.size) or any(s < 0 for s in self.stride)):
            raise WeightFileError("tensor with a negative offset, size or stride")  # torch writes none
        extent = 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        budget.spend(math.prod(self.size) * flat.dtype.itemsize)  # stride-0 views may ask for any size
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, flat.dtype)
        if self.offset + extent > flat.size:
            raise WeightFileError("tensor view runs past the end of its storage")
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.array(view, order="C")  # a C-contiguous copy, detached from shared storages


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage], zip_reader=None):
        super().__init__(file)
        self._storages = storages
        self._zip_reader = zip_reader

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(
            f"refusing to load '{module}.{name}': only tensor data is allowed in weight files"
        )

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise UnsafeWeightsError(f"refusing unknown persistent id {saved_id!r:.80}")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeWeightsError("storage of an unsupported type")
        key = str(key)
        if key not in self._storages:
            storage = _Storage(storage_type.dtype, int(numel))
            if self._zip_reader is not None:
                storage.data = self._zip_reader(key, storage.dtype)
            self._storages[key] = storage
        return self._storages[key]


class _Budget:
    """Bytes the tensors of one file may materialize: a multiple of the file's size."""

    def __init__(self, file_size: int):
        self.left = 8 * file_size + (64 << 20)

    def spend(self, nbytes: int) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise WeightFileError("the file asks for far more tensor data than it holds")


def _check_pickle(f: BinaryIO) -> None:
    """Scans one pickle at ``f``'s position without running it; bounds its work and memo; rewinds."""
    start = f.tell()
    ops = 0
    try:
        for op, arg, _ in pickletools.genops(f):
            ops += 1
            if ops > MAX_PICKLE_OPS:
                raise WeightFileError(f"the pickle has more than {MAX_PICKLE_OPS} opcodes")
            if op.name in _PUT_OPS and isinstance(arg, int) and not 0 <= arg < MAX_MEMO:
                raise WeightFileError(f"the pickle names memo slot {arg} (limit {MAX_MEMO})")
    except WeightFileError:
        raise
    except Exception as e:  # noqa: BLE001 - genops raises ValueError and others on garbage
        raise WeightFileError(f"not a readable pickle ({type(e).__name__})") from None
    f.seek(start)


def _materialize(root, budget: _Budget):
    """The unpickled graph with tensors as arrays; each object converted once (shared parts stay shared)."""
    done: dict[int, Any] = {}
    keep = []  # holds inputs alive so their ids stay unique while converting
    visited = [0]

    def convert(obj, depth):
        if depth > MAX_DEPTH:
            raise WeightFileError(f"objects nested deeper than {MAX_DEPTH} levels: not a state dict")
        if not isinstance(obj, (_LazyTensor, dict, list, tuple)):
            return obj
        if id(obj) in done:
            return done[id(obj)]
        keep.append(obj)
        if isinstance(obj, _LazyTensor):
            out = obj.materialize(budget)
        else:
            visited[0] += 1 + len(obj)
            if visited[0] > MAX_NODES:
                raise WeightFileError(f"more than {MAX_NODES} objects: not a state dict")
            if isinstance(obj, dict):
                out = collections.OrderedDict((k, convert(v, depth + 1)) for k, v in obj.items())
            else:
                out = type(obj)(convert(v, depth + 1) for v in obj)
        done[id(obj)] = out
        return out

    return convert(root, 0)


def _load_checked(f: BinaryIO, storages, zip_reader=None):
    _check_pickle(f)
    return _RestrictedUnpickler(f, storages, zip_reader).load()


def _load_legacy(f: BinaryIO) -> Any:
    storages: dict[str, _Storage] = {}
    file_size = os.fstat(f.fileno()).st_size
    if _load_checked(f, storages) != _LEGACY_MAGIC:
        raise WeightFileError("not a PyTorch file (bad magic number)")
    _load_checked(f, storages)  # protocol version
    sys_info = _load_checked(f, storages)
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise WeightFileError("big-endian PyTorch files are not supported")
    result = _load_checked(f, storages)
    keys = _load_checked(f, storages)
    if not isinstance(keys, (list, tuple)):
        raise WeightFileError("file is corrupt (no list of storages)")
    remaining = file_size - f.tell()
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * storage.dtype.itemsize
        if numel < 0 or numel != storage.numel or nbytes > remaining - 8:
            raise WeightFileError("file is truncated or corrupt (a storage's size does not fit the file)")
        remaining -= 8 + nbytes
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise WeightFileError("file is truncated")
        storage.data = np.frombuffer(raw, storage.dtype)
    return _materialize(result, _Budget(file_size))


def _load_zip(archive: zipfile.ZipFile, file_size: int) -> Any:
    pkl_names = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pkl_names) != 1:
        raise WeightFileError("zip file holds no single data.pkl: not a PyTorch file")
    prefix = pkl_names[0][: -len("data.pkl")]
    budget = _Budget(file_size)

    def read_entry(name: str) -> bytes:
        budget.spend(archive.getinfo(name).file_size)  # before reading: a zip bomb never inflates
        return archive.read(name)

    def read_storage(key: str, dtype: np.dtype) -> np.ndarray:
        return np.frombuffer(read_entry(f"{prefix}data/{key}"), dtype)

    result = _load_checked(io.BytesIO(read_entry(pkl_names[0])), {}, zip_reader=read_storage)
    return _materialize(result, budget)


def _check_state_dict(result):
    if not isinstance(result, dict):
        raise WeightFileError(f"the file holds a {type(result).__name__}, not a state dict")
    for key, value in result.items():
        if not isinstance(value, (np.ndarray, dict)):
            raise WeightFileError(f"entry {key!r:.60} is a {type(value).__name__}, not a tensor")
    return result


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads a PyTorch state dict as numpy arrays without torch and without running code.

    Args:
      path: a ``.pth``/``.pt`` file written by ``torch.save`` (legacy or zip format).

    Returns:
      An ordered ``{name: np.ndarray}``; arrays are contiguous copies.

    Raises:
      UnsafeWeightsError: the pickle references anything but tensors/storages/OrderedDict.
      WeightFileError: the file is not a readable PyTorch file.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _check_state_dict(_load_zip(archive, os.path.getsize(path)))
        with open(path, "rb") as f:
            return _check_state_dict(_load_legacy(f))
    except WeightFileError as e:
        raise type(e)(f"{path}: {e}") from None  # name the file: the CLI prints only this line
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, KeyError,
            ValueError, TypeError, IndexError, AttributeError, OverflowError, MemoryError, RecursionError,
            OSError, zipfile.LargeZipFile, NotImplementedError) as e:
        raise WeightFileError(f"{path}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
