"""What to maximize: immutable objectives over named activations, with algebra.

An objective is a frozen pytree. Its numbers (channel index, position, weights, direction vector)
are **leaves** and its layer names are **static metadata**, so objectives of the same kind on the
same layers share one tree structure: :func:`stack` them and ``jax.vmap`` one compiled function
over many targets (e.g. all 1280 channels of ``head``).

Calling protocol:

- ``obj.batched is False`` (every kind except :func:`diversity`): ``obj(features) -> scalar`` where
  ``features`` is ``{layer: activation}`` of ONE image without a batch axis (``[H,W,C]``, or ``[C]``
  for vectors such as ``logits``). Vmap it over a batch.
- ``obj.batched is True``: ``obj(features)`` takes the features of the whole batch (leading axis
  ``N``) and returns one scalar. A :class:`Sum` that mixes both kinds is batched; its per-image
  terms are summed over the batch, so each image still receives its own term's gradient.
  :func:`batch_value` applies whichever rule fits.

``obj.layers`` lists the layers an objective reads (static); pass it to ``Model.features``.

Objectives combine with ``+``, ``-``, unary ``-``, ``*`` and ``/`` by numbers, and builtin
``sum``; every operation returns a new flat :class:`Sum` and never changes its operands.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxviz.common.errors import UnknownLayerError, UsageError

__all__ = [
    "Objective", "Neuron", "Channel", "Layer", "ClassLogit", "Direction", "Diversity", "Sum",
    "neuron", "channel", "layer", "class_logit", "direction", "diversity",
    "stack", "batch_value", "per_image_part",
]

_NUMBER = (int, float, np.number)


def _is_weight(x) -> bool:
    # 0-d jax arrays (tracers included) count as weights, so weights may be computed under jit
    if isinstance(x, (bool, np.bool_)):
        return False
    return isinstance(x, _NUMBER) or (isinstance(x, (jax.Array, np.ndarray)) and x.shape == ())


def _is_zero(x) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool) and x == 0


def _read(features: Mapping[str, jax.Array], name: str) -> jax.Array:
    try:
        return features[name]
    except KeyError:
        raise UnknownLayerError(
            f"the objective reads layer '{name}' but the features only have {sorted(features)}; "
            f"request obj.layers from Model.features") from None


def _safe_norm(x, eps: float = 1e-6):
    # jnp.linalg.norm has a NaN gradient at 0, and ReLU features are often exactly 0
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=-1) + eps**2)


class Objective:
    """Base of all objectives: the algebra and the calling protocol (see the module docstring)."""

    batched = False

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers this objective reads, in order, without duplicates."""
        raise NotImplementedError

    def __call__(self, features: Mapping[str, jax.Array]) -> jax.Array:
        raise NotImplementedError

    # -- algebra: always build a new flat Sum; weights multiply once, never accumulate in place
    def _as_sum(self) -> "Sum":
        return Sum(terms=(self,), weights=(1.0,))

    def __add__(self, other):
        if isinstance(other, Objective):
            a, b = self._as_sum(), other._as_sum()
            return Sum(terms=a.terms + b.terms, weights=a.weights + b.weights)
        if _is_zero(other):
            return self  # lets builtin sum() start from 0
        return NotImplemented

    def __radd__(self, other):
        return self if _is_zero(other) else NotImplemented

    def __mul__(self, other):
        if not _is_weight(other):
            return NotImplemented
        s = self._as_sum()
        return Sum(terms=s.terms, weights=tuple(w * other for w in s.weights))

    __rmul__ = __mul__

    def __truediv__(self, other):
        if not _is_weight(other):
            return NotImplemented
        return self * (1.0 / other)

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)


class _OneLayer(Objective):
    """Objectives that read the single layer named by their ``layer`` field."""

    @property
    def layers(self):
        return (self.layer,)


@struct.dataclass
class Neuron(_OneLayer):
    """One unit: ``activation[y, x, channel]`` (centre position when ``y``/``x`` are None)."""

    layer: str = struct.field(pytree_node=False)
    channel: Any
    y: Any = None
    x: Any = None

    def __call__(self, features):
        a = _read(features, self.layer)
        if a.ndim == 1 and self.y is None:
            return a[self.channel]
        if a.ndim != 3:
            raise UsageError(f"neuron objective needs [H,W,C] or [C] activations; '{self.layer}' has shape {a.shape}")
        # positions are static only through the shape, so the centre is fixed at trace time
        y = a.shape[0] // 2 if self.y is None else self.y
        x = a.shape[1] // 2 if self.x is None else self.x
        return a[y, x, self.channel]

    def __repr__(self):
        pos = "" if self.y is None and self.x is None else f", y={self.y}, x={self.x}"
        return f"neuron('{self.layer}', {self.channel}{pos})"


@struct.dataclass
class Channel(_OneLayer):
    """Spatial mean of one channel (the value itself for ``[C]`` activations)."""

    layer: str = struct.field(pytree_node=False)
    channel: Any

    def __call__(self, features):
        a = _read(features, self.layer)
        return jnp.take(a, self.channel, axis=-1).mean()

    def __repr__(self):
        return f"channel('{self.layer}', {self.channel})"


@struct.dataclass
class Layer(_OneLayer):
    """DeepDream: mean of squared activations over the whole layer."""

    layer: str = struct.field(pytree_node=False)

    def __call__(self, features):
        return jnp.mean(jnp.square(_read(features, self.layer)))

    def __repr__(self):
        return f"layer('{self.layer}')"


@struct.dataclass
class ClassLogit(_OneLayer):
    """One class logit (pre-softmax; the softmax would also reward pushing other classes down)."""

    index: Any
    layer: str = struct.field(pytree_node=False, default="logits")

    def __call__(self, features):
        return jnp.take(_read(features, self.layer), self.index, axis=-1).mean()

    def __repr__(self):
        return f"class_logit({self.index})" if self.layer == "logits" else f"class_logit({self.index}, layer='{self.layer}')"


@struct.dataclass
class Direction(_OneLayer):
    """Mean over positions of ``a·v`` (``cosine=False``) or ``(a·v)/|a|`` (``cosine=True``); ``|v| = 1``."""

    layer: str = struct.field(pytree_node=False)
    vector: Any
    cosine: bool = struct.field(pytree_node=False, default=False)

    def __call__(self, features):
        a = _read(features, self.layer)
        a = a.reshape(-1, a.shape[-1])
        dots = a @ self.vector
        if self.cosine:
            dots = dots / _safe_norm(a)
        return dots.mean()

    def __repr__(self):
        # a digest of the values, so that runs with other vectors do not look alike (checkpoint keys)
        try:
            digest = hashlib.sha1(np.asarray(self.vector, np.float32).tobytes()).hexdigest()[:8]
        except jax.errors.TracerArrayConversionError:  # inside jit: no values to show
            digest = "traced"
        return f"direction('{self.layer}', <{np.shape(self.vector)[-1]}-vector {digest}>, cosine={self.cosine})"


@struct.dataclass
class Diversity(_OneLayer):
    """Batch-level: minus the mean cosine similarity between the images' Gram matrices.

    Takes ``{layer: [N,H,W,C]}``; returns ``-mean_{i≠j} cos(G_i, G_j)`` with ``G = AᵀA / (H·W)``.
    Maximizing it pushes the images of a batch to use different feature combinations (0 for N=1).
    """

    layer: str = struct.field(pytree_node=False)
    batched = True

    def __call__(self, features):
        a = _read(features, self.layer)
        if a.ndim < 2:
            raise UsageError(f"diversity needs batched features [N,...,C]; '{self.layer}' has shape {a.shape}")
        n = a.shape[0]
        a = a.reshape(n, -1, a.shape[-1])
        gram = jnp.einsum("npi,npj->nij", a, a).reshape(n, -1) / a.shape[1]
        unit = gram / _safe_norm(gram)[:, None]
        sim = unit @ unit.T
        off = sim.sum() - jnp.trace(sim)
        return -off / max(n * (n - 1), 1)

    def __repr__(self):
        return f"diversity('{self.layer}')"


@struct.dataclass
class Sum(Objective):
    """``Σ_k weights[k] · terms[k]``; flat (never nested), built by the algebra."""

    terms: tuple
    weights: tuple

    @property
    def batched(self):
        return any(t.batched for t in self.terms)

    def _as_sum(self):
        return self

    @property
    def layers(self):
        return tuple(dict.fromkeys(name for t in self.terms for name in t.layers))

    def __call__(self, features):
        batched = self.batched
        total = 0.0
        for w, t in zip(self.weights, self.terms):
            # in a batched sum, per-image terms are summed over the batch (see module docstring)
            value = jax.vmap(t)(features).sum() if batched and not t.batched else t(features)
            total = total + w * value
        return jnp.asarray(total)

    def __repr__(self):
        return " + ".join(f"{_fmt(w)} * {t!r}" for w, t in zip(self.weights, self.terms))


def _fmt(w) -> str:
    return f"{float(w):g}" if isinstance(w, _NUMBER) else repr(w)


# -- constructors: the validation lives here, not in the classes, because jax rebuilds the
# classes with tracers (and placeholders) when it vmaps or jits them


def _index(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _name(value) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"layer must be a non-empty string, got {value!r}")
    return value


def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None) -> Neuron:
    """The activation of one unit.

    Args:
      layer: layer name.
      channel: channel index.
      y, x: position; ``None`` takes the centre (``H // 2``, ``W // 2``). Give both or neither.

    Returns:
      A :class:`Neuron`.
    """
    if (y is None) != (x is None):
        raise UsageError("neuron: give both y and x, or neither (centre)")
    pos = (None, None) if y is None else (_index(y, "y"), _index(x, "x"))
    return Neuron(layer=_name(layer), channel=_index(channel, "channel"), y=pos[0], x=pos[1])


def channel(layer: str, channel: int) -> Channel:
    """The spatial mean of one channel (Lucid's ``channel``)."""
    return Channel(layer=_name(layer), channel=_index(channel, "channel"))


def layer(layer: str) -> Layer:
    """DeepDream on a whole layer: mean of squared activations."""
    return Layer(layer=_name(layer))


def class_logit(index: int, layer: str = "logits") -> ClassLogit:
    """The logit of class ``index`` (read from ``layer``, ``logits`` by default)."""
    return ClassLogit(index=_index(index, "class index"), layer=_name(layer))


def direction(layer: str, vector, *, cosine: bool = False) -> Direction:
    """Alignment with a direction in channel space.

    Args:
      layer: layer name.
      vector: ``[C]`` direction; normalized to unit length here.
      cosine: ``False``: mean over positions of ``a·v̂`` (rewards magnitude too); ``True``: mean of
        ``a·v̂ / |a|`` (only the angle counts).

    Returns:
      A :class:`Direction`.
    """
    v = np.asarray(vector, np.float32)
    norm = float(np.linalg.norm(v))
    if v.ndim != 1 or not np.isfinite(norm) or norm == 0:
        raise UsageError(f"direction vector must be a finite, non-zero 1-D array, got shape {v.shape}")
    return Direction(layer=_name(layer), vector=jnp.asarray(v / norm), cosine=bool(cosine))


def diversity(layer: str) -> Diversity:
    """Batch-level diversity on ``layer`` (``batched = True``: call it on batched features)."""
    return Diversity(layer=_name(layer))


def stack(objectives: Sequence[Objective]) -> Objective:
    """One objective whose leaves gain a leading axis, to ``jax.vmap`` over.

    Args:
      objectives: objectives with the same tree structure (same kinds, layers and term count).

    Returns:
      An objective of the same structure with stacked leaves.

    Raises:
      UsageError: empty input, different structures or leaf shapes.
    """
    objectives = list(objectives)
    if not objectives:
        raise UsageError("stack needs at least one objective")
    first = jax.tree.structure(objectives[0])
    for obj in objectives[1:]:
        if jax.tree.structure(obj) != first:
            raise UsageError(f"cannot stack objectives of different structure: {objectives[0]!r} vs {obj!r}")
    shapes = [tuple(np.shape(leaf) for leaf in jax.tree.leaves(o)) for o in objectives]
    if any(s != shapes[0] for s in shapes):
        raise UsageError("cannot stack objectives whose leaves differ in shape (e.g. direction vectors of other lengths)")
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *objectives)


def batch_value(obj: Objective, features: Mapping[str, jax.Array]) -> jax.Array:
    """Value of ``obj`` on a batch: ``obj(features)`` if batched, else the sum of per-image values."""
    return obj(features) if obj.batched else jax.vmap(obj)(features).sum()


def per_image_part(objective: Objective) -> Objective | None:
    """The per-image terms of ``objective`` (what each image of a group reports), or ``None``."""
    if not objective.batched:
        return objective
    terms = [(t, w) for t, w in zip(getattr(objective, "terms", ()), getattr(objective, "weights", ())) if not t.batched]
    if not terms:
        return None
    out = terms[0][0] * terms[0][1]
    for t, w in terms[1:]:
        out = out + t * w
    return out
