"""A user's own linen or nnx CNN gets the same features/layers interface as the built-in models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxviz


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


class NnxCNN(nnx.Module):
    def __init__(self, *, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        return self.head(x.mean(axis=(1, 2)))


def _manual_linen(variables, x):
    p = variables["params"]

    def conv(x, q):
        return jax.lax.conv_general_dilated(x, q["kernel"], (2, 2), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")) + q["bias"]

    c1 = conv(x, p["conv1"])
    c2 = conv(jax.nn.relu(c1), p["conv2"])
    out = jax.nn.relu(c2).mean(axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"]
    return {"conv1": c1, "conv2": c2, "head": out, "output": out}


@pytest.mark.slow  # ~12 s
def test_linen_adapter_layers_and_values():
    module = LinenCNN()
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    variables = module.init(jax.random.key(0), x)
    model = jaxviz.from_linen(module, variables, (16, 16, 3))
    assert dict(model.layers) == {"conv1": (8, 8, 8), "conv2": (4, 4, 16), "head": (10,), "output": (10,)}
    assert list(model.layers) == ["conv1", "conv2", "head", "output"]
    out = jax.jit(lambda p, x: model.features(p, x, ["conv1", "conv2", "output"]))(model.params, x)
    expected = _manual_linen(variables, x)
    for name in out:
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-5, atol=1e-5)
    single = jax.vmap(lambda im: model.features(model.params, im, ["conv2"]))(x)
    np.testing.assert_allclose(single["conv2"], out["conv2"], rtol=1e-5, atol=1e-6)


def test_nnx_adapter_layers_values_and_gradient():
    module = NnxCNN(rngs=nnx.Rngs(0))
    model = jaxviz.from_nnx(module, (16, 16, 3))
    assert list(model.layers) == ["conv1", "conv2", "head", "output"]
    assert model.layers["conv2"] == (4, 4, 16)
    x = jax.random.uniform(jax.random.key(2), (3, 16, 16, 3))
    out = jax.jit(lambda p, x: model.features(p, x))(model.params, x)
    np.testing.assert_allclose(out["output"], module(x), rtol=1e-5, atol=1e-6)
    conv1 = module.conv1(x)
    np.testing.assert_allclose(out["conv1"], conv1, rtol=1e-5, atol=1e-6)
    # objectives differentiate through the adapter with respect to the image
    grad = jax.grad(lambda im: model.features(model.params, im, ["conv2"])["conv2"][..., 3].mean())(x[0])
    assert grad.shape == (16, 16, 3) and float(jnp.abs(grad).sum()) > 0


def test_adapter_unknown_layer_suggests():
    module = LinenCNN()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    model = jaxviz.from_linen(module, variables, (16, 16, 3))
    with pytest.raises(jaxviz.UnknownLayerError, match="conv2"):
        model.features(model.params, jnp.zeros((1, 16, 16, 3)), ["conv_2"])
