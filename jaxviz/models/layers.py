"""Convolution and BatchNorm layers with a backend-aware implementation.

XLA-CPU lowers grouped (depthwise) convolutions poorly (docs/design.md §4: ~20× slower than 9
shifted multiply-adds) and 1×1 convolutions are faster as an ``einsum``. On GPU/TPU the
library convolutions are the fast path. ``impl="auto"`` picks per backend at trace time;
``"shifted"`` and ``"xla"`` force one path (both are tested equal).

The shifted path has hand-written backward passes (:func:`jax.custom_vjp`):

- depthwise: JAX's automatic transpose of the strided slices is a zero-interleaving ``pad`` per
  tap, which XLA-CPU fuses into loops that evaluate every tap's pad for every input element. The
  hand-written input gradient is itself a shifted depthwise conv: for stride 1, the cotangent
  padded the other way round with the kernel flipped; for stride 2, one small stride-1 conv per
  phase (polyphase: the padded-input pixel ``s·q + r`` only receives the taps ``r, r + s, …``),
  interleaved. Render step, Lite0 at 224 px on 2 cores: 54 → 33 ms per image-step.
- dense k×k (the stem): library conv forward; the input gradient is one matmul to per-tap
  cotangents and the same polyphase scatter (XLA-CPU's lhs-dilated transposed conv is slower):
  33 → 30 ms per image-step.

Both agree with the library convs to float32 rounding (tests/models/test_efficientnet_lite.py). Being custom_vjp
functions, they do not support forward-mode differentiation (``jax.jvp``) on the shifted path.
"""

from __future__ import annotations

import functools

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


def _window(xp: jax.Array, i: int, j: int, stride: int, ho: int, wo: int) -> jax.Array:
    """``xp[:, i + stride·h, j + stride·w, :]`` for ``h < ho``, ``w < wo``."""
    n, _, _, c = xp.shape
    return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                     (1, stride, stride, 1))


def _taps(xp: jax.Array, kernel: jax.Array, stride: int, ho: int, wo: int) -> jax.Array:
    """Valid depthwise correlation as shifted multiply-adds. xp: [N,Hp,Wp,C]; kernel: [kh,kw,C]."""
    out = None
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            term = _window(xp, i, j, stride, ho, wo) * kernel[i, j]
            out = term if out is None else out + term
    return out


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    k = kernel.shape[0]
    return _taps(_pad_same(x, k, stride), kernel[:, :, 0], stride,
                 _out_size(x.shape[1], stride), _out_size(x.shape[2], stride))


def _depthwise_fwd(x, kernel, stride):
    return _depthwise_shifted(x, kernel, stride), (x, kernel)


def _scatter_taps(tap_sum, k: int, stride: int, h: int, w: int, out_hw: tuple[int, int]) -> jax.Array:
    """Transpose of "pad SAME, then take the k×k windows": the cotangent of the unpadded input.

    ``tap_sum(ry, rx, before, after, offset, n_out)`` is :func:`_shifted_sum`: for the taps
    ``i = ry + s·my``, ``j = rx + s·mx`` it adds their cotangents ``G_ij [N,Ho,Wo,C]``, each padded by
    ``(before, after)`` and read from ``offset − (my, mx)`` on an ``n_out`` grid. Stride 1 has one
    phase; stride s > 1 has s² phases (the padded-input pixel ``s·q + r`` only receives the taps
    ``r, r + s, …``), computed separately and interleaved, so no zero-stuffed (interior-padded)
    array is ever built.
    """
    (top, bottom), (left, right) = same_padding(h, k, stride), same_padding(w, k, stride)
    ho, wo = out_hw
    if stride == 1:
        # dx[p] = Σ_i G_i[p + top − i]: padded by `bottom` in front, G_i[p + top − i] sits at p + k − 1 − i
        return tap_sum(0, 0, (bottom, right), (h - ho + top, w - wo + left), (k - 1, k - 1), (h, w))
    s = stride
    qh, qw = -(-(h + top + bottom) // s), -(-(w + left + right) // s)
    rows = []
    for ry in range(s):
        cols = []
        for rx in range(s):
            my, mx = -(-(k - ry) // s), -(-(k - rx) // s)
            # phase[q] = Σ_m G_{r+s·m}[q − m]: padded by M − 1 in front, read at offset M − 1 − m
            cols.append(tap_sum(ry, rx, (my - 1, mx - 1), (qh - ho, qw - wo), (my - 1, mx - 1), (qh, qw)))
        rows.append(jnp.stack(cols, axis=3))  # [n, qh, qw, s(rx), c]
    n, c = rows[0].shape[0], rows[0].shape[-1]
    full = jnp.stack(rows, axis=2).reshape(n, qh * s, qw * s, c)  # [n, qh, s(ry), qw, s(rx), c]
    return full[:, top : top + h, left : left + w]


def _shifted_sum(g_at, k, s, ry, rx, before, after, offset, n_out):
    """``Σ_{my,mx} g_at(i, j)`` shifted by ``(my, mx)`` on a ``n_out`` grid (see :func:`_scatter_taps`)."""
    my_n, mx_n = -(-(k - ry) // s), -(-(k - rx) // s)
    out = None
    for my in range(my_n):
        for mx in range(mx_n):
            # the tap's array, padded once, read at an offset: phase[q] += G[q − m]
            gp = g_at(ry + s * my, rx + s * mx, (before[0], after[0]), (before[1], after[1]))
            sy, sx = offset[0] - my, offset[1] - mx
            window = lax.slice(gp, (0, sy, sx, 0), (gp.shape[0], sy + n_out[0], sx + n_out[1], gp.shape[3]))
            out = window if out is None else out + window
    return out


def _input_grad(g: jax.Array, kernel: jax.Array, stride: int, h: int, w: int) -> jax.Array:
    """Cotangent of the input of :func:`_depthwise_shifted` (kernel: [k,k,C])."""
    k = kernel.shape[0]
    padded = {}

    def g_at(i, j, pad_h, pad_w):
        # G_ij = g · k[i, j]: pad g once per phase geometry, scale per tap (fused by XLA)
        if (pad_h, pad_w) not in padded:
            padded[pad_h, pad_w] = jnp.pad(g, ((0, 0), pad_h, pad_w, (0, 0)))
        return padded[pad_h, pad_w] * kernel[i, j]

    return _scatter_taps(functools.partial(_shifted_sum, g_at, k, stride), k, stride, h, w, g.shape[1:3])


def _depthwise_bwd(stride, residuals, g):
    x, kernel = residuals
    k = kernel.shape[0]
    dx = _input_grad(g, kernel[:, :, 0], stride, x.shape[1], x.shape[2])
    # kernel cotangent (removed by XLA when only the input gradient is used, as in rendering)
    xp = _pad_same(x, k, stride)
    ho, wo = g.shape[1:3]
    dk = jnp.stack([jnp.stack([jnp.sum(_window(xp, i, j, stride, ho, wo) * g, axis=(0, 1, 2))
                               for j in range(k)]) for i in range(k)])
    return dx, dk[:, :, None, :].astype(kernel.dtype)


_depthwise_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto") -> jax.Array:
    """Depthwise conv, TF-SAME padding. x: [N,H,W,C]; kernel: [k,k,1,C]."""
    k = kernel.shape[0]
    if resolve_impl(impl) == "xla":
        return lax.conv_general_dilated(
            _pad_same(x, k, stride), kernel, (stride, stride), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
        )
    return _depthwise_shifted(x, kernel, stride)


def _conv_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return lax.conv_general_dilated(
        _pad_same(x, kernel.shape[0], stride), kernel, (stride, stride), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return _conv_xla(x, kernel, stride)


def _conv_fwd(x, kernel, stride):
    return _conv_xla(x, kernel, stride), (x, kernel)


def _conv_bwd(stride, residuals, g):
    # instead of XLA-CPU's lhs-dilated transposed conv: per-tap cotangents by one matmul, then the
    # polyphase scatter of _scatter_taps
    x, kernel = residuals
    k = kernel.shape[0]
    cols = jnp.einsum("nhwd,ijcd->nhwijc", g, kernel)
    padded = {}

    def g_at(i, j, pad_h, pad_w):
        if (pad_h, pad_w) not in padded:
            padded[pad_h, pad_w] = jnp.pad(cols, ((0, 0), pad_h, pad_w, (0, 0), (0, 0), (0, 0)))
        return padded[pad_h, pad_w][:, :, :, i, j, :]

    tap_sum = functools.partial(_shifted_sum, g_at, k, stride)
    dx = _scatter_taps(tap_sum, k, stride, x.shape[1], x.shape[2], g.shape[1:3])
    _, kernel_vjp = jax.vjp(lambda w: _conv_xla(x, w, stride), kernel)  # unused in rendering: removed by XLA
    return dx.astype(x.dtype), kernel_vjp(g)[0]


_conv_shifted.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jax.Array, kernel: jax.Array, stride: int, impl: str = "auto") -> jax.Array:
    """Dense conv, TF-SAME padding. x: [N,H,W,Cin]; kernel: [k,k,Cin,Cout].

    ``shifted`` (CPU): a 1×1 conv is an ``einsum``; a larger one (the stem) is the library conv
    forward with a hand-written input gradient (see :func:`_conv_bwd`).
    """
    k = kernel.shape[0]
    if resolve_impl(impl) == "shifted":
        if k == 1 and stride == 1:
            return jnp.einsum("nhwc,cd->nhwd", x, kernel[0, 0])
        return _conv_shifted(x, kernel, stride)
    return _conv_xla(x, kernel, stride)


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
