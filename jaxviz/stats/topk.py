"""A running top-K per channel: the K largest scores seen so far, which image gave each, and where.

The state is a NamedTuple of fixed-shape arrays (``[C, K]`` per channel), so its memory is bounded
whatever the number of images streamed through it: :func:`update` adds a batch's scores and keeps
the K best of the state and the batch, per channel (``jax.vmap`` over channels). Order is by score,
largest first; equal scores go to the lower image index, so the result is the top-K of the whole
stream whatever the batch size or the number of devices that saw parts of it (:func:`merge` joins
two states exactly) — the same order as :func:`jaxviz.realism.neurons.top_photos`'s stable sort.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["TopK", "init", "update", "merge"]

_EMPTY = -1  # the image index of an unfilled slot


class TopK(NamedTuple):
    """Per channel, the K best so far.

    Attributes:
      score: ``[C, K]`` float32, largest first (``-inf`` in unfilled slots).
      index: ``[C, K]`` int32 image index in the stream (``-1`` in unfilled slots).
      position: ``[C, K, 2]`` int32 (row, column) of the channel map's maximum in that image.
    """

    score: jax.Array
    index: jax.Array
    position: jax.Array


def init(channels: int, k: int) -> TopK:
    """An empty state for ``channels`` channels and ``k`` slots each."""
    return TopK(jnp.full((channels, k), -jnp.inf, jnp.float32), jnp.full((channels, k), _EMPTY, jnp.int32),
                jnp.zeros((channels, k, 2), jnp.int32))


def _best(score, index, position, k):
    # one channel: [n] candidates -> the k best, by (score desc, index asc); empty slots (index -1) last
    empty = index < 0
    key_score = jnp.where(empty, jnp.inf, -score)  # ascending sort of -score; empties at the end
    key_index = jnp.where(empty, jnp.iinfo(jnp.int32).max, index)
    order = jnp.arange(score.shape[0])
    _, _, order = jax.lax.sort((key_score, key_index, order), num_keys=2)
    order = order[:k]
    return score[order], index[order], position[order]


def _select(score, index, position, k):
    return TopK(*jax.vmap(lambda s, i, p: _best(s, i, p, k))(score, index, position))


def update(state: TopK, score, index, position, mask=None) -> TopK:
    """The state with a batch added.

    Args:
      state: a :class:`TopK` of ``C`` channels.
      score: ``[B, C]`` each image's score per channel (e.g. the channel objective).
      index: ``[B]`` int each image's index in the stream (distinct across the whole stream).
      position: ``[B, C, 2]`` int the (row, column) of each channel's maximum in each image.
      mask: ``[B]`` 1 for real images, 0 for padding (padding never enters); default all real.
    """
    score = jnp.asarray(score, jnp.float32)
    b = score.shape[0]
    index = jnp.asarray(index, jnp.int32)
    if mask is not None:
        index = jnp.where(jnp.asarray(mask) > 0, index, _EMPTY)
    k = state.score.shape[1]
    cand_score = jnp.concatenate([state.score, score.T], axis=1)                       # [C, K+B]
    cand_index = jnp.concatenate([state.index, jnp.broadcast_to(index[None], (score.shape[1], b))], axis=1)
    cand_pos = jnp.concatenate([state.position, jnp.swapaxes(jnp.asarray(position, jnp.int32), 0, 1)], axis=1)
    return _select(cand_score, cand_index, cand_pos, k)


def merge(a: TopK, b: TopK) -> TopK:
    """The top-K of the union of two states' streams (exact when their image indices are disjoint)."""
    k = a.score.shape[1]
    return _select(jnp.concatenate([a.score, b.score], 1), jnp.concatenate([a.index, b.index], 1),
                   jnp.concatenate([a.position, b.position], 1), k)
