"""Render throughput and model-FLOP utilization on any backend: ``python -m benchmarks.run --accelerator``.

For each batch size (8, 32, 128), precision (float32, bfloat16) and rematerialization (off, on),
a fresh process runs ``jaxviz.render.render_images`` (EfficientNet-Lite0, Fourier parameterization,
default transforms, Adam, channel objectives of ``--layer``) for ``1 + repeats`` chunks of
``steps`` steps; the ``progress`` callback timestamps each chunk (render syncs with the host after
every chunk), the first chunk carries the compilation and is left out.

- **image-steps/s**: ``batch × steps / chunk time``, best chunk;
- **MFU** (model-FLOP utilization): model FLOPs per image-step × image-steps/s over a peak. Model
  FLOPs are XLA's cost analysis of the compiled forward + backward (w.r.t. the input) of the model
  alone, at the size the transforms feed it, the way MFU is usually counted (the parameterization,
  transforms, Adam and rematerialization's recomputed forward are not counted). Two peaks: a square
  matmul measured here in the same dtype (``vs matmul``), and the vendor's dense peak for known
  devices (:data:`PEAK_TFLOPS`, ``vs spec``);
- **peak memory**: ``device.memory_stats()["peak_bytes_in_use"]`` on GPU/TPU, the process's peak RSS
  on CPU;
- **remat**: the model's forward is wrapped in :func:`jax.checkpoint` (``dataclasses.replace`` of
  the model's ``apply``: a public-API change, render is untouched), so the backward pass recomputes
  the forward instead of keeping its activations.

bfloat16 is for GPU/TPU (``RenderConfig(compute_dtype="bfloat16")`` is refused on CPU): skipped there.
``--quick`` (batch 2, 64 px, float32) runs on a CPU in seconds. Writes
``benchmarks/results/accelerator-<host>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Vendor dense peaks per chip, TFLOP/s (no sparsity), for (float32 matmul, bfloat16 matmul). GPU
# float32 is the non-tensor-core figure; XLA may use TF32 tensor cores for float32 matmuls on
# Ampere and later, so "vs matmul" is the fairer float32 ratio there. Matched on device_kind.
PEAK_TFLOPS = {
    "H200": (67.0, 989.0),        # H200 SXM (same SMs as H100 SXM)
    "H100 80GB HBM3": (67.0, 989.0),  # H100 SXM
    "H100 PCIe": (51.0, 756.0),
    "A100": (19.5, 312.0),
    "L4": (30.3, 121.0),
    "V100": (15.7, 125.0),        # bfloat16 unsupported: the FP16 tensor-core figure
    "TPU v4": (None, 275.0),
    "TPU v5 lite": (None, 197.0),  # v5e
    "TPU v5e": (None, 197.0),
    "TPU v5p": (None, 459.0),
    "TPU v6 lite": (None, 918.0),  # v6e (Trillium)
}


def spec_peak(device_kind: str, precision: str) -> float | None:
    """Vendor dense peak (TFLOP/s) of ``device_kind`` in ``precision``, when listed."""
    for name, (fp32, bf16) in PEAK_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return bf16 if precision == "bfloat16" else fp32
    return None


# ----------------------------------------------------------------------------- workers


def _peak_memory_mib(device) -> tuple[float, str]:
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device peak"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024.0), "peak RSS"


def _remat(model):
    """The model with its forward under ``jax.checkpoint`` (the backward recomputes it)."""
    import jax

    return dataclasses.replace(model, apply=jax.checkpoint(model.apply, static_argnums=(2,)))


def _model_flops(model, layer: str, size: int, precision: str) -> float:
    """XLA's FLOP count of one image's model forward + backward w.r.t. the input, as render feeds it."""
    import jax
    import jax.numpy as jnp

    from jaxviz.image import transforms

    seen = jax.eval_shape(lambda: transforms.default()(jnp.zeros((size, size, 3)), key=jax.random.key(0)))
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    params = jax.tree.map(lambda a: a.astype(dtype), model.params)

    def value(x):
        return model.features(params, x, [layer])[layer].astype(jnp.float32).mean()

    x = jax.ShapeDtypeStruct((1, *seen.shape), dtype)
    cost = jax.jit(jax.grad(value)).lower(x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def _worker_step(args) -> dict:
    import jax

    import jaxviz
    from jaxviz import objectives, render

    model = jaxviz.load_model(args.model)
    flops = _model_flops(model, args.layer, args.size, args.precision)
    if args.remat_forward:
        model = _remat(model)
    n_channels = model.layers[args.layer][-1]
    targets = [objectives.channel(args.layer, i % n_channels) for i in range(args.batch)]
    config = render.RenderConfig(size=args.size, steps=args.steps * (args.repeats + 1), chunk_steps=args.steps,
                                 batch_size=args.batch, compute_dtype=args.precision)
    stamps = []
    start = time.perf_counter()
    render.render_images(model, targets, config=config, progress=lambda *a: stamps.append(time.perf_counter()))
    chunks = [b - a for a, b in zip(stamps, stamps[1:])]
    best = min(chunks)
    image_steps = args.batch * args.steps
    memory, memory_kind = _peak_memory_mib(jax.devices()[0])
    return {
        "batch": args.batch, "precision": args.precision, "remat": bool(args.remat_forward),
        "image_steps_per_s": image_steps / best, "ms_per_image_step": 1e3 * best / image_steps,
        "chunk_s": chunks, "first_chunk_s": stamps[0] - start,
        "model_flops_per_image_step": flops, "model_tflops_per_s": flops * image_steps / best / 1e12,
        "peak_memory_mib": memory, "memory_kind": memory_kind,
        "devices": len(jax.devices()), "device_kind": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
    }


def _worker_matmul(args) -> dict:
    import jax
    import jax.numpy as jnp

    dtype = jnp.bfloat16 if args.precision == "bfloat16" else jnp.float32
    best = 0.0
    for n in (int(s) for s in args.matmul_sizes.split(",")):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        f = jax.jit(jnp.matmul)
        jax.block_until_ready(f(a, b))
        for _ in range(args.repeats + 2):
            t = time.perf_counter()
            jax.block_until_ready(f(a, b))
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t) / 1e12)
    return {"precision": args.precision, "tflops": best, "device_kind": jax.devices()[0].device_kind}


# ----------------------------------------------------------------------------- driver


def _run_worker(kind: str, args, **extra) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.accelerator", "--worker", kind, "--size", str(args.size),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--model", args.model,
           "--layer", args.layer, "--matmul-sizes", args.matmul_sizes]
    for k, v in extra.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False and v is not None:
            cmd += [f"--{k}", str(v)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        return {"error": f"{kind} {extra} failed:\n{tail}", **{k: v for k, v in extra.items()}}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(report) -> str:
    head = (f"{'batch':>5} {'precision':>9} {'remat':>5} {'img-steps/s':>11} {'ms/img-step':>11} "
            f"{'TFLOP/s':>8} {'MFU vs matmul':>13} {'MFU vs spec':>11} {'peak MiB':>9} {'1st chunk s':>11}")
    lines = [f"{report['device_kind']} x{report['devices']} ({report['platform']}), {report['model']} "
             f"{report['size']} px, {report['steps']} steps/chunk, best of {report['repeats']}", head]
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"{r.get('batch', ''):>5} {r.get('precision', ''):>9} {str(r.get('remat', '')):>5}  FAILED "
                         f"{r['error'].splitlines()[-1][:80]}")
            continue
        vs_mm = f"{100 * r['mfu_vs_matmul']:.1f} %" if r.get("mfu_vs_matmul") is not None else "-"
        vs_spec = f"{100 * r['mfu_vs_spec']:.1f} %" if r.get("mfu_vs_spec") is not None else "-"
        lines.append(f"{r['batch']:>5} {r['precision']:>9} {'on' if r['remat'] else 'off':>5} "
                     f"{r['image_steps_per_s']:>11.1f} {r['ms_per_image_step']:>11.2f} {r['model_tflops_per_s']:>8.3f} "
                     f"{vs_mm:>13} {vs_spec:>11} {r['peak_memory_mib']:>9.0f} {r['first_chunk_s']:>11.1f}")
    lines.append("matmul peaks here: " + ", ".join(f"{p} {m['tflops']:.2f} TFLOP/s" for p, m in report["matmul"].items()))
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def run(quick: bool = False, batches: str | None = None, size: int | None = None, steps: int | None = None,
        repeats: int | None = None, model: str = "efficientnet_lite0", layer: str = "head",
        precisions: str = "float32,bfloat16", remat: str = "off,on", out: str | None = None) -> dict:
    """Runs the sweep (each setting in a fresh process), writes the JSON and prints the table."""
    import jax

    platform = jax.default_backend()
    args = argparse.Namespace(
        size=size or (64 if quick else 224), steps=steps or (2 if quick else 8),
        repeats=repeats or (1 if quick else 3), model=model, layer=layer,
        matmul_sizes="512" if quick else ("2048,4096,8192" if platform != "cpu" else "1024,2048"))
    batch_list = [int(b) for b in (batches or ("2" if quick else "8,32,128")).split(",")]
    precision_list = [p for p in precisions.split(",") if p]
    notes = []
    if platform == "cpu" and "bfloat16" in precision_list:
        precision_list.remove("bfloat16")
        notes.append("bfloat16 skipped: CPU (RenderConfig refuses it there; XLA-CPU emulates bfloat16)")
    remat_list = [r == "on" for r in remat.split(",") if r]
    matmul = {p: _run_worker("matmul", args, precision=p) for p in precision_list}
    runs = []
    for batch in batch_list:
        for precision in precision_list:
            for rm in remat_list:
                print(f"batch {batch}, {precision}, remat {'on' if rm else 'off'} ...", file=sys.stderr, flush=True)
                r = _run_worker("step", args, batch=batch, precision=precision, **{"remat-forward": rm})
                if "error" not in r:
                    mm = matmul[precision].get("tflops")
                    peak = spec_peak(r["device_kind"], precision)
                    r["mfu_vs_matmul"] = r["model_tflops_per_s"] / mm if mm else None
                    r["mfu_vs_spec"] = r["model_tflops_per_s"] / peak if peak else None
                runs.append(r)
    device = jax.devices()[0]
    report = {"model": model, "layer": layer, "size": args.size, "steps": args.steps, "repeats": args.repeats,
              "platform": platform, "device_kind": device.device_kind, "devices": jax.device_count(),
              "matmul": matmul, "runs": runs, "notes": notes, "jax": jax.__version__, "host": socket.gethostname(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "flops_note": "model FLOPs: XLA cost analysis of the model's forward + backward w.r.t. the "
                            "input for one image; remat's recomputation not counted"}
    out = out or os.path.join(HERE, "results", f"accelerator-{socket.gethostname()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(_table(report))
    print(f"\nwrote {out}")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accelerator", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 2, 64 px, 2 steps: seconds on a CPU")
    p.add_argument("--batches", default=None, help="comma-separated (default 8,32,128)")
    p.add_argument("--size", type=int, default=None, help="image side (default 224)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed chunk (default 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed chunks after the first (default 3)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--layer", default="head", help="layer of the channel objectives (default head)")
    p.add_argument("--precisions", default="float32,bfloat16")
    p.add_argument("--remat", default="off,on", help="rematerialization settings to run (default off,on)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/accelerator-<host>.json)")
    p.add_argument("--worker", choices=("step", "matmul"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--remat-forward", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--matmul-sizes", default="2048", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker_step(args) if args.worker == "step" else _worker_matmul(args)))
        return 0
    report = run(quick=args.quick, batches=args.batches, size=args.size, steps=args.steps, repeats=args.repeats,
                 model=args.model, layer=args.layer, precisions=args.precisions, remat=args.remat, out=args.out)
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
