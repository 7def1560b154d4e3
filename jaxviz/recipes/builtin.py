"""The anchors' full settings as named recipes: Lucid/Lucent, MaCo and DeepInversion.

A :class:`Recipe` bundles everything that makes a baseline what it is — parameterization,
transforms, optimizer, step count, prior, image penalty, crops per step — built from jaxviz's
public parts, each checked against its source's code (named in its ``notes``). Use one as::

    recipe = recipes.get("lucid")
    targets = [recipe.target(c) for c in (207, 281)]     # the source's class objective
    result = render.render_images(model, targets, config=recipe.config(), recipe=recipe)

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
  steps; here 128 steps × 4 crops on a 224² canvas, crop side uniform in 0.6–1.0 (the paper's 0.3–0.6
  leaves most of a small canvas unoptimized at this budget: README "Experiments").
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
from typing import Callable

from jaxviz import priors
from jaxviz.common.errors import UsageError
from jaxviz.image import param, transforms
from jaxviz.recipes.full import deepdream, maco_full
from jaxviz.recipes.parts import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    TORCHVISION_UNIT,
    ClassLogProbability,
    class_log_probability,
    deepinversion_penalty,
    l2_norm,
    project_box,
    total_variation_l2,
)
from jaxviz.recipes.recipe import Optimizer, Recipe, Schedule

__all__ = ["Recipe", "Optimizer", "Schedule", "DEFAULT", "NAMES", "RECIPES", "get", "resolve", "lucid", "maco", "deepinversion",
           "quantile", "gaussian", "project_box",
           "ClassLogProbability", "class_log_probability",
           "total_variation_l2", "l2_norm", "deepinversion_penalty", "TORCHVISION_MEAN", "TORCHVISION_STD"]


# The recipe `render`, `jaxviz.visualize` and `jaxviz visualize` use unless told otherwise: the best
# one measured in README "Experiments" (the realism table: MaCo leads every baseline on transfer
# and plausibility; the method on MaCo is within noise of it at 1.1x the cost). Keep README in sync.
DEFAULT = "maco"


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
        recipe = deepinversion(size=size)
        return dataclasses.replace(
            recipe, prior=priors.PriorSpec(priors.pooled_batchnorm_prior, (("weight", 0.01), ("first_weight", 10.0))),
            notes=recipe.notes.replace("per-image BN moments", "BN moments pooled over the batch (one launch)"))
    return Recipe(
        name="deepinversion",
        parameterization=param.pixel(sd=TORCHVISION_UNIT, squash="clip"),
        transform=transforms.deepinversion(shift=_canvas(size, 30)),
        optimizer=Optimizer("deepinversion", 0.25 * TORCHVISION_UNIT),
        steps=512, size=size,
        prior=priors.PriorSpec(priors.batchnorm_prior, (("weight", 0.01), ("first_weight", 10.0))),
        image_penalty=deepinversion_penalty(tv_l2=1e-4, l2=1e-5),
        objective=class_log_probability,
        notes="DeepInversion imagenet_inversion.py (README command): r_feature 0.01, first BN x10, tv_l2 1e-4, "
              "l2 1e-5, jitter 30 (roll) + flip, Adam(0.5, 0.9) lr 0.25 cosine with warm-up, clip to the valid "
              "range, cross-entropy objective (Recipe.target). Scaled: 2000 steps -> 512; per-image BN moments.")


DEEPINVERSION_STEPS = 2000


def deepinversion_full(*, size: int = 224) -> Recipe:
    """DeepInversion unscaled: 2,000 iterations, BN moments pooled over the batch (see the module docstring)."""
    base = deepinversion(size=size, pooled=True)
    return dataclasses.replace(
        base, name="deepinversion-full", steps=DEEPINVERSION_STEPS,
        notes=f"DeepInversion imagenet_inversion.py (setting_id 1): {DEEPINVERSION_STEPS} iterations at {size} px, "
              "BN moments pooled over the launch's batch, first BN x10, tv_l2 1e-4, l2 1e-5, roll 30 + flip, "
              "Adam(0.5, 0.9) lr 0.25, 100 warm-up steps then cosine, clip, cross entropy. Differs: float32, "
              "no best-loss image selection, batch = one launch.")


def jaxviz(*, size: int = 224) -> Recipe:
    """jaxviz's own defaults: unit-RMS Fourier with the photos' colour matrix, default transforms, Adam 0.05."""
    return Recipe(
        name="jaxviz", parameterization=param.fourier(), transform=transforms.default(),
        optimizer=Optimizer("adam", 0.05), steps=512, size=size,
        notes="jaxviz visualize defaults (fourier, default transforms, Adam 0.05), no prior.")


def _with_prior(name: str, factory: Callable, *, size: int, base: str, options: dict) -> Recipe:
    """``base``'s recipe plus the prior ``factory(model=..., **options)`` (its options checked now)."""
    if base not in RECIPES or base in _STATISTICS_RECIPES:
        raise UsageError(f"unknown base recipe '{base}' (choose "
                         f"{', '.join(n for n in RECIPES if n not in _STATISTICS_RECIPES)})")
    try:
        inspect.signature(factory).bind(model=None, **options)
    except TypeError as e:
        raise UsageError(f"bad options for recipe '{name}': {e}") from None
    described = ", ".join(f"{k}={v}" for k, v in options.items()) or "defaults"
    return dataclasses.replace(RECIPES[base](size=size), name=name,
                               prior=priors.PriorSpec(factory, tuple(options.items())),
                               notes=f"{base} recipe + {name} prior ({described}).")


def outliers(*, size: int = 224, base: str = "maco", **prior_options) -> Recipe:
    """The method: ``base``'s recipe plus the outlier prior (:func:`jaxviz.priors.outliers` options:
    ``stats``, ``layers``, ``weight``, ``k``...; default the shipped statistics)."""
    priors.check_options("outliers", priors.OutlierPrior, **{k: v for k, v in prior_options.items()
                                                            if k not in ("stats", "layers", "view")})
    return _with_prior("outliers", priors.outliers, size=size, base=base, options=prior_options)


def quantile(*, size: int = 224, base: str = "maco", **prior_options) -> Recipe:
    """``base``'s recipe plus the quantile-matching prior (:func:`jaxviz.priors.quantile_match.quantile` options)."""
    return _with_prior("quantile", priors.quantile, size=size, base=base, options=prior_options)


def gaussian(*, size: int = 224, base: str = "maco", **prior_options) -> Recipe:
    """``base``'s recipe plus joint Gaussian matching (:func:`jaxviz.priors.gaussian.gaussian_match` options)."""
    return _with_prior("gaussian", priors.gaussian_match, size=size, base=base, options=prior_options)


_STATISTICS_RECIPES = ("outliers", "quantile", "gaussian")
RECIPES: dict[str, Callable[..., Recipe]] = {"lucid": lucid, "maco": maco, "deepinversion": deepinversion,
                                             "jaxviz": jaxviz, "outliers": outliers, "quantile": quantile,
                                             "gaussian": gaussian, "maco-full": maco_full,
                                             "deepinversion-full": deepinversion_full,
                                             "deepdream": deepdream}
NAMES: tuple[str, ...] = tuple(RECIPES)


def get(name: str, **options) -> Recipe:
    """The recipe called ``name`` (one of :data:`NAMES`) built with ``options`` (e.g. ``size=160``).

    Raises:
      UsageError: unknown name or options.

    >>> from jaxviz import recipes
    >>> recipe = recipes.get("deepinversion", size=160)
    >>> recipe.prior, recipe.passes
    (batchnorm_prior(weight=0.01, first_weight=10.0), 512)
    >>> recipe.edit(weight=0.02).prior     # flags edit the recipe's own part
    batchnorm_prior(weight=0.02, first_weight=10.0)
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
