"""The optimization step of one unit (one image, or a group of images of one target) and its programs.

:func:`make_step` writes one step (parameterization → transform → model → objective − prior − image
penalty, gradient, optax update). :func:`compile_programs` turns it into the three programs
:func:`jaxviz.render.render_images` runs for a batch of targets: ``init``, ``run_chunk`` (up to
``chunk_steps`` steps in one ``fori_loop``) and ``final``, each sharded over a mesh whose one axis,
``"targets"``, splits the batch. The parts (:class:`Parts`) are an argument of every program, not
closed over: JAX's own cache reuses a program for parts of the same structure and settings, and a
stored program (:mod:`jaxviz.render.stored`) is named by the arguments' structure.

A unit is one image (``images=1``: params ``[...]``) or a group of ``images`` images optimized together
(params ``[images, ...]``, one batched forward pass, one optimizer state; a batch objective such as
Lucid's diversity compares them). A batch-level prior (``prior.pooled``) is called with
``pool=``: ``pool(tree)`` sums a pytree over the images of the launch (vmapped along :data:`IMAGES`,
also on CPU, and over the devices), padded slots excluded, with an identity backward pass.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from jaxviz import objectives as objectives_lib
from jaxviz.common import hardware
from jaxviz.common.errors import UsageError
from jaxviz.common.pytree import part, static
from jaxviz.image import canvas as canvas_lib
from jaxviz.recipes.config import COMPUTE_DTYPES
from jaxviz.render import stored as stored_lib

__all__ = ["RenderState", "Parts", "Programs", "PlainOptimizer", "make_step", "compile_programs",
           "step_key", "model_input", "vectorize_images", "batch_pool", "AXIS", "IMAGES", "GROUP", "COMPUTE_DTYPES"]

AXIS = "targets"  # the mesh axis the targets are sharded over
IMAGES = "images"  # the vmap axis of a device's units when a batch-level prior pools over them
GROUP = "group"  # the vmap axis of a unit's images (images_per_target > 1) when a prior pools


class RenderState(NamedTuple):
    """Optimization state of one unit (stacked along a leading axis for a batch)."""

    params: Any
    opt_state: Any
    prior_state: Any
    step: jax.Array


class Parts(NamedTuple):
    """What a render optimizes with: one pytree argument of every program.

    Attributes:
      parameterization: a :class:`jaxviz.image.param.Parameterization`.
      transform: a :class:`jaxviz.image.transforms.Transform`.
      prior: a :class:`jaxviz.priors.Prior`.
      image_penalty: ``None`` or a pytree callable ``f(image [S,S,3] in [0,1]) -> scalar`` (e.g.
        :class:`jaxviz.recipes.parts.PullToward`; wrap a plain function in :class:`jaxviz.common.pytree.Static`).
      optimizer: an object with ``make() -> optax.GradientTransformation`` (a pytree: the recipe's
        :class:`jaxviz.recipes.Optimizer` schedule, or :class:`PlainOptimizer`).
    """

    parameterization: Any
    transform: Any
    prior: Any
    image_penalty: Any
    optimizer: Any


class Programs(NamedTuple):
    """Compiled programs for a batch of targets sharing one structure.

    Attributes:
      init: ``init(model_params, keys[B], parts, images=None) -> RenderState`` (stacked); with ``images``
        ``[B, size, size, 3]`` in ``[0, 1]`` the params start at ``parameterization.inverse(image)``.
      run_chunk: ``run_chunk(n, model_params, state, objectives, keys, parts, *, redirect=False) ->
        (state, values [B, n], traces [B, n(, images)])``; one compiled program for every ``n ≤ chunk_steps``.
      final: ``final(model_params, state, objectives, parts) -> (images, values, prior_report)``.
    """

    init: Callable
    run_chunk: Callable
    final: Callable


@part
class PlainOptimizer:
    """An optax transformation given as it is (a leafless node, compared by identity)."""

    transformation: Any = static()

    def make(self) -> optax.GradientTransformation:
        return self.transformation

    def __repr__(self):
        return f"custom {type(self.transformation).__name__}"


def model_input(model, image01: jax.Array) -> jax.Array:
    """A ``[0, 1]`` image as the model's input (its own normalization of 0..255 values)."""
    return model.normalize(image01 * 255.0)


def step_key(target_key: jax.Array, step) -> jax.Array:
    """The key of one step of one image: a pure function of (image key, step), so resumes agree."""
    return jax.random.fold_in(jax.random.split(target_key)[1], step)


def _step_keys(keys, step):
    return step_key(keys, step) if keys.ndim == 0 else jax.vmap(lambda k: step_key(k, step))(keys)


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


def _layers(obj, prior) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*obj.layers, *prior.layers)))


def _prior_apply(parts: Parts, features, prior_state, step, key, canvas_hw, seen_hw, pool_axes):
    """One image's prior term, with ``pool=`` / ``locate=`` as the prior and transform allow."""
    pool = batch_pool(key, pool_axes) if pool_axes else None
    locate = None
    if canvas_lib.supports(parts.transform):  # outlier maps can be counted in canvas cells, not crop positions
        locate = functools.partial(canvas_lib.canvas_cells, parts.transform, canvas_hw, seen_hw, key=key)
    penalty, prior_state, trace = parts.prior.apply(features, prior_state, step, pool=pool, locate=locate)
    return _scalar(penalty, "prior.apply's penalty"), prior_state, _scalar(trace, "prior.apply's trace")


def make_step(model, *, images: int = 1, compute_dtype=None, redirect: bool = False,
              pool_axes: tuple[str, ...] | None = None):
    """The optimization step of ONE unit (vmap or map it over targets).

    Args:
      model: a :class:`jaxviz.Model`.
      images: images per unit (1: params without an image axis; more: a group with a leading axis).
      compute_dtype: run the model in this dtype (e.g. ``jnp.bfloat16`` on accelerators); features
        are cast back to float32 before the objective and prior. ``None``: as given.
      redirect: redirected ReLU gradients (units that start dead can still move); needs a model with
        ``apply_redirected``.
      pool_axes: for a batch-level prior (``prior.pooled``), the named axes its images are mapped
        over (the step then runs under ``vmap``/``shard_map`` with these names); ``None``: per image.

    Returns:
      ``step(model_params, state: RenderState, objective, key(s), parts: Parts) -> (state, (value, trace))``;
      ``key`` is the step's key of the image (``[images]`` keys for a group).
    """
    if redirect and model.apply_redirected is None:
        raise UsageError(f"redirected gradients need a model with redirected ReLUs; {model.name} has none")

    def loss_one(image_params, obj, prior_state, step, key, model_params, parts):
        image = parts.parameterization.to_image(image_params)
        seen = parts.transform(image, key=key, step=step)
        features = _features(model, model_params, model_input(model, seen), _layers(obj, parts.prior),
                             compute_dtype, redirect)
        value = _scalar(obj(features), "the objective")
        penalty, prior_state, trace = _prior_apply(parts, features, prior_state, step, key, image.shape[:2],
                                                   seen.shape[:2], pool_axes)
        total = value - penalty
        if parts.image_penalty is not None:
            total = total - _scalar(parts.image_penalty(image), "image_penalty")
        return total, (value, prior_state, trace)

    def loss_group(params, obj, prior_state, step, keys, model_params, parts):
        images_ = jax.vmap(parts.parameterization.to_image)(params)
        seen = jax.vmap(lambda im, k: parts.transform(im, key=k, step=step))(images_, keys)
        features = _features(model, model_params, model_input(model, seen), _layers(obj, parts.prior),
                             compute_dtype, redirect)
        value = jnp.asarray(objectives_lib.batch_value(obj, features), jnp.float32)
        axes = (*pool_axes, GROUP) if pool_axes else None
        penalty, prior_state, trace = jax.vmap(
            lambda f, s, k: _prior_apply(parts, f, s, step, k, images_.shape[1:3], seen.shape[1:3], axes),
            axis_name=GROUP if axes else None)(features, prior_state, keys)
        total = value - jnp.sum(penalty)
        if parts.image_penalty is not None:
            total = total - jnp.sum(jax.vmap(parts.image_penalty)(images_))
        return total, (value, prior_state, trace)

    loss = loss_one if images == 1 else loss_group

    def step_fn(model_params, state: RenderState, obj, key, parts: Parts):
        args = (state.params, obj, state.prior_state, state.step, key, model_params, parts)
        grads, (value, prior_state, trace) = jax.grad(loss, has_aux=True)(*args)
        # maximize: optax minimizes, so feed the negated gradient
        updates, opt_state = parts.optimizer.make().update(jax.tree.map(jnp.negative, grads), state.opt_state,
                                                           state.params)
        params = optax.apply_updates(state.params, updates)
        return RenderState(params, opt_state, prior_state, state.step + 1), (value, trace)

    return step_fn


def _run_unit(step_fn, n_steps, max_steps, model_params, state, obj, target_key, parts):
    """``n_steps`` (traced, ≤ ``max_steps``) steps of one unit.

    The step count is a runtime value, so a run's last, shorter chunk (and a resumed run's)
    reuses the compiled loop; the per-step values fill float32 buffers: the objective ``[max_steps]``,
    the prior's trace ``[max_steps]`` per image (``[max_steps, images]`` for a group).
    """
    buffers = (jnp.zeros((max_steps,), jnp.float32), jnp.zeros((max_steps, *target_key.shape), jnp.float32))

    def body(i, carry):
        state, buffers = carry
        state, outs = step_fn(model_params, state, obj, _step_keys(target_key, state.step), parts)
        return state, tuple(b.at[i].set(o.astype(jnp.float32)) for b, o in zip(buffers, outs))

    state, (values, traces) = jax.lax.fori_loop(0, n_steps, body, (state, buffers))
    return state, values, traces


def vectorize_images(platform: str) -> bool:
    """Whether a device's units are vmapped (GPU/TPU) or run one after another (CPU; see below)."""
    return platform != "cpu"


def _over_units(fn, batched: bool, axis_name: str | None = None):
    """Maps a one-unit function over a device's local units.

    On CPU the units run one after another (``lax.map``): every unit then runs the very same
    compiled computation whatever the number of devices, so sharding does not change a single
    bit, and CPU convolutions gain nothing from batching. On GPU/TPU they are vmapped, and so
    they are everywhere with ``axis_name`` (a batch-level prior pools over it).
    """
    if batched or axis_name:
        return jax.vmap(fn, axis_name=axis_name)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def _sharded(mesh, fn, specs):
    """``fn(*args)`` run on each device's shard: ``specs`` says per argument ``"batch"`` or ``"all"``."""
    by = {"batch": PartitionSpec(AXIS), "all": PartitionSpec()}
    return jax.shard_map(fn, mesh=mesh, in_specs=tuple(by[s] for s in specs), out_specs=PartitionSpec(AXIS),
                         check_vma=False)


def _init_unit(model, size, model_params, target_key, parts: Parts, image=None, *, images: int = 1):
    """The initial :class:`RenderState` of one unit (``images`` keys folded from ``target_key``)."""
    p, t, prior = parts.parameterization, parts.transform, parts.prior

    def one(key, photo):
        params = p.init(key=jax.random.split(key)[0], size=size) if photo is None else p.inverse(photo)
        image_ = p.to_image(params)
        # the prior's state is shaped by the features it sees during the steps, i.e. of the
        # transformed image (default transforms pad S -> S + 12), so initialize it from one
        seen = t(image_, key=step_key(key, 0), step=jnp.zeros((), jnp.int32))
        return params, image_, seen

    def prior_init(features, image_):
        canvas = None
        if canvas_lib.supports(t) and prior.layers:
            shapes = jax.eval_shape(lambda im: model.features(model_params, model_input(model, im), prior.layers),
                                    image_)
            canvas = {layer: a.shape for layer, a in shapes.items()}
        return prior.init(features, canvas=canvas)

    if images == 1:
        params, image_, seen = one(target_key, image)
        features = model.features(model_params, model_input(model, seen), prior.layers) if prior.layers else {}
        prior_state = prior_init(features, image_)
    else:
        keys = target_key  # [images]
        params, image_, seen = jax.vmap(lambda k: one(k, image))(keys)
        features = model.features(model_params, model_input(model, seen), prior.layers) if prior.layers else {}
        prior_state = jax.vmap(prior_init)(features, image_) if prior.layers else \
            jax.vmap(lambda im: prior_init({}, im))(image_)
    return RenderState(params, parts.optimizer.make().init(params), prior_state, jnp.zeros((), jnp.int32))


def _final_unit(model, model_params, state, obj, parts: Parts, *, images: int = 1):
    prior = parts.prior
    layers = _layers(obj, prior)
    if images == 1:
        image = parts.parameterization.to_image(state.params)
        features = model.features(model_params, model_input(model, image), layers)
        return image, obj(features), prior.report(features, state.prior_state)
    group = jax.vmap(parts.parameterization.to_image)(state.params)
    features = model.features(model_params, model_input(model, group), layers)
    own = objectives_lib.per_image_part(obj)
    per_image = jax.vmap(own)(features) if own is not None else jnp.full((group.shape[0],), obj(features))
    return group, per_image, jax.vmap(prior.report)(features, state.prior_state)


def compile_programs(model, *, size: int, mesh: Mesh, chunk_steps: int = 16, compute_dtype: str = "float32",
                     redirect: bool = False, images: int = 1, pooled: bool = False,
                     store_key: str | None = None) -> Programs:
    """Jitted, sharded :class:`Programs` for targets of any structure (parts and objectives are arguments).

    Args:
      model: a :class:`jaxviz.Model` (closed over: its functions are what is traced).
      size: image side.
      mesh: a mesh with one axis ``"targets"`` (:data:`AXIS`).
      chunk_steps: most steps one ``run_chunk`` call runs.
      compute_dtype: ``float32`` or ``bfloat16`` (GPU/TPU only).
      redirect: also build the redirected-gradient chunk program (``run_chunk(..., redirect=True)``).
      images: images per unit (a group per target when > 1).
      pooled: the prior is batch-level (``prior.pooled``): units are vmapped with a pooling axis.
      store_key: stable text naming the model and the settings above: the programs are then kept on
        disk in exported form (:mod:`jaxviz.render.stored`, which also checks the arguments can be
        named), so a later process neither traces nor lowers them. ``None``: not stored.

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
    settings = dict(images=images, compute_dtype=dtype, pool_axes=(AXIS, IMAGES) if pooled else None)
    step_fns = {flag: make_step(model, **settings, redirect=flag) for flag in ((False, True) if redirect else (False,))}

    def stored(fn, name, **kwargs):
        key = None if store_key is None else "|".join(map(str, (
            store_key, name, size, chunk_steps, compute_dtype, batched, pooled, images, mesh.axis_names,
            mesh.devices.shape)))
        return stored_lib.StoredFunction(fn, name=name, key=key, **kwargs)

    def init_sharded(model_params, keys, parts, *photos):
        one = lambda k, *im: _init_unit(model, size, model_params, k, parts, *im, images=images)  # noqa: E731
        return _over_units(one, batched)(keys, *photos)

    init_programs = [stored(_sharded(mesh, init_sharded, ("all", "batch", "all", *("batch",) * n)), f"init{n + 1}")
                     for n in (0, 1)]  # traced on first use

    def init(model_params, keys, parts, images_=None):
        if images_ is None:
            return init_programs[0](model_params, keys, parts)
        return init_programs[1](model_params, keys, parts, images_)

    def chunk_program(step_fn):
        def run_chunk_sharded(n_steps, model_params, state, obj, keys, parts):
            one = functools.partial(_run_unit, step_fn, n_steps, chunk_steps, model_params)
            return _over_units(lambda s, o, k: one(s, o, k, parts), batched, IMAGES if pooled else None)(
                state, obj, keys)

        return _sharded(mesh, run_chunk_sharded, ("all", "all", "batch", "batch", "batch", "all"))

    programs = {flag: stored(chunk_program(fn), "chunk-redirected" if flag else "chunk", donate_argnums=(2,),
                             compiler_options=options) for flag, fn in step_fns.items()}

    def final(model_params, state, obj, parts):
        one = lambda s, o: _final_unit(model, model_params, s, o, parts, images=images)  # noqa: E731
        return _over_units(one, batched)(state, obj)

    def run_chunk(n_steps, model_params, state, obj, keys, parts, *, redirect=False):
        if not 1 <= n_steps <= chunk_steps:
            raise ValueError(f"a chunk runs 1..{chunk_steps} steps, got {n_steps}")
        state, values, traces = programs[redirect](np.int32(n_steps), model_params, state, obj, keys, parts)
        return state, np.asarray(values)[:, :n_steps], np.asarray(traces)[:, :n_steps]

    run_chunk.jitted = programs[False].jitted
    return Programs(init, run_chunk, stored(_sharded(mesh, final, ("all", "batch", "batch", "all")), "final"))
