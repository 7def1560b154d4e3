"""Metrics of deep-neuron (channel) visualizations against the channel's dataset examples.

The deep-neuron stick of ``experiments.neurons`` (README "Experiments"). Definitions,
stated once so tables can cite them:

- **dataset examples**: the ``k`` real photos with the largest value of the channel objective
  (:func:`jaxviz.objectives.channel`: the spatial mean of the channel) in the optimized model
  (Lite0), ties broken by the lower photo index (:func:`top_photos`).
- **copy count**: the number of separated peaks of the target channel's own activation map on the
  optimized model, at that layer's resolution for an input of side ``side``: 8-connected components
  of the positions whose activation is at least ``rel`` (½) of the map's maximum (which must be
  positive; otherwise 0 copies). "Ten dog heads" is a count of about ten; one object, 1
  (:func:`copy_count`, :func:`copies`).
- **plausibility**: mean cosine similarity, in a held-out judge's pooled features (Lite2), between a
  visualization and its channel's ``k`` dataset examples; its **rank**: how many other channels'
  references (the mean feature of their ``k`` examples) are strictly more similar to the image than
  its own (0 = best) (:func:`plausibility`; the same formula as MaCo's class plausibility in
  :func:`jaxviz.realism.metrics.plausibility`, with channels as the classes).
- **activation %**: ``100 · activation / reference`` where the reference is the unconstrained run's
  activation for the same channel and seed (:func:`activation_percent`).

The pure functions take numpy arrays and return float64; the model wrappers (:func:`channel_maps`,
:func:`copies`, :func:`photo_activations`) run a :class:`jaxviz.Model` on images in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxviz.common.errors import UsageError

__all__ = ["copy_count", "top_photos", "plausibility", "activation_percent",
           "channel_maps", "copies", "photo_activations"]


# ------------------------------------------------------------------------------------ pure functions


def copy_count(maps, *, rel: float = 0.5) -> np.ndarray:
    """Separated peaks of each map above ``rel`` of its maximum.

    Args:
      maps: ``[N, h, w]`` activation maps (one channel each), or a list of ``N`` maps ``[h_i, w_i]``
        that may differ in size.
      rel: threshold relative to the map's maximum, in ``(0, 1]``.

    Returns:
      ``[N]`` float64: the number of 8-connected components of positions ``≥ rel · max``; 0 for a
      map whose maximum is not positive (the channel is silent).

    Raises:
      UsageError: ``maps`` is not ``[N, h, w]`` or ``rel`` is outside ``(0, 1]``.
    """
    from scipy import ndimage

    if isinstance(maps, (list, tuple)):
        maps = [np.asarray(m, np.float64) for m in maps]
        if any(m.ndim != 2 for m in maps):
            raise UsageError(f"copy_count needs 2-D maps [h, w], got shapes {[m.shape for m in maps]}")
    else:
        maps = np.asarray(maps, np.float64)
        if maps.ndim != 3:
            raise UsageError(f"copy_count needs maps [N, h, w], got shape {maps.shape}")
    if not (isinstance(rel, (int, float)) and 0 < rel <= 1):
        raise UsageError(f"copy_count: rel must be in (0, 1], got {rel!r}")
    out = np.zeros(len(maps))
    for i, m in enumerate(maps):
        top = m.max() if m.size else 0.0
        if not top > 0:
            continue
        _, out[i] = ndimage.label(m >= rel * top, structure=np.ones((3, 3), bool))
    return out


def top_photos(activations, channels: Sequence[int], k: int) -> np.ndarray:
    """The ``k`` photos with the largest activation of each channel (its dataset examples).

    Args:
      activations: ``[n_photos, C]`` the channel objective of every photo (spatial means).
      channels: ``[T]`` channel indices into the last axis.
      k: examples per channel, ``1 ≤ k ≤ n_photos``.

    Returns:
      ``[T, k]`` int64 photo indices, largest activation first; ties go to the lower index.

    Raises:
      UsageError: ``k`` or a channel out of range.
    """
    a = np.asarray(activations, np.float64)
    if a.ndim != 2:
        raise UsageError(f"top_photos needs activations [n_photos, C], got shape {a.shape}")
    ch = np.asarray(channels, np.int64).ravel()
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= a.shape[0]:
        raise UsageError(f"top_photos: k must be an integer in 1..{a.shape[0]}, got {k!r}")
    if ch.size and (ch.min() < 0 or ch.max() >= a.shape[1]):
        raise UsageError(f"top_photos: channels must be in 0..{a.shape[1] - 1}, got {ch.min()}..{ch.max()}")
    # stable sort of the negated values: equal activations keep their photo order
    return np.stack([np.argsort(-a[:, c], kind="stable")[:k] for c in ch]).astype(np.int64) if ch.size \
        else np.zeros((0, k), np.int64)


def plausibility(features, ids: Sequence[int], photo_features, examples, example_ids: Sequence[int]) -> dict:
    """Plausibility of channel visualizations against the channels' dataset examples.

    Args:
      features: ``[n, d]`` judge features of the visualizations.
      ids: ``[n]`` which reference each visualization belongs to (e.g. a running channel id).
      photo_features: ``[n_photos, d]`` judge features of the photos.
      examples: ``[R, k]`` photo indices: the dataset examples of each reference.
      example_ids: ``[R]`` the id of each reference (the ids ``ids`` refers to; distinct).

    Returns:
      ``{"cos_own": [n], "rank": [n]}`` float64: mean cosine with the own reference's photos, and
      the number of other references whose mean feature is strictly more similar (0 = best);
      ``nan`` for an id without a reference.
    """
    from jaxviz.realism import metrics as realism_metrics

    examples = np.asarray(examples, np.int64)
    example_ids = np.asarray(example_ids, np.int64).ravel()
    if examples.ndim != 2 or len(examples) != len(example_ids):
        raise UsageError(f"plausibility: examples [R, k] and R example_ids needed, got {examples.shape} "
                         f"and {example_ids.shape}")
    if len(np.unique(example_ids)) != len(example_ids):
        raise UsageError("plausibility: example_ids must be distinct")
    photo_features = np.asarray(photo_features, np.float64)
    ref = photo_features[examples.ravel()]
    ref_ids = np.repeat(example_ids, examples.shape[1])
    return realism_metrics.plausibility(features, np.asarray(ids, np.int64), ref, ref_ids)


def activation_percent(activation, reference) -> np.ndarray:
    """``100 · activation / reference`` elementwise, ``nan`` where the reference is not positive."""
    from jaxviz.realism import diagnostics as metrics

    return metrics.activation_percent(activation, reference)


# ------------------------------------------------------------------------------------ model wrappers


def _check_targets(model, targets):
    out = []
    for layer, channel in targets:
        shape = model.layers.get(layer) if hasattr(model.layers, "get") else None
        if shape is None:
            raise UsageError(f"unknown layer '{layer}' of {model.name}")
        if len(shape) != 3:
            raise UsageError(f"copies need a spatial layer; {layer} is {tuple(shape)}")
        if not 0 <= int(channel) < shape[-1]:
            raise UsageError(f"channel {channel} outside {layer} (0..{shape[-1] - 1})")
        out.append((layer, int(channel)))
    return out


def channel_maps(model, images01, targets: Sequence[tuple[str, int]], *, side: int | None = None,
                 batch_size: int = 8) -> np.ndarray:
    """``[N, h, w]`` float64 activation map of each image's target channel.

    Args:
      model: the optimized model (e.g. Lite0).
      images01: ``[N, S, S, 3]`` in ``[0, 1]``.
      targets: ``[(layer, channel)]`` per image; the layers must be spatial (they may differ in
        resolution, e.g. ``blocks.10`` and ``blocks.13``).
      side: resize the images to this side first (:func:`jaxviz.realism.diagnostics.resize_images`); ``None``:
        as given.

    Returns:
      The maps (the channel objective of an image is the spatial mean of its map): ``[N, h, w]`` when
      every target's layer has the same resolution, otherwise a list of ``N`` arrays ``[h_i, w_i]``
      (:func:`copy_count` takes either).
    """
    from jaxviz.realism import diagnostics as metrics

    images01 = np.asarray(images01, np.float32)
    targets = _check_targets(model, targets)
    if len(targets) != len(images01):
        raise UsageError(f"need one target per image, got {len(targets)} targets for {len(images01)} images")
    if side is not None:
        images01 = metrics.resize_images(images01, int(side))
    layers = sorted({layer for layer, _ in targets})
    feats = metrics.run_features(model, images01, layers, batch_size=batch_size)
    maps = [np.asarray(feats[layer][i, ..., c], np.float64) for i, (layer, c) in enumerate(targets)]
    return np.stack(maps) if len({m.shape for m in maps}) <= 1 else maps


def copies(model, images01, targets: Sequence[tuple[str, int]], *, side: int | None = None, rel: float = 0.5,
           batch_size: int = 8) -> np.ndarray:
    """``[N]`` copy count of each image's target channel (:func:`copy_count` of :func:`channel_maps`)."""
    return copy_count(channel_maps(model, images01, targets, side=side, batch_size=batch_size), rel=rel)


def photo_activations(model, images01, layers: Sequence[str], *, batch_size: int = 16) -> dict:
    """``{layer: [N, C] float64}`` spatial mean of every channel (the channel objective) of each image.

    Args:
      model: the optimized model.
      images01: ``[N, S, S, 3]`` in ``[0, 1]`` (at the model's side, as given).
      layers: spatial layers.
    """
    from jaxviz.realism import diagnostics as metrics

    out: dict = {layer: [] for layer in layers}
    images01 = np.asarray(images01, np.float32)
    for start in range(0, len(images01), 64):  # bounded memory: 64 images' features at a time
        feats = metrics.run_features(model, images01[start:start + 64], list(layers), batch_size=batch_size)
        for layer in layers:
            a = np.asarray(feats[layer], np.float64)
            if a.ndim != 4:
                raise UsageError(f"photo_activations needs spatial layers; {layer} is {a.shape[1:]}")
            out[layer].append(a.mean(axis=(1, 2)))
    return {layer: np.concatenate(v) for layer, v in out.items()}
