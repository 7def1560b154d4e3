"""`jaxviz demo`: the main job on embedded defaults (see :func:`jaxviz.pipeline.demo`)."""

from __future__ import annotations

from jaxviz.cli._common import whole
from jaxviz.pipeline import DEMO_TARGETS


def register(sub) -> None:
    p = sub.add_parser("demo", help="the method vs DeepDream on a few classes, on embedded defaults")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=whole, default=128, help="optimization steps (default 128)")
    p.add_argument("--size", type=whole, default=128, help="image side in px (default 128)")
    p.add_argument("--target", action="append", metavar="T", help=f"targets (default {' '.join(DEMO_TARGETS)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    from jaxviz.cli.visualize import check_targets
    from jaxviz.models import load_model
    from jaxviz.pipeline import check_demo, demo

    check_demo(steps=args.steps, size=args.size, targets=args.target)
    if args.target:
        check_targets(args.target)
    model = load_model(args.model)
    page, runs = demo(model, args.out, steps=args.steps, size=args.size, targets=args.target, quiet=args.quiet)
    for a, b in zip(runs["none"]["targets"], runs["outliers"]["targets"]):
        print(f"{a['target']:<12} {a['label'][:18]:<18} activation {a['activation']:6.2f} → {b['activation']:6.2f}   "
              f"D²/dim used {a['d2_used']:6.2f} → {b['d2_used']:6.2f}   held-out {a['d2_heldout']:6.2f} → "
              f"{b['d2_heldout']:6.2f}")
    print(page)
    return 0
