"""The render loop on the real EfficientNet-Lite0: it works, shards, resumes and is deterministic."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxviz import objectives, recipes, registry, render
from jaxviz.cli import main
from jaxviz.common.errors import UsageError

FAST = render.RenderConfig(size=64, steps=6, chunk_steps=3, batch_size=8)
FOURIER = registry.edit_recipe(recipes.get("maco", size=64), parameterization="fourier")


def _targets(model, specs):
    return [objectives.parse_target(s, model.layers) for s in specs]


@pytest.mark.slow
def test_one_device_equals_eight_devices(lite0):
    assert len(jax.devices()) == 8
    targets = _targets(lite0, ["logits:1", "blocks.12:5", "logits:500"])
    one = render.render_images(lite0, targets, config=FAST, recipe=FOURIER, devices=jax.devices()[:1])
    eight = render.render_images(lite0, targets, config=FAST, recipe=FOURIER)
    # on CPU each image runs the same compiled step whatever the device count (lax.map, no batching)
    np.testing.assert_array_equal(eight.images, one.images)
    np.testing.assert_array_equal(eight.history, one.history)


@pytest.mark.slow  # several Lite0 renders: ~10-15 s
def test_seed_determinism(lite0):
    targets = _targets(lite0, ["blocks.10:7"])
    a = render.render_images(lite0, targets, config=FAST, recipe=FOURIER)
    b = render.render_images(lite0, targets, config=FAST, recipe=FOURIER)
    c = render.render_images(lite0, targets, config=render.RenderConfig(**{**FAST.__dict__, "seed": 1}), recipe=FOURIER)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images - c.images).max() > 1e-2


@pytest.mark.slow  # several Lite0 renders: ~10-15 s
def test_objective_rises_for_each_parameterization(lite0):
    targets = _targets(lite0, ["blocks.12:5"])
    for name in ("pixel", "fourier", "maco"):
        config = render.RenderConfig(size=64, steps=12, chunk_steps=6)
        recipe = registry.edit_recipe(recipes.get("jaxviz", size=64), parameterization=name)
        result = render.render_images(lite0, targets, config=config, recipe=recipe)
        assert result.history[0, -3:].mean() > result.history[0, :3].mean() + 0.1, name
        assert 0.0 <= result.images.min() and result.images.max() <= 1.0


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(tmp_path):
    base = [sys.executable, "-m", "jaxviz", "visualize", "--target", "logits:281", "--target", "blocks.10:7",
            "--size", "64", "--steps", "40", "--checkpoint-every", "8", "--quiet"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    straight = subprocess.run([*base, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr
    ckpt = tmp_path / "ckpt"
    args = [*base, "--out", str(tmp_path / "b"), "--checkpoint-dir", str(ckpt)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in ckpt.glob("*/*") if p.name.isdigit()]
        if steps and 8 <= max(steps) < 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "metrics.json").exists(), "run finished before it could be killed"
    resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "images.npy"), np.load(tmp_path / "a" / "images.npy"))
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [t["history"] for t in a["targets"]] == [t["history"] for t in b["targets"]]
    # the same checkpoint dir with other settings is refused
    other = subprocess.run([*args[:-4], "--seed", "3", "--out", str(tmp_path / "c"), "--checkpoint-dir", str(ckpt)],
                           env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "seed" in other.stderr and "Traceback" not in other.stderr


@pytest.mark.slow  # 25-50 s: make test stays under 10 minutes from a clean clone
def test_visualize_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["visualize", "--target", "logits:281", "--target", "blocks.10:0-1", "--size", "64",
                 "--steps", "4", "--out", str(out), "--quiet", "--param", "pixel"])
    assert code == 0
    for name in ("logits_281.png", "blocks.10_0.png", "blocks.10_1.png", "grid.png", "index.html", "metrics.json"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [t["target"] for t in metrics["targets"]] == ["logits:281", "blocks.10:0", "blocks.10:1"]
    assert len(metrics["targets"][0]["history"]) == 4 and metrics["config"]["parameterization"].startswith("Pixel")
    assert metrics["targets"][0]["label"] == "tabby"
    assert "<svg" in (out / "index.html").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--target", "blocks.99:1"], "unknown layer"),
    (["--target", "blocks.10:9999"], "out of range"),
    (["--target", "logits:281", "--size", "16"], "outside 64..2048"),
    (["--target", "logits:281", "--out", "/proc/forbidden"], "--out"),
    (["--target", "logits:281", "--prior", "outliers", "--stats", "/nonexistent"], "no such folder"),
])
def test_visualize_user_mistakes(tmp_path, capsys, argv, message):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "x")]
    code = main(["visualize", "--steps", "2", "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("jaxviz: error:") and message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_eight_classes_reach_top1(lite0):
    classes = [1, 94, 207, 281, 417, 530, 947, 980]
    config = render.RenderConfig(size=128, steps=128, chunk_steps=16, batch_size=8)
    result = render.render_images(lite0, _targets(lite0, [f"logits:{c}" for c in classes]), config=config, recipe="jaxviz")
    logits = jax.jit(lambda p, x: lite0.features(p, x, ["logits"])["logits"])(
        lite0.params, lite0.normalize(result.images * 255.0))
    initial = result.history[:, 0]
    assert np.all(result.activation > initial + 10), (result.activation, initial)
    assert list(np.argmax(np.asarray(logits), -1)) == classes


def test_pre_activation_target_revives_a_channel_dead_at_the_start(lite0):
    """``head`` is ReLU6: MaCo's first image leaves most of its channels at exactly 0, where they get no
    gradient; their BatchNorm output (``head.bn``, README "Pre-activation targets") moves from the first pass."""
    channels = (0, 160)
    specs = [f"head:{c}" for c in channels] + [f"head.bn:{c}" for c in channels]
    targets = objectives.as_targets(specs, lite0.target_layers)
    config = render.RenderConfig(size=64, steps=12, chunk_steps=6, batch_size=4)
    result = render.render_images(lite0, targets, config=config, recipe=recipes.get("maco", size=64), progress=False)
    dead, pre = result.history[: len(channels)], result.history[len(channels):]
    assert np.all(dead == 0.0)                                   # the post-activation target never moves
    assert np.all(pre[:, -3:].mean(1) > pre[:, :3].mean(1) + 1.0)
    x = lite0.normalize(jax.numpy.asarray(result.images[len(channels):]) * 255.0)
    head = np.asarray(lite0.features(lite0.params, x, layers=("head",))["head"])
    alive = [head[i, ..., c].max() for i, c in enumerate(channels)]
    assert min(alive) > 0.0, alive                               # ... and the pre-activation one revives it
    with pytest.raises(UsageError, match="out of range"):
        objectives.as_targets(["head.bn:1280"], lite0.target_layers)


@pytest.mark.slow  # a render through the CLI
def test_visualize_names_the_pre_activation_of_a_dead_channel(tmp_path, capsys):
    code = main(["visualize", "--target", "head:0", "--target", "blocks.10:0", "--size", "64", "--steps", "6",
                 "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and "note: head:0 stayed at 0" in err and "--target head.bn:0" in err, err
    assert "blocks.10" not in err                       # a linear layer has no point before an activation
