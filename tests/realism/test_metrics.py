"""jaxviz.realism and jaxviz.realism.metrics: known-answer cases and float64 numpy references."""

import os

import numpy as np
import pytest

from jaxviz import realism
from jaxviz.common.images import resize_center_crop, resize_center_crop01
from jaxviz.data import DataError
from jaxviz.realism import metrics as rm


def _rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------------ colour, spectrum


def test_colourfulness_grey_is_zero_and_hand_value():
    grey = np.full((2, 16, 16, 3), 0.37)
    np.testing.assert_allclose(rm.colourfulness(grey), [0.0, 0.0], atol=1e-9)
    # Half pure red, half pure blue. On 0..255: red pixels rg = 255, yb = 127.5; blue rg = 0, yb = −255.
    img = np.zeros((8, 8, 3))
    img[:4, :, 0] = 1.0
    img[4:, :, 2] = 1.0
    mu_rg, sd_rg = 127.5, 127.5
    mu_yb, sd_yb = (127.5 - 255.0) / 2, (127.5 + 255.0) / 2
    hand = np.sqrt(sd_rg ** 2 + sd_yb ** 2) + 0.3 * np.sqrt(mu_rg ** 2 + mu_yb ** 2)
    assert hand == pytest.approx(272.61, abs=0.01)
    np.testing.assert_allclose(rm.colourfulness(img), [hand], rtol=1e-12)
    # and a random image against a per-pixel loop
    x = _rng().uniform(size=(5, 4, 3))
    rg = [255 * (p[0] - p[1]) for p in x.reshape(-1, 3)]
    yb = [255 * ((p[0] + p[1]) / 2 - p[2]) for p in x.reshape(-1, 3)]
    ref = np.hypot(np.std(rg), np.std(yb)) + 0.3 * np.hypot(np.mean(rg), np.mean(yb))
    np.testing.assert_allclose(rm.colourfulness(x), [ref], rtol=1e-12)


def _power_law_noise(alpha, n, rng):
    """Grey noise whose power spectrum falls as f^−alpha (periodic, so no edge effects)."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    spectrum = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * np.where(f > 0, f, 1.0) ** (-alpha / 2)
    spectrum[0, 0] = 0.0
    img = np.real(np.fft.ifft2(spectrum))
    img = (img - img.min()) / (img.max() - img.min())
    return np.repeat(img[..., None], 3, axis=-1)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0, 3.0])
def test_spectrum_slope_of_power_law_noise(alpha):
    rng = _rng(int(alpha))
    images = np.stack([_power_law_noise(alpha, 128, rng) for _ in range(32)])  # one image: sd ≈ 0.1
    slopes = rm.spectrum_slope(images)
    assert abs(slopes.mean() + alpha) < 0.1, slopes
    assert np.isnan(rm.spectrum_slope(np.full((1, 64, 64, 3), 0.5))[0])  # flat image: no spectrum


# ------------------------------------------------------------------------------------ KID, FID


def _kid_loops(x, y):
    d = x.shape[1]
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_kid_matches_loops_and_separates_distributions():
    rng = _rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.3
    np.testing.assert_allclose(rm.kid(x, y)["kid"], _kid_loops(x, y), rtol=1e-10)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same = rm.kid(a, b)["kid"]
    shifted = rm.kid(a, b + 1.0)["kid"]
    assert abs(same) < 0.02 and shifted > 0.3
    # subsets: an unbiased estimate of the same quantity, with a spread
    sub = rm.kid(a, b + 1.0, subset_size=100, subsets=50)
    assert sub["kid"] == pytest.approx(shifted, rel=0.1) and sub["kid_std"] > 0
    assert np.isnan(rm.kid(a, b)["kid_std"])


def test_frechet_distance_closed_forms():
    from scipy.linalg import sqrtm

    rng = _rng(2)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    a, b = rng.uniform(0.5, 2, size=4), rng.uniform(0.5, 2, size=4)
    diag = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert rm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(diag, rel=1e-10)
    m1, m2 = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(4), m2 @ m2.T + 0.1 * np.eye(4)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert rm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    assert rm.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_on_samples_and_pca_fallback():
    rng = _rng(3)
    x = rng.normal(size=(20000, 3)) * [1.0, 2.0, 0.5]
    y = rng.normal(size=(20000, 3)) + [1.0, 0.0, 0.0]
    closed = 1.0 + (1 - 1) ** 2 + (2 - 1) ** 2 + (0.5 - 1) ** 2
    out = rm.fid(x, y)
    assert out["fid_space"] == "full" and out["fid_dims"] == 3
    assert out["fid"] == pytest.approx(closed, rel=0.05)
    small = rng.normal(size=(10, 50))
    few = rm.fid(small, small)
    assert few["fid_space"] == "pca-of-reference" and few["fid_dims"] == 9
    assert few["fid"] == pytest.approx(0.0, abs=1e-8)
    assert rm.fid(small + 3.0, small)["fid"] > 1.0


# ------------------------------------------------------------------------------------ plausibility


def test_plausibility_against_numpy():
    rng = _rng(4)
    ref = rng.normal(size=(12, 6))
    ref_classes = np.repeat([3, 5, 7, 9], 3)
    q = rng.normal(size=(5, 6))
    classes = np.array([3, 5, 7, 9, 4])  # class 4 has no reference photo
    out = rm.plausibility(q, classes, ref, ref_classes)
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    for i, c in enumerate(classes[:4]):
        assert out["cos_own"][i] == pytest.approx(np.mean([cos(q[i], r) for r in ref[ref_classes == c]]))
        sims = {k: cos(q[i], ref[ref_classes == k].mean(0)) for k in (3, 5, 7, 9)}
        assert out["rank"][i] == sum(s > sims[c] for s in sims.values())
    assert np.isnan(out["cos_own"][4]) and np.isnan(out["rank"][4])
    # a query equal to its class mean ranks first
    means = np.stack([ref[ref_classes == k].mean(0) for k in (3, 5, 7, 9)])
    np.testing.assert_array_equal(rm.plausibility(means, [3, 5, 7, 9], ref, ref_classes)["rank"], 0)


@pytest.fixture(scope="module")
def lite1_small():
    return realism.load_judge("efficientnet_lite1", resolution=96)


def test_photos_rank_their_own_class_first(lite1_small, photos):
    """10 embedded photos as 10 classes: a different crop of each is closest to its own photo."""
    names = sorted(photos)
    centre = np.stack([resize_center_crop(photos[n], 96) for n in names]).astype(np.float32) / 255
    other = np.stack([realism.second_view(photos[n], 96) for n in names]).astype(np.float32) / 255
    classes = np.arange(10)
    ref = realism.reference_from_images(lite1_small, centre, classes)
    assert ref.features.shape == (10, 1280)
    out = rm.plausibility(realism.judge_features(lite1_small, other).pool, classes, ref.features, ref.classes)
    np.testing.assert_array_equal(out["rank"], 0)
    # a shuffled labelling is not plausible: most images then rank below first
    wrong = rm.plausibility(realism.judge_features(lite1_small, other).pool, np.roll(classes, 1),
                            ref.features, ref.classes)
    assert np.mean(wrong["rank"] > 0) >= 0.8 and np.all(wrong["cos_own"] < out["cos_own"].max())


# ------------------------------------------------------------------------------------ blobs


def _bump(n=15):
    yy, xx = np.mgrid[:n, :n]
    return np.exp(-((yy - n // 2) ** 2 + (xx - n // 2) ** 2) / 4.0)


def test_blobs_one_vs_tiled_three_by_three():
    one, tiled = _bump(), np.tile(_bump(), (3, 3))
    out = rm.blobs(tiled[None])
    assert out["count"][0] == 9 and out["top_share"][0] == pytest.approx(1 / 9, rel=1e-9)
    assert rm.blobs(one[None])["top_share"][0] == 1.0
    # diagonal neighbours are one blob (8-connectivity); below half the maximum is no blob
    m = np.zeros((1, 5, 5))
    m[0, 1, 1] = m[0, 2, 2] = 1.0
    m[0, 4, 0] = 0.4
    m[0, 0, 4] = 0.6
    out = rm.blobs(m)
    assert out["count"][0] == 2 and out["top_share"][0] == pytest.approx(2.0 / 2.6)
    out = rm.blobs(-np.ones((1, 4, 4)))
    assert out["count"][0] == 0 and np.isnan(out["top_share"][0])


def _toy_judge(resolution=32):
    """A judge whose class-0 map is the redness of 4×4 cells, built from a user linen module."""
    import flax.linen as nn
    import jax.numpy as jnp

    import jaxviz

    class Head(nn.Module):
        def __call__(self, x):
            red = nn.relu(x[..., :1] - 0.5 * (x[..., 1:2] + x[..., 2:]))
            return nn.avg_pool(jnp.concatenate([red, 0 * red], -1), (4, 4), strides=(4, 4))

    class Pool(nn.Module):
        def __call__(self, h):
            return h.mean(axis=(1, 2))

    class Toy(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(6, name="fc")(Pool(name="pool")(Head(name="head")(x)))

    variables = {"params": {"fc": {"kernel": jnp.eye(2, 6), "bias": jnp.zeros(6)}}}
    model = jaxviz.from_linen(Toy(), variables, (resolution, resolution, 3), name="toy")
    return realism.Judge(model, resolution, kernel_path=("params", "fc", "kernel"), logits_layer="fc")


def test_blobs_end_to_end_on_a_class_map():
    judge = _toy_judge()
    single = np.full((64, 64, 3), 0.5, np.float32)
    single[20:44, 20:44] = [1.0, 0.0, 0.0]
    tiled = np.tile(single, (3, 3, 1))  # the same picture drawn nine times, resized back by the judge
    images = np.stack([single, resize_center_crop01(tiled, 64)])
    maps = realism.class_maps(judge, images, [0, 0])
    assert maps.shape == (2, 16, 16)  # 2 × 32 px input, 4 px cells
    out = rm.blobs(maps)
    np.testing.assert_array_equal(out["count"], [1, 9])
    assert out["top_share"][0] == 1.0 and out["top_share"][1] < 0.2


# ------------------------------------------------------------------------------------ real photos, score


def _write_folder(root, n):
    from PIL import Image

    rng = _rng(5)
    os.makedirs(root, exist_ok=True)
    colours = rng.uniform(size=(n, 3))
    for i, c in enumerate(colours):
        img = np.zeros((40, 60, 3), np.uint8) + (c * 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, f"n{i:03d}_class.png"))
    with open(os.path.join(root, "README.md"), "w") as f:
        f.write("not an image")
    return colours


def test_load_real_and_cached_reference(tmp_path):
    colours = _write_folder(str(tmp_path / "real"), 6)
    real = str(tmp_path / "real")
    got = realism.load_real([4, 1], size=16, real=real)
    assert got.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(got[:, 0, 0] / 255.0, colours[[4, 1]], atol=1 / 255)
    with pytest.raises(DataError):
        realism.load_real([6], size=16, real=real)
    with pytest.raises(DataError):
        realism.load_real([0], size=16, real=str(tmp_path / "missing"))
    judge = _toy_judge()
    cache = str(tmp_path / "cache")
    ref = realism.reference_features(judge, real, classes=range(6), cache_dir=cache)
    assert ref.features.shape == (6, 2) and len(os.listdir(cache)) == 1
    # redness of a flat colour, as the toy head computes it
    red = np.maximum(colours[:, 0] - 0.5 * (colours[:, 1] + colours[:, 2]), 0)
    np.testing.assert_allclose(ref.features[:, 0], red, atol=2 / 255)
    realism.scoring._MEMORY.clear()
    again = realism.reference_features(judge, real, classes=range(6), cache_dir=cache)
    np.testing.assert_array_equal(again.features, ref.features)


def test_score_records_and_summary(tmp_path):
    _write_folder(str(tmp_path / "real"), 6)
    judge = _toy_judge()
    images = realism.load_real(range(6), size=48, real=str(tmp_path / "real"), view="second") / 255.0
    s = realism.score(images, np.arange(6), judges=[judge], real=str(tmp_path / "real"))
    for key in ("colourfulness", "slope", "toy/top1", "toy/top5", "toy/p_target", "toy/cos_own", "toy/rank",
                "toy/blobs", "toy/top_blob_share"):
        assert s.per_image[key].shape == (6,), key
    assert s.per_set["n"] == 6 and s.per_set["toy/fid_space"] == "full" and np.isfinite(s.per_set["toy/kid"])
    assert np.all((s.per_image["toy/p_target"] > 0) & (s.per_image["toy/p_target"] < 1))
    summary = realism.summarize(s)
    assert summary["colourfulness"]["n"] == 6 and "median" in summary["toy/rank"]


@pytest.mark.skipif(realism.default_real() is None, reason="the real-photo folder is not on this machine")
def test_real_photos_reference_row(lite1_small):
    """Second views of real photos rank their class near the top among the first 50 classes."""
    ref = realism.reference_features(lite1_small, classes=range(50))
    s = realism.score_real(range(8), size=96, judges=[lite1_small], reference={lite1_small.name: ref})
    assert np.median(s.per_image[f"{lite1_small.name}/rank"]) <= 2
