"""Toy models and paths shared by the tests (a toy net is for unit tests only: the product runs the real model)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
GOLDEN = os.path.join(TESTS, "golden")


def make_toy(channels=(8, 6)):
    """A tiny linen CNN wrapped with jaxviz.from_linen (deterministic weights)."""
    import flax.linen as nn

    import jaxviz

    class Toy(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(channels[0], (3, 3), name="conv1")(x))
            x = nn.relu(nn.Conv(channels[1], (3, 3), strides=2, name="conv2")(x))
            return nn.Dense(5, name="head")(jnp.mean(x, axis=(1, 2)))

    module = Toy()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return jaxviz.from_linen(module, variables, (16, 16, 3), name="toy")



def features64(model, images, layer, view):
    from jaxviz.stats import views

    x = model.normalize(jnp.asarray(images, jnp.float32))
    act = model.features(model.params, x, [layer])[layer]
    samples = jax.vmap(views.parse_view(view))(act)
    return np.asarray(samples, np.float64).reshape(-1, samples.shape[-1])
