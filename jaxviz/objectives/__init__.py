"""What to maximize: immutable objectives with algebra (:mod:`~jaxviz.objectives.base`) and targets as
users write them, ``LAYER:CHANNEL`` (:mod:`~jaxviz.objectives.targets`)."""

from jaxviz.objectives.base import *  # noqa: F401,F403
from jaxviz.objectives.base import __all__ as _base_all
from jaxviz.objectives.targets import *  # noqa: F401,F403
from jaxviz.objectives.targets import __all__ as _targets_all

__all__ = [*_base_all, *_targets_all]
