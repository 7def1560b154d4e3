"""`jaxviz attribute`: saliency maps of targets on photos (saliency, SmoothGrad or integrated gradients,
under the gradient, deconvnet or guided-backprop rule)."""

from __future__ import annotations

import os

from jaxviz.cli._common import add_model_flag, number, whole


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
    p.add_argument("--method", default="saliency", choices=("saliency", "smoothgrad", "integrated-gradients"),
                   help="saliency (one gradient), smoothgrad (mean over noisy copies) or integrated-gradients "
                        "(path from a black image); default saliency")
    p.add_argument("--samples", type=whole, default=32, metavar="N", help="smoothgrad: noisy copies (default 32)")
    p.add_argument("--noise", type=number, default=0.15, metavar="F",
                   help="smoothgrad: noise sd as a fraction of the image's range (default 0.15)")
    p.add_argument("--steps", type=whole, default=32, metavar="N", help="integrated-gradients: path points (default 32)")
    p.add_argument("--seed", type=whole, default=0, help="smoothgrad: noise seed (default 0)")
    p.set_defaults(run=run)


def run(args) -> int:
    import jax
    import numpy as np
    from PIL import Image

    from jaxviz import attribution, objectives
    from jaxviz.common.errors import UsageError
    from jaxviz.common.files import atomic_write, check_writable_dir, npy_bytes
    from jaxviz.common.images import as_uint8_batch, read_image
    from jaxviz.models import load_model
    from jaxviz.pipeline import expand_targets, target_label
    from jaxviz.report.gallery import image_filename

    if args.size is not None and not 32 <= args.size <= 2048:
        raise UsageError("--size must be between 32 and 2048")
    for flag, value in (("--samples", args.samples), ("--steps", args.steps)):
        if not 1 <= value <= attribution.MAX_SAMPLES:
            raise UsageError(f"{flag} must be between 1 and {attribution.MAX_SAMPLES}, got {value}")
    if not 0.0 <= args.noise <= 10.0:  # also refuses nan
        raise UsageError(f"--noise must be in [0, 10], got {args.noise}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in 0..2^32-1, got {args.seed}")
    out = check_writable_dir(args.out, "out")
    model = load_model(args.model)
    specs = expand_targets(args.target, model.target_layers)
    targets = [objectives.parse_target(spec, model.target_layers) for spec in specs]
    size = args.size or model.resolution or 224
    photos = as_uint8_batch([read_image(path)[0] for path in args.images], size).astype(np.float32) / 255.0
    method = args.method.replace("-", "_")
    grads = attribution.attribute(model, photos, targets, method=method, rule=args.rule,
                                  key=jax.random.key(args.seed), samples=args.samples, noise=args.noise,
                                  steps=args.steps)
    tag = args.rule if method == "saliency" else f"{method}_{args.rule}"
    heats = attribution.heat(grads)
    for i, path in enumerate(args.images):
        stem = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}"
        for t, spec in enumerate(specs):
            name = f"{stem}_{image_filename(spec)[:-4]}_{tag}"
            png = attribution.overlay(photos[i], heats[i, t])
            atomic_write(os.path.join(out, name + ".png"), lambda f, png=png: Image.fromarray(png).save(f, format="PNG"))
            atomic_write(os.path.join(out, name + ".npy"), npy_bytes(grads[i, t]))
            label = target_label(model, spec)
            print(f"{path}  {spec} {label[:24]:<24} → {os.path.join(out, name)}.png/.npy")
    return 0
