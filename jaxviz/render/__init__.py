"""The optimization: one unit's step, compiled for a sharded batch, run in chunks with checkpoints.

- :mod:`~jaxviz.render.step`: the step of ONE unit (an image, or a group of images of a target) and the
  compiled programs, which take the parts (:class:`Parts`) as an argument;
- :mod:`~jaxviz.render.loop`: :func:`render_images` (parts from the recipe, launches, chunks, resumes);
- :mod:`~jaxviz.render.stored`: the programs kept on disk in exported form.

:class:`RenderConfig` lives in :mod:`jaxviz.recipes.config`, checkpoints in :mod:`jaxviz.common.checkpoint`;
both are re-exported here.
"""

from jaxviz.common.checkpoint import RunStore
from jaxviz.common.errors import NonFiniteLossError
from jaxviz.recipes.config import MAX_SIZE, MAX_STEPS, RenderConfig, min_size
from jaxviz.recipes.parts import PullToward
from jaxviz.render import loop, step  # noqa: F401
from jaxviz.render.loop import build_parts, clear_programs, devices_for, programs_for, render_images, seed_images
from jaxviz.render.step import Parts, PlainOptimizer, Programs, RenderState, compile_programs, make_step
from jaxviz.report.result import RenderResult

__all__ = ["RenderConfig", "RenderResult", "render_images", "build_parts", "NonFiniteLossError", "MAX_SIZE",
           "MAX_STEPS", "min_size", "devices_for", "seed_images", "programs_for", "clear_programs", "RunStore",
           "Parts", "PlainOptimizer", "Programs", "PullToward", "RenderState", "compile_programs", "make_step",
           "loop", "step"]
