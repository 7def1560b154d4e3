"""Quantile-matching and joint-Gaussian-matching priors against float64 numpy."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxviz.common.errors import StatsMismatchError, UsageError
from jaxviz.priors import gaussian as gm
from jaxviz.priors import quantile_match as pq
from jaxviz.stats import store as stats_store

# ----------------------------------------------------------------------------- numpy references


def _np_sort_match(x, values, levels, std):
    """float64 reference: mean over positions of ((sorted x − Q(rank)) / σ)², per channel."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    m = x.shape[0]
    out = []
    for c in range(x.shape[1]):
        ranks = (np.arange(m) + 0.5) / m
        target = np.interp(ranks, levels, values[c])
        out.append(np.mean(((np.sort(x[:, c]) - target) / std[c]) ** 2))
    return np.array(out)


def _np_bures(x, mu, sigma):
    x = np.asarray(x, np.float64)
    m = x.mean(0)
    s = (x - m).T @ (x - m) / x.shape[0]
    root = scipy.linalg.sqrtm(sigma)
    cross = scipy.linalg.sqrtm(root @ s @ root)
    return float(np.sum((m - mu) ** 2) + np.trace(s) + np.trace(sigma) - 2 * np.real(np.trace(cross)))


def _np_kl(x, mu, sigma, ridge=1e-4):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    m = x.mean(0)
    s = (x - m).T @ (x - m) / x.shape[0] + ridge * np.trace(sigma) / c * np.eye(c)
    p = np.linalg.inv(sigma)
    d = mu - m
    return 0.5 * (np.trace(p @ s) + d @ p @ d - c + np.linalg.slogdet(sigma)[1] - np.linalg.slogdet(s)[1])


def _spd(rng, c):
    a = rng.normal(size=(c, c))
    return a @ a.T / c + 0.5 * np.eye(c)


def _synthetic_quantiles(rng, c, q=33):
    levels = pq.default_levels(q)
    samples = rng.gamma(2.0, 1.0, size=(4000, c)) + rng.normal(size=c)
    return pq.quantiles_of(samples, levels)


# ----------------------------------------------------------------------------- quantile prior


def test_sort_match_penalty_equals_float64_numpy(lite0):
    rng = np.random.default_rng(0)
    table = {"blocks.2": _synthetic_quantiles(rng, 24), "blocks.4": _synthetic_quantiles(rng, 40)}
    prior = pq.quantile(table, model=lite0, layers=["blocks.2", "blocks.4"], weight=2.5)
    feats = {"blocks.2": rng.normal(size=(9, 7, 24)).astype(np.float32) * 2,
             "blocks.4": rng.normal(size=(5, 5, 40)).astype(np.float32)}
    penalty, _, trace = prior.apply({k: jnp.asarray(v) for k, v in feats.items()}, prior.init(feats), jnp.int32(0))
    ref = np.mean([np.mean(_np_sort_match(feats[l], table[l].values, table[l].levels, table[l].std)) for l in table])
    np.testing.assert_allclose(float(trace), ref, rtol=2e-5)
    np.testing.assert_allclose(float(penalty), 2.5 * ref, rtol=2e-5)


def test_sort_match_gradient_matches_finite_differences(lite0):
    rng = np.random.default_rng(1)
    table = {"blocks.2": _synthetic_quantiles(rng, 24)}
    prior = pq.quantile(table, model=lite0, layers=["blocks.2"])
    x = rng.normal(size=(4, 4, 24))
    grad = jax.grad(lambda a: prior.apply({"blocks.2": a}, (), jnp.int32(0))[0])(jnp.asarray(x, jnp.float32))
    assert np.all(np.isfinite(grad))
    q = table["blocks.2"]
    f = lambda a: np.mean(_np_sort_match(a, q.values, q.levels, q.std))  # noqa: E731
    for idx in [(0, 0, 0), (1, 2, 5), (3, 3, 23)]:
        e = np.zeros_like(x)
        e[idx] = 1e-5
        fd = (f(x + e) - f(x - e)) / 2e-5
        np.testing.assert_allclose(float(grad[idx]), fd, rtol=1e-3, atol=1e-6)


def test_natural_distribution_scores_near_zero_and_shifted_scores_high(lite0):
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(20000, 24)) * rng.uniform(0.5, 2, 24) + rng.normal(size=24)
    q = pq.quantiles_of(samples, pq.default_levels(65))
    prior = pq.quantile({"blocks.2": q}, model=lite0, layers=["blocks.2"])
    fresh = samples[rng.choice(20000, 1024, replace=False)].reshape(32, 32, 24)
    near = float(prior.apply({"blocks.2": jnp.asarray(fresh, jnp.float32)}, (), jnp.int32(0))[2])
    far = float(prior.apply({"blocks.2": jnp.asarray(fresh + 2 * q.std, jnp.float32)}, (), jnp.int32(0))[2])
    assert near < 0.02 and far > 3.5  # a 2σ shift costs 4 per channel


def test_outlier_channels_only_match_the_selected_neurons(lite0):
    rng = np.random.default_rng(3)
    bundle = stats_store.load_stats(stats_store.shipped_stats_dir("efficientnet_lite0"), layers=["blocks.2"])
    st = bundle["blocks.2"]
    table = {"blocks.2": _synthetic_quantiles(rng, 24)}
    prior = pq.quantile(bundle, quantiles=table, model=lite0, layers=["blocks.2"], channels="outliers", k=3,
                        warmup=0)
    x = rng.multivariate_normal(st.mean, st.cov, size=(64,)).reshape(8, 8, 24)
    x[..., 7] += 30 * np.sqrt(st.cov[7, 7])  # channel 7 makes every position an outlier
    feats = {"blocks.2": jnp.asarray(x, jnp.float32)}
    _, state, trace = prior.apply(feats, prior.init(feats), jnp.int32(0))
    mask = np.asarray(state.mask["blocks.2"])
    assert mask[7] == 1 and 1 <= mask.sum() <= 3
    per = _np_sort_match(x, table["blocks.2"].values, table["blocks.2"].levels, table["blocks.2"].std)
    np.testing.assert_allclose(float(trace), np.sum(per * mask) / mask.sum(), rtol=2e-5)


@pytest.mark.slow  # ~12 s
def test_collected_quantiles_equal_numpy_quantiles_of_the_features(lite0):
    rng = np.random.default_rng(4)

    class Images:  # test data: 3 random photos-sized arrays
        data = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)

        def __len__(self):
            return 3

        def batches(self, batch_size):
            return (self.data[i:i + batch_size] for i in range(0, 3, batch_size))

    got = pq.collect_quantiles(lite0, ["blocks.2", "blocks.4"], Images(), levels=9, max_positions=10_000,
                               batch_size=2)
    feats = lite0.features(lite0.params, lite0.normalize(jnp.asarray(Images.data, jnp.float32)), ["blocks.2", "blocks.4"])
    for layer in ("blocks.2", "blocks.4"):
        a = np.asarray(feats[layer], np.float64).reshape(-1, lite0.layers[layer][-1])
        ref = np.quantile(a, (np.arange(9) + 0.5) / 9, axis=0).T
        np.testing.assert_allclose(got[layer].values, ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[layer].std, a.std(0), rtol=1e-4, atol=1e-5)
        assert got[layer].count == a.shape[0]
    sub = pq.collect_quantiles(lite0, ["blocks.2"], Images(), levels=9, max_positions=50)
    assert sub["blocks.2"].count == 150


def test_quantile_store_roundtrip_and_tamper_check(tmp_path, lite0):
    rng = np.random.default_rng(5)
    table = {"blocks.2": _synthetic_quantiles(rng, 24), "blocks.4": _synthetic_quantiles(rng, 40)}
    pq.save_quantiles(str(tmp_path), table, model="efficientnet_lite0")
    back = pq.load_quantiles(str(tmp_path), model=lite0)
    for layer in table:
        np.testing.assert_allclose(back[layer].values, table[layer].values, rtol=1e-6)
    pq.save_quantiles(str(tmp_path), table, model="efficientnet_lite0")  # a second generation replaces the first
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".npz")) == ["quantiles-2.npz"]
    meta = json.loads((tmp_path / pq.QUANTILES_FILE).read_text())
    meta["sha256"] = "0" * 64
    (tmp_path / pq.QUANTILES_FILE).write_text(json.dumps(meta))
    with pytest.raises(StatsMismatchError, match="hash"):
        pq.load_quantiles(str(tmp_path))
    with pytest.raises(StatsMismatchError, match="model"):
        pq.load_quantiles(str(tmp_path), model="efficientnet_lite1")


def test_shipped_quantiles_agree_with_the_shipped_moments(lite0):
    folder = pq.shipped_quantiles_dir("efficientnet_lite0")
    assert folder is not None
    table = pq.load_quantiles(folder, model=lite0)
    assert tuple(table) == pq.QUANTILE_LAYERS
    moments = stats_store.load_stats(stats_store.shipped_stats_dir("efficientnet_lite0"), layers=list(table))
    for layer, q in table.items():
        assert q.values.shape == (lite0.layers[layer][-1], pq.LEVELS)
        assert np.all(np.diff(q.values, axis=1) >= 0)  # a quantile function never decreases
        # two passes (moments: every position; quantiles: ≤ 784 positions per photo) see the same photos
        sd = np.sqrt(np.diag(moments[layer].cov))
        np.testing.assert_allclose(q.mean, moments[layer].mean, atol=0.05 * sd.max() + 1e-3)
        np.testing.assert_allclose(q.std, sd, rtol=0.1, atol=1e-3)
    with open(os.path.join(folder, pq.QUANTILES_FILE)) as f:
        meta = json.load(f)
    assert meta["run"]["images"] == 1000 and "ship_stats.py" in meta["command"]


def test_quantile_prior_refuses_mistakes(lite0):
    with pytest.raises(UsageError, match="channels"):
        pq.quantile(model=lite0, channels="some")
    with pytest.raises(UsageError, match="weight"):
        pq.quantile(model=lite0, weight=float("nan"))
    with pytest.raises(StatsMismatchError, match="blocks.3"):
        pq.quantile(model=lite0, layers=["blocks.3"])


# ----------------------------------------------------------------------------- gaussian matching


@pytest.mark.parametrize("c, m", [(6, 50), (24, 300)])
def test_bures_and_kl_equal_float64_references(c, m):
    rng = np.random.default_rng(c)
    mu, sigma = rng.normal(size=c), _spd(rng, c)
    x = rng.normal(size=(m, c)) @ np.linalg.cholesky(_spd(rng, c)).T + rng.normal(size=c)
    g = gm.natural_gaussian(mu, sigma)
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(float(gm.bures_wasserstein(xj, g)), _np_bures(x, mu, sigma), rtol=2e-4, atol=1e-3)
    np.testing.assert_allclose(float(gm.gaussian_kl(xj, g)), _np_kl(x, mu, sigma), rtol=2e-4, atol=1e-3)


@pytest.mark.slow  # ~12 s
def test_gaussian_gradients_are_finite_and_match_finite_differences():
    rng = np.random.default_rng(7)
    c = 5
    mu, sigma = rng.normal(size=c), _spd(rng, c)
    g = gm.natural_gaussian(mu, sigma)
    x = rng.normal(size=(40, c))
    for fn, ref in ((gm.bures_wasserstein, lambda a: _np_bures(a, mu, sigma)),
                    (gm.gaussian_kl, lambda a: _np_kl(a, mu, sigma))):
        with jax.enable_x64(True):
            g64 = gm.NaturalGaussian(*(jnp.asarray(np.asarray(v), jnp.float64) for v in g))
            grad = np.asarray(jax.grad(lambda a, fn=fn, g64=g64: fn(a, g64))(jnp.asarray(x, jnp.float64)))
        for idx in [(0, 0), (7, 3), (39, 4)]:
            e = np.zeros_like(x)
            e[idx] = 1e-6
            fd = (ref(x + e) - ref(x - e)) / 2e-6
            np.testing.assert_allclose(grad[idx], fd, rtol=2e-3, atol=1e-5)
    # rank-deficient and constant images (repeated / zero eigenvalues): gradients stay finite
    for a in (rng.normal(size=(3, c)), np.ones((16, c))):
        for fn in (gm.bures_wasserstein, gm.gaussian_kl):
            grad = jax.grad(lambda z, fn=fn: fn(z, g))(jnp.asarray(a, jnp.float32))
            assert np.all(np.isfinite(np.asarray(grad)))


def test_gaussian_prior_is_zero_at_the_natural_moments(lite0):
    bundle = stats_store.load_stats(stats_store.shipped_stats_dir("efficientnet_lite0"), layers=["blocks.2"])
    st = bundle["blocks.2"]
    rng = np.random.default_rng(8)
    z = rng.normal(size=(1024, 24))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T  # exactly whitened
    x = z @ np.linalg.cholesky(st.cov).T + st.mean  # mean μ and covariance Σ exactly
    for distance in gm.DISTANCES:
        prior = gm.gaussian_match(bundle, model=lite0, layers=["blocks.2"], distance=distance)
        near = float(prior.apply({"blocks.2": jnp.asarray(x.reshape(32, 32, 24), jnp.float32)}, (), jnp.int32(0))[2])
        far = float(prior.apply({"blocks.2": jnp.asarray(1.5 * x.reshape(32, 32, 24), jnp.float32)}, (),
                                jnp.int32(0))[2])
        assert abs(near) < 1e-3 and far > 0.05, (distance, near, far)


def test_gaussian_prior_defaults_and_refusals(lite0):
    prior = gm.gaussian_match(model=lite0)
    assert prior.layers == stats_store.SHIPPED_PRIOR_LAYERS and "bures" in repr(prior)
    with pytest.raises(UsageError, match="distance"):
        gm.gaussian_match(model=lite0, distance="w1")
    with pytest.raises(UsageError, match="weight"):
        gm.gaussian_match(model=lite0, weight=-1)


def test_prior_names_and_recipes_build_the_new_priors(lite0):
    from jaxviz import recipes, registry
    from jaxviz.cli import build_parser

    visualize = build_parser()._subparsers._group_actions[0].choices["visualize"]
    choices = next(a.choices for a in visualize._actions if a.dest == "prior")
    assert {"quantile", "gaussian", "bn-batch"} <= set(registry.names("prior")) == set(choices)
    q = registry.build_prior("quantile", model=lite0, weight=0.5)
    assert isinstance(q, pq.QuantilePrior) and q.weight == 0.5 and q.layers == stats_store.SHIPPED_PRIOR_LAYERS
    g = registry.build_prior("gaussian", model=lite0, layers=["blocks.4"], distance="kl")
    assert isinstance(g, gm.GaussianMatchPrior) and g.layers == ("blocks.4",)
    recipe = recipes.get("quantile", size=64, channels="outliers", k=4)
    assert recipe.name == "quantile" and recipe.crops_per_step == 4  # the MaCo base
    assert isinstance(recipe.build_prior(lite0), pq.QuantilePrior) and recipe.build_prior(lite0).channels == "outliers"
    assert isinstance(recipes.get("gaussian", base="lucid").build_prior(lite0), gm.GaussianMatchPrior)
    with pytest.raises(UsageError, match="bad options for recipe 'gaussian'"):
        recipes.get("gaussian", lam=3)
    with pytest.raises(UsageError, match="unknown base recipe"):
        recipes.get("quantile", base="outliers")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quantile", "gaussian"])
def test_new_priors_render_on_lite0(lite0, name):
    from jaxviz import objectives, registry, render

    prior = registry.build_prior(name, model=lite0)
    result = render.render_images(lite0, [objectives.class_logit(207)], prior=prior,
                           config=render.RenderConfig(size=64, steps=4, chunk_steps=4))
    assert np.all(np.isfinite(result.images)) and np.all(np.isfinite(result.trace)) and result.trace_name == prior.trace_name
