"""Old module names (before the folders of docs/design.md §2) keep working, with a DeprecationWarning.

``import jaxviz.param`` or ``jaxviz.param`` gives :mod:`jaxviz.image.param`, and so on. A meta path
finder answers the old dotted names with the new modules themselves (not copies), so objects and
``isinstance`` checks are shared.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

# old name -> new module; stable aliases (part of the contract, no warning) are in STABLE
MOVED = {
    "errors": "jaxviz.common.errors", "files": "jaxviz.common.files", "progress": "jaxviz.common.progress",
    "cache": "jaxviz.common.cache", "hardware": "jaxviz.common.hardware", "images": "jaxviz.common.images",
    "features": "jaxviz.models.model", "folders": "jaxviz.data.folders", "tfds_folder": "jaxviz.data.tfds",
    "views": "jaxviz.stats.views", "collect": "jaxviz.stats.collect", "stats_store": "jaxviz.stats.store",
    "param": "jaxviz.image.param", "transforms": "jaxviz.image.transforms", "step": "jaxviz.render.step",
    "checkpoint": "jaxviz.common.checkpoint", "realism_metrics": "jaxviz.realism.metrics",
    "metrics": "jaxviz.realism.diagnostics",
}
STABLE = {"outliers": "jaxviz.stats.outliers"}  # docs/design.md §3: `from jaxviz import stats, outliers`


def resolve(name: str):
    """The module an old top-level name stands for (warning when it moved), or ``None``."""
    if name in STABLE:
        return importlib.import_module(STABLE[name])
    if name in MOVED:
        warnings.warn(f"jaxviz.{name} is now {MOVED[name]}", DeprecationWarning, stacklevel=3)
        return importlib.import_module(MOVED[name])
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        head, _, tail = fullname.partition(".")
        if head == "jaxviz" and tail in {**MOVED, **STABLE}:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        module = resolve(spec.name.partition(".")[2])
        self._specs[spec.name] = module.__spec__  # the import system overwrites it; exec_module puts it back
        return module

    def exec_module(self, module):  # the module is already executed: it is the new one
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
