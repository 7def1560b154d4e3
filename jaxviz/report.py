"""Outputs of a run: one PNG per target, a labelled contact sheet, an HTML gallery, metrics.json.

Layout of ``DIR`` (docs/design.md §3): ``<layer>_<channel>.png`` per target, ``grid.png``,
``images.npy`` (the float images, exact),
``index.html`` and ``metrics.json`` = ``{"config": {...}, "targets": [{"target", "activation",
"history", "suppressed", ...}]}``. :func:`write_comparison` puts several runs (e.g. ``none`` and
``outliers``) side by side in one gallery.
"""

from __future__ import annotations

import html
import math
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxviz.files import atomic_write, atomic_write_json, dumps, npy_bytes, replace_dir

__all__ = ["image_filename", "to_uint8", "write_run", "write_result", "target_records", "write_comparison",
           "contact_sheet", "svg_curve", "is_gallery_file"]

_GALLERY_FILES = ("images.npy", "metrics.json", "index.html")


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


def svg_curve(values: Sequence[float], *, width: int = 160, height: int = 48, color: str = "#2563eb") -> str:
    """A small inline SVG line plot (the objective over steps)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return ""
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or 1.0
    xs = np.linspace(1, width - 1, v.size)
    ys = height - 1 - (v - lo) / span * (height - 2)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>'
            f'<title>{lo:.3g} … {hi:.3g}</title></svg>')


def _heatmap_png(path: str, heat: np.ndarray, size: int) -> None:
    heat = np.asarray(heat, np.float64)
    heat = heat / heat.max() if heat.max() > 0 else heat
    rgb = np.stack([heat, np.zeros_like(heat), 1.0 - heat], -1)
    image = Image.fromarray(to_uint8(rgb)).resize((size, size), Image.NEAREST)
    _write_png(path, np.asarray(image))


def write_run(out: str, *, targets: Sequence[str], labels: Sequence[str], images: np.ndarray,
              records: Sequence[dict], config: Mapping, heatmaps: np.ndarray | None = None,
              title: str = "jaxviz") -> dict:
    """Writes the PNGs, ``grid.png``, ``index.html`` and ``metrics.json`` of one run.

    Args:
      out: output directory (exists and is writable).
      targets: target specs (``layer:channel``).
      labels: human-readable captions (e.g. class names).
      images: ``[T,H,W,3]`` float in [0, 1].
      records: per-target dicts for metrics.json (``activation``, ``history``, ``suppressed``...).
      config: the run's settings.
      heatmaps: optional ``[T,h,w]`` maps (e.g. where outlier positions were).
      title: page title.

    Returns:
      The metrics dict that was written.
    """
    tiles = [to_uint8(im) for im in images]
    files = []
    for i, (target, tile) in enumerate(zip(targets, tiles)):
        name = image_filename(target)
        _write_png(os.path.join(out, name), tile)
        files.append(name)
        if heatmaps is not None:
            _heatmap_png(os.path.join(out, "heat_" + name), heatmaps[i], tile.shape[0])
    atomic_write(os.path.join(out, "images.npy"), npy_bytes(np.asarray(images, np.float32)))  # exact, for metrics
    _write_png(os.path.join(out, "grid.png"), contact_sheet(tiles, [f"{t} {l}" for t, l in zip(targets, labels)]))
    metrics = {"config": dict(config), "targets": []}
    for target, label, file, record in zip(targets, labels, files, records):
        metrics["targets"].append({"target": target, "label": label, "image": file, **record})
    atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    cards = []
    for i, entry in enumerate(metrics["targets"]):
        heat = (f'<img class="heat" src="heat_{html.escape(entry["image"])}" title="outlier positions">'
                if heatmaps is not None else "")
        cards.append(
            f'<figure><img src="{html.escape(entry["image"])}">{heat}<figcaption><b>{html.escape(entry["target"])}'
            f'</b> {html.escape(entry["label"])}<br>activation {entry.get("activation", float("nan")):.3g}<br>'
            f'{svg_curve(entry.get("history", []))}</figcaption></figure>')
    settings = html.escape(dumps(metrics["config"]))
    atomic_write(os.path.join(out, "index.html"), _page(title, f"<p class=cfg>{settings}</p>" + "".join(cards)))
    return metrics


def target_records(result) -> list[dict]:
    """metrics.json records of a :class:`jaxviz.render.RenderResult`, one per target.

    Each has ``activation``, ``history``, the prior's per-step trace as ``<trace_name>_history``
    and its diagnostics (suppressed neurons, final D²...; see :func:`jaxviz.priors.describe`).
    """
    from jaxviz.priors import describe

    records = []
    for i in range(len(result.activation)):
        record = {"activation": float(result.activation[i]), "history": np.round(result.history[i], 5).tolist()}
        if result.trace_name:
            record[f"{result.trace_name}_history"] = np.round(result.trace[i], 4).tolist()
        record.update(describe(result.prior, i))
        records.append(record)
    return records


def write_result(out: str, result, *, targets: Sequence[str] | None = None, labels: Sequence[str] | None = None,
                 config: Mapping | None = None, title: str = "jaxviz") -> dict:
    """Writes a :class:`jaxviz.render.RenderResult` as :func:`write_run` does (creating ``out``).

    The gallery is written into a temporary sibling folder that replaces ``out`` only once it is
    complete (see :func:`jaxviz.files.replace_dir`): a failure keeps the previous gallery whole.

    Args:
      out: output directory.
      result: the render result.
      targets: names of the targets (default: the result's target descriptions).
      labels: captions (default empty).
      config: settings recorded in metrics.json.
      title: page title.

    Returns:
      The metrics dict written.
    """
    from jaxviz.checkpoint import check_writable_dir

    out = check_writable_dir(out, "out=")
    targets = list(targets or result.targets or [f"target {i}" for i in range(len(result.images))])
    labels = list(labels or [""] * len(targets))
    with replace_dir(out, outputs=is_gallery_file, what="out=") as staging:
        return write_run(staging, targets=targets, labels=labels, images=result.images,
                         records=target_records(result), config=dict(config or {}),
                         heatmaps=result.prior.get("outlier_map"), title=title)


def write_comparison(out: str, runs: Mapping[str, dict], *, title: str = "jaxviz comparison") -> str:
    """A gallery with one row per target and one column per run (e.g. DeepDream vs the method).

    Args:
      out: directory holding one sub-directory per run (written by :func:`write_run`).
      runs: ``{run name: metrics dict returned by write_run}``; sub-directory = run name.
      title: page title.

    Returns:
      Path of the written ``index.html``.
    """
    names = list(runs)
    first = runs[names[0]]["targets"]
    head = "<tr><th>target</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    rows = []
    for i, entry in enumerate(first):
        cells = []
        for name in names:
            e = runs[name]["targets"][i]
            heat = (f'<img class="heat" src="{html.escape(name)}/heat_{html.escape(e["image"])}">'
                    if os.path.exists(os.path.join(out, name, "heat_" + e["image"])) else "")
            d2 = "".join(f"<br>{label} {e[key]:.3g}" for key, label in
                         (("d2_used", "D²/dim (method layers)"), ("d2_heldout", "D²/dim (held-out layers)"))
                         if key in e)
            cells.append(f'<td><img src="{html.escape(name)}/{html.escape(e["image"])}">{heat}<br>'
                         f'activation {e["activation"]:.3g}{d2}<br>{svg_curve(e.get("history", []))}</td>')
        rows.append(f"<tr><td><b>{html.escape(entry['target'])}</b><br>{html.escape(entry['label'])}</td>"
                    + "".join(cells) + "</tr>")
    path = os.path.join(out, "index.html")
    atomic_write(path, _page(title, f"<table>{head}{''.join(rows)}</table>"))
    return path



def _page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:.4em;width:224px;"
             "vertical-align:top}img{width:224px;image-rendering:pixelated}img.heat{width:56px;opacity:.8}"
             "td{vertical-align:top;padding:.3em}.cfg{font-size:small;color:#555}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
