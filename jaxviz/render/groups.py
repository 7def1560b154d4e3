"""Several images per target, optimized together: Lucid's batch diversity objective.

Lucid/Lucent render a batch of images for one objective, ``channel(...) - w · diversity(layer)`` as a
loss; jaxviz maximizes, so it is ``channel(...) + w * diversity(layer)`` here. The diversity term compares the images' Gram matrices so that they differ
(:class:`jaxviz.objectives.Diversity`). :func:`render_groups` does that for each target: its
``n`` images share one optimizer state over the stacked parameters and one batched forward pass;
per-image terms are summed over the group (:func:`jaxviz.objectives.batch_value`), the prior and
the image penalty apply per image. :func:`jaxviz.render.render_images` calls it for
``images_per_target > 1`` or a batch objective.

It runs each group on one device, with no checkpoints and no photo seeds (use one image per
target for those).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxviz import objectives as objectives_lib
from jaxviz.image import param as param_lib
from jaxviz import priors as priors_lib
from jaxviz import registry
from jaxviz.image import transforms as transforms_lib
from jaxviz.common.errors import NonFiniteLossError, UsageError
from jaxviz.render import reuse
from jaxviz.render import stored as stored_lib
from jaxviz.render.step import model_input, step_key

__all__ = ["render_groups", "per_image_part"]


def per_image_part(objective):
    """The per-image terms of ``objective`` (what each image's ``activation`` reports), or ``None``."""
    if not objective.batched:
        return objective
    terms = [(t, w) for t, w in zip(getattr(objective, "terms", ()), getattr(objective, "weights", ()))
             if not t.batched]
    if not terms:
        return None
    out = terms[0][0] * terms[0][1]
    for t, w in terms[1:]:
        out = out + t * w
    return out


def render_groups(model, targets, n: int, *, key, config, parameterization, transform, optimizer, prior,
                  image_penalty, progress, checkpoint_dir=None, init_images=None, devices=None, optimizer_key=None):
    """``n`` images per target, optimized jointly per target (see the module docstring).

    Arguments as :func:`jaxviz.render.render_images` (parts already chosen; ``optimizer_key`` describes the
    optimizer for the kept programs, see :func:`jaxviz.render.reuse.programs_for`; ``None``: by identity). Returns a
    :class:`jaxviz.render.RenderResult` with ``len(targets) · n`` rows, target-major; its targets
    are named ``<target>#<k>``; ``history`` is the group's objective (the same for its images),
    ``activation`` each image's per-image terms.

    Raises:
      UsageError: ``n < 1``, a batch objective with ``n < 2``, or an option this path lacks.
    """
    from jaxviz.render.loop import RenderResult

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 1024:
        raise UsageError(f"images_per_target must be an integer between 1 and 1024, got {n!r}")
    if n < 2 and any(t.batched for t in targets):
        raise UsageError("a batch objective (diversity) needs images_per_target >= 2")
    for what, value in (("checkpoint_dir", checkpoint_dir), ("init_images", init_images)):
        if value is not None:
            raise UsageError(f"{what}= is not supported with images_per_target > 1 or a batch objective")
    if config.redirect_steps or config.compute_dtype != "float32":
        raise UsageError("RenderConfig.redirect_steps and compute_dtype are not supported with images_per_target > 1")
    prior = registry.resolve("prior", prior or "none", argument="prior", protocol=priors_lib.Prior)
    _check_group_inputs(model, targets, config)
    parameterization = registry.resolve("parameterization", parameterization, argument="parameterization",
                                        protocol=param_lib.Parameterization)
    transform = registry.resolve("transform", transform, argument="transform", protocol=transforms_lib.Transform)
    key = jax.random.key(config.seed) if key is None else key
    device = list(devices or jax.local_devices())[0]
    model_params = jax.device_put(model.params, device)

    rows = len(targets) * n
    images = np.zeros((rows, config.size, config.size, 3), np.float32)
    activation = np.zeros(rows, np.float32)
    history = np.zeros((rows, config.steps), np.float32)
    trace = np.zeros((rows, config.steps), np.float32)
    prior_info: dict = {}
    names = []
    done, total = 0, rows * config.steps
    parts = dict(parameterization=parameterization, transform=transform, optimizer=optimizer, prior=prior,
                 image_penalty=image_penalty)
    optimizer_key = reuse.part_key(optimizer) if optimizer_key is None else optimizer_key
    for t_index, target in enumerate(targets):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(t_index * n, (t_index + 1) * n))
        obj = jax.device_put(target, device)
        init, chunk, final = _kept_programs(model, target, parts, config.size, optimizer_key)
        state = init(model_params, keys)
        step = 0
        while step < config.steps:
            m = min(config.chunk_steps, config.steps - step)
            state, values, traces = chunk(m, model_params, state, keys, obj)
            values, traces = np.asarray(values), np.asarray(traces)
            if not np.all(np.isfinite(values)):
                raise NonFiniteLossError(f"the objective became NaN/Inf near step {step}; try a smaller learning rate")
            rows_t = slice(t_index * n, (t_index + 1) * n)
            history[rows_t, step:step + m] = values[None]
            trace[rows_t, step:step + m] = traces.T
            step += m
            done += m * n
            if progress:
                progress(done, total, float(values[-1]))
        out_images, per_image, report = jax.device_get(final(model_params, state, obj))
        if not (np.all(np.isfinite(out_images)) and np.all(np.isfinite(per_image))):
            raise NonFiniteLossError("the final image or objective is NaN/Inf; try a smaller learning rate")
        rows_t = slice(t_index * n, (t_index + 1) * n)
        images[rows_t], activation[rows_t] = out_images, per_image
        for name, value in report.items():
            prior_info.setdefault(name, np.zeros((rows, *value.shape[1:]), value.dtype))
            prior_info[name][rows_t] = value
        base = _group_name(target)
        names += [f"{base}#{k}" for k in range(n)]
    return RenderResult(images, activation, history, trace, prior_info, tuple(names),
                        getattr(prior, "trace_name", None))


def _group_name(objective) -> str:
    """``blocks.10:7`` for ``channel('blocks.10', 7) + w * diversity(...)`` (its per-image target), else the repr."""
    own = per_image_part(objective)
    terms, weights = getattr(own, "terms", None), getattr(own, "weights", None)
    if terms is not None and len(terms) == 1 and float(np.asarray(weights[0])) == 1.0:
        own = terms[0]
    return objectives_lib.target_name(own) if own is not None else repr(objective)


def _check_group_inputs(model, targets, config):
    """The checks of :func:`jaxviz.render.render_images` that apply here (steps, size, layers, indices)."""


    config.check(model)
    if config.steps < 1:
        raise UsageError("RenderConfig.steps must be at least 1")
    if not targets:
        raise UsageError("targets is empty")
    for t in targets:
        objectives_lib.check_indices(t, model.layers)


def _kept_programs(model, objective, parts, size, optimizer_key):
    """:func:`_programs` kept across calls (:mod:`jaxviz.render.reuse`), stored on disk when every part is
    described (:mod:`jaxviz.render.stored`): targets of one structure share them."""
    key = (("groups", id(model)), jax.tree.structure(objective), tuple(objective.layers), size, optimizer_key,
           *(reuse.part_key(parts[k]) for k in ("parameterization", "transform", "prior", "image_penalty")))
    store_key = reuse.store_key(model, objective, parts, optimizer_key)
    return reuse.cached_programs(key, (model, *parts.values()), lambda: _programs(
        model, objective, **parts, size=size, store_key=None if store_key is None else f"groups|{size}|{store_key}"))


def _programs(model, objective, *, parameterization, transform, optimizer, prior, image_penalty, size, store_key):
    """``init(model_params, keys)``, ``chunk(m, model_params, state, keys, obj)`` and ``final(model_params, state,
    obj)`` for objectives shaped like ``objective`` (its values are arguments, so one structure runs one program)."""
    layers = tuple(dict.fromkeys((*objective.layers, *prior.layers)))

    def init(model_params, keys):
        params = jax.vmap(lambda k: parameterization.init(key=jax.random.split(k)[0], size=size))(keys)
        images = jax.vmap(parameterization.to_image)(params)
        seen = jax.vmap(lambda im, k: transform(im, key=step_key(k, 0)))(images, keys)
        if prior.layers:
            features = model.features(model_params, model_input(model, seen), prior.layers)
            prior_state = jax.vmap(prior.init)(features)
        else:
            prior_state = jax.vmap(lambda _: prior.init({}))(keys)
        return params, optimizer.init(params), prior_state, jnp.zeros((), jnp.int32)

    def loss(params, prior_state, step, keys, model_params, obj):
        images = jax.vmap(parameterization.to_image)(params)
        seen = jax.vmap(lambda im, k: transform(im, key=step_key(k, step)))(images, keys)
        features = model.features(model_params, model_input(model, seen), layers)
        value = jnp.asarray(objectives_lib.batch_value(obj, features), jnp.float32)
        penalty, prior_state, trace = jax.vmap(prior.apply, in_axes=(0, 0, None))(features, prior_state, step)
        total = value - jnp.sum(penalty)
        if image_penalty is not None:
            total = total - jnp.sum(jax.vmap(image_penalty)(images))
        return total, (value, prior_state, trace)

    def one_step(model_params, state, keys, obj):
        params, opt_state, prior_state, step = state
        grads, (value, prior_state, trace) = jax.grad(loss, has_aux=True)(params, prior_state, step, keys,
                                                                          model_params, obj)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, prior_state, step + 1), (value, trace)

    def stored(fn, name):
        key = None if store_key is None else f"{store_key}|{name}"
        return stored_lib.StoredFunction(fn, name=f"groups-{name}", key=key)

    run_one = stored(one_step, "step")

    def chunk(m, model_params, state, keys, obj):
        values, traces = [], []
        for _ in range(m):
            state, (value, trace) = run_one(model_params, state, keys, obj)
            values.append(value)
            traces.append(trace)
        return state, jnp.stack(values), jnp.stack(traces)

    def final(model_params, state, obj):
        params, _, prior_state, _ = state
        images = jax.vmap(parameterization.to_image)(params)
        features = model.features(model_params, model_input(model, images), layers)
        own = per_image_part(obj)
        per_image = jax.vmap(own)(features) if own is not None else jnp.full((images.shape[0],), obj(features))
        return images, per_image, jax.vmap(prior.report)(features, prior_state)

    return stored(init, "init"), chunk, stored(final, "final")
