"""The deep-neuron stick: channel visualizations of deep layers against their dataset examples.

    python -m experiments.neurons --set tune --channels 16 --seeds 1 --passes 256 --size 128
    python -m experiments.neurons                     # evaluation set: 48 channels x 2 seeds, every method
    python -m experiments.neurons --quick             # 3 channels, 1 seed, 16 passes, 96 px (smoke run)

Targets are channels (:func:`jaxviz.objectives.channel`, the spatial mean) of deep layers of Lite0
(``--layers``, default ``blocks.12,blocks.15,head``), chosen by a fixed rule (:func:`channel_sets`):
for a layer of ``C`` channels and ``n = 16`` per set, evaluation channel ``i`` is ``⌊(i + ¼)·C/n⌋`` and
tuning channel ``i`` is ``⌊(i + ¾)·C/n⌋`` — disjoint, and written to ``sets.json``. A run of
``--channels N`` takes ``N`` of its set's channels spread evenly over the layers and over each
layer's list.

Dataset examples (:mod:`jaxviz.realism.neurons`): each channel's ``--k`` (8) photos with the largest
channel objective in Lite0 among the 1,000 photos of ``--real`` (their centre view at 224 px, as the
shipped statistics saw them). The optimization never sees a photo: the photos enter only as the
statistics (class- and channel-agnostic moments of shallow layers) and as this reference. Metrics per
image: plausibility and its rank in held-out Lite2's pooled features against the references of all
channels of both sets (96 by default), copy count of the target channel's map in Lite0 at input side
``--copy-side`` (448: 14×14 maps for these layers), the Lite0 objective, and the objective as % of the
``--against`` method's (the unconstrained base of the method, MaCo by default) for the same channel
and seed. Reference row "photos": copy count = mean over each channel's ``k`` examples (second view,
:func:`jaxviz.realism.second_view`); plausibility = the channel's ``k+1``-th photo (not one of its
examples), second view.

``head`` is a ReLU6 layer: a channel that is 0 everywhere on the initial image gets no gradient and stays
0 (MaCo left all five head channels of the first tuning run at exactly 0); ``--redirect-steps N``
gives every method N first passes with redirected ReLU gradients (:class:`jaxviz.RenderConfig`
``redirect_steps``) so such channels can start — 16 did not suffice in a check at 64 passes (README);
``--pre-activation`` makes every method maximize the channel's BatchNorm output before the ReLU6 instead
(Lucid's pre-ReLU targets), while every metric still reads the layer itself.

Outputs in the run folder (default ``experiments/results/neurons-<date>``): ``per_image.csv``,
``table.md`` / ``table.csv`` (mean ± sd, paired Wilcoxon tests vs ``--against``), ``sets.json``,
``grid.png`` (contact sheet, no photos unless ``--photos-in-grid``), ``config.json``, ``command.txt``.
Renders are cached per (method, seed) under ``runs/`` with a signature; a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import os
import shlex
import sys

import numpy as np

from experiments.realism import method_parts

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_SEED = 20261203
SET_SIZE = 16          # channels per layer and set
DEFAULT_LAYERS = ("blocks.12", "blocks.15", "head")
N_PHOTOS = 1000
# (column, label, higher is better)
METRICS = (
    ("plausibility", "plausibility (Lite2 cos)", True),
    ("rank", "plausibility rank (Lite2)", False),
    ("copies", "copy count (Lite0)", False),
    # a silent channel (map ≤ 0 everywhere) counts 0 copies, which would reward a dead image: these two
    # columns say how many images are alive and count copies only there (pairs with both alive)
    ("alive", "channel alive (share)", True),
    ("copies_alive", "copy count, alive only", False),
    ("activation_pct", "objective % of base", True),
    ("activation", "objective (Lite0)", True),
)


def channel_sets(layer_channels: dict[str, int], n: int = SET_SIZE) -> dict:
    """``{"eval": {layer: [n]}, "tune": {layer: [n]}}`` by the fixed rule of the module docstring.

    Raises:
      ValueError: a layer has fewer than ``2·n`` channels (the sets would not be disjoint).
    """
    sets: dict = {"eval": {}, "tune": {}}
    for layer, c in layer_channels.items():
        if c < 2 * n:
            raise ValueError(f"{layer} has {c} channels, fewer than 2 x {n}")
        sets["eval"][layer] = [int((i + 0.25) * c / n) for i in range(n)]
        sets["tune"][layer] = [int((i + 0.75) * c / n) for i in range(n)]
    return sets


def pick(layer_lists: dict[str, list[int]], count: int) -> list[tuple[str, int]]:
    """``count`` targets spread over the layers (as evenly as possible) and over each layer's list."""
    layers = list(layer_lists)
    per = [count // len(layers) + (i < count % len(layers)) for i in range(len(layers))]
    out = []
    for layer, m in zip(layers, per):
        lst = layer_lists[layer]
        m = min(m, len(lst))
        idx = sorted({int(round(x)) for x in np.linspace(0, len(lst) - 1, m)}) if m > 1 else ([0] if m else [])
        out += [(layer, lst[i]) for i in idx]
    return out


def _paired(a, b) -> str:
    from jaxviz.realism.diagnostics import paired_wilcoxon

    p = paired_wilcoxon(a, b).get("p")
    return "–" if p is None or not np.isfinite(p) else f"{p:.2g}"


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def photo_table(model, real: str, n_photos: int, layers, cache_dir: str, quiet: bool) -> dict:
    """``{layer: [n_photos, C]}`` Lite0 channel objectives of the photos' centre views (cached)."""
    from jaxviz import realism
    from jaxviz.common.files import atomic_write
    from jaxviz.realism import neurons as neuron_metrics

    files = sorted(os.listdir(real)) if os.path.isdir(real) else [real]
    stamp = [(f, os.path.getsize(os.path.join(real, f))) for f in files] if os.path.isdir(real) else files
    key = _hash({"model": model.name, "layers": list(layers), "files": stamp, "side": model.resolution,
                 "n": n_photos})
    path = os.path.join(cache_dir, f"photo-activations-{key}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return {l: f[l] for l in layers}
    out: dict = {l: [] for l in layers}
    for start in range(0, n_photos, 64):
        photos = realism.load_real(range(start, min(n_photos, start + 64)), size=model.resolution, real=real)
        acts = neuron_metrics.photo_activations(model, photos.astype(np.float32) / 255.0, layers)
        for l in layers:
            out[l].append(acts[l])
        if not quiet:
            print(f"photo activations {start + len(photos)}/{n_photos}", file=sys.stderr)
    out = {l: np.concatenate(v) for l, v in out.items()}
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **out))
    return out


def render_method(name, model, cfg, targets, seed, run_dir, quiet):
    """Images ``[T,S,S,3]``, final objectives ``[T]`` and seconds of one method and seed (cached, resumable:
    :mod:`experiments.runs`)."""
    from experiments.runs import render_cached
    from jaxviz import objectives

    path = os.path.join(run_dir, "runs", name.replace("/", "_"), f"seed{seed}.npz")
    key_data = {"method": name, "targets": targets, "seed": seed, "passes": cfg["passes"], "size": cfg["size"]}
    read = {layer: layer for layer, _ in targets}
    if cfg.get("pre_activation"):
        key_data["pre_activation"] = True  # only when set: renders cached before the flag keep their key
        read = {layer: model.pre_activation(layer) for layer in read}
    return render_cached(name, model, lambda _: [objectives.channel(read[layer], c) for layer, c in targets], path=path,
                         key_data=key_data, passes=cfg["passes"], size=cfg["size"], seed_value=BASE_SEED + seed,
                         quiet=quiet, redirect_steps=cfg.get("redirect_steps") or 0)


def make_table(per_method: dict, photos: dict, against: str) -> tuple[str, list[dict]]:
    """Markdown table and CSV rows: mean ± sd per metric, p (paired Wilcoxon) vs ``against``."""
    head = "| method | " + " | ".join(label for _, label, _ in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    rows = []
    for name, scores in [("photos (reference)", photos), *per_method.items()]:
        cells, row = [], {"method": name}
        for key, _, better in METRICS:
            if key not in scores:
                cells.append("–")
                continue
            values = np.asarray(scores[key], np.float64)
            mean, sd = float(np.nanmean(values)), float(np.nanstd(values))
            row[f"{key}_mean"], row[f"{key}_sd"] = round(mean, 4), round(sd, 4)
            cell = f"{mean:.3g} ± {sd:.2g}"
            if name in per_method and name != against and against in per_method and better is not None:
                p = _paired(values, np.asarray(per_method[against][key], np.float64))
                row[f"{key}_p"] = p
                cell += f" (p {p})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        rows.append(row)
    return "\n".join(lines), rows


def write_grid(run_dir, images_by_method, targets, photos=None, n_rows=9):
    """Contact sheet: one row per channel, one column per method (the top photo first with ``photos``)."""
    from PIL import Image

    from jaxviz import report
    from jaxviz.common.files import atomic_write

    columns = ([] if photos is None else ["photo"]) + list(images_by_method)
    tiles, labels = [], []
    rows = np.unique(np.linspace(0, len(targets) - 1, min(n_rows, len(targets))).round().astype(int))
    for i in rows:
        layer, c = targets[i]
        if photos is not None:
            tiles.append(np.asarray(photos[i]))
            labels.append(f"top photo {layer}:{c}")
        for name in images_by_method:
            tiles.append(report.to_uint8(images_by_method[name][i]))
            labels.append(f"{name[:12]} {layer}:{c}")
    sheet = report.contact_sheet(tiles, labels, columns=len(columns), tile=160)
    atomic_write(os.path.join(run_dir, "grid.png"), lambda f: Image.fromarray(sheet).save(f, format="PNG"))


def _cell(values, i):
    if values is None:
        return ""
    v = float(np.asarray(values)[i])
    return "" if not np.isfinite(v) else f"{v:.6g}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.neurons", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["maco", "lucid", "jaxviz", "outliers"],
                   help="recipes (name[@key=value,...], as experiments.realism); default maco lucid jaxviz outliers")
    p.add_argument("--against", default="maco", help="method the paired tests and activation %% compare to")
    p.add_argument("--set", choices=("eval", "tune"), default="eval", help="channel set (default eval)")
    p.add_argument("--channels", type=int, default=48, help="channels, spread over the layers (default 48)")
    p.add_argument("--layers", default=",".join(DEFAULT_LAYERS), help="deep layers, comma-separated")
    p.add_argument("--seeds", type=int, default=2, help="seeds per channel (default 2)")
    p.add_argument("--passes", type=int, default=256, help="forward-backward passes per image (default 256)")
    p.add_argument("--size", type=int, default=128, help="side of what the model sees, px (default 128)")
    p.add_argument("--k", type=int, default=8, help="dataset examples per channel (default 8)")
    p.add_argument("--copy-side", type=int, default=448, help="input side of the copy count (default 448)")
    p.add_argument("--redirect-steps", type=int, default=0,
                   help="first passes with redirected ReLU gradients for every method (as Lucid's "
                        "relu_gradient_override), so channels that start dead (head: ReLU6) can move; default 0")
    p.add_argument("--pre-activation", action="store_true",
                   help="every method maximizes the channel before the layer's activation (head.bn for head: "
                        "Lucid's pre-ReLU targets), so no channel starts dead; the metrics stay on the layer")
    p.add_argument("--real", default=None, help="the 1,000 photos: a folder (sorted file i = class i)")
    p.add_argument("--out", default=None, help="run folder (default experiments/results/neurons-<date>)")
    p.add_argument("--quick", action="store_true", help="3 channels, 1 seed, 16 passes, 96 px, copy side 192")
    p.add_argument("--photos-in-grid", action="store_true", help="top photos in grid.png (local look; never commit)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.channels, args.seeds, args.passes, args.size, args.copy_side = 3, 1, 16, 96, 192
    return args


def _check(args, methods):
    from jaxviz.common.errors import UsageError

    for name, low in (("redirect_steps", 0), ("channels", 1), ("seeds", 1), ("passes", 1), ("size", 32), ("k", 1),
                      ("copy_side", 32)):
        if getattr(args, name) < low:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.against not in methods:
        raise UsageError(f"--against {args.against} is not one of --methods ({', '.join(methods)})")


def main(argv=None) -> int:
    import jaxviz

    jaxviz.use_cpu_cores()
    args = parse_args(argv)
    from jaxviz import realism
    from jaxviz.common.errors import JaxvizError, UsageError
    from jaxviz.common.files import atomic_write, atomic_write_json
    from jaxviz.realism import neurons as neuron_metrics

    try:
        methods = [m.strip() for m in args.methods if m.strip()]
        _check(args, methods)
        real = args.real or realism.default_real()
        if real is None or not os.path.isdir(real):
            raise UsageError(f"no photo folder: pass --real DIR (got {real!r})")
        n_photos = min(N_PHOTOS, len([f for f in os.listdir(real) if not f.startswith(".")]))
        if n_photos < args.k + 1:
            raise UsageError(f"--real {real} holds {n_photos} files; --k {args.k} needs at least {args.k + 1}")
        model = jaxviz.load_model("efficientnet_lite0")
        layers = [l.strip() for l in args.layers.split(",") if l.strip()]
        model.check_layers(layers)
        if any(len(model.layers[l]) != 3 for l in layers):
            raise UsageError(f"--layers must be spatial layers, got {layers}")
        sets = channel_sets({l: int(model.layers[l][-1]) for l in layers})
        targets = pick(sets[args.set], args.channels)
        run_dir = args.out or os.path.join(HERE, "results", f"neurons-{_dt.date.today().isoformat()}"
                                           + ("-quick" if args.quick else ""))
        os.makedirs(run_dir, exist_ok=True)
        atomic_write(os.path.join(run_dir, "command.txt"),
                     "python -m experiments.neurons " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) + "\n")
        cache = os.path.join(jaxviz.common.cache.cache_dir(), "neurons")
        acts = photo_table(model, real, n_photos, layers, cache, args.quiet)
        # references: every channel of both sets, so a rank means the same in every run
        ref_targets = [(l, c) for s in ("eval", "tune") for l in layers for c in sets[s][l]]
        ranked = {t: neuron_metrics.top_photos(acts[t[0]], [t[1]], args.k + 1)[0] for t in ref_targets}
        examples = np.stack([ranked[t][:args.k] for t in ref_targets])
        ref_ids = np.arange(len(ref_targets))
        own = np.array([ref_targets.index(t) for t in targets])
        lite2 = realism.load_judge("efficientnet_lite2")
        photo_feats = realism.reference_features(lite2, real, cache_dir=os.path.join(jaxviz.common.cache.cache_dir(),
                                                                                    "realism")).features
        atomic_write_json(os.path.join(run_dir, "sets.json"), {
            "rule": "eval i = floor((i + 1/4) C / 16), tune i = floor((i + 3/4) C / 16) per layer",
            "layers": layers, "eval": sets["eval"], "tune": sets["tune"], "run_set": args.set,
            "targets": [f"{l}:{c}" for l, c in targets], "k": args.k,
            "examples": {f"{l}:{c}": ranked[(l, c)][:args.k].tolist() for l, c in targets},
            "held_out_photo": {f"{l}:{c}": int(ranked[(l, c)][args.k]) for l, c in targets}})
        cfg = {"methods": methods, "set": args.set, "targets": [f"{l}:{c}" for l, c in targets],
               "seeds": args.seeds, "passes": args.passes, "size": args.size, "k": args.k,
               "copy_side": args.copy_side, "against": args.against, "redirect_steps": args.redirect_steps,
               "pre_activation": args.pre_activation, "real": os.path.abspath(real),
               "judge": "efficientnet_lite2", "base_seed": BASE_SEED, "photos": n_photos,
               "descriptions": {m: method_parts(m, model, passes=args.passes, size=args.size)[2] for m in methods}}
        atomic_write_json(os.path.join(run_dir, "config.json"), cfg)

        # reference row: the photos themselves (second views, never the exact pixels ranked)
        first = [int(ranked[t][0]) for t in targets]
        held = [int(ranked[t][args.k]) for t in targets]
        examples_photos = sorted({int(i) for t in targets for i in ranked[t][:args.k]})
        views = {i: realism.load_real([i], size=args.copy_side, real=real, view="second")[0] for i in
                 sorted(set(examples_photos) | set(held))}
        photo_copies = []
        for t in targets:
            imgs = np.stack([views[int(i)] for i in ranked[t][:args.k]]).astype(np.float32) / 255.0
            photo_copies.append(neuron_metrics.copies(model, imgs, [t] * args.k, side=args.copy_side).mean())
        held_imgs = np.stack([views[i] for i in held]).astype(np.float32) / 255.0
        held_feats = realism.judge_features(lite2, held_imgs).pool
        p = neuron_metrics.plausibility(held_feats, own, photo_feats, examples, ref_ids)
        photos_row = {"copies": np.array(photo_copies), "plausibility": p["cos_own"], "rank": p["rank"]}

        per_method, images, seconds = {}, {}, {}
        all_targets = targets * args.seeds
        ids = np.tile(own, args.seeds)
        for m in methods:
            parts = [render_method(m, model, cfg, targets, s, run_dir, args.quiet) for s in range(args.seeds)]
            images[m] = np.concatenate([q[0] for q in parts])
            seconds[m] = sum(q[2] for q in parts)
            feats = realism.judge_features(lite2, images[m]).pool
            p = neuron_metrics.plausibility(feats, ids, photo_feats, examples, ref_ids)
            maps = neuron_metrics.channel_maps(model, images[m], all_targets, side=args.copy_side)
            copies = neuron_metrics.copy_count(maps)
            alive = np.array([np.max(m) > 0 for m in maps], np.float64)  # maps may differ in size by layer
            per_method[m] = {"plausibility": p["cos_own"], "rank": p["rank"], "copies": copies,
                             "copies_alive": np.where(alive > 0, copies, np.nan), "alive": alive,
                             "activation": np.concatenate([np.asarray(q[1], np.float64) for q in parts])}
            print(f"{m}: rendered in {seconds[m]:.0f} s, scored", file=sys.stderr)
        for m in methods:
            per_method[m]["activation_pct"] = neuron_metrics.activation_percent(
                per_method[m]["activation"], per_method[args.against]["activation"])
        table, rows = make_table(per_method, photos_row, args.against)
        with open(os.path.join(run_dir, "per_image.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            keys = [k for k, _, _ in METRICS]
            writer = csv.writer(f)
            writer.writerow(["method", "seed", "target", *keys])
            for i, (l, c) in enumerate(targets):
                writer.writerow(["photos (reference)", "", f"{l}:{c}", *[_cell(photos_row.get(k), i) for k in keys]])
            for m in methods:
                for i, (l, c) in enumerate(all_targets):
                    writer.writerow([m, i // len(targets), f"{l}:{c}", *[_cell(per_method[m].get(k), i) for k in keys]])
        os.replace(os.path.join(run_dir, "per_image.csv.tmp"), os.path.join(run_dir, "per_image.csv"))
        with open(os.path.join(run_dir, "table.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "method", k))
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(os.path.join(run_dir, "table.csv.tmp"), os.path.join(run_dir, "table.csv"))
        by_layer = []
        for l in layers:
            sel = np.array([t[0] == l for t in all_targets])
            by_layer.append(f"| {l} | " + " | ".join(
                f"{np.nanmean(per_method[m]['copies'][sel]):.2f} / {np.nanmean(per_method[m]['plausibility'][sel]):.3f}"
                for m in methods) + " |")
        layer_table = ("| layer | " + " | ".join(methods) + " |\n|" + "---|" * (len(methods) + 1) + "\n"
                       + "\n".join(by_layer))
        timing = ", ".join(f"{m} {seconds[m]:.0f} s" for m in methods)
        atomic_write(os.path.join(run_dir, "table.md"),
                     f"{args.set} set: {len(targets)} channels ({', '.join(layers)}) x {args.seeds} seeds, "
                     f"{args.passes} passes, {args.size} px; {args.k} dataset examples per channel among "
                     f"{n_photos} photos (Lite0); "
                     f"{'targets before the activation (objective: the BatchNorm output), ' if args.pre_activation else ''}"
                     f"plausibility in held-out Lite2 (rank among {len(ref_targets)} "
                     f"channels' references); copies at input {args.copy_side} px; p: paired Wilcoxon vs "
                     f"{args.against}\n\n{table}\n\nPer layer, copies / plausibility:\n\n{layer_table}\n\n"
                     f"Render time: {timing}\n")
        grid_photos = ([realism.load_real([i], size=160, real=real)[0] for i in first]
                       if args.photos_in_grid else None)
        write_grid(run_dir, images, targets, grid_photos)
        print(table)
        print(os.path.abspath(run_dir))
        return 0
    except JaxvizError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
