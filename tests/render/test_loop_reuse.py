"""Parts are arguments of the render programs: a second render of the same structure does not trace again,
whatever the arrays its parts hold; another setting does."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxviz import objectives, priors, recipes, render
from jaxviz.common.pytree import part, static
from jaxviz.image import transforms
from jaxviz.models import model as features

RECIPE = recipes.get("jaxviz", size=64)
CONFIG = render.RenderConfig(size=64, steps=3, chunk_steps=2, batch_size=2)
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        return nn.Conv(8, (3, 3), strides=2, name="conv2")(x)


@pytest.fixture(scope="module")
def toy():
    variables = Toy().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return features.from_linen(Toy(), variables, (64, 64, 3), name="toy")


@pytest.fixture
def traces():
    """Names of the functions JAX traces (its own monitoring event, not our bookkeeping)."""
    seen: list[str] = []

    def on_event(event, seconds, **kwargs):
        if event == TRACE_EVENT:
            seen.append(kwargs.get("fun_name", ""))

    render.clear_programs()
    jax.monitoring.register_event_duration_secs_listener(on_event)
    yield seen
    jax.monitoring.unregister_event_duration_listener(on_event)
    render.clear_programs()


def _render(model, channels, recipe=RECIPE, **kwargs):
    return render.render_images(model, [objectives.channel("conv2", c) for c in channels], key=jax.random.key(1),
                                config=CONFIG, recipe=recipe, progress=False, **kwargs)


def _programs_traced(names):
    return [n for n in names if any(p in n for p in ("run_chunk", "init", "final"))]


def test_second_call_of_one_structure_does_not_trace(toy, traces):
    first = _render(toy, [0, 1])
    assert _programs_traced(traces), f"the first call traces the programs; saw {traces}"
    traces.clear()
    second = _render(toy, [2, 3])  # other targets, same structure
    assert _programs_traced(traces) == [], traces
    again = _render(toy, [0, 1])
    np.testing.assert_array_equal(again.images, first.images)
    assert not np.array_equal(second.images, first.images)


def _moments(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(8, 8))
    cov = a @ a.T / 8 + np.eye(8)
    return {"conv1": priors.LayerMoments(jnp.asarray(rng.normal(size=8), jnp.float32),
                                         jnp.asarray(np.linalg.inv(cov), jnp.float32),
                                         jnp.asarray(np.sqrt(np.diag(cov)), jnp.float32))}


def test_other_statistics_reuse_the_programs_and_change_the_result(toy, traces):
    """The statistics are leaves of the prior, an argument: new arrays, same program."""
    one = _render(toy, [0, 1], prior=priors.mahalanobis(_moments(0), weight=5.0))
    traces.clear()
    two = _render(toy, [0, 1], prior=priors.mahalanobis(_moments(1), weight=5.0))
    assert _programs_traced(traces) == [], traces
    assert not np.array_equal(one.images, two.images)
    render.clear_programs()
    fresh = _render(toy, [0, 1], prior=priors.mahalanobis(_moments(1), weight=5.0))
    np.testing.assert_array_equal(fresh.images, two.images)


def test_a_changed_setting_or_part_traces_again(toy, traces):
    base = _render(toy, [0, 1])
    traces.clear()
    faster = _render(toy, [0, 1], recipe=RECIPE.edit(learning_rate=0.5))
    assert _programs_traced(traces), "a new learning rate is a static setting of the optimizer part"
    assert not np.array_equal(faster.images, base.images)
    traces.clear()
    _render(toy, [0, 1], transform=transforms.jitter(3))
    assert _programs_traced(traces), "another transform must trace its own programs"


@part
class Darken:
    """A user's own transform as a pytree part: equal settings reuse the programs."""

    factor: float = static(0.5)

    def __call__(self, image, *, key, step=None):
        return image * self.factor


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A user's transform that is a plain (hashable) object: wrapped as a static node, compared by equality."""

    fn: Callable

    def __call__(self, image, *, key, step=None):
        return self.fn(image)


def test_users_pytree_parts_are_reused_and_told_apart_by_their_settings(toy, traces):
    dark = _render(toy, [0, 1], transform=Darken(0.5))
    traces.clear()
    again = _render(toy, [0, 1], transform=Darken(0.5))
    assert _programs_traced(traces) == [], traces
    np.testing.assert_array_equal(again.images, dark.images)
    lighter = _render(toy, [0, 1], transform=Darken(0.9))
    assert not np.allclose(lighter.history, dark.history)


def test_function_fields_of_plain_user_parts_are_told_apart(toy, traces):
    dark = _render(toy, [0, 1], transform=Scaled(lambda im: im * 0.2))
    light = _render(toy, [0, 1], transform=Scaled(lambda im: im * 1.0))
    assert not np.allclose(dark.history, light.history)


@pytest.mark.slow  # 25-50 s: make test stays under 10 minutes from a clean clone
def test_a_second_diversity_render_of_one_structure_does_not_trace(toy, traces):
    def diverse(channel):
        return render.render_images(toy, objectives.channel("conv2", channel) + 5.0 * objectives.diversity("conv1"),
                                    key=jax.random.key(1), config=CONFIG, recipe=RECIPE, images_per_target=2,
                                    progress=False)

    first = diverse(0)
    assert _programs_traced(traces), traces
    traces.clear()
    second = diverse(3)  # another channel: the objective's values are arguments of the kept programs
    assert _programs_traced(traces) == [], traces
    assert second.targets == ("conv2:3#0", "conv2:3#1") and not np.array_equal(second.images, first.images)
    render.clear_programs()
    fresh = diverse(3)
    np.testing.assert_array_equal(fresh.images, second.images)
    np.testing.assert_array_equal(fresh.activation, second.activation)
