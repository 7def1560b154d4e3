"""Every built-in recipe gives the results it gave before the parts-are-data refactor
(tests/golden/recipes*.npz, made by scripts/make_recipe_golden.py at commit 3ea0150, one file per CPU kind).

Bit-identical where a golden file was made on this CPU kind and JAX. Across CPU kinds XLA emits other vector
code, and Adam's sign-like first steps amplify last-bit differences into visible ones within a few passes,
so there the first two passes' objective values must agree within a tight tolerance (measured between an
AVX2 and the original machine: at most 1.8e-4 relative).
"""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from tests.toys import GOLDEN, ROOT

GOLDENS = sorted(glob.glob(os.path.join(GOLDEN, "recipes*.npz")))


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_recipe_golden", os.path.join(ROOT, "scripts", "make_recipe_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _script()


def _machine(golden) -> str:
    # the device count does not change a bit on CPU (one image after another on each device)
    return str(golden["machine"]).split("|devices")[0]


def _this_machine() -> str:
    return f"{SCRIPT.cpu_name()}|jax {jax.__version__}"


def _fields(result):
    return {field: np.asarray(getattr(result, field)) for field in ("images", "activation", "history")}


@pytest.mark.slow
@pytest.mark.parametrize("name", [*SCRIPT.CASES, "groups"])
def test_recipe_matches_golden(lite0, name):
    goldens = [np.load(path) for path in GOLDENS]
    got = _fields(SCRIPT.run_groups(lite0) if name == "groups" else SCRIPT.run_case(lite0, name))
    for golden in goldens:  # everywhere: the first two passes' objective values
        np.testing.assert_allclose(got["history"][:, :2], golden[f"{name}/history"][:, :2], rtol=1e-3,
                                   err_msg=f"{name}: first passes' objective changed ({_machine(golden)})")
    # groups (images_per_target) now run inside the render's one chunk program (a fori_loop under shard_map)
    # instead of a program per step: the same arithmetic, fused differently by XLA
    if name == "groups":
        same = [g for g in goldens if _machine(g) == _this_machine()]
        for golden in same:
            for field, value in got.items():
                np.testing.assert_allclose(value, golden[f"{name}/{field}"], rtol=2e-3, atol=2e-3,
                                           err_msg=f"{name} {field} changed")
        return
    identical = [g for g in goldens if all(np.array_equal(v, g[f"{name}/{k}"]) for k, v in got.items())]
    # a file made on this CPU kind must match bit for bit; where none was (the first file names the CPU
    # without its instruction sets), matching one of them bit for bit is as strong
    assert identical or not any(_machine(g) == _this_machine() for g in goldens), \
        f"{name}: not bit-identical to the golden run made on this CPU ({_this_machine()})"
