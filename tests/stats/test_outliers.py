"""Mahalanobis contributions and outlier-neuron selection vs float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz.stats import outliers


def _random_spd(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_contributions_sum_to_d2_and_match_float64():
    rng = np.random.default_rng(0)
    dim = 48
    cov = _random_spd(rng, dim)
    precision = np.linalg.inv(cov)
    mean = rng.normal(size=dim)
    x = rng.normal(size=(5, 7, dim)) * 2 + mean
    d = x - mean
    ref_c = d * np.einsum("ij,...j->...i", precision, d)
    ref_d2 = np.einsum("...i,ij,...j->...", d, precision, d)
    c = outliers.contributions(jnp.asarray(x, jnp.float32), jnp.asarray(mean, jnp.float32),
                               jnp.asarray(precision, jnp.float32))
    assert c.shape == x.shape
    np.testing.assert_allclose(c, ref_c, rtol=1e-4, atol=1e-4 * np.abs(ref_c).max())
    d2 = jnp.sum(c, -1)
    np.testing.assert_allclose(d2, ref_d2, rtol=1e-4)
    np.testing.assert_allclose(outliers.mahalanobis(jnp.asarray(x, jnp.float32), mean, precision), ref_d2, rtol=1e-4)
    # vmapped over images equals the batched call
    v = jax.vmap(lambda xi: outliers.contributions(xi, mean, precision))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(v, c, rtol=1e-6, atol=1e-6)


def test_chi2_threshold_matches_gaussian_tail():
    rng = np.random.default_rng(1)
    dim = 20
    samples = rng.normal(size=(200_000, dim))
    threshold = outliers.chi2_threshold(dim, 0.99)
    assert abs(np.mean((samples**2).sum(1) > threshold) - 0.01) < 0.002


def test_selection_finds_planted_over_activated_neuron():
    rng = np.random.default_rng(2)
    dim, positions = 32, 64
    cov = _random_spd(rng, dim)
    mean = rng.normal(size=dim)
    precision = np.linalg.inv(cov)
    chol = np.linalg.cholesky(cov)
    x = mean + rng.normal(size=(positions, dim)) @ chol.T
    planted = 13
    hot = rng.choice(positions, 10, replace=False)
    x[hot, planted] += 8 * np.sqrt(cov[planted, planted])
    sel = outliers.select(jnp.asarray(x, jnp.float32), jnp.asarray(mean, jnp.float32),
                          jnp.asarray(precision, jnp.float32), k=1,
                          threshold=outliers.chi2_threshold(dim, 0.99))
    assert int(sel.neurons[0]) == planted
    assert float(sel.mask.sum()) == 1.0 and float(sel.mask[planted]) == 1.0
    assert set(np.flatnonzero(np.asarray(sel.outlier))) >= set(hot)
    assert int(sel.count[0]) >= 8
    # a natural sample has (almost) no outliers and selects nothing with a positive score at a strict quantile
    clean = mean + rng.normal(size=(positions, dim)) @ chol.T
    sel = outliers.select(jnp.asarray(clean, jnp.float32), mean, precision, k=3,
                          threshold=outliers.chi2_threshold(dim, 0.9999))
    assert float(sel.mask.sum()) == 0.0


def test_under_activated_neurons_are_not_selected():
    rng = np.random.default_rng(3)
    dim = 16
    mean, precision = np.zeros(dim), np.eye(dim)
    x = rng.normal(size=(40, dim)) * 0.3
    x[:, 5] -= 10.0  # far out, but below the mean: pushing it down would not help
    x[:20, 9] += 6.0
    sel = outliers.select(jnp.asarray(x, jnp.float32), mean, precision, k=dim,
                          threshold=outliers.chi2_threshold(dim))
    score = dict(zip(np.asarray(sel.neurons).tolist(), np.asarray(sel.score).tolist()))
    assert int(sel.neurons[0]) == 9
    assert score[5] == 0.0 and float(sel.mask[5]) == 0.0
