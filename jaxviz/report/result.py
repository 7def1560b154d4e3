"""The result of a run: :class:`RenderResult` (images and traces, one row per target), and how it saves."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["RenderResult"]


class RenderResult(NamedTuple):
    """Images and traces of a run, one row per target.

    Attributes:
      images: ``[T, size, size, 3]`` float32 in ``[0, 1]``.
      activation: ``[T]`` final objective value on the untransformed image.
      history: ``[T, steps]`` objective value at each step (on the transformed image).
      trace: ``[T, steps]`` the prior's per-step scalar (e.g. mean D² at the stats layers).
      prior: ``{name: [T, ...]}`` prior diagnostics (e.g. suppressed neurons), possibly empty.
      targets: the targets' descriptions (``repr`` of the objectives).
      trace_name: what ``trace`` holds (``d2``, ``bn``...), or ``None`` for no prior.
    """

    images: np.ndarray
    activation: np.ndarray
    history: np.ndarray
    trace: np.ndarray
    prior: dict
    targets: tuple = ()
    trace_name: str | None = None

    def save(self, directory: str, *, labels: Sequence[str] | None = None, config: dict | None = None,
             title: str = "jaxviz") -> dict:
        """Writes the same gallery as ``jaxviz visualize`` (PNGs, grid, index.html, metrics.json).

        Returns:
          The metrics dict written to ``metrics.json``.
        """
        from jaxviz.report.gallery import write_result

        return write_result(directory, self, labels=labels, config=config, title=title)
