"""experiments.paired: rows matched on (seed, target) across run folders; p against the first method."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import wilcoxon

from experiments.paired import table
from tests.toys import ROOT


def _write(folder, method, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "seed", "target", "copies"])
        w.writeheader()
        for seed, target, copies in rows:
            w.writerow({"method": method, "seed": seed, "target": target, "copies": copies})


def test_pairs_are_matched_by_target_not_by_order(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(10, 2, 12)
    b = a - rng.normal(1, 0.5, 12)
    _write(tmp_path / "a", "x", [(0, f"t:{i}", v) for i, v in enumerate(a)])
    # b's rows in reverse order, one extra target a lacks
    _write(tmp_path / "b", "y", [(0, f"t:{i}", v) for i, v in reversed(list(enumerate(b)))] + [(0, "t:99", 1e9)])
    out = table([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y"], ["copies"])
    assert "pairs: 12" in out
    p = wilcoxon(b, a).pvalue
    assert f"| y (b) | {b.mean():.3g} (p {p:.2g}) |" in out


def test_a_missing_method_is_one_line(tmp_path):
    _write(tmp_path / "a", "x", [(0, "t:1", 1.0)])
    proc = subprocess.run([sys.executable, "-m", "experiments.paired", f"{tmp_path / 'a'}:nope", f"{tmp_path / 'a'}:x"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "nope" in proc.stderr


@pytest.mark.parametrize("spec", ["missing-folder:x"])
def test_a_missing_folder_is_one_line(spec):
    proc = subprocess.run([sys.executable, "-m", "experiments.paired", spec, spec], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "per_image.csv not found" in proc.stderr
