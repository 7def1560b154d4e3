"""The optimization loop: many targets at once, sharded over devices, checkpointed.

:mod:`jaxviz.render.step` builds the step of one unit (an image, or a group of images of one target)
and compiles it for a batch whose leading axis is sharded over the devices; this module runs it:
builds the parts from the recipe, groups targets by structure, pads launches, runs chunks of steps
between host syncs (progress, NaN guard, Orbax checkpoints through
:class:`jaxviz.common.checkpoint.RunStore`) and gathers the results.

Randomness is a pure function of ``(key, image index, step)``, so a run resumed from a checkpoint,
or split over a different number of devices, draws the same transforms.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz import objectives as objectives_lib
from jaxviz import priors as priors_lib
from jaxviz import registry
from jaxviz.common import identity as identity_lib
from jaxviz.common import pytree
from jaxviz.common.errors import NonFiniteLossError, UsageError, check_integer
from jaxviz.image import param as param_lib
from jaxviz.image import transforms as transforms_lib
from jaxviz.image.seeds import seed_images
from jaxviz.recipes.config import RenderConfig
from jaxviz.render import step as step_lib
from jaxviz.render.step import AXIS, Parts, PlainOptimizer, Programs
from jaxviz.report.result import RenderResult

__all__ = ["render_images", "build_parts", "devices_for", "seed_images", "programs_for", "clear_programs"]

MAX_PROGRAMS = 16  # program sets kept per model (each holds compiled executables: tens of MB for Lite0)
_programs: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {settings: Programs}


def programs_for(model, *, size: int, mesh: Mesh, chunk_steps: int, compute_dtype: str, redirect: bool,
                 images: int, pooled: bool) -> Programs:
    """The :class:`~jaxviz.render.step.Programs` of ``model`` for these settings, kept across calls.

    Parts and objectives are arguments of the programs, so a later render with parts of the same
    structure (other statistics, another class) neither traces nor compiles again: JAX's own cache
    decides. The programs are also stored on disk when the model is one :func:`jaxviz.load_model` built.
    """
    from jaxviz.common import hardware
    from jaxviz.models import program_identity

    options = hardware.compiler_options(mesh.devices.flat)
    settings = (size, mesh, chunk_steps, compute_dtype, redirect, images, pooled, tuple(sorted((options or {}).items())))
    table = _programs.setdefault(model, {})
    if settings not in table:
        identity = program_identity(model)
        table[settings] = step_lib.compile_programs(
            model, size=size, mesh=mesh, chunk_steps=chunk_steps, compute_dtype=compute_dtype, redirect=redirect,
            images=images, pooled=pooled, store_key=identity)
        while len(table) > MAX_PROGRAMS:
            table.pop(next(iter(table)))
    return table[settings]


def clear_programs() -> None:
    """Forget every kept program (the next render traces again)."""
    _programs.clear()


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


def _check_inputs(model, targets, config, prior, images: int, seeded=False):
    config.check(model)
    if config.steps == 0 and not seeded:
        raise UsageError("RenderConfig.steps must be at least 1 (0 is allowed only with init_images)")
    if not targets:
        raise UsageError("targets is empty")
    check_integer("images_per_target", images, 1, 1024)
    for t in targets:
        if not isinstance(t, objectives_lib.Objective):
            raise UsageError(f"targets must be jaxviz.objectives objects, got {type(t).__name__}")
        objectives_lib.check_indices(t, model.target_layers)
        if t.batched and images < 2:
            raise UsageError("a batch objective (diversity) needs images_per_target >= 2")
    if config.redirect_steps and model.apply_redirected is None:
        raise UsageError(f"redirect_steps needs a model with redirected ReLUs; {model.name} has none")
    warmup = prior.warmup
    if isinstance(warmup, int) and warmup >= config.steps > 0 and not isinstance(prior, priors_lib.NoPrior):
        raise UsageError(f"the prior's warmup ({warmup}) is not below steps ({config.steps}): it would never act; "
                         "lower warmup or raise steps")


def _checked(kind: str, value, protocol, argument: str):
    """``value`` (a name or an object) as an object satisfying ``protocol`` (one-line errors)."""
    return registry.resolve(kind, value, argument=argument, protocol=protocol)


def _as_node(value, argument: str):
    """A part as a pytree: as it is when it is one, else (a plain object or function) a leafless
    :class:`~jaxviz.common.pytree.Static` node, which must be hashable (programs are reused by its equality)."""
    if not jax.tree_util.all_leaves([value]):
        return value
    try:
        hash(value)
    except TypeError:
        raise UsageError(f"{argument}= is neither a pytree nor hashable ({type(value).__name__}); make it a pytree "
                         "part (jaxviz.common.pytree.part: arrays as fields, settings static)") from None
    return pytree.Static(value)


def build_parts(model, recipe, config: RenderConfig, *, parameterization=None, transform=None, optimizer=None,
                prior=None, image_penalty=None) -> tuple[Parts, dict]:
    """The :class:`~jaxviz.render.step.Parts` of a render: the recipe's, with the given ones instead.

    Args:
      model: the model (priors are built for it).
      recipe: a :class:`jaxviz.recipes.Recipe`.
      config: the run's numbers (its ``steps``, in passes, set the optimizer's schedule).
      parameterization, transform, prior: objects, or registered names (:mod:`jaxviz.registry`); a
        prior may be ``"none"``; ``None``: the recipe's.
      optimizer: an optax transformation; ``None``: the recipe's at ``config.steps`` passes.
      image_penalty: ``f(image) -> scalar`` (a pytree, or a plain function); ``None``: the recipe's.

    Returns:
      ``(parts, record)``: the parts, and their description for ``metrics.json``.
    """
    p = _checked("parameterization", parameterization if parameterization is not None else recipe.parameterization,
                 param_lib.Parameterization, "parameterization")
    t = _checked("transform", transform if transform is not None else recipe.transform,
                 transforms_lib.Transform, "transform")
    if prior is None:
        prior = recipe.build_prior(model)
    elif isinstance(prior, str):
        prior = registry.build_prior(prior, model=model)
    prior = _checked("prior", prior, priors_lib.Prior, "prior")
    penalty = image_penalty if image_penalty is not None else recipe.image_penalty
    if penalty is not None and not callable(penalty):
        raise UsageError(f"image_penalty must be a function of the image, got {type(penalty).__name__}")
    penalty = None if penalty is None else _as_node(penalty, "image_penalty")
    opt = PlainOptimizer(optimizer) if optimizer is not None else recipe.schedule(config.steps)
    p, t, prior = (_as_node(v, name) for v, name in ((p, "parameterization"), (t, "transform"), (prior, "prior")))
    parts = Parts(p, t, prior, penalty, opt)
    record = {"parameterization": repr(p), "transform": repr(t), "optimizer": repr(opt), "prior": repr(prior),
              "image_penalty": None if penalty is None else pytree.describe(penalty)}
    return parts, record


def render_images(model, targets, *, key: jax.Array | None = None, config: RenderConfig | None = None,
                  recipe=None, parameterization=None, transform=None, optimizer: optax.GradientTransformation | None = None,
                  prior=None, image_penalty: Callable | None = None, checkpoint_dir: str | None = None,
                  progress: Callable | bool | None = None, devices: Sequence[jax.Device] | None = None,
                  init_images=None, images_per_target: int = 1) -> RenderResult:
    """Optimizes one image per target (``images_per_target`` images, optimized together, per target).

    Every part not given comes from ``recipe``: by default :data:`jaxviz.recipes.DEFAULT`, the
    best recipe measured (README "Experiments").

    Args:
      model: a :class:`jaxviz.Model`.
      targets: one objective, a target string (``logits:207``, ``blocks.10:7``, ``blocks.7`` for a
        whole layer), or a list of them (see :func:`jaxviz.objectives.as_targets`); targets with
        the same structure share one compiled step.
      key: PRNG key; default ``jax.random.key(config.seed)``.
      config: a :class:`RenderConfig` (numbers only); default ``recipe.config()`` (its size and passes).
      recipe: a :class:`jaxviz.recipes.Recipe` or its name (built at ``config.size``); default
        :data:`jaxviz.recipes.DEFAULT`.
      parameterization: a :class:`jaxviz.image.param.Parameterization` object or name; default the recipe's.
      transform: a :class:`jaxviz.image.transforms.Transform` object or name; default the recipe's.
      optimizer: any optax transformation; default the recipe's.
      prior: a :class:`jaxviz.priors.Prior` (or name, ``"none"``: no prior); default the recipe's.
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
      images_per_target: optimize this many images per target together (one optimizer state, one
        batched forward pass), so that a batch objective such as
        ``channel(...) + 100 * objectives.diversity(layer)`` (Lucid's diversity) compares them.
        Rows are target-major, named ``<target>#<k>``.

    Returns:
      A :class:`RenderResult` in the order of ``targets``.

    Raises:
      UsageError: bad arguments; NonFiniteLossError: NaN/Inf loss (last good checkpoint kept);
      CheckpointMismatchError: the checkpoint belongs to another run.

    >>> import jaxviz
    >>> model = jaxviz.load_model("efficientnet_lite0")
    >>> config = jaxviz.RenderConfig(size=64, steps=2)
    >>> result = jaxviz.render_images(model, "logits:207", config=config, recipe="jaxviz", progress=False)
    >>> result.images.shape, result.record["recipe"]
    ((1, 64, 64, 3), 'jaxviz')
    """
    from jaxviz import recipes as recipes_lib
    from jaxviz.common.cache import enable_compile_cache
    from jaxviz.common.progress import progress_bar

    enable_compile_cache()  # compiled steps persist across processes (JAXVIZ_COMPILE_CACHE=0: off)
    targets = objectives_lib.as_targets(targets, model.target_layers)
    recipe = recipes_lib.resolve(recipe, size=None if config is None else config.size)
    config = recipe.config() if config is None else config
    config.check()
    parts, record = build_parts(model, recipe, config, parameterization=parameterization, transform=transform,
                                optimizer=optimizer, prior=prior, image_penalty=image_penalty)
    if progress is None or progress is True:
        bar, close_bar = progress_bar("jaxviz render")
    else:
        bar, close_bar = (progress or None), (lambda: None)
    try:
        result = _render(model, targets, key=key, config=config, parts=parts, checkpoint_dir=checkpoint_dir,
                         progress=bar, devices=devices, init_images=init_images, images=images_per_target)
    finally:
        close_bar()
    record = {"recipe": recipe.name, "model": model.name, **config.numbers(), **record}
    if images_per_target != 1:
        record["images_per_target"] = images_per_target
    return result._replace(record=record)


def _identity(parts: Parts, optimizer_probe) -> dict:
    """What of the parts a checkpoint must match: their structure and arrays, or for code without a stable
    name (your own function or optimizer) what :mod:`jaxviz.common.identity` finds in it."""
    out = {}
    for name, value in parts._asdict().items():
        if name == "optimizer" and isinstance(value, PlainOptimizer):
            out[name] = identity_lib.optimizer_identity(value.transformation, optimizer_probe())
            continue
        text = pytree.describe(value)
        if not pytree.by_value(text):
            inner = value.value if isinstance(value, pytree.Static) else value
            text = identity_lib.identify(inner, argument=f"{name}=")
        out[name] = text
    return out


def _render(model, targets, *, key, config, parts: Parts, checkpoint_dir, progress, devices, init_images,
            images: int) -> RenderResult:
    """:func:`render_images` once the parts are built: every unit of every target."""
    from jaxviz.common import checkpoint as ckpt_lib

    _check_inputs(model, targets, config, parts.prior, images, seeded=init_images is not None)
    if init_images is not None:
        init_images = seed_images(init_images, len(targets), config.size)
    explicit_key = key is not None
    key = key if explicit_key else jax.random.key(config.seed)
    devices = list(devices or jax.local_devices())
    placements: dict = {}  # devices used -> (mesh, batch sharding, replicated model params, replicated parts)

    def place(n_used):
        if n_used not in placements:
            mesh = Mesh(np.array(devices[:n_used]), (AXIS,))
            everywhere = NamedSharding(mesh, PartitionSpec())
            placements[n_used] = (mesh, NamedSharding(mesh, PartitionSpec(AXIS)),
                                  jax.device_put(model.params, everywhere), jax.device_put(parts, everywhere))
        return placements[n_used]

    store = None
    if checkpoint_dir:
        probe = lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(  # noqa: E731
            lambda: parts.parameterization.init(key=jax.random.key(0), size=config.size)))
        identity = dict(config=config, model=model.name, targets=[repr(t) for t in targets],
                        launch=_launch_size(config.batch_size, len(devices)), **_identity(parts, probe))
        if images != 1:
            identity["images_per_target"] = images
        if explicit_key:
            identity["key"] = np.asarray(jax.random.key_data(key)).tolist()
        if init_images is not None:
            identity["init_images"] = hashlib.sha1(init_images.tobytes()).hexdigest()
        store = ckpt_lib.RunStore(checkpoint_dir, **identity)

    n = len(targets)
    rows = n * images
    out_images = np.zeros((n, images, config.size, config.size, 3), np.float32)
    activation = np.zeros((n, images), np.float32)
    history = np.zeros((n, config.steps), np.float32)
    trace = np.zeros((n, images, config.steps), np.float32)
    prior_info: dict[str, np.ndarray] = {}
    done_steps, total_steps = 0, rows * config.steps
    for group_index, indices in enumerate(_group_by_structure(targets)):
        n_devices = devices_for(len(indices), devices)
        mesh, batch_sharding, model_params, placed_parts = place(n_devices)
        programs = programs_for(model, size=config.size, mesh=mesh, chunk_steps=config.chunk_steps,
                                compute_dtype=config.compute_dtype, redirect=config.redirect_steps > 0,
                                images=images, pooled=bool(parts.prior.pooled))
        # a group smaller than the batch is padded only to the device count, not to batch_size
        launch = min(_launch_size(config.batch_size, n_devices), int(math.ceil(len(indices) / n_devices)) * n_devices)
        for start in range(0, len(indices), launch):
            chunk = indices[start : start + launch]
            padded = list(chunk) + [chunk[-1]] * (launch - len(chunk))
            obj = jax.device_put(objectives_lib.stack([targets[i] for i in padded]), batch_sharding)
            target_keys = jax.device_put(_unit_keys(key, padded, images), batch_sharding)
            seeds = None if init_images is None else jax.device_put(init_images[padded], batch_sharding)
            real = len(chunk) * images
            state, log = _run_launch(programs, config, model_params, obj, target_keys, placed_parts, store,
                                     f"{group_index:03d}_{start:06d}", checkpoint_dir, len(chunk),
                                     lambda steps, value: progress and progress(done_steps + steps * images,
                                                                                total_steps, value), seeds)
            done_steps += config.steps * real
            got_images, got_values, got_prior = jax.device_get(programs.final(model_params, state, obj, placed_parts))
            keep = slice(0, len(chunk))
            if not (np.all(np.isfinite(got_images[keep])) and np.all(np.isfinite(got_values[keep]))):
                # the last update is applied after the last checked value: check its result too
                raise NonFiniteLossError("the final image or objective is NaN/Inf; try a smaller learning rate")
            lead = (len(chunk), images)
            out_images[chunk] = got_images[keep].reshape(*lead, *got_images.shape[-3:])
            activation[chunk] = got_values[keep].reshape(lead)
            history[chunk] = log[0, :, keep].T
            trace[chunk] = np.moveaxis(log[1:, :, keep], (0, 1, 2), (1, 2, 0))
            for name, value in got_prior.items():
                value = value[keep].reshape(*lead, *value.shape[1 + (images > 1):])
                prior_info.setdefault(name, np.zeros((n, images, *value.shape[2:]), value.dtype))
                prior_info[name][chunk] = value
    if store:
        store.close()
    flat = lambda a: a.reshape(rows, *a.shape[2:])  # noqa: E731 - target-major rows
    names = tuple(objectives_lib.target_name(t) for t in targets)
    if images != 1:
        names = tuple(f"{objectives_lib.group_name(t)}#{k}" for t in targets for k in range(images))
    return RenderResult(flat(out_images), flat(activation), np.repeat(history, images, axis=0), flat(trace),
                        {k: flat(v) for k, v in prior_info.items()}, names, parts.prior.trace_name)


def _unit_keys(key, padded: Sequence[int], images: int) -> jax.Array:
    """Each unit's key (``[B]``), or its images' keys (``[B, images]``): image ``i`` of the run folds in ``i``."""
    index = jnp.asarray(padded)
    if images == 1:
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    rows = index[:, None] * images + jnp.arange(images)[None]
    return jax.vmap(jax.vmap(lambda i: jax.random.fold_in(key, i)))(rows)


def _run_launch(programs: Programs, config: RenderConfig, model_params, obj, target_keys, parts, store,
                launch_id: str, checkpoint_dir, n_real: int, report: Callable, seeds=None):
    """Runs (or resumes) one launch to ``config.steps``; returns ``(state, log [1 + images, steps, B])``:
    the objective, then the prior's trace of each image of a unit."""
    state = programs.init(model_params, target_keys, parts, seeds)
    images = int(np.prod(target_keys.shape[1:]))
    values_log = np.zeros((1 + images, config.steps, int(target_keys.shape[0])), np.float32)
    resumed = store.restore(launch_id, state, values_log) if store else None
    if resumed is not None:
        state, values_log = resumed
    step = int(np.asarray(state.step).max())
    while step < config.steps:
        redirect = step < config.redirect_steps
        # a chunk never straddles the end of the redirected steps: each runs one program
        n = min(config.chunk_steps, (config.redirect_steps if redirect else config.steps) - step)
        new_state, values, traces = programs.run_chunk(n, model_params, state, obj, target_keys, parts,
                                                       redirect=redirect)
        values = np.asarray(values).T  # [steps, targets]
        if not np.all(np.isfinite(values)):
            where = f" (last checkpoint kept in {checkpoint_dir})" if store else ""
            raise NonFiniteLossError(
                f"the objective became NaN/Inf at step {step + int(np.argmax(~np.isfinite(values).all(1)))}"
                f"{where}; try a smaller learning rate")
        state = new_state
        values_log[0, step : step + n] = values
        values_log[1:, step : step + n] = np.asarray(traces).reshape(len(values.T), n, images).transpose(2, 1, 0)
        step += n
        if store and (step % config.checkpoint_every < n or step == config.steps):
            store.save(launch_id, step, state, values_log)
        report(step * n_real, float(values[-1, :n_real].mean()))
    return state, values_log
