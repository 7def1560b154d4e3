"""benchmarks/examples_pass.py in its quick mode: it runs, both rates are positive, peak RSS stays flat."""

import json

import pytest


@pytest.mark.slow
def test_quick_mode(capsys):
    from benchmarks import examples_pass

    assert examples_pass.main(["--quick", "--json", "--channels", "8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stats_images_per_s"] > 0 and out["examples_images_per_s"] > 0
    marks = [mb for _, mb in out["peak_rss_mb_at"]]
    assert len(marks) >= 3 and marks[-1] - marks[0] < 100  # MB: no growth with the number of images
