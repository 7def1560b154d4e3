"""Results in a notebook and at a terminal: one-line reprs, an inline gallery, ``show()``.

:class:`jaxviz.render.RenderResult` delegates here. ``_repr_html_`` (what Jupyter shows for a
cell ending in a result) is a compact, self-contained gallery: each image as a ``data:`` URI, its
objective curve (inline SVG), the outlier heat map with its colour bar and the suppressed neurons
when the prior reports them, and the recipe line. :func:`show` displays that gallery inline in
IPython; elsewhere it writes it to a temporary ``index.html`` (printed and returned; ``open=True``
also opens a browser). The gallery ``RenderResult.save`` writes is the full one (README "Using it").
"""

from __future__ import annotations

import base64
import html
import io
import os
import sys
import tempfile

import numpy as np

__all__ = ["result_repr", "result_html", "show", "png_data_uri"]

_MAX_CARDS = 64  # a larger result shows its first 64 images inline (save() writes them all)


def _short(items, limit: int = 3) -> str:
    items = [str(t) if len(str(t)) <= 40 else str(t)[:39] + "…" for t in items]
    shown = ", ".join(items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


def result_repr(result) -> str:
    """One line: image count and size, targets, recipe, mean final activation."""
    images = np.asarray(result.images)
    n = images.shape[0] if images.ndim == 4 else 0
    size = f" {images.shape[1]}×{images.shape[2]}" if images.ndim == 4 else ""
    recipe = (result.record or {}).get("recipe")
    mean = f", mean activation {float(np.mean(result.activation)):.4g}" if n else ""
    return (f"RenderResult({n} image{'' if n == 1 else 's'}{size}, targets=[{_short(result.targets)}]"
            f"{f', recipe={recipe}' if recipe else ''}{mean})")


def png_data_uri(image_u8: np.ndarray, *, side: int | None = None, nearest: bool = False) -> str:
    """A ``data:image/png;base64,...`` URI of a uint8 image (resized to ``side`` px when given)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(image_u8))
    if side and im.size != (side, side):
        im = im.resize((side, side), Image.NEAREST if nearest else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _suppressed(rows) -> str:
    if rows is None:
        return ""
    if not rows:
        return "<div style='font-size:11px'>no neuron was suppressed</div>"
    items = ", ".join(f"{html.escape(str(r['layer']))}:{int(r['channel'])}" for r in rows[:6])
    more = f" … {len(rows) - 6} more" if len(rows) > 6 else ""
    return f"<div style='font-size:11px'>suppressed: {items}{more}</div>"


def _cards(result, labels, side: int) -> list[str]:
    from jaxviz.report.gallery import colormap, svg_colorbar, svg_curve, target_records, to_uint8

    records = target_records(result)
    heat = result.prior.get("outlier_map")
    cards = []
    for i, (name, record) in enumerate(zip(result.targets, records)):
        if i == _MAX_CARDS:
            cards.append(f"<p>… {len(records) - _MAX_CARDS} more (RenderResult.save writes them all)</p>")
            break
        label = labels[i] if labels and i < len(labels) else ""
        parts = [f"<b>{html.escape(str(name))}</b> {html.escape(label)}<br>",
                 f"<img src='{png_data_uri(to_uint8(result.images[i]), side=side)}' width={side} "
                 f"alt='{html.escape(str(name))}'><br>activation {record['activation']:.4g}<br>",
                 svg_curve(record["history"], width=side, height=110)]
        if heat is not None:
            h = np.asarray(heat[i], np.float64)
            rounds = record.get("rounds")
            vmax = float(rounds) if rounds else float(h.max()) or 1.0
            rgb = colormap(h / vmax)
            parts.append(f"<div style='display:flex;gap:4px'><img src='{png_data_uri(rgb, side=side // 2, nearest=True)}'"
                         f" width={side // 2} title='where the image was an outlier of natural-image statistics'>"
                         f"{svg_colorbar(vmax, label='rounds an outlier', height=side // 2)}</div>")
        parts.append(_suppressed(record.get("suppressed")))
        cards.append(f"<div style='display:inline-block;vertical-align:top;margin:4px;width:{side + 8}px;"
                     f"font-family:sans-serif;font-size:12px'>{''.join(parts)}</div>")
    return cards


def result_html(result, *, labels=None, side: int = 160) -> str:
    """The compact gallery of a result as one HTML fragment (no files, no scripts)."""
    record = result.record or {}
    settings = ", ".join(f"{k}={v}" for k, v in record.items() if k in ("recipe", "model", "size", "steps", "seed"))
    head = f"<div style='font-size:11px;color:#555'>{html.escape(settings)}</div>" if settings else ""
    return f"<div class='jaxviz-result'>{head}{''.join(_cards(result, labels, side))}</div>"


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return bool(shell and shell.get_ipython() and "IPKernelApp" in shell.get_ipython().config)
    except Exception:  # noqa: BLE001 - no usable IPython
        return False


def show(result, *, labels=None, open: bool = False, directory: str | None = None) -> str | None:
    """Shows ``result``: inline in a Jupyter kernel, else as a temporary HTML page.

    Args:
      result: a :class:`jaxviz.render.RenderResult`.
      labels: captions (e.g. class names).
      open: outside a notebook, also open the page with :mod:`webbrowser`.
      directory: where to write the page (default a new temporary folder).

    Returns:
      The page's path outside a notebook (also printed), ``None`` inline.
    """
    body = result_html(result, labels=labels)
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(body))
        return None
    from jaxviz.common.files import atomic_write

    folder = directory or tempfile.mkdtemp(prefix="jaxviz-show-")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "index.html")
    atomic_write(path, f"<!doctype html><html><head><meta charset=utf-8><title>jaxviz</title></head>"
                       f"<body>{body}</body></html>\n")
    print(path)
    if open:
        import webbrowser

        webbrowser.open("file://" + os.path.abspath(path))
    return path
