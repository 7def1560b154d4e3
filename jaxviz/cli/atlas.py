"""`jaxviz atlas`: a layer's channels, each visualized beside its dataset examples (README "Atlas")."""

from __future__ import annotations

import os

from jaxviz.cli._common import add_model_flag, number, whole
from jaxviz.cli.visualize import add_render_flags, recipe_from_flags, render_config
from jaxviz.common.errors import UsageError


def register(sub) -> None:
    from jaxviz.atlases import DEFAULT_PASSES, DEFAULT_SIZE

    p = sub.add_parser("atlas", help="every channel of a layer: its visualization beside the images that drive it",
                       description="Dataset examples by one pass over --data, a visualization of every channel, "
                                   "per-channel measures and a static site in --out (README 'Atlas'). Here "
                                   f"--size defaults to {DEFAULT_SIZE} and --steps to {DEFAULT_PASSES} (the deep-"
                                   "neuron stick's budget); rerunning the same command resumes.")
    add_model_flag(p)
    p.add_argument("--layer", required=True, help="a spatial layer (see `jaxviz layers`), e.g. blocks.12")
    p.add_argument("--channels", default="all", metavar="A-B", help="channels: 0-31, 3,5,9-12 or all (default all)")
    p.add_argument("--data", default="photos", metavar="SPEC",
                   help="photos (the embedded photos' crops), folder:DIR or tfds:NAME[/SPLIT] (default photos)")
    p.add_argument("--data-dir", metavar="DIR", help="where prepared TFDS datasets live (tfds: only)")
    p.add_argument("--max-images", type=whole, default=None, help="read at most N images (photos: default 256)")
    p.add_argument("--out", required=True, metavar="DIR", help="the atlas folder (index.html, atlas.json)")
    p.add_argument("--examples", type=whole, default=8, metavar="K", help="dataset examples per channel (default 8)")
    p.add_argument("--images-per-channel", type=whole, default=1, metavar="N",
                   help="visualizations per channel, optimized together with a diversity term (default 1)")
    p.add_argument("--diversity", type=number, default=None, metavar="W",
                   help="weight of the diversity term with --images-per-channel ≥ 2 (default 100, Lucid's)")
    p.add_argument("--judge", default="efficientnet_lite2", choices=("efficientnet_lite2", "efficientnet_lite1", "none"),
                   help="held-out model of the plausibility measure (default efficientnet_lite2; none: skip)")
    p.add_argument("--post-activation", action="store_true",
                   help="maximize the layer's own channels, not the point before their activation (head.bn for "
                        "head; README 'Pre-activation targets'): ReLU6 channels dead at the start stay dead")
    p.add_argument("--force", action="store_true", help="replace another run's atlas in --out")
    add_render_flags(p)
    p.set_defaults(run=run, size=DEFAULT_SIZE, steps=DEFAULT_PASSES)


def run(args) -> int:
    import jaxviz
    from jaxviz.atlases import DIVERSITY_WEIGHT
    from jaxviz.models import load_model

    render_config(args)  # what can be checked before the model loads
    if args.diversity is not None and not (args.diversity == args.diversity and args.diversity >= 0):
        raise UsageError(f"--diversity must be a number ≥ 0, got {args.diversity}")
    if args.stats is not None and not os.path.isdir(args.stats):
        raise UsageError(f"--stats {args.stats}: no such folder (make statistics with `jaxviz stats`)")
    model = load_model(args.model)
    recipe = recipe_from_flags(args, model)
    config = render_config(args, model, recipe)
    result = jaxviz.atlas(model, args.layer, args.channels, data=args.data, out=args.out, k=args.examples,
                          images_per_channel=args.images_per_channel, recipe=recipe, config=config,
                          max_images=args.max_images, data_dir=args.data_dir, seed=args.seed,
                          judge=None if args.judge == "none" else args.judge,
                          diversity=DIVERSITY_WEIGHT if args.diversity is None else args.diversity,
                          checkpoint_dir=args.checkpoint_dir, force=args.force,
                          pre_activation=not args.post_activation, quiet=args.quiet)
    dead = [r["channel"] for r in result.records if not r["alive"]]
    print(f"{len(result.records)} channels of {result.meta['layer']}; dead: "
          f"{', '.join(map(str, dead)) if dead else 'none'}")
    print("wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    print(os.path.abspath(result.index))
    return 0
