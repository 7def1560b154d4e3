"""The one table from names to parts, for the CLI, config files and the short path (``prior="outliers"``).

Names resolve in one direction: this module imports the parts (parameterizations, transforms,
priors, recipes); no part imports it (docs/design.md §2). The CLI's ``choices``, README's and
docs/design.md's lists are this table (a test checks the docs name every entry). The library itself
works with objects; :func:`resolve` accepts either, and :func:`register` adds your own part under a
name, for the CLI and the library alike (docs/design.md, "Adding a prior").

:func:`edit_recipe` is what the flags do: each changes the recipe's own part (its prior's weight, its
optimizer's learning rate...), never rebuilds it from a name; a flag that does not apply to the
recipe's parts is an error.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from jaxviz import priors, recipes
from jaxviz.common.errors import UsageError
from jaxviz.common.factories import build_named
from jaxviz.image import param, transforms

__all__ = ["KINDS", "names", "build", "build_prior", "prior_spec", "resolve", "register", "edit_recipe"]

# the built-in names of each kind; a factory taking ``size`` gets the render's size (the side the model sees)
KINDS: dict[str, dict[str, Callable[..., Any]]] = {
    "parameterization": {"pixel": param.pixel, "fourier": param.fourier, "maco": param.maco},
    "transform": {"default": transforms.default, "none": transforms.identity,
                  "lucid": lambda *, size=224: transforms.lucid(upsample=size),
                  "maco": lambda *, size=224: transforms.maco(out=size), "deepinversion": transforms.deepinversion},
    "prior": {"none": priors.none, "outliers": priors.outliers, "mahalanobis": priors.mahalanobis,
              "bn": priors.batchnorm_prior, "bn-batch": priors.pooled_batchnorm_prior, "quantile": priors.quantile,
              "gaussian": priors.gaussian_match},
    "recipe": recipes.RECIPES,
}
_EXTRA: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}


def _table(kind: str) -> dict[str, Callable]:
    if kind not in KINDS:
        raise UsageError(f"unknown kind '{kind}' (choose {', '.join(KINDS)})")
    return {**KINDS[kind], **_EXTRA[kind]}


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind`` (``parameterization``, ``transform``, ``prior`` or ``recipe``)."""
    return tuple(_table(kind))


def register(kind: str, name: str, factory: Callable[..., Any]) -> None:
    """Makes ``name`` build ``factory(**options)``, for the CLI (``--prior NAME``) and the library.

    A prior factory takes ``model=`` if it needs the model, and ``stats=`` / ``layers=`` if it reads
    statistics (then ``--stats`` and ``--stats-layers`` apply to it).
    """
    _table(kind)
    if not isinstance(name, str) or not name or name.startswith("-"):
        raise UsageError(f"a {kind} name must be a non-empty string not starting with '-', got {name!r}")
    _EXTRA[kind][name] = factory


def build(kind: str, name: str, **options) -> Any:
    """The ``kind`` called ``name`` built with ``options``.

    Raises:
      UsageError: unknown name, or options the factory does not take.
    """
    if kind == "recipe":
        return recipes.get(name, **options) if name in recipes.RECIPES else build_named(kind, name, _table(kind), options)
    return build_named(kind, name, _table(kind), options)


def _with_context(factory: Callable, options: dict, context: dict) -> dict:
    """``options`` plus the context values (``size``) the factory takes."""
    taken = inspect.signature(factory).parameters
    return {**{k: v for k, v in context.items() if k in taken}, **options}


def resolve(kind: str, value: Any, *, argument: str, protocol: type | None = None, **context) -> Any:
    """``value`` as an object: a name is built with default options (and ``context`` it takes), an object is checked.

    Args:
      kind: ``parameterization``, ``transform`` or ``prior``.
      value: a registered name or an object.
      argument: the Python argument it came from (named in errors).
      protocol: a ``runtime_checkable`` protocol the object must satisfy.

    Raises:
      UsageError: unknown name, or an object lacking the protocol's methods.
    """
    if isinstance(value, str):
        table = _table(kind)
        if value not in table:
            raise UsageError(f"unknown {kind} '{value}' for {argument}= (choose {', '.join(table)})")
        return build(kind, value, **_with_context(table[value], {}, context))
    if protocol is not None and not isinstance(value, protocol):
        members = [*getattr(protocol, "__annotations__", {}),
                   *(m for m, v in vars(protocol).items() if not m.startswith("_") and (callable(v) or isinstance(v, property)))]
        missing = [m for m in dict.fromkeys(members) if not hasattr(value, m)]
        raise UsageError(f"{argument}= must be a {kind} name ({', '.join(names(kind))}) or an object with "
                         f"{', '.join(dict.fromkeys(members))}; {type(value).__name__} lacks {', '.join(missing)}")
    return value


def prior_spec(name: str, **options) -> priors.PriorSpec:
    """A :class:`jaxviz.priors.PriorSpec` of the prior called ``name`` (options checked against its factory)."""
    table = _table("prior")
    if name not in table:
        raise UsageError(f"unknown prior '{name}' (choose {', '.join(table)})")
    return priors.PriorSpec(table[name], label=name).edit(**options)


def build_prior(name: str, *, model, stats_dir: str | None = None, layers=None, **options):
    """The prior called ``name`` for ``model`` (a statistics prior reads ``stats_dir``, default the shipped ones).

    Raises:
      UsageError: unknown name, options or statistics the prior does not take, or statistics missing.
    """
    return prior_spec(name, stats=stats_dir, layers=list(layers) if layers else None, **options).build(model)


def edit_recipe(recipe, *, parameterization: str | None = None, transform: str | None = None,
                prior: str | None = None, learning_rate: float | None = None, size: int | None = None,
                names: dict | None = None, **prior_options):
    """``recipe`` as the flags change it (the CLI's ``--param``, ``--transforms``, ``--prior``, ``--lr``,
    ``--weight``, ``--stats``...; ``jaxviz.visualize``'s ``prior=``, ``stats=``...); ``None``: unchanged.

    A name that is already the recipe's part keeps the recipe's own settings of it (``--prior bn`` on
    ``deepinversion`` keeps its first-layer weight); another name replaces the part; every other option
    edits the recipe's part (:meth:`jaxviz.recipes.Recipe.edit`).

    Args:
      recipe: a :class:`jaxviz.recipes.Recipe`.
      parameterization, transform, prior: registered names (``prior="none"``: no prior).
      learning_rate: the recipe optimizer's learning rate.
      size: the side the model sees (for a transform preset built from a name).
      names: how to name each argument in errors (the CLI passes its flags).
      **prior_options: options of the (possibly new) prior: ``weight``, ``stats``, ``layers``, ``k``...

    Raises:
      UsageError: unknown names, or a setting that does not apply to the recipe's parts.
    """
    import dataclasses

    names = names or {}
    changes: dict = {}
    context = {} if size is None else {"size": size}
    if parameterization is not None:
        built = resolve("parameterization", parameterization, argument=names.get("parameterization", "parameterization"))
        if type(built) is not type(recipe.parameterization):
            changes["parameterization"] = built
    if transform is not None:
        built = resolve("transform", transform, argument=names.get("transform", "transform"), **context)
        if built != recipe.transform:
            changes["transform"] = built
    if prior is not None:
        table = _table("prior")
        if prior not in table:
            raise UsageError(f"unknown prior '{prior}' for {names.get('prior', 'prior=')} (choose {', '.join(table)})")
        if prior == "none":
            changes["prior"] = None
        elif not (isinstance(recipe.prior, priors.PriorSpec) and recipe.prior.factory is table[prior]):
            changes["prior"] = prior_spec(prior)
    edited = dataclasses.replace(recipe, **changes) if changes else recipe
    return edited.edit(names=names, learning_rate=learning_rate, **prior_options)
