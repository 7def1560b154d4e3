"""The optimization loop: many targets at once, sharded over devices, checkpointed.

One image per target. :mod:`jaxviz.render.step` builds the step for one image and compiles it for a
batch whose leading axis is sharded over the devices; this module runs it: groups targets by
structure (one compiled program each), pads launches, runs chunks of steps between host syncs
(progress, NaN guard, Orbax checkpoints through :class:`jaxviz.common.checkpoint.RunStore`) and gathers
the results.

Randomness is a pure function of ``(key, target index, step)``, so a run resumed from a
checkpoint, or split over a different number of devices, draws the same transforms.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz.common import identity as identity_lib
from jaxviz import objectives as objectives_lib
from jaxviz.image import param as param_lib
from jaxviz import priors as priors_lib
from jaxviz import registry
from jaxviz.image import transforms as transforms_lib
from jaxviz.common.errors import NonFiniteLossError, UsageError
from jaxviz.common.checkpoint import fingerprint
from jaxviz.recipes.config import RenderConfig
from jaxviz.report.result import RenderResult
from jaxviz.render import reuse
from jaxviz.render.step import AXIS, Programs

__all__ = ["render_images", "render", "devices_for", "seed_images"]


def _part(obj: Any, argument: str) -> str:
    """A part's checkpoint identity: its :func:`fingerprint`, or for an object whose repr is only its
    address (your own class without a ``__repr__``) what :func:`jaxviz.common.identity.identify` finds."""
    if re.search(r" at 0x[0-9a-f]+", repr(obj)):
        return identity_lib.identify(obj, argument=argument)
    return fingerprint(obj)


def devices_for(n_targets: int, devices) -> int:
    """How many of ``devices`` a group of ``n_targets`` targets runs on.

    GPUs/TPUs: all of them (a padded slot costs nothing but its own device). CPU devices share
    one machine's cores, so a padded slot would take a core from the real images: a group uses
    at most one device per target.
    """
    if all(d.platform == "cpu" for d in devices):
        return max(1, min(len(devices), n_targets))
    return len(devices)


def _launch_size(batch_size: int, n_devices: int) -> int:
    return int(math.ceil(max(1, batch_size) / n_devices) * n_devices)


def _group_by_structure(targets) -> list[list[int]]:
    """Indices of targets sharing a pytree structure (same kind and layers → one compiled step)."""
    groups: dict = {}
    for i, target in enumerate(targets):
        groups.setdefault(jax.tree.structure(target), []).append(i)
    return list(groups.values())


def _check_inputs(model, targets, config, prior, seeded=False):
    config.check(model)
    if config.steps == 0 and not seeded:
        raise UsageError("RenderConfig.steps must be at least 1 (0 is allowed only with init_images)")
    if not targets:
        raise UsageError("targets is empty")
    for t in targets:
        if not isinstance(t, objectives_lib.Objective):
            raise UsageError(f"targets must be jaxviz.objectives objects, got {type(t).__name__}")
        objectives_lib.check_indices(t, model.layers)
    if config.redirect_steps and model.apply_redirected is None:
        raise UsageError(f"redirect_steps needs a model with redirected ReLUs; {model.name} has none")
    if any(getattr(t, "batched", False) for t in targets):
        raise UsageError("a batch objective (diversity) needs images_per_target >= 2")
    warmup = getattr(prior, "warmup", 0)
    if isinstance(warmup, int) and warmup >= config.steps > 0 and not isinstance(prior, priors_lib.NoPrior):
        raise UsageError(f"the prior's warmup ({warmup}) is not below steps ({config.steps}): it would never act; "
                         "lower warmup or raise steps")


def render_images(model, targets, *, key: jax.Array | None = None, config: RenderConfig | None = None,
           recipe=None, parameterization=None, transform=None, optimizer: optax.GradientTransformation | None = None,
           prior=None, image_penalty: Callable | None = None, checkpoint_dir: str | None = None,
           progress: Callable | bool | None = None, devices: Sequence[jax.Device] | None = None,
           init_images=None, images_per_target: int = 1) -> RenderResult:
    """Optimizes one image per target (``images_per_target`` images with a batch objective).

    Every part not given comes from ``recipe``: by default :data:`jaxviz.recipes.DEFAULT`, the
    best recipe measured (README "Experiments").

    Args:
      model: a :class:`jaxviz.Model`.
      targets: one objective, a target string (``logits:207``, ``blocks.10:7``, ``blocks.7`` for a
        whole layer), or a list of them (see :func:`jaxviz.objectives.as_targets`); targets with
        the same structure share one compiled step.
      key: PRNG key; default ``jax.random.key(config.seed)``.
      config: a :class:`RenderConfig`; default ``recipe.config()`` (its size and passes).
      recipe: a :class:`jaxviz.recipes.Recipe` or its name (built at ``config.size``); default
        :data:`jaxviz.recipes.DEFAULT`.
      parameterization: a :class:`jaxviz.image.param.Parameterization` object or name; default
        ``config.param``, else the recipe's.
      transform: a :class:`jaxviz.image.transforms.Transform` object or name; default ``config.transforms``,
        else the recipe's.
      optimizer: any optax transformation; default the recipe's (``config.learning_rate`` replaces
        its learning rate).
      prior: a :class:`jaxviz.priors.Prior` (or name) subtracted from the objective; default the
        recipe's (``"none"``: no prior).
      image_penalty: ``f(image [S,S,3]) -> scalar`` subtracted from the objective; default the recipe's.
      checkpoint_dir: Orbax checkpoints every ``config.checkpoint_every`` steps; an existing one
        with the same settings is resumed.
      progress: ``None`` (default): a ``tqdm.auto`` bar (a widget in Jupyter); ``False``: none;
        or ``callback(done_steps, total_steps, mean_value)`` after each chunk.
      devices: devices to shard the targets over (default: all local devices).
      init_images: start from photos instead of noise: one image ``[H, W, 3]`` for every target or
        one per target ``[T, H, W, 3]`` (float in ``[0, 1]`` or uint8; resized and centre-cropped to
        ``config.size``); the params start at ``parameterization.inverse(image)``, so with
        ``config.steps = 0`` the result is the photos (within 1/255).
      images_per_target: optimize this many images per target together, so that a batch objective
        such as ``channel(...) + 100 * objectives.diversity(layer)`` (Lucid's diversity) compares
        them (see :mod:`jaxviz.render.groups`). Rows are target-major.

    Returns:
      A :class:`RenderResult` in the order of ``targets``.

    Raises:
      UsageError: bad arguments; NonFiniteLossError: NaN/Inf loss (last good checkpoint kept);
      CheckpointMismatchError: the checkpoint belongs to another run.
    """
    from jaxviz.common.cache import enable_compile_cache

    from jaxviz import recipes as recipes_lib
    from jaxviz.common.progress import progress_bar

    enable_compile_cache()  # compiled steps persist across processes (JAXVIZ_COMPILE_CACHE=0: off)
    targets = objectives_lib.as_targets(targets, model.layers)
    recipe = recipes_lib.resolve(recipe, size=None if config is None else config.size)
    config = recipe.config() if config is None else config
    config.check()
    if prior is None and recipe.prior is not None:
        prior = recipe.prior(model)
    if image_penalty is None and recipe.image_penalty is not None:
        image_penalty = recipe.image_penalty(model)
    own_parts = not (parameterization or config.param) or not (transform or config.transforms) or optimizer is None
    parameterization = parameterization or config.param or recipe.parameterization
    transform = transform or config.transforms or recipe.transform
    custom_optimizer = optimizer is not None
    if optimizer is None:
        optimizer = recipe.override(learning_rate=config.learning_rate).make_optimizer(config.steps)
        optimizer_text = repr(recipe.override(learning_rate=config.learning_rate).optimizer) + (
            f" over {recipe.crops_per_step} passes (optax.MultiSteps)" if recipe.crops_per_step > 1 else "")
    else:
        optimizer_text = f"custom {type(optimizer).__name__}"
    if progress is None or progress is True:
        bar, close_bar = progress_bar("jaxviz render")
    else:
        bar, close_bar = (progress or None), (lambda: None)
    try:
        if images_per_target != 1 or any(getattr(t, "batched", False) for t in targets):
            from jaxviz.render import groups as diverse

            result = diverse.render_groups(
                model, targets, images_per_target, key=key, config=config, parameterization=parameterization,
                transform=transform, optimizer=optimizer, prior=prior, image_penalty=image_penalty,
                progress=bar, checkpoint_dir=checkpoint_dir, init_images=init_images, devices=devices,
                optimizer_key=_optimizer_key(optimizer, custom_optimizer, optimizer_text, config))
        else:
            result = _render(model, targets, key=key, config=config, parameterization=parameterization,
                             transform=transform, optimizer=optimizer, prior=prior, image_penalty=image_penalty,
                             checkpoint_dir=checkpoint_dir, progress=bar, devices=devices, init_images=init_images,
                             custom_optimizer=custom_optimizer, optimizer_text=optimizer_text)
    finally:
        close_bar()
    record = {"recipe": recipe.name if own_parts else "custom", "model": model.name,
              **{k: v for k, v in config.numbers().items() if k not in ("param", "transforms", "learning_rate")},
              "parameterization": repr(registry.resolve("parameterization", parameterization,
                                                        argument="parameterization")),
              "transform": repr(registry.resolve("transform", transform, argument="transform")),
              "optimizer": optimizer_text, "prior": repr(result_prior(prior)),
              "image_penalty": None if image_penalty is None else fingerprint(image_penalty)}
    if images_per_target != 1:
        record["images_per_target"] = images_per_target
    return result._replace(record=record)


def result_prior(prior):
    """The prior object a render used (``None`` → :func:`jaxviz.priors.none`)."""
    return registry.resolve("prior", prior or "none", argument="prior", protocol=priors_lib.Prior)


def _render(model, targets, *, key, config, parameterization, transform, optimizer, prior, image_penalty,
            checkpoint_dir, progress, devices, init_images, custom_optimizer, optimizer_text=None) -> RenderResult:
    """:func:`render` once the parts are chosen: one image per per-image target."""
    from jaxviz.common import checkpoint as ckpt_lib

    prior = registry.resolve("prior", prior or "none", argument="prior", protocol=priors_lib.Prior)
    _check_inputs(model, targets, config, prior, seeded=init_images is not None)
    parameterization = registry.resolve("parameterization", parameterization,
                                        argument="parameterization", protocol=param_lib.Parameterization)
    if init_images is not None:
        init_images = seed_images(init_images, len(targets), config.size)
        if not callable(getattr(parameterization, "inverse", None)):
            raise UsageError(f"init_images needs a parameterization with an inverse; {parameterization!r} has none")
    transform = registry.resolve("transform", transform, argument="transform",
                                 protocol=transforms_lib.Transform)
    if image_penalty is not None and not callable(image_penalty):
        raise UsageError(f"image_penalty must be a function of the image, got {type(image_penalty).__name__}")
    explicit_key = key is not None
    key = key if explicit_key else jax.random.key(config.seed)
    devices = list(devices or jax.local_devices())
    placements: dict = {}  # devices used -> (mesh, batch sharding, replicated model params)

    def place(n_used):
        if n_used not in placements:
            mesh = Mesh(np.array(devices[:n_used]), (AXIS,))
            placements[n_used] = (mesh, NamedSharding(mesh, PartitionSpec(AXIS)),
                                  jax.device_put(model.params, NamedSharding(mesh, PartitionSpec())))
        return placements[n_used]

    store = None
    if checkpoint_dir:
        identity = dict(config=config, model=model.name, targets=[repr(t) for t in targets],
                        prior=_part(prior, "prior="), parameterization=_part(parameterization, "parameterization="),
                        transform=_part(transform, "transform="), launch=_launch_size(config.batch_size, len(devices)))
        if explicit_key:
            identity["key"] = np.asarray(jax.random.key_data(key)).tolist()
        if image_penalty is not None:  # code: hashed, not its repr (README "Guarantees")
            identity["image_penalty"] = identity_lib.identify(image_penalty, argument="image_penalty=")
        if init_images is not None:
            identity["init_images"] = hashlib.sha1(init_images.tobytes()).hexdigest()
        if custom_optimizer:  # its closures' hyperparameters and its state on a probe (jaxviz.common.identity)
            probe = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(
                lambda: parameterization.init(key=jax.random.key(0), size=config.size)))
            identity["optimizer"] = identity_lib.optimizer_identity(optimizer, probe)
        elif optimizer_text:  # the recipe's optimizer, with its hyperparameters
            identity["optimizer"] = optimizer_text
        store = ckpt_lib.RunStore(checkpoint_dir, **identity)

    n = len(targets)
    images = np.zeros((n, config.size, config.size, 3), np.float32)
    activation = np.zeros(n, np.float32)
    history = np.zeros((n, config.steps), np.float32)
    trace = np.zeros((n, config.steps), np.float32)
    prior_info: dict[str, np.ndarray] = {}
    compiled: dict[Any, Programs] = {}
    parts = dict(parameterization=parameterization, transform=transform, optimizer=optimizer, prior=prior,
                 image_penalty=image_penalty)

    optimizer_key = _optimizer_key(optimizer, custom_optimizer, optimizer_text, config)
    done_steps, total_steps = 0, n * config.steps
    for group_index, indices in enumerate(_group_by_structure(targets)):
        n_devices = devices_for(len(indices), devices)
        mesh, batch_sharding, model_params = place(n_devices)
        # a group smaller than the batch is padded only to the device count, not to batch_size
        launch = min(_launch_size(config.batch_size, n_devices), int(math.ceil(len(indices) / n_devices)) * n_devices)
        for start in range(0, len(indices), launch):
            chunk = indices[start : start + launch]
            padded = list(chunk) + [chunk[-1]] * (launch - len(chunk))
            obj = jax.device_put(objectives_lib.stack([targets[i] for i in padded]), batch_sharding)
            target_keys = jax.device_put(
                jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(padded)), batch_sharding)
            signature = (jax.tree.structure(obj), n_devices)
            if signature not in compiled:
                compiled[signature] = reuse.programs_for(model, targets[chunk[0]], parts, config, mesh, signature,
                                                         optimizer_key)
            programs = compiled[signature]
            seeds = None if init_images is None else jax.device_put(init_images[padded], batch_sharding)
            state, values_log = _run_launch(programs, config, model_params, obj, target_keys, store,
                                            f"{group_index:03d}_{start:06d}", checkpoint_dir, len(chunk),
                                            lambda steps, value: progress and progress(done_steps + steps, total_steps,
                                                                                       value), seeds)
            done_steps += config.steps * len(chunk)
            out_images, out_values, out_prior = jax.device_get(programs.final(model_params, state, obj))
            keep = slice(0, len(chunk))
            if not (np.all(np.isfinite(out_images[keep])) and np.all(np.isfinite(out_values[keep]))):
                # the last update is applied after the last checked value: check its result too
                raise NonFiniteLossError("the final image or objective is NaN/Inf; try a smaller learning rate")
            images[chunk] = out_images[keep]
            activation[chunk] = out_values[keep]
            history[chunk] = values_log[0, :, keep].T
            trace[chunk] = values_log[1, :, keep].T
            for name, value in out_prior.items():
                prior_info.setdefault(name, np.zeros((n, *value.shape[1:]), value.dtype))
                prior_info[name][chunk] = value[keep]
    if store:
        store.close()
    return RenderResult(images, activation, history, trace, prior_info,
                        tuple(objectives_lib.target_name(t) for t in targets), getattr(prior, "trace_name", None))


def _optimizer_key(optimizer, custom: bool, text: str | None, config):
    # the recipe's optimizer is described by its text and step count (its closures are new each call)
    return reuse.part_key(optimizer) if custom or not text else ("recipe", text, config.steps)


def seed_images(images, n_targets: int, size: int) -> np.ndarray:
    """``init_images`` as ``[n_targets, size, size, 3]`` float32 in ``[0, 1]``.

    Args:
      images: one image ``[H, W, 3]`` (used for every target), or ``[n_targets, H, W, 3]`` / a list;
        float in ``[0, 1]`` or uint8. Other sizes are resized and centre-cropped.

    Raises:
      UsageError: wrong shape, count or value range.
    """
    from jaxviz.common.images import as_uint8_batch, resize_batch01

    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4):
        # uint8 photos take the same resize as everywhere else (Pillow's 8-bit path)
        images = as_uint8_batch(images, size)
        images = images[0] if len(images) == 1 else images
    if isinstance(images, (list, tuple)):
        images = [np.asarray(im) for im in images]
        if len({im.shape for im in images}) > 1:  # mixed sizes: bring each to the size first
            images = [resize_batch01(_unit(im)[None], size)[0] for im in images]
        images = np.stack(images) if images else np.zeros((0,))
    images = _unit(np.asarray(images))
    if images.ndim == 3:
        images = np.broadcast_to(images, (n_targets, *images.shape))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] != n_targets:
        raise UsageError(f"init_images must be one [H, W, 3] image or one per target ({n_targets}), "
                         f"got shape {images.shape}")
    return np.ascontiguousarray(resize_batch01(images, size), np.float32)


def _unit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    image = image.astype(np.float32)
    if image.size and not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
        raise UsageError("init_images must be uint8 or float values in [0, 1]")
    return image


def _run_launch(programs: Programs, config: RenderConfig, model_params, obj, target_keys, store, launch_id: str,
                checkpoint_dir, n_real: int, report: Callable, seeds=None):
    """Runs (or resumes) one launch to ``config.steps``; returns ``(state, log [2, steps, B])``."""
    state = programs.init(model_params, target_keys, seeds)
    values_log = np.zeros((2, config.steps, int(target_keys.shape[0])), np.float32)  # objective, prior trace
    resumed = store.restore(launch_id, state, values_log) if store else None
    if resumed is not None:
        state, values_log = resumed
    step = int(np.asarray(state.step).max())
    while step < config.steps:
        redirect = step < config.redirect_steps
        # a chunk never straddles the end of the redirected steps: each runs one program
        n = min(config.chunk_steps, (config.redirect_steps if redirect else config.steps) - step)
        new_state, values, traces = programs.run_chunk(n, model_params, state, obj, target_keys, redirect=redirect)
        values = np.asarray(values).T  # [steps, targets]
        if not np.all(np.isfinite(values)):
            where = f" (last checkpoint kept in {checkpoint_dir})" if store else ""
            raise NonFiniteLossError(
                f"the objective became NaN/Inf at step {step + int(np.argmax(~np.isfinite(values).all(1)))}"
                f"{where}; try a smaller learning rate")
        state = new_state
        values_log[:, step : step + n] = values, np.asarray(traces).T
        step += n
        if store and (step % config.checkpoint_every < n or step == config.steps):
            store.save(launch_id, step, state, values_log)
        report(step * n_real, float(values[-1, :n_real].mean()))
    return state, values_log


def render(*args, **kwargs):
    """Deprecated name of :func:`render_images` (the module and the function shared a name)."""
    import warnings

    warnings.warn("jaxviz.render.render is now jaxviz.render.render_images (or jaxviz.render_images)",
                  DeprecationWarning, stacklevel=2)
    return render_images(*args, **kwargs)
