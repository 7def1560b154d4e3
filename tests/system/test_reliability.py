"""Nothing lost, nothing silently wrong: atomic outputs, locks, resume identity, hostile files."""

import errno
import json
import os
import pickle
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import jaxviz
from jaxviz import objectives, priors, report, stats
from jaxviz.common import files
from jaxviz.common import outputs as outputs_lib
from jaxviz.common.checkpoint import CheckpointMismatchError, RunStore
from jaxviz.common.errors import (
    ImageError,
    NonFiniteLossError,
    OutputError,
    StatsMismatchError,
    StatsNotFoundError,
    UsageError,
)
from jaxviz.common.images import read_image, resize_center_crop
from jaxviz.data import scan_folder
from jaxviz.render import RenderConfig, RenderResult
from jaxviz.render import render_images as render
from jaxviz.stats import outliers, to_folder
from jaxviz.stats.store import load_stats, save_stats
from tests.toys import ROOT, make_toy


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def _state(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return stats.batch_stats(x, np.ones(n, np.float32))


def _result(value, targets):
    images = np.full((len(targets), 8, 8, 3), value, np.float32)
    zeros = np.zeros((len(targets), 3), np.float32)
    return RenderResult(images, np.full(len(targets), value, np.float32), zeros, zeros, {}, tuple(targets))


def _snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


def _fail_at_replace(monkeypatch, after):
    """os.replace (the commit of every atomic write) raises ENOSPC from call number ``after`` on."""
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


# ------------------------------------------------------------------------------- data loss


def test_gallery_failure_leaves_no_half_file_and_a_rerun_completes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.write_result(str(out), _result(0.25, ["a:1", "a:2"]))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write"):  # a user's file: refused without force
        report.write_result(str(out), _result(0.75, ["b:1"]))
    _fail_at_replace(monkeypatch, after=2)  # two files of the new run written, then the disk is full
    with pytest.raises(OutputError):
        report.write_result(str(out), _result(0.75, ["b:1"]), force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not [n for n in os.listdir(out) if n.startswith(".") and "tmp" in n], "temporary files left behind"
    monkeypatch.undo()
    report.write_result(str(out), _result(0.75, ["b:1"]), force=True)
    names = set(os.listdir(out))
    assert "a_1.png" not in names and "b_1.png" in names and "notes.txt" in names  # no mix; user files kept
    np.testing.assert_array_equal(np.load(out / "images.npy"), np.full((1, 8, 8, 3), 0.75, np.float32))


def test_disk_full_while_replacing_statistics_keeps_the_old_ones(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    save_stats(str(tmp_path), {"a": _state(rng, 40, 3)}, model="toy", view="pixel")
    old = load_stats(str(tmp_path))
    _fail_at_replace(monkeypatch, after=0)  # stats.json cannot be replaced
    with pytest.raises(OutputError, match="previous statistics are kept"):
        save_stats(str(tmp_path), {"a": _state(rng, 40, 3)}, model="toy", view="pixel")
    monkeypatch.undo()
    again = load_stats(str(tmp_path))
    np.testing.assert_array_equal(again["a"].mean, old["a"].mean)
    np.testing.assert_array_equal(again["a"].precision, old["a"].precision)


def test_statistics_of_other_layers_are_not_replaced_without_force(toy, tmp_path):
    kwargs = dict(size=16, max_images=6, batch_size=3, quiet=True)
    to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), **kwargs)
    with pytest.raises(UsageError, match="force=True") as info:
        to_folder.collect_to_dir(toy, ["conv2"], "photos", str(tmp_path), **kwargs)
    from jaxviz.cli._common import as_flags

    assert "--force" in as_flags(str(info.value))
    assert list(load_stats(str(tmp_path)).layers) == ["conv1"]
    bundle, computed = to_folder.collect_to_dir(toy, ["conv2"], "photos", str(tmp_path), force=True, **kwargs)
    assert computed and list(load_stats(str(tmp_path)).layers) == ["conv2"]


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, toy):
    out = tmp_path / "out"
    out.mkdir()
    with outputs_lib.lock_dir(out):
        with pytest.raises(OutputError, match=f"PID {os.getpid()}"):
            with outputs_lib.lock_dir(out):
                pass
        from jaxviz import pipeline

        with pytest.raises(OutputError, match="another jaxviz run"):  # refused before any rendering
            pipeline.visualize(toy, ["head:1"], str(out), config=RenderConfig(size=16, steps=2), quiet=True)
    (out / ".jaxviz.lock").write_text("999999999\n")  # left by a run that was killed: its OS lock is free
    with outputs_lib.lock_dir(out):
        assert (out / ".jaxviz.lock").read_text().strip() == str(os.getpid())


def test_concurrent_atomic_writes_never_collide(tmp_path):
    errors = []

    def write(i):
        try:
            for j in range(30):
                files.atomic_write(tmp_path / "metrics.json", f"{i} {j}")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and os.listdir(tmp_path) == ["metrics.json"]


# ------------------------------------------------------------------------------- silently wrong


def _moments(rng, dim, shift):
    x = rng.normal(size=(200, dim)) + shift
    cov = np.cov(x, rowvar=False)
    return priors.LayerMoments(jnp.asarray(x.mean(0), jnp.float32), jnp.asarray(np.linalg.inv(cov), jnp.float32),
                               jnp.asarray(np.sqrt(np.diag(cov)), jnp.float32))


def test_resume_with_other_statistics_is_refused(toy, tmp_path):
    rng = np.random.default_rng(1)
    config = RenderConfig(size=16, steps=4, chunk_steps=2, checkpoint_every=2, batch_size=1)
    recipe = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=16), transform="none")
    target = [objectives.channel("conv2", 1)]
    a = priors.outliers({"conv1": _moments(rng, 8, 0.0)}, warmup=0, every=1)
    b = priors.outliers({"conv1": _moments(rng, 8, 0.5)}, warmup=0, every=1)
    assert repr(a) == repr(b)  # the same description: only the contents differ
    render(toy, target, config=config, recipe=recipe, prior=a, checkpoint_dir=str(tmp_path))
    with pytest.raises(CheckpointMismatchError):
        render(toy, target, config=config, recipe=recipe, prior=b, checkpoint_dir=str(tmp_path))
    render(toy, target, config=config, recipe=recipe, prior=a, checkpoint_dir=str(tmp_path))  # the same statistics resume


def test_resuming_statistics_over_changed_images_is_refused(toy, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(folder / f"{i}.png")
    kwargs = dict(size=16, batch_size=2, quiet=True, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1)
    to_folder.collect_to_dir(toy, ["conv1"], f"folder:{folder}", str(tmp_path / "s1"), **kwargs)
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), np.uint8)).save(folder / "2.png")  # same name and count
    os.utime(folder / "2.png", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(CheckpointMismatchError, match="files"):
        to_folder.collect_to_dir(toy, ["conv1"], f"folder:{folder}", str(tmp_path / "s2"), **kwargs)


def test_the_last_update_is_checked(toy):
    config = RenderConfig(size=16, steps=1, batch_size=1)
    recipe = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=16), transform="none")
    with pytest.raises(NonFiniteLossError):
        render(toy, [objectives.channel("conv2", 0)], config=config, recipe=recipe, optimizer=optax.sgd(float("nan")))


@pytest.mark.parametrize("target,message", [
    (objectives.channel("conv1", 8), "channel 8"),
    (objectives.neuron("conv2", 1, y=8, x=0), "y 8"),
    (objectives.class_logit(5, layer="head"), "class index 5"),
    (objectives.channel("conv1", 1) + objectives.channel("conv2", 6), "channel 6"),
    (objectives.direction("conv1", np.ones(3)), "3 entries"),
])
def test_indices_are_range_checked(toy, target, message):
    with pytest.raises(UsageError, match=message):
        render(toy, [target], config=RenderConfig(size=16, steps=1))


def test_prior_and_threshold_arguments_are_checked():
    with pytest.raises(UsageError, match="k must be"):
        priors.outliers({"conv1": _moments(np.random.default_rng(0), 4, 0.0)}, k=0)
    for dim, q in [(0, 0.99), (3, 1.5), (3, 0.0), (3, float("nan")), (2.5, 0.9), (True, 0.9)]:
        with pytest.raises(UsageError, match="chi2_threshold"):
            outliers.chi2_threshold(dim, q)
    from scipy.stats import chi2

    assert outliers.chi2_threshold(7, 0.95) == pytest.approx(chi2.ppf(0.95, 7))


@pytest.mark.parametrize("spec", ["logits:²", "logits:٣", "logits:3x", "logits:", ":3", "logits:" + "9" * 40])
def test_targets_need_ascii_channel_numbers(spec):
    with pytest.raises(UsageError, match="malformed target"):
        objectives.split_target(spec)


# ------------------------------------------------------------------------------- malformed files


def test_reordered_or_missing_layers_in_stats_json(tmp_path):
    rng = np.random.default_rng(3)
    save_stats(str(tmp_path), {"a": _state(rng, 60, 4), "b": _state(rng, 60, 3)}, model="toy", view="pixel")
    straight = load_stats(str(tmp_path))
    meta = json.loads((tmp_path / "stats.json").read_text())
    meta["layers"] = ["b", "a"]
    (tmp_path / "stats.json").write_text(json.dumps(meta))
    swapped = load_stats(str(tmp_path))  # moments are found by name, not by position
    np.testing.assert_array_equal(swapped["a"].mean, straight["a"].mean)
    np.testing.assert_array_equal(swapped["b"].precision, straight["b"].precision)
    for bad in ({"layers": "a"}, {"layers": []}, {"dims": {"a": 4}}, {"layers": ["a", "c"], "dims": {"a": 4, "c": 2}}):
        (tmp_path / "stats.json").write_text(json.dumps({**meta, **bad}))
        with pytest.raises((StatsMismatchError, StatsNotFoundError)):
            load_stats(str(tmp_path))


def test_truncated_moments_are_one_line(tmp_path):
    rng = np.random.default_rng(4)
    save_stats(str(tmp_path), {"a": _state(rng, 60, 4)}, model="toy", view="pixel")
    moments = tmp_path / json.loads((tmp_path / "stats.json").read_text())["moments"]
    for path in moments.rglob("*"):
        if path.is_file() and path.name in ("_METADATA", "manifest.ocdbt"):
            path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(StatsNotFoundError, match="cannot read the moments"):
        load_stats(str(tmp_path))


def test_malformed_run_json_and_full_disk_at_a_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "run.json").write_text('{"kind": "stats", "mod')
    with pytest.raises(CheckpointMismatchError, match="unreadable run.json"):
        RunStore(str(tmp_path), kind="stats")
    import orbax.checkpoint as ocp

    store = RunStore(str(tmp_path / "fresh"), kind="stats")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(OutputError, match="No space left"):
        store.save("pass", 1, {"x": np.zeros(3)}, np.zeros(1))


# ------------------------------------------------------------------------------- hostile inputs


def test_fifo_in_an_image_folder_is_skipped_unopened(tmp_path):
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    result = []
    worker = threading.Thread(target=lambda: result.append(scan_folder(tmp_path)), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(tmp_path / "b.png", "wb"):
            pass
        pytest.fail("scan_folder blocked on a FIFO")
    scan = result[0]
    assert [os.path.basename(f) for f in scan.files] == ["a.png"] and len(scan.skipped) == 1
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path / "b.png")


def test_thin_images_are_refused_before_resizing(tmp_path):
    Image.fromarray(np.zeros((1, 15000, 3), np.uint8)).save(tmp_path / "thin.png")
    with pytest.raises(ImageError, match="elongated"):
        read_image(tmp_path / "thin.png")
    with pytest.raises(ImageError, match="elongated"):
        resize_center_crop(np.zeros((1, 15000, 3), np.uint8), 224)
    ok = resize_center_crop(np.zeros((10, 300, 3), np.uint8), 32)  # 30:1 is still accepted
    assert ok.shape == (32, 32, 3)


_MAGIC = 0x1950A86A20F9469CFC6C


def _legacy_file(body: bytes) -> bytes:
    head = b"".join(pickle.dumps(v, 2) for v in (_MAGIC, 1001, {"little_endian": True}))
    return head + body + pickle.dumps([], 2)


def _shared_lists(levels: int) -> bytes:
    """{"w": l[levels-1]} with l[i+1] = [l[i], l[i]]: 10 bytes a level, 2**levels leaves as a tree."""
    ops = bytearray(b"\x80\x02}X\x01\x00\x00\x00w]q\x000")  # dict, key, l0 (memo 0, popped)
    for i in range(1, levels):
        ops += b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i]) + b"0"
    return bytes(ops + b"h" + bytes([levels - 1]) + b"s.")


def _huge_view() -> bytes:
    """One tensor viewing a 1-element storage with size (10^4, 10^4) and strides (0, 0): 400 MB asked."""
    import struct

    def text(value):
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    storage = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu") + b"K\x01tQ"
    size = b"(" + b"M\x10\x27" * 2 + b"t"
    body = (b"\x80\x02}" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"K\x00" + size
            + b"(K\x00K\x00t" + b"tRs.")
    head = b"".join(pickle.dumps(v, 2) for v in (_MAGIC, 1001, {"little_endian": True}))
    return head + body + pickle.dumps(["0"], 2) + struct.pack("<q", 1) + b"\0" * 4


@pytest.mark.parametrize("name", ["shared", "deep", "memo", "huge_view"])
def test_crafted_weight_files_are_bounded(tmp_path, name):
    content = {
        "shared": lambda: _legacy_file(_shared_lists(40)),  # 2**40 leaves if walked as a tree
        "deep": lambda: _legacy_file(b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."),
        "memo": lambda: _legacy_file(b"\x80\x02]r\xff\xff\xff\x7f."),  # memo slot 2^31 - 1
        "huge_view": _huge_view,
    }[name]()
    path = tmp_path / f"{name}.pth"
    path.write_bytes(content)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
            "from jaxviz.models.torch_reader import load_torch_state_dict\n"
            "from jaxviz.common.errors import WeightFileError\n"
            "try:\n load_torch_state_dict(sys.argv[1])\nexcept WeightFileError as e:\n print('refused:', e)")
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=90,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0 and proc.stdout.startswith("refused:"), proc.stdout + proc.stderr[-2000:]
    assert time.time() - start < 60
