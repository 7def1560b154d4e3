"""What the anchors' own budgets cost here: ``python -m benchmarks.anchor_budgets [--images 4]``.

Measures the seconds per forward-backward pass per image of each recipe at its own size on EfficientNet-Lite0
(``render.render_images`` through the public API, a second call of the same shapes so compilation is
excluded), then prices the runs of README "Experiments" (the anchors at their own settings) from them:
``pairs × passes × Σ s/pass of the run's recipes``. The estimate comes before a long run is started; the machine may be
shared (load averages are stored with the figures).

Writes ``benchmarks/results/anchor-budgets-<hostname>.json`` (``--out`` to override) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# (recipe, recipe options, size the recipe is built at)
RECIPES = (
    ("maco", {}, 224),
    ("maco-full", {}, 224),
    ("outliers", {"base": "maco-full"}, 224),
    ("quantile", {"base": "maco-full"}, 224),
    ("deepinversion-full", {}, 224),
    ("deepdream", {}, 224),
    ("outliers", {"base": "deepdream"}, 224),
    ("maco", {}, 128),
    ("maco-full", {}, 128),
    ("quantile", {"base": "maco-full"}, 128),
)
# (run, the recipes each image is rendered with (keys of RECIPES), images (pairs) per recipe, passes per image);
# the budget curve renders every budget (256 + 1,024 + 4,096 + 8,192 passes)
FAMILY = ("maco-full@224", "outliers+maco-full@224", "quantile+maco-full@224", "quantile+maco-full@224")
PLANNED = (
    ("family on maco-full, 32 class pairs (gaussian priced as quantile)", FAMILY, 32, 8192),
    ("family on maco-full, 32 channel pairs", FAMILY, 32, 8192),
    ("budget curve, 8 tuning classes, maco-full vs quantile", ("maco-full@224", "quantile+maco-full@224"), 8,
     256 + 1024 + 4096 + 8192),
    ("budget curve, 4 tuning classes, 128 px, 256-4,096 passes", ("maco-full@128", "quantile+maco-full@128"), 4,
     256 + 1024 + 4096),
    ("deepinversion-full, 32 classes pooled", ("deepinversion-full@224",), 32, 2000),
    ("DeepDream copies, 48 channel pairs, 224 px", ("deepdream@224", "outliers+deepdream@224"), 48, 256),
    ("family at our scaled budget, 32 pairs, 128 px", ("maco@128",) * 4, 32, 256),
)


def _key(name: str, options: dict, size: int) -> str:
    return (f"{name}+{options['base']}" if "base" in options else name) + f"@{size}"


def time_recipe(model, name: str, options: dict, size: int, *, images: int, passes: int) -> dict:
    """Seconds per pass per image of ``name`` (second call, compilation excluded)."""
    import jax

    from jaxviz import recipes, render

    recipe = recipes.get(name, size=size, **options)
    passes = max(passes, recipe.crops_per_step)
    recipe = recipe.at_budget(passes)
    config = recipe.config(batch_size=images, chunk_steps=min(16, recipe.passes))
    parts = recipe.parts(model)
    targets = [recipe.target(c) for c in range(1, images + 1)]
    t0 = time.perf_counter()
    render.render_images(model, targets, key=jax.random.key(0), config=config, progress=False, **parts)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    render.render_images(model, targets, key=jax.random.key(1), config=config, progress=False, **parts)
    second = time.perf_counter() - t0
    return {"recipe": name, "options": options, "size": size, "canvas": recipe.size, "passes": recipe.passes,
            "images": images, "first_s": round(first, 2), "second_s": round(second, 2),
            "s_per_pass_image": second / (recipe.passes * images)}


def estimates(per_pass: dict) -> list[dict]:
    """Hours of each planned run at the measured seconds per pass of each of its recipes."""
    rows = []
    for run, keys, pairs, passes in PLANNED:
        if all(k in per_pass for k in keys):
            hours = pairs * passes * sum(per_pass[k] for k in keys) / 3600
            rows.append({"run": run, "recipes": list(keys), "pairs": pairs, "passes": passes, "hours": round(hours, 2)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4, help="images rendered together per timing (default 4)")
    p.add_argument("--passes", type=int, default=64, help="passes per image per timing (default 64; above the priors' warm-up)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/anchor-budgets-<host>.json)")
    args = p.parse_args(argv)

    from jaxviz import load_model

    model = load_model("efficientnet_lite0")
    measured = []
    for name, options, size in RECIPES:
        row = time_recipe(model, name, options, size, images=args.images, passes=args.passes)
        measured.append(row)
        print(f"{_key(name, options, size):28s} {row['s_per_pass_image'] * 1000:8.1f} ms/pass/img "
              f"(canvas {row['canvas']}, first call {row['first_s']} s)", file=sys.stderr)
    per_pass = {}
    for row in measured:
        per_pass[_key(row["recipe"], row["options"], row["size"])] = row["s_per_pass_image"]
    plan = estimates(per_pass)
    print("\n| run | recipes | pairs | passes per image | hours here |\n|---|---|---|---|---|")
    for r in plan:
        print(f"| {r['run']} | {', '.join(r['recipes'])} | {r['pairs']} | {r['passes']} | {r['hours']} |")
    out = args.out or os.path.join(HERE, "results", f"anchor-budgets-{socket.gethostname()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "load": os.getloadavg(), "images": args.images, "measured": measured, "plan": plan}, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
