"""The anchors at their own settings (unscaled), and the seed's own base: ``maco-full``,
``deepinversion-full``, ``deepdream``.

The recipes of :mod:`jaxviz.recipes.builtin` are scaled down to budgets a CPU runs in minutes; these
are the sources' own budgets and schedules, for the comparisons of README "Experiments" ("The anchors at
their own settings"). What each still differs in from its source, and why:

- ``maco-full`` (Xplique ``features_visualizations/maco.py`` defaults): 256 optimizer steps × 32 crops
  (8,192 passes) on a 512² canvas (``custom_shape``), each crop resized to the model side, crop side
  ``N(m_i, 0.05)`` clipped to ``[0.05, 1]`` with ``m_i`` linear from 0.5 to 0.05 over the steps
  (:class:`jaxviz.image.crops.ScheduledCrop`), centre ``0.5 + N(0, 0.15)``, noise 0.08 in ``[-1, 1]``
  units (0.04 here), NAdam 1.0, the gradients of the 32 crops averaged into one update. Differs:
  (a) the crop centre is clipped so the crop stays on the canvas (Xplique's ``crop_and_resize``
  samples zeros outside it): every pass sees only image; (b) the phase is standardized to the spread of a
  uniform phase, ``π/√3``, not Xplique's std 1 (see :class:`jaxviz.image.param.Maco`: std 1 saturates the
  corners); (c) the magnitude spectrum is jaxviz's own average of photos, not Xplique's file;
  (d) the 32 crops run as 32 passes accumulated by ``optax.MultiSteps`` (same update; the order of the
  random draws differs). ``size`` scales canvas and crop output together (224: Xplique's).
- ``deepinversion-full`` (DeepInversion ``imagenet_inversion.py``, README command, ``setting_id`` 1):
  2,000 iterations at 224 px, BN moments pooled over the batch of images optimized together
  (:func:`jaxviz.priors.pooled_batchnorm_prior`; the batch is one launch, ``RenderConfig.batch_size``
  targets; DeepInversion uses 84 or more), first BN × 10, TV-L2 1e-4, L2 1e-5, roll 30 + flip, Adam(0.5,
  0.9) lr 0.25 with 100 warm-up steps then cosine, clip to the valid range, cross entropy. Differs:
  (a) float32, not its fp16 (apex) training; (b) no "best image so far" selection (it keeps the inputs
  of the lowest loss; here the last); (c) ``setting_id`` 0's multi-resolution phase (2k steps at 112 px,
  then 1k at 224) is not run; (d) the batch size is what the launch holds (64 in the experiments).
- ``deepdream`` (the seed's base: "plain DeepDream"): pixel parameterization starting at grey plus
  noise (sd 0.01), no transforms, plain gradient ascent ``x += lr · g / mean|g|`` with lr 1.5/255
  (the original notebook's step 1.5 in 0–255 units), pixels clipped to ``[0, 1]``, 256 steps.
  Differs from the notebook: no octaves and no jitter (the seed's description has neither), and it starts
  from noise, not a photo.
"""

from __future__ import annotations

from jaxviz.image import param, transforms
from jaxviz.recipes.recipe import Optimizer, Recipe

__all__ = ["maco_full", "deepdream", "MACO_STEPS", "MACO_CROPS"]

MACO_STEPS, MACO_CROPS, MACO_CANVAS = 256, 32, 512


def maco_full(*, size: int = 224) -> Recipe:
    """Xplique's MaCo unscaled (see the module docstring); ``size``: the crops' side (canvas ``512·size/224``)."""
    canvas = max(16, int(round(MACO_CANVAS * size / 224)))
    return Recipe(
        name="maco-full",
        parameterization=param.maco(normalize_phase=True),
        transform=transforms.maco_full(steps=MACO_STEPS, crops=MACO_CROPS, out=size, sd=0.04),
        optimizer=Optimizer("nadam", 1.0, (("eps", 1e-7),)),
        steps=MACO_STEPS, size=canvas, crops_per_step=MACO_CROPS,
        notes=f"Xplique maco() defaults: {MACO_STEPS} steps x {MACO_CROPS} crops on a {canvas}^2 canvas, crop side "
              f"N(0.5 -> 0.05, 0.05) over the steps resized to {size}, noise 0.04, NAdam 1.0. Differs: crop "
              "centre clipped inside the canvas, phase standardized to pi/sqrt(3), jaxviz's photo magnitude.")


def deepdream(*, size: int = 224, steps: int = 256) -> Recipe:
    """Plain DeepDream as the seed describes it: pixels, plain gradient ascent, no transforms."""
    return Recipe(
        name="deepdream",
        parameterization=param.pixel(sd=0.01, squash="clip"),
        transform=transforms.identity(),
        optimizer=Optimizer("deepdream", 1.5 / 255),
        steps=steps, size=size,
        notes="plain DeepDream: pixel image (grey + noise 0.01, clipped to [0, 1]), no transforms, gradient "
              "ascent x += lr g / mean|g| with lr 1.5/255, no octaves, no jitter.")

