"""Names for the pluggable parts, so the CLI (and config files) can say ``--param fourier``.

The library itself works with objects: :func:`jaxviz.render.render` takes a parameterization, a
transform and a prior as objects satisfying :class:`jaxviz.param.Parameterization`,
:class:`jaxviz.transforms.Transform` and :class:`jaxviz.priors.Prior`. This module is the one place
that maps a name to the factory building such an object; :func:`resolve` accepts either.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from jaxviz.errors import UsageError

__all__ = ["KINDS", "names", "build", "resolve", "register"]


def _parameterizations() -> dict[str, Callable]:
    from jaxviz import param

    return {"pixel": param.pixel, "fourier": param.fourier, "maco": param.maco}


def _transforms() -> dict[str, Callable]:
    from jaxviz import transforms

    return {"default": transforms.default, "none": transforms.identity, "lucid": transforms.lucid,
            "maco": transforms.maco, "deepinversion": transforms.deepinversion}


def _priors() -> dict[str, Callable]:
    from jaxviz import priors

    from jaxviz import prior_bn_batch, prior_gaussian_match, prior_quantile

    return {"none": priors.none, "outliers": priors.outliers, "mahalanobis": priors.mahalanobis,
            "bn": priors.batchnorm_prior, "bn-batch": prior_bn_batch.pooled_batchnorm_prior,
            "quantile": prior_quantile.quantile, "gaussian": prior_gaussian_match.gaussian_match}


def _recipes() -> dict[str, Callable]:
    from jaxviz import recipes

    return dict(recipes.RECIPES)


KINDS: dict[str, Callable[[], dict[str, Callable]]] = {
    "parameterization": _parameterizations, "transform": _transforms, "prior": _priors, "recipe": _recipes,
}
_EXTRA: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}


def _table(kind: str) -> dict[str, Callable]:
    if kind not in KINDS:
        raise UsageError(f"unknown kind '{kind}' (choose {', '.join(KINDS)})")
    return {**KINDS[kind](), **_EXTRA[kind]}


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind`` (``parameterization``, ``transform`` or ``prior``)."""
    return tuple(_table(kind))


def register(kind: str, name: str, factory: Callable[..., Any]) -> None:
    """Makes ``name`` build ``factory(**options)`` (e.g. to reach your own part from a config)."""
    _table(kind)
    _EXTRA[kind][name] = factory


def build(kind: str, name: str, **options) -> Any:
    """The ``kind`` called ``name`` built with ``options``.

    Raises:
      UsageError: unknown name, or options the factory does not take.
    """
    table = _table(kind)
    if name not in table:
        raise UsageError(f"unknown {kind} '{name}' (choose {', '.join(table)})")
    factory = table[name]
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise UsageError(f"bad options for {kind} '{name}': {e}") from None
    return factory(**options)


def resolve(kind: str, value: Any, *, argument: str, protocol: type | None = None) -> Any:
    """``value`` as an object: a name is built with default options, an object is checked.

    Args:
      kind: ``parameterization``, ``transform`` or ``prior``.
      value: a registered name or an object.
      argument: the Python argument it came from (named in errors).
      protocol: a ``runtime_checkable`` protocol the object must satisfy.

    Raises:
      UsageError: unknown name, or an object lacking the protocol's methods.
    """
    if isinstance(value, str):
        return build(kind, value)
    if protocol is not None and not isinstance(value, protocol):
        wanted = ", ".join(m for m in protocol.__dict__ if not m.startswith("_") and callable(protocol.__dict__[m]))
        raise UsageError(f"{argument}= must be a {kind} name ({', '.join(names(kind))}) or an object with "
                         f"{wanted}; got {type(value).__name__}")
    return value
