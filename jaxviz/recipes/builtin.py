"""The anchors' full settings as named recipes: Lucid/Lucent, MaCo and DeepInversion.

A :class:`Recipe` bundles everything that makes a baseline what it is — parameterization,
transforms, optimizer, step count, prior, image penalty, crops per step — built from jaxviz's
public parts, each checked against its source's code (named in its ``notes``). Use one as::

    recipe = recipes.get("lucid")
    targets = [recipe.target(c) for c in (207, 281)]     # the source's class objective
    result = render.render_images(model, targets, config=recipe.config(), **recipe.parts(model))

Budgets are counted in forward-backward passes of the model per image: a recipe with ``K`` crops
per step runs ``K`` passes per optimizer step (gradients of the ``K`` crops are averaged by
``optax.MultiSteps`` before one update, as the sources average their crops' losses), so
``render`` runs ``steps × K`` steps. :meth:`Recipe.at_budget` rescales a recipe to a number of
passes for equal-compute comparisons.

What each recipe keeps from its source and what it scales down:

- ``lucid``: Lucent's ``render_vis`` defaults exactly: Fourier image with the unnormalized
  ``1 / max(f, 1/size)`` scale, image / 4, Lucid's colour matrix, sigmoid, init sd 0.01; its
  standard transforms then upsampling to 224; Adam 0.05; 512 steps at 128 px.
- ``maco``: Xplique's MaCo: phase-only, magnitude of real photos, standardized phases, NAdam
  lr 1.0 (Keras eps 1e-7), random crop-and-resize to 224 plus noise 0.04 per pass. Scaled down:
  Xplique runs 256 steps × 32 crops on a 512² canvas with crop sides shrinking 0.5 → 0.05 over the
  steps; here 128 steps × 4 crops on a 224² canvas, crop side uniform in 0.6–1.0 (a transform has
  no step counter). Measured at 256 passes on 4 classes (held-out Lite2): sides 0.6–1.0 gave top-5
  4/4, p(target) 0.30, plausibility rank 1.0; the paper's 0.3–0.6 (25–30 % of the area) left most
  of the small canvas unoptimized: 1/4, 0.015, rank 58.
- ``deepinversion``: BN prior 0.01 with the first BN × 10, TV-L2 1e-4 and L2 1e-5 on the input in
  torchvision-normalized units, circular jitter 30 + flip, Adam(β 0.5, 0.9) lr 0.25 with a linear
  warm-up and cosine decay (DeepInversion's ``setting_id`` 0/1), pixels clipped to the valid range
  after each step. Its units are torchvision's normalized ones (1 unit = 0.226 of the ``[0, 1]``
  range), so lr 0.25 and init ``N(0, 1)`` become 0.0565 and ``N(0.5, 0.226)`` here. Scaled down:
  2,000 steps (``setting_id`` 1) → 512, warm-up 100 → 5 % of the steps. Its class objective is
  the cross entropy (:func:`class_log_probability`, ``Recipe.target``): unlike a logit, it stops
  pushing once the class is certain, and the priors then clean the image. DeepInversion pools the
  BN moments over a batch of 84+ images; here they are per image, or with ``pooled=True`` pooled
  over the batch of targets optimized together (:mod:`jaxviz.priors.bn_batch`).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

import optax


from jaxviz import objectives, priors
from jaxviz.image import param
from jaxviz.image import transforms
from jaxviz.common.errors import UsageError
from jaxviz.recipes.parts import (TORCHVISION_MEAN, TORCHVISION_STD, TORCHVISION_UNIT, ClassLogProbability,
                                   class_log_probability, deepinversion_optimizer, deepinversion_penalty, l2_norm,
                                   project_box, total_variation_l2)

__all__ = ["Recipe", "Optimizer", "DEFAULT", "NAMES", "RECIPES", "get", "resolve", "lucid", "maco", "deepinversion",
           "quantile", "gaussian", "project_box",
           "ClassLogProbability", "class_log_probability",
           "total_variation_l2", "l2_norm", "deepinversion_penalty", "TORCHVISION_MEAN", "TORCHVISION_STD"]


# The recipe `render`, `jaxviz.visualize` and `jaxviz visualize` use unless told otherwise: the best
# one measured in README "Experiments" (the realism table: MaCo leads every baseline on transfer
# and plausibility; the method on MaCo is within noise of it at 1.1x the cost). Keep README in sync.
DEFAULT = "maco"


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """A recipe's optimizer with its hyperparameters: ``Optimizer(steps) -> optax transformation``.

    Attributes:
      name: an optax optimizer (``adam``, ``nadam``...), or ``deepinversion`` (Adam(0.5, 0.9)
        with warm-up and cosine decay, then pixels clipped to ``[0, 1]``).
      learning_rate: the (peak) step size.
      options: other keyword arguments of the optax optimizer, as ``((name, value), ...)``.
    """

    name: str
    learning_rate: float
    options: tuple = ()

    def __call__(self, steps: int) -> optax.GradientTransformation:
        if self.name == "deepinversion":
            return deepinversion_optimizer(steps, self.learning_rate)
        return getattr(optax, self.name)(self.learning_rate, **dict(self.options))

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"{self.name}(learning_rate={self.learning_rate:.6g}{extra})"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One anchor's complete settings.

    Attributes:
      name: the registry name.
      parameterization: a :class:`jaxviz.image.param.Parameterization`.
      transform: a :class:`jaxviz.image.transforms.Transform` (applied before every forward pass).
      optimizer: ``optimizer(steps) -> optax.GradientTransformation`` for one update per step
        (a factory: schedules need the step count).
      steps: optimizer steps.
      size: image side (the canvas; transforms may resize what the model sees).
      prior: ``prior(model) -> Prior``, or ``None``.
      image_penalty: ``image_penalty(model) -> f(image [S,S,3] in [0,1]) -> scalar``, or ``None``.
      crops_per_step: forward-backward passes averaged into one update.
      notes: what is faithful to the source and what is scaled down.
      objective: ``objective(class_index) -> Objective``, the source's class objective
        (``None``: :func:`jaxviz.objectives.class_logit`), see :meth:`target`.
    """

    name: str
    parameterization: Any
    transform: Any
    optimizer: Callable[[int], optax.GradientTransformation]
    steps: int
    size: int
    prior: Callable[[Any], Any] | None = None
    image_penalty: Callable[[Any], Callable] | None = None
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
        return dataclasses.replace(self, steps=passes // self.crops_per_step)

    def make_optimizer(self, passes: int | None = None) -> optax.GradientTransformation:
        """The optimizer ``render`` steps once per pass (crops accumulated by ``optax.MultiSteps``).

        ``passes``: the run's pass count when it differs from :attr:`passes` (schedules follow it; a
        budget below one step accumulates all its passes into one update).
        """
        crops = self.crops_per_step if passes is None else max(1, min(self.crops_per_step, passes))
        inner = self.optimizer(self.steps if passes is None else max(1, passes // crops))
        if crops == 1:
            return inner
        return optax.MultiSteps(inner, every_k_schedule=crops).gradient_transformation()

    def parts(self, model) -> dict:
        """Keyword arguments of :func:`jaxviz.render.render_images` for ``model``."""
        return dict(parameterization=self.parameterization, transform=self.transform,
                    optimizer=self.make_optimizer(), prior=self.prior(model) if self.prior else None,
                    image_penalty=self.image_penalty(model) if self.image_penalty else None)

    def config(self, **overrides):
        """A :class:`jaxviz.render.RenderConfig` with this recipe's size and pass count (its parts
        stay the recipe's: ``param``, ``transforms`` and ``learning_rate`` are left unset)."""
        from jaxviz.recipes.config import RenderConfig

        return RenderConfig(**{"size": self.size, "steps": self.passes, **overrides})

    def override(self, *, parameterization=None, transform=None, learning_rate: float | None = None,
                 prior=None) -> "Recipe":
        """This recipe with some parts replaced (``None`` keeps the recipe's); names are resolved by
        :mod:`jaxviz.registry` when rendering. ``prior``: a ``Prior`` object (``"none"``: no prior)."""
        changes: dict = {}
        if parameterization is not None:
            changes["parameterization"] = parameterization
        if transform is not None:
            changes["transform"] = transform
        if learning_rate is not None:
            if not isinstance(self.optimizer, Optimizer):
                raise UsageError(f"recipe {self.name}: its optimizer has no learning rate to change; "
                                 "pass an optimizer instead")
            changes["optimizer"] = dataclasses.replace(self.optimizer, learning_rate=float(learning_rate))
        if prior is not None:
            changes["prior"] = None if prior == "none" else (lambda model: prior)
        return dataclasses.replace(self, **changes) if changes else self

    def describe(self) -> dict:
        """The recipe's parts as text, for records (``metrics.json``)."""
        return {"recipe": self.name, "parameterization": repr(self.parameterization),
                "transform": repr(self.transform), "optimizer": repr(self.optimizer),
                "optimizer_steps": self.steps, "crops_per_step": self.crops_per_step, "size": self.size}


# ---------------------------------------------------------------------------- building blocks


# ---------------------------------------------------------------------------------- recipes


def _canvas(size: int, native: int) -> int:
    return max(16, int(round(native * size / 224)))


def lucid(*, size: int = 224) -> Recipe:
    """Lucid/Lucent's ``render_vis(model, objective)`` defaults (see the module docstring).

    Args:
      size: side of what the model sees (Lucent: a 128 px image upsampled to 224); the canvas
        keeps Lucent's ratio, ``128/224`` of it.
    """
    return Recipe(
        name="lucid",
        parameterization=param.fourier(normalize=False, gain=0.25, color="lucid", sd=0.01),
        transform=transforms.lucid(upsample=size),
        optimizer=Optimizer("adam", 0.05),
        steps=512, size=_canvas(size, 128),
        notes=f"Lucent render_vis defaults: param.image(128) (fft, decorrelate, sigmoid), standard_transforms, "
              f"upsample to 224, Adam 0.05, 512 steps. Exact at size 224 (here: {_canvas(size, 128)} px upsampled "
              f"to {size}).")


def maco(*, size: int = 224) -> Recipe:
    """Xplique's MaCo, scaled to 512 passes (see the module docstring); ``size``: canvas and crop side."""
    return Recipe(
        name="maco",
        parameterization=param.maco(normalize_phase=True),
        transform=transforms.maco(side=(0.6, 1.0), out=size, sd=0.04),
        optimizer=Optimizer("nadam", 1.0, (("eps", 1e-7),)),
        steps=128, size=size, crops_per_step=4,
        notes=f"Xplique maco(): phase-only with real photos' magnitude, standardized phase, NAdam 1.0, crops "
              f"resized to the model side + noise 0.04. Scaled: 256 steps x 32 crops on 512^2 -> 128 x 4 on {size}^2; "
              f"crop side uniform 0.6-1.0 instead of 0.5 -> 0.05 over the steps (measured better at this budget).")


def deepinversion(*, size: int = 224, pooled: bool = False) -> Recipe:
    """DeepInversion's ImageNet inversion, scaled to 512 steps (see the module docstring).

    Args:
      size: canvas side.
      pooled: BN moments pooled over the batch, as DeepInversion does
        (:mod:`jaxviz.priors.bn_batch`; the batch is one launch, ``RenderConfig.batch_size`` targets);
        default per image.
    """
    if pooled:
        from jaxviz.priors import bn_batch as prior_bn_batch

        recipe = deepinversion(size=size)
        return dataclasses.replace(
            recipe, prior=lambda model: prior_bn_batch.pooled_batchnorm_prior(model, weight=0.01, first_weight=10.0),
            notes=recipe.notes.replace("per-image BN moments", "BN moments pooled over the batch (one launch)"))
    return Recipe(
        name="deepinversion",
        parameterization=param.pixel(sd=TORCHVISION_UNIT, squash="clip"),
        transform=transforms.deepinversion(shift=_canvas(size, 30)),
        optimizer=Optimizer("deepinversion", 0.25 * TORCHVISION_UNIT),
        steps=512, size=size,
        prior=lambda model: priors.batchnorm_prior(model, weight=0.01, first_weight=10.0),
        image_penalty=lambda model: deepinversion_penalty(tv_l2=1e-4, l2=1e-5),
        objective=class_log_probability,
        notes="DeepInversion imagenet_inversion.py (README command): r_feature 0.01, first BN x10, tv_l2 1e-4, "
              "l2 1e-5, jitter 30 (roll) + flip, Adam(0.5, 0.9) lr 0.25 cosine with warm-up, clip to the valid "
              "range, cross-entropy objective (Recipe.target). Scaled: 2000 steps -> 512; per-image BN moments.")


def jaxviz(*, size: int = 224) -> Recipe:
    """jaxviz's own defaults: unit-RMS Fourier with the photos' colour matrix, default transforms, Adam 0.05."""
    return Recipe(
        name="jaxviz", parameterization=param.fourier(), transform=transforms.default(),
        optimizer=Optimizer("adam", 0.05), steps=512, size=size,
        notes="jaxviz visualize defaults (fourier, default transforms, Adam 0.05), no prior.")


def outliers(*, size: int = 224, base: str = "maco", stats: str | None = None, view: str = "pixel",
             layers: Sequence[str] | None = None, **prior_options) -> Recipe:
    """The method: ``base``'s recipe plus the outlier prior.

    Args:
      size: as the base recipe.
      base: the recipe whose parameterization, transforms and optimizer are used (default ``maco``,
        chosen by the method study in README "Experiments").
      stats: a ``jaxviz stats`` folder; default the statistics shipped for the model and ``view``.
      view: ``pixel``, ``patch3`` or ``pooled`` (which shipped statistics to use).
      layers: the statistics' layers to use (default: the shipped default for ``pixel``, else all).
      **prior_options: :class:`jaxviz.priors.OutlierPrior` options (``weight``, ``k``, ``penalty``...).
    """
    if base not in RECIPES or base in _STATISTICS_RECIPES:
        raise UsageError(f"unknown base recipe '{base}' (choose "
                         f"{', '.join(n for n in RECIPES if n not in _STATISTICS_RECIPES)})")
    recipe = RECIPES[base](size=size)
    priors.check_options("outliers", priors.OutlierPrior, **prior_options)

    def prior(model):
        from jaxviz.stats import store as stats_store

        folder = stats or stats_store.shipped_stats_dir(model.name, view)
        if folder is None:
            raise UsageError(f"no {view} statistics ship for {model.name}; pass stats=")
        chosen = list(layers) if layers else (list(stats_store.SHIPPED_PRIOR_LAYERS)
                                              if stats is None and view == "pixel" else None)
        return priors.outliers(folder, model=model, layers=chosen, **prior_options)

    described = ", ".join(f"{k}={v}" for k, v in
                          {"view": view, "layers": list(layers) if layers else "default", **prior_options}.items())
    return dataclasses.replace(recipe, name="outliers", prior=prior,
                               notes=f"{base} recipe + outlier prior ({described}).")


def _statistics_recipe(name: str, factory: Callable, *, size: int, base: str, options: dict) -> Recipe:
    """``base``'s recipe plus the prior ``factory(model=..., **options)`` (checked now, built per model)."""
    if base not in RECIPES or base in _STATISTICS_RECIPES:
        raise UsageError(f"unknown base recipe '{base}' (choose lucid, maco, deepinversion, jaxviz)")
    try:
        inspect.signature(factory).bind(model=None, **options)
    except TypeError as e:
        raise UsageError(f"bad options for recipe '{name}': {e}") from None
    described = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    return dataclasses.replace(RECIPES[base](size=size), name=name, prior=lambda model: factory(model=model, **options),
                               notes=f"{base} recipe + {name} prior ({described}).")


def quantile(*, size: int = 224, base: str = "maco", **prior_options) -> Recipe:
    """``base``'s recipe plus the quantile-matching prior (:func:`jaxviz.priors.quantile_match.quantile` options)."""
    from jaxviz.priors import quantile_match as prior_quantile

    return _statistics_recipe("quantile", prior_quantile.quantile, size=size, base=base, options=prior_options)


def gaussian(*, size: int = 224, base: str = "maco", **prior_options) -> Recipe:
    """``base``'s recipe plus joint Gaussian matching (:func:`jaxviz.priors.gaussian.gaussian_match` options)."""
    from jaxviz.priors import gaussian as prior_gaussian_match

    return _statistics_recipe("gaussian", prior_gaussian_match.gaussian_match, size=size, base=base,
                              options=prior_options)


_STATISTICS_RECIPES = ("outliers", "quantile", "gaussian")
RECIPES: dict[str, Callable[..., Recipe]] = {"lucid": lucid, "maco": maco, "deepinversion": deepinversion,
                                             "jaxviz": jaxviz, "outliers": outliers, "quantile": quantile,
                                             "gaussian": gaussian}
NAMES: tuple[str, ...] = tuple(RECIPES)


def get(name: str, **options) -> Recipe:
    """The recipe called ``name`` (one of :data:`NAMES`) built with ``options`` (e.g. ``size=160``).

    Raises:
      UsageError: unknown name or options.
    """
    if name not in RECIPES:
        raise UsageError(f"unknown recipe '{name}' (choose {', '.join(NAMES)})")
    try:
        inspect.signature(RECIPES[name]).bind(**options)
    except TypeError as e:
        raise UsageError(f"bad options for recipe '{name}': {e}") from None
    return RECIPES[name](**options)


def resolve(recipe=None, *, size: int | None = None) -> Recipe:
    """A :class:`Recipe` from an object, a name (built at ``size``, default 224) or ``None`` (:data:`DEFAULT`).

    Raises:
      UsageError: unknown name, or not a recipe.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if recipe is None or isinstance(recipe, str):
        return get(recipe or DEFAULT, **({} if size is None else {"size": size}))
    raise UsageError(f"recipe must be a jaxviz.recipes.Recipe or one of {', '.join(NAMES)}, "
                     f"got {type(recipe).__name__}")
