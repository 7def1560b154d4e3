"""Convolution and BatchNorm layers with a backend-aware implementation.

XLA-CPU lowers grouped (depthwise) convolutions poorly (design.md §4: ~20× slower than 9
shifted multiply-adds) and 1×1 convolutions are faster as an ``einsum``. On GPU/TPU the
library convolutions are the fast path. ``impl="auto"`` picks per backend at trace time;
``"shifted"`` and ``"xla"`` force one path (both are tested equal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

IMPLS = ("auto", "shifted", "xla")


def resolve_impl(impl: str) -> str:
    """Maps ``"auto"`` to ``"shifted"`` on CPU and ``"xla"`` elsewhere."""
    if impl not in IMPLS:
        raise ValueError(f"unknown conv impl {impl!r}; choose from {IMPLS}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    pad_h = same_padding(x.shape[1], kernel, stride)
    pad_w = same_padding(x.shape[2], kernel, stride)
    return jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto") -> jax.Array:
    """Depthwise conv, TF-SAME padding. x: [N,H,W,C]; kernel: [k,k,1,C]."""
    k = kernel.shape[0]
    xp = _pad_same(x, k, stride)
    if resolve_impl(impl) == "xla":
        return lax.conv_general_dilated(
            xp, kernel, (stride, stride), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
        )
    n, hp, wp, c = xp.shape
    ho, wo = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = None
    for i in range(k):
        for j in range(k):
            window = lax.slice(
                xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                (1, stride, stride, 1),
            )
            term = window * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto") -> jax.Array:
    """Dense conv, TF-SAME padding. x: [N,H,W,Cin]; kernel: [k,k,Cin,Cout]."""
    k = kernel.shape[0]
    if k == 1 and stride == 1 and resolve_impl(impl) == "shifted":
        return jnp.einsum("nhwc,cd->nhwd", x, kernel[0, 0])
    xp = _pad_same(x, k, stride)
    return lax.conv_general_dilated(
        xp, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


class Conv(nn.Module):
    """Bias-free conv with TF-SAME padding; ``depthwise`` makes it one filter per channel."""

    features: int
    kernel_size: int
    stride: int = 1
    depthwise: bool = False
    impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        shape = (self.kernel_size, self.kernel_size, 1 if self.depthwise else cin, self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        if self.depthwise:
            return depthwise_conv(x, kernel, self.stride, self.impl)
        return conv(x, kernel, self.stride, self.impl)


class FrozenBatchNorm(nn.Module):
    """Inference-mode BatchNorm; running statistics are plain parameters (nothing trains)."""

    epsilon: float = 1e-3

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        mult = scale * lax.rsqrt(var + self.epsilon)
        return x * mult + (bias - mean * mult)
