"""Feature views: one layer activation ``[H, W, C]`` → feature vectors ``[M, dim]``.

- ``pixel``: the C-vector at every position (``M = H·W``, ``dim = C``);
- ``pooled``: the spatial mean (``M = 1``, ``dim = C``);
- ``patchK`` (K odd, e.g. ``patch3``): the K×K neighbourhood of every valid position, flattened in
  ``(dy, dx, c)`` order (``M = (H−K+1)(W−K+1)``, ``dim = K²·C``).

A flat activation ``[C]`` (e.g. ``logits``) is one C-vector under ``pixel`` and ``pooled``.
Views are written for one image; ``jax.vmap`` them over a batch.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError

__all__ = ["View", "parse_view", "apply_view", "VIEWS"]

VIEWS = ("pixel", "pooled", "patchK")


@dataclasses.dataclass(frozen=True)
class View:
    """A parsed view: ``kind`` is ``pixel``, ``pooled`` or ``patch``; ``size`` is K for patches."""

    kind: str
    size: int = 1

    @property
    def name(self) -> str:
        return f"patch{self.size}" if self.kind == "patch" else self.kind

    def check(self, shape: Sequence[int], layer: str = "layer") -> None:
        """Raises :class:`UsageError` if the view does not apply to an activation of ``shape``."""
        if len(shape) not in (1, 3):
            raise UsageError(f"view {self.name} needs an [H,W,C] or [C] activation; {layer} is {tuple(shape)}")
        if self.kind == "patch" and (len(shape) == 1 or min(shape[0], shape[1]) < self.size):
            raise UsageError(f"view {self.name} needs a spatial layer at least {self.size}x{self.size}; "
                             f"{layer} is {'x'.join(map(str, shape))}")

    def dim(self, shape: Sequence[int]) -> int:
        """Feature dimension for an activation of ``shape``."""
        return shape[-1] * self.size * self.size

    def count(self, shape: Sequence[int]) -> int:
        """Feature vectors per image for an activation of ``shape``."""
        if len(shape) == 1 or self.kind == "pooled":
            return 1
        if self.kind == "pixel":
            return shape[0] * shape[1]
        return (shape[0] - self.size + 1) * (shape[1] - self.size + 1)

    def __call__(self, activation: jax.Array) -> jax.Array:
        """``[H, W, C]`` (or ``[C]``) → ``[M, dim]``."""
        self.check(activation.shape)
        if activation.ndim == 1:
            return activation[None]
        h, w, c = activation.shape
        if self.kind == "pixel":
            return activation.reshape(h * w, c)
        if self.kind == "pooled":
            return jnp.mean(activation, axis=(0, 1))[None]
        k = self.size
        hh, ww = h - k + 1, w - k + 1
        shifts = [activation[dy:dy + hh, dx:dx + ww] for dy in range(k) for dx in range(k)]
        return jnp.concatenate(shifts, axis=-1).reshape(hh * ww, k * k * c)


def parse_view(name: str | View) -> View:
    """``"pixel"``, ``"pooled"`` or ``"patchK"`` (K odd ≥ 1) → :class:`View`; else :class:`UsageError`."""
    if isinstance(name, View):
        return name
    text = str(name).strip().lower()
    if text in ("pixel", "pooled"):
        return View(text)
    match = re.fullmatch(r"patch(\d+)", text)
    if match and int(match[1]) % 2 == 1:
        return View("patch", int(match[1]))
    raise UsageError(f"unknown view '{name}' (choose pixel, pooled or patchK with K odd, e.g. patch3)")


def apply_view(name: str | View, activation: jax.Array) -> jax.Array:
    """Feature vectors ``[M, dim]`` of one activation ``[H, W, C]`` under the view ``name``."""
    return parse_view(name)(activation)
