"""Priors subtracted from the objective: one file each, the :class:`Prior` protocol in ``base``.

- :mod:`~jaxviz.priors.base`: the protocol, ``none()``, statistics → ``LayerMoments``, ``describe``;
- :mod:`~jaxviz.priors.suppress`: the method (suppress the shallow outlier neurons);
- :mod:`~jaxviz.priors.distance`: ablation, the whole Mahalanobis distance;
- :mod:`~jaxviz.priors.quantile_match`: push the image's per-channel distributions toward the photos' (sort-matching);
- :mod:`~jaxviz.priors.gaussian`: the image's feature mean and covariance against the photos' (Bures / KL);
- :mod:`~jaxviz.priors.bn`, :mod:`~jaxviz.priors.bn_batch`: DeepInversion's BatchNorm prior, per image and
  pooled over the batch.

A new prior is a new file here with a pytree dataclass satisfying :class:`Prior`; give it a name for
the CLI with :func:`jaxviz.registry.register` (docs/design.md, "Adding a prior").
"""

from jaxviz.priors.base import *  # noqa: F401,F403
from jaxviz.priors.base import __all__ as _base_all
from jaxviz.priors.bn import BatchNormPrior, batchnorm_prior
from jaxviz.priors.bn_batch import PooledBatchNormPrior, pooled_batchnorm_prior
from jaxviz.priors.distance import MahalanobisPrior, mahalanobis
from jaxviz.priors.gaussian import GaussianMatchPrior, gaussian_match
from jaxviz.priors.quantile_match import QuantilePrior, quantile
from jaxviz.priors.suppress import OutlierPrior, outliers

__all__ = [*_base_all, "OutlierPrior", "outliers", "MahalanobisPrior", "mahalanobis", "BatchNormPrior",
           "batchnorm_prior", "PooledBatchNormPrior", "pooled_batchnorm_prior", "GaussianMatchPrior", "gaussian_match",
           "QuantilePrior", "quantile"]

