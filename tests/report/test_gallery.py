"""The gallery a newcomer reads: axes on the curve, a colour bar and caption on the heat map, the
suppressed neurons and the held-out verdict under each image; still written atomically."""

import json
import math
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxviz.render import RenderResult
from jaxviz.report import gallery as report

PRIOR = "outliers(layers=['blocks.2', 'blocks.4'], view=pixel, weight=10.0, k=8)"
# the ramp's end and middle colours (viridis at 0, 0.5, 1)
DARK, MIDDLE, BRIGHT = (68, 1, 84), (33, 145, 140), (253, 231, 37)


def _result(rng, n=2, steps=40, rounds=6):
    """A toy result with the diagnostics an outlier prior reports (two layers, a 4×4 map)."""
    times = {"blocks.2": np.zeros((n, 16)), "blocks.4": np.zeros((n, 24))}
    score = {k: np.zeros_like(v) for k, v in times.items()}
    times["blocks.2"][:, 5], score["blocks.2"][:, 5] = 4, 10.0   # 4 rounds, contribution 2.5 each
    times["blocks.4"][:, 17], score["blocks.4"][:, 17] = 6, 3.0  # 6 rounds, contribution 0.5 each
    heat = np.zeros((n, 4, 4))
    heat[:, 0, 0], heat[:, 1, 1] = rounds, rounds / 2
    info = {f"times/{k}": v for k, v in times.items()} | {f"score/{k}": v for k, v in score.items()}
    info |= {"outlier_map": heat, "rounds": np.full(n, rounds), "d2": np.full(n, 1.5)}
    history = np.cumsum(rng.uniform(0, 1, (n, steps)), axis=1)
    images = rng.uniform(0, 1, (n, 12, 12, 3)).astype(np.float32)
    return RenderResult(images, history[:, -1], history, history * 0.1, info, tuple(f"logits:{i}" for i in range(n)),
                        "d2")


def _write(tmp_path, rng, **kwargs):
    out = tmp_path / "run"
    metrics = report.write_result(str(out), _result(rng, **kwargs), labels=["tench", "goldfish"],
                                  config={"prior": PRIOR}, title="toy")
    return out, metrics


def test_page_has_colour_bar_caption_axes_and_suppressed_neurons(tmp_path):
    out, metrics = _write(tmp_path, np.random.default_rng(0))
    page = (out / "index.html").read_text()
    assert page.count('class="colorbar"') == 2 and page.count('class="curve"') == 2
    assert page.count('class="xlabel"') == 2 and ">step</text>" in page and ">objective</text>" in page
    # the caption names the layer the map shows, its grid and the number of selection rounds
    assert "each position of blocks.2 (4×4 grid) was an outlier" in page and "at the 6 selection rounds" in page
    # suppressed neurons: layer:channel, mean contribution = score / times, count (strongest first)
    rows = re.findall(r"<tr><td>([\w.]+:\d+)</td><td>([\d.]+)</td><td>(\d+)</td></tr>", page)
    assert rows[:2] == [("blocks.2:5", "2.5", "4"), ("blocks.4:17", "0.5", "6")]
    entry = metrics["targets"][0]
    assert entry["outlier_map"] == {"layer": "blocks.2", "shape": [4, 4], "rounds": 6, "vmax": 6.0}
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert "<script" not in page


def test_heat_map_colour_is_the_share_of_rounds(tmp_path):
    out, _ = _write(tmp_path, np.random.default_rng(1), rounds=6)
    heat = np.asarray(Image.open(out / "heat_logits_0.png").convert("RGB"))
    cell = heat.shape[0] // 4  # 12 px image, 4×4 map: 3 px per position
    assert tuple(heat[0, 0]) == BRIGHT            # an outlier at all 6 rounds
    assert tuple(heat[cell, cell]) == MIDDLE      # at 3 of 6
    assert tuple(heat[-1, -1]) == DARK            # never
    bar = report.svg_colorbar(6, label="rounds")
    assert [float(t) for t in re.findall(r">([\d.]+)</text>", bar)] == [0.0, 2.0, 4.0, 6.0]
    assert [float(t) for t in re.findall(r">([\d.]+)</text>", report.svg_colorbar(14, label="r"))] == [0, 5, 10, 14]
    fills = re.findall(r'fill="rgb\((\d+),(\d+),(\d+)\)"', bar)
    assert tuple(map(int, fills[0])) != tuple(map(int, fills[-1]))
    # bands are the map's colours at their centres: the top one at 63/64 of the way, between the last two anchors
    ramp = np.array([DARK, (59, 82, 139), MIDDLE, (94, 201, 98), BRIGHT], float)
    top = [np.interp(63 / 64, np.linspace(0, 1, 5), ramp[:, c]) for c in range(3)]
    np.testing.assert_allclose(np.asarray(fills[-1], float), top, atol=0.51)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-3.7, 12.2), (1.0, 512.0), (1e-4, 3e-4), (-250.0, -249.5)])
def test_ticks_are_round_and_cover_the_range(lo, hi):
    ticks = report.nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 9 and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9
    assert ticks[0] - lo < steps[0] + 1e-12 and hi - ticks[-1] < steps[0] + 1e-12


def test_curve_points_sit_on_their_axes():
    values = np.array([3.0, -1.0, 2.0, 7.5, 7.0])
    svg = report.svg_curve(values)
    pts = np.array([p.split(",") for p in re.search(r'points="([^"]+)"', svg)[1].split()], float)
    # y tick labels and positions define a linear map; every point must lie on it
    ticks = [(float(y), float(t)) for y, t in re.findall(r'<text x="\d+" y="([\d.]+)" text-anchor="end">([-\d.]+)<',
                                                          svg)]
    (y0, t0), (y1, t1) = ticks[0], ticks[-1]
    expected_y = y0 + (values - t0) * (y1 - y0) / (t1 - t0) - 3  # labels sit 3 px below their tick
    np.testing.assert_allclose(pts[:, 1], expected_y, atol=0.15)
    np.testing.assert_allclose(np.diff(pts[:, 0]), np.diff(pts[:, 0])[0], atol=0.11)  # steps equally spaced
    assert report.svg_curve([1.0]) == "" and report.svg_curve([np.nan, 2.0]) == ""


def test_comparison_shows_the_judges_verdict(tmp_path):
    rng = np.random.default_rng(2)
    runs = {}
    for name in ("lucid", "outliers"):
        runs[name] = report.write_result(str(tmp_path / name), _result(rng), labels=["tench", "goldfish"],
                                         config={"prior": PRIOR})
        for e in runs[name]["targets"]:
            e["judge"] = {"model": "judge-net", "target_class": 1, "top5_hit": True, "p_target": 0.61,
                          "plausibility_rank": 3.0, "plausibility_of": 1000, "cos_own": 0.5,
                          "top5": [{"class": 1, "label": "goldfish", "p": 0.61}, {"class": 0, "label": "tench",
                                                                                "p": 0.2}]}
        report.write_page(str(tmp_path / name), runs[name], title=name)
        assert "goldfish (1) 61.0 %" in (tmp_path / name / "index.html").read_text()
        assert json.loads((tmp_path / name / "metrics.json").read_text())["targets"][0]["judge"]["p_target"] == 0.61
    page = open(report.write_comparison(str(tmp_path), runs, headers={"lucid": "Lucid recipe"})).read()
    assert "<th>Lucid recipe</th>" in page and "<th>outliers</th>" in page
    assert page.count("<li class=hit>goldfish (1) 61.0 %</li>") == 4 and "plausibility rank 3 of 1000" in page
    for src in re.findall(r'src="([^"]+)"', page):
        assert os.path.exists(tmp_path / src), src


def test_a_failing_page_keeps_the_previous_gallery(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    out, _ = _write(tmp_path, rng)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "svg_colorbar", broken)  # fails after the PNGs of the new run are written
    with pytest.raises(RuntimeError, match="drawing failed"):
        _write(tmp_path, rng)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert [n for n in os.listdir(tmp_path)] == ["run"]  # no staging folder left behind


@pytest.mark.slow  # ~1 min on 2 cores: the real model renders 2 × 2 targets, a held-out judge scores them
def test_demo_gallery_end_to_end(lite0, tmp_path):
    from jaxviz import pipeline
    from jaxviz.common.errors import UsageError

    page, runs = pipeline.demo(lite0, str(tmp_path), steps=40, size=112, targets=["logits:1", "blocks.3:2"],
                               quiet=True)
    assert set(runs) == set(pipeline.DEMO_RUNS)
    html_text = open(page).read()
    for src in re.findall(r'src="([^"]+)"', html_text):
        assert os.path.exists(tmp_path / src), src
    assert list(runs) == ["maco", "quantile"]  # MaCo and the best measured statistics prior (README "Experiments")
    with_prior = runs["quantile"]["targets"][0]
    assert with_prior["quantile"] > 0 and "quantile" not in runs["maco"]["targets"][0]
    assert runs["quantile"]["config"]["prior"].startswith("quantile(")
    for run in runs.values():
        for entry in run["targets"]:
            top = entry["judge"]["top5"]
            p = [c["p"] for c in top]
            assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1.0 + 1e-3
        first, channel = run["targets"]
        assert first["judge"]["top5_hit"] == (1 in [c["class"] for c in first["judge"]["top5"]])
        assert "target_class" not in channel["judge"]  # a channel has no class to find
    with pytest.raises(UsageError, match="at least 64"):
        pipeline.demo(lite0, str(tmp_path / "small"), steps=40, size=48)
