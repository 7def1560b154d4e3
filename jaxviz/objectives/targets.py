"""Targets as users write them (``logits:207``, ``blocks.10:7``) and checks of objectives against a model's layers."""

from __future__ import annotations

import difflib
import re
from typing import Mapping, Sequence

import numpy as np

from jaxviz.common.errors import UnknownLayerError, UsageError
from jaxviz.objectives.base import Channel, ClassLogit, Direction, Layer, Neuron, Objective, channel, class_logit, layer

__all__ = ["split_target", "parse_target", "expand_targets", "check_indices", "as_targets", "target_name", "group_name"]


def split_target(spec: str) -> tuple[str, int]:
    """``"LAYER:CHANNEL"`` → ``(layer, channel)``, checking only the syntax (no model needed).

    Raises:
      UsageError: not ``LAYER:CHANNEL`` with a channel of ASCII digits.
    """
    name, sep, index = str(spec).strip().rpartition(":")
    index = index.strip()
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses, and other scripts' digits
    if not sep or not name or not (index.isascii() and index.isdigit()) or len(index) > 18:
        shown = spec if len(str(spec)) <= 60 else f"{str(spec)[:57]}..."
        raise UsageError(f"malformed target '{shown}': expected LAYER:CHANNEL with an ASCII channel number, "
                         "e.g. logits:285 or blocks.10:7")
    return name, int(index)


def parse_target(spec: str, model_layers: Mapping[str, Sequence[int]]) -> Objective:
    """Parses a target string: ``LAYER:CHANNEL``, or ``LAYER`` for the whole layer.

    Args:
      spec: e.g. ``logits:285`` (a class logit), ``blocks.10:7`` (a channel objective) or
        ``blocks.7`` (:func:`layer`, DeepDream on the whole layer).
      model_layers: ``{name: shape without batch}`` (``Model.layers``).

    Returns:
      :func:`class_logit` for ``logits``, else :func:`channel`; :func:`layer` for a bare layer name.

    Raises:
      UsageError: malformed spec or channel out of range; UnknownLayerError: no such layer.
    """
    if isinstance(spec, str) and spec.strip() in model_layers:
        return layer(spec.strip())
    name, index = split_target(spec)
    if name not in model_layers:
        close = difflib.get_close_matches(name, list(model_layers), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownLayerError(f"unknown layer '{name}' in target '{spec}'{hint}")
    shape = tuple(model_layers[name])
    count = shape[-1] if shape else 1
    if index >= count:
        raise UsageError(f"channel {index} out of range for layer '{name}' ({count} channels: 0..{count - 1})")
    return class_logit(index) if name == "logits" else channel(name, index)


def leaf_int(value):
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - a tracer: checked when the objective was built concretely
        return None
    return int(a) if a.shape == () and np.issubdtype(a.dtype, np.integer) else None


def check_indices(objective: Objective, model_layers: Mapping[str, Sequence[int]]) -> None:
    """Checks an objective's channel, class and position indices against the model's layer shapes.

    Out-of-range indices would otherwise be clamped by XLA (a silently wrong target) or read NaN.

    Args:
      objective: any objective (sums are checked term by term).
      model_layers: ``{name: shape without batch}`` (``Model.layers``).

    Raises:
      UnknownLayerError: a layer the model does not have. UsageError: an index out of range.
    """
    for term in getattr(objective, "terms", None) or (objective,):
        for name in term.layers:
            if name not in model_layers:
                raise UnknownLayerError(f"the objective {term!r} reads layer '{name}', which the model does not have")
        shape = tuple(model_layers[term.layers[0]]) if term.layers else ()
        count = shape[-1] if shape else 1
        checks = []
        if isinstance(term, (Neuron, Channel)):
            checks.append(("channel", term.channel, count))
        if isinstance(term, ClassLogit):
            checks.append(("class index", term.index, count))
        if isinstance(term, Neuron) and term.y is not None:
            if len(shape) != 3:
                raise UsageError(f"{term!r}: a position needs an [H,W,C] layer; '{term.layer}' has shape {shape}")
            checks += [("y", term.y, shape[0]), ("x", term.x, shape[1])]
        if isinstance(term, Direction) and np.shape(term.vector)[-1:] != (count,):
            raise UsageError(f"{term!r}: the vector has {np.shape(term.vector)[-1]} entries, layer '{term.layer}' "
                             f"has {count} channels")
        for what, value, n in checks:
            i = leaf_int(value)
            if i is not None and not 0 <= i < n:
                raise UsageError(f"{term!r}: {what} {i} is out of range for layer '{term.layers[0]}' (0..{n - 1})")


def as_targets(targets, model_layers: Mapping[str, Sequence[int]]) -> list[Objective]:
    """Render targets as a list of objectives.

    Args:
      targets: one :class:`Objective` or target string, or a sequence of them; strings are read by
        :func:`parse_target` after ``LAYER:all`` / ``LAYER:A-B`` expand to one target per channel.
      model_layers: ``Model.layers``.

    Raises:
      UsageError: anything else (naming the item), malformed strings; UnknownLayerError.
    """
    if isinstance(targets, (Objective, str)):
        targets = [targets]
    if not isinstance(targets, (list, tuple)):
        raise UsageError(f"targets must be an objective, a target string or a list of them, "
                         f"got {type(targets).__name__}")
    out = []
    for i, target in enumerate(targets):
        if isinstance(target, str):
            out.extend(parse_target(spec, model_layers) for spec in expand_targets([target], model_layers))
        elif isinstance(target, Objective):
            out.append(target)
        else:
            raise UsageError(f"targets[{i}] must be a jaxviz.objectives objective or a string like 'logits:207', "
                             f"got {type(target).__name__}")
    return out


def target_name(objective: Objective) -> str:
    """The target string of an objective where it has one (``logits:207``, ``blocks.10:7``,
    ``blocks.7``, as :func:`parse_target` reads them), else its ``repr``."""
    index = leaf_int(getattr(objective, "index", getattr(objective, "channel", None)))
    if type(objective) in (ClassLogit, Channel) and index is not None:
        return f"{objective.layer}:{index}"
    if type(objective) is Layer:
        return objective.layer
    return repr(objective)


def expand_targets(specs: Sequence[str], layers: Mapping[str, Sequence[int]]) -> list[str]:
    """Expands ``LAYER:all`` and ``LAYER:A-B`` into single ``LAYER:CHANNEL`` specs."""
    out = []
    for spec in specs:
        layer, _, channels = spec.rpartition(":")
        match = re.fullmatch(r"([0-9]+)-([0-9]+)", channels, flags=re.ASCII)
        if layer in layers and (channels == "all" or match):
            n = layers[layer][-1]
            lo, hi = (0, n - 1) if channels == "all" else (int(match[1]), int(match[2]))
            if not 0 <= lo <= hi < n:
                raise UsageError(f"channel range {channels} is outside 0-{n - 1} of layer '{layer}'")
            out.extend(f"{layer}:{c}" for c in range(lo, hi + 1))
        else:
            out.append(spec)
    return out


def group_name(objective: Objective) -> str:
    """The name of a group's images (``images_per_target``): ``blocks.10:7`` for
    ``channel('blocks.10', 7) + w * diversity(...)`` (its per-image target), else the repr."""
    from jaxviz.objectives.base import per_image_part

    own = per_image_part(objective)
    terms, weights = getattr(own, "terms", None), getattr(own, "weights", None)
    if terms is not None and len(terms) == 1 and float(np.asarray(weights[0])) == 1.0:
        own = terms[0]
    return target_name(own) if own is not None else repr(objective)
