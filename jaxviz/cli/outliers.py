"""`jaxviz outliers`: where, and through which shallow neurons, a photo is an outlier of natural statistics."""

from __future__ import annotations

import json
import os

from jaxviz.cli._common import add_model_flag


def register(sub) -> None:
    p = sub.add_parser("outliers", help="which shallow neurons make an image an outlier of the statistics")
    add_model_flag(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--stats", required=True, metavar="DIR", help="statistics from `jaxviz stats`")
    p.add_argument("--layers", metavar="L1,L2", help="use only these layers of --stats (default all)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="image side in px (default: the model's resolution; match the statistics' size)")
    p.add_argument("--top", type=int, default=8, metavar="K", help="neurons and positions listed per layer (default 8)")
    p.add_argument("--quantile", type=float, default=0.99, help="χ²(dim) quantile of outlier positions (default 0.99)")
    p.add_argument("--out", metavar="DIR", help="also write D² heat maps (PNG) and report.json here")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def describe(result, *, size: int, top: int) -> dict:
    """JSON-able summary of one image's :class:`jaxviz.attribution.LayerOutliers` at one layer."""
    import numpy as np

    sel, d2_map = result.selection, np.asarray(result.d2_map)
    h, w = d2_map.shape
    order = np.argsort(-d2_map.reshape(-1))[:top]
    positions = [{"y": int((j // w + 0.5) * size / h), "x": int((j % w + 0.5) * size / w),
                  "d2": round(float(d2_map.reshape(-1)[j]), 3)} for j in order]
    neurons = [{"channel": int(c), "contribution": round(float(s), 3), "positions": int(n)}
               for c, s, n in zip(np.asarray(sel.neurons), np.asarray(sel.score), np.asarray(sel.count)) if s > 0]
    return {"mean_d2": round(float(np.mean(sel.d2)), 4), "dim": result.dim, "threshold": round(result.threshold, 3),
            "outlier_fraction": round(float(np.mean(sel.outlier)), 5), "positions": positions, "neurons": neurons}


def run(args) -> int:
    import numpy as np
    from PIL import Image

    from jaxviz import attribution
    from jaxviz.common.errors import UsageError
    from jaxviz.common.files import atomic_write, atomic_write_json, check_writable_dir
    from jaxviz.common.images import as_uint8_batch, read_image
    from jaxviz.models import load_model
    from jaxviz.priors.base import load_moments
    from jaxviz.stats.store import read_metadata

    if not 1 <= args.top <= 10_000:
        raise UsageError("--top must be between 1 and 10000")
    if not 0 < args.quantile < 1:
        raise UsageError("--quantile must be strictly between 0 and 1")
    out = check_writable_dir(args.out, "out") if args.out else None
    model = load_model(args.model)
    layers = [l for l in (args.layers or "").split(",") if l] or None
    moments, view = load_moments(args.stats, model, layers)
    size = args.size or read_metadata(args.stats).get("size") or model.resolution or 224
    report = []
    for i, path in enumerate(args.images):
        photo = as_uint8_batch([read_image(path)[0]], size)[0].astype(np.float32) / 255.0
        found = attribution.image_outliers(model, photo, moments, view=view, k=args.top, quantile=args.quantile)
        entry = {"image": path, "size": size, "layers": {}}
        for layer, result in found.items():
            entry["layers"][layer] = describe(result, size=size, top=args.top)
            if out:
                heat = np.asarray(Image.fromarray(np.asarray(result.d2_map, np.float32)).resize((size, size),
                                                                                                 Image.BILINEAR))
                png = attribution.overlay(photo, heat, quantile=1.0)
                name = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}_{layer}_d2.png"
                atomic_write(os.path.join(out, name), lambda f, png=png: Image.fromarray(png).save(f, format="PNG"))
                entry["layers"][layer]["heatmap"] = name
        report.append(entry)
    if out:
        atomic_write_json(os.path.join(out, "report.json"), report)
    if args.json:
        print(json.dumps(report))
        return 0
    for entry in report:
        print(entry["image"])
        for layer, r in entry["layers"].items():
            print(f"  {layer}: mean D² {r['mean_d2']:.2f} (dim {r['dim']}, D²/dim {r['mean_d2'] / r['dim']:.2f}), "
                  f"outlier positions {r['outlier_fraction']:.1%} (D² > {r['threshold']:.1f})")
            where = "; ".join(f"({p['y']}, {p['x']}) {p['d2']:.1f}" for p in r["positions"][:5])
            print(f"    worst positions (y, x px; D²): {where}")
            who = "; ".join(f"{layer}:{n['channel']} +{n['contribution']:.1f} at {n['positions']} pos"
                            for n in r["neurons"]) or "none (no outlier position)"
            print(f"    outlier neurons (layer:channel, contribution): {who}")
    return 0
