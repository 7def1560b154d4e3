"""The optimization loop: many targets at once, jitted, scanned, sharded over devices, checkpointed.

One image per target. The step is written for a batch of images whose parameters, optimizer
states and objectives are stacked along a leading axis; that axis is sharded over every local
device with a :class:`~jax.sharding.NamedSharding`, so 8 devices run 8× the targets with the
same numbers as one device. Steps run in :func:`jax.lax.scan` chunks between host syncs
(progress bar, NaN check, Orbax checkpoint).

Randomness is a pure function of ``(seed, target index, step)``, so a run resumed from a
checkpoint, or split over a different number of devices, draws the same transforms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxviz import hardware
from jaxviz import objectives as objectives_lib
from jaxviz import param as param_lib
from jaxviz import priors as priors_lib
from jaxviz import transforms as transforms_lib
from jaxviz.errors import NonFiniteLossError, UsageError

__all__ = ["RenderConfig", "RenderResult", "NonFiniteLossError", "render", "make_step"]

MIN_SIZE = 64  # EfficientNet downsamples 32×; below 64 px the head sees a single position


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Settings of one visualization run (everything that changes the numbers).

    Attributes:
      size: image side in pixels.
      steps: optimization steps per target.
      param: parameterization name (``pixel``, ``fourier``, ``maco``).
      transforms: ``default`` (Lucid-like robustness transforms) or ``none``.
      learning_rate: Adam step size (ignored when an optimizer is passed to :func:`render`).
      batch_size: targets optimized together per launch (padded to a multiple of the devices).
      scan_steps: steps per ``lax.scan`` chunk between host syncs.
      checkpoint_every: steps between Orbax checkpoints (rounded up to whole chunks).
      seed: PRNG seed.
      precision: ``float32`` (default), or ``bfloat16`` for the model's forward and backward pass on
        GPU/TPU (parameterization, objective, prior and optimizer stay float32; refused on CPU,
        where XLA emulates bfloat16 and it is slower).
    """

    size: int = 224
    steps: int = 256
    param: str = "fourier"
    transforms: str = "default"
    learning_rate: float = 0.05
    batch_size: int = 8
    scan_steps: int = 16
    checkpoint_every: int = 64
    seed: int = 0
    precision: str = "float32"
    redirect_steps: int = 0

    def numbers(self) -> dict:
        """The fields that determine the result (the rest only changes how it is computed)."""
        fields = dataclasses.asdict(self)
        for k in ("scan_steps", "checkpoint_every", "batch_size"):
            fields.pop(k)
        if fields["precision"] == "float32":
            fields.pop("precision")  # the default: keeps checkpoints written before the field valid
        if not fields["redirect_steps"]:
            fields.pop("redirect_steps")
        return fields


class RenderResult(NamedTuple):
    """Images and traces of a run, one row per target.

    Attributes:
      images: ``[T, size, size, 3]`` float32 in ``[0, 1]``.
      activation: ``[T]`` final objective value on the untransformed image.
      history: ``[T, steps]`` objective value at each step (on the transformed image).
      trace: ``[T, steps]`` the prior's per-step scalar (e.g. mean D² at the stats layers).
      prior: ``{name: [T, ...]}`` prior diagnostics (e.g. suppressed neurons), possibly empty.
    """

    images: np.ndarray
    activation: np.ndarray
    history: np.ndarray
    trace: np.ndarray
    prior: dict


class _State(NamedTuple):
    params: Any
    opt_state: Any
    prior_state: Any
    step: jax.Array


def _make_transform(name: str) -> Callable:
    if name == "default":
        return transforms_lib.default()
    if name == "none":
        return lambda image, *, key: image
    raise UsageError(f"unknown transforms '{name}' (choose default or none)")


def _model_input(model, image01):
    return model.normalize(image01 * 255.0)


def make_step(model, objective, parameterization, transform, optimizer, prior, *, compute_dtype=None,
              redirect: bool = False):
    """The optimization step for ONE image (vmap or map it over targets).

    Args:
      model: a :class:`jaxviz.Model`.
      objective: an objective of the kind being optimized (its ``layers`` are read).
      parameterization: ``(init, to_image)``.
      transform: ``t(image, *, key) -> image``.
      optimizer: an ``optax.GradientTransformation``.
      prior: a :class:`jaxviz.priors.Prior`.
      compute_dtype: run the model in this dtype (e.g. ``jnp.bfloat16`` on accelerators); its
        features are cast back to float32 before the objective and prior. ``None``: as given.
      redirect: use redirected ReLU gradients (units that start dead can still move); needs a
        model with ``apply_redirected``. :func:`render` runs its first ``redirect_steps`` with
        such a step and the rest with a plain one (two programs, never both branches per step).

    Returns:
      ``step(model_params, state, obj, key) -> (state, (value, trace))``.
    """
    layers = tuple(dict.fromkeys((*objective.layers, *prior.layers)))

    def loss(image_params, obj, prior_state, step, key, model_params, redirect=False):
        image = parameterization.to_image(image_params)
        features = _features(model, model_params, _model_input(model, transform(image, key=key)), layers,
                             compute_dtype, redirect)
        value = obj(features)
        penalty, prior_state, trace = prior.apply(features, prior_state, step)
        return value - penalty, (value, prior_state, trace)

    if redirect and model.apply_redirected is None:
        raise UsageError(f"redirected gradients need a model with redirected ReLUs; {model.name} has none")

    def step_fn(model_params, state: _State, obj, key):
        args = (state.params, obj, state.prior_state, state.step, key, model_params)
        grads, (value, prior_state, trace) = jax.grad(functools.partial(loss, redirect=redirect), has_aux=True)(*args)
        # maximize: optax minimizes, so feed the negated gradient
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return _State(params, opt_state, prior_state, state.step + 1), (value, trace)

    return step_fn


def _features(model, model_params, x, layers, compute_dtype, redirect=False):
    if compute_dtype is None:
        return model.features(model_params, x, layers, redirect=redirect)
    cast = lambda a: a.astype(compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    features = model.features(jax.tree.map(cast, model_params), x.astype(compute_dtype), layers, redirect=redirect)
    return jax.tree.map(lambda a: a.astype(jnp.float32), features)


def _step_key(target_key, step):
    return jax.random.fold_in(jax.random.split(target_key)[1], step)


def _run_image(step_fn, n_steps, max_steps, model_params, state, obj, target_key):
    """``n_steps`` (traced, ≤ ``max_steps``) steps of one image, written for one target.

    The step count is a runtime value, so a run's last, shorter chunk (and a resumed run's)
    reuses the compiled loop; the per-step (scalar) values fill float32 ``[max_steps]`` buffers.
    """
    buffers = (jnp.zeros((max_steps,), jnp.float32),) * 2

    def body(i, carry):
        state, buffers = carry
        state, outs = step_fn(model_params, state, obj, _step_key(target_key, state.step))
        return state, tuple(b.at[i].set(o.astype(jnp.float32)) for b, o in zip(buffers, outs))

    state, (values, traces) = jax.lax.fori_loop(0, n_steps, body, (state, buffers))
    return state, values, traces


def _vectorize_images(platform: str) -> bool:
    """vmap a device's images (GPU/TPU) or run them one after another (CPU; see :func:`_over_images`)."""
    return platform != "cpu"


def _over_images(fn, batched: bool):
    """Maps a one-target function over a device's local targets.

    On CPU the images run one after another (``lax.map``): every image then runs the very same
    compiled computation whatever the number of devices, so sharding does not change a single
    bit, and CPU convolutions gain nothing from batching. On GPU/TPU they are vmapped.
    """
    if batched:
        return jax.vmap(fn)
    return lambda *args: jax.lax.map(lambda a: fn(*a), args)


def _sharded(mesh, fn, n_batched: int, n_replicated: int = 1):
    """``fn(*replicated, *batched)`` run on each device's shard of the leading target axis."""
    spec = PartitionSpec("targets")
    in_specs = (PartitionSpec(),) * n_replicated + (spec,) * n_batched
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)


def _mesh_and_padding(batch_size: int, devices):
    devices = list(devices or jax.local_devices())
    per_launch = int(math.ceil(max(1, batch_size) / len(devices)) * len(devices))
    return Mesh(np.array(devices), ("targets",)), per_launch


def _devices_for(n_targets: int, devices) -> int:
    """How many of ``devices`` a group of ``n_targets`` targets runs on.

    GPUs/TPUs: all of them (a padded slot costs nothing but its own device). CPU devices share
    one machine's cores, so a padded slot would take a core from the real images: a group uses
    at most one device per target.
    """
    if all(d.platform == "cpu" for d in devices):
        return max(1, min(len(devices), n_targets))
    return len(devices)


def render(model, targets: Sequence, *, key: jax.Array | None = None, config: RenderConfig = RenderConfig(),
           optimizer: optax.GradientTransformation | None = None, prior=None,
           checkpoint_dir: str | None = None, progress: Callable | None = None,
           devices: Sequence[jax.Device] | None = None) -> RenderResult:
    """Optimizes one image per target.

    Args:
      model: a :class:`jaxviz.Model`.
      targets: objectives (see :mod:`jaxviz.objectives`); targets with the same structure share
        one compiled step.
      key: PRNG key; default ``jax.random.key(config.seed)``.
      config: a :class:`RenderConfig`.
      optimizer: any optax transformation; default ``optax.adam(config.learning_rate)``.
      prior: a :class:`jaxviz.priors.Prior` subtracted from the objective (default none).
      checkpoint_dir: Orbax checkpoints every ``config.checkpoint_every`` steps; an existing one
        with the same config is resumed.
      progress: ``callback(done_steps, total_steps, mean_value)`` after each chunk.
      devices: devices to shard the targets over (default: all local devices).

    Returns:
      A :class:`RenderResult` in the order of ``targets``.

    Raises:
      UsageError: bad size/steps; NonFiniteLossError: NaN/Inf loss (last good checkpoint kept);
      jaxviz.checkpoint.CheckpointMismatchError: the checkpoint belongs to another run.
    """
    from jaxviz import checkpoint as ckpt_lib

    if config.size < MIN_SIZE:
        raise UsageError(f"--size {config.size} is too small; use at least {MIN_SIZE} px")
    if config.steps < 1:
        raise UsageError("--steps must be at least 1")
    if not targets:
        raise UsageError("no targets given")
    if config.redirect_steps and model.apply_redirected is None:
        raise UsageError(f"--redirect-steps needs a model with redirected ReLUs; {model.name} has none")
    if any(getattr(t, "batched", False) for t in targets):
        raise UsageError("batch-level objectives (diversity) cannot be a per-image render target")
    key = jax.random.key(config.seed) if key is None else key
    optimizer = optimizer or optax.adam(config.learning_rate)
    prior = prior or priors_lib.none()
    parameterization = param_lib.get(config.param)
    transform = _make_transform(config.transforms)
    devices = list(devices or jax.local_devices())
    _, per_launch = _mesh_and_padding(config.batch_size, devices)
    placements: dict = {}  # devices used -> (mesh, batch sharding, replicated model params)

    def place(n_used):
        if n_used not in placements:
            mesh = Mesh(np.array(devices[:n_used]), ("targets",))
            placements[n_used] = (mesh, NamedSharding(mesh, PartitionSpec("targets")),
                                  jax.device_put(model.params, NamedSharding(mesh, PartitionSpec())))
        return placements[n_used]

    store = ckpt_lib.RunStore(checkpoint_dir, config=config, model=model.name,
                              targets=[repr(t) for t in targets], prior=repr(prior),
                              launch=per_launch) if checkpoint_dir else None

    images = np.zeros((len(targets), config.size, config.size, 3), np.float32)
    activation = np.zeros(len(targets), np.float32)
    history = np.zeros((len(targets), config.steps), np.float32)
    trace = np.zeros((len(targets), config.steps), np.float32)
    prior_info: dict[str, np.ndarray] = {}
    compiled: dict = {}

    groups = _group_by_structure(targets)
    done_steps, total_steps = 0, len(targets) * config.steps
    for group_index, indices in enumerate(groups):
        n_devices = _devices_for(len(indices), devices)
        mesh, batch_sharding, model_params = place(n_devices)
        # a group smaller than the batch is padded only to the device count, not to batch_size
        launch = min(_mesh_and_padding(config.batch_size, devices[:n_devices])[1],
                     int(math.ceil(len(indices) / n_devices)) * n_devices)
        for start in range(0, len(indices), launch):
            chunk = indices[start : start + launch]
            launch_id = f"{group_index:03d}_{start:06d}"
            padded = list(chunk) + [chunk[-1]] * (launch - len(chunk))
            obj = jax.device_put(objectives_lib.stack([targets[i] for i in padded]), batch_sharding)
            target_keys = jax.device_put(
                jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(padded)), batch_sharding)
            signature = (jax.tree.structure(obj), n_devices)
            if signature not in compiled:
                compiled[signature] = _compile(model, targets[chunk[0]], parameterization, transform, optimizer,
                                               prior, config.size, mesh, max_steps=config.scan_steps,
                                               precision=config.precision,
                                               redirect=config.redirect_steps > 0)
            init_state, run_chunk, final = compiled[signature]
            state = init_state(model_params, target_keys)
            values_log = np.zeros((2, config.steps, launch), np.float32)  # objective, prior trace
            resumed = store.restore(launch_id, state, values_log) if store else None
            if resumed is not None:
                state, values_log = resumed
            step = int(np.asarray(state.step).max())
            done_steps += step * len(chunk)
            while step < config.steps:
                redirect = step < config.redirect_steps
                # a chunk never straddles the end of the redirected steps: each runs one program
                n = min(config.scan_steps, (config.redirect_steps if redirect else config.steps) - step)
                new_state, values, traces = run_chunk(n, model_params, state, obj, target_keys, redirect=redirect)
                values = np.asarray(values).T  # [steps, targets]
                if not np.all(np.isfinite(values)):
                    where = f" (last checkpoint kept in {checkpoint_dir})" if store else ""
                    raise NonFiniteLossError(
                        f"the objective became NaN/Inf at step {step + int(np.argmax(~np.isfinite(values).all(1)))}"
                        f"{where}; try a smaller learning rate")
                state = new_state
                values_log[:, step : step + n] = values, np.asarray(traces).T
                step += n
                done_steps += n * len(chunk)
                if store and (step % config.checkpoint_every < n or step == config.steps):
                    store.save(launch_id, step, state, values_log)
                if progress:
                    progress(done_steps, total_steps, float(values[-1, : len(chunk)].mean()))
            out_images, out_values, out_prior = jax.device_get(final(model_params, state, obj))
            keep = slice(0, len(chunk))
            images[chunk] = out_images[keep]
            activation[chunk] = out_values[keep]
            history[chunk] = values_log[0, :, keep].T
            trace[chunk] = values_log[1, :, keep].T
            for name, value in out_prior.items():
                prior_info.setdefault(name, np.zeros((len(targets), *value.shape[1:]), value.dtype))
                prior_info[name][chunk] = value[keep]
    if store:
        store.close()
    return RenderResult(images, activation, history, trace, prior_info)


def _group_by_structure(targets) -> list[list[int]]:
    """Indices of targets sharing a pytree structure (same kind and layers → one compiled step)."""
    groups: dict = {}
    for i, target in enumerate(targets):
        groups.setdefault(jax.tree.structure(target), []).append(i)
    return list(groups.values())


def _compile(model, objective, parameterization, transform, optimizer, prior, size, mesh, *,
             max_steps: int = 16, precision: str = "float32", redirect: bool = False):
    """Jitted, sharded (init, run_chunk, final) for targets shaped like ``objective``.

    ``run_chunk(n, ..., redirect=False)`` runs ``n ≤ max_steps`` steps with ONE compiled program
    for every ``n`` (the step count is a runtime value); its jitted form is ``run_chunk.jitted``.
    With ``redirect``, ``run_chunk(..., redirect=True)`` runs redirected-gradient steps (a second
    program, compiled on first use).
    """
    batched = _vectorize_images(mesh.devices.flat[0].platform)
    if precision not in ("float32", "bfloat16"):
        raise UsageError(f"unknown precision '{precision}' (choose float32 or bfloat16)")
    if precision == "bfloat16" and not batched:
        raise UsageError("bfloat16 is for GPU/TPU; on CPU use float32 (XLA-CPU emulates bfloat16, slower)")
    compute_dtype = jnp.bfloat16 if precision == "bfloat16" else None
    options = hardware.compiler_options(mesh.devices.flat)
    step_fns = {False: make_step(model, objective, parameterization, transform, optimizer, prior,
                                 compute_dtype=compute_dtype)}
    if redirect:
        step_fns[True] = make_step(model, objective, parameterization, transform, optimizer, prior,
                                   compute_dtype=compute_dtype, redirect=True)

    def init_one(model_params, target_key):
        params = parameterization.init(key=jax.random.split(target_key)[0], size=size)
        image = parameterization.to_image(params)
        # the prior's state is shaped by the features it sees during the steps, i.e. of the
        # transformed image (default transforms pad S -> S + 12), so initialize it from one
        seen = transform(image, key=_step_key(target_key, 0))
        features = model.features(model_params, _model_input(model, seen), prior.layers) if prior.layers else {}
        return _State(params, optimizer.init(params), prior.init(features), jnp.zeros((), jnp.int32))

    def final_one(model_params, state, obj):
        image = parameterization.to_image(state.params)
        layers = tuple(dict.fromkeys((*objective.layers, *prior.layers)))
        features = model.features(model_params, _model_input(model, image), layers)
        return image, obj(features), prior.report(features, state.prior_state)

    def init(model_params, keys):
        return _over_images(functools.partial(init_one, model_params), batched)(keys)

    def chunk_program(step_fn):
        def run_chunk_sharded(n_steps, model_params, state, obj, keys):
            one = functools.partial(_run_image, step_fn, n_steps, max_steps, model_params)
            return _over_images(one, batched)(state, obj, keys)

        return jax.jit(_sharded(mesh, run_chunk_sharded, 3, n_replicated=2), donate_argnums=(2,),
                       compiler_options=options)

    programs = {flag: chunk_program(fn) for flag, fn in step_fns.items()}
    jitted = programs[False]

    def final(model_params, state, obj):
        return _over_images(functools.partial(final_one, model_params), batched)(state, obj)

    def run_chunk(n_steps, model_params, state, obj, keys, *, redirect=False):
        if not 1 <= n_steps <= max_steps:
            raise ValueError(f"a chunk runs 1..{max_steps} steps, got {n_steps}")
        state, values, traces = programs[redirect](np.int32(n_steps), model_params, state, obj, keys)
        return state, np.asarray(values)[:, :n_steps], np.asarray(traces)[:, :n_steps]

    run_chunk.jitted = jitted
    return (
        jax.jit(_sharded(mesh, init, 1)),
        run_chunk,
        jax.jit(_sharded(mesh, final, 2)),
    )
