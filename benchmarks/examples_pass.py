"""The examples pass (dataset examples, jaxviz.stats.examples) next to the statistics pass, and its memory.

    python -m benchmarks.examples_pass [--images 10000] [--size 224] [--layer blocks.12] [--channels 32] [--json]
    python -m benchmarks.examples_pass --quick      # 640 images at 64 px (the test's mode)

In one run, over the same generated images (``photos``: random crops of the embedded photos, decoded as
they are read, as a real source is), after one warm-up pass each on a short source:

- ``stats pass``: :func:`jaxviz.stats.collect.collect_moments` of ``--layer`` (pooled view), images/s;
- ``examples pass``: :func:`jaxviz.stats.examples.collect_examples`, top-8 of ``--channels`` channels, images/s;
- peak RSS (``ru_maxrss``) after each quarter of the examples pass: flat when memory is bounded.
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.examples_pass")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--layer", default="blocks.12")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.size = 640, 64
    import jaxviz
    from jaxviz.data import sources
    from jaxviz.stats import collect, examples

    jaxviz.use_cpu_cores()
    model = jaxviz.load_model("efficientnet_lite0")
    channels = list(range(args.channels))

    def source(n):
        return sources.open_source("photos", size=args.size, max_images=n)

    warm = source(2 * args.batch_size)
    collect.collect_moments(model, [args.layer], warm, view="pooled", batch_size=args.batch_size)
    examples.collect_examples(model, args.layer, channels, warm, batch_size=args.batch_size)
    t = time.perf_counter()
    collect.collect_moments(model, [args.layer], source(args.images), view="pooled", batch_size=args.batch_size)
    stats_rate = args.images / (time.perf_counter() - t)
    marks = []

    def progress(done, total):
        if done and done * 4 // total > len(marks):
            marks.append((done, round(rss_mb(), 1)))

    t = time.perf_counter()
    examples.collect_examples(model, args.layer, channels, source(args.images), batch_size=args.batch_size,
                              progress=progress)
    ex_rate = args.images / (time.perf_counter() - t)
    out = {"images": args.images, "size": args.size, "layer": args.layer, "channels": args.channels,
           "stats_images_per_s": round(stats_rate, 1), "examples_images_per_s": round(ex_rate, 1),
           "ratio": round(ex_rate / stats_rate, 3), "peak_rss_mb_at": marks}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"stats pass {stats_rate:.1f} img/s, examples pass {ex_rate:.1f} img/s "
              f"({ex_rate / stats_rate:.2f}x); peak RSS (MB) at images: {marks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
