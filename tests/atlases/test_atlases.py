"""The atlas (jaxviz.atlas, `jaxviz atlas`): records, files, errors, and identical outputs after kill -9 in each phase."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxviz.atlases import claim_out, parse_channels
from jaxviz.cli import main
from jaxviz.common.errors import UsageError
from tests.atlases._atlas_worker import build
from tests.toys import ROOT

WORKER = os.path.join(ROOT, "tests", "atlases", "_atlas_worker.py")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("atlas"))
    return build(out), out


def test_records_files_and_examples_agree(small):
    atlas, out = small
    with open(os.path.join(out, "atlas.json")) as f:
        saved = json.load(f)
    assert [r["channel"] for r in saved["channels"]] == [0, 1, 2, 3, 4] == [r["channel"] for r in atlas.records]
    for r in saved["channels"]:
        assert len(r["examples"]) == 3
        scores = [e["objective"] for e in r["examples"]]
        assert scores == sorted(scores, reverse=True)
        assert r["best_example_objective"] == scores[0]
        assert isinstance(r["alive"], bool) and r["copies"] is not None and r["plausibility"] is None
        assert os.path.exists(os.path.join(out, "channels", f"c{r['channel']:04d}.html"))
    page = open(os.path.join(out, "index.html")).read()
    assert 'loading="lazy"' in page and "http://" not in page and "https://" not in page
    assert "<script src" not in page
    # every referenced file exists
    import re

    for name in ["index.html", *(f"channels/{n}" for n in os.listdir(os.path.join(out, "channels")))]:
        base = os.path.dirname(os.path.join(out, name))
        for src in re.findall(r'(?:src|href)="([^"#]+)"', open(os.path.join(out, name)).read()):
            assert os.path.exists(os.path.normpath(os.path.join(base, src))), (name, src)
    assert "dead" in repr(atlas) and "<b>" in atlas._repr_html_()


def test_rerun_is_reused_and_other_runs_are_refused(small, tmp_path):
    atlas, out = small
    t = time.perf_counter()
    again = build(out)
    assert again.records == atlas.records and time.perf_counter() - t < 60
    with pytest.raises(UsageError, match="another run's atlas"):
        build(out, k=2)
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        claim_out(str(tmp_path), {"kind": "atlas"})


def test_parse_channels():
    assert parse_channels("0-3,7", 10) == [0, 1, 2, 3, 7]
    assert parse_channels(None, 3) == [0, 1, 2] == parse_channels("all", 3)
    for bad in ("5-2", "x", "0-10", "", "٣"):
        with pytest.raises(UsageError):
            parse_channels(bad, 10)


@pytest.mark.parametrize("argv, message", [
    (["--layer", "blocks.99"], "unknown layer"),
    (["--layer", "blocks.12", "--channels", "0-999"], "out of range"),
    (["--layer", "blocks.12", "--data", "folder:{empty}"], "no readable image"),
    (["--layer", "blocks.12", "--data", "folder:{missing}"], "does not exist"),
    (["--layer", "blocks.12", "--examples", "0"], "examples"),
    (["--layer", "blocks.12", "--out", "{other}"], "another run's atlas"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "atlas-run.json").write_text(json.dumps({"kind": "atlas", "model": "another"}))
    fill = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "other": other}
    argv = [a.format(**fill) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(["atlas", "--channels", "0-3", *argv] if "--channels" not in argv else ["atlas", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert json.loads((other / "atlas-run.json").read_text())["model"] == "another"  # never overwritten


def _digest(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder)
            if rel != "timings.json" and not rel.startswith(".") and "/." not in rel:
                out[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.mark.slow
def test_killed_in_each_phase_then_rerun_equals_uninterrupted(tmp_path):
    out, phase_file = str(tmp_path / "killed"), str(tmp_path / "phase")
    env = {**os.environ, "PHASE_FILE": phase_file, "PHASE_WAIT": "0.4"}
    for phase in ("examples", "visualizations", "measures", "site"):
        if os.path.exists(phase_file):
            os.remove(phase_file)
        proc = subprocess.Popen([sys.executable, WORKER, out], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        try:
            while time.time() < deadline and proc.poll() is None:
                try:
                    text = open(phase_file).read().split()
                except (OSError, ValueError):
                    text = []
                if len(text) == 3 and text[1] == phase and int(text[2]) >= 2:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        assert not os.path.exists(os.path.join(out, "timings.json")), phase
    run = subprocess.run([sys.executable, WORKER, out], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ref = str(tmp_path / "ref")
    run = subprocess.run([sys.executable, WORKER, ref], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    a, b = _digest(out), _digest(ref)
    assert a.keys() == b.keys() and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []


@pytest.mark.slow
def test_head_atlas_starts_every_channel_alive_through_its_pre_activation(lite0, tmp_path):
    """``head`` is ReLU6: MaCo's first image leaves channels 0 and 160 at exactly 0 (test_loop's pre-activation
    test); the atlas maximizes ``head.bn`` by default, and measures ``head`` itself."""
    import numpy as np

    import jaxviz
    from jaxviz import recipes, render

    recipe = recipes.get("maco", size=64)
    config = render.RenderConfig(size=64, steps=12, chunk_steps=6, batch_size=2)
    common = dict(data="photos", max_images=8, k=2, recipe=recipe, config=config, judge=None, quiet=True,
                  copy_side=64)   # alive where the render drew: at its own size
    pre = jaxviz.atlas(lite0, "head", "0,160", out=str(tmp_path / "pre"), **common)
    post = jaxviz.atlas(lite0, "head", "0,160", out=str(tmp_path / "post"), pre_activation=False, **common)
    assert [r["alive"] for r in pre.records] == [True, True]
    assert [r["alive"] for r in post.records] == [False, False], post.records
    assert pre.meta["target_layer"] == "head.bn" and post.meta["target_layer"] == "head"
    images = np.load(os.path.join(str(tmp_path / "pre"), "data", "visualizations.npz"))["images"]
    head = lite0.features(lite0.params, lite0.normalize(images * 255.0), layers=("head",))["head"]
    objective = np.asarray(head)[[0, 1], ..., [0, 160]].mean(axis=(1, 2))   # the layer's own, not head.bn's
    assert [r["objective"] for r in pre.records] == pytest.approx(objective.tolist(), rel=1e-4, abs=1e-5)
    assert "maximized head.bn" in open(os.path.join(str(tmp_path / "pre"), "index.html")).read()
