"""One CPU device per core: set only when the user has not chosen, used without padding waste."""

import os
import subprocess
import sys

import jax

from jaxviz import render
from jaxviz.common import hardware


def test_user_setting_is_left_alone():
    # conftest sets XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax starts
    assert hardware.use_cpu_cores() == 0
    assert len(jax.devices()) == 8


def _devices_in_fresh_process(code: str, xla_flags: str = "") -> str:
    env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_one_device_per_core_before_the_backend_starts():
    out = _devices_in_fresh_process(
        "import jax, jaxviz; print(jaxviz.use_cpu_cores(3), len(jax.devices()), jaxviz.use_cpu_cores())")
    assert out == ["3", "3", "0"]  # the second call sees the count already set


def test_too_late_changes_nothing():
    out = _devices_in_fresh_process(
        "import jax, jaxviz; n = len(jax.devices()); print(n, jaxviz.use_cpu_cores(5), len(jax.devices()))")
    assert out[0] == out[2] and out[1] == "0"


def test_cli_uses_every_core(tmp_path):
    out = _devices_in_fresh_process(
        "import jax, sys; from jaxviz.cli import main; sys.stdout = open(%r, 'w'); main(['layers']); "
        "sys.stdout = sys.__stdout__; print(len(jax.devices()))" % str(tmp_path / "layers.txt"))
    assert out == [str(hardware.usable_cores())]


def test_cpu_groups_use_at_most_one_device_per_target():
    cpus = jax.devices("cpu")
    assert render.devices_for(1, cpus) == 1
    assert render.devices_for(3, cpus) == 3
    assert render.devices_for(100, cpus) == len(cpus)
