"""The statistics pass (jaxviz.stats.collect): sharding, multi-process, checkpoints, persistence, CLI."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxviz import data, stats
from jaxviz.cli import main
from jaxviz.common.checkpoint import CheckpointMismatchError
from jaxviz.stats import collect
from jaxviz.stats.store import STATS_FILE
from tests.toys import ROOT, features64, make_toy


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def assert_states_close(a, b, tol):
    assert list(a) == list(b)
    for layer in a:
        assert float(a[layer].count) == float(b[layer].count)
        for field in ("mean", "m2", "m4"):
            assert rel(getattr(a[layer], field), getattr(b[layer], field)) <= tol, (layer, field)


@pytest.mark.parametrize("view", ["pixel", "pooled", "patch3"])
def test_pass_on_eight_devices_matches_float64(toy, view):
    src = data.open_source("photos", size=16, max_images=13)
    assert len(jax.devices()) == 8
    out = collect.collect_moments(toy, ["conv1", "conv2"], src, view=view, batch_size=5)  # 5 → padded to 8
    images = np.concatenate(list(src.batches(13)))
    for layer in ("conv1", "conv2"):
        f = features64(toy, images, layer, view)
        mean, cov = stats.finalize(out[layer])
        assert float(out[layer].count) == len(f)
        assert rel(mean, f.mean(0)) < 1e-5
        assert rel(cov, np.cov(f, rowvar=False)) < 1e-5


_WORKER = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
sys.path.insert(0, {tests!r})
from tests.toys import make_toy
from jaxviz import data
from jaxviz.stats import collect
assert jax.device_count() == 8 and jax.local_device_count() == 4
src = data.open_source("photos", size=16, max_images=23)
states = collect.collect_moments(make_toy(), ["conv1", "conv2"], src, view="pixel", batch_size=5,
                               checkpoint_dir=os.path.join(out, "ckpt"), checkpoint_every=2)
collect.save_stats(os.path.join(out, "saved"), states, model="toy", view="pixel")
if pid == 0:
    np.savez(os.path.join(out, "states.npz"),
             **{f"{l}/{k}": v for l, s in states.items() for k, v in s._asdict().items()})
jax.distributed.shutdown()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_one_device_and_eight_devices_agree(toy):
    src = data.open_source("photos", size=16, max_images=23)
    one = collect.collect_moments(toy, ["conv1", "conv2"], src, batch_size=5, mesh=collect.data_mesh(jax.devices()[:1]))
    eight = collect.collect_moments(toy, ["conv1", "conv2"], src, batch_size=5)
    assert_states_close(eight, one, 1e-6)


@pytest.mark.slow
def test_two_processes_agree_with_one_device(toy, tmp_path):
    src = data.open_source("photos", size=16, max_images=23)
    one = collect.collect_moments(toy, ["conv1", "conv2"], src, batch_size=5, mesh=collect.data_mesh(jax.devices()[:1]))
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.replace("{tests!r}", repr(ROOT)))
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):  # one failed: its peer would wait for it forever
            break
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
    logs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(l[-3000:] for l in logs)
    with np.load(tmp_path / "states.npz") as f:
        two = {l: stats.StatsState(**{k: f[f"{l}/{k}"] for k in stats.StatsState._fields}) for l in ("conv1", "conv2")}
    assert_states_close(two, one, 1e-6)
    saved = collect.load_stats(str(tmp_path / "saved"), model="toy")
    for layer in ("conv1", "conv2"):
        mean, cov = stats.finalize(one[layer])
        assert rel(saved[layer].mean, mean) < 1e-6 and rel(saved[layer].cov, cov) < 1e-6


@pytest.mark.slow
def test_lite0_one_device_vs_eight_devices(lite0):
    src = data.open_source("photos", size=48, max_images=10)
    layers = ["blocks.1", "blocks.2"]
    one = collect.collect_moments(lite0, layers, src, batch_size=4, mesh=collect.data_mesh(jax.devices()[:1]))
    eight = collect.collect_moments(lite0, layers, src, batch_size=4)
    assert_states_close(eight, one, 1e-6)
    f = features64(lite0, np.concatenate(list(src.batches(10))), "blocks.2", "pixel")
    assert rel(stats.finalize(eight["blocks.2"])[1], np.cov(f, rowvar=False)) < 1e-5


class Crashing:
    """A source that dies after ``after`` batches (a stand-in for a killed pass) and logs its starts."""

    def __init__(self, src, after=None):
        self.src, self.after, self.starts = src, after, []
        self.size = src.size

    def __len__(self):
        return len(self.src)

    def describe(self):
        return self.src.describe()

    def batches(self, batch_size, *, start=0, shard_index=0, shard_count=1):
        self.starts.append(start)
        for k, batch in enumerate(self.src.batches(batch_size, start=start, shard_index=shard_index,
                                                   shard_count=shard_count)):
            if k == self.after:
                raise RuntimeError("crash")
            yield batch


@pytest.mark.parametrize("segment", [32, 3])  # device segments of 3 steps cross the checkpoint steps
def test_interrupted_pass_resumes_to_the_same_result(toy, tmp_path, monkeypatch, segment):
    monkeypatch.setattr(collect, "_SEGMENT_STEPS", segment)
    src = data.open_source("photos", size=16, max_images=22)
    kwargs = dict(view="patch3", batch_size=3, checkpoint_every=2)
    full = collect.collect_moments(toy, ["conv1", "conv2"], src, **kwargs)
    ckpt = str(tmp_path / "ckpt")
    crashing = Crashing(src, after=5)
    with pytest.raises(RuntimeError, match="crash"):
        collect.collect_moments(toy, ["conv1", "conv2"], crashing, checkpoint_dir=ckpt, **kwargs)
    resumed_src = Crashing(src)
    resumed = collect.collect_moments(toy, ["conv1", "conv2"], resumed_src, checkpoint_dir=ckpt, **kwargs)
    assert resumed_src.starts == [12]  # 4 steps of 3 images were checkpointed
    for layer in full:
        for a, b in zip(resumed[layer], full[layer]):
            np.testing.assert_array_equal(a, b)
    again = Crashing(src, after=0)  # a finished checkpoint: nothing left to read
    collect.collect_moments(toy, ["conv1", "conv2"], again, checkpoint_dir=ckpt, **kwargs)

    with pytest.raises(CheckpointMismatchError, match="another run"):
        collect.collect_moments(toy, ["conv1", "conv2"], src, checkpoint_dir=ckpt, **{**kwargs, "view": "pixel"})
    with pytest.raises(CheckpointMismatchError):
        collect.collect_moments(toy, ["conv1"], src, checkpoint_dir=ckpt, **kwargs)


def test_checkpoint_from_another_device_count_is_a_mismatch(toy, tmp_path):
    # each device keeps its own moments between merges, so a checkpoint holds one state per device
    src = data.open_source("photos", size=16, max_images=12)
    kwargs = dict(view="pixel", batch_size=4, checkpoint_every=1, checkpoint_dir=str(tmp_path / "ckpt"))
    crashing = Crashing(src, after=2)
    with pytest.raises(RuntimeError, match="crash"):
        collect.collect_moments(toy, ["conv1"], crashing, mesh=collect.data_mesh(jax.devices()[:4]), **kwargs)
    with pytest.raises(CheckpointMismatchError):
        collect.collect_moments(toy, ["conv1"], src, mesh=collect.data_mesh(jax.devices()[:2]), **kwargs)
    resumed = Crashing(src)
    collect.collect_moments(toy, ["conv1"], resumed, mesh=collect.data_mesh(jax.devices()[:4]), **kwargs)
    assert resumed.starts == [8]


def test_save_load_roundtrip_and_mismatches(toy, tmp_path):
    src = data.open_source("photos", size=16, max_images=6)
    states = collect.collect_moments(toy, ["conv1", "conv2"], src, view="pooled", batch_size=6)
    out = str(tmp_path / "stats")
    saved = collect.save_stats(out, states, model="toy", view="pooled", shrinkage="ledoit_wolf",
                               metadata={"data": "photos", "seed": 0})
    bundle = collect.load_stats(out, model=toy, view="pooled")
    assert bundle.model == "toy" and bundle.view == "pooled" and list(bundle.layers) == ["conv1", "conv2"]
    assert bundle.metadata["data"] == "photos" and bundle.metadata["samples"]["conv2"] == 6
    for layer in ("conv1", "conv2"):
        s = bundle[layer]
        mean, cov = stats.finalize(states[layer])
        assert s.dim == toy.layers[layer][-1] and s.count == 6
        np.testing.assert_allclose(s.mean, mean, rtol=1e-6)
        np.testing.assert_allclose(s.cov, cov, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s.precision, saved[layer].precision)
        shrunk = (1 - s.shrinkage) * s.cov + s.shrinkage * np.trace(s.cov) / s.dim * np.eye(s.dim)
        np.testing.assert_allclose(s.precision @ shrunk, np.eye(s.dim), atol=1e-6)
    assert collect.load_stats(out, layers=["conv2"], shrinkage=0.5)["conv2"].shrinkage == 0.5

    with pytest.raises(collect.StatsMismatchError, match="for model toy, not efficientnet_lite0"):
        collect.load_stats(out, model="efficientnet_lite0")
    with pytest.raises(collect.StatsMismatchError, match="not conv3"):
        collect.load_stats(out, layers=["conv1", "conv3"])
    with pytest.raises(collect.StatsMismatchError, match="view pooled, not pixel"):
        collect.load_stats(out, view="pixel")
    with pytest.raises(collect.StatsMismatchError, match="layer conv1"):
        collect.load_stats(out, model=make_toy(channels=(4, 6)))  # same name, other shapes
    with pytest.raises(collect.StatsNotFoundError, match="no statistics"):
        collect.load_stats(str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("argv, message", [
    (["--model", "efficientnet_lite9"], "unknown model"),
    (["--layers", "blocks.2,block.4"], "unknown layer 'block.4'"),
    (["--view", "patch4"], "unknown view 'patch4'"),
    (["--out", "/proc/forbidden"], "--out"),
    (["--shrinkage", "lots"], "unknown shrinkage"),
    (["--max-images", "0"], "--max-images"),
])
def test_cli_user_mistakes_are_one_line(argv, message, tmp_path, capsys):
    base = {"--layers": "blocks.2", "--out": str(tmp_path / "o"), "--data": "photos"}
    args = dict(zip(argv[::2], argv[1::2]))
    flat = [x for k, v in {**base, **args}.items() for x in (k, v)]
    assert main(["stats", *flat, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxviz: error:") and message in err and "\n" not in err and "Traceback" not in err


def test_cli_summary_and_rerun_is_up_to_date(tmp_path, capsys):
    out = str(tmp_path / "s")
    argv = ["stats", "--layers", "blocks.0,blocks.2", "--data", "photos", "--max-images", "6", "--size", "32",
            "--batch-size", "4", "--out", out, "--quiet", "--shrinkage", "ledoit_wolf"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "blocks.0" in text and "samples" in text and "condition" in text and "shrinkage" in text
    assert "up to date" not in text
    assert not os.path.exists(os.path.join(out, ".checkpoint"))
    bundle = collect.load_stats(out, model="efficientnet_lite0", view="pixel")
    assert bundle["blocks.2"].count == 6 * 8 * 8 and bundle.shrinkage == "ledoit_wolf"
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_killed_with_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    out, ref = str(tmp_path / "killed"), str(tmp_path / "ref")
    common = ["--layers", "blocks.1,blocks.2", "--data", "photos", "--max-images", "160", "--size", "32",
              "--batch-size", "2", "--view", "patch3", "--quiet"]
    cmd = [sys.executable, "-m", "jaxviz", "stats", *common, "--out", out, "--checkpoint-every", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = os.path.join(out, ".checkpoint", "pass")
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(ckpt) and any(n.isdigit() for n in os.listdir(ckpt)):
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not os.path.exists(os.path.join(out, STATS_FILE))
    done = max(int(n) for n in os.listdir(ckpt) if n.isdigit())
    assert 4 <= done < 80

    rerun = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert f"resuming at image {2 * done}/160" in rerun.stdout
    assert main(["stats", *common, "--out", ref]) == 0
    a, b = collect.load_stats(out), collect.load_stats(ref)
    for layer in ("blocks.1", "blocks.2"):
        assert a[layer].count == b[layer].count == 160 * 6 * 6  # 32 px → 8x8 → 6x6 patches
        np.testing.assert_array_equal(a[layer].mean, b[layer].mean)
        np.testing.assert_array_equal(a[layer].cov, b[layer].cov)
