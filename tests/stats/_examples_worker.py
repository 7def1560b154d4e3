"""Subprocess of tests/stats/test_examples.py: the examples pass on the toy model, checkpointed, result to an npz."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

from jaxviz.stats import examples  # noqa: E402
from tests.toys import make_toy  # noqa: E402


def images(n=600, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


if __name__ == "__main__":
    out, ckpt, slow = sys.argv[1], (sys.argv[2] if sys.argv[2] != "-" else None), float(sys.argv[3])
    import time

    def progress(done, total):
        time.sleep(slow)

    ex = examples.collect_examples(make_toy(), "conv2", [0, 2, 3, 5], images(), k=6, batch_size=6,
                                   checkpoint_dir=ckpt, checkpoint_every=3, progress=progress)
    np.savez(out, score=ex.score, index=ex.index, position=ex.position)
