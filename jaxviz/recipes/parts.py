"""Pieces the anchors' recipes need that are not parameterizations, transforms or priors: DeepInversion's
class log-probability objective, image penalties (TV, L2), its box projection and optimizer, torchvision's
normalization constants."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxviz import objectives
from jaxviz.common.pytree import digest, part, static

__all__ = ["ClassLogProbability", "class_log_probability", "project_box", "deepdream_optimizer", "total_variation_l2", "l2_norm",
           "deepinversion_penalty", "deepinversion_optimizer", "PullToward", "EmptyState", "TORCHVISION_MEAN", "TORCHVISION_STD",
           "TORCHVISION_UNIT"]


# torchvision's input normalization, the units DeepInversion's coefficients are given in
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406], np.float32)


TORCHVISION_STD = np.array([0.229, 0.224, 0.225], np.float32)


TORCHVISION_UNIT = float(TORCHVISION_STD.mean())  # one normalized unit in [0, 1] pixels


class EmptyState(NamedTuple):
    pass


@struct.dataclass
class ClassLogProbability(objectives.Objective):
    """``log softmax(logits)[index]``: minus the cross entropy of the class (DeepInversion's loss)."""

    index: Any
    layer: str = struct.field(pytree_node=False, default="logits")

    @property
    def layers(self):
        return (self.layer,)

    def __call__(self, features):
        logits = features[self.layer]
        return jnp.take(jax.nn.log_softmax(logits, axis=-1), self.index, axis=-1).mean()

    def __repr__(self):
        return f"class_log_probability({self.index})"


def class_log_probability(index: int, layer: str = "logits") -> ClassLogProbability:
    """A :class:`ClassLogProbability` objective."""
    return ClassLogProbability(index, layer)


def project_box(low: float = 0.0, high: float = 1.0) -> optax.GradientTransformation:
    """Changes updates so that ``params + updates`` lies in ``[low, high]`` (projected gradient steps).

    Chain it last: ``optax.chain(optax.adam(lr), project_box(0, 1))``; DeepInversion clips its
    pixels like this after every step.
    """

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_box needs params")
        return jax.tree.map(lambda u, p: jnp.clip(p + u, low, high) - p, updates, params), state

    return optax.GradientTransformation(lambda params: EmptyState(), update)


def total_variation_l2(image: jax.Array) -> jax.Array:
    """DeepInversion's ``loss_var_l2``: the sum of the L2 norms of the differences between each pixel
    and its right, lower, lower-left and lower-right neighbours, over ``[H, W, C]``."""
    diffs = (image[:, :-1] - image[:, 1:], image[:-1, :] - image[1:, :],
             image[1:, :-1] - image[:-1, 1:], image[:-1, :-1] - image[1:, 1:])
    return sum(jnp.sqrt(jnp.sum(d**2)) for d in diffs)


def l2_norm(image: jax.Array) -> jax.Array:
    """The L2 norm of the whole image (DeepInversion's ``loss_l2`` for one image)."""
    return jnp.sqrt(jnp.sum(image**2))


@part
class DeepInversionPenalty:
    """``f(image in [0,1]) = tv_l2 · TV-L2 + l2 · L2`` of the image in torchvision-normalized units."""

    tv_l2: float = static(1e-4)
    l2: float = static(1e-5)

    def __call__(self, image):
        x = (image - jnp.asarray(TORCHVISION_MEAN)) / jnp.asarray(TORCHVISION_STD)
        return self.tv_l2 * total_variation_l2(x) + self.l2 * l2_norm(x)


def deepinversion_penalty(*, tv_l2: float = 1e-4, l2: float = 1e-5) -> Callable[[jax.Array], jax.Array]:
    """:class:`DeepInversionPenalty` with these weights."""
    return DeepInversionPenalty(tv_l2=tv_l2, l2=l2)


def deepinversion_optimizer(steps: int, lr: float) -> optax.GradientTransformation:
    # DeepInversion's lr_cosine_policy: linear warm-up from lr/warmup over `warmup` steps, then
    # cosine to 0; its 100 warm-up steps of 2,000 are scaled to 5 % of ours
    warmup = max(1, round(steps * 100 / 2000))
    schedule = optax.warmup_cosine_decay_schedule(lr / warmup, lr, warmup, max(steps, warmup + 1), 0.0)
    return optax.chain(optax.adam(schedule, b1=0.5, b2=0.9, eps=1e-8), project_box(0.0, 1.0))


def deepdream_optimizer(lr: float) -> optax.GradientTransformation:
    """DeepDream's plain gradient ascent: each step moves the pixels by ``lr · g / mean|g|`` (the gradient
    divided by its mean absolute value, as the original notebook's ``make_step`` does), no momentum.

    Written for minimization as every optax optimizer (the render negates its objective)."""

    def update(updates, state, params=None):
        scale = jax.tree_util.tree_reduce(lambda a, g: a + jnp.sum(jnp.abs(g)), updates, 0.0) / max(
            1, sum(g.size for g in jax.tree_util.tree_leaves(updates)))
        return jax.tree_util.tree_map(lambda g: -lr * g / (scale + 1e-8), updates), state

    return optax.chain(optax.GradientTransformation(lambda params: optax.EmptyState(), update), project_box(0.0, 1.0))


@part
class PullToward:
    """An ``image_penalty``: ``weight · mean((image − photo)²)``, an L2 pull toward a photo.

    Attributes:
      photo: ``[size, size, 3]`` float in ``[0, 1]`` (the render size).
      weight: the pull's strength.
    """

    photo: Any
    weight: float = static(1.0)

    def __call__(self, image):
        return self.weight * jnp.mean(jnp.square(image - jnp.asarray(self.photo, image.dtype)))

    def __repr__(self):
        return f"PullToward(photo=sha1:{digest(self.photo)[:16]}, weight={self.weight})"
