"""The persistent compilation cache: used by default, reused by the next process, safe
when damaged or shared, off on request.

JAX's cache is process-wide state, so every run here is a fresh subprocess rendering a toy net;
the reference for "same result" is a run with the cache off.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.toys import ROOT

# Renders two channels of a toy CNN and reports what JAX did: the programs found in the persistent
# cache and those it had to compile (misses), the cache folder in use, and the numbers.
WORKER = textwrap.dedent("""
    import json, logging
    import jax, jax.numpy as jnp
    from flax import linen
    import jaxviz
    from jaxviz import objectives, render

    class Toy(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.relu(linen.Conv(8, (3, 3), strides=2, name="conv1")(x))
            return linen.Conv(8, (3, 3), strides=2, name="conv2")(x)

    class Record(logging.Handler):  # JAX logs each persistent-cache lookup at DEBUG level
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Persistent compilation cache hit"):
                hits.append(message.split("'")[1])
            elif message.startswith("PERSISTENT COMPILATION CACHE MISS"):
                misses.append(message.split("'")[1])

    hits, misses = [], []
    logger = logging.getLogger("jax._src.compiler")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Record())
    logger.propagate = False
    variables = Toy().init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    model = jaxviz.from_linen(Toy(), variables, (64, 64, 3), name="toy")
    targets = [objectives.channel("conv2", 0), objectives.channel("conv2", 5)]
    config = render.RenderConfig(size=64, steps=3, chunk_steps=2, batch_size=2)
    result = render.render_images(model, targets, config=config)
    print(json.dumps({"dir": jaxviz.common.cache.compile_cache_dir(), "hits": hits, "misses": misses,
                      "images": result.images.tolist(), "activation": result.activation.tolist()}))
""")


def run_worker(cache_root, **env):
    full = {**os.environ, "JAXVIZ_CACHE_DIR": str(cache_root), "PYTHONPATH": ROOT,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # the toy compiles in milliseconds
            "JAX_PLATFORMS": "cpu"}
    full.pop("JAXVIZ_COMPILE_CACHE", None)
    full.pop("JAX_COMPILATION_CACHE_DIR", None)
    full.update(env)
    return subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def result_of(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    report["stderr"] = err
    return report


def chunk_compiled(report) -> bool:
    return any("run_chunk" in name for name in report["misses"])


def assert_same_numbers(a, b):
    np.testing.assert_allclose(np.asarray(a["images"]), np.asarray(b["images"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["activation"], b["activation"], rtol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The toy run with the cache off: nothing may be written."""
    root = tmp_path_factory.mktemp("off")
    report = result_of(run_worker(root, JAXVIZ_COMPILE_CACHE="0"))
    assert report["dir"] is None
    assert not (root / "xla").exists()
    return report


def entries(folder):
    return sorted(p for p in folder.iterdir() if p.name.endswith("-cache"))


@pytest.mark.slow  # fresh processes compiling Lite0: ~20 s each
def test_second_process_reads_what_the_first_wrote(tmp_path, reference):
    first = result_of(run_worker(tmp_path))
    assert first["dir"] == str(tmp_path / "xla")
    written = entries(tmp_path / "xla")
    assert any("run_chunk" in p.name for p in written), written
    assert chunk_compiled(first) and not first["hits"]

    second = result_of(run_worker(tmp_path))
    assert not chunk_compiled(second), second["misses"]  # loaded, not compiled
    for program in ("init", "run_chunk", "final"):  # render's three programs
        assert any(program in name for name in second["hits"]), (program, second["hits"])
    assert_same_numbers(first, reference)
    assert_same_numbers(second, reference)


@pytest.mark.slow  # fresh processes compiling Lite0: ~20 s each
def test_damaged_entries_fall_back_to_compiling(tmp_path, reference):
    result_of(run_worker(tmp_path))
    for i, path in enumerate(entries(tmp_path / "xla")):
        data = path.read_bytes()
        if i % 2:  # truncated, as a full disk leaves it
            path.write_bytes(data[: len(data) // 2])
        else:  # garbled in the middle
            middle = len(data) // 2
            path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :])
    damaged = result_of(run_worker(tmp_path))
    assert chunk_compiled(damaged)
    assert "Error reading persistent compilation cache" in damaged["stderr"]
    assert_same_numbers(damaged, reference)


@pytest.mark.slow  # fresh processes compiling Lite0: ~20 s each
def test_users_jax_cache_folder_wins(tmp_path):
    theirs = tmp_path / "theirs"
    report = result_of(run_worker(tmp_path / "ours", JAX_COMPILATION_CACHE_DIR=str(theirs)))
    assert report["dir"] == str(theirs)
    assert entries(theirs) and not (tmp_path / "ours" / "xla").exists()


@pytest.mark.slow
def test_two_processes_share_one_folder(tmp_path, reference):
    """Both compile into the empty folder at once; both are right, and a third run reuses it."""
    procs = [run_worker(tmp_path) for _ in range(2)]
    for report in map(result_of, procs):
        assert_same_numbers(report, reference)
    third = result_of(run_worker(tmp_path))
    assert not chunk_compiled(third)
    assert_same_numbers(third, reference)


def test_cli_flag_turns_it_off(monkeypatch):
    from jaxviz import cli

    monkeypatch.delenv("JAXVIZ_COMPILE_CACHE", raising=False)
    for argv in (["--no-compile-cache", "layers"], ["layers", "--no-compile-cache"]):
        assert cli.build_parser().parse_args(argv).no_compile_cache
    assert not cli.build_parser().parse_args(["layers"]).no_compile_cache


@pytest.mark.parametrize("value, off", [("0", True), ("off", True), ("False", True), ("1", False), ("", False)])
def test_environment_switch(monkeypatch, value, off):
    from jaxviz.common import cache

    monkeypatch.setenv("JAXVIZ_COMPILE_CACHE", value)
    assert cache.compile_cache_disabled() is off
