"""Render programs stored in exported form (jaxviz.render.stored): a warm process neither traces
nor lowers the model, and its results are those of the cold one."""

import dataclasses
import json
import os
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz.render import stored
from tests.toys import ROOT


class Pair(NamedTuple):
    total: jax.Array
    count: jax.Array


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXVIZ_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("JAXVIZ_COMPILE_CACHE", raising=False)
    return tmp_path / "programs"


def _counted():
    """A function that counts its own traces (a Python side effect runs only while JAX traces)."""
    calls = []

    def fn(state, x):
        calls.append(1)
        return Pair(state.total + jnp.sum(x * x), state.count + 1), x * 2.0

    return fn, calls


def _args():
    return Pair(jnp.float32(1.0), jnp.int32(0)), jnp.arange(6, dtype=jnp.float32).reshape(2, 3)


def test_a_new_process_loads_the_program_instead_of_tracing_it(cache):
    fn, calls = _counted()
    first = stored.StoredFunction(fn, name="toy", key="toy-v1")(*_args())
    assert len(calls) == 1 and len(os.listdir(cache)) == 1
    # a new StoredFunction is what a new process has: nothing in memory, the file on disk
    fn2, calls2 = _counted()
    again = stored.StoredFunction(fn2, name="toy", key="toy-v1")(*_args())
    assert calls2 == []
    assert isinstance(again[0], Pair)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(float(again[0].total), 1.0 + float(np.sum(np.arange(6.0) ** 2)))


def test_key_shape_and_dtype_each_make_their_own_program(cache):
    fn, calls = _counted()
    program = stored.StoredFunction(fn, name="toy", key="toy-v1")
    state, x = _args()
    program(state, x)
    program(state, x)  # same signature: the in-memory program
    program(state, jnp.ones((4, 3)))
    stored.StoredFunction(fn, name="toy", key="toy-v2")(state, x)
    assert len(calls) == 3 and len(os.listdir(cache)) == 3


def test_an_unreadable_file_is_exported_again(cache):
    fn, _ = _counted()
    expected = stored.StoredFunction(fn, name="toy", key="k")(*_args())
    (path,) = cache.iterdir()
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # a truncated write
    fn2, calls2 = _counted()
    out = stored.StoredFunction(fn2, name="toy", key="k")(*_args())
    assert calls2 == [1]
    np.testing.assert_array_equal(np.asarray(out[1]), np.asarray(expected[1]))
    fn3, calls3 = _counted()
    stored.StoredFunction(fn3, name="toy", key="k")(*_args())  # the rewritten file is good
    assert calls3 == []


def test_off_switch_and_undescribed_parts_store_nothing(cache, monkeypatch):
    fn, calls = _counted()
    stored.StoredFunction(fn, name="toy", key=None)(*_args())
    monkeypatch.setenv("JAXVIZ_COMPILE_CACHE", "0")
    fn2, calls2 = _counted()
    stored.StoredFunction(fn2, name="toy", key="k")(*_args())
    assert calls == calls2 == [1] and not cache.exists()


def test_donated_state_is_reused():
    fn, _ = _counted()
    program = stored.StoredFunction(fn, name="toy", key="k", donate_argnums=(0,))
    state, x = _args()
    state = jax.tree.map(lambda a: a + 0, state)  # arrays of our own to donate
    new_state, _ = program(state, x)
    assert float(new_state.total) == 56.0 and all(a.is_deleted() for a in jax.tree.leaves(state))


@dataclasses.dataclass(frozen=True)
class UserPrior:
    weight: float = 1.0


def test_only_arguments_named_by_value_and_versioned_code_are_stored(lite0):
    from jaxviz import objectives, priors, recipes
    from jaxviz.common.pytree import Static, part, static
    from jaxviz.image import param
    from jaxviz.models import program_identity
    from jaxviz.render import Parts

    @part
    class Local:
        weight: float = static(1.0)

    ours = Parts(param.fourier(), recipes.get("maco").transform, priors.none(), None, recipes.get("maco").schedule())
    assert stored.storable(jax.tree.structure((ours, objectives.channel("blocks.3", 2), _args())))
    assert not stored.storable(jax.tree.structure(Local()))  # a user's class: its code is not in the digest
    assert not stored.storable(jax.tree.structure(Static(lambda x: x)))  # a function: named by its address
    assert not stored.storable(jax.tree.structure(Static(UserPrior())))  # a user's object, even named by value
    assert stored.storable(jax.tree.structure(Static(param.pixel())))
    assert program_identity(lite0).startswith("efficientnet_lite0-")
    assert program_identity(dataclasses.replace(lite0, apply=lambda p, x, n: lite0.apply(p, x, n))) is None
    assert program_identity(dataclasses.replace(lite0, normalize=lambda x: x / 255.0)) is None


_WORKER = """
import json, sys
import jax
import numpy as np
import jaxviz
from jaxviz import objectives, render
traced = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, s, **kw: traced.append(kw.get("fun_name", "")) if event.endswith("jaxpr_trace_duration") else None)
model = jaxviz.load_model("efficientnet_lite0")
config = render.RenderConfig(size=64, steps=3, chunk_steps=2, batch_size=2)
result = render.render_images(model, ["logits:1", "blocks.12:5"], config=config, key=jax.random.key(3),
                              progress=False, recipe="quantile")
diverse = render.render_images(model, objectives.channel("blocks.3", 1) + 2.0 * objectives.diversity("blocks.2"),
                               config=config, key=jax.random.key(4), progress=False, images_per_target=2)
np.save(sys.argv[1], np.concatenate([result.images.ravel(), result.history.ravel(), diverse.images.ravel()]))
print(json.dumps(traced))
"""


def _run_worker(tmp_path, out, **env):
    env = {**os.environ, "JAXVIZ_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ROOT, **env}
    env.pop("XLA_FLAGS", None)  # the user's machine: one device per core (jaxviz.use_cpu_cores)
    proc = subprocess.run([sys.executable, "-c", _WORKER, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


@pytest.mark.slow
def test_warm_process_traces_no_render_program_and_matches_cold(tmp_path):
    cold_traced, cold = _run_worker(tmp_path, tmp_path / "cold.npy")
    warm_traced, warm = _run_worker(tmp_path, tmp_path / "warm.npy")
    plain_traced, plain = _run_worker(tmp_path, tmp_path / "plain.npy", JAXVIZ_COMPILE_CACHE="0")
    model_programs = ("run_chunk_sharded", "init_sharded", "final", "flat", "one_step", "init")
    assert any(p in name for name in cold_traced for p in model_programs)
    assert not [name for name in warm_traced if any(p in name for p in model_programs)], warm_traced
    assert any(p in name for name in plain_traced for p in model_programs)
    np.testing.assert_array_equal(warm, cold)  # the same stored program
    np.testing.assert_allclose(plain, cold, rtol=0, atol=1e-5)  # the plain jit: within float rounding
    # a chunk and a final per structure (two targets, the diversity group); one init per image count (the
    # init does not see the objective, so the two targets share it)
    names = sorted(name.split("-")[0] for name in os.listdir(tmp_path / "cache" / "programs"))
    assert names == ["chunk"] * 3 + ["final"] * 3 + ["init1"] * 2, names


def test_a_file_naming_a_class_outside_the_state_packages_is_not_trusted(cache):
    fn, _ = _counted()
    stored.StoredFunction(fn, name="toy", key="k")(*_args())
    (path,) = cache.iterdir()
    magic, header, payload = path.read_bytes().split(b"\n", 2)
    assert json.loads(header)["namedtuples"] == [f"{__name__}:Pair"]
    path.write_bytes(b"\n".join((magic, json.dumps({"namedtuples": ["subprocess:CompletedProcess"]}).encode(),
                                 payload)))
    fn2, calls2 = _counted()
    stored.StoredFunction(fn2, name="toy", key="k")(*_args())
    assert calls2 == [1]  # not loaded: exported again


def test_a_flipped_bit_in_a_stored_program_is_rebuilt_not_run(cache):
    fn, _ = _counted()
    want = stored.StoredFunction(fn, name="toy", key="k")(*_args())
    (path,) = cache.iterdir()
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x04  # one bit of the serialized program
    path.write_bytes(bytes(blob))
    fn2, calls2 = _counted()
    got = stored.StoredFunction(fn2, name="toy", key="k")(*_args())
    assert calls2 == [1]  # the damaged file is not used: exported again
    jax.tree.map(np.testing.assert_array_equal, got, want)
    fn3, calls3 = _counted()
    stored.StoredFunction(fn3, name="toy", key="k")(*_args())
    assert calls3 == []  # and the rebuilt file is whole


def test_a_file_naming_a_module_never_makes_jaxviz_import_it(cache):
    fn, _ = _counted()
    stored.StoredFunction(fn, name="toy", key="k")(*_args())
    (path,) = cache.iterdir()
    magic, header, payload = path.read_bytes().split(b"\n", 2)
    header = json.loads(header)
    sys.modules.pop("jaxviz.__main__", None)
    header["namedtuples"] = ["jaxviz.__main__:Anything"]  # importing it would run the command line
    path.write_bytes(b"\n".join((magic, json.dumps(header).encode(), payload)))
    fn2, calls2 = _counted()
    stored.StoredFunction(fn2, name="toy", key="k")(*_args())
    assert "jaxviz.__main__" not in sys.modules
    assert calls2 == [1]


def test_a_fifo_in_place_of_a_program_does_not_block(cache):
    fn, _ = _counted()
    stored.StoredFunction(fn, name="toy", key="k")(*_args())
    (path,) = cache.iterdir()
    path.unlink()
    os.mkfifo(path)
    fn2, calls2 = _counted()
    stored.StoredFunction(fn2, name="toy", key="k")(*_args())  # would wait forever on open()
    assert calls2 == [1]
