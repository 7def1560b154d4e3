"""The house style is checked, not hoped for: ruff's linter (pyflakes, pycodestyle, import sorting, the fixed
module aliases ``np``, ``jnp``, ``nn``, ``ocp``) over the whole repository, configured in pyproject.toml."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = pathlib.Path(sys.executable).parent / "ruff"
    run = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise", str(ROOT)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-1000:]
