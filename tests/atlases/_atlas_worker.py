"""Subprocess of tests/atlases/test_atlases.py: a small atlas of the toy model; each progress update also records the
phase in PHASE_FILE and waits a moment, so the test can kill the process inside a chosen phase."""

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxviz.common import progress as progress_lib  # noqa: E402

_bar = progress_lib.progress_bar


def recording_bar(desc, **kwargs):
    update, close = _bar(desc, **{**kwargs, "quiet": True})
    count = [0]

    def recorded(done, total, value=None):
        count[0] += 1
        with open(os.environ["PHASE_FILE"], "w") as f:
            f.write(f"{desc} {count[0]}")
        time.sleep(float(os.environ.get("PHASE_WAIT", "0")))

    return recorded, close


def build(out, **overrides):
    import jaxviz
    from jaxviz import recipes
    from tests.toys import make_toy

    recipe = recipes.get("maco", size=16).at_budget(32)
    options = dict(k=3, recipe=recipe, config=recipe.config(batch_size=2, checkpoint_every=2, chunk_steps=2),
                   max_images=70, judge=None, quiet=True)
    options.update(overrides)
    return jaxviz.atlas(make_toy(), "conv2", "0-4", data="photos", out=out, **options)


if __name__ == "__main__":
    if os.environ.get("PHASE_FILE"):
        progress_lib.progress_bar = recording_bar
    build(sys.argv[1], checkpoint_every=1)
