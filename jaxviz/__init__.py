"""jaxviz: feature visualization for JAX/Flax networks with outlier-neuron suppression.

The pipeline, one module per stage: :mod:`~jaxviz.data` → :mod:`~jaxviz.stats` (+ :mod:`~jaxviz.views`,
:mod:`~jaxviz.collect`) → :mod:`~jaxviz.outliers` → :mod:`~jaxviz.objectives` / :mod:`~jaxviz.priors` →
:mod:`~jaxviz.param` / :mod:`~jaxviz.transforms` → :mod:`~jaxviz.render` → :mod:`~jaxviz.report`.
"""

from jaxviz import (  # noqa: F401  (modules are part of the public API)
    cache,
    data,
    hardware,
    objectives,
    outliers,
    param,
    priors,
    render,
    report,
    stats,
    transforms,
    views,
)
from jaxviz.cache import enable_compile_cache
from jaxviz.errors import (
    ImageError,
    JaxvizError,
    MissingWeightsError,
    UnknownLayerError,
    UnknownModelError,
    UsageError,
)
from jaxviz.features import Model, from_linen, from_nnx
from jaxviz.hardware import use_cpu_cores
from jaxviz.images import read_image
from jaxviz.models import MODELS, UnsafeWeightsError, imagenet_classes, load_model
from jaxviz.render import RenderConfig, RenderResult

__version__ = "0.1.0"
