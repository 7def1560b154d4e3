"""Heat-map coordinates: with crop transforms the outlier map counts canvas cells."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import objectives, priors
from jaxviz.image import canvas, transforms
from jaxviz.render import RenderConfig
from jaxviz.render import render_images as render
from tests.toys import make_toy

S = 32


def _ramp(hw):
    """An image whose pixels hold their own (y, x) position (and 1): bilinear sampling returns positions."""
    y, x = np.meshgrid(np.arange(hw[0], dtype=np.float32), np.arange(hw[1], dtype=np.float32), indexing="ij")
    return jnp.asarray(np.stack([y, x, np.ones_like(y)], -1))


@pytest.mark.parametrize("name, transform", [
    ("maco", transforms.maco(out=40, sd=0.0)),
    ("lucid", transforms.lucid(upsample=48)),
    ("default", transforms.default()),
    ("deepinversion", transforms.deepinversion(shift=5)),
    ("crop", transforms.crop_or_resize_to(24)),
])
def test_source_points_match_the_pixels_the_transform_moves(name, transform):
    image = _ramp((S, S))
    for seed in range(4):
        key = jax.random.key(seed)
        out = np.asarray(transform(image, key=key))
        q = np.stack(np.meshgrid(np.arange(out.shape[0]), np.arange(out.shape[1]), indexing="ij"), -1)
        src = np.asarray(canvas.source_points(transform, (S, S), q.astype(np.float32), key=key))
        # where the output shows the canvas itself (not padding or a mirrored border), it shows src
        inside = (src >= 1).all(-1) & (src <= S - 2).all(-1)
        assert inside.mean() > 0.3, name
        np.testing.assert_allclose(out[..., :2][inside], src[inside], atol=0.06, err_msg=name)


def _square_prior(toy):
    """Statistics of a black image's conv1 features: any position that sees the white square is an outlier."""
    black = toy.features(toy.params, jnp.zeros((1, S, S, 3)), ["conv1"])["conv1"][0, S // 2, S // 2]
    m = priors.LayerMoments(black, jnp.eye(8) / 0.05**2, jnp.full((8,), 0.05))
    return priors.outliers({"conv1": m}, warmup=0, every=1, weight=0.0)


class _Shift:
    """A transform jaxviz.image.canvas does not know (a fixed circular shift)."""

    def __call__(self, image, *, key, step=None):
        return jnp.roll(image, 5, axis=1)


def test_outlier_map_is_in_canvas_coordinates_under_crops(tmp_path):
    toy = make_toy()
    photo = np.zeros((S, S, 3), np.float32)
    photo[4:12, 4:12] = 1.0  # a white square in the top-left of a black canvas
    config = RenderConfig(size=S, steps=12, chunk_steps=4, batch_size=1)
    recipe = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=S), parameterization="pixel",
                                         learning_rate=1e-9)
    result = render(toy, [objectives.channel("conv2", 0)], config=config, prior=_square_prior(toy), recipe=recipe,
                    transform=transforms.chain(transforms.random_crop((0.5, 0.7)), transforms.noise(0.0)),
                    optimizer=None, init_images=photo)
    heat = np.asarray(result.prior["outlier_map"][0])
    assert heat.shape == (S, S) and int(result.prior["rounds"][0]) == 12
    near = np.zeros((S, S), bool)
    near[4 - 3:12 + 3, 4 - 3:12 + 3] = True  # the square, grown by the 3x3 conv and a cell of rounding
    assert heat[~near].sum() <= 0.02 * heat.sum()  # counts land where the square is on the canvas
    assert heat[6:10, 6:10].min() >= 1  # and every square cell a crop showed was counted
    metrics = result.save(str(tmp_path / "a"))
    assert metrics["targets"][0]["outlier_map"]["coordinates"] == "canvas"

    shifted = render(toy, [objectives.channel("conv2", 0)], config=config, prior=_square_prior(toy),
                     transform=_Shift(), init_images=photo)
    saved = shifted.save(str(tmp_path / "b"))
    assert saved["targets"][0]["outlier_map"]["coordinates"] == "model input"
    assert "model's input" in (tmp_path / "b" / "index.html").read_text()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["targets"][0]["outlier_map_coordinates"] == \
        "model input"
