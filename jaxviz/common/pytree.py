"""Parts are pytrees: the one decorator and field helper every pluggable part uses.

A part (parameterization, transform, prior, image penalty, objective) is a frozen dataclass registered as a
pytree: its arrays (statistics, photos) are leaves, its settings are static fields, kept in the tree
structure. The render programs take parts as arguments, so JAX's own cache decides when a program can be
reused (same structure and settings, any array values) and a stored program is named by the arguments'
structure (docs/design.md §2, "Parts are data").
"""

from __future__ import annotations

import dataclasses
import re

from flax import struct

__all__ = ["part", "static", "Static", "HostConstant", "digest", "describe", "by_value", "ADDRESS"]

# what a repr shows of an object that has no stable name: its address, a lambda, a local class
ADDRESS = re.compile(r" at 0x[0-9a-f]+|<lambda>|<locals>")

part = struct.dataclass  # a frozen dataclass that is a pytree (``struct.field(pytree_node=False)``: static)


def static(default=dataclasses.MISSING, **kwargs):
    """A static field of a :func:`part`: part of the tree structure, not a leaf (settings, names)."""
    if default is dataclasses.MISSING:
        return struct.field(pytree_node=False, **kwargs)
    return struct.field(pytree_node=False, default=default, **kwargs)


@part
class Static:
    """Wraps a value that is not a pytree of arrays (a user's function, an optax transformation, a part
    that is a plain object) as a leafless node: it travels through ``jit`` in the tree structure, compared
    by equality (identity for functions); attributes are the wrapped value's."""

    value: object = static()

    def __call__(self, *args, **kwargs):
        return self.value(*args, **kwargs)

    def __getattr__(self, name):  # a wrapped part keeps its interface (``prior.apply``, ``transform.pooled``)
        if name.startswith("__") or name == "value":
            raise AttributeError(name)
        return getattr(self.value, name)

    def __repr__(self):
        return repr(self.value)


def digest(*arrays) -> str:
    """A hash of arrays' dtypes, shapes and bytes (a part's content, e.g. a photo or statistics)."""
    from jaxviz.common.files import content_hash

    return content_hash(*arrays)


def describe(tree) -> str:
    """Stable text of a part (any pytree): its structure (static settings included), a digest of its array
    leaves, and the repr of any other leaf (a part that is not a pytree, e.g. a recipe).

    >>> from jaxviz import priors
    >>> describe(priors.none())
    'PyTreeDef(CustomNode(NoPrior[()], []))'
    """
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    arrays = [a for a in leaves if hasattr(a, "dtype") or isinstance(a, (bool, int, float, complex))]
    others = [repr(a) for a in leaves if not (hasattr(a, "dtype") or isinstance(a, (bool, int, float, complex)))]
    text = " ".join([str(treedef), *others])
    return f"{text} <content {digest(*arrays)}>" if arrays else text


def by_value(text: str) -> bool:
    """Whether ``text`` (a repr, a tree structure) names its object the same way in every process."""
    return ADDRESS.search(text) is None


class HostConstant:
    """Host (numpy) data kept in a part's *static* fields: hashed and compared by content, shown by digest.

    For tables the traced code reads with numpy at trace time (in float64, as constants of the program):
    the quantile prior's sort-match targets are interpolated so, which keeps its results bit-identical
    to the host computation. Arrays a program only computes with belong in leaves.
    """

    def __init__(self, value):
        self.value = value
        self._digest = digest(*(a for a in _arrays(value)))

    def __hash__(self):
        return hash(self._digest)

    def __eq__(self, other):
        return isinstance(other, HostConstant) and other._digest == self._digest

    def __repr__(self):
        return f"host:{self._digest[:16]}"


def _arrays(value):
    import numpy as np

    leaves = value if isinstance(value, tuple) else (value,)
    return [np.asarray(a) for a in leaves]
