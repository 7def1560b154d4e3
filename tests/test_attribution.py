"""Saliency rules (gradient, deconvnet, guided): a float64 numpy reference on a toy net, and Lite0 on chelsea."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxviz import attribution, objectives
from jaxviz.common.errors import UsageError
from jaxviz.models.activations import BACKWARD_RULES
from jaxviz.models.model import Model

H = W = 2  # toy input 2x2x3 -> 12 numbers


def _toy_params():
    rng = np.random.default_rng(0)
    # scaled so the pre-activations spread over [-8, 10]: units below 0, inside (0, 6) and above 6
    return {"w1": rng.normal(0, 2.5, (12, 6)), "b1": rng.normal(1, 2, 6),
            "w2": rng.normal(0, 1.5, (6, 5)), "b2": rng.normal(1, 2, 5),
            "w3": rng.normal(0, 1, (5, 4))}


def _toy_model(params) -> Model:
    """Two ReLU6 layers and a linear readout; the activation is swappable like Lite0's."""
    def make(act):
        def apply(p, x, names):
            h1 = act(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
            h2 = act(h1 @ p["w2"] + p["b2"])
            out = {"hidden1": h1, "hidden2": h2, "logits": h2 @ p["w3"]}
            return out if names is None else {n: out[n] for n in names}
        return apply

    f32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    return Model(name="toy", params=f32, layers={"hidden1": (6,), "hidden2": (5,), "logits": (4,)},
                 apply=make(BACKWARD_RULES["gradient"]), normalize=lambda x: x / 255.0 * 4.0 - 2.0,
                 backward_rules={r: make(f) for r, f in BACKWARD_RULES.items() if r != "gradient"})


def _reference(params, image, target, rule):
    """d logit[target] / d image by hand, in float64, with the rule applied at each ReLU6."""
    x = image.reshape(-1).astype(np.float64) * 4.0 - 2.0  # the toy's normalize, in [0, 1] units
    pre1 = x @ params["w1"] + params["b1"]
    h1 = np.clip(pre1, 0, 6)
    pre2 = h1 @ params["w2"] + params["b2"]

    def through(g, pre):
        active = (pre > 0) & (pre < 6)
        if rule == "gradient":
            return g * active
        if rule == "deconvnet":
            return np.maximum(g, 0.0)
        return g * active * (g > 0)  # guided

    g = params["w3"][:, target]
    g = params["w2"] @ through(g, pre2)
    g = params["w1"] @ through(g, pre1)
    return (g * 4.0).reshape(H, W, 3)  # chain rule through normalize (d x / d image = 4)


@pytest.mark.parametrize("rule", attribution.RULES)
def test_rules_match_hand_computed_reference(rule):
    params = _toy_params()
    model = _toy_model(params)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (3, H, W, 3))
    targets = [objectives.class_logit(t) for t in range(4)]
    got = attribution.saliency(model, images, targets, rule=rule)
    assert got.shape == (3, 4, H, W, 3)
    for i in range(3):
        pre1 = (images[i].reshape(-1) * 4 - 2) @ params["w1"] + params["b1"]
        assert (pre1 < 0).any() and (pre1 > 6).any()  # the clipped regimes are exercised
        for t in range(4):
            np.testing.assert_allclose(got[i, t], _reference(params, images[i], t, rule), rtol=1e-4, atol=1e-4)


def test_rules_differ_and_keep_forward_values():
    params = _toy_params()
    model = _toy_model(params)
    image = np.random.default_rng(2).uniform(0, 1, (1, H, W, 3))
    grads = {r: attribution.saliency(model, image, [objectives.class_logit(0)], rule=r) for r in attribution.RULES}
    assert not np.allclose(grads["gradient"], grads["deconvnet"])
    assert not np.allclose(grads["gradient"], grads["guided"])
    x = jnp.asarray(image, jnp.float32)
    for rule in ("deconvnet", "guided"):
        np.testing.assert_array_equal(attribution.rule_apply(model, rule)(model.params, x, None)["logits"],
                                      model.apply(model.params, x, None)["logits"])


def test_mixed_target_kinds_keep_order():
    params = _toy_params()
    model = _toy_model(params)
    image = np.random.default_rng(3).uniform(0, 1, (2, H, W, 3))
    targets = [objectives.class_logit(2), objectives.channel("hidden1", 1), objectives.class_logit(0)]
    got = attribution.saliency(model, image, targets, rule="guided")
    for t, target in enumerate(targets):
        for i in range(2):
            one = attribution.input_gradient(model, model.params, image[i], target, rule="guided")
            np.testing.assert_allclose(got[i, t], one, rtol=1e-6, atol=1e-7)


def test_unknown_or_unsupported_rule_is_a_usage_error():
    params = _toy_params()
    plain = Model(name="plain", params=params, layers={"logits": (4,)},
                  apply=lambda p, x, names: {"logits": x.reshape(x.shape[0], -1) @ p["w1"][:, :4]})
    with pytest.raises(UsageError, match="unknown rule"):
        attribution.rule_apply(plain, "lrp")
    with pytest.raises(UsageError, match="swappable ReLUs"):
        attribution.rule_apply(plain, "guided")
    assert attribution.rule_apply(plain, "gradient") is plain.apply


def test_heat_and_overlay():
    g = np.zeros((1, 4, 4, 3), np.float32)
    g[0, 1, 2, 1] = -3.0
    h = attribution.heat(g)
    assert h.shape == (1, 4, 4) and h[0, 1, 2] == 3.0 and h.sum() == 3.0
    out = attribution.overlay(np.full((4, 4, 3), 0.5), h[0], quantile=1.0)
    assert out.dtype == np.uint8 and tuple(out[1, 2]) == (255, 255, 0) and out[0, 0, 1] < 60


# Hand-drawn box of the cat's face (eyes, nose, muzzle) in skimage's chelsea (451x300 px):
# x0, y0, x1, y1 in original pixels. The cat fills the frame, so the box is drawn tight
# (42 % of the frame) to leave room to fail.
CHELSEA_BOX = (110, 60, 360, 285)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_lite0_saliency_of_predicted_class_is_on_the_cat(lite0, rule):
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    photo = skdata.chelsea()
    scale = 224 / photo.shape[0]
    h, w = 224, round(photo.shape[1] * scale)  # the whole photo, no crop: the box stays valid
    image = np.asarray(Image.fromarray(photo).resize((w, h), Image.BICUBIC), np.float32) / 255.0
    logits = lite0.features(lite0.params, lite0.normalize(image[None] * 255.0), ["logits"])["logits"][0]
    predicted = int(np.argmax(logits))
    assert predicted in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    heat = attribution.heat(attribution.saliency(lite0, image[None], [objectives.class_logit(predicted)],
                                                 rule=rule)[0, 0])
    x0, y0, x1, y1 = (round(v * scale) for v in CHELSEA_BOX)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = True
    top = heat >= np.quantile(heat, 0.95)
    fraction = (top & inside).sum() / top.sum()
    assert fraction > 0.5, f"{rule}: only {fraction:.2f} of the top-5 % pixels on the cat's face"
