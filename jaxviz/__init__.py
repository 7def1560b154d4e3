"""jaxviz: feature visualization for JAX/Flax networks with outlier-neuron suppression.

Start here (runs on a CPU in about a minute; in Jupyter the result shows itself as a gallery)::

    import jaxviz
    model = jaxviz.load_model("efficientnet_lite0")         # real ImageNet weights, no torch
    result = jaxviz.visualize(model, "logits:207", size=128, steps=64)   # golden retriever
    result.show()                                           # inline, or a temporary HTML page
    result.save("out/")                                     # PNGs, index.html, metrics.json

``visualize`` uses the best measured recipe (:data:`jaxviz.recipes.DEFAULT`); targets are strings
(``logits:207``, ``blocks.10:7``, ``blocks.7`` for a whole layer) or :mod:`~jaxviz.objectives`.

The pipeline, one module per stage (docs/design.md §2): :mod:`~jaxviz.data` → :mod:`~jaxviz.stats`
(+ :mod:`~jaxviz.views`, :mod:`~jaxviz.collect`, :mod:`~jaxviz.stats_store`) → :mod:`~jaxviz.outliers` →
:mod:`~jaxviz.objectives` / :mod:`~jaxviz.priors` → :mod:`~jaxviz.param` / :mod:`~jaxviz.transforms` →
:mod:`~jaxviz.step` / :mod:`~jaxviz.render` → :mod:`~jaxviz.report`; :mod:`~jaxviz.pipeline` runs the jobs
of the CLI, :mod:`~jaxviz.recipes` holds the anchors' full settings, :mod:`~jaxviz.realism` and
:mod:`~jaxviz.attribution` work on images.
"""

from jaxviz import (
    api,
    attribution,
    cache,
    diverse,
    display,
    collect,
    data,
    errors,
    hardware,
    objectives,
    outliers,
    param,
    pipeline,
    priors,
    realism,
    recipes,
    registry,
    render,
    report,
    stats,
    stats_store,
    step,
    transforms,
    views,
)
from jaxviz.api import visualize
from jaxviz.cache import enable_compile_cache
from jaxviz.errors import (
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
from jaxviz.features import Model, from_linen, from_nnx
from jaxviz.hardware import use_cpu_cores
from jaxviz.images import read_image
from jaxviz.models import MODELS, imagenet_classes, load_model
from jaxviz.render import RenderConfig, RenderResult, render as render_images

__version__ = "0.1.0"

__all__ = [
    # modules
    "attribution", "cache", "collect", "data", "errors", "hardware", "objectives", "outliers", "param", "pipeline",
    "priors", "realism", "recipes", "registry", "render", "report", "stats", "stats_store", "step", "transforms",
    "views",
    # models
    "Model", "MODELS", "load_model", "from_linen", "from_nnx", "imagenet_classes", "read_image",
    # running
    "visualize", "RenderConfig", "RenderResult", "render_images", "use_cpu_cores", "enable_compile_cache",
    # errors
    "JaxvizError", "UsageError", "ImageError", "DataError", "UnknownLayerError", "UnknownModelError",
    "MissingWeightsError", "WeightFileError", "UnsafeWeightsError", "StatsMismatchError", "StatsNotFoundError",
    "CheckpointMismatchError", "NonFiniteLossError",
    "__version__",
]
