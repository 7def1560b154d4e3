"""Image sources: embedded photos, image folders, TFDS → uint8 batches (the pipeline's first stage).

:mod:`~jaxviz.data.sources` (``open_source(spec)`` and the source classes), :mod:`~jaxviz.data.folders`
(scanning a folder of images), :mod:`~jaxviz.data.tfds` (a TFDS dataset built from a folder, no TensorFlow).
"""

from jaxviz.data import folders, sources  # noqa: F401
from jaxviz.data.sources import *  # noqa: F401,F403  (the public names of the stage)
from jaxviz.data.sources import __all__ as _sources_all

__all__ = ["folders", "sources", "tfds", *_sources_all]  # noqa: F405  (tfds loads on first use)


def __getattr__(name):
    if name == "tfds":  # imported on first use: TFDS is heavy and most runs never touch it
        import importlib

        return importlib.import_module("jaxviz.data.tfds")
    raise AttributeError(f"module 'jaxviz.data' has no attribute {name!r}")
