"""Targets of one structure share one compiled step, whatever the launches and chunks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxviz import objectives, priors, render
from jaxviz.common.errors import UsageError
from jaxviz.image import param as param_lib
from jaxviz.image import transforms
from jaxviz.models import model as features
from jaxviz.render import step

# 5 targets, 2 per launch on one device -> 3 launches; 3 steps in chunks of 2 -> a full and a short chunk
CONFIG = render.RenderConfig(size=64, steps=3, chunk_steps=2, batch_size=2)
LAYER = "blocks.1"  # early exit: only the stem and two blocks run, so the test is quick


class Toy(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        return nn.Conv(8, (3, 3), strides=2, name="conv2")(x)


@pytest.fixture(scope="module")
def toy():
    """A tiny linen CNN: the properties below are the render loop's, so a toy keeps them quick."""
    variables = Toy().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    return features.from_linen(Toy(), variables, (64, 64, 3), name="toy")


@pytest.fixture
def built(monkeypatch):
    """Every step, compiled bundle and XLA compilation render() makes; each step fails if traced twice."""
    # programs stored on disk (jaxviz.render.stored) run as `jit(call)`: count the plain programs here
    # (tests/render/test_stored.py covers the stored ones)
    monkeypatch.setenv("JAXVIZ_COMPILE_CACHE", "0")
    chex.clear_trace_counter()
    render.clear_programs()  # programs kept from an earlier test would hide this render's builds
    record = {"steps": 0, "compiled": [], "xla": []}

    def on_event(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            record["xla"].append(kwargs.get("fun_name", ""))
    make_step, compile_ = step.make_step, step.compile_programs

    def counted_make_step(*args, **kwargs):
        record["steps"] += 1
        # chex keys its counter by the wrapping site, shared by the steps of all structures; render
        # finishes one structure before it builds the next, so restart the count for each
        chex.clear_trace_counter()
        return chex.assert_max_traces(make_step(*args, **kwargs), n=1)

    def recorded_compile(*args, **kwargs):
        out = compile_(*args, **kwargs)
        record["compiled"].append(out)
        return out

    monkeypatch.setattr(step, "make_step", counted_make_step)
    monkeypatch.setattr(step, "compile_programs", recorded_compile)
    jax.monitoring.register_event_duration_secs_listener(on_event)
    yield record
    jax.monitoring.unregister_event_duration_listener(on_event)
    chex.clear_trace_counter()


def test_five_channels_in_three_launches_trace_and_compile_the_step_once(lite0, built):
    targets = [objectives.channel(LAYER, c) for c in range(5)]
    result = render.render_images(lite0, targets, config=CONFIG, devices=jax.devices()[:1])
    assert result.history.shape == (5, 3) and np.all(np.isfinite(result.history))
    # one structure -> one make_step, traced once (chex raises on a second trace), and one XLA
    # executable for the full and the short chunk of every launch
    assert built["steps"] == 1 and len(built["compiled"]) == 1
    assert sum("run_chunk" in name for name in built["xla"]) == 1, built["xla"]


def test_two_structures_share_the_programs_and_compile_two_chunks(toy, built, monkeypatch):
    # the objective is an argument of the programs: one program set, traced and compiled once per structure
    monkeypatch.setattr(chex, "assert_max_traces", lambda fn, n: fn)  # a structure each: two traces here
    targets = [objectives.channel("conv2", 1), objectives.neuron("conv2", 2), objectives.channel("conv2", 5)]
    render.render_images(toy, targets, config=CONFIG, devices=jax.devices()[:1])
    assert built["steps"] == len(built["compiled"]) == 1
    assert sum("run_chunk" in name for name in built["xla"]) == 2, built["xla"]


def test_chunking_does_not_change_a_bit(toy):
    targets = [objectives.channel("conv2", c) for c in (3, 7)]
    short_last = render.render_images(toy, targets, config=CONFIG, devices=jax.devices()[:1])  # chunks 2 + 1
    whole = render.render_images(toy, targets, config=render.RenderConfig(**{**CONFIG.__dict__, "chunk_steps": 3}),
                          devices=jax.devices()[:1])  # one chunk of 3
    np.testing.assert_array_equal(short_last.images, whole.images)
    np.testing.assert_array_equal(short_last.history, whole.history)


def test_bfloat16_is_refused_on_cpu_but_the_step_supports_it(lite0):
    with pytest.raises(UsageError, match="bfloat16"):
        render.render_images(lite0, [objectives.channel(LAYER, 0)], devices=jax.devices("cpu")[:1],
                      config=render.RenderConfig(**{**CONFIG.__dict__, "compute_dtype": "bfloat16"}))
    # the step itself runs in bfloat16 anywhere (what GPU/TPU runs); objective and state stay float32
    parameterization, objective = param_lib.fourier(), objectives.channel(LAYER, 0)
    optimizer = optax.adam(0.05)
    parts = step.Parts(parameterization, transforms.identity(), priors.none(), None, step.PlainOptimizer(optimizer))
    params = parameterization.init(key=jax.random.key(0), size=64)
    state = step.RenderState(params, optimizer.init(params), (), jnp.zeros((), jnp.int32))
    values = {}
    for dtype in (None, jnp.bfloat16):
        step_fn = step.make_step(lite0, compute_dtype=dtype)
        new_state, (value, _) = jax.jit(step_fn)(lite0.params, state, objective, jax.random.key(1), parts)
        assert value.dtype == jnp.float32 and new_state.params.dtype == jnp.float32
        values[dtype] = float(value)
    assert abs(values[jnp.bfloat16] - values[None]) <= 0.05 * abs(values[None]) + 0.05
