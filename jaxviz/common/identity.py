"""Stable identities of the Python objects a run is made of (optimizers, penalties), for resume.

A checkpoint may only be resumed by the run that wrote it (README "Guarantees"). Settings and
statistics are data; an optax optimizer or an ``image_penalty`` is code. :func:`digest` hashes
what makes such an object behave as it does, the same in every process:

- a function: its module and qualified name, and its closure cells and default arguments (the
  hyperparameters an optax transformation closes over: ``adam(0.05)`` ≠ ``adam(0.5)``); for your
  own code (not an installed package) also its code object (bytecode, constants, names) and the
  module globals it reads;
- arrays: dtype, shape and bytes; numbers, strings, containers, NamedTuples, dataclasses and plain
  objects: their values, recursively.

Something that cannot be identified this way (a generator, a lock, an object whose only
description is its address) raises :class:`Unidentifiable`; :func:`identify` turns that into a
one-line :class:`~jaxviz.errors.UsageError`, because a run that cannot be identified cannot be
resumed safely. :func:`optimizer_identity` adds the optimizer's state on a probe (``init`` of
zeros shaped like the image parameters), which holds e.g. ``inject_hyperparams``' values.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import re
import sys
import types
from typing import Any

import numpy as np

from jaxviz.common.errors import UsageError

__all__ = ["Unidentifiable", "digest", "identify", "optimizer_identity"]

_MAX_DEPTH = 64
_LIBRARY_PATHS = ("site-packages", "dist-packages")  # installed code: named by module, name and version
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Unidentifiable(Exception):
    """Raised by :func:`digest` with a short description of the part that has no stable identity."""


@functools.lru_cache(maxsize=64)
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get(package), "__version__", "")


def _is_library(code: types.CodeType, module: str | None) -> bool:
    root = (module or "").split(".")[0]
    if root == "jaxviz":
        return True
    filename = code.co_filename.replace("\\", "/")
    return any(part in filename for part in _LIBRARY_PATHS) or filename.startswith("<frozen")


class _Hasher:
    def __init__(self):
        self.h = hashlib.sha256()
        self.active: set[int] = set()

    def put(self, *parts: str) -> None:
        for part in parts:
            self.h.update(part.encode("utf-8", "surrogatepass"))
            self.h.update(b"\0")

    def walk(self, obj: Any, where: str, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise Unidentifiable(f"{where} nests too deeply")
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            self.put(type(obj).__name__, repr(obj))
            return
        if isinstance(obj, (type, types.ModuleType)):
            self.put("name", getattr(obj, "__module__", ""), getattr(obj, "__qualname__", obj.__name__))
            return
        if isinstance(obj, np.dtype):
            self.put("dtype", obj.str)
            return
        key = id(obj)
        if key in self.active:  # a cycle (a recursive function, an object pointing back)
            self.put("cycle")
            return
        self.active.add(key)
        try:
            self._walk(obj, where, depth + 1)
        finally:
            self.active.discard(key)

    def _walk(self, obj, where, depth):  # noqa: C901 - one case per kind of object
        import jax

        if isinstance(obj, jax.core.Tracer):
            raise Unidentifiable(f"{where} is a traced value")
        if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
            array = np.asarray(obj)
            self.put("array", array.dtype.str, repr(array.shape))
            self.h.update(np.ascontiguousarray(array).tobytes())
            return
        if isinstance(obj, (tuple, list)) and not hasattr(obj, "_fields"):
            self.put(type(obj).__name__, str(len(obj)))
            for i, item in enumerate(obj):
                self.walk(item, f"{where}[{i}]", depth)
            return
        if isinstance(obj, (set, frozenset)):
            self.put(type(obj).__name__, *sorted(repr(item) for item in obj))
            return
        if isinstance(obj, dict):
            self.put("dict", str(len(obj)))
            for k in sorted(obj, key=repr):
                self.walk(k, where, depth)
                self.walk(obj[k], f"{where}[{k!r}]", depth)
            return
        if hasattr(obj, "_fields") and isinstance(obj, tuple):  # NamedTuple (optax's GradientTransformation)
            self.put("namedtuple", type(obj).__module__, type(obj).__qualname__)
            for name, value in zip(obj._fields, obj):
                self.walk(value, f"{where}.{name}", depth)
            return
        if isinstance(obj, functools.partial):
            self.put("partial")
            self.walk(obj.func, f"{where}.func", depth)
            self.walk(obj.args, f"{where}.args", depth)
            self.walk(obj.keywords, f"{where}.keywords", depth)
            return
        if isinstance(obj, types.MethodType):
            self.put("method")
            self.walk(obj.__func__, where, depth)
            self.walk(obj.__self__, f"{where}.__self__", depth)
            return
        if isinstance(obj, types.FunctionType):
            self._function(obj, where, depth)
            return
        if isinstance(obj, types.CodeType):
            self._code(obj, where, depth)
            return
        if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType, np.ufunc)):
            self.put("builtin", getattr(obj, "__module__", "") or "", getattr(obj, "__qualname__", obj.__name__))
            return
        if hasattr(obj, "__wrapped__") and callable(obj):  # jax.jit, functools.wraps
            self.put("wrapped", type(obj).__qualname__)
            self.walk(obj.__wrapped__, where, depth)
            return
        if isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            raise Unidentifiable(f"{where} is a {type(obj).__name__} (its state cannot be identified)")
        if dataclasses.is_dataclass(obj):
            self.put("dataclass", type(obj).__module__, type(obj).__qualname__)
            for f in dataclasses.fields(obj):
                self.walk(getattr(obj, f.name), f"{where}.{f.name}", depth)
            return
        state = getattr(obj, "__dict__", None)
        slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ()) if hasattr(obj, s)]
        if isinstance(state, dict) or slots:  # a plain object: its class and attribute values
            self.put("object", type(obj).__module__, type(obj).__qualname__)
            self.walk(dict(state or {}), where, depth)
            for s in slots:
                self.walk(getattr(obj, s), f"{where}.{s}", depth)
            return
        text = repr(obj)
        if _ADDRESS.search(text) or text.startswith("<"):
            raise Unidentifiable(f"{where} holds a {type(obj).__name__} object with no stable description")
        self.put("repr", type(obj).__qualname__, text)

    def _function(self, fn: types.FunctionType, where: str, depth: int) -> None:
        module = fn.__module__ or ""
        library = _is_library(fn.__code__, module)
        self.put("function", module, fn.__qualname__, _version(module.split(".")[0]) if library else "")
        if not library:  # your own code: what it does and the globals it reads
            self._code(fn.__code__, where, depth)
            for name in _global_names(fn.__code__):
                if name in fn.__globals__:
                    self.put("global", name)
                    self.walk(fn.__globals__[name], f"{where} (global {name})", depth)
        self.walk(fn.__defaults__, f"{where} defaults", depth)
        self.walk(fn.__kwdefaults__, f"{where} defaults", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                self.put("cell", name, "<empty>")
                continue
            self.put("cell", name)
            self.walk(value, f"{where} (closure {name})", depth)

    def _code(self, code: types.CodeType, where: str, depth: int) -> None:
        self.put("code", code.co_name, repr(code.co_names), repr(code.co_varnames), str(code.co_argcount))
        self.h.update(code.co_code)
        for const in code.co_consts:
            self.walk(const, where, depth)


def _global_names(code: types.CodeType):
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return dict.fromkeys(names)


def digest(obj: Any) -> str:
    """A hex digest of what makes ``obj`` behave as it does (see the module docstring).

    Raises:
      Unidentifiable: some part of ``obj`` has no stable identity.
    """
    hasher = _Hasher()
    hasher.walk(obj, type(obj).__name__)
    return hasher.h.hexdigest()[:24]


def identify(obj: Any, *, argument: str) -> str:
    """``"<description> <digest>"`` of ``obj`` for a checkpoint's identity.

    Raises:
      UsageError: ``obj`` cannot be identified (one line naming ``argument`` and the part).
    """
    try:
        code = digest(obj)
    except Unidentifiable as e:
        raise UsageError(f"checkpoint_dir= cannot resume safely: {argument} cannot be identified ({e}); "
                         "use plain values, or run without checkpoint_dir") from None
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{_ADDRESS.sub('', name)} <{code}>"


def optimizer_identity(optimizer, probe) -> str:
    """An optax optimizer's identity: its functions' :func:`digest` and its state on ``probe``.

    Args:
      optimizer: an ``optax.GradientTransformation``.
      probe: a params pytree shaped like the ones it will update (e.g. zeros).

    Raises:
      UsageError: the optimizer cannot be identified.
    """
    import jax

    code = identify(optimizer, argument="optimizer=")
    try:
        state = optimizer.init(probe)
        leaves, treedef = jax.tree.flatten(state)
        state_digest = digest((str(treedef), [np.asarray(leaf) for leaf in leaves]))
    except Unidentifiable as e:
        raise UsageError(f"checkpoint_dir= cannot resume safely: optimizer= state cannot be identified ({e})") from None
    return f"{code} state <{state_digest}>"
