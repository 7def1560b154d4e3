"""The method vs baselines on EfficientNet-Lite0: one command, config in a file, resumable.

    python -m experiments.compare                       # full config (experiments/config.json)
    python -m experiments.compare --tune                # choose λ, k, ... on the tuning targets first
    python -m experiments.compare --quick               # 2 targets, 1 seed, few steps (CI smoke run)

Pipeline (all under the run directory, default ``experiments/results/<YYYY-MM-DD>/``):

1. statistics of the embedded photos at the render size, for the method's layers and, separately,
   for the held-out layers used only by the naturalness metric (``stats/``, cached);
2. optional tuning (``--tune``): the outlier prior's grid on the tuning targets (disjoint from the
   evaluation targets); the choice is the lowest held-out D² among settings that keep the target
   activation ≥ ``min_activation_percent`` of the unconstrained Fourier run → ``tune.json``;
3. one ``render`` call per method over every (target, seed) still missing; each image is saved as
   ``runs/<method>/<target>__s<seed>.npz`` with a signature of its settings, so a rerun skips what
   is done and re-renders what was made with other settings;
4. metrics (:mod:`jaxviz.metrics`) → ``per_image.csv``, ``table.md``, ``table.csv``, ``grid.png``,
   ``summary.md``, plus ``command.txt`` and the effective ``config.json``.

Seeds: every (target, seed) pair of a method is one image of a single ``render`` call; its random
init is drawn from ``fold_in(key(base_seed), position in that call)``, so seeds are independent
draws. A resumed, partial call draws the missing pairs at other positions (other, equally valid,
inits), so only uninterrupted runs are bit-reproducible.
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import shlex
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "config.json")
BASE_SEED = 20240601


# --------------------------------------------------------------------------------------------- config


def load_config(path: str, args) -> dict:
    """The effective configuration: the file, then ``--quick``, then explicit flags."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg = copy.deepcopy(cfg)
    if args.quick:
        q = cfg["quick"]
        cfg["eval_targets"] = list(q["eval_targets"])
        cfg["tune_targets"] = list(q["tune_targets"])
        cfg["seeds"] = list(q["seeds"])
        cfg["steps"], cfg["size"] = q["steps"], q["size"]
        cfg["stats"]["images"] = q["stats_images"]
        cfg["stats"]["reference_images"] = q["reference_images"]
        cfg["tune"]["grid"] = q["tune_grid"]
        cfg["tune"]["fixed"] = q["tune_fixed"]
        cfg["outliers"].update(q["tune_fixed"])
    if args.steps:
        cfg["steps"] = args.steps
    if args.size:
        cfg["size"] = args.size
    if args.seeds:
        cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in cfg["methods"]]
        if unknown:
            raise SystemExit(f"error: unknown methods {unknown}; choose from {list(cfg['methods'])}")
        cfg["methods"] = {m: cfg["methods"][m] for m in wanted}
    if args.classes is not None or args.channels is not None:
        classes = [t for t in cfg["eval_targets"] if t.startswith("logits:")]
        channels = [t for t in cfg["eval_targets"] if not t.startswith("logits:")]
        if args.classes is not None:
            classes = _spread(classes, args.classes)
        if args.channels is not None:
            channels = _spread(channels, args.channels)
        cfg["eval_targets"] = classes + channels
    if args.tune_targets is not None:
        cfg["tune_targets"] = [t for t in args.tune_targets.split(",") if t]
    if set(cfg["eval_targets"]) & set(cfg["tune_targets"]):
        raise SystemExit("error: tuning and evaluation targets overlap")
    if args.tune_warmup:
        cfg["tune"]["fixed"]["warmup"] = args.tune_warmup
        cfg["outliers"]["warmup"] = args.tune_warmup
    if args.tune_every:
        cfg["tune"]["fixed"]["every"] = args.tune_every
        cfg["outliers"]["every"] = args.tune_every
    if set(cfg["stats"]["method_layers"]) & set(cfg["stats"]["heldout_layers"]):
        raise SystemExit("error: held-out layers must differ from the method's statistics layers")
    return cfg


def _spread(items, n):
    """``n`` items evenly spread over ``items`` (keeps animals/objects/scenes mixed when cutting)."""
    if n >= len(items):
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------------------- stats


def _stats(model, layers, directory, cfg, quiet):
    from jaxviz import collect

    s = cfg["stats"]
    try:
        bundle, _ = collect.collect_to_dir(model, list(layers), s["data"], directory, size=cfg["size"],
                                           max_images=s["images"], seed=s["seed"], quiet=quiet)
    except collect.StatsMismatchError:
        # cached statistics whose metadata the model check cannot read back (see the report):
        # load them by model name, which skips only the layer-shape check
        bundle = collect.load_stats(directory, model=model.name, layers=list(layers))
    return bundle


def _moments(bundle):
    import jax.numpy as jnp

    from jaxviz.priors import LayerMoments

    out = {}
    for layer, s in bundle.layers.items():
        std = np.sqrt(np.clip(np.diagonal(np.asarray(s.cov, np.float64)), 1e-12, None))
        out[layer] = LayerMoments(jnp.asarray(s.mean, jnp.float32), jnp.asarray(s.precision, jnp.float32),
                                  jnp.asarray(std, jnp.float32))
    return out


def build_prior(name, spec_options, model, moments, view):
    from jaxviz import priors

    if name == "none":
        return priors.none()
    if name == "bn":
        return priors.build("bn", model=model, **spec_options)
    if name == "outliers":
        return priors.OutlierPrior(moments, view=view, **spec_options)
    if name == "mahalanobis":
        return priors.MahalanobisPrior(moments, view=view, **spec_options)
    raise SystemExit(f"error: unknown prior {name}")


# ------------------------------------------------------------------------------------------ rendering


def _file(run_dir, method, target, seed):
    return os.path.join(run_dir, "runs", method, f"{target.replace(':', '_')}__s{seed}.npz")


def _signature(cfg, spec, options):
    data = {"model": cfg["model"], "size": cfg["size"], "steps": cfg["steps"], "lr": cfg["learning_rate"],
            "param": spec["param"], "transforms": spec["transforms"], "prior": spec["prior"],
            "options": options, "stats": cfg["stats"]["method_layers"], "stats_images": cfg["stats"]["images"]}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _load_done(path, signature):
    try:
        with np.load(path) as z:
            if str(z["signature"]) != signature:
                return None
            return {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError):
        return None


def render_method(ctx, method, spec, options, targets, seeds, bar):
    """Renders the missing (target, seed) pairs of one method in one call; returns {(t, s): record}."""
    from jaxviz import objectives, render

    cfg, model = ctx["cfg"], ctx["model"]
    signature = _signature(cfg, spec, options)
    pairs = [(t, s) for s in seeds for t in targets]
    done, missing = {}, []
    for t, s in pairs:
        rec = _load_done(_file(ctx["run_dir"], method, t, s), signature)
        if rec is None:
            missing.append((t, s))
        else:
            done[(t, s)] = rec
    bar.update(len(done) * cfg["steps"])
    if missing:
        import jax

        prior = build_prior(spec["prior"], options, model, ctx["moments"], ctx["view"])
        objs = [objectives.parse_target(t, model.layers) for t, _ in missing]
        rc = render.RenderConfig(size=cfg["size"], steps=cfg["steps"], param=spec["param"],
                                 transforms=spec["transforms"], learning_rate=cfg["learning_rate"],
                                 batch_size=cfg["batch_size"], chunk_steps=cfg["chunk_steps"], seed=BASE_SEED)
        key = jax.random.fold_in(jax.random.key(BASE_SEED), int(signature[:7], 16))
        last = [0]

        def progress(done_steps, total_steps, value):
            bar.update(done_steps - last[0])
            last[0] = done_steps

        t0 = time.perf_counter()
        res = render.render(model, objs, key=key, config=rc, prior=prior, progress=progress)
        wall = time.perf_counter() - t0
        os.makedirs(os.path.join(ctx["run_dir"], "runs", method), exist_ok=True)
        for i, (t, s) in enumerate(missing):
            rec = {"image": res.images[i], "activation": res.activation[i], "history": res.history[i],
                   "trace": res.trace[i], "signature": np.array(signature),
                   "call_wall": np.array(wall), "call_images": np.array(len(missing)),
                   "steps": np.array(cfg["steps"])}
            path = _file(ctx["run_dir"], method, t, s)
            np.savez(path + ".tmp.npz", **rec)
            os.replace(path + ".tmp.npz", path)
            done[(t, s)] = rec
    return done


# -------------------------------------------------------------------------------------------- metrics


def _parse(t):
    layer, ch = t.rsplit(":", 1)
    return layer, int(ch)


def image_metrics(ctx, records, targets, seeds):
    """Per-(target, seed) metric arrays for one method's records."""
    from jaxviz import metrics

    cfg = ctx["cfg"]
    pairs = [(t, s) for s in seeds for t in targets if (t, s) in records]
    images = np.stack([records[p]["image"] for p in pairs]).astype(np.float32)
    out = {"pairs": pairs, "activation": np.array([float(records[p]["activation"]) for p in pairs])}
    nat = metrics.heldout_naturalness(ctx["model"], images, ctx["heldout"])
    out["d2_heldout"] = nat["mean"]
    for layer in ctx["heldout"]:
        out[f"d2_{layer}"] = nat[layer]
    rep_images = metrics.resize_images(images, cfg["repetition"]["size"])
    rep = metrics.repetition(ctx["model"], rep_images, [_parse(t) for t, _ in pairs],
                             rel=cfg["repetition"]["peak_rel"])
    out["entropy"], out["peaks"] = rep["entropy"], rep["peaks"]
    cls = [i for i, (t, _) in enumerate(pairs) if t.startswith("logits:")]
    for name, held in ctx["heldout_models"].items():
        short = name.replace("efficientnet_", "")
        for k in ("top1", "top5", "prob"):
            out[f"{short}_{k}"] = np.full(len(pairs), np.nan)
        if cls:
            tr = metrics.transferability(held, images[cls], [_parse(pairs[i][0])[1] for i in cls])
            for k in ("top1", "top5", "prob"):
                out[f"{short}_{k}"][cls] = tr[k]
    out["call_wall"] = np.array([float(records[p]["call_wall"]) for p in pairs])
    out["call_images"] = np.array([float(records[p]["call_images"]) for p in pairs])
    return out


def add_percent(per_method, cfg):
    from jaxviz import metrics

    for method, m in per_method.items():
        spec = cfg["methods"].get(method) or m.get("spec")
        ref = cfg["unconstrained"].get(spec["param"]) if spec else None
        m["activation_pct"] = np.full(len(m["pairs"]), np.nan)
        if ref in per_method:
            lookup = dict(zip(per_method[ref]["pairs"], per_method[ref]["activation"]))
            r = np.array([lookup.get(p, np.nan) for p in m["pairs"]])
            m["activation_pct"] = metrics.activation_percent(m["activation"], r)


# --------------------------------------------------------------------------------------------- tables

COLUMNS = [
    ("activation", "target act."), ("activation_pct", "act. % of unconstrained"),
    ("lite1_top1", "Lite1 top-1"), ("lite1_top5", "Lite1 top-5"), ("lite1_prob", "Lite1 p(class)"),
    ("lite2_top1", "Lite2 top-1"), ("lite2_top5", "Lite2 top-5"), ("lite2_prob", "Lite2 p(class)"),
    ("d2_heldout", "held-out D²/dim ↓"), ("entropy", "CAM entropy ↓"), ("peaks", "peaks ↓"),
]
LOWER_BETTER = {"d2_heldout", "entropy", "peaks"}


def _paired(a, b, key):
    la = dict(zip(a["pairs"], a[key]))
    lb = dict(zip(b["pairs"], b[key]))
    common = [p for p in la if p in lb]
    return np.array([la[p] for p in common]), np.array([lb[p] for p in common])


def make_tables(run_dir, cfg, per_method, reference, costs, tuning):
    from jaxviz import metrics

    method = cfg["method"]
    rows = []
    for name, m in per_method.items():
        row = {"method": name}
        for key, _ in COLUMNS:
            s = metrics.summarize(m[key])
            row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_n"] = s["mean"], s["std"], s["n"]
            if name != method and method in per_method:
                a, b = _paired(per_method[method], m, key)
                row[f"{key}_p"] = metrics.paired_wilcoxon(a, b)["p"]
            else:
                row[f"{key}_p"] = float("nan")
        row.update(costs[name])
        rows.append(row)
    ref_row = {"method": "natural photos (reference)"}
    for key, _ in COLUMNS:
        s = metrics.summarize(reference.get(key, [np.nan]))
        ref_row[f"{key}_mean"], ref_row[f"{key}_std"], ref_row[f"{key}_n"] = s["mean"], s["std"], s["n"]
        ref_row[f"{key}_p"] = float("nan")
    rows.append(ref_row)

    fields = ["method"] + [f"{k}_{x}" for k, _ in COLUMNS for x in ("mean", "std", "n", "p")] + \
             ["wall_s", "images", "image_steps_per_s"]
    with open(os.path.join(run_dir, "table.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)

    def cell(r, key):
        mean, std, p = r.get(f"{key}_mean"), r.get(f"{key}_std"), r.get(f"{key}_p")
        if mean is None or not np.isfinite(mean):
            return "—"
        text = f"{mean:.3g} ± {std:.2g}" if np.isfinite(std) else f"{mean:.3g}"
        if p is not None and np.isfinite(p):
            text += f" (p={p:.2g})"
        return text

    lines = [f"# {cfg['model']}: method `{method}` vs baselines", "",
             f"{len(cfg['eval_targets'])} targets × {len(cfg['seeds'])} seeds, {cfg['steps']} steps, "
             f"{cfg['size']} px. Cells: mean ± std over (target, seed); p = two-sided Wilcoxon signed-rank "
             f"vs `{method}`, paired on (target, seed). Transfer columns use class targets only. "
             "↓ = lower is better.", "",
             "| method | " + " | ".join(h for _, h in COLUMNS) + " | wall s | image-steps/s |",
             "|---" * (len(COLUMNS) + 3) + "|"]
    for r in rows:
        wall = r.get("wall_s")
        cost = f"{wall:.0f} | {r['image_steps_per_s']:.1f}" if wall else "— | —"
        lines.append(f"| {r['method']} | " + " | ".join(cell(r, k) for k, _ in COLUMNS) + f" | {cost} |")
    if tuning:
        lines += ["", f"Outlier prior settings used by outliers_*: `{json.dumps(tuning)}`"]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(run_dir, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return rows, text


def write_summary(run_dir, cfg, rows, tuning_info):
    method = cfg["method"]
    by = {r["method"]: r for r in rows}
    if method not in by:
        return ""
    me = by[method]
    lines = [f"# Summary: `{method}` vs baselines", ""]
    wins, losses = [], []
    for key, head in COLUMNS:
        if key in ("activation",):
            continue
        mm = me.get(f"{key}_mean")
        if mm is None or not np.isfinite(mm):
            continue
        for name, r in by.items():
            if name in (method, "natural photos (reference)"):
                continue
            other = r.get(f"{key}_mean")
            if other is None or not np.isfinite(other):
                continue
            better = mm < other if key in LOWER_BETTER else mm > other
            p = r.get(f"{key}_p", float("nan"))
            sig = np.isfinite(p) and p < 0.05
            text = f"{head}: {method} {mm:.3g} vs {name} {other:.3g} (p={p:.2g}{', significant' if sig else ''})"
            (wins if better else losses).append(text)
    lines += ["## Where the method does NOT win", ""] + [f"- {t}" for t in losses] + [""]
    lines += ["## Where it wins", ""] + [f"- {t}" for t in wins] + [""]
    if tuning_info:
        lines += ["## Tuning", "", f"- {tuning_info}", ""]
    lines += ["## Caveats", "",
              "- Statistics (and the natural-photo reference row) come from 10 embedded photos; "
              "the reference row is random crops of the same photos (another seed), so it is optimistic.",
              "- `bn` constrains every BatchNorm layer, held-out layers included (with ImageNet running "
              "statistics, not the photo statistics); `mahalanobis` and `bn` weights are defaults, not tuned.",
              "- Wall times include compilation and were measured on a shared 2-core CPU.",
              ""]
    text = "\n".join(lines)
    with open(os.path.join(run_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def write_grid(run_dir, cfg, records_by_method, model):
    from PIL import Image

    from jaxviz import report

    targets = _spread(cfg["eval_targets"], cfg.get("grid_rows", 8))
    seed = cfg["seeds"][0]
    methods = list(records_by_method)
    images, labels = [], []
    for t in targets:
        layer, ch = _parse(t)
        name = model.class_names[ch] if layer == "logits" and model.class_names else t
        for m in methods:
            rec = records_by_method[m].get((t, seed))
            img = rec["image"] if rec is not None else np.ones((cfg["size"], cfg["size"], 3), np.float32)
            images.append(report.to_uint8(img))
            labels.append(f"{m}|{name}")
    sheet = report.contact_sheet(images, labels, columns=len(methods), tile=128)
    Image.fromarray(sheet).save(os.path.join(run_dir, "grid.png"))


# ----------------------------------------------------------------------------------------------- tune


def tune(ctx, bar_factory):
    cfg = ctx["cfg"]
    t = cfg["tune"]
    targets, seeds = cfg["tune_targets"], t["seeds"]
    grid = [dict(weight=w, k=k, **t["fixed"]) for w in t["grid"]["weight"] for k in t["grid"]["k"]]
    lucid = {"param": "fourier", "transforms": "default", "prior": "none"}
    total = (len(grid) + 1) * len(targets) * len(seeds) * cfg["steps"]
    bar = bar_factory(total, "tune")
    base = render_method(ctx, "lucid", lucid, {}, targets, seeds, bar)
    base_m = image_metrics(ctx, base, targets, seeds)
    rows = []
    for opts in grid:
        spec = {"param": "fourier", "transforms": "default", "prior": "outliers"}
        name = "tune_" + "_".join(f"{k}{v}" for k, v in opts.items())
        recs = render_method(ctx, name, spec, opts, targets, seeds, bar)
        m = image_metrics(ctx, recs, targets, seeds)
        from jaxviz import metrics

        pct = metrics.activation_percent(m["activation"], base_m["activation"])
        rows.append({"options": opts, "activation_pct": float(np.nanmean(pct)),
                     "d2_heldout": float(np.mean(m["d2_heldout"]))})
    bar.close()
    thr = t["min_activation_percent"]
    feasible = [r for r in rows if r["activation_pct"] >= thr]
    if feasible:
        chosen = min(feasible, key=lambda r: r["d2_heldout"])
        note = f"lowest held-out D² among {len(feasible)}/{len(rows)} settings with activation ≥ {thr}% of lucid"
    else:
        chosen = max(rows, key=lambda r: r["activation_pct"])
        note = f"no setting reached {thr}% of lucid; took the highest activation"
    out = {"targets": targets, "seeds": seeds, "grid": rows, "chosen": chosen["options"], "rule": note,
           "unconstrained_d2_heldout": float(np.mean(base_m["d2_heldout"]))}
    with open(os.path.join(ctx["run_dir"], "tune.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(f"tuning ({note}):", file=sys.stderr)
    for r in rows:
        mark = " <- chosen" if r is chosen else ""
        print(f"  {json.dumps(r['options'])}: act {r['activation_pct']:.1f}%  D² {r['d2_heldout']:.3f}{mark}",
              file=sys.stderr)
    print(f"chosen outlier settings: {json.dumps(chosen['options'])}")
    return out


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="config file (JSON)")
    p.add_argument("--out", default=None, help="run directory (default experiments/results/<date>[-quick])")
    p.add_argument("--quick", action="store_true", help="2 targets, 1 seed, few steps (smoke run)")
    p.add_argument("--tune", action="store_true", help="tune the outlier prior first, then evaluate")
    p.add_argument("--tune-only", action="store_true", help="tune and stop")
    p.add_argument("--steps", type=int, help="override steps")
    p.add_argument("--size", type=int, help="override image size")
    p.add_argument("--seeds", help="override seeds, e.g. 0,1")
    p.add_argument("--methods", help="comma-separated subset of the config's methods")
    p.add_argument("--classes", type=int, help="use N class targets spread over the config's list")
    p.add_argument("--channels", type=int, help="use N channel targets spread over the config's list")
    p.add_argument("--tune-targets", help="override tuning targets (comma-separated)")
    p.add_argument("--tune-warmup", type=int, help="override the fixed warmup of tuning and evaluation")
    p.add_argument("--tune-every", type=int, help="override the fixed re-selection period")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jaxviz

    jaxviz.use_cpu_cores()  # as the CLI: one CPU device per core, unless XLA_FLAGS sets a count
    cfg = load_config(args.config, args)
    date = _dt.date.today().isoformat()
    run_dir = os.path.abspath(args.out or os.path.join(HERE, "results", date + ("-quick" if args.quick else "")))
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "command.txt"), "a", encoding="utf-8") as f:
        f.write(f"{_dt.datetime.now().isoformat(timespec='seconds')}  python -m experiments.compare "
                f"{' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}\n")
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)

    from tqdm import tqdm

    import jaxviz

    def bar_factory(total, desc):
        return tqdm(total=total, desc=desc, unit="img-step", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    t_start = time.perf_counter()
    model = jaxviz.load_model(cfg["model"])
    s = cfg["stats"]
    method_bundle = _stats(model, s["method_layers"], os.path.join(run_dir, "stats", "method"), cfg, args.quiet)
    held_bundle = _stats(model, s["heldout_layers"], os.path.join(run_dir, "stats", "heldout"), cfg, args.quiet)
    ctx = {
        "cfg": cfg, "model": model, "run_dir": run_dir, "moments": _moments(method_bundle),
        "view": method_bundle.view,
        "heldout": {l: (np.asarray(b.mean, np.float64), np.asarray(b.precision, np.float64))
                    for l, b in held_bundle.layers.items()},
        "heldout_models": {n: jaxviz.load_model(n) for n in cfg["heldout_models"]},
    }

    tuning, tuning_info = None, None
    tune_path = os.path.join(run_dir, "tune.json")
    if args.tune or args.tune_only:
        tuning = tune(ctx, bar_factory)
    elif os.path.exists(tune_path):
        with open(tune_path, encoding="utf-8") as f:
            tuning = json.load(f)
    if args.tune_only:
        return 0
    outlier_opts = dict(cfg["outliers"])
    if tuning:
        outlier_opts.update(tuning["chosen"])
        tuning_info = (f"chosen on {len(tuning['targets'])} tuning targets ({tuning['rule']}): "
                       f"{json.dumps(tuning['chosen'])}")
    else:
        tuning_info = f"NOT tuned: config defaults {json.dumps(outlier_opts)}"
    print(f"outlier prior: {tuning_info}", file=sys.stderr)
    cfg["outliers_used"] = outlier_opts
    with open(os.path.join(run_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)

    targets, seeds = cfg["eval_targets"], cfg["seeds"]
    bar = bar_factory(len(cfg["methods"]) * len(targets) * len(seeds) * cfg["steps"], "render")
    records, per_method, costs = {}, {}, {}
    for name, spec in cfg["methods"].items():
        options = outlier_opts if spec.get("tuned") else dict(spec.get("options", {}))
        recs = render_method(ctx, name, spec, options, targets, seeds, bar)
        records[name] = recs
    bar.close()
    for name, recs in tqdm(records.items(), desc="metrics", disable=args.quiet, file=sys.stderr):
        per_method[name] = image_metrics(ctx, recs, targets, seeds)
        calls = {}
        for p in per_method[name]["pairs"]:
            r = recs[p]
            calls[(float(r["call_wall"]), float(r["call_images"]))] = True
        wall = sum(w for w, _ in calls)
        n = sum(int(c) for _, c in calls)
        costs[name] = {"wall_s": wall, "images": n,
                       "image_steps_per_s": jaxviz.metrics.image_steps_per_second(n, cfg["steps"], wall)}
    add_percent(per_method, cfg)

    from jaxviz import data, metrics

    src = data.PhotoSource(cfg["size"], s["reference_images"], s["reference_seed"])
    photos = np.stack([src.sample(i) for i in range(len(src))]).astype(np.float32) / 255.0
    reference = {"d2_heldout": metrics.heldout_naturalness(model, photos, ctx["heldout"])["mean"]}

    with open(os.path.join(run_dir, "per_image.csv"), "w", newline="", encoding="utf-8") as f:
        keys = [k for k in next(iter(per_method.values())) if k not in ("pairs",)]
        w = csv.writer(f)
        w.writerow(["method", "target", "seed"] + keys)
        for name, m in per_method.items():
            for i, (t, sd) in enumerate(m["pairs"]):
                w.writerow([name, t, sd] + [f"{float(m[k][i]):.6g}" for k in keys])
    rows, table = make_tables(run_dir, cfg, per_method, reference, costs, outlier_opts)
    write_summary(run_dir, cfg, rows, tuning_info)
    write_grid(run_dir, cfg, records, model)
    print(table)
    print(f"results in {run_dir} ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
