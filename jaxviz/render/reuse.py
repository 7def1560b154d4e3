"""Compiled programs kept across :func:`jaxviz.render.render_images` calls in one process.

A notebook renders the same structure again and again (another class, another seed, another cell).
Without this module each call built new closures, so ``jax.jit`` traced and lowered the model again
(seconds on CPU) before the persistent XLA cache could help. Here the :class:`~jaxviz.render.step.Programs`
of a call are kept under a key made of everything the closures capture, and a later call with an equal
key gets the same jitted functions: JAX's own trace cache then skips tracing entirely.

What a key holds (each part by value where it can be described, otherwise by object identity):
the model (identity: its functions are what is traced), the objective's layers and tree structure,
the parameterization, transform, prior and image penalty (type + :func:`~jaxviz.common.checkpoint.fingerprint`,
which includes a digest of the arrays a dataclass holds; by identity for objects that are not dataclasses),
the optimizer (the recipe's description and step count, or a custom optimizer's identity), the image side,
mesh, chunk length, compute dtype and whether redirected programs are needed. Entries keep the objects of
their key alive, so an identity is never reused by another object while its entry exists.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any, Callable, Hashable

import jax

from jaxviz.common import hardware
from jaxviz.common.checkpoint import fingerprint
from jaxviz.render import step as step_lib
from jaxviz.render import stored as stored_lib

__all__ = ["part_key", "cached_programs", "programs_for", "store_key", "clear", "MAX_ENTRIES"]

MAX_ENTRIES = 16  # structures kept; each holds compiled executables (tens of MB for Lite0)

_entries: "collections.OrderedDict[Hashable, tuple[Any, Any]]" = collections.OrderedDict()
_lock = threading.Lock()


def part_key(obj: Any) -> Hashable:
    """A hashable key of one part: by value for dataclasses and described objects, else by identity."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if dataclasses.is_dataclass(obj) or getattr(obj, "fingerprint", None) is not None:
        # a repr names a function field without telling two lambdas apart: such fields by identity
        functions = tuple(id(v) for v in vars(obj).values() if callable(v) and not dataclasses.is_dataclass(v)) \
            if hasattr(obj, "__dict__") else ()
        return (type(obj), fingerprint(obj), functions)
    return ("id", id(obj))


def cached_programs(key: Hashable, keep_alive: Any, build: Callable[[], Any]):
    """The programs stored under ``key``, built by ``build()`` (and stored) on a miss.

    Args:
      key: from :func:`part_key` of every captured part, plus the static settings.
      keep_alive: the objects whose identity is in ``key`` (held while the entry lives).
      build: makes the programs.

    Returns:
      the programs.
    """
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key][0]
    programs = build()
    with _lock:
        _entries[key] = (programs, keep_alive)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return programs


def programs_for(model, objective, parts: dict, config, mesh, signature, optimizer_key):
    """:func:`~jaxviz.render.step.compile_programs` for a render, kept across calls: a second render of the
    same structure does not trace again (and its programs are stored on disk: :func:`store_key`).

    Args:
      model, objective: as ``compile_programs``.
      parts: ``{parameterization, transform, optimizer, prior, image_penalty}``.
      config: the :class:`~jaxviz.recipes.config.RenderConfig`.
      mesh: the mesh of the launch.
      signature: the stacked objectives' tree structure and the device count.
      optimizer_key: ``("recipe", description, steps)`` for a recipe's optimizer, else :func:`part_key`.
    """
    platform = mesh.devices.flat[0].platform
    options = hardware.compiler_options(mesh.devices.flat)
    key = (("model", id(model)), tuple(objective.layers), signature, mesh, config.size, config.chunk_steps,
           config.compute_dtype, config.redirect_steps > 0, optimizer_key, step_lib.vectorize_images(platform),
           tuple(sorted((options or {}).items())),
           *(part_key(parts[k]) for k in ("parameterization", "transform", "prior", "image_penalty")))
    return cached_programs(key, (model, *parts.values()), lambda: step_lib.compile_programs(
        model, objective, **parts, size=config.size, mesh=mesh, chunk_steps=config.chunk_steps,
        compute_dtype=config.compute_dtype, redirect=config.redirect_steps > 0,
        store_key=store_key(model, objective, parts, optimizer_key)))


def store_key(model, objective, parts: dict, optimizer_key) -> str | None:
    """Stable text of everything the programs close over (:mod:`jaxviz.render.stored`); ``None`` when a
    part cannot be described (a user's model, class or optimizer): those programs are traced each run."""
    from jaxviz.models import program_identity

    texts = [program_identity(model), stored_lib.describe_tree(objective), repr(tuple(objective.layers)),
             *(stored_lib.describe(parts[k]) for k in ("parameterization", "transform", "prior", "image_penalty"))]
    if not (isinstance(optimizer_key, tuple) and optimizer_key[:1] == ("recipe",)) or any(t is None for t in texts):
        return None
    return "\n".join((*texts, repr(optimizer_key)))


def clear() -> None:
    """Forget every kept program (the next render traces again)."""
    with _lock:
        _entries.clear()


def tree_key(tree: Any) -> Hashable:
    """The structure of a pytree (static fields included), for keys."""
    return jax.tree.structure(tree)
