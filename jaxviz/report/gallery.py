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

from jaxviz.common.files import atomic_write, atomic_write_json, dumps, npy_bytes
from jaxviz.common.images import to_uint8
from jaxviz.report.svg import colormap, nice_ticks, svg_colorbar, svg_curve

__all__ = ["image_filename", "to_uint8", "write_run", "write_page", "write_result", "target_records",
           "write_comparison", "contact_sheet", "svg_curve", "svg_colorbar", "colormap", "nice_ticks",
           "GALLERY_FILES", "read_result"]

GALLERY_FILES = ("images.npy", "result.npz", "metrics.json", "index.html", "grid.png")  # every gallery has these


def image_filename(target: str) -> str:
    """``blocks.10:7`` → ``blocks.10_7.png``, ``blocks.10:7#1`` → ``blocks.10_7-1.png`` (safe on every
    filesystem and in URLs; other characters become ``_``)."""
    name = target.replace(" ", "").replace("#", "-")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "target"
    return name[:120] + ".png"


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
    from jaxviz.common import outputs

    atomic_write_json(os.path.join(out, "metrics.json"), metrics)
    cards = [f'<figure><figcaption><b>{html.escape(e["target"])}</b> {html.escape(e["label"])}</figcaption>'
             f'{_card(e, "", os.path.exists(os.path.join(out, "heat_" + e["image"])))}</figure>'
             for e in metrics["targets"]]
    settings = html.escape(dumps(metrics["config"]))
    atomic_write(os.path.join(out, "index.html"), _page(title, f"<p class=cfg>{settings}</p>" + "".join(cards)))
    outputs.record(out, ("metrics.json", "index.html"))  # a gallery rewritten in place keeps true hashes


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
    used: set = {"grid.png"}
    for i, (target, label, tile, record) in enumerate(zip(targets, labels, tiles, records)):
        name = image_filename(target)
        stem, k = name[:-4], 1
        while name in used:  # two targets with one name (e.g. two objectives with one repr) keep both images
            name, k = f"{stem}-{k}.png", k + 1
        used.add(name)
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
                 config: Mapping | None = None, title: str = "jaxviz", heat_layer: str | None = None,
                 force: bool = False) -> dict:
    """Writes a :class:`jaxviz.render.RenderResult` as :func:`write_run` does (creating ``out``).

    ``out`` follows the output-folder rule (:mod:`jaxviz.common.outputs`): a folder holding files
    jaxviz did not write is refused unless ``force`` (they are never touched); the new files are
    staged, then renamed into place, and only the previous run's own files are removed.

    Args:
      out: output directory.
      result: the render result.
      targets: names of the targets (default: the result's target descriptions).
      labels: captions (default empty).
      config: settings recorded in metrics.json.
      title: page title.
      heat_layer: see :func:`write_run`.
      force: write beside files jaxviz did not write.

    Returns:
      The metrics dict written.
    """
    from jaxviz.common import outputs
    from jaxviz.common.errors import OutputError

    targets = list(targets or result.targets or [f"target {i}" for i in range(len(result.images))])
    labels = list(labels or [""] * len(targets))
    with outputs.claim(out, force=force, what="out=", names=GALLERY_FILES) as folder:
        staging = folder.stage()
        try:
            arrays = {"activation": result.activation, "history": result.history, "trace": result.trace,
                      **{f"prior/{k}": np.asarray(v) for k, v in result.prior.items()}}
            atomic_write(os.path.join(staging, "result.npz"), lambda f: np.savez(f, **arrays))  # exact, for load
            metrics = write_run(staging, targets=targets, labels=labels, images=result.images,
                                records=target_records(result), config=dict(config or {}),
                                heatmaps=result.prior.get("outlier_map"), title=title, heat_layer=heat_layer)
        except OSError as e:
            folder.discard(staging)
            raise OutputError(f"out= {folder.path} cannot be written ({e.strerror or e}); its previous contents "
                              "are kept") from None
        except BaseException:
            folder.discard(staging)
            raise
        folder.commit(staging)
        return metrics


def read_result(directory: str) -> dict:
    """The fields of a saved result (what :meth:`RenderResult.load` is built from), read and checked.

    Every file is read through :mod:`jaxviz.common.readers`: a missing, damaged or altered file (its
    content hash in the folder's manifest) is one :class:`~jaxviz.common.errors.DataError` naming it.

    Returns:
      ``{"images", "activation", "history", "trace", "prior", "targets", "trace_name", "record"}``.
    """
    from jaxviz.common import readers

    fix = "write it again with RenderResult.save or `jaxviz visualize`"
    metrics = readers.read_json(os.path.join(directory, "metrics.json"), fix=fix, verify=True)
    entries = metrics.get("targets") if isinstance(metrics, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("target"), str)
                                                for e in entries):
        raise readers.damaged(os.path.join(directory, "metrics.json"), "its 'targets' are not a list of records", fix)
    images = readers.read_npy(os.path.join(directory, "images.npy"), fix=fix, verify=True)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(entries):
        raise readers.damaged(os.path.join(directory, "images.npy"),
                              f"it holds an array of shape {images.shape}, not {len(entries)} RGB images", fix)
    n = len(entries)
    npz = os.path.join(directory, "result.npz")
    if os.path.lexists(npz):
        arrays = readers.read_npz(npz, fix=fix, verify=True)
    else:  # a gallery from before result.npz: the rounded values of metrics.json
        try:
            arrays = {"activation": np.array([float(e["activation"]) for e in entries], np.float32),
                      "history": np.array([e["history"] for e in entries], np.float32).reshape(n, -1)}
        except (KeyError, TypeError, ValueError):
            raise readers.damaged(os.path.join(directory, "metrics.json"), "a record lacks numeric "
                                  "'activation' and 'history'", fix) from None
    trace_key = next((k for k in (entries[0] if entries else {}) if k.endswith("_history") and k != "history"), None)
    if "trace" not in arrays:
        try:
            arrays["trace"] = (np.array([e[trace_key] for e in entries], np.float32).reshape(n, -1) if trace_key
                               else np.zeros_like(arrays.get("history", np.zeros((n, 0), np.float32))))
        except (KeyError, TypeError, ValueError):
            raise readers.damaged(os.path.join(directory, "metrics.json"), f"a record lacks '{trace_key}'", fix) from None
    for key, ndim in (("activation", 1), ("history", 2), ("trace", 2)):
        a = arrays.get(key)
        if a is None or a.ndim != ndim or len(a) != n or not np.issubdtype(a.dtype, np.number):
            raise readers.damaged(npz if os.path.lexists(npz) else os.path.join(directory, "metrics.json"),
                                  f"'{key}' is missing or not {n} rows of numbers", fix)
    config = metrics.get("config")
    return {"images": images, "activation": arrays["activation"], "history": arrays["history"],
            "trace": arrays["trace"], "prior": {k[len("prior/"):]: v for k, v in arrays.items() if k.startswith("prior/")},
            "targets": tuple(e["target"] for e in entries),
            "trace_name": trace_key[: -len("_history")] if trace_key else None,
            "record": config if isinstance(config, dict) and config else None}


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
