"""Building a named part from a table of factories, with one clear error for a bad name or option."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from jaxviz.common.errors import UsageError

__all__ = ["build_named"]


def build_named(kind: str, name: str, table: Mapping[str, Callable[..., Any]], options: Mapping[str, Any]) -> Any:
    """``table[name](**options)``.

    Raises:
      UsageError: unknown ``name`` (the choices are listed), or options the factory does not take.
    """
    if name not in table:
        raise UsageError(f"unknown {kind} '{name}' (choose {', '.join(table)})")
    factory = table[name]
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise UsageError(f"bad options for {kind} '{name}': {e}") from None
    return factory(**options)
