"""Fitting the computation to the machine: one CPU device per core, and XLA-CPU compile options.

XLA-CPU runs one image's step as a chain of small ops: its matmuls spread over the cores, but
the many small elementwise passes between them (BatchNorm, ReLU6, depthwise taps, transforms,
Adam) mostly keep one core busy. Giving the CPU backend one device per core and sharding the images over them keeps
every core busy with its own images (render step, Lite0 at 224 px, batch 8 on 2 cores: about
1.4× the image-steps/s of one device; ``python -m benchmarks.run --cpu-devices 1,2``).
"""

from __future__ import annotations

import os

import jax

__all__ = ["usable_cores", "use_cpu_cores", "compiler_options"]


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


# XLA-CPU options for the render step, measured on it (Lite0, 224 px, batch 8, 2 cores, 2 devices):
# 512-bit vectors for the elementwise loops (XLA prefers 256 by default) and the scheduler that
# orders independent ops for concurrency: 17.5 -> 16.5 ms per image-step.
_CPU_OPTIONS = {"xla_cpu_prefer_vector_width": 512, "xla_cpu_enable_concurrency_optimized_scheduler": True}


def compiler_options(devices) -> dict | None:
    """XLA compiler options for a program that runs on ``devices`` (``None``: XLA's defaults).

    CPU programs get wider vectors and the concurrency-optimized scheduler; GPU/TPU keep the
    defaults.
    """
    if all(d.platform == "cpu" for d in devices):
        return dict(_CPU_OPTIONS)
    return None
