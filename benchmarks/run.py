"""Speed and memory of the visualization step: ``python -m benchmarks.run`` (or ``make bench``).

Measures, on one device of the default backend:

- **step throughput** (image-steps/s) of the render step users run: EfficientNet-Lite0, Fourier
  parameterization with colour decorrelation, the default robustness transforms, Adam, channel
  objectives (``--layer``, default ``head``: the whole conv trunk runs), built with
  ``jaxviz.render.step.compile_programs`` (the jitted, sharded chunk ``render`` runs) and timed per
  chunk of ``--steps`` steps, best and median of ``--repeats``;
- the **fp32 ceiling**: a square matmul's GFLOP/s (best of a few sizes), measured before and after
  the step runs (the better one counts);
- the step's **achieved GFLOP/s** and its ratio to the ceiling, with FLOPs counted by XLA on the
  compiled one-image step (``jit(step.make_step(...)).lower(...).compile().cost_analysis()['flops']``);
- **compile time** of the chunk (trace + lower + XLA compile) and **peak RSS** (``ru_maxrss``); every
  batch size runs in a fresh subprocess so that each peak is its own;
- the **stats pass** vs forward-only images/s, through ``benchmarks/stats_pass.py`` when present.

Writes ``benchmarks/results/<hostname>.json`` (``--out`` to override) and prints a table. The
machine may be shared: compare best-of figures, and read the load averages stored with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FLOPS_NOTE = (
    "FLOPs are XLA's count for the compiled computation (HloCostAnalysis): a multiply-add is 2 flops, "
    "every elementwise op (BN scale, ReLU6 clamp, adds of the shifted depthwise taps, Adam, the "
    "transforms' interpolation) counts 1 flop per element, FFTs and gathers are counted by XLA's own "
    "rules. The per-image-step count is taken from one image's step compiled alone (loop bodies in "
    "the scanned chunk are counted once, so the chunk's own count is not a total)."
)


# ----------------------------------------------------------------------------- helpers


def _rss_mib() -> float:
    """Current resident set size (MiB), from /proc when available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _summary(values, higher_is_better: bool = False):
    best = max(values) if higher_is_better else min(values)
    return {"best": best, "median": statistics.median(values), "all": values}


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


# ----------------------------------------------------------------------------- workers (subprocesses)


def _worker_matmul(args) -> dict:
    import jax
    import jax.numpy as jnp

    sizes = [int(s) for s in args.matmul_sizes.split(",")]
    out = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        f = jax.jit(jnp.matmul)
        _block(f(a, b))
        times = []
        for _ in range(args.repeats + 2):
            t = time.perf_counter()
            _block(f(a, b))
            times.append(time.perf_counter() - t)
        out[str(n)] = 2.0 * n**3 / min(times) / 1e9
    best = max(out, key=out.get)
    return {"gflops_by_size": out, "gflops": out[best], "size": int(best), "loadavg": _loadavg(),
            "pointwise": _pointwise_convs(args)}


def _pointwise_convs(args) -> dict:
    """The model's 1x1 convs (at the transformed size) as lone matmuls: forward and input gradient.

    This is how fast XLA's dot runs the step's dominant FLOPs on their real shapes (K or N as small
    as 16, M as small as 64) on one device, each call on fresh output buffers.
    """
    import jax
    import jax.numpy as jnp

    import jaxviz

    model = jaxviz.load_model(args.model)
    side = args.size + 12  # the default transforms pad S -> S + 12
    names = list(model.layers)
    shapes = jax.eval_shape(lambda x: model.features(model.params, x, names),
                            jax.ShapeDtypeStruct((side, side, 3), jnp.float32))
    convs = []  # (M, K, N): an expand/project/head conv reads the layer before it
    for prev, name in zip(names, names[1:]):
        if name.endswith((".expand", ".project")) or name == "head":
            h, w, n = shapes[name].shape[-3:]
            convs.append((h * w, shapes[prev].shape[-1], n))
    total_flops, total_s = 0.0, 0.0
    for m, k, n in convs:
        x = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
        wt = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
        g = jax.random.normal(jax.random.key(2), (m, n), jnp.float32)
        f = jax.jit(lambda x, wt, g: (x @ wt, g @ wt.T))
        _block(f(x, wt, g))
        times = []
        for _ in range(args.repeats + 2):
            t = time.perf_counter()
            _block(f(x, wt, g))
            times.append(time.perf_counter() - t)
        total_flops += 4.0 * m * k * n
        total_s += min(times)
    return {"count": len(convs), "side": side, "gflop_per_image": total_flops / 1e9, "ms_per_image": 1e3 * total_s,
            "gflops": total_flops / total_s / 1e9}


def _worker_step(args) -> dict:
    start = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    import jaxviz
    from jaxviz import objectives, priors, render
    from jaxviz.image import param as param_lib
    from jaxviz.image import transforms
    from jaxviz.render import step

    if args.devices:  # CPU devices, as the CLI's one-per-core (jaxviz.use_cpu_cores)
        jax.config.update("jax_num_cpu_devices", args.devices)
    batch = args.batch
    model = jaxviz.load_model(args.model)
    rss_model = _rss_mib()
    n_channels = model.layers[args.layer][-1]
    targets = [objectives.channel(args.layer, i % n_channels) for i in range(batch)]
    config = render.RenderConfig(size=args.size, steps=args.steps, batch_size=batch, chunk_steps=args.steps)
    parameterization = param_lib.fourier()  # fourier: 1/f scaling + colour decorrelation
    transform = transforms.default()
    optimizer = optax.adam(0.05)
    prior = priors.none()

    # what render() does for one launch, on one device
    devices = jax.devices()
    # as render() places one launch: a group of `batch` targets on CPU uses ≤ one device per target
    devices = devices[:render.devices_for(batch, devices)] if devices[0].platform == "cpu" else devices[:1]
    mesh = jax.sharding.Mesh(np.array(devices), (step.AXIS,))
    per_launch = -(-batch // len(devices)) * len(devices)
    batch_sharding = NamedSharding(mesh, PartitionSpec(step.AXIS))
    model_params = jax.device_put(model.params, NamedSharding(mesh, PartitionSpec()))
    obj = jax.device_put(objectives.stack(targets), batch_sharding)
    key = jax.random.key(config.seed)
    keys = jax.device_put(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(per_launch)), batch_sharding)

    t = time.perf_counter()
    parts = step.Parts(parameterization, transform, prior, None, step.PlainOptimizer(optimizer))
    programs = step.compile_programs(model, size=config.size, mesh=mesh, chunk_steps=args.steps)
    state = _block(programs.init(model_params, keys, parts))
    init_s = time.perf_counter() - t
    t = time.perf_counter()
    chunk_args = (np.int32(args.steps), model_params)  # the step count is a runtime argument
    chunk = programs.run_chunk.jitted.lower(*chunk_args, state, obj, keys, parts).compile()
    compile_s = time.perf_counter() - t

    # FLOPs of ONE image's step, compiled alone (the scanned chunk counts its loop body once)
    step_fn = step.make_step(model)
    one = jax.tree.map(lambda a: a[0], (state, obj))
    step_key = step.step_key(keys[0], jnp.zeros((), jnp.int32))
    step_cost = _flops(jax.jit(step_fn).lower(model.params, one[0], one[1], step_key, parts).compile())
    seen = jax.eval_shape(lambda: transform(jnp.zeros((config.size, config.size, 3)), key=step_key))
    forward_cost = _flops(jax.jit(lambda p, x: model.features(p, x, [args.layer])).lower(
        model.params, jax.ShapeDtypeStruct((1, *seen.shape), jnp.float32)).compile())

    walls, cpus = [], []
    load_before = _loadavg()
    for rep in range(args.repeats + 1):  # the first run warms up
        t, c = time.perf_counter(), time.process_time()
        state, values, traces = chunk(*chunk_args, state, obj, keys, parts)
        values = np.asarray(values)  # the host sync render() does after every chunk
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if not np.all(np.isfinite(values)):
            raise FloatingPointError("non-finite objective during the benchmark")
        if rep:
            walls.append(wall)
            cpus.append(cpu)
    image_steps = batch * args.steps
    result = {
        "batch": batch,
        "image_steps_per_s": _summary([image_steps / w for w in walls], higher_is_better=True),
        "ms_per_image_step": _summary([1e3 * w / image_steps for w in walls]),
        "cpu_ms_per_image_step": _summary([1e3 * c / image_steps for c in cpus]),
        "flops_per_image_step": step_cost,
        "forward_flops_per_image": forward_cost,
        "compile_s": compile_s,
        "init_s": init_s,
        "rss_after_model_mib": rss_model,
        "peak_rss_mib": _peak_rss_mib(),
        "loadavg": [load_before, _loadavg()],
        "worker_s": time.perf_counter() - start,
        "device": str(jax.devices()[0]),
        "devices": len(devices),
        "jaxviz": os.path.dirname(jaxviz.__file__),
        "backend": jax.default_backend(),
    }
    if args.profile:
        result["profile"] = _profile(chunk, (*chunk_args, state, obj, keys, parts), image_steps)
    return result


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


_CATEGORIES = (  # (regex on XLA op_name metadata, label); first match wins
    (r"EfficientNetLite.*stem_conv", "model: stem conv"),
    (r"EfficientNetLite.*(expand|project|head)_conv.*dot_general", "model: 1x1 convs (einsum)"),
    (r"EfficientNetLite.*depthwise_conv|EfficientNetLite.*relu6", "model: depthwise conv (+BN, ReLU6 fused)"),
    (r"EfficientNetLite", "model: other (BN, residual, ReLU6)"),
    (r"fft", "parameterization: FFT"),
    (r"gather|scatter|dynamic_slice|dynamic_update_slice", "transforms: crop/resample gathers"),
    (r"dot_general", "parameterization: colour decorrelation"),
    (r".", "other (transforms, sigmoid, Adam, loop)"),
)


def _profile(chunk, args, image_steps) -> list:
    """Op time per category (ms per image-step) from a jax.profiler trace of one chunk."""
    import collections
    import glob
    import gzip
    import tempfile

    import jax

    meta = {}
    for line in chunk.as_text().splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if m:
            meta[m.group(1)] = m.group(2)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            out = chunk(*args)
            jax.block_until_ready(out)
        files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not files:
            return []
        with gzip.open(files[0]) as f:
            events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name not in meta or re.match(r"(while|conditional|call)(\.|$)", name):
            continue  # loops and calls enclose the ops they run: counting them would count twice
        op = meta[name]
        label = next(lab for pattern, lab in _CATEGORIES if re.search(pattern, op))
        direction = "bwd" if "transpose(" in op else "fwd"
        totals[f"{label} [{direction}]"] += e["dur"]
    return [[k, v / 1e3 / image_steps] for k, v in totals.most_common()]


# ----------------------------------------------------------------------------- driver


def _run_worker(kind: str, args, **extra) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", kind, "--size", str(args.size),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--model", args.model,
           "--layer", args.layer, "--matmul-sizes", args.matmul_sizes]
    for k, v in extra.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not False and v is not None:
            cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, cwd=os.path.dirname(HERE), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark worker {kind} {extra} failed:\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stats_pass(args):
    """benchmarks/stats_pass.py (written separately), if present: called with the options it accepts."""
    try:
        from benchmarks import stats_pass
    except ImportError:
        return None
    import inspect

    fn = next((getattr(stats_pass, n) for n in ("run", "benchmark", "measure", "main") if hasattr(stats_pass, n)), None)
    if fn is None:
        return {"error": "benchmarks/stats_pass.py has no run()/benchmark()/measure()/main()"}
    offered = {"size": args.size, "quick": args.quick, "model": args.model, "model_name": args.model,
               "repeats": args.repeats}
    if args.quick:
        offered["batches"] = 2
    try:
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = offered
        else:
            kwargs = {k: v for k, v in offered.items() if k in params}
        if fn.__name__ == "main" and "argv" in params:
            kwargs = {"argv": ["--size", str(args.size)] + (["--quick"] if args.quick else [])}
        result = fn(**kwargs)
    except Exception as e:  # a separate script's failure must not lose the step figures
        return {"error": f"{type(e).__name__}: {e}"}
    return result if isinstance(result, dict) else {"result": result}


def _default_out() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname() or "") or "cpu"
    return os.path.join(HERE, "results", f"{host}.json")


def _table(report) -> str:
    ceiling = report["matmul"]["gflops"]
    lines = [
        f"jaxviz step benchmark: {report['model']} at {report['size']} px, fourier + colour decorrelation, "
        f"default transforms, Adam, channel objectives on '{report['layer']}', {report['device']}",
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; jax {report['machine']['jax']}",
        f"fp32 ceiling: {ceiling:.1f} GFLOP/s ({report['matmul']['size']}² matmul, best of "
        + ", ".join(f"{k}²: {v:.0f}" for k, v in report["matmul"]["gflops_by_size"].items()) + ")",
        "",
        f"{'batch':>5} {'devices':>7} {'img-steps/s':>12} {'(median)':>9} {'ms/img-step':>12} {'GFLOP/img-step':>15} "
        f"{'GFLOP/s':>8} {'% ceiling':>10} {'compile s':>10} {'peak RSS MiB':>13}",
    ]
    for r in report["steps"]:
        lines.append(
            f"{r['batch']:>5} {r.get('devices', 1):>7} {r['image_steps_per_s']['best']:>12.2f} {r['image_steps_per_s']['median']:>9.2f} "
            f"{r['ms_per_image_step']['best']:>12.1f} {r['flops_per_image_step'] / 1e9:>15.3f} "
            f"{r['gflops']:>8.1f} {100 * r['fraction_of_ceiling']:>9.1f}% {r['compile_s']:>10.1f} "
            f"{r['peak_rss_mib']:>13.0f}")
    first = report["steps"][0] if report["steps"] else None
    if first:
        lines.append(f"(model forward alone: {first['forward_flops_per_image'] / 1e9:.3f} GFLOP/image at the "
                     f"transformed size; {report['steps_per_chunk']} steps per timed chunk, best of "
                     f"{report['repeats']}; GFLOP/s and % use the best time)")
    pw = report.get("pointwise_convs")
    if pw:
        lines += ["", f"1x1 convs alone, one device ({pw['count']} lone matmuls of the model's shapes at {pw['side']} px, forward "
                      f"+ input gradient): {pw['gflop_per_image']:.3f} GFLOP in {pw['ms_per_image']:.1f} ms per image "
                      f"= {pw['gflops']:.0f} GFLOP/s ({100 * pw['gflops'] / ceiling:.0f}% of the ceiling)."]
    lines += ["", "FLOP counting: " + FLOPS_NOTE]
    sp = report.get("stats_pass")
    if sp:
        lines += ["", "stats pass vs forward-only (benchmarks/stats_pass.py):"]
        for k, v in sp.items():
            lines.append(f"  {k}: {v:.1f}" if isinstance(v, float) else f"  {k}: {v}")
    for r in report["steps"]:
        if r.get("profile"):
            lines += ["", f"op time by category, batch {r['batch']} on {r.get('devices', 1)} device(s) (op ms per "
                          "image-step, summed over devices, from a profiler trace; "
                          "fusions are labelled by their root op):"]
            lines += [f"  {ms:7.2f}  {name}" for name, ms in r["profile"] if ms >= 0.05]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated (default 1,8,32)")
    p.add_argument("--size", type=int, default=224, help="image side in px (default 224)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed chunk (default 8; --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed chunks per batch size (default 5; --quick 2)")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats, one matmul size")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--layer", default="head", help="layer of the channel objectives (default head)")
    p.add_argument("--matmul-sizes", default=None, help="matmul ceiling sizes (default 1024,2048,3072)")
    p.add_argument("--profile", action="store_true",
                   help="also print op time by category (batch 8, else the first batch size)")
    p.add_argument("--no-stats-pass", action="store_true", help="skip benchmarks/stats_pass.py")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<hostname>.json)")
    p.add_argument("--worker", choices=("step", "matmul"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--devices", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--cpu-devices", default=None,
                   help="CPU device counts to time the step with, comma-separated (default: one per core, "
                        "as the CLI runs, and 1 for comparison)")
    p.add_argument("--accelerator", action="store_true",
                   help="throughput, MFU and memory at batch 8/32/128, float32/bfloat16, remat off/on on the default "
                        "backend (benchmarks/accelerator.py; --quick: seconds on a CPU)")
    args = p.parse_args(argv)
    if args.accelerator:
        from benchmarks import accelerator

        extra = ["--quick"] if args.quick else []
        return accelerator.main(extra + ["--model", args.model, "--layer", args.layer]
                                + (["--out", args.out] if args.out else []))
    args.steps = args.steps or (2 if args.quick else 8)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.matmul_sizes = args.matmul_sizes or ("2048" if args.quick else "1024,2048,3072")

    if args.worker:
        result = _worker_step(args) if args.worker == "step" else _worker_matmul(args)
        print(json.dumps(result))
        return 0

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    from jaxviz.common.hardware import usable_cores

    cores = usable_cores()
    device_counts = ([int(d) for d in args.cpu_devices.split(",") if d.strip()] if args.cpu_devices
                     else sorted({cores, 1}, reverse=True))
    t0 = time.perf_counter()
    print(f"matmul ceiling ({args.matmul_sizes}) ...", file=sys.stderr, flush=True)
    ceilings = [_run_worker("matmul", args)]
    steps = []
    profiled = 8 if 8 in batches else batches[0]  # --profile: this batch, on the first device count
    for n_dev in device_counts:
        for b in batches:
            print(f"batch {b}, {n_dev} CPU device(s): {args.steps} steps x {args.repeats} (+1 warm-up) "
                  "in a fresh process ...", file=sys.stderr, flush=True)
            steps.append(_run_worker("step", args, batch=b, devices=n_dev,
                                     profile=args.profile and b == profiled and n_dev == device_counts[0]))
    ceilings.append(_run_worker("matmul", args))
    matmul = max(ceilings, key=lambda c: c["gflops"])
    for r in steps:
        r["gflops"] = r["flops_per_image_step"] * r["image_steps_per_s"]["best"] / 1e9
        r["fraction_of_ceiling"] = r["gflops"] / matmul["gflops"]
    pointwise = max((c["pointwise"] for c in ceilings), key=lambda p: p["gflops"])
    if not args.no_stats_pass:  # in this process, on as many CPU devices as the CLI's stats pass uses
        import jax

        jax.config.update("jax_num_cpu_devices", device_counts[0])
    stats = None if args.no_stats_pass else _stats_pass(args)

    import jax

    report = {
        "model": args.model, "size": args.size, "layer": args.layer, "param": "fourier (decorrelated)",
        "transforms": "default", "optimizer": "adam", "steps_per_chunk": args.steps, "repeats": args.repeats,
        "device": steps[0]["device"] if steps else "", "matmul": matmul, "matmul_runs": ceilings,
        "pointwise_convs": pointwise,
        "steps": steps, "stats_pass": stats, "flops_note": FLOPS_NOTE,
        "machine": {"host": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                    "jax": jax.__version__, "python": platform.python_version()},
        "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.run", *(argv or sys.argv[1:])]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": time.perf_counter() - t0,
    }
    out = args.out or _default_out()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(_table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
