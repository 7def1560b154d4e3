"""Realism of every method at equal compute, judged by models the optimization never saw.

    python -m experiments.realism                         # 64 classes x 2 seeds, every method
    python -m experiments.realism --quick                 # 4 classes x 1 seed, few passes (CI smoke run)
    python -m experiments.realism --methods lucid,outliers --classes 16 --passes 256

Every method renders the same ImageNet classes (Lite0 logits) with the same budget, counted in
forward-backward passes of the model per image (a recipe with K crops per step runs passes / K
steps). The images are scored by :func:`jaxviz.realism.score` in the held-out judges (Lite1, Lite2)
against the real photos of ``--real`` (one per class), and the real photos themselves are scored as
the reference row. Outputs in the run folder (default ``experiments/results/realism-<date>``):
``per_image.csv``, ``table.md`` / ``table.csv`` (mean ± sd, paired Wilcoxon tests of each method vs
``--against``), ``sets.json`` (KID/FID per method), ``grid.png`` (a contact sheet: photo + one image
per method for the first classes), ``config.json`` and ``command.txt``. Rendered images are saved per
(method, seed) under ``runs/`` with a signature of their settings: a rerun skips what is done.

Evaluation classes are spread over the 1,000 classes; tuning classes (``TUNE_CLASSES``, for
``experiments.method_study``) are disjoint from them.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import shlex
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_SEED = 20261202
# judged per image: (column, label, higher is better)
METRICS = (
    ("efficientnet_lite1/top1", "Lite1 top-1", True),
    ("efficientnet_lite2/top1", "Lite2 top-1", True),
    ("efficientnet_lite2/top5", "Lite2 top-5", True),
    ("efficientnet_lite2/p_target", "Lite2 p(target)", True),
    ("efficientnet_lite2/cos_own", "plausibility (Lite2 cos)", True),
    ("efficientnet_lite2/rank", "plausibility rank (Lite2)", False),
    ("efficientnet_lite2/blobs", "CAM blobs (Lite2)", False),
    ("efficientnet_lite2/top_blob_share", "top-blob share", True),
    ("colourfulness", "colourfulness", None),
    ("slope", "spectrum slope", None),
    ("activation", "objective (Lite0)", True),
)


def eval_classes(n: int) -> list[int]:
    """``n`` classes spread evenly over ImageNet's 1,000 (the evaluation set)."""
    return sorted({int(round(x)) for x in np.linspace(3, 996, n)})


def tune_classes(n: int, avoid: list[int]) -> list[int]:
    """``n`` classes disjoint from ``avoid`` (the tuning set of the method study)."""
    taken = set(avoid)
    out = [c for c in eval_classes(2 * n + len(avoid)) if c not in taken and c + 1 not in taken]
    return [c + 1 for c in out[:n]] if len(out) >= n else out


def method_parts(name: str, model, *, passes: int, size: int):
    """``(RenderConfig, render kwargs, description, target)`` of method ``name`` at ``passes`` passes per image.

    Names: a recipe of :mod:`jaxviz.recipes` (``lucid``, ``maco``, ``deepinversion``, ``jaxviz``,
    ``outliers``...), optionally with ``@key=value,...`` options of the recipe (values are JSON, or
    lists written ``a+b``), e.g. ``outliers@view=patch3,layers=blocks.5+blocks.8,weight=30``.
    """
    from jaxviz import recipes

    base, _, extra = name.partition("@")
    options = {}
    for item in filter(None, extra.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value.split("+") if "+" in value else value
    recipe = recipes.get(base, size=size, **options).at_budget(passes)
    return recipe.config(batch_size=64, chunk_steps=16), recipe.parts(model), recipe.notes, recipe.target


def render_method(name, model, cfg, classes, seed, run_dir, quiet):
    """Images ``[N,S,S,3]``, final target objectives and seconds of one method and seed (cached, resumable:
    :mod:`experiments.runs`)."""
    from experiments.runs import render_cached

    path = os.path.join(run_dir, "runs", name.replace("/", "_"), f"seed{seed}.npz")
    # the recipe's full description, not just its name, is in the signature: changing a default re-renders
    key_data = {"method": name, "classes": classes, "seed": seed, **{k: cfg[k] for k in ("passes", "size")}}
    return render_cached(name, model, lambda target: [target(c) for c in classes], path=path, key_data=key_data,
                         passes=cfg["passes"], size=cfg["size"], seed_value=BASE_SEED + seed, quiet=quiet)


def _paired(a: np.ndarray, b: np.ndarray) -> str:
    from jaxviz.realism.diagnostics import paired_wilcoxon

    test = paired_wilcoxon(a, b)
    p = test.get("p")
    return "–" if p is None or not np.isfinite(p) else f"{p:.2g}"


def make_table(per_method: dict[str, dict], real: dict, against: str | None) -> tuple[str, list[dict]]:
    """Markdown table and CSV rows: mean ± sd per metric, and p vs ``against`` for each method."""
    names = ["real photos (reference)", *per_method]
    head = "| method | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    rows = []
    for name in names:
        scores = real if name.startswith("real") else per_method[name]
        cells, row = [], {"method": name}
        for key, _, better in METRICS:
            if key not in scores:
                cells.append("–")
                continue
            values = np.asarray(scores[key], np.float64)
            mean, sd = float(np.nanmean(values)), float(np.nanstd(values))
            row[f"{key}_mean"], row[f"{key}_sd"] = round(mean, 4), round(sd, 4)
            cell = f"{mean:.3g} ± {sd:.2g}"
            if against and name in per_method and name != against and better is not None and key in per_method[against]:
                p = _paired(values, np.asarray(per_method[against][key], np.float64))
                row[f"{key}_p"] = p
                cell += f" (p {p})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        rows.append(row)
    return "\n".join(lines), rows


def write_grid(run_dir, images_by_method, real_images, classes, class_names, n_rows=8):
    """Contact sheet: one row per class, one column per method (and the photo when ``real_images`` is given).

    The real photos are research-use data that must not be copied into the repository, so the committed
    sheet leaves them out (``--photos-in-grid`` puts them in for a local look).
    """
    from PIL import Image

    from jaxviz import report
    from jaxviz.common.files import atomic_write

    columns = ([] if real_images is None else ["photo"]) + list(images_by_method)
    tiles, labels = [], []
    for i in range(min(n_rows, len(classes))):
        if real_images is not None:
            photo = np.asarray(real_images[i])
            tiles.append(photo if photo.dtype == np.uint8 else report.to_uint8(photo))
            labels.append(f"{classes[i]} {class_names[classes[i]][:14]}")
        for name in images_by_method:
            tiles.append(report.to_uint8(images_by_method[name][i]))
            labels.append(f"{name[:12]} {classes[i]} {class_names[classes[i]][:10]}")
    sheet = report.contact_sheet(tiles, labels, columns=len(columns), tile=160)
    atomic_write(os.path.join(run_dir, "grid.png"), lambda f: Image.fromarray(sheet).save(f, format="PNG"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.realism", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["lucid", "maco", "deepinversion", "jaxviz", "outliers"],
                   help="recipes, space-separated (name[@key=value,...]); default: every anchor, ours and the method")
    p.add_argument("--against", default=None, help="method the paired tests compare to (default: the first)")
    p.add_argument("--classes", type=int, default=64, help="number of evaluation classes (default 64)")
    p.add_argument("--class-list", default=None,
                   help="explicit classes, comma-separated, or 'tune' for the tuning classes (overrides --classes)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per class (default 2)")
    p.add_argument("--passes", type=int, default=512, help="forward-backward passes per image (default 512)")
    p.add_argument("--size", type=int, default=224, help="side of what the model sees, px (default 224)")
    p.add_argument("--real", default=None, help="real photos: a folder (sorted file i = class i) or tfds:NAME")
    p.add_argument("--out", default=None, help="run folder (default experiments/results/realism-<date>)")
    p.add_argument("--quick", action="store_true", help="4 classes, 1 seed, 16 passes, 112 px")
    p.add_argument("--photos-in-grid", action="store_true",
                   help="put the real photos in grid.png (for a local look; never commit them)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.seeds, args.passes, args.size = 4, 1, 16, 112
    return args


def main(argv=None) -> int:
    import jaxviz

    jaxviz.use_cpu_cores()
    args = parse_args(argv)
    from jaxviz import realism
    from jaxviz.common.errors import JaxvizError
    from jaxviz.common.files import atomic_write, atomic_write_json

    try:
        methods = [m.strip() for m in args.methods if m.strip()]
        real = args.real or realism.default_real()
        if real is None:
            raise JaxvizError("no real photos: pass --real DIR (a folder whose sorted file i is class i)")
        classes = eval_classes(args.classes)
        tuning = tune_classes(8, eval_classes(64))
        if args.class_list == "tune":
            classes = tuning
        elif args.class_list:
            classes = [int(c) for c in args.class_list.split(",")]
        cfg = {"methods": methods, "classes": classes, "tune_classes": tuning, "seeds": args.seeds,
               "passes": args.passes, "size": args.size, "real": os.path.abspath(real) if os.path.isdir(real) else real,
               "judges": list(realism.DEFAULT_JUDGES), "base_seed": BASE_SEED}
        run_dir = args.out or os.path.join(HERE, "results", f"realism-{_dt.date.today().isoformat()}"
                                           + ("-quick" if args.quick else ""))
        os.makedirs(run_dir, exist_ok=True)
        atomic_write(os.path.join(run_dir, "command.txt"),
                     "python -m experiments.realism " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) + "\n")
        model = jaxviz.load_model("efficientnet_lite0")
        cache = os.path.join(jaxviz.common.cache.cache_dir(), "realism")  # judges' features of the real photos
        descriptions = {m: method_parts(m, model, passes=args.passes, size=args.size)[2] for m in methods}
        atomic_write_json(os.path.join(run_dir, "config.json"), {**cfg, "descriptions": descriptions})
        images, per_method, seconds = {}, {}, {}
        all_classes = [c for _ in range(args.seeds) for c in classes]
        for m in methods:
            parts = [render_method(m, model, cfg, classes, s, run_dir, args.quiet) for s in range(args.seeds)]
            images[m] = np.concatenate([p[0] for p in parts])
            seconds[m] = sum(p[2] for p in parts)
            scores = realism.score(images[m], all_classes, real=real, cache_dir=cache)
            per_method[m] = {**scores.per_image, "activation": np.concatenate([p[1] for p in parts])}
            per_method[m]["_sets"] = scores.per_set
            print(f"{m}: rendered in {seconds[m]:.0f} s, scored", file=sys.stderr)
        reference = realism.score_real(classes, size=args.size, real=real, cache_dir=cache)
        real_row = dict(reference.per_image)
        sets = {m: per_method[m].pop("_sets") for m in methods}
        sets["real photos (reference)"] = reference.per_set
        table, rows = make_table(per_method, real_row, args.against or methods[0])
        atomic_write_json(os.path.join(run_dir, "sets.json"), {"sets": sets, "render_seconds": seconds})
        with open(os.path.join(run_dir, "per_image.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            keys = sorted({k for m in methods for k in per_method[m]})
            writer = csv.writer(f)
            writer.writerow(["method", "seed", "class", *keys])
            for m in methods:
                for i, c in enumerate(all_classes):
                    writer.writerow([m, i // len(classes), c, *[_cell(per_method[m].get(k), i) for k in keys]])
        os.replace(os.path.join(run_dir, "per_image.csv.tmp"), os.path.join(run_dir, "per_image.csv"))
        with open(os.path.join(run_dir, "table.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k))
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(os.path.join(run_dir, "table.csv.tmp"), os.path.join(run_dir, "table.csv"))
        kid = " | ".join(f"{m}: KID {sets[m].get('efficientnet_lite2/kid', float('nan')):.3f}" for m in sets)
        atomic_write(os.path.join(run_dir, "table.md"),
                     f"{len(classes)} classes x {args.seeds} seeds, {args.passes} passes, {args.size} px; judges "
                     f"Lite1/Lite2; p: paired Wilcoxon vs {args.against or methods[0]}\n\n{table}\n\nSets (Lite2): {kid}\n")
        real_images = realism.load_real(classes, size=args.size, real=real) if args.photos_in_grid else None
        write_grid(run_dir, images, real_images, classes, model.class_names)
        print(table)
        print(os.path.abspath(run_dir))
        return 0
    except JaxvizError as e:
        print(f"experiments.realism: error: {e}", file=sys.stderr)
        return 2


def _cell(values, i):
    if values is None:
        return ""
    value = np.asarray(values)[i]
    return f"{float(value):.5g}" if np.ndim(value) == 0 else ""


if __name__ == "__main__":
    sys.exit(main())
