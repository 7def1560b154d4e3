"""`python -m experiments.realism --quick` end to end on a folder of real photos made here."""

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.toys import ROOT


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory, photos):
    """The 10 embedded photos as a 'one photo per class' folder (sorted file i = class i)."""
    folder = tmp_path_factory.mktemp("real")
    for i, image in enumerate(photos.values()):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def _run(out, real, *methods):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    cmd = [sys.executable, "-m", "experiments.realism", "--quick", "--real", str(real), "--class-list", "1,4,6",
           "--out", str(out), "--quiet", "--methods", *methods]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quick_realism_run_scores_methods_against_the_photos_and_resumes(tmp_path, real_folder):
    out = tmp_path / "run"
    proc = _run(out, real_folder, "jaxviz", "outliers@warmup=4,weight=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("table.md", "table.csv", "per_image.csv", "sets.json", "grid.png", "config.json", "command.txt"):
        assert (out / name).is_file(), name
    rows = {r["method"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert set(rows) == {"jaxviz", "outliers@warmup=4,weight=30", "real photos (reference)"}
    # a second view of each photo is most similar to its own photo: rank 0 for the reference row
    assert float(rows["real photos (reference)"]["efficientnet_lite2/rank_mean"]) == 0.0
    # 16 passes of noise are not photos: they rank below their own class's photo on average
    assert float(rows["jaxviz"]["efficientnet_lite2/cos_own_mean"]) < \
        float(rows["real photos (reference)"]["efficientnet_lite2/cos_own_mean"])
    # the method differs from its unconstrained run (different recipe and prior): not a method vs itself
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    by_method = {}
    for r in per_image:
        by_method.setdefault(r["method"], []).append(float(r["colourfulness"]))
    assert by_method["jaxviz"] != by_method["outliers@warmup=4,weight=30"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["classes"] == [1, 4, 6] and not set(cfg["classes"]) & set(cfg["tune_classes"])

    stamps = {p: os.path.getmtime(p) for p in (out / "runs").rglob("*.npz")}
    again = _run(out, real_folder, "jaxviz", "outliers@warmup=4,weight=30")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: os.path.getmtime(p) for p in (out / "runs").rglob("*.npz")} == stamps  # nothing re-rendered


def test_unknown_recipe_is_one_line(tmp_path, real_folder):
    proc = _run(tmp_path / "x", real_folder, "wobble")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "unknown recipe 'wobble'" in proc.stderr
