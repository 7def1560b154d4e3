"""Redirected ReLU6: same forward values; gradients reach units that start dead."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxviz import objectives, recipes, registry, render
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


def test_redirect_steps_revive_a_target_that_starts_dead(lite0):
    # a stem unit that is 0 on the grey start image: its plain gradient is exactly 0, so only
    # redirected steps can move the image (and then the plain steps take over)
    grey = jnp.full((64, 64, 3), 0.5)
    stem = lite0.features(lite0.params, lite0.normalize(grey * 255.0), ["stem"])["stem"]
    dead = np.flatnonzero(np.asarray(stem.max(axis=(0, 1))) == 0)
    targets = [objectives.channel("stem", int(c)) for c in dead]

    def run(redirect_steps):
        config = render.RenderConfig(size=64, steps=12, chunk_steps=4, redirect_steps=redirect_steps)
        recipe = registry.edit_recipe(recipes.get("jaxviz", size=64), parameterization="pixel", transform="none",
                                      learning_rate=0.2)
        return render.render_images(lite0, targets, config=config, devices=jax.devices()[:2], recipe=recipe)

    plain, redirected = run(0), run(8)
    assert np.all(plain.history == 0) and np.all(plain.activation == 0)  # no gradient ever: stuck at 0
    assert redirected.activation.max() > 1.0  # at least one unit was revived (seen: stem:14 reaches 3.1)


def test_redirected_steps_end_exactly_at_redirect_steps(lite0):
    # chunk_steps 4 > redirect_steps 2: the chunk must be cut at step 2, not redirected throughout
    target = [objectives.parse_target("blocks.3.expand:5", lite0.layers)]

    def history(redirect_steps):
        config = render.RenderConfig(size=64, steps=4, chunk_steps=4, redirect_steps=redirect_steps)
        recipe = registry.edit_recipe(recipes.get("jaxviz", size=64), parameterization="pixel")
        return render.render_images(lite0, target, config=config, recipe=recipe).history[0]

    none, two, four = history(0), history(2), history(4)
    # history[i] is the objective before update i: the runs agree until their updates differ
    np.testing.assert_array_equal(two[:3], four[:3])
    assert two[3] != four[3]
    np.testing.assert_array_equal(none[:1], two[:1])
    assert none[1] != two[1]
