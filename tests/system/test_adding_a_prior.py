"""docs/design.md "Adding a prior": a prior written outside the package, one registration call, then used by
name from the library and from the command line (its file and one registration: two places)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxviz
from jaxviz import priors, registry
from jaxviz.cli import main
from jaxviz.common.pytree import part, static


# --- 1. its file: a pytree part satisfying jaxviz.priors.Prior -------------------------------------------
@part
class QuietLayer(priors.PriorBase):
    """Pushes a layer's mean activation down: ``weight · mean(relu(a))``."""

    layer: str = static()
    weight: float = static(1.0)
    trace_name = "quiet"

    @property
    def layers(self):
        return (self.layer,)

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        value = jnp.mean(jnp.maximum(features[self.layer], 0.0))
        return self.weight * value, state, value

    def report(self, features, state):
        return {"quiet": jnp.mean(jnp.maximum(features[self.layer], 0.0))}


def quiet_layer(*, model, layer: str = "blocks.1", weight: float = 1.0) -> QuietLayer:
    model.check_layers([layer])
    return QuietLayer(layer, float(weight))


# --- 2. one registration -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def registered():
    registry.register("prior", "quiet", quiet_layer)
    yield
    registry._EXTRA["prior"].pop("quiet", None)


def test_used_by_name_from_the_library(lite0):
    result = jaxviz.visualize(lite0, "blocks.10:7", size=64, steps=4, prior="quiet", weight=5.0, progress=False)
    assert result.record["prior"] == "QuietLayer(layer='blocks.1', weight=5.0)"
    assert result.trace_name == "quiet" and np.all(np.isfinite(result.trace))
    assert registry.build_prior("quiet", model=lite0, weight=2.0).weight == 2.0


def test_used_by_name_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "q"
    code = main(["visualize", "--target", "logits:1", "--prior", "quiet", "--weight", "3", "--steps", "2",
                 "--size", "64", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["prior"] == "QuietLayer(layer='blocks.1', weight=3.0)"
    assert "quiet" in metrics["targets"][0]  # its report's scalar reaches metrics.json
    code = main(["visualize", "--target", "logits:1", "--prior", "quiet", "--stats", str(tmp_path), "--steps", "2",
                 "--size", "64", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and "--stats does not apply to the prior quiet" in capsys.readouterr().err


def test_the_docs_list_every_registered_name():
    import os

    from tests.toys import ROOT as root
    design = open(os.path.join(root, "docs", "design.md"), encoding="utf-8").read()
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    for kind in ("parameterization", "transform", "prior", "recipe"):
        for name in registry.KINDS[kind]:  # the built-in names (other tests register their own)
            assert f"`{name}`" in design, f"docs/design.md does not list the {kind} {name}"
            assert f"`{name}`" in readme, f"README does not list the {kind} {name}"
