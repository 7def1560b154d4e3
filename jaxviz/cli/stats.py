"""`jaxviz stats`: mean and covariance of layer features over natural images."""

from __future__ import annotations

import os
import sys

from jaxviz.cli._common import add_model_flag, whole


def register(sub) -> None:
    p = sub.add_parser("stats", help="feature statistics (mean, covariance, precision) over images")
    add_model_flag(p)
    p.add_argument("--layers", required=True, metavar="L1,L2", help="comma-separated layers (see `jaxviz layers`)")
    p.add_argument("--data", default="photos", metavar="SPEC",
                   help="photos (embedded, default), folder:PATH or tfds:NAME[/SPLIT]")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--view", default="pixel", metavar="V",
                   help="pixel (default), pooled or patchK (K odd, e.g. patch3)")
    p.add_argument("--max-images", type=whole, default=None, metavar="N", help="use at most N images")
    p.add_argument("--batch-size", type=whole, default=32, metavar="B", help="images per step and process (default 32)")
    p.add_argument("--size", type=whole, default=None, metavar="PX", help="image side (default: the model's resolution)")
    p.add_argument("--data-dir", default=None, metavar="D", help="TFDS data directory")
    p.add_argument("--seed", type=whole, default=0, help="data order / sampling seed (default 0)")
    p.add_argument("--shrinkage", default="oas", metavar="S", help="oas (default), ledoit_wolf or a number in [0, 1]")
    p.add_argument("--checkpoint-every", type=whole, default=50, metavar="N",
                   help="steps between checkpoints (default 50)")
    p.add_argument("--checkpoint-dir", default=None, metavar="D",
                   help="where to checkpoint (default DIR/.checkpoint, removed when done)")
    p.add_argument("--force", action="store_true",
                   help="recompute from scratch (ignore statistics and checkpoints in DIR)")
    p.add_argument("--compact", action="store_true",
                   help="store float32 moments in one moments.npz (the format of the shipped statistics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def command_line(args) -> str:
    """The ``jaxviz stats`` command that reproduces ``args`` (recorded in ``stats.json``)."""
    import shlex

    parts = ["jaxviz", "stats", "--model", args.model, "--layers", args.layers, "--data", args.data,
             "--view", args.view, "--out", args.out]
    for flag, value in (("--max-images", args.max_images), ("--size", args.size), ("--data-dir", args.data_dir)):
        if value is not None:
            parts += [flag, str(value)]
    parts += ["--seed", str(args.seed), "--shrinkage", str(args.shrinkage), "--batch-size", str(args.batch_size)]
    return shlex.join(parts + (["--compact"] if args.compact else []))


def run(args) -> int:
    from jaxviz import stats
    from jaxviz.common.errors import UsageError
    from jaxviz.common.files import check_writable_dir
    from jaxviz.models import load_model
    from jaxviz.stats.collect import check_pass_arguments
    from jaxviz.stats.to_folder import collect_to_dir
    from jaxviz.stats.views import parse_view

    layers = [l.strip() for l in args.layers.split(",") if l.strip()]
    if not layers:
        raise UsageError("--layers needs at least one layer name")
    view = parse_view(args.view)
    shrinkage = stats.check_shrinkage(args.shrinkage)
    check_pass_arguments(batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, size=args.size,
                         max_images=args.max_images, seed=args.seed)
    out = check_writable_dir(args.out)
    model = load_model(args.model)
    model.check_layers(layers)
    bundle, computed = collect_to_dir(
        model, layers, args.data, out, view=view, size=args.size, batch_size=args.batch_size,
        data_dir=args.data_dir, max_images=args.max_images, seed=args.seed, shrinkage=shrinkage,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, force=args.force,
        quiet=args.quiet, compact=args.compact, metadata={"command": command_line(args)})
    meta = bundle.metadata
    note = "" if computed else " (up to date; --force recomputes)"
    print(f"{model.name}, view {bundle.view}, {meta.get('images')} images of {meta.get('data_description')}{note}")
    if meta.get("skipped") or meta.get("converted"):
        print(f"  files skipped (unreadable): {meta.get('skipped', 0)}, converted to RGB: {meta.get('converted', 0)}")
    width = max(map(len, bundle.layers))
    for layer, s in bundle.layers.items():
        print(f"  {layer:<{width}}  samples {int(s.count):>10d}  dim {s.dim:>5d}  "
              f"condition {s.condition:9.3g}  shrinkage {s.shrinkage:.4f}")
    print(os.path.abspath(out), file=sys.stdout)
    return 0
