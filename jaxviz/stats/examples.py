"""Dataset examples by one streaming pass: per channel, the K images with the largest channel objective.

The definition is the deep-neuron stick's (:mod:`jaxviz.realism.neurons`, README "Experiments"): an
image's score for a channel is the channel objective (:func:`jaxviz.objectives.channel`, the spatial
mean of the channel's map) in the model on its reference input (uint8 images at the model's side
through ``model.normalize``); the examples are the K largest, ties to the lower image index. Folder
and TFDS sources are opened as the stick loads its photos (short side resized, centre square:
:func:`open_examples_source`), so the atlas and ``experiments.neurons`` pick the same photos.

The pass is the statistics pass's pipeline (:mod:`jaxviz.stats.collect`): the same sources and
batches, padded to the device count and masked, ``shard_map`` over a ``("data",)`` mesh, each device
keeping its own running top-K (:mod:`jaxviz.stats.topk`; bounded memory, never the activations of
more than one batch), merged exactly at the end. With ``checkpoint_dir`` the state is saved every
``checkpoint_every`` steps and a rerun resumes at the same data position with identical results.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxviz.common import hardware
from jaxviz.common.cache import enable_compile_cache
from jaxviz.common.errors import UsageError, check_integer
from jaxviz.data import batches as batches_lib
from jaxviz.stats import topk
from jaxviz.stats.collect import check_pass_arguments, data_mesh, device_row

__all__ = ["Examples", "collect_examples", "open_examples_source", "read_images", "receptive_field",
           "patch_boxes", "check_channels"]

_AXIS = "data"


class Examples(NamedTuple):
    """The dataset examples of some channels of one layer.

    Attributes:
      layer: the layer.
      channels: ``[C]`` channel numbers.
      score: ``[C, K]`` float32 channel objective of each example, largest first.
      index: ``[C, K]`` int image index in the source (``-1``: fewer than K images were seen).
      position: ``[C, K, 2]`` (row, column) of the maximum of the channel's map in each example.
      map_shape: ``(h, w)`` of the layer's map at the images' side.
      images: how many images the pass saw.
    """

    layer: str
    channels: np.ndarray
    score: np.ndarray
    index: np.ndarray
    position: np.ndarray
    map_shape: tuple
    images: int


def open_examples_source(spec: str, model, *, data_dir=None, max_images=None, seed: int = 0):
    """The data source ``spec`` as the examples pass reads it: at the model's side; folder and TFDS
    images with their short side resized to it and the centre square kept (the stick's centre view)."""
    from jaxviz.data import sources

    return sources.open_source(spec, size=int(model.resolution or 224), data_dir=data_dir, max_images=max_images,
                               seed=seed, crop_fraction=1.0)


def check_channels(model, layer: str, channels: Sequence[int]) -> tuple[int, ...]:
    """The channels as ints; raises UsageError for a non-spatial layer or a channel outside it."""
    layer = model.check_layers([layer])[0]
    shape = tuple(model.layers[layer])
    if len(shape) != 3:
        raise UsageError(f"dataset examples need a spatial layer; {layer} is {shape}")
    out = tuple(int(c) for c in channels)
    if not out:
        raise UsageError("no channels given")
    bad = [c for c in out if not 0 <= c < shape[-1]]
    if bad:
        raise UsageError(f"channel {bad[0]} outside {layer} (0..{shape[-1] - 1})")
    return out


def score_maps(maps):
    """``[B, h, w, C]`` maps → ``([B, C] channel objective, [B, C, 2] (row, column) of each maximum)``."""
    b, h, w, c = maps.shape
    flat = maps.reshape(b, h * w, c)
    arg = jnp.argmax(flat, axis=1)  # the first maximum in row-major order
    return flat.mean(axis=1), jnp.stack([arg // w, arg % w], axis=-1).astype(jnp.int32)


@functools.lru_cache(maxsize=8)
def make_step(model, layer: str, channels: tuple[int, ...], mesh: Mesh):
    """``step(params, states, images uint8 [B,S,S,3], index [B], mask [B]) -> states``, B sharded on ``mesh``."""
    ch = np.asarray(channels, np.int32)

    def local(params, states, images, index, mask):
        x = model.normalize(images.astype(jnp.float32))
        maps = model.features(params, x, [layer])[layer][..., ch]
        score, position = score_maps(maps.astype(jnp.float32))
        new = topk.update(device_row(states), score, index, position, mask)
        return jax.tree.map(lambda a: a[None], new)

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(_AXIS), P(_AXIS), P(_AXIS), P(_AXIS)),
                            out_specs=P(_AXIS), check_vma=False)
    return jax.jit(sharded, donate_argnums=1, compiler_options=hardware.compiler_options(mesh.devices.flat))


def _fold(states) -> topk.TopK:
    host = jax.tree.map(np.asarray, states)
    out = jax.tree.map(lambda a: a[0], host)
    for d in range(1, host.score.shape[0]):
        out = topk.merge(out, jax.tree.map(lambda a: a[d], host))
    return jax.tree.map(np.asarray, out)


def collect_examples(model, layer: str, channels: Sequence[int], source, *, k: int = 8, batch_size: int = 32,
                     mesh: Mesh | None = None, checkpoint_dir: str | None = None, checkpoint_every: int = 50,
                     metadata: dict | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Examples:
    """Runs the examples pass over a data source.

    Args:
      model: a :class:`~jaxviz.models.model.Model`.
      layer: a spatial layer.
      channels: its channels to rank images for.
      source: a data source or numpy array ``[N,S,S,3]`` uint8, as :func:`jaxviz.stats.collect.collect_moments`
        (for the stick's definition open a spec with :func:`open_examples_source`).
      k: examples per channel.
      batch_size: images per step.
      mesh: a 1-D mesh named ``"data"`` (default all devices).
      checkpoint_dir: save the state every ``checkpoint_every`` steps and resume from it.
      metadata: extra settings that must match for a checkpoint to be resumed.
      progress: ``progress(images_done, images_total)`` before the first step and after each.

    Raises:
      UnknownLayerError, UsageError (no images, bad channels, an iterable with a checkpoint),
      CheckpointMismatchError.
    """
    enable_compile_cache()
    channels = check_channels(model, layer, channels)
    check_integer("k=", k, 1, 1024)
    check_pass_arguments(batch_size=batch_size, checkpoint_every=checkpoint_every)
    if jax.process_count() > 1:
        raise UsageError("the examples pass runs on one process")
    mesh = mesh or data_mesh()
    source = batches_lib.as_source(source)
    if isinstance(source, batches_lib.IterableSource):
        raise UsageError("dataset examples need a source that can be read again (a numpy array or a jaxviz.data "
                         "source), to show the images they found")
    total = batches_lib.length(source)
    if not total:
        raise UsageError("the data source holds no images")
    size = int(getattr(source, "size", None) or next(iter(source.batches(1))).shape[1])
    padded = -(-batch_size // mesh.size) * mesh.size
    steps = -(-total // batch_size)
    sharding = NamedSharding(mesh, P(_AXIS))
    params = jax.device_put(model.params, NamedSharding(mesh, P()))
    empty = topk.init(len(channels), int(k))
    states = jax.device_put(jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (mesh.size, *a.shape)).copy(),
                                         empty), sharding)
    start, store = 0, None
    if checkpoint_dir is not None:
        from jaxviz.common.checkpoint import RunStore

        store = RunStore(checkpoint_dir, kind="examples", model=model.name, layer=layer, channels=list(channels),
                         k=int(k), images=total, size=size, batch_size=batch_size, devices=mesh.size,
                         **dict(metadata or {}),
                         **({"content": source.fingerprint()} if isinstance(source, batches_lib.ArraySource) else {}))
        restored = store.restore("examples", states, np.zeros((1,), np.int32))
        if restored is not None:
            states, start = jax.device_put(restored[0], sharding), int(restored[1][0])
    step_fn = make_step(model, layer, channels, mesh)
    it = iter(source.batches(batch_size, start=start * batch_size))
    if progress is not None:
        progress(min(start * batch_size, total), total)
    try:
        for step in range(start, steps):
            batch = next(it)
            n = len(batch)
            images = np.zeros((padded, size, size, 3), np.uint8)
            images[:n] = batch
            index = np.full((padded,), -1, np.int32)
            index[:n] = np.arange(step * batch_size, step * batch_size + n, dtype=np.int32)
            mask = (index >= 0).astype(np.float32)
            states = step_fn(params, states, jax.device_put(images, sharding), jax.device_put(index, sharding),
                             jax.device_put(mask, sharding))
            if store is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                store.save("examples", step + 1, states, np.array([step + 1], np.int32))
            if progress is not None:
                progress(min((step + 1) * batch_size, total), total)
    finally:
        if store is not None:
            store.close()
    best = _fold(states)
    h, w = _map_shape(model, layer, size)
    return Examples(layer, np.asarray(channels, np.int64), best.score, best.index.astype(np.int64),
                    best.position, (h, w), int(total))


@functools.lru_cache(maxsize=16)
def _map_shape(model, layer: str, size: int) -> tuple[int, int]:
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    out = jax.eval_shape(lambda p, x: model.features(p, x, [layer]), model.params, x)
    return tuple(int(d) for d in out[layer].shape[1:3])


def read_images(source, indices) -> np.ndarray:
    """uint8 images ``[n, S, S, 3]`` of a source at the given indices (each read once, in the given order)."""
    source = batches_lib.as_source(source)
    wanted = sorted({int(i) for i in np.ravel(indices) if i >= 0})
    got = {}
    for i in wanted:
        got[i] = next(iter(source.batches(1, start=i)))[0]
    return np.stack([got[int(i)] for i in np.ravel(indices)]) if len(np.ravel(indices)) else np.zeros((0,))


def receptive_field(model, layer: str, size: int, *, mass: float = 0.9) -> int:
    """Side in px of the layer's effective receptive field at input side ``size``.

    The gradient of the layer's summed activations at the map's centre position with respect to a
    mid-grey input: the side of the smallest square, centred on the position's image centre, that
    holds ``mass`` of the gradient's absolute value (summed over colours).
    """
    h, w = _map_shape(model, layer, size)

    def centre(x):
        feats = model.features(model.params, model.normalize(x), [layer])[layer]
        return feats[0, h // 2, w // 2].sum()

    grad = jax.grad(centre)(jnp.full((1, size, size, 3), 127.5, jnp.float32))
    g = np.abs(np.asarray(grad[0])).sum(-1)
    cy, cx = (h // 2 + 0.5) * size / h, (w // 2 + 0.5) * size / w
    yy, xx = np.mgrid[:size, :size]
    dist = np.maximum(np.abs(yy + 0.5 - cy), np.abs(xx + 0.5 - cx))  # Chebyshev: squares around the centre
    order = np.argsort(dist, axis=None, kind="stable")
    cum = np.cumsum(g.ravel()[order])
    if not cum[-1] > 0:
        return size
    r = dist.ravel()[order][np.searchsorted(cum, mass * cum[-1])]
    return int(min(size, max(1, 2 * np.ceil(r))))


def patch_boxes(position, map_shape, size: int, side: int) -> np.ndarray:
    """``[..., 3]`` int (top, left, side) of the ``side`` square around each map position, inside the image."""
    position = np.asarray(position)
    h, w = map_shape
    side = int(min(side, size))
    cy = (position[..., 0] + 0.5) * size / h
    cx = (position[..., 1] + 0.5) * size / w
    top = np.clip(np.round(cy - side / 2), 0, size - side).astype(np.int64)
    left = np.clip(np.round(cx - side / 2), 0, size - side).astype(np.int64)
    return np.stack([top, left, np.full_like(top, side)], axis=-1)
