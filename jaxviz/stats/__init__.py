"""Statistics of natural images: streaming moments, feature views, the pass over data, the store, outliers.

- :mod:`~jaxviz.stats.moments`: the streaming mean/covariance state (``init``/``update``/``merge``/
  ``finalize``), shrinkage and precision — re-exported here, so ``stats.init(dim)`` works;
- :mod:`~jaxviz.stats.views`: what a feature vector is (``pixel``, ``pooled``, ``patchK``);
- :mod:`~jaxviz.stats.collect`: run a model over a data source and gather the moments (sharded);
- :mod:`~jaxviz.stats.statistics`: :func:`collect_stats`, one pass that gives every statistics prior what it takes;
- :mod:`~jaxviz.stats.store`: the on-disk format and the statistics that ship with jaxviz;
- :mod:`~jaxviz.stats.outliers`: Mahalanobis distance, per-neuron contributions, outlier selection.
"""

from jaxviz.stats import collect, moments, outliers, store, views  # noqa: F401
from jaxviz.stats.moments import *  # noqa: F401,F403
from jaxviz.stats.moments import __all__ as _moments_all
from jaxviz.stats.statistics import Statistics, collect_stats

__all__ = ["collect", "moments", "outliers", "store", "views", "Statistics", "collect_stats", *_moments_all]
