"""Ablation: penalize the whole Mahalanobis distance ``mean D²/dim`` of every position (no selection)."""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from jaxviz.common.pytree import part, static
from jaxviz.priors.base import (
    LayerMoments,
    PriorBase,
    check_options,
    feature_view,
    ordered,
    shipped_or,
    stats_moments_of,
)
from jaxviz.stats import outliers as outliers_lib

__all__ = ["MahalanobisPrior", "mahalanobis"]


@part
class MahalanobisPrior(PriorBase):
    """Ablation: penalize the mean ``D²/dim`` of every position (no neuron selection)."""

    trace_name = "d2"

    stats: Mapping[str, LayerMoments]
    view: str = static("pixel")
    weight: float = static(10.0)
    warmup: int = static(0)

    layers = property(lambda self: tuple(self.stats), doc="the layers the statistics cover")

    def _d2(self, features):
        total = jnp.zeros(())
        for layer, m in self.stats.items():
            x = feature_view(self.view, features[layer])
            total = total + jnp.mean(outliers_lib.mahalanobis(x, m.mean, m.precision)) / x.shape[-1]
        return total / len(self.stats)

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        d2 = self._d2(features)
        active = jnp.asarray(step >= self.warmup, d2.dtype)
        dims = [m.mean.shape[0] for m in self.stats.values()]
        return self.weight * active * d2, state, d2 * sum(dims) / len(dims)

    def report(self, features, state):
        dims = [m.mean.shape[0] for m in self.stats.values()]
        return {"d2": self._d2(features) * sum(dims) / len(dims)}

    def __repr__(self):
        return f"mahalanobis(layers={list(self.layers)}, view={self.view}, weight={self.weight})"


def mahalanobis(stats=None, *, model=None, layers=None, view: str | None = None, **options) -> MahalanobisPrior:
    """Ablation: penalize the whole Mahalanobis distance (arguments as :func:`jaxviz.priors.outliers`)."""
    check_options("mahalanobis", MahalanobisPrior, **options)
    stats, layers = shipped_or(stats, model, layers, "prior 'mahalanobis'", view)
    stats_moments, stats_view = stats_moments_of(stats, model, layers, view)
    return MahalanobisPrior(ordered(stats_moments), view=stats_view, **options)
