"""jaxviz: feature visualization for JAX/Flax networks, with outlier-neuron suppression.

Start here (runs on a CPU in about a minute; in Jupyter the result shows itself as a gallery)::

    import jaxviz
    model = jaxviz.load_model("efficientnet_lite0")         # real ImageNet weights, no torch
    result = jaxviz.visualize(model, "logits:207", size=128, steps=64)   # golden retriever
    result.show()                                           # inline, or a temporary HTML page
    result.save("out/")                                     # PNGs, index.html, metrics.json

``visualize`` uses the best measured recipe (:data:`jaxviz.recipes.DEFAULT`); targets are strings
(``logits:207``, ``blocks.10:7``, ``blocks.7`` for a whole layer) or :mod:`~jaxviz.objectives`.

The folders follow the data (docs/design.md §2): :mod:`~jaxviz.data` (image sources) →
:mod:`~jaxviz.stats` (moments, views, the pass over data, the store, outliers) →
:mod:`~jaxviz.objectives` → :mod:`~jaxviz.priors` and :mod:`~jaxviz.image` (parameterizations,
transforms) → :mod:`~jaxviz.recipes` (the anchors' settings) → :mod:`~jaxviz.render` (step, loop,
checkpoints) → :mod:`~jaxviz.report` (results, gallery) and :mod:`~jaxviz.realism` (held-out judges,
metrics); :mod:`~jaxviz.models` and :mod:`~jaxviz.common` are the floor, :mod:`~jaxviz.pipeline` and
:mod:`~jaxviz.cli` the top. Submodules load on first use, so ``import jaxviz`` is cheap.
"""

from __future__ import annotations

import importlib as _importlib

from jaxviz.common import __version__
from jaxviz.common.errors import (
    CheckpointMismatchError,
    DataError,
    ImageError,
    JaxvizError,
    MissingWeightsError,
    NonFiniteLossError,
    StatsMismatchError,
    StatsNotFoundError,
    UnknownLayerError,
    UnknownModelError,
    UnsafeWeightsError,
    UsageError,
    WeightFileError,
)

_SUBMODULES = ("api", "atlases", "attribution", "cli", "common", "data", "image", "models", "objectives", "pipeline", "priors",
               "realism", "recipes", "registry", "render", "report", "stats")
_NAMES = {  # public name -> the module defining it
    "Model": "jaxviz.models.model", "from_linen": "jaxviz.models.model", "from_nnx": "jaxviz.models.model",
    "MODELS": "jaxviz.models", "load_model": "jaxviz.models", "imagenet_classes": "jaxviz.models",
    "read_image": "jaxviz.common.images", "describe": "jaxviz.common.pytree", "use_cpu_cores": "jaxviz.common.hardware",
    "enable_compile_cache": "jaxviz.common.cache", "visualize": "jaxviz.api", "RenderConfig": "jaxviz.recipes.config",
    "RenderResult": "jaxviz.report.result", "render_images": "jaxviz.render.loop",
    "collect_stats": "jaxviz.stats.statistics",
    "atlas": "jaxviz.atlases", "Atlas": "jaxviz.atlases", "Statistics": "jaxviz.stats.statistics",
}

__all__ = [
    # stages
    *_SUBMODULES, "outliers",
    # models and running
    "Model", "MODELS", "load_model", "from_linen", "from_nnx", "imagenet_classes", "read_image",
    "visualize", "RenderConfig", "RenderResult", "render_images", "use_cpu_cores", "enable_compile_cache",
    "collect_stats", "Statistics", "describe", "atlas", "Atlas",
    # errors
    "JaxvizError", "UsageError", "ImageError", "DataError", "UnknownLayerError", "UnknownModelError",
    "MissingWeightsError", "WeightFileError", "UnsafeWeightsError", "StatsMismatchError", "StatsNotFoundError",
    "CheckpointMismatchError", "NonFiniteLossError",
    "__version__",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"jaxviz.{name}")
    if name in _NAMES:
        return getattr(_importlib.import_module(_NAMES[name]), name)
    if name == "outliers":  # docs/design.md §3: `from jaxviz import stats, outliers`
        return _importlib.import_module("jaxviz.stats.outliers")
    raise AttributeError(f"module 'jaxviz' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
