"""`jaxviz demo`: the main job on embedded defaults."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded photos")
    p.add_argument("--model", default="efficientnet_lite0", help="model name")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.set_defaults(run=run)


def run(args) -> int:
    from jaxviz.cli.classify import top_k
    from jaxviz.data import embedded_photos
    from jaxviz.models import load_model

    model = load_model(args.model)
    photos = embedded_photos()
    for name, top in zip(photos, top_k(model, list(photos.values()), 3)):
        best = ", ".join(f"{t['name']} {t['prob']:.0%}" for t in top)
        print(f"{name:<22} {best}")
    return 0
