"""Cost per pass of each prior next to its base (the same step without a prior), measured in one run.

``python -m benchmarks.priors [--size 128] [--batch 2] [--steps 8] [--repeats 5]`` compiles
:func:`jaxviz.render.step.compile_programs` (Lite0, Fourier, default transforms, Adam, class-logit targets)
once per prior, then times chunks of ``--steps`` steps round-robin over the priors (so load drift on
a shared machine hits all alike) and prints the best ms per image-pass and its ratio to the base.
A batch-level prior (``bn-batch``) vmaps a device's images also on CPU, so its base is ``none``
run the same way (``none (vmapped)``). No figures are asserted anywhere (README "Performance").
"""

from __future__ import annotations

import argparse
import time

from jaxviz.common.pytree import part
from jaxviz.priors import PriorBase


@part
class _VmappedNone(PriorBase):
    """No penalty, but a batch-level prior: the base of ``bn-batch`` (vmapped images)."""

    pooled = True
    layers = ()

    def init(self, features, *, canvas=None):
        return ()

    def apply(self, features, state, step, *, pool=None, locate=None):
        import jax.numpy as jnp

        return jnp.zeros(()), state, jnp.zeros(())

    def report(self, features, state):
        return {}


def _priors(model):
    from jaxviz import priors
    from jaxviz.priors import bn_batch as prior_bn_batch
    from jaxviz.priors import gaussian as prior_gaussian_match
    from jaxviz.priors import quantile_match as prior_quantile

    return {
        "none": priors.none(),
        "outliers": priors.outliers(model=model, warmup=0),
        "mahalanobis": priors.mahalanobis(model=model),
        "quantile (all channels)": prior_quantile.quantile(model=model),
        "quantile (outlier channels)": prior_quantile.quantile(model=model, channels="outliers"),
        "gaussian (bures)": prior_gaussian_match.gaussian_match(model=model),
        "gaussian (kl)": prior_gaussian_match.gaussian_match(model=model, distance="kl"),
        "bn (per image)": priors.batchnorm_prior(model),
        "none (vmapped)": _VmappedNone(),
        "bn-batch (pooled)": prior_bn_batch.pooled_batchnorm_prior(model),
    }


BASES = {"bn-batch (pooled)": "none (vmapped)", "none (vmapped)": "none"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", type=int, default=2, help="CPU devices (one per core, as the CLI)")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jaxviz
    from jaxviz import objectives, render
    from jaxviz.image import param, transforms
    from jaxviz.render import step

    model = jaxviz.load_model("efficientnet_lite0")
    devices = jax.devices()
    devices = devices[:render.devices_for(args.batch, devices)] if devices[0].platform == "cpu" else devices[:1]
    mesh = Mesh(np.array(devices), (step.AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(step.AXIS))
    params = jax.device_put(model.params, NamedSharding(mesh, PartitionSpec()))
    launch = -(-args.batch // len(devices)) * len(devices)
    targets = [objectives.class_logit(7 + 100 * i) for i in range(launch)]
    obj = jax.device_put(objectives.stack(targets), sharding)
    keys = jax.device_put(jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(launch)), sharding)
    compiled = {pooled: step.compile_programs(model, size=args.size, mesh=mesh, chunk_steps=args.steps, pooled=pooled)
                for pooled in (False, True)}  # a batch-level prior runs vmapped with a pooling axis

    runs = {}
    for name, prior in _priors(model).items():
        t = time.perf_counter()
        parts = jax.device_put(step.Parts(param.fourier(), transforms.default(), prior, None,
                                          step.PlainOptimizer(optax.adam(0.05))), NamedSharding(mesh, PartitionSpec()))
        programs = compiled[bool(prior.pooled)]
        state = programs.init(params, keys, parts)
        state, values, _ = programs.run_chunk(args.steps, params, state, obj, keys, parts)  # compiles and warms up
        runs[name] = [parts, state, [], programs]
        print(f"compiled {name}: {time.perf_counter() - t:.1f} s", flush=True)
    for _ in range(args.repeats):
        for name, run in runs.items():
            t = time.perf_counter()
            run[1], values, _ = run[3].run_chunk(args.steps, params, run[1], obj, keys, run[0])
            if not np.all(np.isfinite(values)):
                raise FloatingPointError(f"non-finite objective with {name}")
            run[2].append((time.perf_counter() - t) * 1e3 / (launch * args.steps))
    best = {name: min(run[2]) for name, run in runs.items()}
    print(f"\nLite0, {args.size} px, {launch} images on {len(devices)} {devices[0].platform} device(s), "
          f"best of {args.repeats} chunks of {args.steps} steps (ms per image-pass)")
    print("| prior | ms / pass | median | base | × base |\n|---|---:|---:|---|---:|")
    for name, times in ((n, r[2]) for n, r in runs.items()):
        base = BASES.get(name, "none")
        print(f"| {name} | {best[name]:.1f} | {np.median(times):.1f} | {base} | {best[name] / best[base]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
