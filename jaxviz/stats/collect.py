"""The statistics pass: images → features → views → streaming moments, on every device and host.

One jitted step runs the forward pass, the view and the batch moments of every requested layer
on each device's share of the batch (``shard_map`` over a ``("data",)`` mesh of all devices) and
adds them to that device's own state. At the end of each segment of steps the devices' states are
merged exactly (:func:`jaxviz.stats.psum_merge`) into a float64 host total; merging across devices
in every step cost the pass +40 % over the forward on 2 CPU devices. Batches are padded to a multiple of the device count and the padding is masked
out. Under ``jax.distributed`` every process reads its own shard of the source and the mesh spans
all processes' devices, so the state that comes out is the statistics of the whole source.

Long passes checkpoint every N steps with Orbax; rerunning with the same settings resumes at the
same data position and gives the same numbers as an uninterrupted pass. Finished statistics are
written by :func:`save_stats` and read back, finalized and checked by :func:`load_stats`.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxviz.common import hardware
from jaxviz.common.cache import enable_compile_cache
from jaxviz.common.errors import UsageError, check_integer
from jaxviz.data import batches as batches_lib
from jaxviz.stats import moments as stats
from jaxviz.stats import views
from jaxviz.stats.moments import LayerStats, StatsState
from jaxviz.stats.store import (
    StatsBundle,
    StatsMismatchError,
    StatsNotFoundError,
    load_stats,
    save_stats,
)

__all__ = ["StatsBundle", "LayerStats", "StatsMismatchError", "StatsNotFoundError", "data_mesh",
           "collect_moments", "save_stats", "load_stats", "layer_shapes", "check_pass_arguments"]

_AXIS = "data"
_SEGMENT_STEPS = 32  # steps accumulated on device in float32 before joining the float64 total
_merge64 = jax.jit(stats.merge)


def data_mesh(devices=None) -> Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.array(jax.devices() if devices is None else list(devices)), (_AXIS,))


@functools.lru_cache(maxsize=16)
def layer_shapes(model, layers: tuple[str, ...], size: int) -> dict[str, tuple[int, ...]]:
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    out = jax.eval_shape(lambda p, x: model.features(p, x, list(layers)), model.params, x)
    return {k: tuple(out[k].shape[1:]) for k in layers}


def device_row(stacked):
    return jax.tree.map(lambda a: a[0], stacked)  # this device's row of a per-device stack


@functools.lru_cache(maxsize=8)
def make_step(model, layers: tuple[str, ...], view: views.View, mesh: Mesh):
    """``step(params, states, images uint8 [B,S,S,3], mask [B]) -> states``, jitted, B sharded on ``mesh``.

    ``states`` holds one state per device (a leading axis sharded like the batch): each device adds
    its share of the batch to its own state, with no communication (see :func:`make_fold`).
    """

    def local(params, states, images, mask):
        x = model.normalize(images.astype(jnp.float32))
        feats = model.features(params, x, list(layers))
        out = {}
        for layer in layers:
            samples = jax.vmap(view)(feats[layer])  # [b, M, dim]
            b, m, d = samples.shape
            weights = jnp.broadcast_to(mask[:, None], (b, m)).reshape(b * m)
            merged = stats.merge(device_row(states[layer]), stats.batch_stats(samples.reshape(b * m, d), weights))
            out[layer] = jax.tree.map(lambda a: a[None], merged)
        return out

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(_AXIS), P(_AXIS), P(_AXIS)),
                            out_specs=P(_AXIS), check_vma=False)
    return jax.jit(sharded, donate_argnums=1, compiler_options=hardware.compiler_options(mesh.devices.flat))


@functools.lru_cache(maxsize=8)
def make_fold(layers: tuple[str, ...], mesh: Mesh):
    """``fold(states) -> merged``: the per-device states of :func:`make_step` merged, replicated."""

    def local(states):
        return {layer: stats.psum_merge(device_row(states[layer]), _AXIS) for layer in layers}

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(_AXIS),), out_specs=P(), check_vma=False))


@functools.lru_cache(maxsize=16)
def _zeros_fn(dims: tuple[tuple[str, int], ...], sharding, copies: int):
    # one zero state per device, jitted (a global array on every process) and cached: compiling it
    # anew on each pass cost ~40 ms, 7 % of a 100-image pass
    def zeros():
        return {layer: jax.tree.map(lambda a: jnp.broadcast_to(a, (copies, *a.shape)), stats.init(dim))
                for layer, dim in dims}

    return jax.jit(zeros, out_shardings=sharding)


def _host(states) -> dict[str, StatsState]:
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), states)


def collect_moments(model, layers: Sequence[str], source, *, view="pixel", batch_size: int = 32,
                  mesh: Mesh | None = None, checkpoint_dir: str | None = None, checkpoint_every: int = 50,
                  metadata: Mapping[str, Any] | None = None, progress: Callable[[int, int], None] | None = None,
                  on_batch: Callable[[np.ndarray], None] | None = None) -> dict[str, StatsState]:
    """Runs the statistics pass over a data source.

    Args:
      model: a :class:`~jaxviz.models.model.Model`.
      layers: layer names (several layers share one forward pass).
      source: a data source (``len``, ``batches(batch_size, *, start, shard_index, shard_count)``
        yielding uint8 ``[b,S,S,3]``); under ``jax.distributed`` each process reads its own shard.
        Also a numpy array ``[N,S,S,3]`` or any iterable of batches / images / dicts with an
        ``image`` key (a generator, ``tf.data``'s ``as_numpy_iterator()``, a grain loader; see
        :func:`jaxviz.data.batches.as_source`), read once and to its end.
      view: ``pixel``, ``pooled`` or ``patchK``.
      batch_size: images per step on each process.
      mesh: a 1-D mesh named ``"data"`` (default: all devices, see :func:`data_mesh`).
      checkpoint_dir: save the state here every ``checkpoint_every`` steps and resume from it.
      metadata: extra JSON-able settings that must match for a checkpoint to be resumed.
      progress: called as ``progress(images_done, images_total)`` once before the first step (the
        resumed position) and after each step; ``images_total`` is ``None`` for an iterable of
        unknown length.
      on_batch: also called with each batch's uint8 images (this process's, in order; with a checkpoint,
        only those read after the resumed position), e.g. :class:`jaxviz.stats.quantiles.QuantileSampler`.

    Returns:
      ``{layer: StatsState}``: host float64 arrays (the device accumulates float32 segments of
      up to 32 steps that are merged into a float64 total, so long passes keep their precision and
      counts stay exact).

    Raises:
      UnknownLayerError, UsageError, CheckpointMismatchError.
    """
    enable_compile_cache()  # compiled steps persist across processes (JAXVIZ_COMPILE_CACHE=0: off)
    view = views.parse_view(view)
    layers = list(model.check_layers(list(layers)))
    if not layers:
        raise UsageError("no layers given")
    check_pass_arguments(batch_size=batch_size, checkpoint_every=checkpoint_every)
    mesh = mesh or data_mesh()
    procs, pid = jax.process_count(), jax.process_index()
    source = batches_lib.as_source(source)
    streamed = isinstance(source, batches_lib.IterableSource)  # read to its end; length maybe unknown
    if streamed and checkpoint_dir is not None:
        raise UsageError("checkpoint_dir= cannot resume an iterable of batches (its images cannot be identified "
                         "or rewound); pass a numpy array or a jaxviz.data source")
    if streamed and procs > 1:
        raise UsageError("an iterable of batches runs on one process; under jax.distributed pass a jaxviz.data source")
    total = batches_lib.length(source)
    if total == 0:
        raise UsageError("the data source holds no images")
    local_devices = sum(d.process_index == pid for d in mesh.devices.flat)
    padded = -(-batch_size // local_devices) * local_devices
    # process 0 holds the most images: ceil(total / procs); None: until the iterable ends
    steps = None if streamed else -(-(-(-total // procs)) // batch_size)

    start, it = 0, None
    size = getattr(source, "size", None)
    if size is None:
        it = iter(source.batches(batch_size, start=0, shard_index=pid, shard_count=procs))
        first = next(it)
        size = first.shape[1]
        it = itertools.chain([first], it)
    shapes = layer_shapes(model, tuple(layers), int(size))
    for layer in layers:
        view.check(shapes[layer], layer)
    dims = {layer: view.dim(shapes[layer]) for layer in layers}

    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P(_AXIS))
    params = model.params if procs == 1 else jax.tree.map(np.asarray, model.params)  # host copy for a global mesh
    params = jax.device_put(params, replicated)
    zeros = _zeros_fn(tuple(dims.items()), batch_sharding, mesh.size)
    # Two levels: a float32 device state for a segment of steps, then a float64 host total. Segment
    # boundaries depend on the step index only (so a resumed pass adds exactly the same segments) and
    # are short enough that float32 counts within a segment stay exact integers.
    per_step = padded * procs * max(view.count(shapes[layer]) for layer in layers)
    segment_steps = max(1, min(_SEGMENT_STEPS, 2 ** 24 // per_step))
    totals = {layer: jax.tree.map(lambda a: np.asarray(a, np.float64), stats.init(dims[layer])) for layer in layers}
    segment = zeros()

    store = None
    if checkpoint_dir is not None:
        from jaxviz.common.checkpoint import RunStore

        store = RunStore(checkpoint_dir, kind="stats", model=model.name, layers=layers, view=view.name,
                         images=total, size=int(size), batch_size=batch_size, processes=procs, devices=mesh.size,
                         dims=dims, **dict(metadata or {}),
                         **({"content": source.fingerprint()} if isinstance(source, batches_lib.ArraySource) else {}))
        restored = store.restore("pass", {"total": totals, "segment": segment}, np.zeros((1,), np.int32))
        if restored is not None:
            (totals, segment), start = (restored[0]["total"], restored[0]["segment"]), int(restored[1][0])
    if start > 0 or it is None:
        it = iter(source.batches(batch_size, start=start * batch_size * procs, shard_index=pid, shard_count=procs))

    step_fn = make_step(model, tuple(layers), view, mesh)
    fold = make_fold(tuple(layers), mesh)
    if progress is not None:
        progress(min(start * batch_size * procs, total or start), total)  # > 0: resumed from a checkpoint
    global_shape = (padded * procs,)
    seen = 0
    try:
        for step in (range(start, steps) if steps is not None else itertools.count(start)):
            batch = next(it, None)
            n = 0 if batch is None else len(batch)
            if steps is None:  # an iterable: its end ends the pass
                if not n:
                    if seen == 0:
                        raise UsageError("the data source holds no images")
                    if step % segment_steps:
                        totals = _merge_host(totals, _host(fold(segment)))
                    break
                seen += n
            # fresh buffers every step: on CPU the device array may alias them while the step runs
            images = np.zeros((padded, size, size, 3), np.uint8)
            mask = np.zeros((padded,), np.float32)
            if n:
                images[:n] = batch
                mask[:n] = 1.0
                if on_batch is not None:
                    on_batch(np.asarray(batch))
            x = jax.make_array_from_process_local_data(batch_sharding, images, global_shape + images.shape[1:])
            w = jax.make_array_from_process_local_data(batch_sharding, mask, global_shape)
            segment = step_fn(params, segment, x, w)
            if (step + 1) % segment_steps == 0 or step + 1 == steps:
                totals = _merge_host(totals, _host(fold(segment)))
                segment = zeros()
            if store is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                store.save("pass", step + 1, {"total": totals, "segment": segment}, np.array([step + 1], np.int32))
            if progress is not None:
                progress(seen if steps is None else min((step + 1) * batch_size * procs, total), total)
    finally:
        if store is not None:
            store.close()
    return totals


def _merge_host(totals, segment):
    """``totals`` (float64 host states) merged with a segment's states, in float64."""
    with jax.enable_x64(True):
        out = {}
        for layer, t in totals.items():
            seg = jax.tree.map(lambda a: np.asarray(a, np.float64), segment[layer])
            out[layer] = jax.tree.map(np.asarray, _merge64(StatsState(*t), StatsState(*seg)))
    return out


MAX_BATCH = 4096
MAX_SIZE = 2048
MAX_IMAGES = 100_000_000


def _whole(name: str, value, low: int, high: int | None = None, *, optional: bool = False) -> None:
    if not (optional and value is None):
        check_integer(f"{name}=", value, low, high)


def check_pass_arguments(*, batch_size=32, checkpoint_every=50, size=None, max_images=None, seed=0) -> None:
    """Raises :class:`UsageError` (naming the argument, e.g. ``batch_size=``) for values that cannot run."""
    _whole("batch_size", batch_size, 1, MAX_BATCH)
    _whole("checkpoint_every", checkpoint_every, 1)
    _whole("size", size, 8, MAX_SIZE, optional=True)
    _whole("max_images", max_images, 1, MAX_IMAGES, optional=True)
    _whole("seed", seed, 0, 2**32 - 1)
