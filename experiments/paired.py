"""Paired comparison of methods across run folders of the sticks (other budgets, other launches).

    python -m experiments.paired RUN_A:METHOD RUN_B:METHOD [RUN_C:METHOD ...] [--metrics copies,activation]

Each ``RUN:METHOD`` names the ``per_image.csv`` of a run folder of :mod:`experiments.realism` or
:mod:`experiments.neurons` and one of its methods. Rows are matched on (seed, target or class); the table gives
each method's mean over the pairs all of them share and the paired Wilcoxon p of each against the first —
e.g. DeepDream at fewer passes against the seed's method at equal target activation (README "Experiments").
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

from jaxviz.realism.diagnostics import paired_wilcoxon


def read_method(spec: str) -> tuple[str, dict]:
    """``(label, {(seed, target): row})`` of ``RUN:METHOD``."""
    run, _, method = spec.rpartition(":") if ":" in spec else (spec, "", "")
    path = os.path.join(run, "per_image.csv")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} not found (give RUN_FOLDER:METHOD)")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method]
    if not rows:
        raise SystemExit(f"error: no rows of method '{method}' in {path}")
    return f"{method} ({os.path.basename(os.path.normpath(run))})", {
        (r["seed"], r.get("target") or r.get("class")): r for r in rows}


def table(specs: list[str], metrics: list[str]) -> str:
    """Markdown: mean of each metric per method over the shared pairs, p vs the first method."""
    methods = [read_method(s) for s in specs]
    shared = sorted(set.intersection(*(set(rows) for _, rows in methods)))
    if not shared:
        raise SystemExit("error: the runs share no (seed, target) pair")
    lines = [f"pairs: {len(shared)}", "", "| method | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    first = None
    for label, rows in methods:
        values = {m: np.array([float(rows[k].get(m) or "nan") for k in shared]) for m in metrics}
        cells = []
        for m in metrics:
            cell = f"{np.nanmean(values[m]):.3g}"
            if first is not None:
                cell += f" (p {paired_wilcoxon(values[m], first[m])['p']:.2g})"
            cells.append(cell)
        first = first or values
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_FOLDER:METHOD, the first is the reference")
    p.add_argument("--metrics", default="copies,activation,plausibility",
                   help="per_image.csv columns, comma-separated (default copies,activation,plausibility)")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two RUN_FOLDER:METHOD")
    print(table(args.runs, [m for m in args.metrics.split(",") if m]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
