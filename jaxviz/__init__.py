"""jaxviz: feature visualization for JAX/Flax networks with outlier-neuron suppression."""

from jaxviz.features import Model, UnknownLayerError, from_linen, from_nnx
from jaxviz.images import ImageError, read_image
from jaxviz.models import (
    MODELS,
    MissingWeightsError,
    UnknownModelError,
    UnsafeWeightsError,
    imagenet_classes,
    load_model,
)

__version__ = "0.1.0"
