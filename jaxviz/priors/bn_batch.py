"""DeepInversion's BatchNorm prior with the moments pooled over the batch.

:class:`jaxviz.priors.BatchNormPrior` takes each image's BatchNorm-input moments over its own
positions; DeepInversion takes them over the positions of the whole batch, so one image may be
dark as long as the batch's mean colour is right. :class:`PooledBatchNormPrior` is that form. It is
a batch-level prior (``pooled = True``): :func:`jaxviz.render.step.compile_programs` vmaps the images of a
launch (also on CPU) and calls ``apply(features, state, step, pool=pool)``, where ``pool`` sums a
pytree over every image of the launch, on every device, with an identity backward pass, so each
image gets exactly its share of the gradient of the one batch loss. The batch is one launch of
:func:`jaxviz.render.render`: up to ``RenderConfig.batch_size`` targets (padded slots excluded).
Called without ``pool`` (one image, or another driver), it is the per-image prior.

Per layer, from the batch's sums over positions of ``d = x − μ_run`` (shifted, so float32 keeps
the variance): ``n``, ``Σd``, ``Σd²``, the pooled moments are ``μ = μ_run + Σd/n`` and
``σ² = Σd²/n − (Σd/n)²`` (population variance, as DeepInversion's ``var(unbiased=False)``), and the
loss is ``Σ_l w_l (‖μ − μ_run‖₂ + ‖σ² − σ²_run‖₂)`` with ``w_0 = first_weight``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part
from jaxviz.priors.base import ordered
from jaxviz.priors.bn import BatchNormPrior, bn_inputs

__all__ = ["PooledBatchNormPrior", "pooled_batchnorm_prior", "pooled_moments"]


def pooled_moments(sums) -> tuple[jax.Array, jax.Array]:
    """``(mean − μ_run, variance)`` from one layer's ``(n, Σd, Σd²)`` (see the module docstring)."""
    n, s1, s2 = sums
    shift = s1 / n
    return shift, s2 / n - shift * shift


@part
class PooledBatchNormPrior(BatchNormPrior):  # its fields, layers and trace name
    """DeepInversion's BatchNorm prior on batch-pooled moments (module docstring).

    Attributes:
      bn: ``{layer: {"scale", "bias", "mean", "var"}}`` (the first entry is the first layer).
      eps: BatchNorm epsilon.
      weight: λ.
      first_weight: extra factor on the first layer's term (DeepInversion: 10).
    """

    pooled = True  # jaxviz.render.step passes pool= (a batch-level prior)

    def sums(self, features) -> dict:
        """This image's ``{layer: (n, Σd, Σd²)}`` with ``d = x − μ_run`` over its positions."""
        out = {}
        for layer, p in self.bn.items():
            d = bn_inputs(features, layer, p, self.eps) - p["mean"]
            out[layer] = (jnp.asarray(d.shape[0], d.dtype), jnp.sum(d, axis=0), jnp.sum(d * d, axis=0))
        return out

    def loss(self, sums) -> jax.Array:
        """The BN loss of (pooled) ``sums``."""
        total = jnp.zeros(())
        for i, (layer, p) in enumerate(self.bn.items()):
            shift, var = pooled_moments(sums[layer])
            term = jnp.linalg.norm(shift) + jnp.linalg.norm(var - p["var"])
            total = total + (self.first_weight if i == 0 else 1.0) * term
        return total

    def apply(self, features, state, step, *, pool=None, locate=None):
        sums = self.sums(features)
        loss = self.loss(pool(sums) if pool is not None else sums)
        return self.weight * loss, state, loss

    def report(self, features, state):
        return {"bn_loss": self.loss(self.sums(features))}  # the final image's own (per-image) loss

    def __repr__(self):
        first = f", first_weight={self.first_weight}" if self.first_weight != 1.0 else ""
        return f"bn_batch(layers={len(self.bn)}, weight={self.weight}{first})"


def pooled_batchnorm_prior(model, *, weight: float = 0.01, first_weight: float = 1.0) -> PooledBatchNormPrior:
    """DeepInversion's batch-pooled BN prior over every BatchNorm layer of ``model``.

    Raises:
      UsageError: no BatchNorm layers, or a weight that is not a finite number ≥ 0.
    """
    for name, value in (("weight", weight), ("first_weight", first_weight)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"bn-batch: {name} must be a finite number ≥ 0, got {value!r}")
    if not model.batchnorm:
        raise UsageError(f"--prior bn-batch needs BatchNorm layers; {model.name} declares none")
    bn = {}
    for layer, path in model.batchnorm.items():
        node = model.params
        for key in path:
            node = node[key]
        bn[layer] = {k: jnp.asarray(node[k]) for k in ("scale", "bias", "mean", "var")}
    return PooledBatchNormPrior(ordered(bn), eps=model.batchnorm_eps, weight=float(weight), first_weight=float(first_weight))
