"""What a run is: the numbers (:class:`RenderConfig`, :mod:`~jaxviz.recipes.config`) and the full settings
of the anchors and of the method (:mod:`~jaxviz.recipes.builtin`: ``lucid``, ``maco``, ``deepinversion``,
``jaxviz``, ``outliers``). A new recipe is a function returning a :class:`Recipe` in ``builtin``."""

from jaxviz.recipes.builtin import *  # noqa: F401,F403
from jaxviz.recipes.builtin import __all__ as _builtin_all
from jaxviz.recipes.config import COMPUTE_DTYPES, MAX_SIZE, MAX_STEPS, RenderConfig, min_size

__all__ = [*_builtin_all, "RenderConfig", "MAX_SIZE", "MAX_STEPS", "COMPUTE_DTYPES", "min_size"]
