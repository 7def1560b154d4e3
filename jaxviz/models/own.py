"""What :func:`jaxviz.from_linen` / :func:`jaxviz.from_nnx` learn about a user's module.

- **BatchNorm layers** (``flax.linen.BatchNorm`` with its ``batch_stats``, ``flax.nnx.BatchNorm``):
  ``{layer: {"scale", "bias", "mean", "var": path into the params, or None}}`` so that
  DeepInversion's prior (:func:`jaxviz.priors.batchnorm_prior`) works on your own model.
- **Eval mode** of nnx modules: a BatchNorm that normalizes with the batch's statistics, or an
  active Dropout, would make an image's features depend on its batch (or on a random draw): refused.
- **Call order** of nnx layers: the order in which the forward pass produces each output (nnx
  reports intermediates sorted by name).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxviz.common.errors import UsageError

__all__ = ["linen_batchnorm", "nnx_batchnorm", "check_nnx_eval", "call_order", "batchnorm_arrays"]

BN_KEYS = ("scale", "bias", "mean", "var")


def _layer_name(path: Sequence) -> str:
    return ".".join(str(p) for p in path) or "output"


def linen_batchnorm(module, variables, input_shape, **apply_kwargs) -> tuple[dict, float | None]:
    """``({layer: {key: path}}, epsilon)`` of the ``linen.BatchNorm`` submodules ``module`` calls.

    The paths lead into ``variables``: ``("params", *module_path, "scale")`` and
    ``("batch_stats", *module_path, "mean")``; ``scale``/``bias`` are ``None`` when the layer has none.
    """
    from flax import linen as nn

    found: dict[str, tuple] = {}

    def spy(mdl, method_name):  # capture_intermediates filter: records, captures nothing
        if isinstance(mdl, nn.BatchNorm) and method_name == "__call__":
            found[_layer_name(mdl.path)] = (tuple(mdl.path), mdl.use_scale, mdl.use_bias, float(mdl.epsilon))
        return False

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    jax.eval_shape(lambda v, x: module.apply(v, x, capture_intermediates=spy, mutable=["intermediates"],
                                             **apply_kwargs), variables, x)
    out, eps = {}, None
    for layer, (path, use_scale, use_bias, epsilon) in found.items():
        if "batch_stats" not in variables:
            break
        out[layer] = {"scale": ("params", *path, "scale") if use_scale else None,
                      "bias": ("params", *path, "bias") if use_bias else None,
                      "mean": ("batch_stats", *path, "mean"), "var": ("batch_stats", *path, "var")}
        eps = epsilon if eps is None else eps
    return out, eps


def nnx_batchnorm(module) -> tuple[dict, float | None]:
    """``({layer: {key: path}}, epsilon)`` of the ``nnx.BatchNorm`` submodules of ``module``."""
    from flax import nnx

    out, eps = {}, None
    for path, sub in nnx.iter_modules(module):
        if isinstance(sub, nnx.BatchNorm) and path:
            out[_layer_name(path)] = {"scale": (*path, "scale") if sub.scale is not None else None,
                                      "bias": (*path, "bias") if sub.bias is not None else None,
                                      "mean": (*path, "mean"), "var": (*path, "var")}
            eps = float(sub.epsilon) if eps is None else eps
    return out, eps


def check_nnx_eval(module, name: str) -> None:
    """Refuses an nnx module in training mode (batch statistics or active dropout).

    Raises:
      UsageError: naming the first such submodule and the fix (``module.eval()``).
    """
    from flax import nnx

    for path, sub in nnx.iter_modules(module):
        where = _layer_name(path) if path else type(sub).__name__
        if isinstance(sub, nnx.BatchNorm) and not sub.use_running_average:
            why = f"BatchNorm '{where}' normalizes with the batch's statistics (an image's features would depend on its batch)"
        elif isinstance(sub, nnx.Dropout) and not sub.deterministic and sub.rate > 0:
            why = f"Dropout '{where}' is active (features would be random)"
        else:
            continue
        raise UsageError(f"from_nnx: {name} is in training mode: {why}; call module.eval() first")


def call_order(apply: Callable, params, input_shape) -> list[str]:
    """Layer names in the order the forward pass produces them (``output`` last).

    Read from the traced program: each layer's output is the result of some equation, and the
    equations are in execution order. A layer that returns its last sublayer's output unchanged
    comes right after it.
    """
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    closed, shapes = jax.make_jaxpr(lambda p, x: apply(p, x, None), return_shape=True)(params, x)
    produced = {id(var): index for index, eqn in enumerate(closed.jaxpr.eqns) for var in eqn.outvars}
    # outputs flatten in sorted-key order (a dict pytree), one leaf per layer
    position = {name: produced.get(id(var), -1) for name, var in zip(sorted(shapes), closed.jaxpr.outvars)}
    rest = sorted((n for n in position if n != "output"), key=lambda n: (position[n], -n.count(".")))
    return rest + (["output"] if "output" in position else [])


def batchnorm_arrays(model, layer: str) -> dict[str, Any]:
    """``{scale, bias, mean, var}`` arrays of one BatchNorm layer of ``model`` (``model.batchnorm[layer]``).

    A path tuple (EfficientNet-Lite) names a node holding the four arrays; a mapping gives each
    array's own path (your linen/nnx models), ``None`` for a missing scale (1) or bias (0).
    """
    spec = model.batchnorm[layer]

    def get(path):
        node = model.params
        for part in path:
            try:
                node = node[part]
            except (KeyError, TypeError):
                node = node[int(part)] if isinstance(part, str) and part.isdigit() else node[str(part)]
        return jnp.asarray(node.get_value() if hasattr(node, "get_value") else node)

    if not isinstance(spec, Mapping):
        node = model.params
        for part in spec:
            node = node[part]
        return {k: jnp.asarray(node[k]) for k in BN_KEYS}
    mean = get(spec["mean"])
    return {"scale": jnp.ones_like(mean) if spec.get("scale") is None else get(spec["scale"]),
            "bias": jnp.zeros_like(mean) if spec.get("bias") is None else get(spec["bias"]),
            "mean": mean, "var": get(spec["var"])}
