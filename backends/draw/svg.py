"""Paint a :class:`~.scene.Scene` as a self-contained SVG, or an HTML page with pan and zoom.

The SVG has no external references (fonts fall back to the viewer's monospace). Each box is a
``<g>`` with a ``<title>`` (hover: every layer in it, with types and split points) and a
``data-refs`` attribute, which the HTML page's search box uses to jump to a layer.
"""

from __future__ import annotations

from html import escape

from .scene import FONT, PAD, Edge, Scene

__all__ = ["to_svg", "to_html"]

_STYLE = ("text{font-family:'DejaVu Sans Mono',Menlo,Consolas,monospace;font-size:11px;fill:#0f172a}"
          ".e{fill:none}.r{stroke-dasharray:6 4;stroke-width:1.4}.b text.t{font-weight:bold}"
          ".b:hover rect{stroke-width:3}")


def _num(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _path(edge: Edge) -> str:
    """Smooth curve through the route points, vertical at every point."""
    (x0, y0), rest = edge.points[0], edge.points[1:]
    d = [f"M{_num(x0)},{_num(y0)}"]
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        d.append(f"C{_num(x0)},{_num(mid)} {_num(x1)},{_num(mid)} {_num(x1)},{_num(y1)}")
        x0, y0 = x1, y1
    return "".join(d)


def _marker(i: int, color: str) -> str:
    return (f'<marker id="a{i}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto"><path d="M0,0L10,5L0,10z" fill="{color}"/></marker>')


def to_svg(scene: Scene) -> str:
    w, h = _num(scene.width), _num(scene.height)
    markers = {c: i for i, c in enumerate(dict.fromkeys(e.color for e in scene.edges))}  # one arrowhead per colour
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f"<title>{escape(scene.title)}</title>",
           f"<style>{_STYLE}</style>",
           "<defs>" + "".join(_marker(i, c) for c, i in markers.items()) + "</defs>",
           f'<rect width="{w}" height="{h}" fill="#ffffff"/>']
    for box in (b for b in scene.boxes if b.cluster):
        out.append(_box(box))
    out += [_rule(r) for r in scene.rules if not r.over]
    for edge in scene.edges:
        out.append(f'<path class="e" d="{_path(edge)}" stroke="{edge.color}" stroke-width="{_num(edge.width)}" '
                   f'marker-end="url(#a{markers[edge.color]})"/>')
    for box in (b for b in scene.boxes if not b.cluster):
        out.append(_box(box))
    out += [_rule(r) for r in scene.rules if r.over]
    for t in scene.labels:
        weight = ' font-weight="bold"' if t.bold else ""
        size = f' font-size="{_num(t.size)}px"' if t.size != FONT else ""
        out.append(f'<text x="{_num(t.x)}" y="{_num(t.y)}" fill="{t.color}" text-anchor="{t.anchor}"'
                   f'{size}{weight}>{escape(t.text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _rule(rule) -> str:
    return (f'<line class="r" x1="{_num(rule.x1)}" x2="{_num(rule.x2)}" y1="{_num(rule.y)}" y2="{_num(rule.y)}" '
            f'stroke="{rule.color}"/>')


def _box(box) -> str:
    dash = ' stroke-dasharray="5 3"' if box.dashed else ""
    parts = [f'<g class="b" data-refs="{escape(" ".join(box.refs))}">'] if box.refs else ["<g>"]
    if box.tooltip:
        parts.append(f"<title>{escape(box.tooltip)}</title>")
    parts.append(f'<rect x="{_num(box.x)}" y="{_num(box.y)}" width="{_num(box.w)}" height="{_num(box.h)}" '
                 f'rx="4" fill="{box.fill}" stroke="{box.stroke}" stroke-width="{_num(box.stroke_width)}"{dash}/>')
    for i, (line, y) in enumerate(zip(box.lines, box.line_y)):
        cls = ' class="t"' if i == 0 and box.bold_first else ' fill="#334155"'
        parts.append(f'<text x="{_num(box.x + PAD)}" y="{_num(box.y + y)}"{cls}>{escape(line)}</text>')
    parts.append("</g>")
    return "".join(parts)


# Pan: drag; zoom: wheel (around the pointer); fit: double-click or "fit"; search: a ref, Enter.
_SCRIPT = """
const svg = document.querySelector('svg'), vb = svg.viewBox.baseVal;
const W = vb.width, H = vb.height;
svg.removeAttribute('width'); svg.removeAttribute('height');
function show(x, y, w, h) { vb.x = x; vb.y = y; vb.width = w; vb.height = h; }
function aspect() { const r = svg.getBoundingClientRect(); return r.height / r.width; }
function fitWidth() { show(0, 0, W, W * aspect()); }
function fitAll() { const a = aspect(); if (H / W > a) show((W - H / a) / 2, 0, H / a, H); else show(0, 0, W, W * a); }
function at(e) { const p = svg.createSVGPoint(); p.x = e.clientX; p.y = e.clientY;
  return p.matrixTransform(svg.getScreenCTM().inverse()); }
svg.addEventListener('wheel', e => { e.preventDefault(); const p = at(e), k = Math.exp(e.deltaY * 0.0015);
  show(p.x - (p.x - vb.x) * k, p.y - (p.y - vb.y) * k, vb.width * k, vb.height * k); }, {passive: false});
let drag = null;
svg.addEventListener('pointerdown', e => { drag = at(e); svg.setPointerCapture(e.pointerId); });
svg.addEventListener('pointermove', e => { if (!drag) return; const p = at(e);
  vb.x -= p.x - drag.x; vb.y -= p.y - drag.y; });
svg.addEventListener('pointerup', () => { drag = null; });
svg.addEventListener('dblclick', fitAll);
document.getElementById('fit').onclick = fitAll;
document.getElementById('q').addEventListener('keydown', e => {
  if (e.key !== 'Enter') return; const q = e.target.value.trim(); if (!q) return;
  const hit = [...document.querySelectorAll('g[data-refs]')].find(g => g.dataset.refs.split(' ').includes(q))
    || [...document.querySelectorAll('g[data-refs]')].find(g => g.dataset.refs.includes(q));
  e.target.style.background = hit ? '' : '#fee2e2'; if (!hit) return;
  const b = hit.getBBox(), w = Math.max(b.width * 4, 600);
  show(b.x + b.width / 2 - w / 2, b.y + b.height / 2 - w * aspect() / 2, w, w * aspect());
  hit.querySelector('rect').setAttribute('stroke-width', 4); });
fitWidth();
"""


def to_html(scene: Scene) -> str:
    """The SVG in a page that fills the window, with pan, zoom, fit and search (no network)."""
    title = escape(scene.title)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kgraft: {title}</title>
<style>html,body{{margin:0;height:100%;overflow:hidden;font:13px sans-serif}}
#bar{{position:fixed;top:8px;right:8px;background:#fffe;border:1px solid #cbd5e1;border-radius:6px;padding:6px}}
svg{{display:block;width:100vw;height:100vh;cursor:grab;touch-action:none}}</style></head>
<body><div id="bar"><input id="q" placeholder="find a layer (Enter)" size="28"> <button id="fit">fit</button>
<span style="color:#64748b">wheel: zoom · drag: pan · double-click: fit</span></div>
{to_svg(scene)}<script>{_SCRIPT}</script></body></html>
"""
