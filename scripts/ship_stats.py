"""Recomputes the statistics that ship with jaxviz (``jaxviz/assets/stats/<model>/<view>/``).

One ``jaxviz stats --compact`` command per model and view, over an image folder or a prepared
TFDS split, for these layers:

- every model: ``pixel`` view of every block output (``blocks.0`` ... last block);
- efficientnet_lite0 also: ``patch3`` of blocks.2, 4, 5, 8 and ``pooled`` of blocks.5 ... blocks.15;
- efficientnet_lite0 also: per-channel quantiles (``quantiles.json`` in its ``pixel`` folder) of
  ``jaxviz.priors.quantile_match.QUANTILE_LAYERS`` (``--views quantiles`` makes only these).

Each ``stats.json`` records the exact ``jaxviz stats`` command that made it. Usage (README "The method")::

    python scripts/ship_stats.py --data folder:PATH/imagenet-sample
    python scripts/ship_stats.py --data tfds:imagenet2012/validation --data-dir ~/tensorflow_datasets
    python scripts/ship_stats.py --data folder:PATH/imagenet-sample --models efficientnet_lite0 --views quantiles
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Run from a checkout without installing: this file's repository comes first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
EXTRA_VIEWS = {
    "efficientnet_lite0": {
        "patch3": ("blocks.2", "blocks.4", "blocks.5", "blocks.8"),
        "pooled": tuple(f"blocks.{i}" for i in range(5, 16)),
    },
}
QUANTILES = ("efficientnet_lite0",)  # models whose per-channel quantiles ship (prior_quantile.QUANTILE_LAYERS)


def block_outputs(model) -> tuple[str, ...]:
    """``blocks.0`` ... the last block of ``model`` (the block outputs, not their inner layers)."""
    return tuple(name for name in model.layers if name.startswith("blocks.") and name.count(".") == 1)


def commands(model_name: str, model, *, data: str, out: str, extra: list[str]) -> list[list[str]]:
    """The ``jaxviz stats`` argument lists for one model, one per view."""
    plan = {"pixel": block_outputs(model), **EXTRA_VIEWS.get(model_name, {})}
    return [["stats", "--model", model_name, "--layers", ",".join(layers), "--data", data, "--view", view,
             "--out", os.path.join(out, model_name, view), "--compact", "--quiet", *extra]
            for view, layers in plan.items()]


def ship_quantiles(model, *, data: str, out: str, data_dir=None, max_images=None, argv=()) -> None:
    """Per-channel quantiles of ``QUANTILE_LAYERS`` saved next to ``model``'s ``pixel`` moments."""
    from jaxviz import data as data_lib
    from jaxviz.priors import quantile_match as prior_quantile

    source = data_lib.open_source(data, size=model.resolution, data_dir=data_dir, max_images=max_images)
    layers = prior_quantile.QUANTILE_LAYERS
    table = prior_quantile.collect_quantiles(model, layers, source)
    meta = {"run": {"data": data, "data_description": source.describe(), "images": len(source),
                    "preprocessing": getattr(source, "preprocessing", None), "size": model.resolution, "seed": 0,
                    "max_positions": prior_quantile.MAX_POSITIONS, "levels": prior_quantile.LEVELS},
            "command": "python scripts/ship_stats.py " + " ".join(argv)}
    prior_quantile.save_quantiles(os.path.join(out, model.name, "pixel"), table, model=model.name, metadata=meta)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, metavar="SPEC", help="folder:PATH or tfds:NAME[/SPLIT]")
    parser.add_argument("--data-dir", default=None, metavar="D", help="TFDS data directory")
    parser.add_argument("--out", default=os.path.join("jaxviz", "assets", "stats"), metavar="DIR",
                        help="root of the <model>/<view> folders (default jaxviz/assets/stats)")
    parser.add_argument("--models", default=",".join(MODELS), metavar="M1,M2")
    parser.add_argument("--views", default=None, metavar="V1,V2", help="only these views (default all)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N")
    parser.add_argument("--force", action="store_true", help="recompute statistics that are up to date")
    args = parser.parse_args(argv)

    import jaxviz
    from jaxviz.cli import main as jaxviz_main

    jaxviz.use_cpu_cores()
    extra = (["--data-dir", args.data_dir] if args.data_dir else []) + (["--force"] if args.force else [])
    extra += ["--max-images", str(args.max_images)] if args.max_images else []
    views = None if args.views is None else set(args.views.split(","))
    for name in [m for m in args.models.split(",") if m]:
        model = jaxviz.load_model(name)
        if name in QUANTILES and (views is None or "quantiles" in views):
            start = time.perf_counter()
            ship_quantiles(model, data=args.data, out=args.out, data_dir=args.data_dir, max_images=args.max_images,
                           argv=sys.argv[1:] if argv is None else argv)
            print(f"  quantiles of {name}: {time.perf_counter() - start:.0f} s", flush=True)
        for argv_ in commands(name, model, data=args.data, out=args.out, extra=extra):
            if views is not None and argv_[argv_.index("--view") + 1] not in views:
                continue
            start = time.perf_counter()
            code = jaxviz_main(argv_)
            if code:
                return code
            print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
