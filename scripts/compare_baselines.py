"""One-off visual check of the anchors' recipes against the former baselines (outside CI).

Render (one variant per process, so the former code can run from another checkout):
    PYTHONPATH=. python scripts/compare_baselines.py render lucid --out /tmp/baselines --passes 256
    PYTHONPATH=../main python scripts/compare_baselines.py render fourier --out /tmp/baselines --passes 256
Score every rendered variant with the held-out judge and print a table:
    PYTHONPATH=. python scripts/compare_baselines.py score --out /tmp/baselines

Variants: recipes (``lucid``, ``maco``, ``deepinversion``, at ``--passes`` forward-backward passes;
``maco@1`` overrides the crops per step)
and the plain render settings ``fourier`` / ``maco-param`` (128 px, default transforms, Adam 0.05).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

CLASSES = (207, 281, 947, 980)  # golden retriever, tabby, mushroom, volcano (the demo's)


def render_variant(name: str, out: str, passes: int, seed: int) -> None:
    import jax

    import jaxviz
    from jaxviz import objectives, render

    model = jaxviz.load_model("efficientnet_lite0")
    targets = [objectives.class_logit(c) for c in CLASSES]
    if name in ("fourier", "maco-param"):
        config = render.RenderConfig(size=128, steps=passes, batch_size=len(CLASSES), seed=seed)
        kwargs = dict(parameterization=name.replace("-param", ""), recipe="jaxviz")  # the old defaults otherwise
    else:
        import dataclasses

        from jaxviz import recipes

        base, _, crops = name.partition("@")  # e.g. maco@1: the recipe with 1 crop per step
        recipe = recipes.get(base)
        if crops:
            recipe = dataclasses.replace(recipe, crops_per_step=int(crops))
        recipe = recipe.at_budget(passes)
        targets = [recipe.target(c) for c in CLASSES]
        config = recipe.config(batch_size=len(CLASSES), seed=seed)
        kwargs = recipe.parts(model)
    start = time.time()
    result = render.render_images(model, targets, config=config, key=jax.random.key(seed), **kwargs)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "images.npy"), result.images)
    from PIL import Image

    strip = np.concatenate([np.asarray(Image.fromarray((255 * im).round().astype(np.uint8)).resize((160, 160)))
                            for im in result.images], 1)
    Image.fromarray(strip).save(os.path.join(folder, "strip.png"))
    meta = {"variant": name, "passes": passes, "seconds": round(time.time() - start, 1), "size": config.size,
            "activation": result.activation.tolist()}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)
    print(json.dumps(meta))


def score_all(out: str, judge: str, cache_dir: str | None) -> None:
    from jaxviz import realism

    rows = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, "images.npy")
        if not os.path.exists(path):
            continue
        scores = realism.score(np.load(path), CLASSES, judges=(judge,), cache_dir=cache_dir)
        s = realism.summarize(scores)
        rows.append((name, s["colourfulness"]["mean"], s[f"{judge}/top5"]["mean"], s[f"{judge}/p_target"]["mean"],
                     s[f"{judge}/rank"]["mean"], s[f"{judge}/blobs"]["mean"]))
    real = realism.summarize(realism.score_real(CLASSES, size=224, judges=(judge,), cache_dir=cache_dir))
    rows.append(("real photos", real["colourfulness"]["mean"], real[f"{judge}/top5"]["mean"],
                 real[f"{judge}/p_target"]["mean"], real[f"{judge}/rank"]["mean"], real[f"{judge}/blobs"]["mean"]))
    print(f"| variant | colourfulness | {judge} top-5 | p(target) | plausibility rank | blobs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} | {100 * r[2]:.0f} % | {r[3]:.3f} | {r[4]:.1f} | {r[5]:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("render", "score"))
    parser.add_argument("variant", nargs="?")
    parser.add_argument("--out", default="/tmp/baselines")
    parser.add_argument("--passes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", default="efficientnet_lite2")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    if args.mode == "render":
        render_variant(args.variant, args.out, args.passes, args.seed)
    else:
        score_all(args.out, args.judge, args.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
