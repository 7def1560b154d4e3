"""`jaxviz demo`: MaCo next to MaCo with the best measured prior on a few classes (:func:`jaxviz.pipeline.demo`)."""

from __future__ import annotations

from jaxviz.cli._common import whole
from jaxviz.pipeline import DEMO_BASE, DEMO_JUDGE, DEMO_PASSES, DEMO_PRIOR, DEMO_SIZE, DEMO_TARGETS


def register(sub) -> None:
    p = sub.add_parser("demo", help="MaCo's recipe vs MaCo with quantile matching on a few classes, judged by a held-out model")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=whole, default=DEMO_PASSES,
                   help=f"forward-backward passes per image (default {DEMO_PASSES})")
    p.add_argument("--size", type=whole, default=DEMO_SIZE,
                   help=f"side in px of what the model sees (default {DEMO_SIZE})")
    p.add_argument("--target", action="append", metavar="T", help=f"targets (default {' '.join(DEMO_TARGETS)})")
    p.add_argument("--no-judge", action="store_true", help=f"skip the held-out verdict ({DEMO_JUDGE})")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that holds files jaxviz did not write (they are never touched)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _verdict(entry) -> str:
    judge = entry.get("judge") or {}
    if "top5_hit" not in judge:
        return ""
    rank = f" rank {judge['plausibility_rank']:.0f}" if "plausibility_rank" in judge else ""
    return f"{'in top 5' if judge['top5_hit'] else 'not top 5'} p {judge['p_target']:.2f}{rank}"


def run(args) -> int:
    from jaxviz.cli.visualize import check_targets
    from jaxviz.models import load_model
    from jaxviz.pipeline import check_demo, demo

    check_demo(steps=args.steps, size=args.size, targets=args.target)
    if args.target:
        check_targets(args.target, whole_layers=False)  # the demo compares class renders
    model = load_model(args.model)
    page, runs = demo(model, args.out, steps=args.steps, size=args.size, targets=args.target, quiet=args.quiet,
                      judge=None if args.no_judge else DEMO_JUDGE, force=args.force)
    if not args.no_judge:
        print(f"{'':31} {'MaCo recipe':<36} with quantile matching   (held-out {DEMO_JUDGE}: target in top 5, "
              "p(target), plausibility rank)")
    for a, b in zip(runs[DEMO_BASE]["targets"], runs[DEMO_PRIOR]["targets"]):
        print(f"{a['target']:<12} {a['label'][:18]:<18} activation {a['activation']:6.2f} {_verdict(a):<25}"
              f" → {b['activation']:6.2f} {_verdict(b)}")
    for name, metrics in runs.items():
        hits = [e["judge"]["top5_hit"] for e in metrics["targets"] if "top5_hit" in e.get("judge", {})]
        if hits:
            print(f"{name}: {sum(hits)}/{len(hits)} targets in {DEMO_JUDGE}'s top 5")
    print(page)
    return 0
