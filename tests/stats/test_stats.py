"""Streaming moments (jaxviz.stats) and feature views (jaxviz.stats.views) against float64 numpy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import stats
from jaxviz.common.errors import UsageError
from jaxviz.stats import views


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def correlated(rng, n, dim, offset=0.0, dtype=np.float32):
    mix = (rng.normal(size=(dim, dim)) / np.sqrt(dim) * np.exp(rng.normal(size=dim))).astype(dtype)  # uneven variances
    return rng.standard_normal((n, dim), dtype=dtype) @ mix.T + np.asarray(offset, dtype)


def reference(x, w=None):
    """Float64 two-pass mean, unbiased covariance and the norm moments."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    n = w.sum()
    mean = (w[:, None] * x).sum(0) / n
    y = x - mean
    cov = (w[:, None] * y).T @ y / (n - 1)
    sq = (y * y).sum(1)
    return mean, cov, ((w * sq)[:, None] * y).sum(0), (w * sq * sq).sum()


def test_one_million_offset_samples_uneven_batches_random_merge_order():
    rng = np.random.default_rng(0)
    n, dim = 1_000_000, 64
    x = correlated(rng, n, dim, offset=1e3 + rng.normal(size=dim))
    x64 = x.astype(np.float64)
    ref_mean = x64.mean(0)
    x64 -= ref_mean
    ref_cov = x64.T @ x64 / (n - 1)
    del x64

    sizes, i = [], 0
    while i < n:  # a few distinct shapes (few compilations), very uneven
        sizes.append(min(int(rng.choice([1, 3, 999, 4096, 30_001, 65_536])), n - i))
        i += sizes[-1]
    update = jax.jit(stats.update)
    parts, i = [], 0
    for b in sizes:
        parts.append(update(stats.init(dim), x[i:i + b]))
        i += b
    merge = jax.jit(stats.merge)
    parts = [parts[j] for j in rng.permutation(len(parts))]
    while len(parts) > 1:  # random tree of merges, random argument order
        j = int(rng.integers(len(parts) - 1))
        a, b = parts.pop(j), parts.pop(j)
        parts.insert(j, merge(a, b) if rng.random() < 0.5 else merge(b, a))
    mean, cov = stats.finalize(parts[0])
    assert float(parts[0].count) == n
    assert mean.dtype == cov.dtype == jnp.float32
    assert rel(mean, ref_mean) <= 1e-5
    assert rel(cov, ref_cov) <= 1e-5

    # the same data streamed sequentially through one state
    s = stats.init(dim)
    i = 0
    for b in sizes:
        s = update(s, x[i:i + b])
        i += b
    mean, cov = stats.finalize(s)
    assert rel(mean, ref_mean) <= 1e-5
    assert rel(cov, ref_cov) <= 1e-5


def test_naive_sum_of_squares_would_fail_the_same_bar():
    """Sanity check of the acceptance test: float32 E[xxᵀ] − E[x]E[x]ᵀ is far off at offset 1e3."""
    rng = np.random.default_rng(1)
    x = correlated(rng, 100_000, 16, offset=1e3)
    _, ref_cov, _, _ = reference(x)
    xj = jnp.asarray(x)
    naive = (xj.T @ xj - len(x) * jnp.outer(xj.mean(0), xj.mean(0))) / (len(x) - 1)
    assert rel(naive, ref_cov) > 1e-2
    _, cov = stats.finalize(stats.update(stats.init(16), xj))
    assert rel(cov, ref_cov) <= 1e-5


@pytest.mark.parametrize("jit", [False, True])
def test_norm_moments_and_weights_match_float64(jit):
    rng = np.random.default_rng(2)
    x = correlated(rng, 700, 5, offset=3.0)
    w = (rng.random(700) < 0.7).astype(np.float32)
    update = jax.jit(stats.update) if jit else stats.update
    s = update(update(stats.init(5), x[:300], w[:300]), x[300:], w[300:])
    mean, cov, m3, m4 = reference(x, w)
    assert float(s.count) == w.sum()
    np.testing.assert_allclose(s.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.finalize(s)[1], cov, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s.m3, m3, rtol=1e-3, atol=1e-3 * np.abs(m3).max())
    np.testing.assert_allclose(s.m4, m4, rtol=1e-5)
    # a 0/1 mask is the same as dropping the rows
    kept = update(stats.init(5), x[w > 0])
    for a, b in zip(s, kept):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)


def test_empty_batches_and_empty_states_change_nothing():
    rng = np.random.default_rng(3)
    x = correlated(rng, 50, 4, offset=10.0)
    s = stats.update(stats.init(4), x)
    masked = stats.update(s, x, jnp.zeros(50))
    for a, b in zip(masked, s):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for merged in (stats.merge(stats.init(4), s), stats.merge(s, stats.init(4))):
        for a, b in zip(merged, s):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    empty = stats.merge(stats.init(4), stats.init(4))
    assert all(np.all(np.asarray(a) == 0) for a in empty)


def test_vmapped_update_equals_separate_updates():
    rng = np.random.default_rng(4)
    x = np.stack([correlated(rng, 64, 6, offset=k * 5.0) for k in range(3)])
    w = (rng.random((3, 64)) < 0.8).astype(np.float32)
    stack = jax.vmap(lambda _: stats.init(6))(jnp.arange(3))
    stack = jax.jit(jax.vmap(stats.update))(stack, x, w)
    stack = jax.jit(jax.vmap(stats.update))(stack, x[:, ::-1] * 0.5, w)
    for k in range(3):
        one = stats.update(stats.update(stats.init(6), x[k], w[k]), x[k, ::-1] * 0.5, w[k])
        for a, b in zip(jax.tree.map(lambda t: t[k], stack), one):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parts", [5])
def test_psum_merge_and_merge_stack_agree_with_sequential(parts):
    rng = np.random.default_rng(5)
    x = correlated(rng, parts * 40, 7, offset=100.0).reshape(parts, 40, 7)
    w = np.ones((parts, 40), np.float32)
    w[0, 10:] = 0.0  # uneven members, one possibly nearly empty
    stack = jax.vmap(stats.batch_stats)(x, w)
    tree = jax.jit(stats.merge_stack)(stack)
    psum = jax.jit(jax.vmap(functools.partial(stats.psum_merge, axis_name="d"), axis_name="d"))(stack)
    mean, cov, m3, m4 = reference(x.reshape(-1, 7), w.reshape(-1))
    for s in (tree, jax.tree.map(lambda t: t[0], psum), jax.tree.map(lambda t: t[-1], psum)):
        assert float(s.count) == w.sum()
        assert rel(s.mean, mean) < 1e-6
        assert rel(stats.finalize(s)[1], cov) < 1e-5
        assert rel(s.m4, m4) < 1e-5
        assert rel(s.m3, m3) < 1e-2  # m3 of a near-symmetric sample is a small difference of large terms


def test_finalize_ddof():
    x = np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 4.0]], np.float32)
    s = stats.update(stats.init(2), x)
    np.testing.assert_allclose(stats.finalize(s)[1], np.cov(x.T), rtol=1e-6)
    np.testing.assert_allclose(stats.finalize(s, ddof=0)[1], np.cov(x.T, bias=True), rtol=1e-6)


def test_shrinkage_coefficients_match_scikit_learn():
    from sklearn.covariance import ledoit_wolf_shrinkage, oas

    @jax.jit
    def coefficients(x):
        n, dim = x.shape
        s = stats.update(stats.init(dim, jnp.float64), x)
        cov_ml = stats.finalize(s, ddof=0)[1]
        return (stats.oas_shrinkage(cov_ml, n), stats.ledoit_wolf_shrinkage(cov_ml, n, s.m4),
                stats.estimate(s, shrinkage="ledoit_wolf").shrinkage)

    rng = np.random.default_rng(6)
    for n, dim in ((40, 30), (30, 60)):
        x = correlated(rng, n, dim, offset=2.0, dtype=np.float64)
        with jax.enable_x64(True):
            rho_oas, rho_lw, rho_est = map(float, coefficients(jnp.asarray(x)))
        np.testing.assert_allclose(rho_oas, oas(x)[1], rtol=1e-10)
        np.testing.assert_allclose(rho_lw, ledoit_wolf_shrinkage(x), rtol=1e-10)
        np.testing.assert_allclose(rho_est, rho_lw, rtol=1e-12)
        assert 0.0 < rho_lw < 1.0 and 0.0 < rho_oas <= 1.0


@pytest.mark.parametrize("shrinkage", ["oas", "ledoit_wolf", 0.0, 0.3])
def test_precision_inverts_the_shrunk_covariance(shrinkage):
    rng = np.random.default_rng(7)
    x = correlated(rng, 400, 10, offset=1.0)
    s = stats.update(stats.init(10), x)
    est = stats.estimate(s, shrinkage=shrinkage)
    cov = np.cov(np.asarray(x, np.float64).T)
    rho = float(est.shrinkage)
    assert 0.0 <= rho <= 1.0
    if not isinstance(shrinkage, str):
        assert rho == pytest.approx(shrinkage)
    shrunk = (1 - rho) * cov + rho * np.trace(cov) / 10 * np.eye(10)
    np.testing.assert_allclose(est.chol @ est.chol.T, shrunk, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(est.precision, np.linalg.inv(shrunk), rtol=1e-3, atol=1e-4 * np.abs(est.precision).max())
    np.testing.assert_allclose(est.condition, np.linalg.cond(shrunk), rtol=1e-3)
    assert np.allclose(est.precision, est.precision.T)


def test_bad_shrinkage_is_a_usage_error():
    for bad in ("banana", 1.5, "-0.1"):
        with pytest.raises(UsageError):
            stats.check_shrinkage(bad)
    assert stats.check_shrinkage("Ledoit-Wolf") == "ledoit_wolf"
    assert stats.check_shrinkage("0.25") == 0.25


# ------------------------------------------------------------------------------------------ views


def test_views_match_numpy_loops():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(5, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(views.apply_view("pixel", a), a.reshape(30, 3))
    np.testing.assert_allclose(views.apply_view("pooled", a), a.mean((0, 1))[None], rtol=1e-6)
    patches = views.apply_view("patch3", a)
    expected = np.array([a[i:i + 3, j:j + 3].reshape(-1) for i in range(3) for j in range(4)])
    np.testing.assert_array_equal(patches, expected)
    v = views.parse_view("patch3")
    assert (v.count(a.shape), v.dim(a.shape)) == (12, 27) == patches.shape
    assert views.parse_view("patch1")(a).shape == (30, 3)
    flat = np.arange(4.0)
    np.testing.assert_array_equal(views.apply_view("pixel", flat), flat[None])
    batched = jax.jit(jax.vmap(views.parse_view("patch3")))(np.stack([a, a + 1]))
    np.testing.assert_allclose(batched[1], expected + 1)


@pytest.mark.parametrize("name", ["pixels", "patch2", "patch", "patch-3", ""])
def test_bad_view_names_are_usage_errors(name):
    with pytest.raises(UsageError, match="view"):
        views.parse_view(name)


def test_patch_view_needs_a_big_enough_spatial_layer():
    with pytest.raises(UsageError, match="patch5"):
        views.apply_view("patch5", np.zeros((4, 4, 2)))
    with pytest.raises(UsageError, match="patch3"):
        views.parse_view("patch3").check((1000,), "logits")
