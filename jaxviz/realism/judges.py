"""Held-out judges: models the optimization never sees (EfficientNet-Lite1, Lite2) and what they compute.

Scores built on them: :mod:`jaxviz.realism.scoring`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import NamedTuple, Sequence

import numpy as np

from jaxviz.common.errors import UsageError
from jaxviz.common.images import resize_batch01
from jaxviz.models.model import Model
from jaxviz.realism import diagnostics as metrics

__all__ = ["DEFAULT_JUDGES", "NUM_CLASSES", "default_real", "Judge", "load_judge", "JudgeOutputs", "judge_features",
           "class_maps"]

DEFAULT_JUDGES = ("efficientnet_lite1", "efficientnet_lite2")
NUM_CLASSES = 1000
SECOND_VIEW_SIDE = 0.8  # of the centre square; see second_view


def default_real() -> str | None:
    """The default real-photo folder: ``$JAXVIZ_REAL_DIR``, else the sibling data folder if it exists."""
    env = os.environ.get("JAXVIZ_REAL_DIR")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # jaxviz/realism/ -> repo
    path = os.path.normpath(os.path.join(repo, "..", "shared", "data", "imagenet-sample"))
    return path if os.path.isdir(path) else None


# ------------------------------------------------------------------------------------ judges


@dataclasses.dataclass(frozen=True, eq=False)
class Judge:
    """A held-out classifier and where to read its pooled features and class-activation maps.

    Attributes:
      model: the classifier (its ``features`` return ``logits``, ``pool_layer`` and ``head_layer``).
      resolution: input side the images are resized to (the model's native one by default).
      pool_layer: globally pooled features (1280-d for EfficientNet-Lite).
      head_layer: the last spatial features, ``[h, w, C]``; ``pool`` is their spatial mean.
      kernel_path: path in ``model.params`` of the dense kernel ``[C, classes]`` after pooling.
      logits_layer: the class scores.
    """

    model: Model
    resolution: int
    pool_layer: str = "pool"
    head_layer: str = "head"
    kernel_path: tuple[str, ...] = ("fc", "kernel")
    logits_layer: str = "logits"

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def kernel(self) -> np.ndarray:
        k = self.model.params
        for part in self.kernel_path:
            k = k[part]
        return np.asarray(k, np.float64)


@functools.lru_cache(maxsize=4)
def _load_model(name: str) -> Model:
    from jaxviz.models import load_model

    return load_model(name)


def load_judge(model: str | Model, *, resolution: int | None = None) -> Judge:
    """A :class:`Judge` from a model name (loaded once per process) or a :class:`Model`.

    Args:
      model: e.g. ``"efficientnet_lite1"``.
      resolution: override the native resolution (tests use small ones).
    """
    m = _load_model(model) if isinstance(model, str) else model
    res = resolution or m.resolution
    if not res:
        raise UsageError(f"model {m.name} has no native resolution; pass resolution=")
    return Judge(m, int(res))


def as_judge(j: str | Judge) -> Judge:
    return j if isinstance(j, Judge) else load_judge(j)


class JudgeOutputs(NamedTuple):
    """What a judge sees in a batch: ``logits [N, classes]`` and pooled features ``pool [N, D]`` (float32)."""

    logits: np.ndarray
    pool: np.ndarray


def judge_features(judge: Judge, images01: np.ndarray, *, batch_size: int = 8) -> JudgeOutputs:
    """Logits and pooled features of ``images01 [N,H,W,3]`` resized to the judge's resolution."""
    x = resize_batch01(images01, judge.resolution)
    out = metrics.run_features(judge.model, x, [judge.logits_layer, judge.pool_layer], batch_size=batch_size)
    return JudgeOutputs(out[judge.logits_layer], out[judge.pool_layer])


def class_maps(judge: Judge, images01: np.ndarray, classes: Sequence[int], *, scale: int = 2,
               batch_size: int = 8) -> np.ndarray:
    """``[N, h, w]`` float64 class-activation maps ``head · W[:, class]`` at ``scale`` × resolution.

    The spatial mean of the map plus the class bias is the class logit of that (larger) input.
    """
    x = resize_batch01(images01, scale * judge.resolution)
    head = metrics.run_features(judge.model, x, [judge.head_layer], batch_size=batch_size)[judge.head_layer]
    w = judge.kernel[:, np.asarray(classes, np.int64)]                       # [C, N]
    return np.einsum("nhwc,cn->nhw", np.asarray(head, np.float64), w)


# ------------------------------------------------------------------------------------ real photos


# ------------------------------------------------------------------------------------ scores


