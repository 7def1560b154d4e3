"""Saliency conventions, SmoothGrad and integrated gradients, against float64 numpy on a toy net."""

import jax
import numpy as np
import pytest

from jaxviz import attribution, objectives
from jaxviz.attribution import specificity
from jaxviz.cli import main
from jaxviz.common.errors import UsageError
from tests.test_attribution import H, W, _reference, _toy_model, _toy_params


def _logit64(params, image, target):
    """The toy's logit in float64 numpy (for completeness checks)."""
    x = image.reshape(-1).astype(np.float64) * 4.0 - 2.0
    h1 = np.clip(x @ params["w1"] + params["b1"], 0, 6)
    h2 = np.clip(h1 @ params["w2"] + params["b2"], 0, 6)
    return (h2 @ params["w3"])[target]


@pytest.fixture(scope="module")
def toy():
    params = _toy_params()
    return params, _toy_model(params)


def test_saliency_refuses_preprocessed_and_converts_uint8(toy):
    params, model = toy
    rng = np.random.default_rng(0)
    image01 = rng.uniform(0, 1, (1, H, W, 3)).astype(np.float32)
    targets = [objectives.class_logit(1)]
    with pytest.raises(UsageError, match=r"\[0, 1\].*preprocess"):
        attribution.saliency(model, image01 * 2.0 - 1.0, targets)  # model-range input
    with pytest.raises(UsageError, match=r"0\.\.255 floats"):
        attribution.saliency(model, image01 * 255.0, targets)
    as_uint8 = np.round(image01 * 255).astype(np.uint8)
    np.testing.assert_allclose(attribution.saliency(model, as_uint8, targets),
                               attribution.saliency(model, as_uint8.astype(np.float32) / 255.0, targets))


@pytest.mark.parametrize("rule", ["gradient", "guided"])
def test_smoothgrad_matches_float64_reference(toy, rule):
    params, model = toy
    images = np.random.default_rng(1).uniform(0, 1, (2, H, W, 3)).astype(np.float32)
    key = jax.random.key(7)
    got = attribution.smoothgrad(model, images, [objectives.class_logit(t) for t in range(4)], key=key, samples=8,
                                 noise=0.2, rule=rule)
    for n in range(2):
        sigma = 0.2 * (images[n].max() - images[n].min())
        eps = np.asarray(jax.random.normal(jax.random.fold_in(key, n), (8, H, W, 3)), np.float64)
        for t in range(4):
            want = np.mean([_reference(params, images[n] + sigma * e, t, rule) for e in eps], axis=0)
            np.testing.assert_allclose(got[n, t], want, rtol=1e-4, atol=1e-4)


def test_integrated_gradients_matches_float64_reference_and_completeness(toy):
    params, model = toy
    images = np.random.default_rng(2).uniform(0, 1, (2, H, W, 3)).astype(np.float32)
    targets = [objectives.class_logit(t) for t in range(4)]
    got = attribution.integrated_gradients(model, images, targets, steps=16)
    alphas = (np.arange(16) + 0.5) / 16
    for n in range(2):
        for t in range(4):
            path = np.mean([_reference(params, a * images[n].astype(np.float64), t, "gradient") for a in alphas], 0)
            np.testing.assert_allclose(got[n, t], path * images[n], rtol=1e-4, atol=1e-4)
    fine = attribution.integrated_gradients(model, images, targets, steps=4096, baseline=0.5)  # kinks: many steps
    for n in range(2):
        for t in range(4):  # Σ attributions ≈ f(x) − f(baseline)
            delta = _logit64(params, images[n], t) - _logit64(params, np.full((H, W, 3), 0.5), t)
            assert abs(fine[n, t].sum() - delta) < 0.01 * max(1.0, abs(delta))


def test_specificity_measure():
    rng = np.random.default_rng(3)
    a = rng.uniform(size=(20, 20))
    same = specificity(a, 2 * a + 1)
    assert same["overlap"] == 1.0 and abs(same["correlation"] - 1.0) < 1e-12
    other = specificity(a, rng.uniform(size=(20, 20)))
    assert other["overlap"] < 0.5 and abs(other["correlation"]) < 0.3


@pytest.mark.slow  # three CLI processes: ~8 s
def test_cli_methods(lite0, tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photo)
    for method, extra in (("smoothgrad", ["--samples", "2"]), ("integrated-gradients", ["--steps", "2"])):
        code = main(["attribute", str(photo), "--target", "logits:281", "--out", str(tmp_path / "o"), "--size", "32",
                     "--rule", "gradient", "--method", method, *extra])
        assert code == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert "000_cat_logits_281_smoothgrad_gradient.npy" in names
    assert "000_cat_logits_281_integrated_gradients_gradient.png" in names
    capsys.readouterr()
    code = main(["attribute", str(photo), "--target", "logits:281", "--out", str(tmp_path / "o"), "--method",
                 "smoothgrad", "--samples", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--samples must be between 1" in err and len(err.strip().splitlines()) == 1
