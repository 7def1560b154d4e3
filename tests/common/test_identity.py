"""Resume never mixes runs: custom optimizers and penalties carry a real identity."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxviz
from jaxviz import objectives
from jaxviz.common import identity
from jaxviz.common.checkpoint import CheckpointMismatchError
from jaxviz.common.errors import UsageError
from jaxviz.render import RenderConfig
from jaxviz.render import render_images as render
from tests.toys import TESTS, make_toy

CONFIG = RenderConfig(size=16, steps=4, chunk_steps=2, checkpoint_every=2, batch_size=1)
RECIPE = jaxviz.registry.edit_recipe(jaxviz.recipes.get("maco", size=16), parameterization="pixel", transform="none")
TARGET = [objectives.channel("conv2", 1)]


@pytest.fixture(scope="module")
def toy():
    return make_toy()


class _Killed(Exception):
    pass


def _kill_after_first_chunk(done, total, value):
    raise _Killed  # as if the process died after its first checkpoint


def _killed_run(toy, ckpt, optimizer, **kwargs):
    with pytest.raises(_Killed):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optimizer, checkpoint_dir=ckpt,
               progress=_kill_after_first_chunk, **kwargs)


def test_resume_with_another_custom_optimizer_is_refused(toy, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    _killed_run(toy, ckpt, optax.adam(0.05))
    with pytest.raises(CheckpointMismatchError, match="optimizer"):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optax.adam(0.5), checkpoint_dir=ckpt)
    with pytest.raises(CheckpointMismatchError):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=0.05),
               checkpoint_dir=ckpt)
    resumed = render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optax.adam(0.05), checkpoint_dir=ckpt)
    whole = render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optax.adam(0.05))
    np.testing.assert_array_equal(resumed.images, whole.images)  # the same optimizer resumes bit-identically


def test_resume_with_another_lambda_penalty_is_refused(toy, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    _killed_run(toy, ckpt, optax.adam(0.05), image_penalty=lambda image: 0.1 * jnp.mean(image))
    with pytest.raises(CheckpointMismatchError, match="image_penalty"):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, optimizer=optax.adam(0.05), checkpoint_dir=ckpt,
               image_penalty=lambda image: 0.3 * jnp.mean(image))


def test_what_cannot_be_identified_is_refused_in_one_line(toy, tmp_path):
    stream = iter(range(3))
    with pytest.raises(UsageError, match=r"image_penalty= cannot be identified") as info:
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, checkpoint_dir=str(tmp_path / "c"),
               image_penalty=lambda image: next(stream) * jnp.mean(image))
    assert "\n" not in str(info.value)


def test_digests_tell_hyperparameters_apart():
    d = identity.digest
    assert d(optax.adam(0.05)) == d(optax.adam(0.05))
    assert len({d(optax.adam(0.05)), d(optax.adam(0.5)), d(optax.sgd(0.05)), d(optax.adam(0.05, b1=0.8)),
                d(optax.chain(optax.clip(1.0), optax.adam(0.05))),
                d(optax.adam(optax.cosine_decay_schedule(0.05, 100))),
                d(optax.adam(optax.cosine_decay_schedule(0.05, 200)))}) == 7
    scale = 0.1
    first = d(lambda image: scale * jnp.mean(image))
    scale = 0.2  # noqa: F841 - the closure cell changed
    assert d(lambda image: scale * jnp.mean(image)) != first


def penalty_for_subprocess(image):
    return 0.25 * jnp.mean(jnp.abs(image))


_CHILD = """
import sys; sys.path.insert(0, {tests!r})
import optax
from jaxviz.common import identity
from tests.common.test_identity import penalty_for_subprocess
print(identity.digest(optax.chain(optax.clip(1.0), optax.adam(0.05))), identity.digest(penalty_for_subprocess))
"""


def test_digests_are_the_same_in_another_process():
    env = {**os.environ, "PYTHONPATH": os.path.dirname(TESTS)}
    out = subprocess.run([sys.executable, "-c", _CHILD.format(tests=TESTS)], capture_output=True, text=True,
                         env=env, cwd=os.path.dirname(TESTS), check=True).stdout.split()
    assert out == [identity.digest(optax.chain(optax.clip(1.0), optax.adam(0.05))),
                   identity.digest(penalty_for_subprocess)]


class _Scaled:
    """A user's transform class without a __repr__ (its repr is only an address)."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, image, *, key, step=None):
        return image * self.factor


def test_resume_with_another_custom_transform_object_is_refused(toy, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(_Killed):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, transform=_Scaled(1.0), checkpoint_dir=ckpt,
               progress=_kill_after_first_chunk)
    with pytest.raises(CheckpointMismatchError, match="transform"):
        render(toy, TARGET, config=CONFIG, recipe=RECIPE, transform=_Scaled(0.5), checkpoint_dir=ckpt)
