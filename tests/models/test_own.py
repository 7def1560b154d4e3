"""Own models: BatchNorm found in linen/nnx modules, nnx eval mode, nnx layers in call order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxviz
from jaxviz import priors
from jaxviz.common.errors import UsageError

RNG = np.random.default_rng(0)
MEAN, VAR = RNG.normal(0, 0.5, 6).astype(np.float32), RNG.uniform(0.5, 2.0, 6).astype(np.float32)
SCALE, BIAS = RNG.uniform(0.5, 1.5, 6).astype(np.float32), RNG.normal(0, 0.3, 6).astype(np.float32)


class LinenBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(6, (3, 3), name="conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x))
        return nn.Dense(4, name="head")(x.mean(axis=(1, 2)))


class NnxBN(nnx.Module):
    """Attributes named so that sorted order (a_head, bn, z_conv) is not call order."""

    def __init__(self, *, rngs):
        self.z_conv = nnx.Conv(3, 6, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(6, epsilon=1e-3, rngs=rngs)
        self.a_head = nnx.Linear(6, 4, rngs=rngs)

    def __call__(self, x):
        return self.a_head(nnx.relu(self.bn(self.z_conv(x))).mean(axis=(1, 2)))


def _bn_reference(bn_input):
    """DeepInversion's term for one image, in float64 numpy, from the BatchNorm's *input*."""
    x = np.asarray(bn_input, np.float64).reshape(-1, 6)
    return np.linalg.norm(x.mean(0) - MEAN) + np.linalg.norm(x.var(0) - VAR)


def _linen_model():
    module = LinenBN()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
    variables = {"params": {**variables["params"], "bn": {"scale": jnp.asarray(SCALE), "bias": jnp.asarray(BIAS)}},
                 "batch_stats": {"bn": {"mean": jnp.asarray(MEAN), "var": jnp.asarray(VAR)}}}
    return jaxviz.from_linen(module, variables, (12, 12, 3))


def _nnx_model():
    module = NnxBN(rngs=nnx.Rngs(0))
    for name, value in (("mean", MEAN), ("var", VAR), ("scale", SCALE), ("bias", BIAS)):
        getattr(module.bn, name).set_value(jnp.asarray(value))
    module.eval()
    return jaxviz.from_nnx(module, (12, 12, 3))


@pytest.mark.parametrize("make, conv", [(_linen_model, "conv"), (_nnx_model, "z_conv")])
def test_bn_prior_works_on_own_models(make, conv):
    model = make()
    assert list(model.batchnorm) == ["bn"]
    prior = priors.batchnorm_prior(model, weight=1.0)
    image = np.random.default_rng(1).uniform(0, 1, (12, 12, 3)).astype(np.float32)
    feats = model.features(model.params, model.normalize(jnp.asarray(image) * 255.0), [conv, "bn"])
    loss, _, _ = prior.apply(feats, prior.init(feats), 0)
    # the prior recovers the BatchNorm's input from its output: compare with the input itself
    np.testing.assert_allclose(float(loss), _bn_reference(feats[conv]), rtol=2e-4)


def test_nnx_in_training_mode_is_refused():
    module = NnxBN(rngs=nnx.Rngs(0))  # nnx.BatchNorm starts in training mode
    with pytest.raises(UsageError, match=r"training mode: BatchNorm 'bn'.*module\.eval\(\)"):
        jaxviz.from_nnx(module, (12, 12, 3))


def test_nnx_layers_in_call_order():
    model = _nnx_model()
    assert list(model.layers) == ["z_conv", "bn", "a_head", "output"]
    assert model.layers["bn"] == (12, 12, 6)


def test_no_batchnorm_message_names_the_python_argument():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x.mean(axis=(1, 2)))

    module = Plain()
    model = jaxviz.from_linen(module, module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), (8, 8, 3))
    with pytest.raises(UsageError, match=r"batchnorm_prior\(model=") as info:
        priors.batchnorm_prior(model)
    assert "--prior" not in str(info.value)
