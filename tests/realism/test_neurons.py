"""Known-answer tests of jaxviz.realism.neurons (the deep-neuron stick's metrics)."""

import numpy as np
import pytest

from jaxviz.common.errors import UsageError
from jaxviz.realism import neurons as nm


def _bumps(centres, size=28, sigma=1.2):
    y, x = np.mgrid[:size, :size]
    return sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2)) for cy, cx in centres)


def test_copy_count_one_vs_five_separated_bumps():
    one = _bumps([(14, 14)])
    five = _bumps([(4, 4), (4, 22), (14, 14), (22, 4), (22, 22)])
    assert nm.copy_count(np.stack([one, five])).tolist() == [1.0, 5.0]


def test_copy_count_threshold_is_half_the_maximum():
    # a weak bump at 0.4 of the maximum is not a copy; at 0.6 it is
    weak = _bumps([(6, 6)]) + 0.4 * _bumps([(20, 20)])
    strong = _bumps([(6, 6)]) + 0.6 * _bumps([(20, 20)])
    assert nm.copy_count(np.stack([weak, strong])).tolist() == [1.0, 2.0]
    assert nm.copy_count(weak[None], rel=0.3).tolist() == [2.0]


def test_copy_count_diagonal_neighbours_are_one_copy_and_silent_maps_zero():
    m = np.zeros((1, 5, 5))
    m[0, 1, 1] = m[0, 2, 2] = 1.0     # touching diagonally: one blob (8-connectivity)
    m[0, 4, 0] = 0.9                  # separate
    assert nm.copy_count(m).tolist() == [2.0]
    assert nm.copy_count(-np.ones((2, 4, 4))).tolist() == [0.0, 0.0]


def test_copy_count_matches_a_flood_fill_reference():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(20, 9, 9))

    def flood(m):
        on = m >= 0.5 * m.max()
        seen = np.zeros_like(on)
        count = 0
        for i in range(9):
            for j in range(9):
                if on[i, j] and not seen[i, j]:
                    count += 1
                    stack = [(i, j)]
                    while stack:
                        a, b = stack.pop()
                        if 0 <= a < 9 and 0 <= b < 9 and on[a, b] and not seen[a, b]:
                            seen[a, b] = True
                            stack += [(a + da, b + db) for da in (-1, 0, 1) for db in (-1, 0, 1)]
        return count

    assert nm.copy_count(maps).tolist() == [float(flood(m)) for m in maps]


def test_copy_count_refuses_bad_input():
    with pytest.raises(UsageError):
        nm.copy_count(np.zeros((3, 3)))
    with pytest.raises(UsageError):
        nm.copy_count(np.zeros((1, 3, 3)), rel=0.0)


def test_top_photos_order_and_ties():
    a = np.array([[0.1, 5.0], [0.9, 5.0], [0.5, 1.0], [0.9, 7.0]])
    top = nm.top_photos(a, [0, 1], 3)
    assert top.tolist() == [[1, 3, 2], [3, 0, 1]]
    with pytest.raises(UsageError):
        nm.top_photos(a, [2], 1)
    with pytest.raises(UsageError):
        nm.top_photos(a, [0], 5)


def test_plausibility_own_reference_ranks_first_and_matches_numpy():
    rng = np.random.default_rng(1)
    photos = rng.normal(size=(30, 16))
    examples = np.array([[0, 1, 2], [10, 11, 12], [20, 21, 22]])
    ids = np.array([7, 8, 9])
    # a visualization equal to reference 8's mean feature ranks it first
    vis = photos[examples[1]].mean(0, keepdims=True)
    out = nm.plausibility(vis, [8], photos, examples, ids)
    assert out["rank"].tolist() == [0.0]

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    expected = np.mean([cos(vis[0], photos[i]) for i in examples[1]])
    np.testing.assert_allclose(out["cos_own"], [expected], rtol=1e-12)
    # scored against another reference, it ranks behind the one it equals
    other = nm.plausibility(vis, [7], photos, examples, ids)
    assert other["rank"][0] >= 1
    assert np.isnan(nm.plausibility(vis, [5], photos, examples, ids)["rank"][0])


def test_plausibility_shared_examples_and_bad_ids():
    photos = np.eye(4)
    examples = np.array([[0, 1], [1, 2]])       # photo 1 is an example of both references
    out = nm.plausibility(photos[[0]], [0], photos, examples, [0, 1])
    np.testing.assert_allclose(out["cos_own"], [0.5])
    assert out["rank"].tolist() == [0.0]
    with pytest.raises(UsageError):
        nm.plausibility(photos[[0]], [0], photos, examples, [1, 1])


def test_activation_percent():
    np.testing.assert_allclose(nm.activation_percent([1.0, 3.0, 2.0], [2.0, 3.0, 0.0]), [50.0, 100.0, np.nan])


@pytest.fixture(scope="module")
def lite0():
    import jaxviz

    return jaxviz.load_model("efficientnet_lite0")


@pytest.mark.slow  # 25-50 s: make test stays under 10 minutes from a clean clone
def test_channel_maps_mean_is_the_channel_objective(lite0):
    import jax

    from jaxviz import objectives
    from jaxviz.realism import diagnostics as metrics
    from jaxviz.render import step

    rng = np.random.default_rng(2)
    images = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    targets = [("blocks.12", 5), ("head", 100)]
    maps = nm.channel_maps(lite0, images, targets, side=128)
    assert maps.shape == (2, 4, 4)
    big = metrics.resize_images(images, 128)
    for i, (layer, c) in enumerate(targets):
        feats = lite0.features(lite0.params, step.model_input(lite0, jax.numpy.asarray(big[i:i + 1])), (layer,))
        value = float(objectives.channel(layer, c)(feats))
        np.testing.assert_allclose(maps[i].mean(), value, rtol=1e-4, atol=1e-5)
    counts = nm.copies(lite0, images, targets, side=128)
    np.testing.assert_array_equal(counts, nm.copy_count(maps))
    with pytest.raises(UsageError):
        nm.channel_maps(lite0, images, [("pool", 0), ("head", 1)])
    with pytest.raises(UsageError):
        nm.channel_maps(lite0, images, [("head", 5000), ("head", 1)])


def test_photo_activations_rank_a_tiled_pattern(lite0):
    # the photo whose content is the channel's own top example ranks first for that channel
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(5, 64, 64, 3)).astype(np.float32)
    images[2] = 0.5
    acts = nm.photo_activations(lite0, images, ["head"])
    assert acts["head"].shape == (5, 1280)
    best = int(np.argmax(acts["head"][2] - acts["head"][[0, 1, 3, 4]].max(0)))
    assert nm.top_photos(acts["head"], [best], 1)[0, 0] == 2


def test_channel_maps_of_layers_at_different_resolutions(lite0):
    # blocks.10 (stride 16) and blocks.13 (stride 32) at 64 px: 4x4 and 2x2 maps; np.stack used to fail here
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 64, 64, 3)).astype(np.float32)
    targets = [("blocks.10", 3), ("blocks.13", 5)]
    maps = nm.channel_maps(lite0, images, targets)
    assert [m.shape for m in maps] == [(4, 4), (2, 2)]
    from jaxviz.realism import diagnostics
    feats = diagnostics.run_features(lite0, images, ["blocks.10", "blocks.13"])
    np.testing.assert_allclose(maps[1], np.asarray(feats["blocks.13"][1, ..., 5], np.float64))
    counts = nm.copy_count(maps)
    assert counts.tolist() == [nm.copy_count(m[None])[0] for m in maps]
    same = nm.channel_maps(lite0, images, [("blocks.10", 3), ("blocks.10", 4)])
    assert isinstance(same, np.ndarray) and same.shape == (2, 4, 4)
