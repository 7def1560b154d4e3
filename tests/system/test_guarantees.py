"""README "Guarantees", from the user's side (issue 31): nothing of the user's is ever lost (output folders),
and a damaged file is one line, never a traceback and never used (integrity)."""

import contextlib
import os
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

from jaxviz import pipeline, report
from jaxviz.common.errors import JaxvizError, OutputError, UsageError
from jaxviz.render import RenderConfig, RenderResult
from jaxviz.stats import collect, to_folder
from jaxviz.stats.store import load_stats, read_metadata
from tests.toys import make_toy


@pytest.fixture(scope="module")
def toy():
    return make_toy()


def _result(value, targets):
    images = np.full((len(targets), 8, 8, 3), value, np.float32)
    zeros = np.zeros((len(targets), 3), np.float32)
    return RenderResult(images, np.full(len(targets), value, np.float32), zeros, zeros, {}, tuple(targets))


def _photos(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"im{i:03d}.png")
    (folder / "notes.txt").write_text("mine")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _intact(folder, before):
    for name, data in before.items():
        assert (folder / name).read_bytes() == data, f"{name} of the user's was touched"


def _mount_tmpfs(path, size="256k"):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode:
        pytest.skip("needs root and tmpfs mounts")
    return path


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------- output folders


def test_a_folder_of_photos_as_out_is_refused_and_never_touched(toy, tmp_path, monkeypatch):
    before = _photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    from jaxviz.common.images import read_image

    photo = read_image(str(tmp_path / "im001.png"))[0]
    from jaxviz.render.loop import seed_images

    init = seed_images(photo, 1, 16)[0]
    config = RenderConfig(size=16, steps=2)
    with pytest.raises(UsageError, match="did not write"):
        pipeline.visualize(toy, ["head:1"], ".", config=config, quiet=True, init_images=init)
    _intact(tmp_path, before)
    assert sorted(os.listdir(tmp_path)) == sorted(before)
    metrics, _ = pipeline.visualize(toy, ["head:1"], ".", config=config, quiet=True, init_images=init, force=True)
    _intact(tmp_path, before)
    assert (tmp_path / "index.html").exists() and (tmp_path / metrics["targets"][0]["image"]).exists()
    pipeline.visualize(toy, ["head:2"], ".", config=config, quiet=True, force=True)  # a rerun replaces only ours
    _intact(tmp_path, before)
    assert not (tmp_path / metrics["targets"][0]["image"]).exists()


@pytest.mark.slow
def test_cli_out_dot_in_a_folder_of_photos(tmp_path, monkeypatch, capsys):
    from jaxviz.cli import main

    before = _photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["visualize", "--target", "logits:1", "--steps", "4", "--size", "64", "--init",
            str(tmp_path / "im001.png"), "--out", ".", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err and "Traceback" not in err
    _intact(tmp_path, before)
    assert main(argv + ["--force"]) == 0
    _intact(tmp_path, before)


def test_a_users_png_in_out_is_kept(tmp_path):
    out = tmp_path / "out"
    report.write_result(str(out), _result(0.25, ["a:1", "a:2"]))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "my_photo.png")
    mine = (out / "my_photo.png").read_bytes()
    with pytest.raises(UsageError, match="my_photo.png"):
        report.write_result(str(out), _result(0.75, ["b:1"]))
    assert (out / "a_1.png").exists()
    _result(0.75, ["b:1"]).save(str(out), force=True)
    names = set(os.listdir(out))
    assert (out / "my_photo.png").read_bytes() == mine
    assert "a_1.png" not in names and "b_1.png" in names
    assert RenderResult.load(str(out)).images.shape == (1, 8, 8, 3)


def test_a_users_file_named_like_ours_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("my page")
    with pytest.raises(JaxvizError, match="index.html"):
        report.write_result(str(out), _result(0.5, ["a:1"]), force=True)
    assert (out / "index.html").read_text() == "my page"


def test_two_concurrent_writers_never_move_the_users_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    barrier, outcomes = threading.Barrier(2), []

    def save(value):
        barrier.wait()
        try:
            for _ in range(5):
                _result(value, [f"t:{int(value * 4)}"]).save(str(out), force=True)
            outcomes.append("ok")
        except OutputError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=save, args=(v,)) for v in (0.25, 0.75)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert (out / "notes.txt").read_text() == "mine"
    assert os.listdir(tmp_path) == ["out"], "a hidden folder next to out"
    for outcome in outcomes:
        assert outcome == "ok" or "another jaxviz run" in outcome
    assert RenderResult.load(str(out)).images.shape == (1, 8, 8, 3)


def test_statistics_with_another_seed_need_force(toy, tmp_path):
    kwargs = dict(size=16, max_images=6, batch_size=3, quiet=True)
    to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), seed=0, **kwargs)
    with pytest.raises(UsageError, match="force=True"):
        to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), seed=1, **kwargs)
    assert read_metadata(str(tmp_path))["seed"] == 0
    to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), seed=1, force=True, **kwargs)
    assert read_metadata(str(tmp_path))["seed"] == 1


def test_statistics_into_a_folder_of_photos_need_force(toy, tmp_path):
    before = _photos(tmp_path)
    kwargs = dict(size=16, max_images=6, batch_size=3, quiet=True)
    with pytest.raises(UsageError, match="did not write"):
        to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), **kwargs)
    to_folder.collect_to_dir(toy, ["conv1"], "photos", str(tmp_path), force=True, **kwargs)
    _intact(tmp_path, before)
    assert list(load_stats(str(tmp_path)).layers) == ["conv1"]


def test_writable_out_under_a_read_only_parent(tmp_path):
    parent = _mount_tmpfs(tmp_path / "ro")
    try:
        inner = _mount_tmpfs(parent / "out")  # a mount point as --out, too
        try:
            subprocess.run(["mount", "-o", "remount,ro", str(parent)], check=True)
            report.write_result(str(inner), _result(0.5, ["a:1"]))
            report.write_result(str(inner), _result(0.25, ["a:2"]))
            assert RenderResult.load(str(inner)).activation[0] == 0.25
        finally:
            _umount(parent / "out")
    finally:
        _umount(parent)


def test_a_mount_point_with_lost_found_is_refused_before_the_render(toy, tmp_path):
    mount = _mount_tmpfs(tmp_path / "m")
    try:
        (mount / "lost+found").mkdir()
        with pytest.raises(UsageError, match="lost\\+found"):  # a million steps: refused before them
            pipeline.visualize(toy, ["head:1"], str(mount), config=RenderConfig(size=16, steps=10**6), quiet=True)
        assert os.listdir(mount) == ["lost+found"]
    finally:
        _umount(mount)


# ------------------------------------------------------------------ damaged statistics and quantiles


def _shipped_copy(tmp_path):
    import shutil

    from jaxviz.stats.store import shipped_stats_dir

    folder = tmp_path / "pixel"
    shutil.copytree(shipped_stats_dir("efficientnet_lite0"), folder)
    return folder


def _one_line(error):
    text = str(error)
    assert "\n" not in text and len(text) < 600, text  # one line (paths make it long)
    return text


@pytest.mark.parametrize("damage", ["truncate", "flip", "fifo"])
@pytest.mark.parametrize("kind", ["moments", "quantiles"])
def test_damaged_compact_statistics_and_quantiles_are_one_line(tmp_path, kind, damage):
    import json

    from jaxviz.stats.quantiles import load_quantiles

    folder = _shipped_copy(tmp_path)
    meta = json.loads((folder / ("stats.json" if kind == "moments" else "quantiles.json")).read_text())
    path = folder / meta[kind]
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 2  # inside the compressed arrays
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    else:
        path.unlink()
        os.mkfifo(path)  # opening it for reading would wait forever
    load = (lambda: load_stats(str(folder))) if kind == "moments" else (lambda: load_quantiles(str(folder)))
    with pytest.raises(JaxvizError) as caught:
        load()
    assert str(path) in _one_line(caught.value)


@pytest.mark.parametrize("edit", ["layer", "samples"])
def test_quantiles_json_naming_what_the_arrays_lack_is_one_line(tmp_path, edit):
    import json

    from jaxviz.stats.quantiles import load_quantiles

    folder = _shipped_copy(tmp_path)
    meta = json.loads((folder / "quantiles.json").read_text())
    if edit == "layer":
        meta["layers"] = [*meta["layers"], "blocks.15"]
    else:
        meta.pop("samples")
    (folder / "quantiles.json").write_text(json.dumps(meta))
    with pytest.raises(JaxvizError) as caught:
        load_quantiles(str(folder))
    _one_line(caught.value)


def test_a_stream_whose_image_size_changes_names_the_batch():
    import jaxviz

    def batches():
        rng = np.random.default_rng(0)
        yield rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        yield rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
        yield rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)

    with pytest.raises(JaxvizError, match=r"batch 2 of the source holds images of 24x24 px") as caught:
        jaxviz.collect_stats(make_toy(), ["conv1"], batches(), batch_size=2, quantiles=False)
    _one_line(caught.value)


# ------------------------------------------------------------------------------- a disk that fills


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KiB tmpfs (root only: where it cannot be mounted the test skips and says so)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _stats_cli(out, *extra):
    import sys

    return subprocess.run([sys.executable, "-m", "jaxviz", "stats", "--layers", "blocks.6", "--out", str(out),
                           "--size", "64", "--max-images", "64", "--batch-size", "8", "--quiet", *extra],
                          capture_output=True, text=True, timeout=600)


def _kept_steps(checkpoints):
    return sorted(int(p.name) for p in (checkpoints / "pass").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_true_line(small_disk):
    later = _stats_cli(small_disk / "s", "--checkpoint-every", "2")  # some checkpoints fit, then one does not
    assert later.returncode == 2 and later.stderr.count("\n") == 1, later.stderr[-2000:]
    assert "No space left on device" in later.stderr
    kept = _kept_steps(small_disk / "s" / ".checkpoint")
    assert (f"the checkpoint of step {kept[-1]} is kept" if kept else "nothing of this run") in later.stderr
    with open(small_disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # fill what is left: not even a first checkpoint fits
            f.write(b"\0" * 4096)
    first = _stats_cli(small_disk / "t", "--checkpoint-every", "2")
    assert first.returncode == 2 and first.stderr.count("\n") == 1, first.stderr[-2000:]
    assert "nothing of this run was checkpointed yet" in first.stderr or "cannot be written" in first.stderr


def test_a_full_disk_while_saving_statistics_is_one_line(small_disk, capfd):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 300)).astype(np.float32)  # a 300 x 300 float64 comoment: 720 KB, over the disk
    from jaxviz.stats import moments

    state = moments.batch_stats(x, np.ones(50, np.float32))
    capfd.readouterr()
    with pytest.raises(OutputError, match="No space left on device") as caught:
        collect.save_stats(str(small_disk / "s"), {"a": state}, model="toy", view="pixel")
    assert "kept" not in str(caught.value)  # there were no statistics before to keep
    assert capfd.readouterr().err == ""  # no thread's traceback


@pytest.mark.parametrize("keep", [0.9, 0.3])  # a damaged chunk; a file shorter than array_record's minimum
def test_a_truncated_tfds_record_file_is_one_line(tmp_path, keep):
    import glob

    import jaxviz
    from jaxviz import data
    from jaxviz.data.tfds import build_tfds_from_folder

    (tmp_path / "photos").mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / f"{i}.png")
    build_tfds_from_folder(tmp_path / "photos", "my_photos", tmp_path / "tfds")
    (record,) = glob.glob(str(tmp_path / "tfds" / "my_photos" / "1.0.0" / "*.array_record*"))
    with open(record, "rb") as f:
        whole = f.read()
    with open(record, "wb") as f:
        f.write(whole[: int(len(whole) * keep)])
    with pytest.raises(JaxvizError, match="a record file is damaged") as caught:
        source = data.open_source("tfds:my_photos", size=32, data_dir=str(tmp_path / "tfds"))
        jaxviz.collect_stats(make_toy(), ["conv1"], source, batch_size=4, quantiles=False)
    _one_line(caught.value)


def _fifo_in_place_of_a_data_file(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "/d/" in str(p))
    files[0].unlink()
    os.mkfifo(files[0])
    return files[0]


def _within(call, seconds=30):
    """``call``'s exception (the test fails if it blocks or returns)."""
    caught = []

    def run():
        try:
            call()
        except Exception as e:  # noqa: BLE001 - handed to the test
            caught.append(e)
        else:
            caught.append(None)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{call} blocked"
    assert caught[0] is not None, f"{call} returned"
    return caught[0]


def test_a_fifo_among_orbax_statistics_or_checkpoint_files_does_not_block(tmp_path):
    from jaxviz.common.checkpoint import RunStore
    from jaxviz.stats import moments

    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    collect.save_stats(str(tmp_path / "s"), {"a": moments.batch_stats(x, np.ones(50, np.float32))}, model="toy",
                       view="pixel")
    fifo = _fifo_in_place_of_a_data_file(tmp_path / "s")
    error = _within(lambda: load_stats(str(tmp_path / "s")))
    assert isinstance(error, JaxvizError) and str(fifo) in _one_line(error)

    store = RunStore(str(tmp_path / "c"), kind="stats")
    store.save("pass", 1, {"x": np.arange(3.0)}, np.zeros(1))
    fifo = _fifo_in_place_of_a_data_file(tmp_path / "c")
    error = _within(lambda: RunStore(str(tmp_path / "c"), kind="stats").restore("pass", {"x": np.zeros(3)},
                                                                                np.zeros(1)))
    assert isinstance(error, JaxvizError) and str(fifo) in _one_line(error)


def test_a_damaged_install_leaves_no_half_demo(lite0, tmp_path, monkeypatch):
    import shutil

    from jaxviz.stats import store

    assets = tmp_path / "assets"  # the install's statistics, one file of them damaged
    shutil.copytree(store.shipped_stats_dir("efficientnet_lite0"), assets / "efficientnet_lite0" / "pixel")
    moments_file = assets / "efficientnet_lite0" / "pixel" / "moments-1.npz"
    moments_file.write_bytes(moments_file.read_bytes()[:1000])
    monkeypatch.setattr(store, "_SHIPPED_ROOT", str(assets))
    with pytest.raises(JaxvizError, match="moments-1.npz") as caught:
        pipeline.demo(lite0, str(tmp_path / "demo"), steps=40, size=64, quiet=True, judge=None)
    _one_line(caught.value)
    assert not [p.name for p in (tmp_path / "demo").iterdir() if not p.name.startswith(".")]
