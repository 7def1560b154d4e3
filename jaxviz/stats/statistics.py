"""Statistics of your own data for every statistics prior, in one pass: :func:`collect_stats`.

:func:`collect_stats` reads the data once: the sharded moments pass (:func:`jaxviz.stats.collect.collect_moments`)
and, fed the same batches, the per-channel quantile sampler (:class:`jaxviz.stats.quantiles.QuantileSampler`).
The :class:`Statistics` it returns is what ``priors.outliers``, ``priors.mahalanobis``,
``priors.gaussian_match`` and ``priors.quantile`` take as ``stats=`` (and ``jaxviz.visualize(...,
stats=...)`` and the recipes); those priors default to its layers.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from jaxviz.common.errors import UsageError
from jaxviz.stats import collect, moments, views
from jaxviz.stats.quantiles import LEVELS, MAX_POSITIONS, QuantileSampler

__all__ = ["Statistics", "collect_stats"]


class Statistics(NamedTuple):
    """Natural-image statistics of some layers, finalized.

    Attributes:
      layers: ``{layer: LayerStats}`` (mean, covariance, shrunk precision; float64 host arrays).
      quantiles: ``{layer: QuantileStats}`` per-channel quantiles of the layers' positions, or ``None``.
      view: the feature view of the moments (``pixel``, ``pooled``, ``patchK``).
      model: the model's name.
      images: images read.
    """

    layers: dict
    quantiles: dict | None
    view: str
    model: str
    images: int

    def __repr__(self):
        return (f"Statistics({self.model}, layers={list(self.layers)}, view={self.view}, images={self.images}, "
                f"quantiles={'yes' if self.quantiles else 'no'})")


def collect_stats(model, layers: Sequence[str], data, *, view: str = "pixel", quantiles: bool = True,
                  batch_size: int = 32, shrinkage: str = "oas", levels: int = LEVELS,
                  max_positions: int = MAX_POSITIONS, seed: int = 0, progress=None) -> Statistics:
    """Reads ``data`` once and returns the moments and quantiles every statistics prior takes.

    Args:
      model: a :class:`jaxviz.Model` (yours: :func:`jaxviz.from_linen` / :func:`jaxviz.from_nnx`).
      layers: layer names (one forward pass for all).
      data: a numpy array ``[N, S, S, 3]`` (uint8, or float in ``[0, 1]``), any iterable of such batches,
        images or dicts with an ``image`` key (read once, to its end), or a :mod:`jaxviz.data` source.
      view: the moments' feature view (``pixel``, ``pooled``, ``patchK``).
      quantiles: also sample the per-channel quantiles (for ``priors.quantile``).
      batch_size: images per step.
      shrinkage: ``oas`` or ``ledoit-wolf`` (:func:`jaxviz.stats.estimate`).
      levels, max_positions, seed: the quantiles' levels and position subsample (``collect_quantiles``).
      progress: ``progress(images_done, images_total)`` after each step.

    Returns:
      A :class:`Statistics`.

    Raises:
      UsageError: no layers, an empty source, a bad view; UnknownLayerError.

    >>> import numpy as np, jaxviz
    >>> model = jaxviz.load_model("efficientnet_lite0")
    >>> photos = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    >>> stats = jaxviz.collect_stats(model, ["blocks.2"], photos, batch_size=2)
    >>> stats.layers["blocks.2"].mean.shape, stats.quantiles["blocks.2"].values.shape, stats.images
    ((24,), (24, 65), 4)
    """
    if not layers:
        raise UsageError("collect_stats: no layers given")
    layers = list(model.check_layers(list(layers)))
    view = views.parse_view(view)
    sampler = QuantileSampler(model, layers, max_positions=max_positions, seed=seed) if quantiles else None
    seen = [0]

    def on_batch(images):  # the same batches the moments pass reads: one pass over the data
        seen[0] += len(images)
        if sampler is not None:
            sampler.add(images)

    states = collect.collect_moments(model, layers, data, view=view, batch_size=batch_size, progress=progress,
                                     on_batch=on_batch)
    finished = {layer: moments.estimate(state, shrinkage=shrinkage) for layer, state in states.items()}
    return Statistics(finished, sampler.finish(levels) if sampler else None, view.name, model.name, seen[0])
