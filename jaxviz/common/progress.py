"""One progress bar for every long job (steps, images), on stderr, silent when asked."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["progress_bar"]


def progress_bar(desc: str, *, unit: str = "step", quiet: bool = False,
                 total: int | None = None) -> tuple[Callable | None, Callable[[], None]]:
    """A tqdm bar driven by callbacks.

    Args:
      desc: label shown before the bar.
      unit: what is counted (``step``, ``img``...).
      quiet: no bar at all (the callback is then ``None``).
      total: the count when known up front.

    Returns:
      ``(update, close)``: ``update(done, total, value=None)`` moves the bar to ``done`` of
      ``total`` (``value`` is shown as the current objective); ``close()`` removes it.
    """
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(done, total, value=None):
        if bar.n == 0 and bar.initial == 0 and done:  # resumed: measure the rate from here
            bar.initial = done
        bar.total = total
        bar.n = done
        if value is not None:
            bar.set_postfix_str(f"objective {value:.3g}", refresh=False)
        bar.refresh()

    return update, bar.close
