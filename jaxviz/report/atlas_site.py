"""The atlas's static site: a layer page, one page per channel, ``atlas.json`` (README "Atlas").

Everything is in the folder: no CDN, no fetch (the layer page carries its own script and reads its
cards' ``data-*`` attributes, so it works from ``file://``), images load lazily (``loading=lazy``),
so a 1,280-channel layer opens quickly. The layer page sorts and filters the cards by the measures
and finds a channel by number; a channel page shows the visualization(s), the objective curve, the
measures, and each dataset example with the channel's map over it and the patch under its maximum.
"""

from __future__ import annotations

import base64
import html
import os

import numpy as np
from PIL import Image

from jaxviz.common.files import atomic_write, atomic_write_json
from jaxviz.common.images import to_uint8
from jaxviz.report.svg import colormap, svg_curve

__all__ = ["write_site", "notebook_html", "MEASURES"]

# (record key, label, definition) — the definitions of jaxviz.atlases.phases / jaxviz.realism.neurons
MEASURES = (
    ("objective", "objective", "the channel objective (spatial mean) the visualization reached"),
    ("objective_vs_best_example", "objective / best example", "the objective as a share of its best example's"),
    ("copies", "copies", "separated peaks of the channel's map on the visualization (≥ ½ max, 8-connected)"),
    ("copies_examples", "copies in examples", "the same count, mean over its dataset examples"),
    ("plausibility", "plausibility", "mean cosine in a held-out judge's pooled features to its examples"),
    ("plausibility_rank", "plausibility rank", "channels of this atlas whose examples are closer (0 = best)"),
)
SOURCE_NOTE = ("Definitions: README “Atlas” and jaxviz.realism.neurons (the deep-neuron stick's). A dead channel's "
               "map is ≤ 0 everywhere on its image: the image is not a visualization.")

STYLE = ("body{font-family:sans-serif;margin:1em;color:#111}.meta{font-size:13px;color:#444;max-width:70em}"
         ".controls{margin:.8em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:center;font-size:14px}"
         "#grid{display:flex;flex-wrap:wrap;gap:8px}.card{width:172px;border:1px solid #ccc;border-radius:4px;"
         "padding:4px;text-decoration:none;color:#111;font-size:11px}.card.dead{background:#fee2e2}"
         ".card.found{outline:3px solid #2563eb}.card .pair{display:flex;gap:4px}.card img{width:84px;height:84px;"
         "object-fit:cover;background:#eee}.num{font-weight:bold;font-size:13px}.badge{color:#b91c1c;"
         "font-weight:bold}table.m td,table.m th{padding:.15em .6em;text-align:left;font-size:13px}"
         ".ex{display:inline-block;margin:.3em;vertical-align:top;font-size:11px}.ex img{width:150px;height:150px;"
         "object-fit:cover}.ex img.patch{width:72px;height:72px}.vis img{width:224px;image-rendering:auto}"
         "figure{display:inline-block;margin:.3em}")

SCRIPT = """
(function(){
  var grid=document.getElementById('grid'), cards=[].slice.call(grid.children);
  var sort=document.getElementById('sort'), dir=document.getElementById('dir'), filt=document.getElementById('filter');
  var find=document.getElementById('find'), count=document.getElementById('count');
  function val(c,k){var v=c.getAttribute('data-'+k); return v===''||v===null?NaN:parseFloat(v);}
  function apply(){
    var k=sort.value, d=dir.value==='desc'?-1:1;
    cards.sort(function(a,b){var x=val(a,k),y=val(b,k);
      if(isNaN(x)&&isNaN(y))return val(a,'channel')-val(b,'channel'); if(isNaN(x))return 1; if(isNaN(y))return -1;
      return (x-y)*d || val(a,'channel')-val(b,'channel');});
    var shown=0;
    cards.forEach(function(c){var alive=c.getAttribute('data-alive')==='1';
      var show=filt.value==='all'||(filt.value==='alive'&&alive)||(filt.value==='dead'&&!alive);
      c.style.display=show?'':'none'; shown+=show?1:0; grid.appendChild(c);});
    count.textContent=shown+' of '+cards.length+' channels';
  }
  function locate(){
    cards.forEach(function(c){c.classList.remove('found');});
    var n=find.value.trim(); if(n==='')return;
    var c=document.getElementById('c'+parseInt(n,10));
    if(c){c.style.display=''; c.classList.add('found'); c.scrollIntoView({block:'center'});}
  }
  sort.onchange=apply; dir.onchange=apply; filt.onchange=apply; find.oninput=locate;
  apply();
})();
"""


def _jpg(path, image_u8):
    atomic_write(path, lambda f: Image.fromarray(image_u8).save(f, format="JPEG", quality=90))


def _overlay(image_u8, heat, vmax):
    side = image_u8.shape[0]
    h = Image.fromarray(np.asarray(heat / vmax if vmax > 0 else np.zeros_like(heat), np.float32), mode="F")
    up = np.asarray(h.resize((side, side), Image.BILINEAR), np.float64)
    colours = colormap(np.clip(up, 0, 1)).astype(np.float64)
    return np.clip(0.45 * image_u8 + 0.55 * colours, 0, 255).astype(np.uint8)


def _patch(image_u8, box, side=96):
    top, left, s = (int(v) for v in box)
    crop = image_u8[top:top + s, left:left + s]
    return np.asarray(Image.fromarray(crop).resize((side, side), Image.BICUBIC))


def _fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}g}"


def _name(ch):
    return f"c{ch:04d}"


def _page(title, body, script=""):
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}{f'<script>{script}</script>' if script else ''}"
            "</body></html>\n")


def _meta_line(meta):
    return html.escape(f"{meta['model']} · layer {meta['layer']} · data {meta['data_description']} "
                       f"({meta['images']} images) · {meta['k']} examples per channel · recipe {meta['recipe']}, "
                       f"{meta['passes']} passes at {meta['size']} px · {meta['images_per_channel']} image(s) per "
                       f"channel · plausibility judge {meta['judge'] or 'none'} · copies at {meta['copy_side']} px"
                       + _target_note(meta))


def _target_note(meta) -> str:
    target = meta.get("target_layer") or meta["layer"]  # atlases written before pre-activation targets
    return "" if target == meta["layer"] else f" · maximized {target}, the point before the activation"


def _card(r):
    ch = r["channel"]
    attrs = " ".join(f'data-{k.replace("_", "-")}="{"" if r[k] is None else r[k]}"' for k, _, _ in MEASURES)
    first = f"img/{_name(ch)}_e0.jpg" if r["examples"] else ""
    dead = "" if r["alive"] else ' <span class="badge">dead</span>'
    return (f'<a class="card{"" if r["alive"] else " dead"}" id="c{ch}" href="channels/{_name(ch)}.html" '
            f'data-channel="{ch}" data-alive="{int(r["alive"])}" {attrs}>'
            f'<div class="pair"><img loading="lazy" src="img/{_name(ch)}_v0.png" alt="visualization of channel {ch}">'
            + (f'<img loading="lazy" src="{first}" alt="top example of channel {ch}">' if first else "")
            + f'</div><span class="num">{ch}</span>{dead}<br>obj {_fmt(r["objective"])} · copies '
            f'{_fmt(r["copies"])}/{_fmt(r["copies_examples"])} · plaus {_fmt(r["plausibility"])}</a>')


def _layer_page(meta, records):
    options = "".join(f'<option value="{k.replace("_", "-")}">{html.escape(label)}</option>'
                      for k, label, _ in (("channel", "channel", ""), *MEASURES))
    dead = sum(not r["alive"] for r in records)
    body = (f"<h1>{html.escape(meta['title'])}</h1><p class=meta>{_meta_line(meta)}. {len(records)} channels, "
            f"{dead} dead. Each card: the visualization, then the channel's top dataset example; copies: "
            f"visualization / examples. {html.escape(SOURCE_NOTE)} Machine-readable: "
            f"<a href=atlas.json>atlas.json</a>.</p>"
            f'<div class=controls><label>sort by <select id=sort>{options}</select></label>'
            f'<select id=dir><option value=asc>ascending</option><option value=desc>descending</option></select>'
            f'<label>show <select id=filter><option value=all>all</option><option value=alive>alive</option>'
            f'<option value=dead>dead</option></select></label>'
            f'<label>find channel <input id=find type=number min=0 style="width:6em"></label>'
            f'<span id=count></span></div>'
            f'<div id=grid>{"".join(_card(r) for r in records)}</div>')
    return _page(meta["title"], body, SCRIPT)


def _channel_page(meta, r, prev, nxt, history, n_vis):
    ch = r["channel"]
    nav = ('<a href="../index.html">layer</a>'
           + (f' · <a href="{_name(prev)}.html">← {prev}</a>' if prev is not None else "")
           + (f' · <a href="{_name(nxt)}.html">{nxt} →</a>' if nxt is not None else ""))
    status = ("alive" if r["alive"] else "<b class=badge>dead: the channel's map is ≤ 0 everywhere on this image; "
              "it is not a visualization</b>")
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{_fmt(r[k], 4)}</td><td class=meta>{html.escape(d)}</td>"
                   f"</tr>" for k, label, d in MEASURES)
    vis = "".join(f'<figure class=vis><img src="../img/{_name(ch)}_v{j}.png" alt="visualization {j}"></figure>'
                  for j in range(n_vis))
    curve = svg_curve(history, width=320, height=160)
    exs = "".join(
        f'<div class=ex><img loading="lazy" src="../img/{_name(ch)}_e{j}.jpg" alt="example {j}"><br>'
        f'<img loading="lazy" src="../img/{_name(ch)}_m{j}.jpg" alt="map over example {j}"><br>'
        f'<img class=patch loading="lazy" src="../img/{_name(ch)}_p{j}.jpg" alt="patch of example {j}"> '
        f'image {e["image"]}<br>objective {_fmt(e["objective"], 4)}<br>max at {tuple(e["max_at"])}</div>'
        for j, e in enumerate(r["examples"]))
    body = (f"<p>{nav}</p><h1>{html.escape(meta['layer'])} channel {ch}</h1><p class=meta>{_meta_line(meta)}</p>"
            f"<p>{status}; alive on the data: {'yes' if r['alive_on_data'] else 'no (best example ≤ 0)'}</p>"
            f"<h2>Visualization</h2>{vis}<figure>{curve}<figcaption class=meta>objective of "
            f"{html.escape(meta.get('target_layer') or meta['layer'])} at each step (transformed image)</figcaption></figure><h2>Measures</h2><table class=m>{rows}</table>"
            f"<p class=meta>{html.escape(SOURCE_NOTE)}</p><h2>Dataset examples</h2><p class=meta>Each: the image, "
            f"the channel's map over it (one colour scale per channel), the patch under the map's maximum "
            f"(the layer's effective receptive field).</p>{exs}")
    return _page(f"{meta['layer']}:{ch}", body)


def write_site(out: str, meta: dict, records: list[dict], vis_images, example_images, example_maps, histories,
               boxes, *, progress=None) -> None:
    """Writes the pages, images and ``atlas.json`` into ``out``.

    Args:
      meta: the run (model, layer, data...; see :func:`jaxviz.atlases.atlas`).
      records: one dict per channel (:func:`jaxviz.atlases.phases.channel_records`).
      vis_images: ``[C, N, S, S, 3]`` in ``[0, 1]``; example_images: ``[C, K, S', S', 3]`` uint8;
      example_maps: ``[C, K, h, w]``; histories: ``[C, N, steps]``; boxes: ``[C, K, 3]`` (top, left, side).
      progress: ``progress(done, total)`` per channel.
    """
    img_dir, ch_dir = os.path.join(out, "img"), os.path.join(out, "channels")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ch_dir, exist_ok=True)
    n_vis = vis_images.shape[1]
    channels = [r["channel"] for r in records]
    for i, r in enumerate(records):
        name = _name(r["channel"])
        for j in range(n_vis):
            atomic_write(os.path.join(img_dir, f"{name}_v{j}.png"),
                         lambda f: Image.fromarray(to_uint8(vis_images[i, j])).save(f, format="PNG"))
        vmax = float(np.max(example_maps[i])) if example_maps[i].size else 0.0
        for j in range(len(r["examples"])):
            image = example_images[i, j]
            _jpg(os.path.join(img_dir, f"{name}_e{j}.jpg"), image)
            _jpg(os.path.join(img_dir, f"{name}_m{j}.jpg"), _overlay(image, example_maps[i, j], vmax))
            _jpg(os.path.join(img_dir, f"{name}_p{j}.jpg"), _patch(image, boxes[i, j]))
        prev = channels[i - 1] if i else None
        nxt = channels[i + 1] if i + 1 < len(channels) else None
        atomic_write(os.path.join(ch_dir, f"{name}.html"),
                     _channel_page(meta, r, prev, nxt, np.mean(histories[i], axis=0), n_vis))
        if progress is not None:
            progress(i + 1, len(records))
    atomic_write_json(os.path.join(out, "atlas.json"), {"meta": meta, "measures": {k: d for k, _, d in MEASURES},
                                                        "note": SOURCE_NOTE, "channels": records})
    atomic_write(os.path.join(out, "index.html"), _layer_page(meta, records))


def notebook_html(out: str, meta: dict, records: list[dict], *, limit: int = 64) -> str:
    """A compact inline grid (thumbnails as data URIs) for Jupyter, with the layer page's path."""
    cells = []
    for r in records[:limit]:
        path = os.path.join(out, "img", f"{_name(r['channel'])}_v0.png")
        src = ""
        if os.path.exists(path):
            with open(path, "rb") as f:
                src = "data:image/png;base64," + base64.b64encode(f.read()).decode()
        cells.append(f'<figure style="display:inline-block;margin:2px;width:96px;font-size:10px">'
                     f'<img src="{src}" style="width:96px"><figcaption>{r["channel"]}'
                     f'{"" if r["alive"] else " dead"} · {_fmt(r["objective"])}</figcaption></figure>')
    more = f"<p>… {len(records) - limit} more</p>" if len(records) > limit else ""
    return (f"<div><b>{html.escape(meta['title'])}</b> — {len(records)} channels; site: "
            f"<code>{html.escape(os.path.join(out, 'index.html'))}</code><br>{''.join(cells)}{more}</div>")
