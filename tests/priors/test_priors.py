"""Priors against float64 numpy: the method's selection and penalty, the ablation, DeepInversion's BN prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import priors, registry
from jaxviz.stats import outliers


def _toy_stats(rng, dim):
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T / dim + 0.2 * np.eye(dim)
    mean = rng.normal(size=dim)
    return mean, cov


def _moments(mean, cov):
    return priors.LayerMoments(jnp.asarray(mean, jnp.float32), jnp.asarray(np.linalg.inv(cov), jnp.float32),
                               jnp.asarray(np.sqrt(np.diag(cov)), jnp.float32))


def _natural(rng, mean, cov, h, w):
    return (mean + rng.normal(size=(h * w, len(mean))) @ np.linalg.cholesky(cov).T).reshape(h, w, -1)


def test_outlier_prior_suppresses_the_planted_neuron():
    rng = np.random.default_rng(0)
    dim, planted = 24, 7
    mean, cov = _toy_stats(rng, dim)
    act = _natural(rng, mean, cov, 6, 6)
    act[:3, :3, planted] += 10 * np.sqrt(cov[planted, planted])
    features = {"layer": jnp.asarray(act, jnp.float32)}
    prior = priors.OutlierPrior({"layer": _moments(mean, cov)}, k=1, every=4, warmup=2, weight=1.0, scope="image")
    state = prior.init(features)
    for step in range(2):  # warm-up: DeepDream, no penalty, nothing selected yet
        penalty, state, trace = prior.apply(features, state, step)
        assert float(penalty) == 0.0 and float(state.mask["layer"].sum()) == 0.0
    penalty, state, trace = prior.apply(features, state, 2)
    assert float(state.mask["layer"][planted]) == 1.0 and float(state.mask["layer"].sum()) == 1.0
    z = (act[..., planted] - mean[planted]) / np.sqrt(cov[planted, planted])
    np.testing.assert_allclose(float(penalty), np.maximum(z, 0).mean(), rtol=1e-4)
    d2 = np.einsum("mi,ij,mj->m", act.reshape(-1, dim) - mean, np.linalg.inv(cov), act.reshape(-1, dim) - mean)
    np.testing.assert_allclose(float(trace), d2.mean(), rtol=1e-4)
    # the gradient of the penalty pushes only the selected neuron, only downwards
    grad = jax.grad(lambda f: prior.apply({"layer": f}, state, 3)[0])(features["layer"])
    assert float(jnp.abs(grad[..., :planted]).max()) == 0.0 and float(grad[:3, :3, planted].min()) > 0
    report = prior.report(features, state)
    record = priors.describe(jax.tree.map(lambda a: a[None], report), 0)
    assert record["suppressed"][0]["layer"] == "layer" and record["suppressed"][0]["channel"] == planted
    assert report["outlier_map"].shape == (6, 6) and float(report["outlier_map"][:3, :3].min()) == 1.0


def test_contribution_penalty_and_outlier_scope_match_float64():
    rng = np.random.default_rng(3)
    dim, planted = 12, 4
    mean, cov = _toy_stats(rng, dim)
    act = _natural(rng, mean, cov, 5, 5)
    act[:2, :2, planted] += 12 * np.sqrt(cov[planted, planted])
    features = {"layer": jnp.asarray(act, jnp.float32)}
    x = act.reshape(-1, dim) - mean
    precision = np.linalg.inv(cov)
    c = x * (x @ precision)  # per-neuron contributions, float64
    d2 = c.sum(1)
    outlier = d2 > outliers.chi2_threshold(dim, 0.99)
    z = x / np.sqrt(np.diag(cov))
    expected = {
        ("contribution", "image"): np.maximum(c[:, planted], 0).mean(),
        ("activation", "outliers"): (np.maximum(z[:, planted], 0) * outlier).mean(),
        ("contribution", "outliers"): (np.maximum(c[:, planted], 0) * outlier).mean(),
    }
    for (penalty, scope), value in expected.items():
        prior = priors.outliers({"layer": _moments(mean, cov)}, k=1, warmup=0, weight=1.0, penalty=penalty,
                                scope=scope)
        state = prior.apply(features, prior.init(features), 0)[1]  # step 0 selects the planted neuron
        assert float(state.mask["layer"][planted]) == 1.0
        np.testing.assert_allclose(float(prior.apply(features, state, 1)[0]), value, rtol=1e-3)
    assert outlier.sum() >= 4 and not outlier.all()


def test_mahalanobis_prior_is_mean_d2_over_dim():
    rng = np.random.default_rng(1)
    dim = 16
    mean, cov = _toy_stats(rng, dim)
    act = _natural(rng, mean, cov, 5, 4) + 0.5
    prior = priors.MahalanobisPrior({"l": _moments(mean, cov)}, weight=2.0)
    penalty, _, trace = prior.apply({"l": jnp.asarray(act, jnp.float32)}, (), 0)
    d = act.reshape(-1, dim) - mean
    d2 = np.einsum("mi,ij,mj->m", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(float(penalty), 2.0 * d2.mean() / dim, rtol=1e-4)
    np.testing.assert_allclose(float(trace), d2.mean(), rtol=1e-4)


def test_batchnorm_prior_matches_deepinversion_formula():
    rng = np.random.default_rng(2)
    c, eps = 12, 1e-3
    p = {"scale": rng.uniform(0.5, 2, c), "bias": rng.normal(size=c), "mean": rng.normal(size=c),
         "var": rng.uniform(0.2, 3, c)}
    x = rng.normal(size=(9, 9, c)) * 1.7 + 0.3  # BN input with other statistics than the running ones
    y = (x - p["mean"]) / np.sqrt(p["var"] + eps) * p["scale"] + p["bias"]
    prior = priors.BatchNormPrior({"bn": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}, eps=eps, weight=1.0)
    loss, _, _ = prior.apply({"bn": jnp.asarray(y, jnp.float32)}, (), 0)
    flat = x.reshape(-1, c)
    expected = np.linalg.norm(flat.mean(0) - p["mean"]) + np.linalg.norm(flat.var(0) - p["var"])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


@pytest.mark.slow
def test_batchnorm_prior_on_lite0_prefers_photos_to_noise(lite0, photos):
    prior = registry.build_prior("bn", model=lite0)
    assert "blocks.3.depthwise.bn" in prior.layers and "blocks.3.project" in prior.layers
    photo = lite0.preprocess(photos["chelsea"])[0]
    noise = np.asarray(jax.random.uniform(jax.random.key(0), photo.shape, minval=-1, maxval=1))
    losses = []
    for x in (photo, noise):
        features = lite0.features(lite0.params, jnp.asarray(x), prior.layers)
        losses.append(float(prior.apply(features, (), 0)[0]))
    assert losses[0] < 0.7 * losses[1], losses


def test_chi2_quantile_matches_tables_and_simulation():
    # published χ² table values
    assert outliers.chi2_threshold(1, 0.95) == pytest.approx(3.841459, abs=1e-5)
    assert outliers.chi2_threshold(24, 0.99) == pytest.approx(42.97982, abs=1e-4)
    # and the empirical quantile of D² of standard Gaussian vectors (what "outlier" is meant to mean)
    d2 = (np.random.default_rng(0).normal(size=(200_000, 24)) ** 2).sum(1)
    assert np.quantile(d2, 0.99) == pytest.approx(outliers.chi2_threshold(24, 0.99), rel=0.02)


def test_positions_beyond_the_chi2_quantile_are_the_outliers():
    dim, threshold = 6, outliers.chi2_threshold(6, 0.99)
    unit = np.eye(dim)[0]
    # identity precision: D² is the squared norm; one position just inside, one just outside
    x = np.stack([unit * np.sqrt(threshold - 0.05), unit * np.sqrt(threshold + 0.05)]).astype(np.float32)
    sel = outliers.select(jnp.asarray(x), jnp.zeros(dim), jnp.eye(dim), k=1, threshold=threshold)
    assert np.asarray(sel.outlier).tolist() == [False, True]
    assert int(sel.neurons[0]) == 0 and float(sel.score[0]) == pytest.approx(threshold + 0.05, rel=1e-5)


@pytest.mark.slow
def test_priors_end_to_end_through_the_cli(tmp_path, capsys):
    import json

    from jaxviz.cli import main

    stats_dir = tmp_path / "stats"
    assert main(["stats", "--layers", "blocks.2,blocks.3", "--max-images", "12", "--batch-size", "6",
                 "--out", str(stats_dir), "--quiet"]) == 0
    common = ["visualize", "--target", "logits:281", "--size", "64", "--steps", "6", "--quiet", "--recipe", "jaxviz"]
    for prior in ("mahalanobis", "bn"):
        out = tmp_path / prior
        extra = ["--stats", str(stats_dir)] if prior != "bn" else []
        code = main([*common, "--prior", prior, *extra, "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        entry = json.loads((out / "metrics.json").read_text())["targets"][0]
        assert len(entry["history"]) == 6
        if prior != "bn":
            assert len(entry["d2_history"]) == 6 and entry["d2_history"][0] > 0
    # the method lists what it suppressed (warm-up 0 so that it selects within 6 steps)
    code = main([*common, "--prior", "outliers", "--stats", str(stats_dir), "--warmup", "0", "--every", "2",
                 "--quantile", "0.5", "--out", str(tmp_path / "o2")])
    assert code == 0
    entry = json.loads((tmp_path / "o2" / "metrics.json").read_text())["targets"][0]
    assert entry["suppressed"] and {"layer", "channel", "count", "mean_contribution"} <= set(entry["suppressed"][0])
    assert (tmp_path / "o2" / "heat_logits_281.png").exists()
    # statistics of other layers or another model are refused in one line
    capsys.readouterr()
    code = main([*common, "--prior", "outliers", "--stats", str(stats_dir), "--stats-layers", "blocks.9",
                 "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "blocks.9" in err and err.count("\n") == 1
    code = main([*common, "--model", "efficientnet_lite1", "--prior", "outliers", "--stats", str(stats_dir),
                 "--out", str(tmp_path / "bad2")])
    err = capsys.readouterr().err
    assert code == 2 and "efficientnet_lite0" in err and err.count("\n") == 1
