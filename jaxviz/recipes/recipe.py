"""A recipe as data: the parts of one render (:class:`Recipe`), its optimizer (:class:`Optimizer`) and the
schedule part the engine runs (:class:`Schedule`). The named recipes: :mod:`jaxviz.recipes.builtin`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import optax

from jaxviz import objectives, priors
from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.image import transforms
from jaxviz.recipes.parts import deepdream_optimizer, deepinversion_optimizer

__all__ = ["Recipe", "Optimizer", "Schedule"]


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A recipe's optimizer with its hyperparameters: ``Optimizer(steps) -> optax transformation``.

    Attributes:
      name: an optax optimizer (``adam``, ``nadam``...), ``deepinversion`` (Adam(0.5, 0.9)
        with warm-up and cosine decay, then pixels clipped to ``[0, 1]``) or ``deepdream`` (plain
        gradient ascent normalized by the mean absolute gradient, :func:`deepdream_optimizer`).
      learning_rate: the (peak) step size.
      options: other keyword arguments of the optax optimizer, as ``((name, value), ...)``.
    """

    name: str
    learning_rate: float
    options: tuple = ()

    def __call__(self, steps: int) -> optax.GradientTransformation:
        if self.name == "deepinversion":
            return deepinversion_optimizer(steps, self.learning_rate)
        if self.name == "deepdream":
            return deepdream_optimizer(self.learning_rate)
        return getattr(optax, self.name)(self.learning_rate, **dict(self.options))

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"{self.name}(learning_rate={self.learning_rate:.6g}{extra})"


@part
class Schedule:
    """The optimizer a render steps once per pass: a recipe's :class:`Optimizer` at a budget of passes,
    with its crops accumulated into one update by ``optax.MultiSteps`` (a static pytree part)."""

    optimizer: Any = static()
    passes: int = static()
    crops: int = static(1)

    def make(self) -> optax.GradientTransformation:
        crops = max(1, min(self.crops, self.passes))  # a budget below one step accumulates all its passes
        inner = self.optimizer(max(1, self.passes // crops))
        return inner if crops == 1 else optax.MultiSteps(inner, every_k_schedule=crops).gradient_transformation()

    def __repr__(self):
        crops = max(1, min(self.crops, self.passes))
        return repr(self.optimizer) + (f" over {crops} passes (optax.MultiSteps)" if crops > 1 else "")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One anchor's complete settings: data, which flags and arguments edit (:meth:`edit`).

    Attributes:
      name: the registry name.
      parameterization: a :class:`jaxviz.image.param.Parameterization`.
      transform: a :class:`jaxviz.image.transforms.Transform` (applied before every forward pass).
      optimizer: an :class:`Optimizer` (``optimizer(steps) -> optax.GradientTransformation``, one
        update per step: schedules need the step count).
      steps: optimizer steps.
      size: image side (the canvas; transforms may resize what the model sees).
      prior: a :class:`jaxviz.priors.PriorSpec` (built for the model by :meth:`build_prior`), a prior
        object, or ``None``.
      image_penalty: ``f(image [S,S,3] in [0,1]) -> scalar`` (a pytree part), or ``None``.
      crops_per_step: forward-backward passes averaged into one update.
      notes: what is faithful to the source and what is scaled down.
      objective: ``objective(class_index) -> Objective``, the source's class objective
        (``None``: :func:`jaxviz.objectives.class_logit`), see :meth:`target`.
    """

    name: str
    parameterization: Any
    transform: Any
    optimizer: Any
    steps: int
    size: int
    prior: Any = None
    image_penalty: Any = None
    crops_per_step: int = 1
    notes: str = ""
    objective: Callable[[int], Any] | None = None

    def target(self, class_index: int):
        """The objective this recipe's source maximizes for ImageNet class ``class_index``."""
        return (self.objective or objectives.class_logit)(class_index)

    @property
    def passes(self) -> int:
        """Forward-backward passes of the model per image (``steps × crops_per_step``)."""
        return self.steps * self.crops_per_step

    def at_budget(self, passes: int) -> "Recipe":
        """The same recipe with ``passes // crops_per_step`` optimizer steps."""
        if passes < self.crops_per_step:
            raise UsageError(f"recipe {self.name}: a budget of {passes} passes is below one step "
                             f"({self.crops_per_step} crops)")
        steps = passes // self.crops_per_step
        # a transform with a schedule over the steps (maco-full's crop side) follows the new step count
        return dataclasses.replace(self, steps=steps, transform=transforms.at_steps(self.transform, steps, self.crops_per_step))

    def schedule(self, passes: int | None = None) -> Schedule:
        """The optimizer part of a render of ``passes`` passes (default :attr:`passes`)."""
        return Schedule(self.optimizer, self.passes if passes is None else int(passes), self.crops_per_step)

    def build_prior(self, model):
        """The recipe's prior for ``model`` (:func:`jaxviz.priors.none` when it has none)."""
        if self.prior is None:
            return priors.none()
        return self.prior.build(model) if isinstance(self.prior, priors.PriorSpec) else self.prior

    def parts(self, model) -> dict:
        """Keyword arguments of :func:`jaxviz.render.render_images` for ``model``: this recipe, with its prior
        built once (for many renders with the same prior)."""
        return {"recipe": self, "prior": self.build_prior(model)}

    def config(self, **overrides):
        """A :class:`jaxviz.render.RenderConfig` with this recipe's size and pass count."""
        from jaxviz.recipes.config import RenderConfig

        return RenderConfig(**{"size": self.size, "steps": self.passes, **overrides})

    def edit(self, *, names: dict | None = None, learning_rate: float | None = None, **prior_options) -> "Recipe":
        """This recipe with its own parts' settings changed: the optimizer's learning rate, and options of
        its prior (``weight``, ``stats``, ``layers``, ``k``...); ``None`` values change nothing.

        Args:
          names: how to name each setting in errors (the CLI passes its flags); default ``name=``.

        Raises:
          UsageError: a setting that does not apply to this recipe's parts.
        """
        names = names or {}
        recipe = self
        if learning_rate is not None:
            if isinstance(learning_rate, bool) or not (isinstance(learning_rate, (int, float))
                                                       and math.isfinite(learning_rate) and learning_rate > 0):
                raise UsageError(f"{names.get('learning_rate', 'learning_rate=')} must be a finite number > 0, "
                                 f"got {learning_rate!r}")
            if not isinstance(self.optimizer, Optimizer):
                raise UsageError(f"{names.get('learning_rate', 'learning_rate=')} does not apply: recipe {self.name}'s "
                                 "optimizer has no learning rate to change; pass an optimizer instead")
            recipe = dataclasses.replace(recipe, optimizer=dataclasses.replace(
                self.optimizer, learning_rate=float(learning_rate)))
        given = {k: v for k, v in prior_options.items() if v is not None}
        if given:
            if not isinstance(self.prior, priors.PriorSpec):
                shown = ", ".join(names.get(k, f"{k}=") for k in given)
                what = "has no prior" if self.prior is None else "has a prior object, not a spec, to edit"
                raise UsageError(f"{shown} does not apply: recipe {self.name} {what} (choose one with "
                                 f"{names.get('prior', 'prior=')})")
            recipe = dataclasses.replace(recipe, prior=self.prior.edit(names=names, **given))
        return recipe

    def describe(self) -> dict:
        """The recipe's parts as text, for records (``metrics.json``)."""
        return {"recipe": self.name, "parameterization": repr(self.parameterization),
                "transform": repr(self.transform), "optimizer": repr(self.optimizer),
                "optimizer_steps": self.steps, "crops_per_step": self.crops_per_step, "size": self.size,
                "prior": repr(self.prior) if self.prior is not None else "none"}
