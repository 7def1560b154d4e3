"""jaxviz.realism.diagnostics: pure functions against float64 numpy references, model wrappers on the real Lite0."""

import numpy as np
import pytest

from jaxviz.realism import diagnostics as metrics


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_topk_hits_and_probability_match_numpy():
    rng = _rng()
    logits = rng.normal(size=(20, 50))
    classes = rng.integers(0, 50, size=20)
    order = np.argsort(-logits, axis=1)
    ref1 = order[:, 0] == classes
    ref5 = np.array([c in o[:5] for c, o in zip(classes, order)])
    np.testing.assert_array_equal(metrics.topk_hits(logits, classes, 1), ref1)
    np.testing.assert_array_equal(metrics.topk_hits(logits, classes, 5), ref5)
    e = np.exp(logits - logits.max(1, keepdims=True))
    ref_p = (e / e.sum(1, keepdims=True))[np.arange(20), classes]
    np.testing.assert_allclose(metrics.class_probability(logits, classes), ref_p, rtol=1e-12)
    # a class forced to the top is a top-1 hit
    logits[3, classes[3]] = 100.0
    assert metrics.topk_hits(logits, classes, 1)[3]
    logits[4, classes[4]] = -100.0
    assert not metrics.topk_hits(logits, classes, 5)[4]


def test_mean_d2_matches_explicit_loop():
    rng = _rng(1)
    dim = 6
    a = rng.normal(size=(dim, dim))
    cov = a @ a.T + dim * np.eye(dim)
    prec = np.linalg.inv(cov)
    mu = rng.normal(size=dim)
    x = rng.normal(size=(3, 7, dim)).astype(np.float32)
    ref = np.array([np.mean([(v - mu) @ prec @ (v - mu) for v in img.astype(np.float64)]) for img in x])
    np.testing.assert_allclose(metrics.mean_d2(x, mu, prec), ref, rtol=1e-10)
    assert metrics.mean_d2(mu[None, None], mu, prec)[0] == 0.0


def test_normalized_entropy_extremes_and_reference():
    uniform = np.ones((1, 4, 4))
    point = np.zeros((1, 4, 4))
    point[0, 1, 2] = 3.0
    np.testing.assert_allclose(metrics.normalized_entropy(uniform), [1.0], rtol=1e-12)
    np.testing.assert_allclose(metrics.normalized_entropy(point), [0.0], atol=1e-12)
    assert np.isnan(metrics.normalized_entropy(np.zeros((1, 3, 3)))[0])
    rng = _rng(2)
    m = rng.uniform(size=(2, 5, 3))
    m[0, 0, 0] = -1.0  # clipped to 0
    ref = []
    for mm in np.clip(m, 0, None):
        p = mm.ravel() / mm.sum()
        p = p[p > 0]
        ref.append(-(p * np.log(p)).sum() / np.log(15))
    np.testing.assert_allclose(metrics.normalized_entropy(m), ref, rtol=1e-12)


def test_count_peaks():
    m = np.zeros((3, 7, 7))
    m[0, 1, 1] = 1.0
    m[0, 5, 5] = 0.8
    m[0, 1, 5] = 0.3  # below half the maximum
    m[1, 3, 3] = 1.0
    m[1, 3, 4] = 1.0  # plateau: neither is strictly larger
    m[1, 0, 0] = 2.0  # corner peak
    # row 2: all zero
    np.testing.assert_array_equal(metrics.count_peaks(m, rel=0.5), [2, 1, 0])
    np.testing.assert_array_equal(metrics.count_peaks(m, rel=0.2), [3, 1, 0])


def test_class_activation_maps_average_to_logit():
    rng = _rng(3)
    head = np.abs(rng.normal(size=(2, 3, 3, 5)))
    kernel = rng.normal(size=(5, 4))
    classes = [1, 3]
    cam = metrics.class_activation_maps(head, kernel, classes)
    raw = np.stack([head[t] @ kernel[:, c] for t, c in enumerate(classes)])
    np.testing.assert_allclose(cam, np.maximum(raw, 0), rtol=1e-12)


def test_activation_percent_and_summary():
    np.testing.assert_allclose(metrics.activation_percent([5.0, 3.0, 1.0], [10.0, 0.0, -2.0])[0], 50.0)
    assert np.isnan(metrics.activation_percent([3.0], [0.0])[0])
    s = metrics.summarize([1.0, 2.0, 3.0, np.nan])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["std"] == pytest.approx(1.0)
    assert metrics.image_steps_per_second(8, 100, 4.0) == pytest.approx(200.0)


def test_paired_wilcoxon():
    from scipy.stats import wilcoxon

    rng = _rng(4)
    a = rng.normal(size=30)
    b = a - 1.0 + 0.1 * rng.normal(size=30)
    out = metrics.paired_wilcoxon(a, b)
    assert out["n"] == 30 and out["p"] == pytest.approx(wilcoxon(a, b).pvalue) and out["p"] < 1e-4
    assert out["median_diff"] > 0.5
    a[0] = np.nan
    assert metrics.paired_wilcoxon(a, b)["n"] == 29
    assert metrics.paired_wilcoxon(b, b)["p"] == 1.0
    with pytest.raises(ValueError):
        metrics.paired_wilcoxon(a, b[:3])


def test_model_metrics_on_photos(lite0, photos):
    """The wrappers on real images: a cat photo transfers as a cat; D² of training-like crops is finite."""
    import jax.numpy as jnp

    from jaxviz import stats as stats_lib
    from jaxviz.common.images import resize_center_crop

    cat = resize_center_crop(photos["chelsea"], 128).astype(np.float32)[None] / 255.0
    coffee = resize_center_crop(photos["coffee"], 128).astype(np.float32)[None] / 255.0
    images = np.concatenate([cat, coffee])
    res = metrics.transferability(lite0, images, [281, 967])  # resized to 224 for Lite0
    assert res["top5"].tolist() == [1.0, 1.0]
    assert res["prob"][1] > 0.3

    feats = metrics.run_features(lite0, images, ["blocks.3"])["blocks.3"]
    samples = feats.reshape(-1, feats.shape[-1]).astype(np.float64)
    mu = samples.mean(0)
    cov = np.cov(samples, rowvar=False) + 1e-3 * np.eye(samples.shape[1])
    nat = metrics.heldout_naturalness(lite0, images, {"blocks.3": (mu, np.linalg.inv(cov))})
    ref = metrics.mean_d2(feats.reshape(2, -1, feats.shape[-1]), mu, np.linalg.inv(cov)) / feats.shape[-1]
    np.testing.assert_allclose(nat["blocks.3"], ref, rtol=1e-10)
    np.testing.assert_allclose(nat["mean"], ref, rtol=1e-10)
    assert np.all(nat["mean"] < 2.0)  # fitted on these very positions: ≈ 1 on average
    noise = np.random.default_rng(0).uniform(size=(1, 128, 128, 3)).astype(np.float32)
    assert metrics.heldout_naturalness(lite0, noise, {"blocks.3": (mu, np.linalg.inv(cov))})["mean"][0] > nat["mean"].max()
    del jnp, stats_lib

    rep = metrics.repetition(lite0, images, [("logits", 281), ("blocks.13", 5)])
    assert rep["maps"].shape == (2, 4, 4)
    assert np.all((rep["entropy"] >= 0) & (rep["entropy"] <= 1))
    assert np.all(rep["peaks"] >= 1)


def test_resize_images_is_the_shared_pil_resizer():
    """Float images resize like the uint8 photo path (one filter for the project), centre-cropped."""
    from PIL import Image, ImageFilter

    from jaxviz.common.images import resize_center_crop

    rng = _rng(5)
    # smooth, mid-range images: Pillow's 8-bit bicubic clips between its two passes, which only
    # matters where the filter overshoots (hard noise at 0 or 255), not on photo-like content
    coarse = rng.uniform(40, 215, size=(3, 6, 8, 3))
    photo = np.stack([np.stack([np.kron(c[..., k], np.ones((7, 8)))[:40, :60] for k in range(3)], -1)
                      for c in coarse])
    photo = np.round(np.stack([np.asarray(Image.fromarray(p.astype(np.uint8)).filter(ImageFilter.GaussianBlur(3)))
                               for p in photo])).astype(np.uint8)
    ref = np.stack([resize_center_crop(p, 24) for p in photo]).astype(np.float64) / 255
    got = metrics.resize_images(photo / 255.0, 24)
    assert got.shape == (3, 24, 24, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1.01 / 255)
    same = rng.uniform(size=(2, 24, 24, 3))
    np.testing.assert_array_equal(metrics.resize_images(same, 24), same.astype(np.float32))


def test_run_features_pads_the_last_batch():
    """9 images in batches of 4 (last one padded) give each image's own features."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import jaxviz

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="fc")(nn.Conv(4, (3, 3), name="conv")(x).mean(axis=(1, 2)))

    variables = Net().init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    model = jaxviz.from_linen(Net(), variables, (8, 8, 3))
    images = _rng(6).uniform(size=(9, 8, 8, 3)).astype(np.float32)
    got = metrics.run_features(model, images, ["output"], batch_size=4)["output"]
    one = np.concatenate([metrics.run_features(model, im[None], ["output"], batch_size=1)["output"]
                          for im in images])
    assert got.shape == (9, 3)
    np.testing.assert_allclose(got, one, rtol=1e-5, atol=1e-6)
