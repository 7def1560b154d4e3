"""Image-seeded rendering: every parameterization inverts a photo; --init with 0 steps gives the photo back."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from PIL import Image

import jaxviz
from jaxviz import objectives, render
from jaxviz.cli import main
from jaxviz.common.errors import UsageError
from jaxviz.common.images import resize_center_crop
from jaxviz.image import param

PARAMETERIZATIONS = [param.pixel(), param.pixel(decorrelate=True), param.fourier(),
                     param.fourier(decay=1.5, decorrelate=False), param.maco(), param.maco(decorrelate=False),
                     param.fourier(normalize=False, gain=0.25, color="lucid"), param.maco(normalize_phase=True)]


def _photo(photos, size, name="chelsea"):
    image = resize_center_crop(photos[name], size).astype(np.float32) / 255.0
    image[0, :4] = 0.0  # pure black and white pixels: the inverse must stay finite
    image[1, :4] = 1.0
    return image


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("p", PARAMETERIZATIONS, ids=repr)
def test_inverse_reproduces_the_image(photos, p, size):
    image = _photo(photos, size)
    params = p.inverse(image)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
    back = np.asarray(jax.jit(p.to_image)(params), np.float64)
    assert np.abs(back - image).max() <= 1.0 / 255.0


def test_seeded_maco_moves_only_the_phase(photos):
    p = param.maco()
    seeded = p.inverse(_photo(photos, 32))
    grads = jax.grad(lambda s: jnp.sum(p.to_image(s) * jnp.linspace(0, 1, 3)))(seeded)
    assert float(jnp.abs(grads.magnitude).max()) == 0.0
    assert float(grads.phase[0, 0].max() == 0.0) and float(jnp.abs(grads.phase).max()) > 0.0


class _Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        return nn.Dense(4, name="head")(jnp.mean(x, axis=(1, 2)))


@pytest.fixture(scope="module")
def toy():
    module = _Toy()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jaxviz.from_linen(module, variables, (32, 32, 3), name="toy")


@pytest.mark.parametrize("name", ["pixel", "fourier", "maco"])
def test_render_zero_steps_returns_the_photos(toy, photos, name):
    images = np.stack([_photo(photos, 32, "chelsea"), _photo(photos, 32, "coffee")])
    targets = [objectives.channel("conv1", 0), objectives.channel("conv1", 1)]
    recipe = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=32), parameterization=name)
    result = render.render_images(toy, targets, config=render.RenderConfig(size=32, steps=0), recipe=recipe,
                                  init_images=images)
    assert result.history.shape == (2, 0)
    assert np.abs(result.images - images).max() <= 1.0 / 255.0


def test_seeded_render_moves_and_the_pull_holds_it(toy, photos):
    photo = _photo(photos, 32)
    targets = [objectives.channel("conv1", 3)]
    config = render.RenderConfig(size=32, steps=16)
    recipe = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=32), parameterization="pixel",
                                         transform="none", learning_rate=0.2)
    free = render.render_images(toy, targets, config=config, recipe=recipe, init_images=photo).images[0]
    pulled = render.render_images(toy, targets, config=config, recipe=recipe, init_images=photo,
                           image_penalty=render_pull(photo, 1e4)).images[0]
    free_gap, pulled_gap = np.abs(free - photo).mean(), np.abs(pulled - photo).mean()
    assert free_gap > 0.01  # the objective changed the photo
    assert pulled_gap < 0.5 * free_gap


def render_pull(photo, weight):
    from jaxviz.recipes.parts import PullToward

    return PullToward(photo, weight)


def test_zero_steps_without_init_and_missing_inverse_are_usage_errors(toy, photos):
    targets = [objectives.channel("conv1", 0)]
    with pytest.raises(UsageError, match="steps"):
        render.render_images(toy, targets, config=render.RenderConfig(size=32, steps=0))

    class NoInverse:
        def init(self, *, key, size):
            return jnp.zeros((size, size, 3))

        def to_image(self, params):
            return jax.nn.sigmoid(params)

    with pytest.raises(UsageError, match="inverse"):
        render.render_images(toy, targets, config=render.RenderConfig(size=32, steps=1), parameterization=NoInverse(),
                      init_images=_photo(photos, 32))
    with pytest.raises(UsageError, match="one per target"):
        render.render_images(toy, targets, config=render.RenderConfig(size=32, steps=1),
                      init_images=np.zeros((3, 32, 32, 3), np.float32))


def test_cli_init_with_zero_steps_writes_the_photo(tmp_path, photos, capsys):
    path = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(path)
    out = tmp_path / "out"
    code = main(["visualize", "--target", "logits:967", "--out", str(out), "--init", str(path), "--steps", "0",
                 "--size", "64", "--param", "maco", "--quiet"])
    assert code == 0, capsys.readouterr().err
    expected = resize_center_crop(photos["coffee"], 64).astype(int)
    written = np.asarray(Image.open(out / "logits_967.png")).astype(int)
    assert np.abs(written - expected).max() <= 1


def test_cli_init_weight_needs_init(tmp_path, capsys):
    code = main(["visualize", "--target", "logits:1", "--out", str(tmp_path), "--init-weight", "1"])
    assert code == 2 and "--init-weight needs --init" in capsys.readouterr().err
