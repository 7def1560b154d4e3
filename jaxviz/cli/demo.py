"""`jaxviz demo`: the main job on embedded defaults.

Statistics of shallow layers over the embedded photos (cached), then a few ImageNet classes
rendered with plain activation maximization (``--prior none``) and with the method
(``--prior outliers``), side by side in one gallery.
"""

from __future__ import annotations

import argparse
import os
import sys

DEMO_TARGETS = ("logits:207", "logits:281", "logits:947", "logits:980")  # retriever, tabby, mushroom, volcano
DEMO_STATS_LAYERS = ("blocks.2", "blocks.3", "blocks.4", "blocks.5")
METHOD_LAYERS = ("blocks.2", "blocks.4")  # the method sees these; blocks.3 and blocks.5 are held out


def register(sub) -> None:
    p = sub.add_parser("demo", help="the method vs DeepDream on a few classes, on embedded defaults")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--steps", type=int, default=128, help="optimization steps (default 128)")
    p.add_argument("--size", type=int, default=128, help="image side in px (default 128)")
    p.add_argument("--target", action="append", metavar="T", help=f"targets (default {' '.join(DEMO_TARGETS)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _stats_dir(model_name: str) -> str:
    from jaxviz.models import _cache_dir

    return os.path.join(_cache_dir(), "stats", f"{model_name}-photos-{'+'.join(DEMO_STATS_LAYERS)}")


def _add_naturalness(model, stats_dir, runs, out) -> None:
    """Mean D²/dim of every image at the method's layers and at held-out layers (both runs)."""
    import json

    import numpy as np

    from jaxviz.collect import load_stats
    from jaxviz.metrics import heldout_naturalness

    bundle = load_stats(stats_dir, model=model)
    moments = {l: (np.asarray(s.mean), np.asarray(s.precision)) for l, s in bundle.layers.items()}
    for name, metrics in runs.items():
        images = np.load(os.path.join(out, name, "images.npy"))
        d2 = heldout_naturalness(model, images, moments)
        for i, entry in enumerate(metrics["targets"]):
            entry["d2_used"] = float(np.mean([d2[l][i] for l in METHOD_LAYERS]))
            entry["d2_heldout"] = float(np.mean([d2[l][i] for l in moments if l not in METHOD_LAYERS]))
        with open(os.path.join(out, name, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1, default=str)


def run(args) -> int:
    from jaxviz.checkpoint import check_writable_dir
    from jaxviz.cli.visualize import render_and_report
    from jaxviz.collect import collect_to_dir
    from jaxviz.models import load_model
    from jaxviz.report import write_comparison

    out = check_writable_dir(args.out)
    model = load_model(args.model)
    stats_dir = _stats_dir(model.name)
    print(f"statistics of {', '.join(DEMO_STATS_LAYERS)} over the embedded photos → {stats_dir}", file=sys.stderr)
    collect_to_dir(model, list(DEMO_STATS_LAYERS), "photos", stats_dir, quiet=args.quiet)
    specs = args.target or list(DEMO_TARGETS)
    runs = {}
    for prior in ("none", "outliers"):
        run_args = argparse.Namespace(
            param="fourier", prior=prior, stats=stats_dir, steps=args.steps, size=args.size, seed=0, lr=0.05,
            transforms="default", batch_size=len(specs), checkpoint_dir=None, checkpoint_every=64, quiet=args.quiet,
            stats_layers=",".join(METHOD_LAYERS), weight=None)
        runs[prior], _ = render_and_report(model, specs, run_args, os.path.join(out, prior),
                                           title=f"jaxviz demo, prior {prior}")
    _add_naturalness(model, stats_dir, runs, out)
    page = write_comparison(out, runs, title=f"jaxviz demo: DeepDream (none) vs outlier suppression, {model.name}")
    for i, spec in enumerate(specs):
        a, b = runs["none"]["targets"][i], runs["outliers"]["targets"][i]
        print(f"{spec:<12} {a['label'][:18]:<18} activation {a['activation']:6.2f} → {b['activation']:6.2f}   "
              f"D²/dim used {a['d2_used']:6.2f} → {b['d2_used']:6.2f}   held-out {a['d2_heldout']:6.2f} → "
              f"{b['d2_heldout']:6.2f}")
    print(page)
    return 0
