"""Every built-in recipe gives today's results (tests/golden/recipes.npz, scripts/make_recipe_golden.py).

Bit-identical on the machine and JAX the file was made on; elsewhere (another CPU's vector code) within
a tight tolerance. The file was made before parts became arguments of the render programs.
"""

import importlib.util
import os

import numpy as np
import pytest

from tests.toys import GOLDEN as _GOLDEN
from tests.toys import ROOT

GOLDEN = os.path.join(_GOLDEN, "recipes.npz")


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_recipe_golden", os.path.join(ROOT, "scripts", "make_recipe_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _same_machine(golden) -> bool:
    import jax

    # the device count does not change a bit on CPU (one image after another on each device)
    return str(golden["machine"]).split("|devices")[0] == f"{SCRIPT.cpu_name()}|jax {jax.__version__}"


@pytest.mark.slow
@pytest.mark.parametrize("name", [*SCRIPT.CASES, "groups"])
def test_recipe_matches_golden(lite0, name):
    golden = np.load(GOLDEN)
    result = SCRIPT.run_groups(lite0) if name == "groups" else SCRIPT.run_case(lite0, name)
    for field in ("images", "activation", "history"):
        want, got = golden[f"{name}/{field}"], np.asarray(getattr(result, field))
        # groups (images_per_target) now run inside the render's one chunk program (a fori_loop under
        # shard_map) instead of a program per step: the same arithmetic, fused differently by XLA
        if _same_machine(golden) and name != "groups":
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {field} changed")
        else:
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3, err_msg=f"{name} {field} changed")
