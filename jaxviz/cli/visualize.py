"""`jaxviz visualize`: synthesize one image per target."""

from __future__ import annotations

import os
import re
import sys

from jaxviz.cli._common import add_model_flag, number, whole
from jaxviz.common.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("visualize", help="synthesize images that maximize targets")
    add_model_flag(p)
    add_render_flags(p)
    p.add_argument("--target", action="append", required=True, metavar="T",
                   help="LAYER:CHANNEL (e.g. logits:285, blocks.10:7); LAYER:all or LAYER:A-B for many; LAYER alone "
                        "for the whole layer (DeepDream); repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that holds files jaxviz did not write (they are never touched)")
    p.add_argument("--init", metavar="IMAGE", help="start every target from this photo (with --steps 0: the photo)")
    p.add_argument("--init-weight", type=float, default=None, metavar="W",
                   help="with --init: subtract W · mean((image − photo)²), a pull toward the photo (default none)")
    p.set_defaults(run=run)


# the Python names of the settings the render flags edit, as the flags (errors name the flag the user typed)
FLAGS = {"parameterization": "--param", "transform": "--transforms", "prior": "--prior", "learning_rate": "--lr",
         "weight": "--weight", "k": "--top-k", "every": "--every", "warmup": "--warmup", "quantile": "--quantile",
         "stats": "--stats", "layers": "--stats-layers"}


def add_render_flags(p) -> None:
    """The render flags of `visualize`: a recipe, and flags that edit its parts."""
    from jaxviz import registry
    from jaxviz.recipes import DEFAULT

    p.add_argument("--recipe", default=DEFAULT, choices=registry.names("recipe"),
                   help=f"the full settings to start from (default {DEFAULT}, the best measured: README "
                        "'Experiments'); the flags below edit its parts")
    p.add_argument("--param", default=None, choices=registry.names("parameterization"),
                   help="image parameterization (default: the recipe's)")
    p.add_argument("--prior", default=None, choices=registry.names("prior"),
                   help="prior against unnatural images (default: the recipe's; none for maco)")
    p.add_argument("--stats", metavar="DIR", help="statistics from `jaxviz stats` for the recipe's prior (default: the "
                   "shipped ImageNet statistics of the model, layers blocks.2,blocks.4)")
    p.add_argument("--stats-layers", metavar="L1,L2",
                   help="use only these layers of the statistics (default: all of --stats; blocks.2,blocks.4 of the "
                        "shipped ones)")
    p.add_argument("--weight", type=number, default=None, help="prior weight λ (default: the recipe's prior's)")
    p.add_argument("--top-k", type=whole, default=None, help="outliers: neurons suppressed per layer (default 8)")
    p.add_argument("--every", type=whole, default=None, help="outliers: steps between re-selections (default 16)")
    p.add_argument("--warmup", type=whole, default=None, help="steps before the prior acts (outliers: default 32)")
    p.add_argument("--quantile", type=number, default=None, help="outliers: χ² quantile of outlier positions (0.99)")
    p.add_argument("--steps", type=whole, default=None,
                   help="forward-backward passes per image (default: the recipe's, 512 for maco)")
    p.add_argument("--size", type=whole, default=None,
                   help="side in px of what the model sees (default: the model's resolution)")
    p.add_argument("--seed", type=whole, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=number, default=None, help="learning rate of the recipe's optimizer (default: the recipe's)")
    p.add_argument("--transforms", default=None, choices=registry.names("transform"),
                   help="robustness transforms (default: the recipe's)")
    p.add_argument("--batch-size", type=whole, default=8, help="targets optimized together (default 8)")
    p.add_argument("--checkpoint-dir", metavar="D", help="checkpoint here; rerunning the same command resumes")
    p.add_argument("--checkpoint-every", type=whole, default=64, help="steps between checkpoints (default 64)")
    p.add_argument("--redirect-steps", type=whole, default=0,
                   help="first N steps use redirected ReLU gradients, for targets that start dead (default 0)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="model compute precision; bfloat16 on GPU/TPU only (default float32)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def recipe_from_flags(args, model=None):
    """The recipe of ``--recipe`` at ``--size`` (``model`` gives the default size), edited by the flags."""
    from jaxviz import registry
    from jaxviz.recipes.config import MAX_SIZE

    if args.size is not None and not 1 <= args.size <= MAX_SIZE:
        raise UsageError(f"--size must be an integer between 1 and {MAX_SIZE}, got {args.size}")
    default = (getattr(model, "resolution", None) or 224) if model is not None else 224
    size = args.size if args.size is not None else default
    recipe = registry.build("recipe", args.recipe, size=size)
    layers = [l for l in (args.stats_layers or "").split(",") if l] or None
    return registry.edit_recipe(recipe, parameterization=args.param, transform=args.transforms, prior=args.prior,
                                learning_rate=args.lr, size=size, names=FLAGS, weight=args.weight, k=args.top_k,
                                every=args.every, warmup=args.warmup, quantile=args.quantile, stats=args.stats,
                                layers=layers)


def render_config(args, model=None, recipe=None):
    """The :class:`jaxviz.render.RenderConfig` of the render flags (checked; ``model`` gives the default size)."""
    recipe = recipe or recipe_from_flags(args, model)
    config = recipe.config(steps=args.steps if args.steps is not None else recipe.passes,
                           batch_size=args.batch_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
                           redirect_steps=args.redirect_steps, compute_dtype=args.precision)
    config.check()  # its messages name RenderConfig fields; the CLI shows them as flags
    return config


def stats_source(recipe, model) -> str | None:
    """Where the recipe's prior reads its statistics (recorded in metrics.json): ``--stats``, the shipped
    folder for a prior that takes statistics, else ``None``."""
    from jaxviz import priors
    from jaxviz.stats.store import shipped_stats_dir

    spec = recipe.prior
    if not isinstance(spec, priors.PriorSpec) or "stats" not in spec.accepts():
        return None
    return dict(spec.options).get("stats") or shipped_stats_dir(model.name, "pixel")


def check_targets(specs, *, whole_layers: bool = True) -> None:
    """Checks the syntax of target strings before the model is loaded (layers are checked later);
    ``whole_layers``: a bare ``LAYER`` (DeepDream on the whole layer) is allowed."""
    from jaxviz.objectives.targets import split_target

    for spec in specs:
        layer, _, channels = spec.rpartition(":")
        if layer and (channels == "all" or re.fullmatch(r"[0-9]{1,18}-[0-9]{1,18}", channels, flags=re.ASCII)):
            continue
        if whole_layers and ":" not in spec and re.fullmatch(r"[A-Za-z0-9_.\-/]{1,200}", spec.strip(), flags=re.ASCII):
            continue  # a whole layer (DeepDream); the model checks the name
        split_target(spec)


def init_from_flags(args, size: int) -> dict:
    """``render`` options of ``--init`` / ``--init-weight``: ``init_images`` and the pull ``image_penalty``."""
    import math

    if args.init is None:
        if args.init_weight is not None:
            raise UsageError("--init-weight needs --init IMAGE")
        return {}
    from jaxviz.common.images import read_image
    from jaxviz.recipes.parts import PullToward
    from jaxviz.render.loop import seed_images

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
    if args.stats is not None and not os.path.isdir(args.stats):
        raise UsageError(f"--stats {args.stats}: no such folder (make statistics with `jaxviz stats`)")
    model = load_model(args.model)
    recipe = recipe_from_flags(args, model)
    config = render_config(args, model, recipe)
    metrics, _ = visualize(model, args.target, args.out, config=config, recipe=recipe,
                           stats=stats_source(recipe, model), checkpoint_dir=args.checkpoint_dir,
                           quiet=args.quiet, title=f"jaxviz {model.name}", force=args.force,
                           **init_from_flags(args, config.size))
    for entry in metrics["targets"]:
        print(f"{entry['target']:<16} {entry['label'][:24]:<24} activation {entry['activation']:.3f}")
        layer, _, channel = entry["target"].rpartition(":")
        if entry["activation"] == 0.0 and channel.isdigit() and model.pre_activation(layer) != layer:
            print(f"note: {entry['target']} stayed at 0 (dead after the activation from the start); "
                  f"--target {model.pre_activation(layer)}:{channel} maximizes it before the activation "
                  f"(README \"Pre-activation targets\")", file=sys.stderr)
    print(os.path.join(os.path.abspath(args.out), "index.html"))
    return 0
