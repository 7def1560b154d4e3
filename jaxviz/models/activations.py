"""ReLU6 with an optional *redirected* gradient (Lucid's trick for units that start dead).

A unit clipped at 0 (or 6) passes no gradient, so a target that starts inactive never moves. The
redirected version lets the gradient through a clipped unit when it points back into the active
range (up at 0, down at 6); render uses it for the first few steps only, after which plain ReLU6
takes over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["relu6", "redirected_relu6", "deconvnet_relu6", "guided_relu6", "BACKWARD_RULES"]

relu6 = jax.nn.relu6


@jax.custom_vjp
def redirected_relu6(x):
    """ReLU6 forward; backward also passes gradients that would push a clipped unit into range."""
    return jax.nn.relu6(x)


def _forward(x):
    return jax.nn.relu6(x), x


def _backward(x, g):
    active = (x > 0) & (x < 6)
    # the objective's gradient g > 0 asks for a larger output: let it through at the lower clip
    redirect = ((x <= 0) & (g > 0)) | ((x >= 6) & (g < 0))
    return (jnp.where(active | redirect, g, jnp.zeros_like(g)),)


redirected_relu6.defvjp(_forward, _backward)


# Backward rules for attribution (jaxviz.attribution). Each keeps ReLU6's forward values and
# replaces only how the gradient passes a unit: `deconvnet` (Zeiler & Fergus) passes the positive
# part of the incoming gradient whatever the unit's input; `guided` (Springenberg et al.) passes it
# only where the ordinary gradient also would (the input inside ReLU6's linear range 0 < x < 6).


@jax.custom_vjp
def deconvnet_relu6(x):
    """ReLU6 forward; backward passes ``max(g, 0)`` regardless of the input."""
    return jax.nn.relu6(x)


@jax.custom_vjp
def guided_relu6(x):
    """ReLU6 forward; backward passes ``g`` where ``g > 0`` and ``0 < x < 6``."""
    return jax.nn.relu6(x)


deconvnet_relu6.defvjp(_forward, lambda x, g: (jnp.maximum(g, jnp.zeros_like(g)),))
guided_relu6.defvjp(_forward, lambda x, g: (jnp.where((x > 0) & (x < 6) & (g > 0), g, jnp.zeros_like(g)),))

BACKWARD_RULES = {"gradient": relu6, "deconvnet": deconvnet_relu6, "guided": guided_relu6}
