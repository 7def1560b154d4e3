"""The optimization: one image's step, compiled for a sharded batch, run in chunks with checkpoints.

- :mod:`~jaxviz.render.step`: the step for ONE image and the compiled programs;
- :mod:`~jaxviz.render.loop`: :func:`render_images` (groups, launches, chunks, resumes).

:class:`RenderConfig` lives in :mod:`jaxviz.recipes.config`, checkpoints in :mod:`jaxviz.common.checkpoint`;
both are re-exported here.
"""

from jaxviz.common.errors import NonFiniteLossError
from jaxviz.render import loop, step  # noqa: F401
from jaxviz.common.checkpoint import RunStore, fingerprint
from jaxviz.recipes.config import MAX_SIZE, MAX_STEPS, RenderConfig, min_size
from jaxviz.render.loop import devices_for, render, render_images, seed_images
from jaxviz.render.step import Programs, PullToward, RenderState, compile_programs, make_step
from jaxviz.report.result import RenderResult

__all__ = ["RenderConfig", "RenderResult", "render_images", "render", "NonFiniteLossError", "MAX_SIZE", "MAX_STEPS",
           "min_size", "devices_for", "seed_images", "fingerprint", "RunStore", "Programs", "PullToward", "RenderState",
           "compile_programs", "make_step", "loop", "step"]
