"""`python -m experiments.neurons --quick` end to end on a folder of photos made here."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import neurons
from tests.toys import ROOT


def test_channel_sets_are_disjoint_fixed_and_spread():
    sets = neurons.channel_sets({"blocks.12": 192, "blocks.15": 320, "head": 1280})
    for layer, c in (("blocks.12", 192), ("blocks.15", 320), ("head", 1280)):
        ev, tu = sets["eval"][layer], sets["tune"][layer]
        assert len(ev) == len(tu) == 16 and not set(ev) & set(tu)
        assert min(ev + tu) >= 0 and max(ev + tu) < c
        assert ev == sorted(ev) and ev[0] == c // 64            # floor(C/4/16)
    assert sets == neurons.channel_sets({"blocks.12": 192, "blocks.15": 320, "head": 1280})
    with pytest.raises(ValueError):
        neurons.channel_sets({"x": 20})
    picked = neurons.pick(sets["tune"], 16)
    assert len(picked) == 16 and [l for l, _ in picked].count("blocks.12") == 6
    assert picked[0] == ("blocks.12", sets["tune"]["blocks.12"][0])
    assert picked[5] == ("blocks.12", sets["tune"]["blocks.12"][15])


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, photos):
    """The embedded photos, flipped and rotated copies too: 20 'photos' (sorted file i = photo i)."""
    folder = tmp_path_factory.mktemp("photos")
    images = list(photos.values())
    images = images + [np.ascontiguousarray(im[:, ::-1]) for im in images]
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def _run(out, real, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    cmd = [sys.executable, "-m", "experiments.neurons", "--quick", "--real", str(real), "--k", "2",
           "--layers", "blocks.15", "--out", str(out), "--quiet", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two runs of the experiment (compiles included) on a shared 2-core machine
def test_quick_neuron_run_scores_against_dataset_examples_and_resumes(tmp_path, photo_folder):
    out = tmp_path / "run"
    proc = _run(out, photo_folder, "--methods", "jaxviz", "outliers@warmup=4,weight=30", "--against", "jaxviz")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("table.md", "table.csv", "per_image.csv", "sets.json", "grid.png", "config.json", "command.txt"):
        assert (out / name).is_file(), name
    rows = {r["method"]: r for r in csv.DictReader((out / "table.csv").open())}
    assert set(rows) == {"jaxviz", "outliers@warmup=4,weight=30", "photos (reference)"}
    assert float(rows["jaxviz"]["activation_pct_mean"]) == pytest.approx(100.0)
    sets = json.loads((out / "sets.json").read_text())
    assert sets["run_set"] == "eval" and len(sets["targets"]) == 3
    for t in sets["targets"]:
        layer, c = t.split(":")
        assert int(c) in sets["eval"][layer] and int(c) not in sets["tune"][layer]
        assert sets["held_out_photo"][t] not in sets["examples"][t]
    per_image = list(csv.DictReader((out / "per_image.csv").open()))
    copies = [float(r["copies"]) for r in per_image if r["method"] == "jaxviz"]
    assert len(copies) == 3 and all(c >= 1 for c in copies)

    stamps = {p: os.path.getmtime(p) for p in (out / "runs").rglob("*.npz")}
    again = _run(out, photo_folder, "--methods", "jaxviz", "outliers@warmup=4,weight=30", "--against", "jaxviz")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: os.path.getmtime(p) for p in (out / "runs").rglob("*.npz")} == stamps  # nothing re-rendered


def test_user_mistakes_are_one_line(tmp_path, photo_folder):
    proc = _run(tmp_path / "x", photo_folder, "--methods", "jaxviz", "--against", "maco")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--against" in proc.stderr
    proc = _run(tmp_path / "y", photo_folder, "--k", "40")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--k 40" in proc.stderr


def test_outlier_rates_match_a_per_position_reference():
    from scipy.stats import chi2

    import jaxviz
    from experiments import diagnose

    model = jaxviz.load_model("efficientnet_lite0")
    rng = np.random.default_rng(4)
    images = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    feats = model.features(model.params, model.normalize(images * 255.0), ("blocks.2",))["blocks.2"]
    x = np.asarray(feats, np.float64).reshape(2, -1, 24)
    a = rng.normal(size=(24, 24))
    mean, precision = x.mean(axis=(0, 1)), a @ a.T / 24 + np.eye(24)
    thr = chi2.ppf(0.99, 24)
    d = x.reshape(-1, 24) - mean
    precision *= thr / np.median(np.sum(d * (d @ precision), axis=1))   # about half the positions are outliers
    out = diagnose.outlier_rates(model, images, {"blocks.2": (mean, precision)})["blocks.2"]
    for n in range(2):
        d2 = [float((v - mean) @ precision @ (v - mean)) for v in x[n]]
        assert out["rate"][n] == pytest.approx(np.mean(np.array(d2) > thr))
        assert out["d2"][n] == pytest.approx(np.mean(d2) / 24, rel=1e-6)
    assert 0 < out["rate"].mean() < 1   # the toy statistics put the threshold inside the data
