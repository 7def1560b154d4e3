"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lite0():
    """The real EfficientNet-Lite0 with ImageNet weights (loaded once per session)."""
    import jaxviz

    return jaxviz.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def photos():
    """The embedded natural photos as ``{name: uint8 [H,W,3]}``."""
    from jaxviz.data import embedded_photos

    return embedded_photos()
