"""`jaxviz classify`: top-5 ImageNet classes of image files."""

from __future__ import annotations

import json
import sys

import numpy as np

from jaxviz.cli._common import add_model_flag, whole


def register(sub) -> None:
    p = sub.add_parser("classify", help="top-5 ImageNet classes of images")
    add_model_flag(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--top", type=whole, default=5, help="how many classes per image (default 5)")
    p.set_defaults(run=run)


def top_k(model, images: list[np.ndarray], k: int = 5, batch_size: int = 16) -> list[list[dict]]:
    """Top-k classes of uint8 images: ``[[{"index", "name", "prob"}, ...], ...]``."""
    import jax

    forward = jax.jit(lambda p, x: jax.nn.softmax(model.features(p, x, ["logits"])["logits"]))
    results = []
    for start in range(0, len(images), batch_size):
        probs = np.asarray(forward(model.params, model.preprocess(images[start : start + batch_size])))
        for row in probs:
            best = np.argsort(-row)[:k]
            results.append([
                {"index": int(i), "name": model.class_names[i], "prob": round(float(row[i]), 6)} for i in best
            ])
    return results


def run(args) -> int:
    from jaxviz.common.errors import UsageError
    from jaxviz.common.images import read_image
    from jaxviz.models import load_model

    if not 1 <= args.top <= 1000:
        raise UsageError("--top must be between 1 and 1000")
    images = []
    for path in args.images:
        image, converted = read_image(path)
        if converted:
            print(f"jaxviz: note: {path} is not RGB; converted", file=sys.stderr)
        images.append(image)
    model = load_model(args.model)
    results = top_k(model, images, args.top)
    if args.json:
        print(json.dumps([{"image": p, "top5": r} for p, r in zip(args.images, results)]))
        return 0
    for path, top in zip(args.images, results):
        print(path)
        for entry in top:
            print(f"  {entry['prob']:6.1%}  {entry['index']:4d}  {entry['name']}")
    return 0
