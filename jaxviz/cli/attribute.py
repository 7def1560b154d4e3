"""`jaxviz attribute`: saliency maps of targets on photos (gradient, deconvnet or guided backprop)."""

from __future__ import annotations

import os

from jaxviz.cli._common import add_model_flag


def register(sub) -> None:
    from jaxviz.attribution import RULES

    p = sub.add_parser("attribute", help="saliency maps: which pixels of a photo drive a target")
    add_model_flag(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("--target", action="append", required=True, metavar="T",
                   help="LAYER:CHANNEL (e.g. logits:285, blocks.10:7); LAYER:A-B for many; repeatable")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--rule", default="guided", choices=RULES,
                   help="ReLU backward rule: plain gradient, deconvnet or guided backprop (default guided)")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="image side in px (default: the model's resolution)")
    p.set_defaults(run=run)


def run(args) -> int:
    import numpy as np
    from PIL import Image

    from jaxviz import attribution, objectives
    from jaxviz.common.files import check_writable_dir
    from jaxviz.common.errors import UsageError
    from jaxviz.common.files import atomic_write, npy_bytes
    from jaxviz.common.images import as_uint8_batch, read_image
    from jaxviz.models import load_model
    from jaxviz.pipeline import expand_targets, target_label
    from jaxviz.report.gallery import image_filename

    if args.size is not None and not 32 <= args.size <= 2048:
        raise UsageError("--size must be between 32 and 2048")
    out = check_writable_dir(args.out, "out")
    model = load_model(args.model)
    specs = expand_targets(args.target, model.layers)
    targets = [objectives.parse_target(spec, model.layers) for spec in specs]
    size = args.size or model.resolution or 224
    photos = as_uint8_batch([read_image(path)[0] for path in args.images], size).astype(np.float32) / 255.0
    grads = attribution.saliency(model, photos, targets, rule=args.rule)
    heats = attribution.heat(grads)
    for i, path in enumerate(args.images):
        stem = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}"
        for t, spec in enumerate(specs):
            name = f"{stem}_{image_filename(spec)[:-4]}_{args.rule}"
            png = attribution.overlay(photos[i], heats[i, t])
            atomic_write(os.path.join(out, name + ".png"), lambda f, png=png: Image.fromarray(png).save(f, format="PNG"))
            atomic_write(os.path.join(out, name + ".npy"), npy_bytes(grads[i, t]))
            label = target_label(model, spec)
            print(f"{path}  {spec} {label[:24]:<24} → {os.path.join(out, name)}.png/.npy")
    return 0
