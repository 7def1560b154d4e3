"""`jaxviz visualize`: synthesize one image per target."""

from __future__ import annotations

import os
import re
import sys

from jaxviz.cli._common import add_model_flag
from jaxviz.errors import UsageError

PRIORS = ("none", "outliers", "mahalanobis", "bn")


def register(sub) -> None:
    p = sub.add_parser("visualize", help="synthesize images that maximize targets")
    add_model_flag(p)
    add_render_flags(p)
    p.add_argument("--target", action="append", required=True, metavar="T",
                   help="LAYER:CHANNEL (e.g. logits:285, blocks.10:7); LAYER:all or LAYER:A-B for many; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.set_defaults(run=run)


def add_render_flags(p) -> None:
    """Flags shared by `visualize` and `demo`."""
    p.add_argument("--param", default="fourier", choices=("pixel", "fourier", "maco"),
                   help="image parameterization (default fourier)")
    p.add_argument("--prior", default="none", choices=PRIORS, help="prior against unnatural images (default none)")
    p.add_argument("--stats", metavar="DIR", help="statistics from `jaxviz stats` (for --prior outliers/mahalanobis; "
                   "default: the shipped ImageNet statistics of the model, layers blocks.2,blocks.4)")
    p.add_argument("--stats-layers", metavar="L1,L2", help="use only these layers of --stats (default all)")
    p.add_argument("--weight", type=float, default=None, help="prior weight λ (default: the prior's)")
    p.add_argument("--top-k", type=int, default=None, help="outliers: neurons suppressed per layer (default 8)")
    p.add_argument("--every", type=int, default=None, help="outliers: steps between re-selections (default 16)")
    p.add_argument("--warmup", type=int, default=None, help="outliers: DeepDream steps before suppression (default 32)")
    p.add_argument("--quantile", type=float, default=None, help="outliers: χ² quantile of outlier positions (0.99)")
    p.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    p.add_argument("--size", type=int, default=None, help="image side in px (default: the model's resolution)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--transforms", default="default", choices=("default", "none"),
                   help="robustness transforms (default: pad, jitter, scale, rotate)")
    p.add_argument("--batch-size", type=int, default=8, help="targets optimized together (default 8)")
    p.add_argument("--checkpoint-dir", metavar="D", help="checkpoint here; rerunning the same command resumes")
    p.add_argument("--checkpoint-every", type=int, default=64, help="steps between checkpoints (default 64)")
    p.add_argument("--redirect-steps", type=int, default=0,
                   help="first N steps use redirected ReLU gradients, for targets that start dead (default 0)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="model compute precision; bfloat16 on GPU/TPU only (default float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def expand_targets(specs: list[str], layers) -> list[str]:
    """Expands ``LAYER:all`` and ``LAYER:A-B`` into single ``LAYER:CHANNEL`` specs."""
    out = []
    for spec in specs:
        layer, _, channels = spec.rpartition(":")
        match = re.fullmatch(r"(\d+)-(\d+)", channels)
        if layer in layers and (channels == "all" or match):
            n = layers[layer][-1]
            lo, hi = (0, n - 1) if channels == "all" else (int(match[1]), int(match[2]))
            if not 0 <= lo <= hi < n:
                raise UsageError(f"channel range {channels} is outside 0-{n - 1} of layer '{layer}'")
            out.extend(f"{layer}:{c}" for c in range(lo, hi + 1))
        else:
            out.append(spec)
    return out


def target_label(model, spec: str) -> str:
    """A human caption: the class name for ``logits:N``."""
    layer, _, channel = spec.rpartition(":")
    if layer == "logits" and model.class_names and channel.isdigit() and int(channel) < len(model.class_names):
        return model.class_names[int(channel)]
    return ""


def make_progress(total_desc: str, quiet: bool):
    """A tqdm bar on stderr (steps/s, current objective); returns (callback, close)."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=total_desc, unit="step", file=sys.stderr, dynamic_ncols=True, leave=False)

    def callback(done, total, value):
        bar.total = total
        bar.n = done
        bar.set_postfix_str(f"objective {value:.3g}", refresh=False)
        bar.refresh()

    return callback, bar.close


def render_and_report(model, specs: list[str], args, out: str, *, title: str):
    """Parses targets, renders them, writes the report; returns (metrics, result)."""
    import numpy as np

    from jaxviz import objectives, render
    from jaxviz.checkpoint import check_writable_dir
    from jaxviz import priors
    from jaxviz.report import write_run

    out = check_writable_dir(out)
    size = args.size or model.resolution or 224
    if args.steps < 1:
        raise UsageError("--steps must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    targets = [objectives.parse_target(spec, model.layers) for spec in specs]
    layers = [l for l in (getattr(args, "stats_layers", None) or "").split(",") if l] or None
    options = {name: getattr(args, flag, None) for name, flag in
               (("weight", "weight"), ("k", "top_k"), ("every", "every"), ("warmup", "warmup"), ("quantile", "quantile"))}
    options = {k: v for k, v in options.items() if v is not None}
    if args.prior != "outliers" and set(options) - {"weight"}:
        raise UsageError("--top-k, --every, --warmup and --quantile only apply to --prior outliers")
    if "k" in options and options["k"] < 1 or "every" in options and options["every"] < 1:
        raise UsageError("--top-k and --every must be at least 1")
    if "quantile" in options and not 0 < options["quantile"] < 1:
        raise UsageError("--quantile must be between 0 and 1")
    if args.prior == "none" and options:
        raise UsageError("--weight needs a --prior other than none")
    prior = priors.build(args.prior, model=model, stats_dir=args.stats, layers=layers, **options)
    config = render.RenderConfig(size=size, steps=args.steps, param=args.param, transforms=args.transforms,
                                 learning_rate=args.lr, batch_size=args.batch_size, seed=args.seed,
                                 checkpoint_every=args.checkpoint_every,
                                 redirect_steps=getattr(args, "redirect_steps", 0),
                                 precision=getattr(args, "precision", "float32"))
    callback, close = make_progress(title, args.quiet)
    try:
        result = render.render(model, targets, config=config, prior=prior, checkpoint_dir=args.checkpoint_dir,
                               progress=callback)
    finally:
        close()
    records = []
    for i in range(len(specs)):
        record = {"activation": float(result.activation[i]), "history": np.round(result.history[i], 5).tolist()}
        if args.prior in ("outliers", "mahalanobis"):
            record["d2_history"] = np.round(result.trace[i], 4).tolist()  # mean D² at the stats layers
        elif args.prior == "bn":
            record["bn_history"] = np.round(result.trace[i], 4).tolist()
        record.update(prior_record(result.prior, i))
        records.append(record)
    run_config = {"model": model.name, "prior": repr(prior), "stats": args.stats, **config.numbers()}
    heat = result.prior.get("outlier_map")
    metrics = write_run(out, targets=specs, labels=[target_label(model, s) for s in specs], images=result.images,
                        records=records, config=run_config, heatmaps=heat, title=title)
    return metrics, result


def prior_record(prior_info: dict, i: int) -> dict:
    """metrics.json fields from a prior's per-target diagnostics."""
    from jaxviz.priors import describe

    return describe(prior_info, i)


def run(args) -> int:
    from jaxviz.models import load_model

    model = load_model(args.model)
    specs = expand_targets(args.target, model.layers)
    metrics, _ = render_and_report(model, specs, args, args.out, title=f"jaxviz {model.name}")
    for entry in metrics["targets"]:
        print(f"{entry['target']:<16} {entry['label'][:24]:<24} activation {entry['activation']:.3f}")
    print(os.path.join(os.path.abspath(args.out), "index.html"))
    return 0
