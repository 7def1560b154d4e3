"""The anchors' recipes: Lucid's scaling and colours, DeepInversion's penalties and BN weights,
the new transforms and the crop-accumulating optimizer, each against an independent float64 reference."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxviz import priors, recipes, registry
from jaxviz.common.errors import UsageError
from jaxviz.image import param, transforms

LUCID_RAW = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def test_lucid_colour_matrix_is_normalized_by_its_largest_column_norm():
    largest = np.sqrt(0.26**2 + 0.27**2 + 0.27**2)  # the first column is the longest
    np.testing.assert_allclose(param.LUCID_COLOR, LUCID_RAW / largest, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(param.LUCID_COLOR, axis=0).max(), 1.0, atol=1e-6)
    np.testing.assert_allclose(param.LUCID_COLOR[0, 0], 0.56282854, atol=1e-6)  # Xplique's copy of it


def _lucid_reference(spectrum: np.ndarray, size: int) -> np.ndarray:
    """Lucent's fft_image + to_valid_rgb in float64: scale, irfft (ortho), / 4, colour matrix, sigmoid."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.abs(np.fft.fftfreq(size)[: size // 2 + 1])[None, :]
    scale = 1.0 / np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)
    complex_spectrum = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale[..., None]
    image = np.fft.irfft2(complex_spectrum, s=(size, size), axes=(0, 1), norm="ortho") / 4.0
    image = image @ (LUCID_RAW / np.linalg.norm(LUCID_RAW, axis=0).max()).T  # Lucent mixes after the FFT
    return 1.0 / (1.0 + np.exp(-image))


@pytest.mark.parametrize("size", [32, 33])
def test_lucid_fourier_matches_lucents_formula(size):
    p = param.fourier(normalize=False, gain=0.25, color="lucid")
    # a large spectrum so the image is far from flat grey and errors would show
    params = 3.0 * np.random.default_rng(size).normal(size=(size, size // 2 + 1, 3, 2)).astype(np.float32)
    expected = _lucid_reference(params.astype(np.float64), size)
    assert expected.std() > 0.05
    np.testing.assert_allclose(jax.jit(p.to_image)(params), expected, atol=2e-6)


def test_lucid_init_matches_sd():
    params = param.fourier(normalize=False, gain=0.25, color="lucid").init(key=jax.random.key(0), size=64)
    assert params.shape == (64, 33, 3, 2) and abs(float(params.std()) - 0.01) < 5e-4


def test_bad_colour_is_a_usage_error():
    with pytest.raises(UsageError, match="choose photos, lucid"):
        param.fourier(color="srgb")
    with pytest.raises(UsageError, match="squash"):
        param.pixel(squash="tanh")


def _tv_reference(image_hwc: np.ndarray) -> float:
    x = image_hwc.transpose(2, 0, 1)[None]  # DeepInversion's NCHW
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return sum(np.sqrt((d**2).sum()) for d in (d1, d2, d3, d4))


def test_total_variation_and_l2_match_numpy():
    image = np.random.default_rng(0).uniform(size=(9, 7, 3))
    np.testing.assert_allclose(recipes.total_variation_l2(jnp.asarray(image, jnp.float32)), _tv_reference(image),
                               rtol=1e-5)
    np.testing.assert_allclose(recipes.l2_norm(jnp.asarray(image, jnp.float32)), np.sqrt((image**2).sum()), rtol=1e-6)
    flat = np.full((8, 8, 3), 0.3)
    assert float(recipes.total_variation_l2(jnp.asarray(flat))) == 0.0
    # the penalty works in torchvision-normalized units
    x = (image - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(recipes.deepinversion_penalty(tv_l2=1e-4, l2=1e-5)(jnp.asarray(image, jnp.float32)),
                               1e-4 * _tv_reference(x) + 1e-5 * np.sqrt((x**2).sum()), rtol=1e-5)


def _toy_bn_model(rng):
    def bn(c):
        return {"scale": rng.uniform(0.5, 2, c), "bias": rng.normal(size=c), "mean": rng.normal(size=c),
                "var": rng.uniform(0.5, 2, c)}

    params = {"stem_bn": bn(4), "blocks_0": {"project_bn": bn(6)}}
    return types.SimpleNamespace(name="toy", params=params, batchnorm_eps=1e-3,
                                 batchnorm={"stem.bn": ("stem_bn",), "blocks.0.project": ("blocks_0", "project_bn")})


def test_batchnorm_prior_weights_the_first_layer():
    rng = np.random.default_rng(0)
    model = _toy_bn_model(rng)
    features = {"stem.bn": rng.normal(size=(5, 5, 4)), "blocks.0.project": rng.normal(size=(3, 3, 6))}
    expected = 0.0
    for i, (layer, path) in enumerate(model.batchnorm.items()):
        p = model.params[path[0]] if len(path) == 1 else model.params[path[0]][path[1]]
        y = features[layer].reshape(-1, features[layer].shape[-1])
        x = (y - p["bias"]) / p["scale"] * np.sqrt(p["var"] + 1e-3) + p["mean"]
        term = np.linalg.norm(x.mean(0) - p["mean"]) + np.linalg.norm(x.var(0) - p["var"])
        expected += (10.0 if i == 0 else 1.0) * term
    prior = priors.batchnorm_prior(model, weight=0.05, first_weight=10.0)
    assert prior.layers[0] == "stem.bn"
    jfeatures = {k: jnp.asarray(v, jnp.float32) for k, v in features.items()}
    penalty, _, trace = prior.apply(jfeatures, prior.init(jfeatures), jnp.zeros((), jnp.int32))
    np.testing.assert_allclose(trace, expected, rtol=1e-4)
    np.testing.assert_allclose(penalty, 0.05 * expected, rtol=1e-4)
    with pytest.raises(UsageError, match="first_weight"):
        priors.batchnorm_prior(model, first_weight=-1.0)


def test_deepinversion_recipe_uses_first_bn_times_ten():
    model = _toy_bn_model(np.random.default_rng(1))
    prior = recipes.get("deepinversion").build_prior(model)
    assert prior.first_weight == 10.0 and prior.weight == 0.01


def test_project_box_keeps_params_in_the_box():
    opt = optax.chain(optax.sgd(1.0), recipes.project_box(0.0, 1.0))
    params = jnp.asarray([0.2, 0.5, 0.9])
    state = opt.init(params)
    updates, _ = opt.update(jnp.asarray([0.5, 0.1, -0.5]), state, params)  # sgd steps -g
    np.testing.assert_allclose(optax.apply_updates(params, updates), [0.0, 0.4, 1.0], atol=1e-7)


def test_crops_per_step_average_gradients_before_one_update():
    recipe = recipes.get("maco")
    assert recipe.crops_per_step == 4 and recipe.passes == 512
    opt = recipe.schedule().make()
    params = jnp.zeros(3)
    state = opt.init(params)
    grads = [jnp.asarray(g) for g in np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)]
    for g in grads[:-1]:
        updates, state = opt.update(g, state, params)
        np.testing.assert_array_equal(updates, 0.0)  # accumulating: no move yet
    updates, state = opt.update(grads[-1], state, params)
    inner = optax.nadam(1.0, eps=1e-7)
    expected, _ = inner.update(sum(grads) / 4, inner.init(params), params)
    np.testing.assert_allclose(updates, expected, rtol=1e-5)


def test_recipe_budget_and_names():
    assert recipes.NAMES == ("lucid", "maco", "deepinversion", "jaxviz", "outliers", "quantile", "gaussian",
                             "maco-full", "deepinversion-full", "deepdream")
    assert registry.names("recipe") == recipes.NAMES
    lucid = registry.build("recipe", "lucid")
    assert lucid.steps == 512 and lucid.size == 128 and lucid.passes == 512
    assert recipes.get("maco").at_budget(256).steps == 64
    assert recipes.get("deepinversion").config().steps == 512
    with pytest.raises(UsageError, match="choose lucid, maco, deepinversion"):
        recipes.get("vital")
    with pytest.raises(UsageError, match="bad options for recipe 'lucid'"):
        recipes.get("lucid", wobble=1)
    # the method is its base recipe plus the prior: same parts otherwise
    method, base = recipes.get("outliers", size=160), recipes.get("maco", size=160)
    assert method.prior is not None and base.prior is None
    assert (method.parameterization, method.transform, method.size, method.crops_per_step) == \
        (base.parameterization, base.transform, base.size, base.crops_per_step)
    assert recipes.get("lucid", size=160).size == 91 and recipes.get("maco", size=160).size == 160
    with pytest.raises(UsageError, match="below one step"):
        recipes.get("maco").at_budget(3)


def test_random_crop_samples_a_square_inside_the_image():
    h = 40
    ramp = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None, None], (h, h, 3))
    crop = transforms.random_crop((0.3, 0.6), out=16)
    for seed in range(5):
        out = np.asarray(jax.jit(crop)(jnp.asarray(ramp), key=jax.random.key(seed)))
        assert out.shape == (16, 16, 3)
        step = np.diff(out[:, 0, 0])
        np.testing.assert_allclose(step, step[0], atol=1e-4)  # a linear ramp stays linear: one zoom
        assert 0.3 * h / 16 - 1e-4 <= step[0] <= 0.6 * h / 16 + 1e-4
        assert out.min() >= 0 and out.max() <= h - 1


def test_noise_flip_roll_and_upsample():
    image = jnp.asarray(np.random.default_rng(0).uniform(size=(64, 64, 3)), jnp.float32)
    added = np.asarray(transforms.noise(0.04)(jnp.zeros((200, 200, 3)), key=jax.random.key(0)))
    np.testing.assert_allclose(added.std(), 0.04 * np.sqrt(1 + 1 / 12), rtol=0.02)
    assert abs(added.mean()) < 1e-3
    flips = [np.asarray(transforms.random_flip()(image, key=jax.random.key(s))) for s in range(8)]
    assert all(np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips)
    assert any(np.array_equal(f, image[:, ::-1]) for f in flips) and any(np.array_equal(f, image) for f in flips)
    rolled = np.asarray(transforms.roll(5)(image, key=jax.random.key(3)))
    shifts = [(dy, dx) for dy in range(-5, 6) for dx in range(-5, 6)
              if np.array_equal(np.roll(np.asarray(image), (dy, dx), axis=(0, 1)), rolled)]
    assert len(shifts) == 1
    assert transforms.upsample_to(224)(image).shape == (224, 224, 3)
    assert transforms.upsample_to(32)(image).shape == (64, 64, 3)


def test_lucid_preset_has_lucents_parameters():
    chain = transforms.lucid()
    pad, jit8, scale, rotate, jit4, up = chain.transforms
    assert (pad.n, pad.mode, pad.value, jit8.d, jit4.d, up.size) == (12, "constant", 0.5, 8, 4, 224)
    np.testing.assert_allclose(scale.scales, np.linspace(0.9, 1.1, 11))
    assert sorted(set(rotate.choices)) == list(range(-10, 11)) and rotate.choices.count(0) == 6
    out = jax.jit(chain)(jnp.full((128, 128, 3), 0.5), key=jax.random.key(0))
    assert out.shape == (224, 224, 3)
    assert registry.build("transform", "lucid") == chain


@pytest.mark.slow
@pytest.mark.parametrize("name", recipes.NAMES)
def test_recipes_render_on_lite0_and_climb(lite0, name):
    from jaxviz import objectives, render

    recipe = recipes.get(name, **({"warmup": 4} if name == "outliers" else {}))  # the prior acts in 32 passes
    recipe = recipe.at_budget(8 * recipe.crops_per_step)
    result = render.render_images(lite0, [objectives.class_logit(207)], config=recipe.config(size=64, chunk_steps=8),
                           **recipe.parts(lite0))
    assert result.images.shape == (1, 64, 64, 3) and np.all(np.isfinite(result.images))
    assert 0.0 <= result.images.min() and result.images.max() <= 1.0
    assert result.history.shape == (1, recipe.passes)
    if name != "maco-full":  # its last passes see crops of 5 % of the canvas: their logit is not the first ones'
        assert result.history[0, -4:].mean() > result.history[0, :4].mean()  # the target's logit rises


def test_class_log_probability_is_minus_cross_entropy():
    logits = np.random.default_rng(0).normal(size=(1000,)) * 3
    expected = logits[207] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    obj = recipes.class_log_probability(207)
    np.testing.assert_allclose(obj({"logits": jnp.asarray(logits, jnp.float32)}), expected, rtol=1e-5)
    assert obj.layers == ("logits",) and repr(obj) == "class_log_probability(207)"
    assert recipes.get("deepinversion").target(5) == recipes.class_log_probability(5)
    assert repr(recipes.get("lucid").target(5)) == "class_logit(5)"
