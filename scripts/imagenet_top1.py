"""Top-1 / top-5 of ``jaxviz classify`` on a folder of one photo per ImageNet class.

The folder's files, sorted by name, must be classes 0..999 (as in the imagenet-sample folder
described in the README). Runs the CLI itself, so the figure is what a user gets::

    python scripts/imagenet_top1.py DIR --model efficientnet_lite0 [--model efficientnet_lite1 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--json-out", default=None, help="write the per-image predictions here")
    args = parser.parse_args()
    files = sorted(f for f in os.listdir(args.folder) if not f.startswith(".") and not f.endswith(".md"))
    if len(files) != 1000:
        sys.exit(f"expected 1000 photos in {args.folder}, found {len(files)}")
    paths = [os.path.join(args.folder, f) for f in files]
    report = {}
    for model in args.model or ["efficientnet_lite0"]:
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "jaxviz", "classify", "--model", model, "--json", *paths],
                             check=True, capture_output=True, text=True).stdout
        rows = json.loads(out)
        top1 = [r["top5"][0]["index"] for r in rows]
        hit1 = sum(t == i for i, t in enumerate(top1)) / len(rows)
        hit5 = sum(i in [e["index"] for e in r["top5"]] for i, r in enumerate(rows)) / len(rows)
        report[model] = {"top1": top1, "top1_acc": hit1, "top5_acc": hit5}
        print(f"{model}: top-1 {hit1:.1%}  top-5 {hit5:.1%}  ({time.perf_counter() - start:.0f} s)", flush=True)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
