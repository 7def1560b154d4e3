"""EfficientNet-Lite0..4 in Flax linen (ReLU6, no squeeze-excite, TF-SAME padding).

Layer names exposed by :class:`EfficientNetLite` (all post-activation unless noted):
``stem``, ``blocks.N.expand``, ``blocks.N.depthwise``, ``blocks.N.project`` (linear
bottleneck), ``blocks.N`` (after the residual), ``head``, ``pool`` (global mean of ``head``),
``logits``. BatchNorm outputs before the activation are available as ``stem.bn``,
``blocks.N.expand.bn``, ``blocks.N.depthwise.bn`` and ``head.bn`` (used by the BN prior).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxviz.models.activations import BACKWARD_RULES, redirected_relu6
from jaxviz.models.layers import Conv, FrozenBatchNorm

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters), from the TF-Lite builder.
_BASE_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# width, depth, resolution
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_specs(width: float, depth: float) -> tuple[BlockSpec, ...]:
    """Per-block specs; the stem, first and last stages are not scaled (the "Lite" rule)."""
    specs = []
    last = len(_BASE_BLOCKS) - 1
    for stage, (reps, k, s, e, cin, cout) in enumerate(_BASE_BLOCKS):
        cin = 32 if stage == 0 else _round_filters(cin, width)
        cout = _round_filters(cout, width)
        if stage not in (0, last):
            reps = int(math.ceil(depth * reps))
        for r in range(reps):
            specs.append(BlockSpec(k, s if r == 0 else 1, e, cin if r == 0 else cout, cout))
    return tuple(specs)


class MBConv(nn.Module):
    spec: BlockSpec
    impl: str = "auto"
    redirect: bool = False
    rule: str = "gradient"  # ReLU6 backward rule (jaxviz.models.activations.BACKWARD_RULES)

    @nn.compact
    def __call__(self, x, record):
        spec = self.spec
        act = redirected_relu6 if self.redirect else BACKWARD_RULES[self.rule]
        inputs = x
        hidden = spec.in_filters * spec.expand_ratio
        if spec.expand_ratio != 1:
            x = Conv(hidden, 1, impl=self.impl, name="expand_conv")(x)
            x = FrozenBatchNorm(name="expand_bn")(x)
            record("expand.bn", x)
            x = record("expand", act(x))
        x = Conv(hidden, spec.kernel, spec.stride, depthwise=True, impl=self.impl, name="depthwise_conv")(x)
        x = FrozenBatchNorm(name="depthwise_bn")(x)
        record("depthwise.bn", x)
        x = record("depthwise", act(x))
        x = Conv(spec.out_filters, 1, impl=self.impl, name="project_conv")(x)
        x = record("project", FrozenBatchNorm(name="project_bn")(x))
        if spec.stride == 1 and spec.in_filters == spec.out_filters:
            x = x + inputs
        return x


class _Done(Exception):
    """Raised internally once every requested layer is computed (skips the rest)."""


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. ``__call__(x, capture)`` returns ``{name: activation}``.

    ``capture=None`` returns every named point; otherwise only those named, and the forward
    pass stops as soon as the last one is computed.
    """

    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    impl: str = "auto"
    redirect: bool = False  # redirected ReLU6 gradients (see jaxviz.models.activations)
    rule: str = "gradient"  # ReLU6 backward rule for attribution (deconvnet, guided)

    @nn.compact
    def __call__(self, x, capture: Sequence[str] | None = None):
        wanted = None if capture is None else set(capture)
        act = redirected_relu6 if self.redirect else BACKWARD_RULES[self.rule]
        out: dict[str, jax.Array] = {}

        def recorder(prefix):
            def record(name, value):
                full = f"{prefix}.{name}" if prefix and name else (prefix or name)
                if wanted is None or full in wanted:
                    out[full] = value
                    if wanted is not None and wanted.issubset(out):
                        raise _Done
                return value

            return record

        top = recorder("")
        with contextlib.suppress(_Done):
            x = Conv(32, 3, 2, impl=self.impl, name="stem_conv")(x)
            x = FrozenBatchNorm(name="stem_bn")(x)
            top("stem.bn", x)
            x = top("stem", act(x))
            for i, spec in enumerate(block_specs(self.width, self.depth)):
                x = MBConv(spec, self.impl, self.redirect, self.rule, name=f"blocks_{i}")(x, recorder(f"blocks.{i}"))
                x = top(f"blocks.{i}", x)
            x = Conv(1280, 1, impl=self.impl, name="head_conv")(x)
            x = FrozenBatchNorm(name="head_bn")(x)
            top("head.bn", x)
            x = top("head", act(x))
            x = top("pool", jnp.mean(x, axis=(1, 2)))
            top("logits", nn.Dense(self.num_classes, name="fc")(x))
        return out


def torch_to_flax(state: dict[str, np.ndarray], width: float, depth: float) -> dict:
    """Maps the PyTorch port's state dict to :class:`EfficientNetLite` params.

    Conv weights go OIHW → HWIO (depthwise: C1kk → kk1C); BatchNorm weight/bias/running
    stats → scale/bias/mean/var; the classifier's weight is transposed.
    """
    used: set[str] = set()

    def take(name):
        if name not in state:
            raise KeyError(f"weight file lacks '{name}': not an EfficientNet-Lite state dict?")
        used.add(name)
        return np.asarray(state[name], np.float32)

    def conv(name):
        return {"kernel": take(f"{name}.weight").transpose(2, 3, 1, 0)}

    def bn(name):
        used.add(f"{name}.num_batches_tracked")
        return {
            "scale": take(f"{name}.weight"), "bias": take(f"{name}.bias"),
            "mean": take(f"{name}.running_mean"), "var": take(f"{name}.running_var"),
        }

    params = {"stem_conv": conv("_conv_stem"), "stem_bn": bn("_bn0")}
    for i, spec in enumerate(block_specs(width, depth)):
        p = f"_blocks.{i}"
        block = {}
        if spec.expand_ratio != 1:
            block["expand_conv"], block["expand_bn"] = conv(f"{p}._expand_conv"), bn(f"{p}._bn0")
        block["depthwise_conv"], block["depthwise_bn"] = conv(f"{p}._depthwise_conv"), bn(f"{p}._bn1")
        block["project_conv"], block["project_bn"] = conv(f"{p}._project_conv"), bn(f"{p}._bn2")
        params[f"blocks_{i}"] = block
    params["head_conv"], params["head_bn"] = conv("_conv_head"), bn("_bn1")
    params["fc"] = {"kernel": take("_fc.weight").T, "bias": take("_fc.bias")}
    leftover = sorted(set(state) - used)
    if leftover:
        raise KeyError(f"weight file has unexpected entries, e.g. '{leftover[0]}': wrong variant?")
    return params
