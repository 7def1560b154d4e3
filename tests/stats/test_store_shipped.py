"""Statistics shipped as package data: format, metadata, reproducibility and the prior's default.

The shipped files are read as any user would read them; recomputing follows the command that
README "The method" documents (``scripts/ship_stats.py``), on a few synthetic JPEGs instead of
the 1,000 ImageNet photos, and must give the same format and metadata keys.
"""

import importlib.util
import os
import shlex

import numpy as np
import pytest
from PIL import Image

from jaxviz import registry
from jaxviz.common.errors import UsageError
from jaxviz.common.images import resize_center_crop
from jaxviz.stats import store as stats_store
from tests.toys import ROOT

LITE0_VIEWS = {
    "pixel": [f"blocks.{i}" for i in range(16)],
    "patch3": ["blocks.2", "blocks.4", "blocks.5", "blocks.8"],
    "pooled": [f"blocks.{i}" for i in range(5, 16)],
}
META_KEYS = {"format", "model", "view", "layers", "images", "preprocessing", "command", "sha256", "storage",
             "samples", "dims", "shrinkage", "data"}


def _ship_stats_main():
    spec = importlib.util.spec_from_file_location("ship_stats", os.path.join(ROOT, "scripts", "ship_stats.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("view", list(LITE0_VIEWS))
def test_shipped_lite0_statistics_load_with_their_metadata(lite0, view):
    directory = stats_store.shipped_stats_dir("efficientnet_lite0", view)
    assert directory is not None and directory.startswith(os.path.join(ROOT, "jaxviz", "assets", "stats"))
    meta = stats_store.read_metadata(directory)
    assert META_KEYS <= set(meta)
    assert meta["model"] == "efficientnet_lite0" and meta["view"] == view and meta["layers"] == LITE0_VIEWS[view]
    assert meta["images"] == 1000 and meta["storage"] == "npz-float32-triu"
    assert "centre crop 224 (crop fraction 0.875)" in meta["preprocessing"]
    assert shlex.split(meta["command"])[:2] == ["jaxviz", "stats"] and "--compact" in meta["command"]
    bundle = stats_store.load_stats(directory, model=lite0)  # checks layer shapes and the content hash
    for layer, s in bundle.layers.items():
        assert np.all(np.isfinite(s.precision)) and s.dim == meta["dims"][layer]
        assert s.count == meta["samples"][layer] > 0


def test_package_data_glob_reaches_the_shipped_files():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["jaxviz"]
    import glob

    found = {os.path.relpath(p, os.path.join(ROOT, "jaxviz")) for g in globs
             for p in glob.glob(os.path.join(ROOT, "jaxviz", g), recursive=True) if os.path.isfile(p)}
    for view in LITE0_VIEWS:
        for name in ("stats.json", "moments-1.npz"):
            assert os.path.join("assets", "stats", "efficientnet_lite0", view, name) in found


def test_outliers_prior_defaults_to_the_shipped_statistics(lite0):
    prior = registry.build_prior("outliers", model=lite0)
    assert prior.layers == stats_store.SHIPPED_PRIOR_LAYERS and prior.view == "pixel"
    shipped = stats_store.load_stats(stats_store.shipped_stats_dir("efficientnet_lite0"), model=lite0)
    for layer in prior.layers:
        np.testing.assert_allclose(np.asarray(prior.stats[layer].mean), shipped[layer].mean, rtol=1e-6)
    ablation = registry.build_prior("mahalanobis", model=lite0, layers=["blocks.0"])
    assert ablation.layers == ("blocks.0",)


def test_no_shipped_statistics_is_one_clear_line(lite0):
    import dataclasses

    mine = dataclasses.replace(lite0, name="my_net")
    with pytest.raises(UsageError) as info:
        registry.build_prior("outliers", model=mine)
    assert "no statistics ship for my_net" in str(info.value) and "\n" not in str(info.value)
    assert stats_store.shipped_stats_dir("efficientnet_lite0", "patch5") is None


@pytest.mark.slow  # a statistics pass in a subprocess: ~7 s
def test_documented_command_recomputes_the_shipped_format(tmp_path, lite0):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    images = []
    for i, (h, w) in enumerate([(300, 400), (380, 250), (256, 256), (333, 500)]):
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([np.sin(xx / (9 + i)), np.cos(yy / 7), np.sin((xx + yy) / 13)], -1) * 90 + 127
        image = np.clip(smooth + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")  # lossless: the test decodes what it wrote
        images.append(image)
    out = tmp_path / "stats"
    argv = ["--data", f"folder:{folder}", "--max-images", "4", "--out", str(out),
            "--models", "efficientnet_lite0", "--views", "pixel"]
    assert _ship_stats_main()(argv) == 0

    shipped_dir = stats_store.shipped_stats_dir("efficientnet_lite0", "pixel")
    shipped, made = stats_store.read_metadata(shipped_dir), stats_store.read_metadata(str(out / "efficientnet_lite0" / "pixel"))
    assert set(made) == set(shipped) and set(made["run"]) == set(shipped["run"])
    for key in ("format", "model", "view", "layers", "storage", "shrinkage", "dims"):
        assert made[key] == shipped[key], key
    assert made["images"] == 4 and made["preprocessing"] == shipped["preprocessing"]
    with np.load(os.path.join(shipped_dir, "moments-1.npz")) as a, \
            np.load(out / "efficientnet_lite0" / "pixel" / "moments-1.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape for k in a.files)

    # The recorded commands differ only in the data, the output and the image count.
    def flags(command):
        words = shlex.split(command)
        return dict(zip(words[2::2], words[3::2])), words[-1]
    ours, theirs = flags(made["command"]), flags(shipped["command"])
    assert theirs[0].pop("--data").startswith("folder:") and ours[0].pop("--data") == f"folder:{folder}"
    assert ours[0].pop("--max-images") == "4" and "--max-images" not in theirs[0]
    assert ours[0].pop("--out") == str(out / "efficientnet_lite0" / "pixel")
    assert theirs[0].pop("--out") == os.path.join("jaxviz", "assets", "stats", "efficientnet_lite0", "pixel")
    assert ours == theirs

    # The statistics see the photos as evaluation does (0.875 centre crop): float64 reference mean.
    import jax

    crops = np.stack([resize_center_crop(im, 224, crop_fraction=0.875) for im in images])
    feats = jax.jit(lambda p, x: lite0.features(p, x, ["blocks.2"]))(lite0.params, lite0.preprocess(crops, crop_fraction=1.0))
    reference = np.asarray(feats["blocks.2"], np.float64).reshape(-1, 24).mean(0)
    loaded = stats_store.load_stats(str(out / "efficientnet_lite0" / "pixel"), layers=["blocks.2"])
    np.testing.assert_allclose(loaded["blocks.2"].mean, reference, rtol=1e-4, atol=1e-5)


def _numpy_state(samples):
    """Sufficient statistics in float64 numpy, independently of jaxviz.stats."""
    from jaxviz.stats import StatsState

    mean = samples.mean(0)
    y = samples - mean
    norms = (y * y).sum(1)
    return StatsState(np.float64(len(samples)), mean, y.T @ y, (norms[:, None] * y).sum(0), (norms ** 2).sum())


def test_compact_storage_round_trips_and_detects_tampering(tmp_path):
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(6, 6))
    samples = {"a": rng.normal(size=(500, 6)) @ mix + 3.0, "b": rng.normal(size=(300, 3))}
    states = {k: _numpy_state(v) for k, v in samples.items()}
    stats_store.save_stats(str(tmp_path / "c"), states, model="toy", view="pixel", compact=True)
    stats_store.save_stats(str(tmp_path / "o"), states, model="toy", view="pixel")
    compact = stats_store.load_stats(str(tmp_path / "c"), model="toy", view="pixel")
    full = stats_store.load_stats(str(tmp_path / "o"), model="toy", view="pixel")
    for layer, x in samples.items():
        np.testing.assert_allclose(compact[layer].mean, x.mean(0), rtol=1e-6)
        np.testing.assert_allclose(compact[layer].cov, np.cov(x, rowvar=False), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(compact[layer].precision, full[layer].precision, rtol=1e-4, atol=1e-6)
    assert os.path.getsize(tmp_path / "c" / "moments-1.npz") > 0 and not (tmp_path / "c" / "moments").exists()

    packed = dict(np.load(tmp_path / "c" / "moments-1.npz"))
    packed["000/mean"] = packed["000/mean"] + np.float32(1e-3)
    np.savez(tmp_path / "c" / "moments-1.npz", **packed)
    with pytest.raises(stats_store.StatsMismatchError, match="does not match the hash"):
        stats_store.load_stats(str(tmp_path / "c"))
