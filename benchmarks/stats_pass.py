"""Speed of the statistics pass next to a plain forward pass (same model, batch and run).

    python -m benchmarks.stats_pass [--model efficientnet_lite0] [--size 224] [--batch-size 16]
                                    [--batches 12] [--layers blocks.2,blocks.4] [--view pixel] [--json]

Three timings over the same uint8 batches, each after a compile/warm-up call:

- ``forward (layers)``: the jitted forward up to the requested layers (what the pass must compute anyway);
- ``forward (logits)``: the full classification forward;
- ``stats pass``: :func:`jaxviz.stats.collect.collect_moments` over an in-memory source (host batching,
  padding/masking, device transfer, forward, views, moments, cross-device merge).

The overhead is ``stats time / forward time − 1``. Data decoding is excluded (in-memory source).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


class ArraySource:
    """An in-memory source with the jaxviz.data interface (so decoding is not timed)."""

    def __init__(self, images: np.ndarray):
        self.images, self.size = images, images.shape[1]
        self.skipped = self.converted = 0

    def __len__(self):
        return len(self.images)

    def describe(self):
        return f"{len(self)} in-memory images"

    def batches(self, batch_size, *, start=0, shard_index=0, shard_count=1):
        first = start + (shard_index - start) % shard_count
        idx = np.arange(first, len(self), shard_count)
        return (self.images[idx[k:k + batch_size]] for k in range(0, len(idx), batch_size))


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run(model_name="efficientnet_lite0", size=224, batch_size=16, batches=12, layers=("blocks.2", "blocks.4"),
        view="pixel", repeats=3) -> dict:
    from jaxviz import load_model
    from jaxviz.common import hardware
    from jaxviz.stats import collect

    model = load_model(model_name)
    layers = list(layers)
    n = batch_size * batches
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    source = ArraySource(images)
    mesh = collect.data_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    per_device = -(-batch_size // mesh.size)
    padded = per_device * mesh.size
    pad = ((0, padded - batch_size), (0, 0), (0, 0), (0, 0))
    device_batches = [jax.device_put(np.pad(images[i:i + batch_size], pad), sharding) for i in range(0, n, batch_size)]
    params = jax.device_put(model.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    def forward_of(names):
        # compiled as jaxviz compiles its own programs for these devices (the stats step included)
        f = jax.jit(lambda p, x: model.features(p, model.normalize(x.astype(jnp.float32)), names),
                    compiler_options=hardware.compiler_options(mesh.devices.flat))

        def go():
            out = None
            for x in device_batches:
                out = f(params, x)
            jax.block_until_ready(out)

        go()  # compile
        return go

    def stats_pass():
        collect.collect_moments(model, layers, source, view=view, batch_size=batch_size, mesh=mesh)

    collect.collect_moments(model, layers, ArraySource(images[:batch_size]), view=view, batch_size=batch_size,
                          mesh=mesh)  # compile (the step is cached per model/layers/view/mesh)
    runs = {"layers": forward_of(layers), "logits": forward_of(["logits"]), "stats": stats_pass}
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):  # interleaved, best of: robust to other load on the machine
        for k, fn in runs.items():
            best[k] = min(best[k], _best_of(fn, 1))
    fwd_layers, fwd_logits, t_stats = best["layers"], best["logits"], best["stats"]
    return {
        "model": model.name, "size": size, "batch_size": batch_size, "images": n, "layers": layers, "view": view,
        "devices": f"{mesh.size} x {jax.devices()[0].device_kind}", "padded_batch": padded,
        "forward_layers_img_s": n / fwd_layers, "forward_logits_img_s": n / fwd_logits, "stats_img_s": n / t_stats,
        "overhead_vs_forward_layers_pct": 100 * (t_stats / fwd_layers - 1),
        "overhead_vs_forward_logits_pct": 100 * (t_stats / fwd_logits - 1),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--layers", default="blocks.2,blocks.4")
    p.add_argument("--view", default="pixel")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run(a.model, a.size, a.batch_size, a.batches, a.layers.split(","), a.view, a.repeats)
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['model']} {r['size']}px, batch {r['batch_size']} (padded {r['padded_batch']}), {r['images']} images, "
          f"layers {','.join(r['layers'])}, view {r['view']}, {r['devices']}")
    print(f"  forward to the layers  {r['forward_layers_img_s']:8.1f} img/s")
    print(f"  forward to logits      {r['forward_logits_img_s']:8.1f} img/s")
    print(f"  stats pass             {r['stats_img_s']:8.1f} img/s   "
          f"overhead {r['overhead_vs_forward_layers_pct']:+.1f} % "
          f"vs layers, {r['overhead_vs_forward_logits_pct']:+.1f} % vs logits")


if __name__ == "__main__":
    main()
