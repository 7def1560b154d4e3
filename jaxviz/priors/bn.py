"""DeepInversion's BatchNorm prior: the image's per-layer channel moments against the BN running statistics."""

from __future__ import annotations

import math
from typing import Mapping

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.priors.base import PriorBase, check_options, ordered

__all__ = ["BatchNormPrior", "batchnorm_prior"]


def bn_inputs(features, layer, p, eps):
    """The BatchNorm input ``[M, C]`` recovered from its captured output."""
    y = features[layer].reshape(-1, features[layer].shape[-1])
    return (y - p["bias"]) / p["scale"] * jnp.sqrt(p["var"] + eps) + p["mean"]


@part
class BatchNormPrior(PriorBase):
    """DeepInversion: the BatchNorm inputs' statistics should match the running statistics.

    For each BatchNorm layer, the input ``x`` is recovered from the captured output and the
    ``‖μ_x − μ_run‖₂ + ‖σ²_x − σ²_run‖₂`` over the image's positions is summed over layers, the
    first layer's term times ``first_weight`` (DeepInversion uses 10: the stem's statistics are
    the colour and contrast of the image). DeepInversion takes the moments over a batch of images;
    here they are per image (one image per target).

    Attributes:
      bn: ``{layer: {"scale", "bias", "mean", "var"}}`` (the first entry is the first layer).
      eps: BatchNorm epsilon.
      weight: λ.
      first_weight: extra factor on the first layer's term.
    """

    trace_name = "bn"

    bn: Mapping[str, Mapping[str, jax.Array]]
    eps: float = static(1e-3)
    weight: float = static(0.01)
    first_weight: float = static(1.0)

    layers = property(lambda self: tuple(self.bn), doc="the layers the statistics cover")

    def _loss(self, features):
        total = jnp.zeros(())
        for i, (layer, p) in enumerate(self.bn.items()):
            x = bn_inputs(features, layer, p, self.eps)
            term = jnp.linalg.norm(x.mean(0) - p["mean"]) + jnp.linalg.norm(x.var(0) - p["var"])
            total = total + (self.first_weight if i == 0 else 1.0) * term
        return total

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        loss = self._loss(features)
        return self.weight * loss, state, loss

    def report(self, features, state):
        return {"bn_loss": self._loss(features)}

    def __repr__(self):
        first = f", first_weight={self.first_weight}" if self.first_weight != 1.0 else ""
        return f"bn(layers={len(self.bn)}, weight={self.weight}{first})"


def batchnorm_prior(model, *, weight: float = 0.01, first_weight: float = 1.0) -> BatchNormPrior:
    """DeepInversion's prior over every BatchNorm layer of ``model`` (``first_weight``: see the class).

    Raises:
      UsageError: the model declares no BatchNorm layers, or a weight is not a finite number ≥ 0.
    """
    check_options("bn", BatchNormPrior, weight=weight)
    if isinstance(first_weight, bool) or not (isinstance(first_weight, (int, float)) and math.isfinite(first_weight)
                                              and first_weight >= 0):
        raise UsageError(f"bn: first_weight must be a finite number ≥ 0, got {first_weight!r}")
    if not model.batchnorm:
        raise UsageError(f"batchnorm_prior(model=...) needs BatchNorm layers; {model.name} has none "
                         "(from_linen/from_nnx find linen.BatchNorm with batch_stats and nnx.BatchNorm)")
    from jaxviz.models.own import batchnorm_arrays

    bn = {layer: batchnorm_arrays(model, layer) for layer in model.batchnorm}
    return BatchNormPrior(ordered(bn), eps=model.batchnorm_eps, weight=weight, first_weight=float(first_weight))
