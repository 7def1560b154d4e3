"""Outputs of a run: one PNG per target, a labelled contact sheet, an HTML gallery, metrics.json.

Layout of ``DIR`` (docs/design.md §3): ``<layer>_<channel>.png`` per target, ``grid.png``,
``images.npy`` (the float images, exact), ``heat_<layer>_<channel>.png`` (where the image was an
outlier, for priors that report it), ``index.html`` and ``metrics.json`` = ``{"config": {...},
"targets": [{"target", "activation", "history", "suppressed", "outlier_map", ...}]}``.
:func:`write_comparison` puts several runs (e.g. without and with the method) side by side.

The pages are plain HTML with inline SVG (no scripts): under each image the objective curve
with its axes, the outlier heat map with its colour bar and caption, the suppressed neurons and,
when a held-out judge has looked at the image (``judge`` in the record), its top-5 classes.
"""

from __future__ import annotations

import html
import math
import os
import re
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz.common.files import atomic_write, atomic_write_json, dumps, npy_bytes, replace_dir

__all__ = ["image_filename", "to_uint8", "write_run", "write_page", "write_result", "target_records",
           "write_comparison", "contact_sheet", "svg_curve", "svg_colorbar", "colormap", "nice_ticks",
           "is_gallery_file"]

_GALLERY_FILES = ("images.npy", "metrics.json", "index.html")
# a perceptually ordered dark-to-bright ramp (viridis-like), dark = never an outlier
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


def is_gallery_file(name: str) -> bool:
    """Whether a file name is one :func:`write_run` writes (a new run replaces all of them)."""
    return name in _GALLERY_FILES or name.endswith(".png")


def image_filename(target: str) -> str:
    """``blocks.10:7`` → ``blocks.10_7.png`` (safe on every filesystem)."""
    return target.replace(":", "_").replace("/", "_").replace(" ", "") + ".png"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float image in [0, 1] → uint8."""
    return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _write_png(path: str, image_u8: np.ndarray) -> None:
    atomic_write(path, lambda f: Image.fromarray(image_u8).save(f, format="PNG"))


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], *, columns: int | None = None,
                  tile: int = 160) -> np.ndarray:
    """Tiles uint8 images into one labelled sheet.

    Args:
      images: uint8 ``[H,W,3]`` images.
      labels: one caption per image.
      columns: tiles per row (default ≈ √n).
      tile: tile side in pixels.

    Returns:
      uint8 ``[rows·(tile+label), columns·tile, 3]``.
    """
    n = len(images)
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    label_h = 14
    sheet = Image.new("RGB", (columns * tile, rows * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (image, label) in enumerate(zip(images, labels)):
        r, c = divmod(i, columns)
        x, y = c * tile, r * (tile + label_h)
        sheet.paste(Image.fromarray(image).resize((tile, tile), Image.BILINEAR), (x, y))
        draw.text((x + 2, y + tile + 1), label[: tile // 6], fill=(0, 0, 0), font=font)
    return np.asarray(sheet)


# ------------------------------------------------------------------------------------ figures


def nice_ticks(lo: float, hi: float, *, count: int = 4) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 × 10ᵏ apart) inside ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    unit = 10.0 ** math.floor(math.log10(raw))
    step = next(m * unit for m in (1, 2, 5, 10) if m * unit >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]  # no "-0"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def svg_curve(values: Sequence[float], *, width: int = 224, height: int = 130, color: str = "#2563eb",
              xlabel: str = "step", ylabel: str = "objective") -> str:
    """An inline SVG line plot with ticked, labelled axes (the objective at each step).

    Value ``i`` is drawn at step ``i + 1``; non-finite values are left out. Returns ``""`` for
    fewer than two finite values.
    """
    v = np.asarray(values, np.float64).ravel()
    steps = np.arange(1, v.size + 1, dtype=np.float64)
    keep = np.isfinite(v)
    v, steps = v[keep], steps[keep]
    if v.size < 2:
        return ""
    left, right, top, bottom = 40, 8, 6, 30  # margins for tick labels and axis titles
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12 * max(1.0, abs(hi)):  # a flat curve still gets a readable axis
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = 1.0, float(max(steps[-1], 2))
    pw, ph = width - left - right, height - top - bottom

    def sx(s):
        return left + (s - x0) / (x1 - x0) * pw

    def sy(y):
        return top + ph - (y - lo) / (hi - lo) * ph

    parts = [f'<svg class="curve" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-size="9" font-family="sans-serif">',
             f'<title>{html.escape(ylabel)} at each {html.escape(xlabel)}: {_fmt(float(v[0]))} → '
             f'{_fmt(float(v[-1]))}</title>',
             f'<path d="M{left},{top}V{top + ph}H{left + pw}" fill="none" stroke="#444"/>']
    for t in nice_ticks(x0, x1):
        x = sx(t)
        parts.append(f'<path d="M{x:.1f},{top + ph}v3" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 12}" text-anchor="middle">{_fmt(t)}</text>')
    for t in nice_ticks(lo, hi):
        y = sy(t)
        parts.append(f'<path d="M{left - 3},{y:.1f}h3" stroke="#444"/><path d="M{left},{y:.1f}h{pw}" '
                     f'stroke="#ddd"/><text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end">{_fmt(t)}</text>')
    points = " ".join(f"{sx(s):.1f},{sy(y):.1f}" for s, y in zip(steps, v))
    parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
    parts.append(f'<text class="xlabel" x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle">'
                 f'{html.escape(xlabel)}</text>')
    parts.append(f'<text class="ylabel" transform="translate(10,{top + ph / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(ylabel)}</text></svg>')
    return "".join(parts)


def colormap(values01: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` → uint8 RGB on the gallery's dark-to-bright ramp (shape ``[..., 3]``)."""
    t = np.clip(np.nan_to_num(np.asarray(values01, np.float64)), 0.0, 1.0) * (len(_RAMP) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(_RAMP) - 2)
    frac = (t - i)[..., None]
    return to_uint8(((1 - frac) * _RAMP[i] + frac * _RAMP[i + 1]) / 255.0)


def svg_colorbar(vmax: float, *, label: str, height: int = 112, width: int = 62) -> str:
    """A vertical colour bar for :func:`colormap` from 0 (bottom) to ``vmax`` (top), with ticks."""
    bar_w, top, bar_h, bands = 10, 5, height - 10, 32
    # stacked bands of the very colours the heat maps use (no gradient ids to clash between bars)
    colours = colormap((np.arange(bands) + 0.5) / bands)
    parts = [f'<svg class="colorbar" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'font-size="9" font-family="sans-serif">']
    for k, (r, g, b) in enumerate(colours):
        y = top + bar_h - (k + 1) * bar_h / bands
        parts.append(f'<rect x="1" y="{y:.2f}" width="{bar_w}" height="{bar_h / bands + 0.3:.2f}" '
                     f'fill="rgb({r},{g},{b})"/>')
    parts.append(f'<rect x="1" y="{top}" width="{bar_w}" height="{bar_h}" fill="none" stroke="#444"/>')
    vmax = float(vmax) if vmax and math.isfinite(vmax) and vmax > 0 else 1.0
    ticks = nice_ticks(0.0, vmax, count=3)
    if vmax - ticks[-1] > 0.2 * vmax:  # label the top too (e.g. 14 rounds) when no round tick is near it
        ticks.append(vmax)
    for t in ticks:
        y = top + bar_h - t / vmax * bar_h
        parts.append(f'<path d="M{1 + bar_w},{y:.1f}h3" stroke="#444"/>'
                     f'<text x="{bar_w + 6}" y="{y + 3:.1f}">{_fmt(t)}</text>')
    parts.append(f'<text transform="translate({width - 4},{top + bar_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(label)}</text></svg>')
    return "".join(parts)


def _heatmap_png(path: str, heat: np.ndarray, size: int, vmax: float) -> None:
    heat = np.asarray(heat, np.float64)
    rgb = colormap(heat / vmax if vmax > 0 else np.zeros_like(heat))
    _write_png(path, np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST)))


# ------------------------------------------------------------------------------------ pages


def _heat_block(entry: Mapping, src: str) -> str:
    info = entry.get("outlier_map") or {}
    rounds, shape, layer = info.get("rounds"), info.get("shape") or [], info.get("layer")
    grid = "×".join(str(s) for s in shape)
    where = f" of {html.escape(layer)}" if layer else ""
    where += " (the model's input positions, not this image's)" if info.get("coordinates") == "model input" else ""
    caption = (f"How often each position{where} ({grid} grid) was an outlier of the natural-image "
               f"statistics at the {rounds} selection round{'' if rounds == 1 else 's'}." if rounds is not None else
               f"How often each position{where} was an outlier of the natural-image statistics.")
    vmax = info.get("vmax") or rounds or 1
    return (f'<div class="heat"><img class="heat" src="{html.escape(src)}" alt="outlier map">'
            f'{svg_colorbar(vmax, label="rounds an outlier")}<p class="caption">{caption}</p></div>')


def _suppressed_block(entry: Mapping) -> str:
    rows = entry.get("suppressed")
    if rows is None:
        return ""
    if not rows:
        return '<p class="suppressed">no neuron was suppressed</p>'
    body = "".join(f'<tr><td>{html.escape(str(r["layer"]))}:{int(r["channel"])}</td>'
                   f'<td>{float(r["mean_contribution"]):.3g}</td><td>{int(r["count"])}</td></tr>' for r in rows)
    return ('<table class="suppressed"><caption>suppressed neurons (strongest first)</caption><tr>'
            '<th>layer:channel</th><th title="mean share of D² when chosen">contribution</th>'
            f'<th title="selection rounds that chose it">count</th></tr>{body}</table>')


def _judge_block(entry: Mapping) -> str:
    judge = entry.get("judge")
    if not judge:
        return ""
    target = judge.get("target_class")
    items = "".join(f'<li{" class=hit" if c.get("class") == target else ""}>{html.escape(str(c.get("label", "")))}'
                    f' ({int(c["class"])}) {100 * float(c["p"]):.1f} %</li>' for c in judge.get("top5", []))
    extra = []
    if "plausibility_rank" in judge:
        extra.append(f'plausibility rank {judge["plausibility_rank"]:.0f} of {judge.get("plausibility_of", 1000)} '
                     f'(cosine {judge.get("cos_own", float("nan")):.2f} to the real photo)')
    return (f'<div class="judge"><b>held-out judge {html.escape(str(judge.get("model", "")))}</b>, top 5:'
            f'<ol>{items}</ol>{"<br>".join(extra)}</div>')


def _card(entry: Mapping, prefix: str = "", heat_exists: bool = False) -> str:
    """The body of one image's card: image, numbers, curve, heat map, suppressed neurons, verdict."""
    src = prefix + entry["image"]
    heat = _heat_block(entry, prefix + "heat_" + entry["image"]) if heat_exists else ""
    d2 = "".join(f"<br>{label} {entry[key]:.3g}" for key, label in
                 (("d2", "mean D² at the method's layers"),) if key in entry)
    return (f'<img class="main" src="{html.escape(src)}" alt="{html.escape(entry["target"])}">'
            f'<br>activation {entry.get("activation", float("nan")):.3g}{d2}<br>'
            f'{svg_curve(entry.get("history", []))}{heat}{_suppressed_block(entry)}{_judge_block(entry)}')


def write_page(out: str, metrics: Mapping, *, title: str = "jaxviz") -> None:
    """(Re)writes ``metrics.json`` and ``index.html`` of a run folder from its metrics dict.

    Use it after adding fields to the records (e.g. a judge's verdict); the images stay as written.
    """
    atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    cards = []
    for entry in metrics["targets"]:
        heat = os.path.exists(os.path.join(out, "heat_" + entry["image"]))
        cards.append(f'<figure><figcaption><b>{html.escape(entry["target"])}</b> {html.escape(entry["label"])}'
                     f'</figcaption>{_card(entry, "", heat)}</figure>')
    settings = html.escape(dumps(metrics["config"]))
    atomic_write(os.path.join(out, "index.html"), _page(title, f"<p class=cfg>{settings}</p>" + "".join(cards)))


def _heat_layer(config: Mapping) -> str | None:
    # the outlier prior maps its first layer; its description, recorded in the config, lists them in order
    match = re.search(r"layers=\[\s*'([^']+)'", str(config.get("prior", "")))
    return match[1] if match else None


def write_run(out: str, *, targets: Sequence[str], labels: Sequence[str], images: np.ndarray,
              records: Sequence[dict], config: Mapping, heatmaps: np.ndarray | None = None,
              title: str = "jaxviz", heat_layer: str | None = None) -> dict:
    """Writes the PNGs, ``grid.png``, ``index.html`` and ``metrics.json`` of one run.

    Args:
      out: output directory (exists and is writable).
      targets: target specs (``layer:channel``).
      labels: human-readable captions (e.g. class names).
      images: ``[T,H,W,3]`` float in [0, 1].
      records: per-target dicts for metrics.json (``activation``, ``history``, ``suppressed``,
        ``rounds``...).
      config: the run's settings.
      heatmaps: optional ``[T,h,w]`` counts of selection rounds at which each position was an outlier.
      title: page title.
      heat_layer: the layer the heat maps show (default: the first layer of the recorded prior).

    Returns:
      The metrics dict that was written.
    """
    tiles = [to_uint8(im) for im in images]
    heat_layer = heat_layer or _heat_layer(config)
    metrics = {"config": dict(config), "targets": []}
    for i, (target, label, tile, record) in enumerate(zip(targets, labels, tiles, records)):
        name = image_filename(target)
        _write_png(os.path.join(out, name), tile)
        entry = {"target": target, "label": label, "image": name, **record}
        if heatmaps is not None:
            heat = np.asarray(heatmaps[i], np.float64)
            rounds = record.get("rounds")
            vmax = float(rounds) if rounds else float(heat.max())  # colour = share of the rounds
            _heatmap_png(os.path.join(out, "heat_" + name), heat, tile.shape[0], vmax)
            entry["outlier_map"] = {"layer": heat_layer, "shape": list(heat.shape),  # + coordinates when known
                                    "rounds": None if rounds is None else int(rounds), "vmax": vmax,
                                    **{k[12:]: record[k] for k in ("outlier_map_coordinates",) if k in record}}
        metrics["targets"].append(entry)
    atomic_write(os.path.join(out, "images.npy"), npy_bytes(np.asarray(images, np.float32)))  # exact, for metrics
    _write_png(os.path.join(out, "grid.png"), contact_sheet(tiles, [f"{t} {l}" for t, l in zip(targets, labels)]))
    write_page(out, metrics, title=title)
    return metrics


def target_records(result) -> list[dict]:
    """metrics.json records of a :class:`jaxviz.render.RenderResult`, one per target.

    Each has ``activation``, ``history``, the prior's per-step trace as ``<trace_name>_history``
    and its diagnostics (suppressed neurons, final D²...; see :func:`jaxviz.priors.describe`).
    """
    from jaxviz.priors.base import describe

    records = []
    for i in range(len(result.activation)):
        record = {"activation": float(result.activation[i]), "history": np.round(result.history[i], 5).tolist()}
        if result.trace_name:
            record[f"{result.trace_name}_history"] = np.round(result.trace[i], 4).tolist()
        record.update(describe(result.prior, i))
        records.append(record)
    return records


def write_result(out: str, result, *, targets: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                 config: Mapping | None = None, title: str = "jaxviz", heat_layer: str | None = None) -> dict:
    """Writes a :class:`jaxviz.render.RenderResult` as :func:`write_run` does (creating ``out``).

    The gallery is written into a temporary sibling folder that replaces ``out`` only once it is
    complete (see :func:`jaxviz.common.files.replace_dir`): a failure keeps the previous gallery whole.

    Args:
      out: output directory.
      result: the render result.
      targets: names of the targets (default: the result's target descriptions).
      labels: captions (default empty).
      config: settings recorded in metrics.json.
      title: page title.
      heat_layer: see :func:`write_run`.

    Returns:
      The metrics dict written.
    """
    from jaxviz.common.files import check_writable_dir

    out = check_writable_dir(out, "out=")
    targets = list(targets or result.targets or [f"target {i}" for i in range(len(result.images))])
    labels = list(labels or [""] * len(targets))
    with replace_dir(out, outputs=is_gallery_file, what="out=") as staging:
        return write_run(staging, targets=targets, labels=labels, images=result.images,
                         records=target_records(result), config=dict(config or {}),
                         heatmaps=result.prior.get("outlier_map"), title=title, heat_layer=heat_layer)


def write_comparison(out: str, runs: Mapping[str, dict], *, title: str = "jaxviz comparison",
                     headers: Mapping[str, str] | None = None, intro: str = "") -> str:
    """A gallery with one row per target and one column per run (e.g. without and with the method).

    Args:
      out: directory holding one sub-directory per run (written by :func:`write_run`).
      runs: ``{run name: metrics dict returned by write_run}``; sub-directory = run name.
      title: page title.
      headers: column headings per run name (default the names).
      intro: a paragraph of HTML shown above the table (escaped by the caller).

    Returns:
      Path of the written ``index.html``.
    """
    names = list(runs)
    headers = headers or {}
    first = runs[names[0]]["targets"]
    head = "<tr><th>target</th>" + "".join(f"<th>{html.escape(headers.get(n, n))}</th>" for n in names) + "</tr>"
    rows = []
    for i, entry in enumerate(first):
        cells = []
        for name in names:
            e = runs[name]["targets"][i]
            heat = os.path.exists(os.path.join(out, name, "heat_" + e["image"]))
            cells.append(f"<td>{_card(e, name + '/', heat)}</td>")
        rows.append(f"<tr><td><b>{html.escape(entry['target'])}</b><br>{html.escape(entry['label'])}</td>"
                    + "".join(cells) + "</tr>")
    path = os.path.join(out, "index.html")
    intro = f"<p class=intro>{intro}</p>" if intro else ""
    atomic_write(path, _page(title, f"{intro}<table>{head}{''.join(rows)}</table>"))
    return path


def _page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:1em;max-width:1400px}figure{display:inline-block;margin:.4em;"
             "width:236px;vertical-align:top}img.main{width:224px}div.heat{display:flex;flex-wrap:wrap;"
             "align-items:flex-start;gap:4px;width:236px}img.heat{width:112px;image-rendering:pixelated}"
             ".caption{font-size:11px;color:#333;margin:0;width:232px}table.suppressed{font-size:11px;"
             "border-collapse:collapse;margin-top:.3em}table.suppressed td,table.suppressed th{padding:0 .4em;"
             "text-align:right}table.suppressed caption{text-align:left;font-weight:bold}div.judge{font-size:11px;"
             "margin-top:.3em;width:232px}div.judge ol{margin:.1em 0;padding-left:1.6em}li.hit{font-weight:bold;"
             "color:#15803d}td{vertical-align:top;padding:.3em}th{text-align:left}.cfg{font-size:small;color:#555}"
             ".intro{max-width:60em}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
