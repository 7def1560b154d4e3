"""`jaxviz visualize`: synthesize one image per target."""

from __future__ import annotations

import os
import re

from jaxviz.cli._common import add_model_flag, number, whole
from jaxviz.errors import UsageError

PRIORS = ("none", "outliers", "mahalanobis", "bn", "bn-batch", "quantile", "gaussian")  # the registry's names (tests/test_cli.py checks they agree)


def register(sub) -> None:
    p = sub.add_parser("visualize", help="synthesize images that maximize targets")
    add_model_flag(p)
    add_render_flags(p)
    p.add_argument("--target", action="append", required=True, metavar="T",
                   help="LAYER:CHANNEL (e.g. logits:285, blocks.10:7); LAYER:all or LAYER:A-B for many; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--init", metavar="IMAGE", help="start every target from this photo (with --steps 0: the photo)")
    p.add_argument("--init-weight", type=float, default=None, metavar="W",
                   help="with --init: subtract W · mean((image − photo)²), a pull toward the photo (default none)")
    p.set_defaults(run=run)


def add_render_flags(p) -> None:
    """Flags shared by `visualize` and `demo`."""
    p.add_argument("--param", default="fourier", choices=("pixel", "fourier", "maco"),
                   help="image parameterization (default fourier)")
    p.add_argument("--prior", default="none", choices=PRIORS, help="prior against unnatural images (default none)")
    p.add_argument("--stats", metavar="DIR", help="statistics from `jaxviz stats` (for --prior outliers/mahalanobis/gaussian/quantile; "
                   "default: the shipped ImageNet statistics of the model, layers blocks.2,blocks.4)")
    p.add_argument("--stats-layers", metavar="L1,L2",
                   help="use only these layers of the statistics (default: all of --stats; blocks.2,blocks.4 of the "
                        "shipped ones)")
    p.add_argument("--weight", type=number, default=None, help="prior weight λ (default: the prior's)")
    p.add_argument("--top-k", type=whole, default=None, help="outliers: neurons suppressed per layer (default 8)")
    p.add_argument("--every", type=whole, default=None, help="outliers: steps between re-selections (default 16)")
    p.add_argument("--warmup", type=whole, default=None, help="outliers: DeepDream steps before suppression (default 32)")
    p.add_argument("--quantile", type=number, default=None, help="outliers: χ² quantile of outlier positions (0.99)")
    p.add_argument("--steps", type=whole, default=256, help="optimization steps (default 256)")
    p.add_argument("--size", type=whole, default=None, help="image side in px (default: the model's resolution)")
    p.add_argument("--seed", type=whole, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=number, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--transforms", default="default", choices=("default", "none"),
                   help="robustness transforms (default: pad, jitter, scale, rotate)")
    p.add_argument("--batch-size", type=whole, default=8, help="targets optimized together (default 8)")
    p.add_argument("--checkpoint-dir", metavar="D", help="checkpoint here; rerunning the same command resumes")
    p.add_argument("--checkpoint-every", type=whole, default=64, help="steps between checkpoints (default 64)")
    p.add_argument("--redirect-steps", type=whole, default=0,
                   help="first N steps use redirected ReLU gradients, for targets that start dead (default 0)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="model compute precision; bfloat16 on GPU/TPU only (default float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def render_config(args, model=None):
    """The :class:`jaxviz.render.RenderConfig` of the render flags (checked; ``model`` gives the default size)."""
    from jaxviz.render import MAX_SIZE, RenderConfig

    if args.size is not None and not 1 <= args.size <= MAX_SIZE:
        raise UsageError(f"--size must be an integer between 1 and {MAX_SIZE}, got {args.size}")
    default = (getattr(model, "resolution", None) or 224) if model is not None else 224
    config = RenderConfig(size=args.size if args.size is not None else default, steps=args.steps,
                          param=args.param, transforms=args.transforms, learning_rate=args.lr,
                          batch_size=args.batch_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
                          redirect_steps=args.redirect_steps, compute_dtype=args.precision)
    config.check()  # its messages name RenderConfig fields; the CLI shows them as flags
    return config


def check_targets(specs) -> None:
    """Checks the syntax of target strings before the model is loaded (layers are checked later)."""
    from jaxviz.objectives import split_target

    for spec in specs:
        layer, _, channels = spec.rpartition(":")
        if layer and (channels == "all" or re.fullmatch(r"[0-9]{1,18}-[0-9]{1,18}", channels, flags=re.ASCII)):
            continue
        split_target(spec)


def check_prior_flags(args) -> dict:
    """The prior options the flags give, after the checks that need no model."""
    options = {name: getattr(args, flag) for name, flag in
               (("weight", "weight"), ("k", "top_k"), ("every", "every"), ("warmup", "warmup"),
                ("quantile", "quantile")) if getattr(args, flag) is not None}
    if args.prior != "outliers" and set(options) - {"weight"}:
        raise UsageError("--top-k, --every, --warmup and --quantile only apply to --prior outliers")
    if args.prior == "none" and options:
        raise UsageError("--weight needs a --prior other than none")
    return options


def prior_from_flags(args, model):
    """The prior the flags ask for (``--prior`` with its options and ``--stats``)."""
    from jaxviz.pipeline import build_prior

    options = check_prior_flags(args)
    layers = [l for l in (args.stats_layers or "").split(",") if l] or None
    return build_prior(model, args.prior, stats=args.stats, layers=layers, **options)


def init_from_flags(args, size: int) -> dict:
    """``render`` options of ``--init`` / ``--init-weight``: ``init_images`` and the pull ``image_penalty``."""
    import math

    if args.init is None:
        if args.init_weight is not None:
            raise UsageError("--init-weight needs --init IMAGE")
        return {}
    from jaxviz.images import read_image
    from jaxviz.render import seed_images
    from jaxviz.step import PullToward

    photo = seed_images(read_image(args.init)[0], 1, size)[0]
    options = {"init_images": photo}
    if args.init_weight is not None:
        if not (math.isfinite(args.init_weight) and args.init_weight >= 0):
            raise UsageError(f"--init-weight must be a finite number ≥ 0, got {args.init_weight}")
        options["image_penalty"] = PullToward(photo, float(args.init_weight))
    return options


def run(args) -> int:
    from jaxviz.models import load_model
    from jaxviz.pipeline import visualize

    render_config(args)  # everything checkable without the model fails before it loads
    check_targets(args.target)
    check_prior_flags(args)
    model = load_model(args.model)
    config = render_config(args, model)
    metrics, _ = visualize(model, args.target, args.out, config=config,
                           prior=prior_from_flags(args, model), stats=args.stats, checkpoint_dir=args.checkpoint_dir,
                           quiet=args.quiet, title=f"jaxviz {model.name}", **init_from_flags(args, config.size))
    for entry in metrics["targets"]:
        print(f"{entry['target']:<16} {entry['label'][:24]:<24} activation {entry['activation']:.3f}")
    print(os.path.join(os.path.abspath(args.out), "index.html"))
    return 0
