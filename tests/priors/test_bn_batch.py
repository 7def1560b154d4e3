"""Batch-pooled DeepInversion BN prior: pooled moments and gradients against references, on 8 CPU devices.

conftest gives this process 8 CPU devices; a toy BatchNorm network keeps every render fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxviz import objectives, priors, recipes, registry, render
from jaxviz.common.errors import UsageError
from jaxviz.image import param
from jaxviz.models.model import Model
from jaxviz.priors import bn_batch as prior_bn_batch

EPS = 1e-3
SIZE = 12


def _toy_params():
    rng = np.random.default_rng(0)

    def bn(c):
        return {"scale": rng.uniform(0.5, 2, c), "bias": rng.normal(size=c) * 0.3,
                "mean": rng.normal(size=c) * 0.2, "var": rng.uniform(0.2, 1.5, c)}

    return {"w0": rng.normal(size=(3, 4)), "bn0": bn(4), "w1": rng.normal(size=(4, 6)) * 0.5, "bn1": bn(6),
            "w2": rng.normal(size=(6, 5))}


def _np_forward(p, x):
    """float64 numpy forward of the toy net: ``(bn inputs {layer: [N, M, C]}, logits [N, 5])``."""
    h0 = x @ p["w0"]
    b0 = (h0 - p["bn0"]["mean"]) / np.sqrt(p["bn0"]["var"] + EPS) * p["bn0"]["scale"] + p["bn0"]["bias"]
    h1 = np.maximum(b0, 0) @ p["w1"]
    b1 = (h1 - p["bn1"]["mean"]) / np.sqrt(p["bn1"]["var"] + EPS) * p["bn1"]["scale"] + p["bn1"]["bias"]
    n = x.shape[0]
    return {"bn0": h0.reshape(n, -1, 4), "bn1": h1.reshape(n, -1, 6)}, np.maximum(b1, 0).mean((1, 2)) @ p["w2"]


def _toy_model():
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _toy_params())

    def apply(p, x, names=None):
        def bn(h, q):
            return (h - q["mean"]) / jnp.sqrt(q["var"] + EPS) * q["scale"] + q["bias"]

        b0 = bn(x @ p["w0"], p["bn0"])
        b1 = bn(jax.nn.relu(b0) @ p["w1"], p["bn1"])
        out = {"bn0": b0, "bn1": b1, "logits": jax.nn.relu(b1).mean((1, 2)) @ p["w2"]}
        return {k: out[k] for k in (names or out)}

    return Model("toy_bn", params, {"bn0": (SIZE, SIZE, 4), "bn1": (SIZE, SIZE, 6), "logits": (5,)}, apply,
                 normalize=lambda x255: x255 / 127.5 - 1.0, batchnorm={"bn0": ("bn0",), "bn1": ("bn1",)},
                 batchnorm_eps=EPS)


def _np_loss(inputs, idx, first_weight):
    """DeepInversion's BN loss with moments over the positions of the images ``idx`` (float64)."""
    p = _toy_params()
    total = 0.0
    for i, layer in enumerate(("bn0", "bn1")):
        x = inputs[layer][idx].reshape(-1, inputs[layer].shape[-1])
        term = np.linalg.norm(x.mean(0) - p[layer]["mean"]) + np.linalg.norm(x.var(0) - p[layer]["var"])
        total += (first_weight if i == 0 else 1.0) * term
    return total


def _images(n):
    return np.random.default_rng(1).uniform(0.1, 0.9, size=(n, SIZE, SIZE, 3)).astype(np.float32)


def _render(model, prior, n, *, devices, batch_size=8, lr=1e-2):
    targets = [objectives.class_logit(i % 5) for i in range(n)]
    config = render.RenderConfig(size=SIZE, steps=1, batch_size=batch_size, chunk_steps=1)
    return render.render_images(model, targets, config=config, parameterization=param.pixel(squash="clip"), transform="none",
                         optimizer=optax.sgd(lr), prior=prior, init_images=_images(n), devices=devices)


@pytest.mark.parametrize("n_devices, batch_size, launches", [
    (8, 8, [[0, 1, 2, 3, 4]]),            # one launch on 5 of the 8 devices
    (2, 8, [[0, 1, 2, 3, 4]]),            # 6 slots on 2 devices: the padded slot is left out
    (2, 2, [[0, 1], [2, 3], [4]]),        # DeepInversion's batch is one launch
])
def test_pooled_moments_equal_numpy_moments_over_the_batch(n_devices, batch_size, launches):
    model = _toy_model()
    prior = prior_bn_batch.pooled_batchnorm_prior(model, weight=0.01, first_weight=10.0)
    result = _render(model, prior, 5, devices=jax.devices()[:n_devices], batch_size=batch_size)
    x = _images(5).astype(np.float64) * 2.0 - 1.0
    inputs, _ = _np_forward(_toy_params(), x)
    for launch in launches:
        expected = _np_loss(inputs, launch, 10.0)
        np.testing.assert_allclose(result.trace[launch, 0], expected, rtol=1e-4)
    per_image = [_np_loss(inputs, [i], 10.0) for i in range(5)]
    assert not np.allclose(result.trace[:, 0], per_image, rtol=1e-2)  # pooling changes the value


def test_pooled_gradient_is_the_gradient_of_one_batch_loss():
    model = _toy_model()
    weight, lr = 0.5, 1e-2
    prior = prior_bn_batch.pooled_batchnorm_prior(model, weight=weight, first_weight=3.0)
    result = _render(model, prior, 5, devices=jax.devices(), lr=lr)
    x0 = _images(5)
    p64 = _toy_params()

    def batch_objective(images):  # Σ_i logit_i − λ·(BN loss of the batch's pooled moments), written directly
        x = images * 2.0 - 1.0
        h0 = x @ p64["w0"]
        b0 = (h0 - p64["bn0"]["mean"]) / jnp.sqrt(p64["bn0"]["var"] + EPS) * p64["bn0"]["scale"] + p64["bn0"]["bias"]
        h1 = jax.nn.relu(b0) @ p64["w1"]
        b1 = (h1 - p64["bn1"]["mean"]) / jnp.sqrt(p64["bn1"]["var"] + EPS) * p64["bn1"]["scale"] + p64["bn1"]["bias"]
        logits = jax.nn.relu(b1).mean((1, 2)) @ p64["w2"]
        value = sum(logits[i, i % 5] for i in range(5))
        loss = 0.0
        for w, h, layer in ((3.0, h0, "bn0"), (1.0, h1, "bn1")):
            flat = h.reshape(-1, h.shape[-1])
            loss = loss + w * (jnp.linalg.norm(flat.mean(0) - p64[layer]["mean"])
                               + jnp.linalg.norm(flat.var(0) - p64[layer]["var"]))
        return value - weight * loss

    with jax.enable_x64(True):
        expected = np.asarray(jax.grad(batch_objective)(jnp.asarray(x0, jnp.float64)))
    got = (result.images - x0) / lr  # one SGD ascent step on pixels (no clipping this close to 0.5)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_without_pool_it_is_the_per_image_prior():
    model = _toy_model()
    x = _images(1) * 2.0 - 1.0
    feats = model.features(model.params, jnp.asarray(x), ["bn0", "bn1"])
    one = jax.tree.map(lambda a: a[0], feats)
    pooled = prior_bn_batch.pooled_batchnorm_prior(model, weight=0.01, first_weight=10.0)
    inputs, _ = _np_forward(_toy_params(), x.astype(np.float64))
    np.testing.assert_allclose(float(pooled.apply(one, (), jnp.int32(0))[2]), _np_loss(inputs, [0], 10.0), rtol=1e-4)
    per_image = priors.batchnorm_prior(model, weight=0.01, first_weight=10.0)
    np.testing.assert_allclose(float(pooled.apply(one, (), 0)[0]), float(per_image.apply(one, (), 0)[0]), rtol=1e-4)


def test_recipe_option_registry_name_and_refusals(lite0):
    recipe = recipes.get("deepinversion", pooled=True, size=64)
    assert isinstance(recipe.build_prior(lite0), prior_bn_batch.PooledBatchNormPrior)
    assert "pooled over the batch" in recipe.notes
    assert isinstance(recipes.get("deepinversion").build_prior(lite0), priors.BatchNormPrior)
    assert isinstance(registry.build_prior("bn-batch", model=lite0), prior_bn_batch.PooledBatchNormPrior)
    with pytest.raises(UsageError, match="first_weight"):
        prior_bn_batch.pooled_batchnorm_prior(lite0, first_weight=-1)
    no_bn = Model("plain", {}, {"logits": (5,)}, lambda p, x, names=None: {"logits": x.mean((1, 2))})
    with pytest.raises(UsageError, match="BatchNorm"):
        prior_bn_batch.pooled_batchnorm_prior(no_bn)


@pytest.mark.parametrize("decorrelate", [False, True])
def test_clipped_pixel_inverse_gives_back_the_image(decorrelate):
    image = _images(1)[0]
    p = param.pixel(squash="clip", decorrelate=decorrelate)
    np.testing.assert_allclose(np.asarray(p.to_image(p.inverse(jnp.asarray(image)))), image, atol=1e-5)
