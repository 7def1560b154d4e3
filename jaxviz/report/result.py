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
      record: the run's settings: the recipe and every part (``metrics.json``'s ``config``).

    In a notebook a result shows itself as a compact gallery (``_repr_html_``); elsewhere
    :meth:`show` writes that gallery to a temporary HTML file and prints its path.
    """

    images: np.ndarray
    activation: np.ndarray
    history: np.ndarray
    trace: np.ndarray
    prior: dict
    targets: tuple = ()
    trace_name: str | None = None
    record: dict | None = None

    def save(self, directory: str, *, labels: Sequence[str] | None = None, config: dict | None = None,
             title: str = "jaxviz", force: bool = False) -> dict:
        """Writes the same gallery as ``jaxviz visualize`` (PNGs, grid, index.html, metrics.json).

        ``config`` defaults to :attr:`record`. The folder follows the output-folder rule (README
        "Guarantees"): one holding files jaxviz did not write is refused unless ``force`` (they are
        never touched), and it takes the same lock as the CLI. Returns the metrics dict written.
        """
        from jaxviz.report.gallery import write_result

        return write_result(directory, self, labels=labels, config=self.record if config is None else config,
                            title=title, force=force)

    @classmethod
    def load(cls, directory: str) -> "RenderResult":
        """The result :meth:`save` (or ``jaxviz visualize``) wrote to ``directory``.

        Raises:
          DataError: a file is missing, damaged or altered since it was written (one line naming it).
        """
        from jaxviz.report.gallery import read_result

        return cls(**read_result(directory))

    def show(self, **options):
        """Displays the gallery (see :func:`jaxviz.report.notebook.show`)."""
        from jaxviz.report.notebook import show

        return show(self, **options)

    def _repr_html_(self):
        from jaxviz.report.notebook import result_html

        return result_html(self)

    def __repr__(self):
        from jaxviz.report.notebook import result_repr

        return result_repr(self)
