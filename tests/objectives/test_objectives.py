"""Objectives: values against float64 numpy, algebra without compounding, vmap over stacks, parsing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxviz
from jaxviz import objectives as O
from jaxviz.common.errors import UnknownLayerError, UsageError

RNG = np.random.default_rng(0)
NP = {  # float64 reference copies; the objectives see float32
    "a": RNG.normal(size=(5, 6, 8)),
    "b": np.abs(RNG.normal(size=(3, 3, 4))),
    "logits": RNG.normal(size=(10,)),
}
FEATURES = {k: jnp.asarray(v, jnp.float32) for k, v in NP.items()}
LAYERS = {"stem": (16, 16, 8), "blocks.10": (14, 14, 112), "blocks.10.expand": (14, 14, 672),
          "head": (7, 7, 1280), "logits": (1000,)}


def close(value, expected):
    np.testing.assert_allclose(np.asarray(value, np.float64), expected, rtol=2e-5, atol=2e-5)


def test_kinds_match_numpy():
    a, b, logits = NP["a"], NP["b"], NP["logits"]
    close(O.neuron("a", 3)(FEATURES), a[2, 3, 3])  # centre of 5×6 is (2, 3)
    close(O.neuron("a", 3, y=4, x=1)(FEATURES), a[4, 1, 3])
    close(O.neuron("logits", 7)(FEATURES), logits[7])
    close(O.channel("a", 5)(FEATURES), a[..., 5].mean())
    close(O.channel("logits", 2)(FEATURES), logits[2])
    close(O.layer("b")(FEATURES), (b**2).mean())
    close(O.class_logit(4)(FEATURES), logits[4])
    close(O.class_logit(1, layer="a")(FEATURES), a[..., 1].mean())
    v = RNG.normal(size=8)
    unit = v / np.linalg.norm(v)
    flat = a.reshape(-1, 8)
    close(O.direction("a", v)(FEATURES), (flat @ unit).mean())
    close(O.direction("a", v, cosine=True)(FEATURES), (flat @ unit / np.linalg.norm(flat, axis=1)).mean())


def test_diversity_is_batched_and_matches_numpy():
    x = np.abs(RNG.normal(size=(3, 4, 4, 5)))
    obj = O.diversity("a")
    assert obj.batched and not O.channel("a", 0).batched
    flat = x.reshape(3, -1, 5)
    grams = np.einsum("npi,npj->nij", flat, flat).reshape(3, -1)
    grams /= np.linalg.norm(grams, axis=1, keepdims=True)
    sim = grams @ grams.T
    expected = -(sim.sum() - np.trace(sim)) / 6
    close(obj({"a": jnp.asarray(x, jnp.float32)}), expected)
    # identical images are as similar as can be; a single image has nothing to differ from
    same = jnp.asarray(np.repeat(x[:1], 3, axis=0), jnp.float32)
    close(obj({"a": same}), -1.0)
    close(obj({"a": jnp.asarray(x[:1], jnp.float32)}), 0.0)


def test_gradients_are_finite_on_dead_features():
    # ReLU layers are often exactly 0; norms must not turn that into NaN gradients
    zeros = {"a": jnp.zeros((3, 4, 4, 8))}
    obj = O.direction("a", np.ones(8), cosine=True) + O.layer("a") + O.channel("a", 2) + O.diversity("a")
    grad = jax.jit(jax.grad(lambda f: O.batch_value(obj, f)))(zeros)
    assert np.all(np.isfinite(grad["a"]))


def test_algebra_does_not_compound():
    a, b = O.channel("a", 1), O.neuron("b", 2)
    va, vb = NP["a"][..., 1].mean(), NP["b"][1, 1, 2]
    c = 2 * a
    d = c + b
    e = 3 * c
    assert c.weights == (2.0,) and c.terms == (a,)
    assert d.weights == (2.0, 1.0) and d.terms == (a, b)
    assert e.weights == (6.0,) and e.terms == (a,)
    close(c(FEATURES), 2 * va)
    close(d(FEATURES), 2 * va + vb)
    close(e(FEATURES), 6 * va)
    # operands are untouched by later expressions
    close(c(FEATURES), 2 * va)
    assert a == O.channel("a", 1)
    close((a * 2.0)(FEATURES), 2 * va)
    close((-a)(FEATURES), -va)
    close((a / 2)(FEATURES), va / 2)
    close((a - b)(FEATURES), va - vb)
    close((d - c)(FEATURES), vb)  # terms do not cancel symbolically but the value does
    close(sum([a, b, c])(FEATURES), 3 * va + vb)
    assert (0 + a) is a
    close((2 * (a + b) - 0.5 * O.layer("b"))(FEATURES), 2 * va + 2 * vb - 0.5 * (NP["b"] ** 2).mean())
    assert (a + b).layers == ("a", "b") and (a + b + a).layers == ("a", "b")
    with pytest.raises(TypeError):
        a * b
    with pytest.raises(TypeError):
        a + 1.0


def test_objectives_are_pytrees_with_static_layers():
    s1, s2 = jax.tree.structure(O.channel("a", 1)), jax.tree.structure(O.channel("a", 7))
    assert s1 == s2
    assert jax.tree.structure(O.channel("b", 1)) != s1
    assert jax.tree.leaves(2 * O.channel("a", 3)) == [3, 2.0]


def test_vmap_over_stack_equals_loop():
    targets = [O.channel("a", c) for c in range(8)]
    stacked = O.stack(targets)
    values = jax.jit(jax.vmap(lambda o, f: o(f), in_axes=(0, None)))(stacked, FEATURES)
    close(values, [t(FEATURES) for t in targets])
    mixed = [0.5 * O.neuron("a", c, y=c % 5, x=c % 6) - O.class_logit(c) for c in range(6)]
    values = jax.vmap(lambda o: o(FEATURES))(O.stack(mixed))
    close(values, [NP["a"][c % 5, c % 6, c] * 0.5 - NP["logits"][c] for c in range(6)])


def test_stack_errors():
    with pytest.raises(UsageError, match="different structure"):
        O.stack([O.channel("a", 0), O.neuron("a", 0)])
    with pytest.raises(UsageError, match="different structure"):
        O.stack([O.channel("a", 0), O.channel("b", 0)])
    with pytest.raises(UsageError, match="shape"):
        O.stack([O.direction("a", np.ones(8)), O.direction("a", np.ones(4))])
    with pytest.raises(UsageError):
        O.stack([])


def test_parse_target():
    assert O.parse_target("logits:285", LAYERS) == O.class_logit(285)
    assert O.parse_target("blocks.10:7", LAYERS) == O.channel("blocks.10", 7)
    with pytest.raises(UnknownLayerError, match="did you mean blocks.10"):
        O.parse_target("block.10:7", LAYERS)
    with pytest.raises(UsageError, match=r"1280 channels: 0\.\.1279"):
        O.parse_target("head:1280", LAYERS)
    with pytest.raises(UsageError, match=r"0\.\.999"):
        O.parse_target("logits:1000", LAYERS)
    assert O.parse_target("blocks.10", LAYERS) == O.layer("blocks.10")  # a whole layer (DeepDream)
    for bad in ("blocks.99", "blocks.10:x", ":3", "blocks.10:-1", "blocks.10:", ""):
        with pytest.raises(UsageError, match="malformed target"):
            O.parse_target(bad, LAYERS)


def test_constructor_errors_and_missing_layer():
    with pytest.raises(UsageError):
        O.channel("a", -1)
    with pytest.raises(UsageError):
        O.neuron("a", 0, y=1)
    with pytest.raises(UsageError):
        O.direction("a", np.zeros(8))
    with pytest.raises(UnknownLayerError, match="'zzz'"):
        O.channel("zzz", 0)(FEATURES)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3), strides=2, name="conv1")(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(5, name="logits")(x.mean(axis=(1, 2)))


def test_with_a_model_and_the_batched_protocol():
    module = TinyCNN()
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))  # jit: eager init is slow
    model = jaxviz.from_linen(module, variables, (16, 16, 3))
    obj = O.channel("conv2", 3) + 0.1 * O.class_logit(2)
    images = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3))

    def per_image(image):
        return obj(model.features(model.params, image, obj.layers))

    values, grads = jax.jit(jax.vmap(jax.value_and_grad(per_image)))(images)
    assert np.all(np.isfinite(grads)) and np.abs(grads).sum() > 0
    # a batched sum: per-image terms add up over the batch, so their gradients are unchanged
    both = obj + 0.0 * O.diversity("conv1")
    assert both.batched and both.layers == ("conv2", "logits", "conv1")

    def batch(images):
        return O.batch_value(both, model.features(model.params, images, both.layers))

    value, grad = jax.jit(jax.value_and_grad(batch))(images)
    np.testing.assert_allclose(grad, grads, rtol=1e-5, atol=1e-7)
    close(value, np.sum(values))
