"""Small inline SVG pieces of the gallery: objective curves with labelled axes, the colour bar, the colour ramp."""

from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np

from jaxviz.common.images import to_uint8

__all__ = ["RAMP", "nice_ticks", "format_tick", "svg_curve", "colormap", "svg_colorbar"]


# a perceptually ordered dark-to-bright ramp (viridis-like), dark = never an outlier
RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


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


def format_tick(v: float) -> str:
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
             f'<title>{html.escape(ylabel)} at each {html.escape(xlabel)}: {format_tick(float(v[0]))} → '
             f'{format_tick(float(v[-1]))}</title>',
             f'<path d="M{left},{top}V{top + ph}H{left + pw}" fill="none" stroke="#444"/>']
    for t in nice_ticks(x0, x1):
        x = sx(t)
        parts.append(f'<path d="M{x:.1f},{top + ph}v3" stroke="#444"/>'
                     f'<text x="{x:.1f}" y="{top + ph + 12}" text-anchor="middle">{format_tick(t)}</text>')
    for t in nice_ticks(lo, hi):
        y = sy(t)
        parts.append(f'<path d="M{left - 3},{y:.1f}h3" stroke="#444"/><path d="M{left},{y:.1f}h{pw}" '
                     f'stroke="#ddd"/><text x="{left - 5}" y="{y + 3:.1f}" text-anchor="end">{format_tick(t)}</text>')
    points = " ".join(f"{sx(s):.1f},{sy(y):.1f}" for s, y in zip(steps, v))
    parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
    parts.append(f'<text class="xlabel" x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle">'
                 f'{html.escape(xlabel)}</text>')
    parts.append(f'<text class="ylabel" transform="translate(10,{top + ph / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(ylabel)}</text></svg>')
    return "".join(parts)


def colormap(values01: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` → uint8 RGB on the gallery's dark-to-bright ramp (shape ``[..., 3]``)."""
    t = np.clip(np.nan_to_num(np.asarray(values01, np.float64)), 0.0, 1.0) * (len(RAMP) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(RAMP) - 2)
    frac = (t - i)[..., None]
    return to_uint8(((1 - frac) * RAMP[i] + frac * RAMP[i + 1]) / 255.0)


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
                     f'<text x="{bar_w + 6}" y="{y + 3:.1f}">{format_tick(t)}</text>')
    parts.append(f'<text transform="translate({width - 4},{top + bar_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(label)}</text></svg>')
    return "".join(parts)
