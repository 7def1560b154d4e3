"""Realism measured the way the field does: against real photos, in held-out judges.

- :mod:`~jaxviz.realism.judges`: the held-out models (EfficientNet-Lite1, Lite2) and their outputs;
- :mod:`~jaxviz.realism.scoring`: real-photo references and :func:`score` (per image, per judge);
- :mod:`~jaxviz.realism.metrics`: the pure float64 metrics (plausibility, KID/FID, blobs, colour);
- :mod:`~jaxviz.realism.diagnostics`: the method's own measures (target activation, D² naturalness,
  repetition of the target's map) and the paired tests the experiments use.

A new metric goes in ``metrics`` (pure numpy, with a known-answer test) and is wired into ``score``.
"""

from jaxviz.realism import diagnostics, judges, metrics, scoring  # noqa: F401
from jaxviz.realism.judges import *  # noqa: F401,F403
from jaxviz.realism.judges import __all__ as _judges_all
from jaxviz.realism.scoring import *  # noqa: F401,F403
from jaxviz.realism.scoring import __all__ as _scoring_all

__all__ = ["diagnostics", "judges", "metrics", "scoring", *_judges_all, *_scoring_all]
