"""Redirected ReLU6: same forward values; gradients reach units that start dead."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import objectives, render
from jaxviz.models.activations import redirected_relu6


def test_redirected_relu6_gradient_rule():
    x = jnp.array([-2.0, -2.0, 3.0, 7.0, 7.0])
    g = jnp.array([1.0, -1.0, 0.5, -1.0, 1.0])
    _, vjp = jax.vjp(redirected_relu6, x)
    np.testing.assert_array_equal(vjp(g)[0], np.array([1.0, 0.0, 0.5, -1.0, 0.0]))
    np.testing.assert_array_equal(redirected_relu6(x), jax.nn.relu6(x))


def test_dead_unit_gets_gradient_only_when_redirected(lite0):
    x = jnp.zeros((64, 64, 3))
    stem = lite0.features(lite0.params, x, ["stem"])["stem"]
    dead = int(np.flatnonzero(np.asarray(stem.max(axis=(0, 1))) == 0)[0])

    def value(image, redirect):
        return lite0.features(lite0.params, image, ["stem"], redirect=redirect)["stem"][..., dead].mean()

    assert float(jnp.abs(jax.grad(value)(x, False)).sum()) == 0.0
    assert float(jnp.abs(jax.grad(value)(x, True)).sum()) > 0.0
    np.testing.assert_array_equal(
        lite0.features(lite0.params, x, ["stem"], redirect=True)["stem"], stem)


def test_render_with_redirect_steps_runs(lite0):
    target = [objectives.parse_target("blocks.3.expand:5", lite0.layers)]
    config = render.RenderConfig(size=64, steps=4, chunk_steps=4, redirect_steps=2)
    result = render.render(lite0, target, config=config)
    assert np.all(np.isfinite(result.history))


def test_redirected_steps_end_exactly_at_redirect_steps(lite0):
    # chunk_steps 4 > redirect_steps 2: the chunk must be cut at step 2, not redirected throughout
    target = [objectives.parse_target("blocks.3.expand:5", lite0.layers)]

    def history(redirect_steps):
        config = render.RenderConfig(size=64, steps=4, chunk_steps=4, redirect_steps=redirect_steps, param="pixel")
        return render.render(lite0, target, config=config).history[0]

    none, two, four = history(0), history(2), history(4)
    # history[i] is the objective before update i: the runs agree until their updates differ
    np.testing.assert_array_equal(two[:3], four[:3])
    assert two[3] != four[3]
    np.testing.assert_array_equal(none[:1], two[:1])
    assert none[1] != two[1]
