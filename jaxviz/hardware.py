"""Fitting the computation to the machine: one CPU device per core.

XLA-CPU runs one image's step as a chain of small ops: its matmuls spread over the cores, but
the elementwise passes between them (BatchNorm, ReLU6, depthwise taps, transforms, Adam) run
on one core. Giving the CPU backend one device per core and sharding the images over them keeps
every core busy with its own images (render step, Lite0 at 224 px, batch 8 on 2 cores: about
1.4× the image-steps/s of one device; ``python -m benchmarks.run --cpu-devices 1,2``).
"""

from __future__ import annotations

import os

import jax

__all__ = ["usable_cores", "use_cpu_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity outside Linux
        return os.cpu_count() or 1


def _set_by_user() -> bool:
    return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or jax.config.jax_num_cpu_devices > 0)


def use_cpu_cores(n: int | None = None) -> int:
    """Gives JAX's CPU backend ``n`` devices (default: one per usable core).

    Call it before anything runs on JAX: the device count is fixed when the backend starts.
    An explicit setting (``XLA_FLAGS=--xla_force_host_platform_device_count=…`` or the
    ``jax_num_cpu_devices`` option) is left alone. GPU/TPU devices are not affected.

    Args:
      n: CPU devices to create; default :func:`usable_cores`.

    Returns:
      The number of CPU devices set, or 0 when nothing changed (set by the user, or the
      backend already running).
    """
    if _set_by_user():
        return 0
    n = usable_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"need at least one CPU device, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backend is running: its device count is fixed
        return 0
    return n
