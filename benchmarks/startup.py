"""Time to the first image, cold and warm: ``python -m benchmarks.startup [--repeats 3]``.

Totals are wall times of fresh processes running the command a new user would try::

    jaxviz visualize --target logits:1 --target logits:2 --steps 1 --size 160 --out DIR

- **cold**: an empty ``JAXVIZ_CACHE_DIR`` (weights converted, layer table traced, every program
  compiled);
- **warm**: the identical command again (what a researcher's rerun costs);
- **second call**: a second ``render_images`` of other targets in the worker process (a notebook's
  next cell); it must not trace (parts are arguments of the kept programs: :func:`jaxviz.render.programs_for`);
- **uncached**: the same with ``--no-compile-cache`` and the weights already converted (every
  rerun before the compilation cache);
- **import**: a fresh ``python -c "import jaxviz"`` (its heavy parts load when used) and
  ``python -c "import jaxviz, jax"`` (what every command pays), each minus an empty interpreter.

The split comes from a worker process that runs the same pipeline through the public API
(``load_model``, ``render.render_images``, ``report.write_run``) with timestamps, and counts JAX's own
compile events (``jax.monitoring``): trace, lowering, and XLA compile or cache load. Each repeat
uses new cache folders; the machine may be shared, so read the minimum and the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGETS = ("logits:1", "logits:2")
SECOND_TARGETS = ("logits:3", "logits:4")
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
PHASES = ("interpreter", "import", "devices", "model", "trace", "lower", "xla", "steps", "report")


def _cli_args(out: str, size: int) -> list[str]:
    args = ["visualize", "--steps", "1", "--size", str(size), "--out", out]
    for t in TARGETS:
        args += ["--target", t]
    return args


def _env(cache: str) -> dict:
    env = {**os.environ, "JAXVIZ_CACHE_DIR": cache, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for k in ("JAXVIZ_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(k, None)
    return env


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], env: dict) -> tuple[float, str, float]:
    """Wall time, stdout and CPU time (user + system, all threads) of a fresh process."""
    t, c = time.perf_counter(), _cpu_children()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _cpu_children() - c
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout, cpu


# ----------------------------------------------------------------------------- worker


def _worker(args) -> dict:
    """The CLI's pipeline, in this process, with a timestamp after each phase."""
    t0 = time.perf_counter()
    import jaxviz  # noqa: F401

    t_import = time.perf_counter()
    import jax

    from jaxviz import objectives, render, report

    jaxviz.use_cpu_cores()
    jaxviz.enable_compile_cache()
    jax.devices()
    t_devices = time.perf_counter()
    model = jaxviz.load_model("efficientnet_lite0")
    t_model = time.perf_counter()

    compile_s = {"trace": 0.0, "lower": 0.0, "xla": 0.0}
    kinds = {"/jax/core/compile/jaxpr_trace_duration": "trace",
             "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
             "/jax/core/compile/backend_compile_duration": "xla"}  # compile, or load from the cache

    def on_duration(event, seconds, **kwargs):
        if event in kinds:
            compile_s[kinds[event]] += seconds

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    targets = [objectives.parse_target(t, model.layers) for t in TARGETS]
    config = render.RenderConfig(size=args.size, steps=1)
    result = render.render_images(model, targets, config=config)
    t_render = time.perf_counter()
    jax.monitoring.unregister_event_duration_listener(on_duration)
    records = [{"activation": float(a), "history": h.tolist()} for a, h in zip(result.activation, result.history)]
    report.write_run(args.out, targets=list(TARGETS), labels=["", ""], images=result.images, records=records,
                     config={"model": model.name, **config.numbers()})
    t_report = time.perf_counter()
    # a notebook's next cell: other targets, same structure, in this process (jaxviz.render.programs_for)
    traced = []
    listener = lambda event, seconds, **kw: traced.append(kw.get("fun_name")) if event == TRACE_EVENT else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    render.render_images(model, [objectives.parse_target(t, model.layers) for t in SECOND_TARGETS], config=config)
    second = time.perf_counter() - t_report
    jax.monitoring.unregister_event_duration_listener(listener)
    return {"second_call": second, "second_call_traces": len(traced), "import": t_import - t0, "devices": t_devices - t_import, "model": t_model - t_devices,
            **compile_s, "steps": (t_render - t_model) - sum(compile_s.values()), "report": t_report - t_render,
            "in_process": t_report - t0}


def _split(cache: str, out: str, size: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.startup", "--worker", "--size", str(size), "--out", out]
    wall, stdout, _ = _timed(cmd, _env(cache))
    phases = json.loads(stdout.strip().splitlines()[-1])
    # start-up and shutdown of Python itself (the worker's second render is not the CLI's work)
    phases["interpreter"] = wall - phases.pop("in_process") - phases["second_call"]
    phases["total"] = wall - phases["second_call"]  # the CLI's work only: it renders once
    return phases


# ----------------------------------------------------------------------------- driver


def _summary(values: list[float]) -> dict:
    return {"min": min(values), "max": max(values), "median": statistics.median(values), "all": values}


def _import_times(repeats: int) -> dict:
    """Fresh-process import times (min over repeats), less the bare interpreter's start and exit."""
    env = _env(tempfile.mkdtemp(prefix="jaxviz-import-"))
    runs = {"python": "pass", "jaxviz": "import jaxviz", "jaxviz+jax": "import jaxviz, jax; jax.devices()"}
    best = {name: min(_timed([sys.executable, "-c", code], env)[0] for _ in range(repeats))
            for name, code in runs.items()}
    return {"jaxviz": best["jaxviz"] - best["python"], "jaxviz+jax": best["jaxviz+jax"] - best["python"]}


def measure(repeats: int, size: int) -> dict:
    jaxviz_cmd = [sys.executable, "-m", "jaxviz"]
    totals = {"cold": [], "warm": [], "uncached": []}
    cpu = {"cold": [], "warm": [], "uncached": []}
    splits = {"cold": [], "warm": []}
    for rep in range(repeats):
        work = tempfile.mkdtemp(prefix="jaxviz-startup-")
        try:
            cache, out = os.path.join(work, "cache"), os.path.join(work, "out")
            for kind in ("cold", "warm"):
                print(f"[{rep + 1}/{repeats}] {kind} ...", file=sys.stderr, flush=True)
                wall, _, used = _timed(jaxviz_cmd + _cli_args(out, size), _env(cache))
                totals[kind].append(wall)
                cpu[kind].append(used)
            print(f"[{rep + 1}/{repeats}] uncached ...", file=sys.stderr, flush=True)
            wall, _, used = _timed(jaxviz_cmd + ["--no-compile-cache"] + _cli_args(out, size), _env(cache))
            totals["uncached"].append(wall)
            cpu["uncached"].append(used)
            split_cache = os.path.join(work, "split-cache")
            for kind in ("cold", "warm"):
                print(f"[{rep + 1}/{repeats}] split, {kind} ...", file=sys.stderr, flush=True)
                splits[kind].append(_split(split_cache, out, size))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "import_s": _import_times(max(3, repeats)),
        "totals": {k: _summary(v) for k, v in totals.items()},
        "cpu_s": {k: _summary(v) for k, v in cpu.items()},  # less sensitive to other load than wall time
        "warm_over_cold": [w / c for w, c in zip(totals["warm"], totals["cold"])],
        "split": {kind: {p: min(s[p] for s in runs) for p in (*PHASES, "total")} for kind, runs in splits.items()},
        "second_call": {kind: _summary([s["second_call"] for s in runs]) for kind, runs in splits.items()},
        "second_call_traces": max(s["second_call_traces"] for runs in splits.values() for s in runs),
        "split_runs": splits,
    }


def _table(report: dict) -> str:
    t = report["totals"]
    lines = [f"command: jaxviz {' '.join(_cli_args('DIR', report['size']))}",
             f"{'':10s} {'min s':>7s} {'max s':>7s} {'CPU s':>7s}  (fresh processes, {report['repeats']} repeats; "
             f"CPU: user + system, min)"]
    for kind in ("cold", "warm", "uncached"):
        lines.append(f"{kind:10s} {t[kind]['min']:7.2f} {t[kind]['max']:7.2f} {report['cpu_s'][kind]['min']:7.2f}")
    lines.append(f"warm / cold: {min(report['warm_over_cold']):.2f} (best min/min: "
                 f"{t['warm']['min'] / t['cold']['min']:.2f}); warm / uncached: {t['warm']['min'] / t['uncached']['min']:.2f}")
    lines.append(f"load average (1 min) before/after: {report['loadavg'][0][0]:.1f}/{report['loadavg'][1][0]:.1f} "
                 f"on {report['cores']} cores")
    lines.append("\nsplit, s (min over repeats)  " + "  ".join(f"{p:>7s}" for p in (*PHASES, "total")))
    for kind, phases in report["split"].items():
        lines.append(f"{kind:28s} " + "  ".join(f"{phases[p]:7.2f}" for p in (*PHASES, "total")))
    imp = report["import_s"]
    lines.append(f"\nimport (fresh process, less an empty interpreter; min): import jaxviz {imp['jaxviz']:.2f} s, "
                 f"import jaxviz, jax + devices {imp['jaxviz+jax']:.2f} s")
    sc = report["second_call"]
    lines.append(f"\nsecond render in the same process (targets {', '.join(SECOND_TARGETS)}, same structure): "
                 f"{min(sc['warm']['min'], sc['cold']['min']):.2f} s min, {max(sc['warm']['max'], sc['cold']['max']):.2f} s max; "
                 f"functions traced: {report['second_call_traces']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="cold/warm pairs, each in new cache folders (default 3)")
    p.add_argument("--size", type=int, default=160, help="image side in px (default 160)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/startup-<hostname>.json)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        os.makedirs(args.out, exist_ok=True)
        print(json.dumps(_worker(args)))
        return 0
    import jax

    load_before = os.getloadavg()
    report = {"size": args.size, "repeats": args.repeats, **measure(args.repeats, args.size),
              "loadavg": [load_before, os.getloadavg()], "host": socket.gethostname(), "cores": os.cpu_count(),
              "jax": jax.__version__, "python": platform.python_version(),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = args.out or os.path.join(HERE, "results", f"startup-{socket.gethostname()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(_table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
