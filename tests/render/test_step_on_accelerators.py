"""The GPU/TPU code path (library convolutions, vmapped images, bfloat16), exercised on CPU.

CI has no accelerator; these tests force the path the backend would select there, so that a GPU
user never runs code no test has run.
"""

import jax
import numpy as np
import pytest

import jaxviz
from jaxviz import objectives, render
from jaxviz.render import step


@pytest.fixture(scope="module")
def lite0_xla():
    return jaxviz.load_model("efficientnet_lite0", impl="xla")  # what impl="auto" picks on GPU/TPU


def _render(model, precision="float32"):
    targets = [objectives.channel("blocks.4", 3), objectives.channel("blocks.4", 17)]
    config = render.RenderConfig(size=64, steps=6, chunk_steps=3, compute_dtype=precision)
    return render.render_images(model, targets, config=config, devices=jax.devices()[:1])


@pytest.mark.slow  # the GPU/TPU path compiled on CPU: ~20 s each
def test_vmapped_images_match_images_one_by_one(lite0, lite0_xla, monkeypatch):
    one_by_one = _render(lite0)
    monkeypatch.setattr(step, "vectorize_images", lambda platform: True)
    vmapped = _render(lite0_xla)
    # other conv code and batching change float rounding only; Adam keeps it small over 6 steps
    np.testing.assert_allclose(vmapped.history, one_by_one.history, rtol=1e-2, atol=1e-2)  # seen: 1.2e-3
    np.testing.assert_allclose(vmapped.images, one_by_one.images, atol=5e-2)  # seen: 1.2e-2


@pytest.mark.slow  # the GPU/TPU path compiled on CPU: ~20 s each
def test_bfloat16_on_the_vmapped_path_optimizes(lite0_xla, monkeypatch):
    with pytest.raises(jaxviz.UsageError, match="bfloat16"):  # on CPU's own path it is refused
        _render(lite0_xla, precision="bfloat16")
    monkeypatch.setattr(step, "vectorize_images", lambda platform: True)
    result = _render(lite0_xla, precision="bfloat16")
    assert np.all(np.isfinite(result.history))
    assert np.all(result.history[:, -1] > result.history[:, 0])
