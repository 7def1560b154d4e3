"""Render programs kept on disk in exported form, so a warm run neither traces nor lowers (why, what a file's
name hashes and the switches: README "Start-up", paragraph "Stored programs").

A :class:`StoredFunction` wraps one jitted render program: the first call with a given argument signature
exports it (:func:`jax.export.export`) to ``<cache folder>/programs``; this and every later process run the
deserialized :class:`jax.export.Exported` (``exported.call``), whose lowering is a parse of the stored module
and whose XLA compile the persistent cache (:mod:`jaxviz.common.cache`) then skips. The caller's key names the
model and the settings the program closes over. A program that cannot be exported runs as a plain jitted function.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import sys
import threading
import warnings
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxviz.common import cache as cache_lib
from jaxviz.common import pytree, readers
from jaxviz.common.errors import JaxvizError
from jaxviz.common.files import atomic_write

__all__ = ["StoredFunction", "programs_dir", "source_digest", "environment_key", "storable", "MAX_BYTES"]

FORMAT = 2  # the file layout below: one JSON header line (with the payload's SHA-256), then the serialized Exported
MAX_BYTES = 1 << 30  # the folder is trimmed (oldest first) past this size
_MAGIC = b"jaxviz-program"

_lock = threading.Lock()
_registered: set = set()  # NamedTuple classes registered for jax.export's tree serialization


def programs_dir() -> str | None:
    """``<cache folder>/programs``, or ``None`` when stored programs are off (``JAXVIZ_COMPILE_CACHE=0``)."""
    if cache_lib.compile_cache_disabled():
        return None
    return os.path.join(cache_lib.cache_dir(), "programs")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of every ``.py`` file of the installed jaxviz (a changed line is a new program)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    return tuple((p, _version(p)) for p in ("jax", "jaxlib", "flax", "optax"))


def environment_key() -> str:
    """What besides the caller's key and the arguments changes an exported program."""
    flags = {name: str(getattr(jax.config, name, None)) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_numpy_rank_promotion", "jax_default_prng_impl",
        "jax_threefry_partitionable", "jax_softmax_custom_jvp")}
    devices = [(d.platform, d.device_kind) for d in jax.devices()]
    return json.dumps({"format": FORMAT, "jaxviz": source_digest(), "versions": _versions(), "flags": flags,
                       "devices": devices}, sort_keys=True)


_VERSIONED = ("jaxviz", "optax", "flax", "jax", "jaxlib", "chex")  # packages whose code the key versions


def _versioned(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] in _VERSIONED


def _versioned_value(value) -> bool:
    """A static setting whose meaning is versioned: a plain value, or an object of a versioned package."""
    if value is None or isinstance(value, (str, bytes, bool, int, float, complex)):
        return True
    if isinstance(value, (tuple, list, frozenset)):
        return all(_versioned_value(v) for v in value)
    if isinstance(value, dict):
        return all(_versioned_value(k) and _versioned_value(v) for k, v in value.items())
    if isinstance(value, type) or inspect.isfunction(value) or inspect.isbuiltin(value):
        return _versioned(value)
    return _versioned(type(value))


def storable(treedef) -> bool:
    """The one rule for what can be stored: every node of the arguments' tree is a container (a NamedTuple
    included: pure data, its fields are in the structure) or a class of a package whose code the key
    versions (:func:`source_digest`, :func:`environment_key`), and its text names every static setting by
    value (no object address, lambda or local class). A user's own part is reused in-process by JAX's
    cache, but never stored: its code could change under the same name."""
    todo = [treedef]
    while todo:
        node = todo.pop()
        kind = node.node_data()
        cls = None if kind is None else kind[0]
        if cls is not None and cls not in (tuple, list, dict, type(None), collections.OrderedDict) and not (
                issubclass(cls, tuple) and hasattr(cls, "_fields")):
            if not (_versioned(cls) and _versioned_value(kind[1])):  # the node's code, and its static values'
                return False
        todo.extend(node.children())
    return pytree.by_value(str(treedef))


def _signature(leaves: Sequence[Any], treedef) -> str:
    def describe(leaf):
        sharding = getattr(leaf, "sharding", None)
        where = "" if sharding is None else f"{sharding!r}"
        return f"{leaf.shape}:{leaf.dtype}:{getattr(leaf, 'weak_type', False)}:{where}"

    return f"{treedef}|" + "|".join(describe(leaf) for leaf in leaves)


def _namedtuples(treedef) -> list[type] | None:
    """The NamedTuple node classes of ``treedef``; ``None`` if it has another custom node."""
    found, todo = [], [treedef]
    while todo:
        node = todo.pop()
        kind = node.node_data()
        if kind is not None:
            cls = kind[0]
            if cls not in (tuple, list, dict, type(None), collections.OrderedDict):
                if not (issubclass(cls, tuple) and hasattr(cls, "_fields")):
                    return None
                found.append(cls)
        todo.extend(node.children())
    return found


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _register(classes) -> None:
    with _lock:
        for cls in classes:
            if cls not in _registered:
                with contextlib.suppress(ValueError):  # registered already (by another library, or a reloaded module)
                    jax.export.register_namedtuple_serialization(cls, serialized_name=_class_name(cls))
                _registered.add(cls)


def _lookup(name: str) -> type | None:
    """A NamedTuple class named in a stored file, from a module this process has imported already: a file
    never makes jaxviz import anything (a module's import can run code, e.g. ``jaxviz.__main__``)."""
    module, _, qualname = name.partition(":")
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields") else None


class StoredFunction:
    """A function jitted and run through its exported form, kept on disk under ``key``.

    Args:
      fn: the function to jit (positional arguments only).
      name: a readable name (files, messages).
      key: stable text describing everything the function closes over; ``None``: never stored
        (the jitted function runs as it is). Arguments whose tree is not :func:`storable` run the plain program.
      donate_argnums: positional arguments whose buffers the program may reuse (as ``jax.jit``'s).
      compiler_options: XLA options of the compile (as ``jax.jit``'s).
    """

    def __init__(self, fn: Callable, *, name: str, key: str | None, donate_argnums: Sequence[int] = (),
                 compiler_options: dict | None = None):
        self.fn, self.name, self.key = fn, name, key
        # the plain program: when not stored, and for cost analysis (`.jitted.lower(...)`)
        self.jitted = jax.jit(fn, donate_argnums=donate_argnums, compiler_options=compiler_options)
        self.donate_argnums = tuple(donate_argnums)
        self.compiler_options = compiler_options
        self._calls: dict = {}  # signature -> the compiled call of the flat leaves (False: the plain program)

    def __call__(self, *args):
        folder = programs_dir() if self.key is not None else None
        if folder is None:
            return self.jitted(*args)
        leaves, treedef = jax.tree.flatten(args)
        if not all(isinstance(leaf, (jax.Array, np.ndarray, np.generic)) for leaf in leaves):
            return self.jitted(*args)  # Python scalars: their weak types make the plain program the safe one
        signature = _signature(leaves, treedef)
        entry = self._calls.get(signature)
        if entry is None and not storable(treedef):
            entry = self._calls[signature] = False
        if entry is None:
            entry = self._calls[signature] = self._prepare(folder, args, leaves, treedef, signature)
        if entry is False:  # could not be exported: the plain program
            return self.jitted(*args)
        return entry(*leaves)

    def _prepare(self, folder, args, leaves, treedef, signature):
        digest = hashlib.sha256("\n".join((environment_key(), self.key, signature)).encode()).hexdigest()
        path = os.path.join(folder, f"{self.name}-{digest[:40]}.jaxexport")
        exported = self._load(path)
        if exported is None:
            exported = self._export(treedef, leaves)
            if exported is None:
                return False
            self._save(path, exported)
        donate = tuple(i for i, leaf_arg in enumerate(_leaf_args(treedef, len(args))) if leaf_arg in self.donate_argnums)
        try:  # compiled ahead of the call: a program that does not fit these arguments is found here, not mid-run
            return jax.jit(exported.call, donate_argnums=donate, compiler_options=self.compiler_options).lower(
                *leaves).compile()
        except Exception as err:  # noqa: BLE001 — a cache never fails a run: the plain program instead
            warnings.warn(f"jaxviz: the stored {self.name} program does not load ({type(err).__name__}: {err}); "
                          "it is traced instead", RuntimeWarning, stacklevel=4)
            return False

    def _export(self, treedef, leaves):
        specs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=getattr(leaf, "sharding", None),
                                      weak_type=getattr(leaf, "weak_type", False)) for leaf in leaves]

        def flat(*flat_args):
            return self.fn(*jax.tree.unflatten(treedef, flat_args))

        try:
            return jax.export.export(jax.jit(flat))(*specs)
        except Exception as err:  # noqa: BLE001 — e.g. a host callback: run the plain program instead
            warnings.warn(f"jaxviz: {self.name} is not stored ({type(err).__name__}: {err}); it is traced each run",
                          RuntimeWarning, stacklevel=4)
            return None

    @staticmethod
    def _load(path: str):
        try:  # a regular file only (a FIFO would block), and its payload as written (one flipped bit: rebuilt)
            blob = readers.read_bytes(path, fix="it is rebuilt")
        except JaxvizError:
            return None
        try:
            magic, header, payload = blob.split(b"\n", 2)
            header = json.loads(header)
            if magic != _MAGIC or header.get("sha256") != readers.sha256(payload):
                raise ValueError("not a jaxviz program file, or damaged")
            classes = [_lookup(name) for name in header["namedtuples"]]
            if any(cls is None for cls in classes):
                raise ValueError("a state class it names is not loaded")
            _register(classes)
            return jax.export.deserialize(bytearray(payload))
        except Exception:  # noqa: BLE001 — unreadable: export again (it is replaced)
            with contextlib.suppress(OSError):
                os.remove(path)
            return None

    @staticmethod
    def _save(path: str, exported) -> None:
        classes = _namedtuples(exported.out_tree)
        if classes is None:
            return  # the output has a node jax.export cannot serialize: kept in this process only
        _register(classes)
        with contextlib.suppress(Exception):  # noqa: BLE001 — a cache: a read-only or full disk is never an error
            payload = exported.serialize()
            header = json.dumps({"namedtuples": sorted({_class_name(c) for c in classes}),
                                 "sha256": readers.sha256(bytes(payload))}).encode()
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            atomic_write(path, b"\n".join((_MAGIC, header, bytes(payload))))
            _trim(os.path.dirname(path))


def _leaf_args(treedef, n_args: int) -> list[int]:
    """For each leaf of the flattened argument tuple, the index of the positional argument it belongs to."""
    owners = []
    for i, child in enumerate(treedef.children()[:n_args]):
        owners += [i] * child.num_leaves
    return owners


def _trim(folder: str, max_bytes: int = MAX_BYTES) -> None:
    entries = []
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            st = os.stat(path)
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.remove(path)
            total -= size
