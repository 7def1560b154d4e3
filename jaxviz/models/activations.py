"""ReLU6 with an optional *redirected* gradient (Lucid's trick for units that start dead).

A unit clipped at 0 (or 6) passes no gradient, so a target that starts inactive never moves. The
redirected version lets the gradient through a clipped unit when it points back into the active
range (up at 0, down at 6); render uses it for the first few steps only, after which plain ReLU6
takes over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["relu6", "redirected_relu6"]

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
