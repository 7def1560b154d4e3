"""`python -m benchmarks.run --accelerator --quick` runs on a CPU and reports sane figures."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.toys import ROOT

# Independent reference: EfficientNet-Lite0's forward pass is 0.77 GFLOP (multiply-add = 2) at
# 224 px, counted from its layer shapes (README / design notes); it scales with the pixel count. A
# backward pass w.r.t. the input costs one to two forwards more, and XLA also counts elementwise
# ops, so fwd + bwd must land between 2x and 4x the forward.
FORWARD_224 = 0.77e9


@pytest.mark.slow  # ~30 s on 2 cores: the real model compiles twice (remat off and on)
def test_quick_accelerator_benchmark(tmp_path):
    out = tmp_path / "acc.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--accelerator", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MFU" in proc.stdout
    report = json.loads(out.read_text())
    assert report["platform"] == "cpu" and any("bfloat16 skipped" in n for n in report["notes"])
    runs = report["runs"]
    assert [r["remat"] for r in runs] == [False, True]
    seen = report["size"] + 12  # the default transforms pad S -> S + 12
    forward = FORWARD_224 * (seen / 224) ** 2
    for r in runs:
        assert 2 * forward < r["model_flops_per_image_step"] < 4 * forward, r["model_flops_per_image_step"]
        assert r["image_steps_per_s"] > 0 and r["peak_memory_mib"] > 100
        achieved = r["model_flops_per_image_step"] * r["image_steps_per_s"] / 1e12
        assert math.isclose(r["model_tflops_per_s"], achieved, rel_tol=1e-9)
        assert 0 < r["mfu_vs_matmul"] < 1.5  # a CPU step cannot beat its matmul ceiling by much
        assert r["mfu_vs_spec"] is None  # no vendor peak for a CPU
    # remat recomputes the forward but counts the same model FLOPs
    assert runs[0]["model_flops_per_image_step"] == runs[1]["model_flops_per_image_step"]
