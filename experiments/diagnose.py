"""Diagnosis of the outlier prior (issue 21 §1): is there anything for it to act on, and does it act?

    python -m experiments.diagnose                      # 8 classes + 8 channels, 256 passes, 128 px
    python -m experiments.diagnose --quick              # 2 + 2 targets, 16 passes, 96 px (smoke run)

Part 1, **outlier rate**: the share of a layer's positions whose squared Mahalanobis distance under
the shipped pixel statistics of the 1,000 photos (``stats_store.shipped_stats_dir``) exceeds the
χ²(C) 0.99 quantile — the positions the method may select neurons at (README "The method") — at the
shipped prior layers ``blocks.2, blocks.4`` and two deeper ones (``--layers``), plus the mean
``D²/C`` (≈ 1 for a Gaussian sample of the statistics). Image sets: held-out views of real photos
(:func:`jaxviz.realism.second_view` of ``--photos`` photos, at the render size and at 224 px, the size
the statistics were collected at) and renders of each base (``maco``, ``lucid``, ``jaxviz`` = Fourier,
``pixel`` = the jaxviz recipe on a pixel parameterization, and the method ``outliers`` on MaCo) for
class targets (the tuning classes of ``experiments.realism``) and channel targets (tuning
channels of ``experiments.neurons`` of ``--channel-layers``). Everything is evaluated at the size the model saw it rendered.

Part 2, **how much the penalty moves the image**: the method's recipe (MaCo + outlier prior) rerun by
a loop that splits the gradient, for ``--trajectory`` class and channel targets, with the shipped
weight λ and with λ = 0 (plain MaCo; the prior still selects, so the would-be penalty is measured):
per pass, ``‖∇ target‖`` and ``‖λ ∇ penalty‖`` with respect to the image parameters, their cosine,
the mean ``D²/C`` and outlier share at the prior layers, and at every selection round the selected
neurons. Outputs in the run folder (default ``experiments/results/diagnosis-<date>``): ``table.md``
(both parts), ``outlier_rate.csv``, ``trajectory.csv``, ``selections.csv``, ``config.json``,
``command.txt``; renders cached under ``runs/`` (a rerun skips them).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shlex
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_SEED = 20261203
DEFAULT_LAYERS = ("blocks.2", "blocks.4", "blocks.8", "blocks.12")
METHODS = ("maco", "lucid", "jaxviz", "pixel", "outliers")


def recipe_for(name: str, size: int, passes: int):
    """The recipe of ``name`` at ``passes`` passes; ``pixel`` is the jaxviz recipe on :func:`jaxviz.image.param.pixel`."""
    from jaxviz import recipes
    from jaxviz.image import param

    if name == "pixel":
        base = recipes.get("jaxviz", size=size)
        recipe = dataclasses.replace(base, name="pixel", parameterization=param.pixel(),
                                     notes=base.notes.replace("fourier", "pixel (sigmoid)"))
    else:
        recipe = recipes.get(name, size=size)
    return recipe.at_budget(passes)


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render_set(name, model, targets, *, size, passes, run_dir, quiet):
    """Images ``[T,S,S,3]`` of method ``name`` for ``targets`` (``("class", c)`` or ``(layer, c)``), cached."""
    import jax

    import jaxviz
    from jaxviz import objectives, render
    from jaxviz.common.files import atomic_write
    from jaxviz.common.progress import progress_bar

    recipe = recipe_for(name, size, passes)
    config = recipe.config(batch_size=64, chunk_steps=16)
    parts = recipe.parts(model)
    described = f"{recipe.notes} | {config.numbers()} | " + " | ".join(
        f"{k}={jaxviz.describe(v)}" for k, v in sorted(parts.items()))
    signature = _hash({"method": name, "targets": targets, "described": described})
    path = os.path.join(run_dir, "runs", f"{name}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            if str(f["signature"]) == signature:
                return f["images"]
    objs = [recipe.target(c) if layer == "class" else objectives.channel(layer, c) for layer, c in targets]
    update, close = progress_bar(name, quiet=quiet)
    try:
        result = render.render_images(model, objs, key=jax.random.key(BASE_SEED), config=config, progress=update, **parts)
    finally:
        close()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, images=result.images, signature=signature))
    return result.images


def outlier_rates(model, images01, moments: dict, *, quantile: float = 0.99) -> dict:
    """Per image and layer: ``{layer: {"rate": [N], "d2": [N]}}`` (share above χ² quantile, mean ``D²/C``).

    Args:
      model: the model the statistics belong to.
      images01: ``[N, S, S, 3]`` in ``[0, 1]`` (evaluated as given).
      moments: ``{layer: (mean [C], precision [C, C])}`` float64.
      quantile: of χ²(C).
    """
    from jaxviz.realism import diagnostics as metrics
    from jaxviz.stats import outliers

    feats = metrics.run_features(model, images01, list(moments), batch_size=8)
    out = {}
    for layer, (mu, prec) in moments.items():
        a = np.asarray(feats[layer], np.float64)
        x = a.reshape(a.shape[0], -1, a.shape[-1])
        d = x - mu
        d2 = np.einsum("nmi,ij,nmj->nm", d, prec, d)          # float64 D² of every position
        thr = outliers.chi2_threshold(x.shape[-1], quantile)
        out[layer] = {"rate": (d2 > thr).mean(axis=1), "d2": d2.mean(axis=1) / x.shape[-1]}
    return out


def trajectory_step(model, recipe, layers_moments: dict, *, quantile: float = 0.99):
    """One pass of ``recipe`` (the method: its prior must be an :class:`jaxviz.priors.OutlierPrior`), gradient split.

    Args:
      model: the optimized model.
      recipe: the outlier recipe; its prior's options are kept and its weight set to 1, so the
        penalty is measured per unit λ whatever λ the update uses.
      layers_moments: ``{layer: (mean, precision)}`` of the prior layers (for D² and outlier share).
      quantile: of χ²(C) for the outlier share and the selection.

    Returns:
      ``(parts, prior, one)`` where ``one(params, opt_state, prior_state, n, key, weight, objective) ->
      (params, opt_state, prior_state, record, selections)`` is jitted (one compile per objective
      structure) and updates with ``∇target − weight · ∇penalty``.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from jaxviz.render import step
    from jaxviz.stats import outliers

    parts = recipe.parts(model)
    prior = dataclasses.replace(parts["prior"], weight=1.0)
    parameterization, transform, optimizer = parts["parameterization"], parts["transform"], parts["optimizer"]
    stats = {l: (jnp.asarray(m, jnp.float32), jnp.asarray(p, jnp.float32)) for l, (m, p) in layers_moments.items()}
    thresholds = {l: outliers.chi2_threshold(int(m.shape[0]), quantile) for l, (m, _) in layers_moments.items()}

    def split(params, prior_state, n, k, objective):
        layers = tuple(dict.fromkeys((*objective.layers, *prior.layers, *stats)))
        image = parameterization.to_image(params)
        feats = model.features(model.params, step.model_input(model, transform(image, key=k)), layers)
        penalty, new_state, _ = prior.apply(feats, prior_state, n)
        return (objective(feats), penalty), (new_state, feats)

    @jax.jit
    def one(params, opt_state, prior_state, n, k, weight, objective):
        (value, penalty), vjp, (new_state, feats) = jax.vjp(
            lambda p: split(p, prior_state, n, k, objective), params, has_aux=True)
        (g_t,) = vjp((jnp.ones_like(value), jnp.zeros_like(penalty)))
        (g_p,) = vjp((jnp.zeros_like(value), jnp.ones_like(penalty)))
        grad = jax.tree.map(lambda a, b: a - weight * b, g_t, g_p)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grad), opt_state, params)
        params = optax.apply_updates(params, updates)
        flat_t = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g_t)])
        flat_p = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g_p)])
        nt, np_ = jnp.linalg.norm(flat_t), jnp.linalg.norm(flat_p)
        rec = {"value": value, "g_target": nt, "g_penalty": np_,
               "cosine": jnp.sum(flat_t * flat_p) / jnp.maximum(nt * np_, 1e-30)}
        sel = {}
        for l, (mu, prec) in stats.items():
            x = jax.lax.stop_gradient(feats[l]).reshape(-1, mu.shape[0])
            d2 = outliers.mahalanobis(x, mu, prec)
            rec[f"d2/{l}"] = jnp.mean(d2) / mu.shape[0]
            rec[f"share/{l}"] = jnp.mean(d2 > thresholds[l])
            s = outliers.select(x, mu, prec, k=min(prior.k, int(mu.shape[0])), threshold=thresholds[l])
            sel[l] = (s.neurons, s.score)
        return params, opt_state, new_state, rec, sel

    return parts, prior, one


def trajectory(model, objective, *, recipe, weight: float, key, stepper):
    """Runs the method's recipe for one target with update weight ``weight`` (0: the base alone).

    Args:
      model: the optimized model.
      objective: the target.
      recipe: the outlier recipe (``recipe.passes`` passes).
      weight: λ of the update; the penalty's gradient is recorded per unit λ either way.
      key: PRNG key of the image.
      stepper: :func:`trajectory_step` of ``model`` and ``recipe``.

    Returns:
      ``(records, selections)``: per pass ``{"value", "g_target", "g_penalty" (unit λ), "cosine",
      "d2/<layer>", "share/<layer>"}`` lists, and per selection round ``{"pass", "layer", "neurons",
      "score"}`` dicts (what the prior selects at that pass).
    """
    import jax
    import jax.numpy as jnp

    from jaxviz.render import step

    parts, prior, one = stepper
    parameterization, transform = parts["parameterization"], parts["transform"]
    params = parameterization.init(key=jax.random.split(key)[0], size=recipe.size)
    seen = transform(parameterization.to_image(params), key=step.step_key(key, 0))
    prior_state = prior.init(model.features(model.params, step.model_input(model, seen), prior.layers))
    opt_state = parts["optimizer"].init(params)
    records: dict = {}
    selections = []
    for n in range(recipe.passes):
        params, opt_state, prior_state, rec, sel = one(params, opt_state, prior_state, jnp.int32(n),
                                                       step.step_key(key, n), jnp.float32(weight), objective)
        for name, v in rec.items():
            records.setdefault(name, []).append(float(v))
        if n >= prior.warmup and (n - prior.warmup) % prior.every == 0:
            for l, (neurons, score) in sel.items():
                score = np.asarray(score)
                chosen = [int(c) for c, s in zip(np.asarray(neurons), score) if s > 0]
                selections.append({"pass": n, "layer": l, "neurons": chosen,
                                   "score": [round(float(s), 2) for s in score[score > 0]]})
    return records, selections


def _fmt(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{np.nanmean(v):.3g} ± {np.nanstd(v):.2g}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.diagnose", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"renders to diagnose (default {' '.join(METHODS)})")
    p.add_argument("--classes", type=int, default=8, help="class targets (tuning classes, default 8)")
    p.add_argument("--channels", type=int, default=8, help="channel targets (tuning channels, default 8)")
    p.add_argument("--channel-layers", default="blocks.15",
                   help="layers of the channel targets (default blocks.15: one compiled program per layer)")
    p.add_argument("--photos", type=int, default=64, help="real photos (held-out views, default 64)")
    p.add_argument("--passes", type=int, default=256, help="passes per image (default 256)")
    p.add_argument("--size", type=int, default=128, help="render side, px (default 128)")
    p.add_argument("--layers", default=",".join(DEFAULT_LAYERS), help="layers of the outlier rate")
    p.add_argument("--trajectory", type=int, default=2, help="class and channel targets each for part 2 (default 2)")
    p.add_argument("--real", default=None, help="photo folder (sorted file i = class i)")
    p.add_argument("--out", default=None, help="run folder (default experiments/results/diagnosis-<date>)")
    p.add_argument("--quick", action="store_true", help="2 classes, 2 channels, 8 photos, 16 passes, 96 px")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.classes, args.channels, args.photos, args.passes, args.size, args.trajectory = 2, 2, 8, 48, 96, 1
    return args


def main(argv=None) -> int:
    import jaxviz

    jaxviz.use_cpu_cores()
    args = parse_args(argv)
    import jax

    from experiments import neurons
    from experiments import realism as realism_exp
    from jaxviz import objectives, realism
    from jaxviz.common.errors import JaxvizError, UsageError
    from jaxviz.common.files import atomic_write, atomic_write_json
    from jaxviz.stats import store as stats_store

    try:
        for name in ("classes", "channels", "photos", "passes", "trajectory"):
            if getattr(args, name) < (0 if name in ("classes", "channels", "trajectory") else 1):
                raise UsageError(f"--{name} must be positive, got {getattr(args, name)}")
        bad = [m for m in args.methods if m not in METHODS]
        if bad:
            raise UsageError(f"unknown method {bad[0]} (choose {', '.join(METHODS)})")
        real = args.real or realism.default_real()
        if real is None or not os.path.isdir(real):
            raise UsageError(f"no photo folder: pass --real DIR (got {real!r})")
        model = jaxviz.load_model("efficientnet_lite0")
        layers = [l.strip() for l in args.layers.split(",") if l.strip()]
        model.check_layers(layers)
        bundle = stats_store.load_stats(stats_store.shipped_stats_dir(model.name, "pixel"), model=model, layers=layers)
        moments = {l: (np.asarray(s.mean, np.float64), np.asarray(s.precision, np.float64))
                   for l, s in bundle.layers.items()}
        classes = realism_exp.tune_classes(8, realism_exp.eval_classes(64))[:args.classes]
        deep = [l.strip() for l in args.channel_layers.split(",") if l.strip()]
        model.check_layers(deep)
        sets = neurons.channel_sets({l: int(model.layers[l][-1]) for l in deep})
        channels = neurons.pick(sets["tune"], args.channels) if args.channels else []
        targets = [("class", c) for c in classes] + [tuple(t) for t in channels]
        n_files = len([f for f in os.listdir(real) if not f.startswith(".")])
        photo_ids = sorted({int(round(x)) for x in np.linspace(0, min(1000, n_files) - 1, args.photos)})
        run_dir = args.out or os.path.join(HERE, "results", f"diagnosis-{_dt.date.today().isoformat()}"
                                           + ("-quick" if args.quick else ""))
        os.makedirs(run_dir, exist_ok=True)
        atomic_write(os.path.join(run_dir, "command.txt"),
                     "python -m experiments.diagnose " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) + "\n")
        atomic_write_json(os.path.join(run_dir, "config.json"), {
            "methods": args.methods, "targets": [f"{l}:{c}" for l, c in targets], "photos": photo_ids,
            "passes": args.passes, "size": args.size, "layers": layers, "quantile": 0.99,
            "statistics": "shipped pixel statistics of the 1,000 photos (centre view, 224 px)",
            "descriptions": {m: recipe_for(m, args.size, args.passes).notes for m in args.methods}})

        # ---- part 1: outlier rates
        rows = []  # (set, kind, {layer: {"rate", "d2"}})
        for side in (args.size, 224):
            photos = realism.load_real(photo_ids, size=side, real=real, view="second").astype(np.float32) / 255.0
            rows.append((f"photos, held-out view, {side} px", "photo", outlier_rates(model, photos, moments)))
        kinds = np.array(["class" if l == "class" else "channel" for l, _ in targets])
        for m in args.methods:
            t0 = time.perf_counter()
            images = render_set(m, model, targets, size=args.size, passes=args.passes, run_dir=run_dir,
                                quiet=args.quiet)
            rates = outlier_rates(model, images, moments)
            for kind in ("class", "channel"):
                sel = kinds == kind
                if sel.any():
                    rows.append((m, kind, {l: {k: v[sel] for k, v in r.items()} for l, r in rates.items()}))
            print(f"{m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        with open(os.path.join(run_dir, "outlier_rate.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["images", "targets", "layer", "rate_mean", "rate_sd", "d2_per_dim_mean", "n"])
            for name, kind, r in rows:
                for l in layers:
                    w.writerow([name, kind, l, f"{r[l]['rate'].mean():.4f}", f"{r[l]['rate'].std():.4f}",
                                f"{r[l]['d2'].mean():.4f}", len(r[l]["rate"])])
        os.replace(os.path.join(run_dir, "outlier_rate.csv.tmp"), os.path.join(run_dir, "outlier_rate.csv"))
        head = "| images | targets | " + " | ".join(f"{l} outlier share" for l in layers) + " | " + \
            " | ".join(f"{l} D²/C" for l in layers) + " |"
        lines = [head, "|" + "---|" * (2 + 2 * len(layers))]
        for name, kind, r in rows:
            lines.append(f"| {name} | {kind} | " + " | ".join(_fmt(r[l]["rate"]) for l in layers) + " | "
                         + " | ".join(f"{np.mean(r[l]['d2']):.3g}" for l in layers) + " |")
        part1 = "\n".join(lines)

        # ---- part 2: how much the penalty moves the image
        from jaxviz import recipes

        method = recipes.get("outliers", size=args.size).at_budget(args.passes)
        prior_layers = list(stats_store.SHIPPED_PRIOR_LAYERS)
        prior_moments = {l: moments[l] for l in prior_layers if l in moments} or {
            l: (np.asarray(s.mean, np.float64), np.asarray(s.precision, np.float64)) for l, s in
            stats_store.load_stats(stats_store.shipped_stats_dir(model.name, "pixel"), model=model,
                                   layers=prior_layers).layers.items()}
        chosen = [t for t in targets if t[0] == "class"][:args.trajectory] + \
            [t for t in targets if t[0] != "class"][:args.trajectory]
        traj_rows, sel_rows, summary = [], [], []
        stepper = trajectory_step(model, method, prior_moments)
        shipped_weight = float(method.parts(model)["prior"].weight)
        for i, (layer, c) in enumerate(chosen):
            obj = method.target(c) if layer == "class" else objectives.channel(layer, c)
            key = jax.random.fold_in(jax.random.key(BASE_SEED), i)
            per_weight = {}
            for lam in (shipped_weight, 0.0):
                t0 = time.perf_counter()
                rec, sels = trajectory(model, obj, recipe=method, weight=lam, key=key, stepper=stepper)
                per_weight[lam] = (rec, sels)
                print(f"trajectory {layer}:{c} lambda={lam}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                for n in range(len(rec["value"])):
                    traj_rows.append([f"{layer}:{c}", lam, n] + [f"{rec[k][n]:.5g}" for k in sorted(rec)])
                for s in sels:
                    sel_rows.append([f"{layer}:{c}", lam, s["pass"], s["layer"], " ".join(map(str, s["neurons"])),
                                     " ".join(map(str, s["score"]))])
            warm = method.parts(model)["prior"].warmup
            for lam, (rec, sels) in per_weight.items():
                after = slice(warm, None)
                ratio = np.asarray(rec["g_penalty"][after]) * shipped_weight / np.maximum(
                    np.asarray(rec["g_target"][after]), 1e-30)
                distinct = {(s["layer"], n) for s in sels for n in s["neurons"]}
                rounds_with = sum(1 for s in sels if s["neurons"])
                summary.append(
                    f"| {layer}:{c} | {lam:g} | {rec['value'][-1]:.3g} | "
                    f"{np.median(ratio):.3g} | {np.mean(rec['cosine'][after]):.2f} | "
                    + " | ".join(f"{rec[f'd2/{l}'][warm - 1]:.3g} → {rec[f'd2/{l}'][-1]:.3g}" for l in prior_layers)
                    + " | " + " | ".join(f"{rec[f'share/{l}'][warm - 1]:.3f} → {rec[f'share/{l}'][-1]:.3f}"
                                         for l in prior_layers)
                    + f" | {rounds_with}/{len(sels)} | {len(distinct)} |")
        keys = sorted(rec)
        with open(os.path.join(run_dir, "trajectory.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["target", "lambda", "pass", *keys])
            w.writerows(traj_rows)
        os.replace(os.path.join(run_dir, "trajectory.csv.tmp"), os.path.join(run_dir, "trajectory.csv"))
        with open(os.path.join(run_dir, "selections.csv.tmp"), "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["target", "lambda", "pass", "layer", "neurons", "scores"])
            w.writerows(sel_rows)
        os.replace(os.path.join(run_dir, "selections.csv.tmp"), os.path.join(run_dir, "selections.csv"))
        part2 = ("| target | λ | final objective | median ‖λ∇pen‖/‖∇target‖ after warm-up (λ = shipped) | "
                 "mean cos(∇target, ∇pen) | " + " | ".join(f"{l} D²/C end of warm-up → final" for l in prior_layers)
                 + " | " + " | ".join(f"{l} outlier share warm-up → final" for l in prior_layers)
                 + " | rounds that selected (layer-rounds) | distinct neurons selected |\n"
                 + "|" + "---|" * (7 + 2 * len(prior_layers)) + "\n" + "\n".join(summary))
        atomic_write(os.path.join(run_dir, "table.md"),
                     f"Diagnosis of the outlier prior: {args.passes} passes, {args.size} px; shipped pixel statistics "
                     f"(1,000 photos, 224 px centre view); outlier = D² above the χ²(C) 0.99 quantile.\n\n"
                     f"## 1. Outlier share of positions (mean ± sd over images)\n\n{part1}\n\n"
                     f"## 2. The method's gradient (MaCo + outlier prior), split\n\n{part2}\n")
        print(part1)
        print(part2)
        print(os.path.abspath(run_dir))
        return 0
    except JaxvizError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
