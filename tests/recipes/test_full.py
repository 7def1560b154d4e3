"""The anchors at their own settings (jaxviz.recipes.full): maco-full's crop schedule, deepinversion-full's
pooled BN prior, deepdream's plain ascent. Small sizes; checked against hand-computed references."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import priors, recipes
from jaxviz.common.errors import UsageError
from jaxviz.image import crops, transforms
from jaxviz.recipes.parts import deepdream_optimizer


def _ramp(size=200):
    # pixel value = the x coordinate of its centre as a fraction of the width (channel 0)
    x = (np.arange(size) + 0.5) / size
    return jnp.asarray(np.broadcast_to(x[None, :, None], (size, size, 3)).copy(), jnp.float32)


@pytest.mark.parametrize("step, side", [(0, 0.5), (3, 0.5), (10 * 4, 0.45), (90 * 4 + 3, 0.05), (10_000, 0.05)])
def test_scheduled_crop_side_at_each_step(step, side):
    # 91 optimizer steps of 4 passes; no randomness (sd 0, centre fixed): the crop is the centre `side`
    crop = crops.scheduled_crop(0.5, 0.05, steps=91, crops=4, sd=0.0, centre_sd=0.0, out=50)
    assert float(crop.mean_side(step)) == pytest.approx(side, abs=1e-6)
    seen = np.asarray(crop(_ramp(), key=jax.random.key(0), step=jnp.int32(step)))[..., 0]
    assert seen.shape == (50, 50)
    # the output spans x in [0.5 - side/2, 0.5 + side/2] of the input (pixel centres, bilinear)
    half = side / 2
    assert seen[0, 0] == pytest.approx(0.5 - half + side / 100, abs=2e-3)
    assert seen[0, -1] == pytest.approx(0.5 + half - side / 100, abs=2e-3)


def test_scheduled_crop_draws_around_its_mean_and_stays_inside():
    crop = crops.scheduled_crop(0.5, 0.05, steps=10, crops=1, out=32)
    sides = []
    for i in range(200):
        seen = np.asarray(crop(_ramp(), key=jax.random.key(i), step=jnp.int32(0)))[..., 0]
        sides.append(seen[0, -1] - seen[0, 0])
        assert 0.0 <= seen.min() and seen.max() <= 1.0
    sides = np.asarray(sides) * 32 / 31  # first to last pixel centre: (out - 1) / out of the side
    assert np.mean(sides) == pytest.approx(0.5, abs=0.015) and np.std(sides) == pytest.approx(0.05, abs=0.015)


def test_maco_full_is_xplique_defaults_and_its_schedule_follows_the_budget():
    recipe = recipes.get("maco-full")
    assert (recipe.steps, recipe.crops_per_step, recipe.passes, recipe.size) == (256, 32, 8192, 512)
    crop = recipe.transform.transforms[0]
    assert isinstance(crop, crops.ScheduledCrop) and (crop.steps, crop.crops, crop.out) == (256, 32, 224)
    small = recipe.at_budget(1024)
    crop = small.transform.transforms[0]
    assert small.steps == 32 and crop.steps == 32
    assert float(crop.mean_side(0)) == pytest.approx(0.5) and float(crop.mean_side(1023)) == pytest.approx(0.05)
    assert recipes.get("maco-full", size=112).size == 256
    with pytest.raises(UsageError):
        crops.scheduled_crop(0.5, 0.0)


def test_maco_full_renders_with_the_step_counter(lite0):
    recipe = dataclasses.replace(recipes.get("maco-full", size=64), crops_per_step=4).at_budget(8)
    assert recipe.transform.transforms[0].crops == 4 and recipe.transform.transforms[0].steps == 2
    result = jaxviz.render.render_images(lite0, [recipe.target(1)], key=jax.random.key(0),
                                         config=recipe.config(batch_size=1), progress=False, **recipe.parts(lite0))
    assert result.images.shape == (1, recipe.size, recipe.size, 3) and np.all(np.isfinite(result.images))


def test_deepinversion_full_pools_bn_over_the_batch(lite0):
    recipe = recipes.get("deepinversion-full")
    assert (recipe.steps, recipe.size, recipe.crops_per_step) == (2000, 224, 1)
    prior = recipe.build_prior(lite0)
    assert isinstance(prior, priors.PooledBatchNormPrior) and prior.pooled
    assert (prior.weight, prior.first_weight) == (0.01, 10.0)
    assert not recipes.get("deepinversion").build_prior(lite0).pooled


def test_deepdream_has_no_transform_and_ascends_by_the_mean_absolute_gradient():
    recipe = recipes.get("deepdream")
    assert isinstance(recipe.transform, transforms.Identity) and recipe.prior is None
    assert recipe.image_penalty is None and recipe.crops_per_step == 1
    # plain ascent: the update is -lr * g / mean|g| (optax minimizes), then clipped into [0, 1]
    g = jnp.asarray([[0.2, -0.6], [1.0, 0.2]])
    params = jnp.full((2, 2), 0.5)
    opt = deepdream_optimizer(0.1)
    updates, _ = opt.update(g, opt.init(params), params)
    np.testing.assert_allclose(np.asarray(updates), -0.1 * np.asarray(g) / 0.5, rtol=1e-6)
    updates, _ = opt.update(g * 100, opt.init(params), jnp.full((2, 2), 0.95))
    np.testing.assert_allclose(np.asarray(updates + 0.95), np.clip(0.95 - 0.1 * np.asarray(g) / 0.5, 0, 1), rtol=1e-6)


def test_the_seed_method_on_deepdream_is_a_recipe():
    recipe = recipes.get("outliers", base="deepdream")
    assert isinstance(recipe.transform, transforms.Identity) and isinstance(recipe.prior, priors.PriorSpec)
