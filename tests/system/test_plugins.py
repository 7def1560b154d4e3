"""A user's own prior, parameterization and transform, defined here, render through the public API."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxviz
from jaxviz import objectives, priors, recipes, registry, render
from jaxviz.common.pytree import part, static
from jaxviz.image import param, transforms


class Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        return nn.Conv(4, (3, 3), strides=2, name="conv2")(x)


@pytest.fixture(scope="module")
def toy():
    variables = Toy().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jaxviz.from_linen(Toy(), variables, (32, 32, 3), name="toy")


@dataclasses.dataclass(frozen=True)
class Tanh:
    """A parameterization written by a user as a plain (hashable) object: pixels through a tanh squashed
    into [0.25, 0.75]."""

    def init(self, *, key, size):
        return 0.01 * jax.random.normal(key, (size, size, 3))

    def to_image(self, params):
        return 0.5 + 0.25 * jnp.tanh(params)

    def inverse(self, image):
        raise NotImplementedError


@part
class BlankLeftHalf:
    """A transform written by a user as a pytree part: the model never sees the left half of the image."""

    def __call__(self, image, *, key, step=None):
        return image.at[:, : image.shape[1] // 2].set(0.5)


@part
class ChannelPenalty(priors.PriorBase):
    """A prior written by a user: penalize the mean of one channel of a layer, counting steps in its state."""

    layer: str = static()
    channel: int = static()
    weight: float = static()

    @property
    def layers(self):
        return (self.layer,)

    def init(self, features, *, canvas=None):
        return jnp.zeros((), jnp.int32)

    def apply(self, features, state, step, *, pool=None, locate=None):
        value = features[self.layer][..., self.channel].mean()
        return self.weight * value, state + 1, value

    def report(self, features, state):
        return {"applied": state}


CONFIG = render.RenderConfig(size=32, steps=12, chunk_steps=6)
RECIPE = registry.edit_recipe(recipes.get("maco", size=32), parameterization="fourier", transform="none",
                              learning_rate=0.1)


def test_custom_parts_satisfy_the_protocols():
    assert isinstance(Tanh(), param.Parameterization)
    assert isinstance(BlankLeftHalf(), transforms.Transform)
    assert not isinstance(BlankLeftHalf(), transforms.GeometricTransform)
    assert isinstance(ChannelPenalty("conv2", 0, 1.0), priors.Prior)


def test_custom_parameterization_and_transform_are_used(toy):
    target = [objectives.channel("conv2", 1)]
    result = render.render_images(toy, target, config=CONFIG, recipe=RECIPE, parameterization=Tanh(), transform=BlankLeftHalf(),
                           devices=jax.devices()[:1])
    image = result.images[0]
    assert 0.25 <= image.min() and image.max() <= 0.75  # Tanh's range, not a sigmoid's
    # no gradient reaches the blanked half: it keeps its initial faint noise, the right half moved
    left, right = image[:, :16], image[:, 16:]
    assert np.abs(left - 0.5).max() < 0.01 < np.abs(right - 0.5).max()
    assert result.history[0, -1] > result.history[0, 0]


def test_custom_prior_changes_the_result_and_keeps_its_state(toy):
    target = [objectives.channel("conv2", 1)]
    free = render.render_images(toy, target, config=CONFIG, recipe=RECIPE, devices=jax.devices()[:1])
    penalized = render.render_images(toy, target, config=CONFIG, recipe=RECIPE, prior=ChannelPenalty("conv2", 2, 50.0),
                              devices=jax.devices()[:1])
    channel_2 = lambda images: toy.features(toy.params, toy.normalize(jnp.asarray(images) * 255.0),  # noqa: E731
                                            ["conv2"])["conv2"][..., 2].mean()
    assert float(channel_2(penalized.images)) < float(channel_2(free.images))
    assert int(penalized.prior["applied"][0]) == CONFIG.steps  # the state threaded through every step


def test_image_penalty_is_subtracted(toy):
    target = [objectives.channel("conv2", 1)]
    dark = render.render_images(toy, target, config=CONFIG, image_penalty=lambda image: 100.0 * image.mean(),
                         devices=jax.devices()[:1], recipe="jaxviz")
    free = render.render_images(toy, target, config=CONFIG, devices=jax.devices()[:1], recipe="jaxviz")
    assert dark.images.mean() < free.images.mean() - 0.05


def test_objects_and_names_are_interchangeable(toy):
    target = [objectives.channel("conv2", 1)]
    by_name = render.render_images(toy, target, config=CONFIG, recipe=RECIPE, devices=jax.devices()[:1])
    by_object = render.render_images(toy, target, config=CONFIG, recipe=RECIPE, parameterization=param.fourier(),
                              transform=transforms.identity(), devices=jax.devices()[:1])
    np.testing.assert_array_equal(by_name.images, by_object.images)


def test_wrong_objects_are_one_line_errors(toy):
    target = [objectives.channel("conv2", 1)]
    with pytest.raises(jaxviz.UsageError, match="parameterization= must be"):
        render.render_images(toy, target, config=CONFIG, recipe=RECIPE, parameterization=object())
    with pytest.raises(jaxviz.UsageError, match="unknown transform 'wobble'"):
        render.render_images(toy, target, config=CONFIG, recipe=RECIPE, transform="wobble")
    with pytest.raises(jaxviz.UsageError, match="prior.apply's penalty must return a scalar"):
        render.render_images(toy, target, config=CONFIG, recipe=RECIPE, prior=_VectorPenalty(), devices=jax.devices()[:1])
    with pytest.raises(jaxviz.UsageError, match="warmup"):
        render.render_images(toy, target, config=CONFIG, recipe=RECIPE, prior=priors.OutlierPrior({}, warmup=CONFIG.steps))


def test_a_python_float_penalty_is_accepted(toy):
    result = render.render_images(toy, [objectives.channel("conv2", 1)], config=CONFIG, recipe=RECIPE, prior=_FloatPenalty(),
                           devices=jax.devices()[:1])
    assert np.all(result.trace == 0.5)


def test_registry_builds_every_name_and_refuses_bad_options():
    for name in registry.names("parameterization"):
        assert isinstance(registry.build("parameterization", name), param.Parameterization)
    for name in registry.names("transform"):
        assert isinstance(registry.build("transform", name), transforms.Transform)
    with pytest.raises(jaxviz.UsageError, match="bad options for parameterization 'fourier'"):
        registry.build("parameterization", "fourier", wobble=1)
    registry.register("parameterization", "tanh", Tanh)
    assert registry.resolve("parameterization", "tanh", argument="parameterization") == Tanh()


@dataclasses.dataclass(frozen=True)
class _VectorPenalty(priors.PriorBase):
    layers: tuple = ("conv2",)

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        return features["conv2"].mean(axis=(0, 1)), state, 0.0

    def report(self, features, state):
        return {}


@dataclasses.dataclass(frozen=True)
class _FloatPenalty(_VectorPenalty):
    def apply(self, features, state, step, *, pool=None, locate=None):
        return 0.0, state, 0.5


def test_a_prior_without_the_declared_attributes_is_a_one_line_error(toy):
    @dataclasses.dataclass(frozen=True)
    class Bare:  # no pooled / trace_name / warmup
        layers: tuple = ("conv2",)

        def init(self, features, *, canvas=None):
            return ()

        def apply(self, features, state, step, *, pool=None, locate=None):
            return 0.0, state, 0.0

        def report(self, features, state):
            return {}

    with pytest.raises(jaxviz.UsageError, match="Bare lacks pooled, trace_name, warmup"):
        render.render_images(toy, [objectives.channel("conv2", 1)], config=CONFIG, recipe=RECIPE, prior=Bare())


def test_an_unhashable_plain_part_is_a_one_line_error(toy):
    @dataclasses.dataclass
    class Mutable:  # neither a pytree nor hashable
        def __call__(self, image, *, key, step=None):
            return image

    with pytest.raises(jaxviz.UsageError, match="neither a pytree nor hashable"):
        render.render_images(toy, [objectives.channel("conv2", 1)], config=CONFIG, recipe=RECIPE, transform=Mutable())
