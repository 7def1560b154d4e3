"""Names for the pluggable parts, so the CLI (and config files) can say ``--param fourier``.

Names resolve in one direction: this module imports the parts (parameterizations, transforms,
priors, recipes); no part imports it (docs/design.md §2).

The library itself works with objects: :func:`jaxviz.render.render_images` takes a parameterization, a
transform and a prior as objects satisfying :class:`jaxviz.image.param.Parameterization`,
:class:`jaxviz.image.transforms.Transform` and :class:`jaxviz.priors.Prior`. This module is the one place
that maps a name to the factory building such an object; :func:`resolve` accepts either.
"""

from __future__ import annotations

from typing import Any, Callable

from jaxviz.common.errors import UsageError
from jaxviz.common.factories import build_named

__all__ = ["KINDS", "names", "build", "build_prior", "resolve", "register"]


def _parameterizations() -> dict[str, Callable]:
    from jaxviz.image import param

    return {"pixel": param.pixel, "fourier": param.fourier, "maco": param.maco}


def _transforms() -> dict[str, Callable]:
    from jaxviz.image import transforms

    return {"default": transforms.default, "none": transforms.identity, "lucid": transforms.lucid,
            "maco": transforms.maco, "deepinversion": transforms.deepinversion}


def _priors() -> dict[str, Callable]:
    from jaxviz import priors

    from jaxviz.priors import bn_batch as prior_bn_batch, gaussian as prior_gaussian_match, quantile_match as prior_quantile

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
    return build_named(kind, name, _table(kind), options)


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


def build_prior(name: str, *, model, stats_dir: str | None = None, layers=None, **options):
    """The prior called ``name`` (one of ``names("prior")``) for ``model``.

    Args:
      name: prior name.
      model: the model being visualized.
      stats_dir: output of ``jaxviz stats`` for ``outliers`` and ``mahalanobis``; ``None`` uses the
        pixel-view statistics that ship with jaxviz for ``model`` (README "The method").
      layers: which of the statistics' layers to use (default all; with the shipped statistics
        ``stats_store.SHIPPED_PRIOR_LAYERS``).
      **options: fields of the prior's dataclass (e.g. ``weight``, ``k``, ``every``).

    Raises:
      UsageError: unknown name, or statistics missing for a prior that needs them.
    """
    if name in ("outliers", "mahalanobis"):
        if not stats_dir:
            from jaxviz.stats import store as stats_store

            stats_dir = stats_store.shipped_stats_dir(model.name, "pixel")
            if stats_dir is None:
                raise UsageError(f"prior '{name}' needs statistics: no statistics ship for {model.name} "
                                 "(pass stats_dir= / --stats DIR; make them with `jaxviz stats`)")
            layers = stats_store.SHIPPED_PRIOR_LAYERS if layers is None else layers
        return build("prior", name, stats=stats_dir, model=model, layers=layers, **options)
    if name in ("quantile", "gaussian"):  # jaxviz.priors.quantile_match, jaxviz.priors.gaussian
        sources = {"stats": stats_dir, **({"quantiles": stats_dir} if name == "quantile" else {})} if stats_dir else {}
        return build("prior", name, model=model, layers=layers, **sources, **options)
    if name in ("bn", "bn-batch"):
        return build("prior", name, model=model, **options)
    return build("prior", name, **options)
