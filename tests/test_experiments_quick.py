"""`python -m experiments.compare --quick` end to end (small: 2 targets, 1 seed, 8 steps, 64 px, 2 methods)."""

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(out, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one device: the CLI path users take
    cmd = [sys.executable, "-m", "experiments.compare", "--quick", "--steps", "8", "--size", "64",
           "--methods", "lucid,outliers_fourier", "--out", str(out), "--quiet", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_compare_writes_results_and_resumes(tmp_path):
    out = tmp_path / "run"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("table.md", "table.csv", "grid.png", "summary.md", "command.txt", "config.json", "per_image.csv"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 8 and cfg["size"] == 64 and list(cfg["methods"]) == ["lucid", "outliers_fourier"]
    assert not set(cfg["eval_targets"]) & set(cfg["tune_targets"])
    rows = {r["method"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert set(rows) == {"lucid", "outliers_fourier", "natural photos (reference)"}
    assert float(rows["lucid"]["activation_pct_mean"]) == pytest.approx(100.0)
    assert float(rows["outliers_fourier"]["d2_heldout_mean"]) > 0
    assert float(rows["natural photos (reference)"]["d2_heldout_mean"]) > 0
    saved = sorted(os.listdir(out / "runs" / "outliers_fourier"))
    assert len(saved) == 2 and all(n.endswith(".npz") for n in saved)

    # a rerun renders nothing: every (method, target, seed) is already saved
    stamps = {n: os.path.getmtime(out / "runs" / "lucid" / n) for n in os.listdir(out / "runs" / "lucid")}
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stamps == {n: os.path.getmtime(out / "runs" / "lucid" / n) for n in stamps}
    assert (out / "command.txt").read_text().count("--quick") == 2
