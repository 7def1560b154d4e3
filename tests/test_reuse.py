"""A second render of the same structure in one process does not trace again (issue 23)."""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen

from jaxviz import objectives, render
from jaxviz.image import transforms
from jaxviz.models import model as features
from jaxviz.render import reuse

CONFIG = render.RenderConfig(size=64, steps=3, chunk_steps=2, batch_size=2, param="fourier",
                             transforms="default", learning_rate=0.05)
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class Toy(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Conv(8, (3, 3), strides=2, name="conv1")(x))
        return linen.Conv(8, (3, 3), strides=2, name="conv2")(x)


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

    reuse.clear()
    jax.monitoring.register_event_duration_secs_listener(on_event)
    yield seen
    jax.monitoring.unregister_event_duration_listener(on_event)
    reuse.clear()


def _render(model, channels, **kwargs):
    return render.render_images(model, [objectives.channel("conv2", c) for c in channels], key=jax.random.key(1),
                                config=CONFIG, progress=False, **kwargs)


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


def test_reused_programs_give_the_results_of_fresh_ones(toy, traces):
    _render(toy, [0, 1])
    reused = _render(toy, [0, 1])
    reuse.clear()
    fresh = _render(toy, [0, 1])
    np.testing.assert_array_equal(reused.images, fresh.images)
    np.testing.assert_array_equal(reused.activation, fresh.activation)
    np.testing.assert_array_equal(reused.history, fresh.history)


def test_a_changed_setting_or_part_builds_new_programs(toy, traces):
    base = _render(toy, [0, 1])
    traces.clear()
    faster = render.render_images(toy, [objectives.channel("conv2", c) for c in (0, 1)], key=jax.random.key(1),
                                  config=dataclasses.replace(CONFIG, learning_rate=0.5), progress=False)
    assert _programs_traced(traces), "a new learning rate must not reuse the old optimizer's programs"
    assert not np.array_equal(faster.images, base.images)
    traces.clear()
    _render(toy, [0, 1], transform=transforms.jitter(3))
    assert _programs_traced(traces), "another transform must build its own programs"


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A user's transform whose behaviour lives in a function field (its repr cannot tell two apart)."""

    fn: Callable

    def __call__(self, image, *, key):
        return self.fn(image)


def test_function_fields_of_user_parts_are_told_apart(toy, traces):
    dark = _render(toy, [0, 1], transform=Scaled(lambda im: im * 0.2))
    light = _render(toy, [0, 1], transform=Scaled(lambda im: im * 1.0))
    # why identity is needed: the description (addresses removed) cannot tell the two apart
    assert render.fingerprint(Scaled(lambda im: im)) == render.fingerprint(Scaled(lambda im: 2 * im))
    assert not np.allclose(dark.history, light.history)


@pytest.mark.slow  # 25-50 s: make test stays under 10 minutes from a clean clone
def test_a_second_diversity_render_of_one_structure_does_not_trace(toy, traces):
    def diverse(channel):
        return render.render_images(toy, objectives.channel("conv2", channel) + 5.0 * objectives.diversity("conv1"),
                                    key=jax.random.key(1), config=CONFIG, images_per_target=2, progress=False)

    first = diverse(0)
    assert any("one_step" in name for name in traces), traces
    traces.clear()
    second = diverse(3)  # another channel: the objective's values are arguments of the kept programs
    assert [name for name in traces if any(p in name for p in ("one_step", "init", "final"))] == [], traces
    assert second.targets == ("conv2:3#0", "conv2:3#1") and not np.array_equal(second.images, first.images)
    reuse.clear()
    fresh = diverse(3)
    np.testing.assert_array_equal(fresh.images, second.images)
    np.testing.assert_array_equal(fresh.activation, second.activation)
