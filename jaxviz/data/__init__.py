"""Image sources: embedded photos, image folders, TFDS → uint8 batches (the pipeline's first stage).

:mod:`~jaxviz.data.sources` (``open_source(spec)`` and the source classes), :mod:`~jaxviz.data.folders`
(scanning a folder of images), :mod:`~jaxviz.data.tfds` (a TFDS dataset built from a folder, no TensorFlow).
"""

from jaxviz.data.sources import *  # noqa: F401,F403  (the public names of the stage)
from jaxviz.data.sources import __all__ as _sources_all
from jaxviz.data import folders, sources, tfds  # noqa: F401

__all__ = ["folders", "sources", "tfds", *_sources_all]
