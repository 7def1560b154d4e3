"""The optimization step for one image, and its compiled, sharded programs.

:func:`make_step` writes one step for ONE image (parameterization → transform → model → objective
− prior − image penalty, gradient, optax update). :func:`compile_programs` turns it into the three
programs :func:`jaxviz.render.render_images` runs for a batch of targets of one structure: ``init``,
``run_chunk`` (up to ``chunk_steps`` steps in one ``fori_loop``) and ``final``, each sharded over a
mesh whose one axis, ``"targets"``, splits the batch. Use them directly to drive your own loop.

A batch-level prior (``prior.pooled``, e.g. :mod:`jaxviz.priors.bn_batch`) is called as
``prior.apply(features, state, step, pool=pool)``: ``pool(tree)`` sums a pytree over the images of
the launch (vmapped along :data:`IMAGES`, also on CPU, and over the devices), padded slots excluded,
with an identity backward pass (each image gets the gradient of the one pooled term).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from jaxviz.image import canvas as canvas_lib
from jaxviz.common import hardware
from jaxviz.common.errors import UsageError
from jaxviz.recipes.config import COMPUTE_DTYPES
from jaxviz.render import stored as stored_lib

__all__ = ["RenderState", "Programs", "make_step", "compile_programs", "step_key", "model_input", "vectorize_images", "AXIS",
           "COMPUTE_DTYPES", "PullToward", "IMAGES", "batch_pool"]

AXIS = "targets"  # the mesh axis the targets are sharded over
IMAGES = "images"  # the vmap axis of a device's images when a batch-level prior pools over them


class RenderState(NamedTuple):
    """Optimization state of one image (stacked along a leading axis for a batch)."""

    params: Any
    opt_state: Any
    prior_state: Any
    step: jax.Array


class Programs(NamedTuple):
    """Compiled programs for a batch of targets sharing one structure.

    Attributes:
      init: ``init(model_params, keys[B], images=None) -> RenderState`` (stacked); with ``images``
        ``[B, size, size, 3]`` in ``[0, 1]`` the params start at ``parameterization.inverse(image)``.
      run_chunk: ``run_chunk(n, model_params, state, objectives, keys, *, redirect=False) ->
        (state, values [B, n], traces [B, n])``; one compiled program for every ``n ≤ chunk_steps``.
      final: ``final(model_params, state, objectives) -> (images, values, prior_report)``.
    """

    init: Callable
    run_chunk: Callable
    final: Callable


@dataclasses.dataclass(frozen=True, eq=False)
class PullToward:
    """An ``image_penalty``: ``weight · mean((image − photo)²)``, an L2 pull toward a photo.

    Attributes:
      photo: ``[size, size, 3]`` float in ``[0, 1]`` (the render size).
      weight: the pull's strength.
    """

    photo: np.ndarray
    weight: float = 1.0

    def __call__(self, image):
        return self.weight * jnp.mean(jnp.square(image - jnp.asarray(self.photo, image.dtype)))

    def __repr__(self):  # identifies the run in checkpoints: the photo by its digest
        digest = hashlib.sha1(np.ascontiguousarray(self.photo, np.float32).tobytes()).hexdigest()[:16]
        return f"PullToward(photo=sha1:{digest}, weight={self.weight})"


def model_input(model, image01: jax.Array) -> jax.Array:
    """A ``[0, 1]`` image as the model's input (its own normalization of 0..255 values)."""
    return model.normalize(image01 * 255.0)


def step_key(target_key: jax.Array, step) -> jax.Array:
    """The key of one step of one target: a pure function of (target key, step), so resumes agree."""
    return jax.random.fold_in(jax.random.split(target_key)[1], step)


def _features(model, model_params, x, layers, compute_dtype, redirect=False):
    if compute_dtype is None:
        return model.features(model_params, x, layers, redirect=redirect)
    cast = lambda a: a.astype(compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    features = model.features(jax.tree.map(cast, model_params), x.astype(compute_dtype), layers, redirect=redirect)
    return jax.tree.map(lambda a: a.astype(jnp.float32), features)


def _scalar(value, what: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape != ():
        raise UsageError(f"{what} must return a scalar, got shape {value.shape}")
    return value


def batch_pool(key: jax.Array, axes: tuple[str, ...]) -> Callable:
    """``pool(tree)``: the sum of ``tree`` over the images of the batch along ``axes`` (see module docstring).

    A slot counts once per distinct step key: the padded slots of a launch repeat the last target
    and its key, so they are left out (weight 0, and no gradient from the pooled term).
    """
    data = jax.random.key_data(key).reshape(-1)
    n, me = jax.lax.axis_size(axes), jax.lax.axis_index(axes)
    table = jax.lax.psum(jnp.zeros((n, data.shape[0]), data.dtype).at[me].set(data), axes)
    weight = (jnp.argmax(jnp.all(table == data, axis=1)) == me).astype(jnp.float32)

    def pool(tree):
        def one(x):
            mine = weight.astype(x.dtype) * x
            return mine + jax.lax.stop_gradient(jax.lax.psum(mine, axes) - mine)

        return jax.tree.map(one, tree)

    return pool


def make_step(model, objective, *, parameterization, transform, optimizer: optax.GradientTransformation, prior,
              image_penalty: Callable[[jax.Array], Any] | None = None, compute_dtype=None, redirect: bool = False,
              pool_axes: tuple[str, ...] | None = None):
    """The optimization step for ONE image (vmap or map it over targets).

    Args:
      model: a :class:`jaxviz.Model`.
      objective: an objective of the kind being optimized (its ``layers`` are read).
      parameterization: a :class:`jaxviz.image.param.Parameterization`.
      transform: a :class:`jaxviz.image.transforms.Transform`.
      optimizer: an ``optax.GradientTransformation``.
      prior: a :class:`jaxviz.priors.Prior`.
      image_penalty: optional ``f(image [S,S,3] in [0,1]) -> scalar`` subtracted from the objective
        (e.g. total variation), on the untransformed image.
      compute_dtype: run the model in this dtype (e.g. ``jnp.bfloat16`` on accelerators); features
        are cast back to float32 before the objective and prior. ``None``: as given.
      redirect: redirected ReLU gradients (units that start dead can still move); needs a model with
        ``apply_redirected``.
      pool_axes: for a batch-level prior (``prior.pooled``), the named axes its images are mapped
        over (the step then runs under ``vmap``/``shard_map`` with these names); ``None``: per image.

    Returns:
      ``step(model_params, state: RenderState, objective, key) -> (state, (value, trace))``.
    """
    layers = tuple(dict.fromkeys((*objective.layers, *prior.layers)))
    if redirect and model.apply_redirected is None:
        raise UsageError(f"redirected gradients need a model with redirected ReLUs; {model.name} has none")

    def loss(image_params, obj, prior_state, step, key, model_params):
        image = parameterization.to_image(image_params)
        seen = transform(image, key=key)
        features = _features(model, model_params, model_input(model, seen), layers, compute_dtype, redirect)
        value = _scalar(obj(features), "the objective")
        if pool_axes and getattr(prior, "pooled", False):
            penalty, prior_state, trace = prior.apply(features, prior_state, step, pool=batch_pool(key, pool_axes))
        elif maps_canvas(prior, transform):  # the prior's outlier map counts canvas cells, not crop positions
            locate = functools.partial(canvas_lib.canvas_cells, transform, image.shape[:2], seen.shape[:2], key=key)
            penalty, prior_state, trace = prior.apply(features, prior_state, step, locate=locate)
        else:
            penalty, prior_state, trace = prior.apply(features, prior_state, step)
        total = value - _scalar(penalty, "prior.apply's penalty")
        if image_penalty is not None:
            total = total - _scalar(image_penalty(image), "image_penalty")
        return total, (value, prior_state, _scalar(trace, "prior.apply's trace"))

    def step_fn(model_params, state: RenderState, obj, key):
        args = (state.params, obj, state.prior_state, state.step, key, model_params)
        grads, (value, prior_state, trace) = jax.grad(loss, has_aux=True)(*args)
        # maximize: optax minimizes, so feed the negated gradient
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return RenderState(params, opt_state, prior_state, state.step + 1), (value, trace)

    return step_fn


def maps_canvas(prior, transform) -> bool:
    """Whether the prior keeps its outlier map in canvas cells (it asks, and the transform is known)."""
    return bool(getattr(prior, "maps_canvas", False)) and canvas_lib.supports(transform)


def _run_image(step_fn, n_steps, max_steps, model_params, state, obj, target_key):
    """``n_steps`` (traced, ≤ ``max_steps``) steps of one image, written for one target.

    The step count is a runtime value, so a run's last, shorter chunk (and a resumed run's)
    reuses the compiled loop; the per-step (scalar) values fill float32 ``[max_steps]`` buffers.
    """
    buffers = (jnp.zeros((max_steps,), jnp.float32),) * 2

    def body(i, carry):
        state, buffers = carry
        state, outs = step_fn(model_params, state, obj, step_key(target_key, state.step))
        return state, tuple(b.at[i].set(o.astype(jnp.float32)) for b, o in zip(buffers, outs))

    state, (values, traces) = jax.lax.fori_loop(0, n_steps, body, (state, buffers))
    return state, values, traces


def vectorize_images(platform: str) -> bool:
    """Whether a device's images are vmapped (GPU/TPU) or run one after another (CPU; see below)."""
    return platform != "cpu"


def _over_images(fn, batched: bool, axis_name: str | None = None):
    """Maps a one-target function over a device's local targets.

    On CPU the images run one after another (``lax.map``): every image then runs the very same
    compiled computation whatever the number of devices, so sharding does not change a single
    bit, and CPU convolutions gain nothing from batching. On GPU/TPU they are vmapped, and so
    they are everywhere with ``axis_name`` (a batch-level prior pools over it).
    """
    if batched or axis_name:
        return jax.vmap(fn, axis_name=axis_name)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def _sharded(mesh, fn, n_batched: int, n_replicated: int = 1):
    """``fn(*replicated, *batched)`` run on each device's shard of the leading target axis."""
    spec = PartitionSpec(AXIS)
    in_specs = (PartitionSpec(),) * n_replicated + (spec,) * n_batched
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)


def compile_programs(model, objective, *, parameterization, transform, optimizer, prior, size: int, mesh: Mesh,
                     chunk_steps: int = 16, compute_dtype: str = "float32", redirect: bool = False,
                     image_penalty=None, store_key: str | None = None) -> Programs:
    """Jitted, sharded :class:`Programs` for targets shaped like ``objective``.

    Args:
      model, objective, parameterization, transform, optimizer, prior, image_penalty: as :func:`make_step`.
      size: image side.
      mesh: a mesh with one axis ``"targets"`` (:data:`AXIS`).
      chunk_steps: most steps one ``run_chunk`` call runs.
      compute_dtype: ``float32`` or ``bfloat16`` (GPU/TPU only).
      redirect: also build the redirected-gradient chunk program (``run_chunk(..., redirect=True)``).
      store_key: stable text naming every part above (their code and settings): the programs are then
        kept on disk in exported form (:mod:`jaxviz.render.stored`), so a later process neither traces
        nor lowers them. ``None``: not stored.

    Returns:
      :class:`Programs`; ``run_chunk.jitted`` is the plain chunk program (for cost analysis).
    """
    batched = vectorize_images(mesh.devices.flat[0].platform)
    if compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(f"unknown compute_dtype '{compute_dtype}' (choose {' or '.join(COMPUTE_DTYPES)})")
    if compute_dtype == "bfloat16" and not batched:
        raise UsageError("bfloat16 is for GPU/TPU; on CPU use float32 (XLA-CPU emulates bfloat16, slower)")
    dtype = jnp.bfloat16 if compute_dtype == "bfloat16" else None
    options = hardware.compiler_options(mesh.devices.flat)
    parts = dict(parameterization=parameterization, transform=transform, optimizer=optimizer, prior=prior,
                 image_penalty=image_penalty, compute_dtype=dtype)
    pooled = bool(getattr(prior, "pooled", False))
    if pooled:
        parts["pool_axes"] = (AXIS, IMAGES)
    step_fns = {False: make_step(model, objective, **parts)}
    if redirect:
        step_fns[True] = make_step(model, objective, **parts, redirect=True)

    def init_one(model_params, target_key, image=None):
        if image is None:
            params = parameterization.init(key=jax.random.split(target_key)[0], size=size)
        else:  # seeded from a photo
            params = parameterization.inverse(image)
        image = parameterization.to_image(params)
        # the prior's state is shaped by the features it sees during the steps, i.e. of the
        # transformed image (default transforms pad S -> S + 12), so initialize it from one
        seen = transform(image, key=step_key(target_key, 0))
        features = model.features(model_params, model_input(model, seen), prior.layers) if prior.layers else {}
        if maps_canvas(prior, transform):
            shapes = jax.eval_shape(lambda p, im: model.features(p, model_input(model, im), prior.layers),
                                    model_params, image)
            prior_state = prior.init(features, canvas={layer: a.shape for layer, a in shapes.items()})
        else:
            prior_state = prior.init(features)
        return RenderState(params, optimizer.init(params), prior_state, jnp.zeros((), jnp.int32))

    def final_one(model_params, state, obj):
        image = parameterization.to_image(state.params)
        layers = tuple(dict.fromkeys((*objective.layers, *prior.layers)))
        features = model.features(model_params, model_input(model, image), layers)
        return image, obj(features), prior.report(features, state.prior_state)

    def init_sharded(model_params, keys, *images):
        return _over_images(functools.partial(init_one, model_params), batched)(keys, *images)

    def stored(fn, name, **options):
        key = None if store_key is None else "|".join(map(str, (
            store_key, name, size, chunk_steps, compute_dtype, batched, pooled, mesh.axis_names, mesh.devices.shape)))
        return stored_lib.StoredFunction(fn, name=name, key=key, **options)

    init_programs = [stored(_sharded(mesh, init_sharded, n), f"init{n}") for n in (1, 2)]  # traced on first use

    def init(model_params, keys, images=None):
        if images is None:
            return init_programs[0](model_params, keys)
        return init_programs[1](model_params, keys, images)

    def chunk_program(step_fn):
        def run_chunk_sharded(n_steps, model_params, state, obj, keys):
            one = functools.partial(_run_image, step_fn, n_steps, chunk_steps, model_params)
            return _over_images(one, batched, IMAGES if pooled else None)(state, obj, keys)

        return _sharded(mesh, run_chunk_sharded, 3, n_replicated=2)

    programs = {flag: stored(chunk_program(fn), "chunk-redirected" if flag else "chunk", donate_argnums=(2,),
                             compiler_options=options) for flag, fn in step_fns.items()}

    def final(model_params, state, obj):
        return _over_images(functools.partial(final_one, model_params), batched)(state, obj)

    def run_chunk(n_steps, model_params, state, obj, keys, *, redirect=False):
        if not 1 <= n_steps <= chunk_steps:
            raise ValueError(f"a chunk runs 1..{chunk_steps} steps, got {n_steps}")
        state, values, traces = programs[redirect](np.int32(n_steps), model_params, state, obj, keys)
        return state, np.asarray(values)[:, :n_steps], np.asarray(traces)[:, :n_steps]

    run_chunk.jitted = programs[False].jitted
    return Programs(init, run_chunk, stored(_sharded(mesh, final, 2), "final"))
