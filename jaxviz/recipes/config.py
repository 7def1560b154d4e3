"""The numbers of a run: :class:`RenderConfig` (frozen) and the limits ``render_images`` checks.

It lives with the recipes (which fill it in) rather than in :mod:`jaxviz.render` (which reads it),
so that recipes never import the renderer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxviz.common.errors import UsageError, check_integer

__all__ = ["RenderConfig", "MAX_SIZE", "MAX_STEPS", "COMPUTE_DTYPES", "min_size"]

COMPUTE_DTYPES = ("float32", "bfloat16")


MAX_SIZE = 2048  # a 2048² image-step of Lite0 needs ~10 GB on CPU; larger is a typo more often than not


MAX_STEPS = 1_000_000


def min_size(model) -> int:
    """Smallest image side ``render`` accepts for ``model``.

    EfficientNet downsamples 32×, so below 64 px its head sees a single position; a model with
    a smaller native resolution (e.g. your own 32×32 net) may render at that resolution.
    """
    native = getattr(model, "resolution", None)
    return min(64, native) if native else 8


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """The numbers of one visualization run (the parts are the recipe's: :class:`jaxviz.recipes.Recipe`).

    Attributes:
      size: image side in pixels.
      steps: optimization steps per target (0 only with ``init_images``: the photos themselves).
      batch_size: targets optimized together per launch.
      chunk_steps: steps per compiled chunk between host syncs (progress, NaN check, checkpoints).
      checkpoint_every: steps between Orbax checkpoints (rounded up to whole chunks).
      seed: PRNG seed (used when ``render`` is not given ``key``).
      compute_dtype: ``float32`` (default), or ``bfloat16`` for the model's forward and backward
        pass on GPU/TPU (parameterization, objective, prior and optimizer stay float32; refused on
        CPU, where XLA emulates bfloat16 and it is slower).
      redirect_steps: the first steps use redirected ReLU gradients (for targets that start dead).
    """

    size: int = 224
    steps: int = 256
    batch_size: int = 8
    chunk_steps: int = 16
    checkpoint_every: int = 64
    seed: int = 0
    compute_dtype: str = "float32"
    redirect_steps: int = 0

    def numbers(self) -> dict:
        """The fields that determine the result (the rest only changes how it is computed)."""
        fields = dataclasses.asdict(self)
        for k in ("chunk_steps", "checkpoint_every", "batch_size"):
            fields.pop(k)
        if fields["compute_dtype"] == "float32":
            fields.pop("compute_dtype")
        if not fields["redirect_steps"]:
            fields.pop("redirect_steps")
        return fields

    def check(self, model=None) -> None:
        """Raises :class:`UsageError` (naming the field) for values that cannot run (on ``model``, if given)."""
        if model is not None:
            low = min_size(model)
            if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or not (
                    low <= self.size <= MAX_SIZE):
                raise UsageError(f"size {self.size!r} is outside {low}..{MAX_SIZE} px for {model.name}")
        def whole(name, low, high=None):
            check_integer(f"RenderConfig.{name}", getattr(self, name), low, high)

        whole("steps", 0, MAX_STEPS)  # render refuses 0 without init_images
        whole("batch_size", 1, 4096)
        whole("chunk_steps", 1, 4096)
        whole("checkpoint_every", 1)
        whole("redirect_steps", 0, self.steps if isinstance(self.steps, int) else MAX_STEPS)
        whole("seed", 0, 2**32 - 1)
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise UsageError(f"RenderConfig.compute_dtype must be {' or '.join(COMPUTE_DTYPES)}, "
                             f"got {self.compute_dtype!r}")
