"""`jaxviz outliers`: a natural photo is far less of an outlier than a DeepDream image of the same class."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxviz import objectives, recipes, render
from jaxviz.cli import main
from jaxviz.common.images import as_uint8_batch
from jaxviz.stats.to_folder import collect_to_dir

SIZE = 96
LAYER = "blocks.2"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, lite0, photos):
    root = tmp_path_factory.mktemp("outliers")
    folder = root / "natural"
    folder.mkdir()
    for name, photo in photos.items():
        if name != "chelsea":  # held out: the test photo is not in the statistics
            Image.fromarray(photo).save(folder / f"{name}.png")
    stats = root / "stats"
    collect_to_dir(lite0, [LAYER], f"folder:{folder}", str(stats), size=SIZE, quiet=True)
    chelsea = root / "chelsea.png"
    Image.fromarray(photos["chelsea"]).save(chelsea)
    # DeepDream of the photo's class (285, Egyptian cat), small and short: a large step size makes
    # up for the few steps (at lr 0.05 the image is still low-contrast noise, which D² rates natural)
    config = render.RenderConfig(size=SIZE, steps=24, chunk_steps=8)
    recipe = recipes.get("jaxviz", size=SIZE).edit(learning_rate=0.2)
    dream = render.render_images(lite0, [objectives.class_logit(285)], config=config, recipe=recipe).images[0]
    dream_path = root / "dream.png"
    Image.fromarray(np.round(dream * 255).astype(np.uint8)).save(dream_path)
    return root, stats, chelsea, dream_path


def _report(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.slow
def test_photo_is_much_less_of_an_outlier_than_deepdream(setup, capsys):
    root, stats, chelsea, dream = setup
    out_dir = root / "report"
    report = json.loads(_report(capsys, "outliers", "--stats", stats, chelsea, dream, "--json", "--out", out_dir))
    photo, synthetic = (entry["layers"][LAYER] for entry in report)
    assert photo["mean_d2"] < 0.5 * synthetic["mean_d2"], (photo["mean_d2"], synthetic["mean_d2"])
    assert synthetic["outlier_fraction"] > photo["outlier_fraction"]
    assert synthetic["neurons"] and all(n["contribution"] > 0 for n in synthetic["neurons"])
    for entry in report:
        assert (out_dir / entry["layers"][LAYER]["heatmap"]).is_file()
    assert json.loads((out_dir / "report.json").read_text()) == report
    text = _report(capsys, "outliers", "--stats", stats, dream)
    assert "outlier neurons (layer:channel, contribution): blocks.2:" in text


def test_reported_d2_matches_float64_reference(setup, lite0, capsys):
    from jaxviz.stats.store import load_stats

    root, stats, chelsea, _ = setup
    report = json.loads(_report(capsys, "outliers", "--stats", stats, chelsea, "--json", "--top", "3"))
    entry = report[0]["layers"][LAYER]
    bundle = load_stats(str(stats), model=lite0)
    mean = np.asarray(bundle.layers[LAYER].mean, np.float64)
    precision = np.asarray(bundle.layers[LAYER].precision, np.float64)
    image = as_uint8_batch([np.asarray(Image.open(chelsea))], SIZE).astype(np.float32)
    feats = np.asarray(lite0.features(lite0.params, lite0.normalize(image), [LAYER])[LAYER][0], np.float64)
    d = feats.reshape(-1, feats.shape[-1]) - mean
    d2 = np.einsum("mi,ij,mj->m", d, precision, d)
    np.testing.assert_allclose(entry["mean_d2"], d2.mean(), rtol=1e-3)
    assert entry["positions"][0]["d2"] == pytest.approx(d2.max(), rel=1e-3)
    assert len(entry["positions"]) == 3 and len(entry["neurons"]) <= 3


def test_bad_flags_are_one_line_errors(setup, capsys):
    root, stats, chelsea, _ = setup
    assert main(["outliers", "--stats", str(stats), str(chelsea), "--quantile", "1.5"]) == 2
    assert "--quantile" in capsys.readouterr().err
    assert main(["outliers", "--stats", str(root / "nothing"), str(chelsea)]) == 2
