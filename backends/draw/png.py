"""Paint a :class:`~.scene.Scene` as PNG with matplotlib (optional: ``pip install matplotlib``).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch). One
scene pixel is one point at 72 dpi; the image is rendered at up to 2x that, less for very
large graphs so that no side exceeds Agg's limits.
"""

from __future__ import annotations

import io

from ...ir import KgraftError
from .scene import PAD, Scene

__all__ = ["to_png", "require_matplotlib"]

_MAX_SIDE = 30000  # pixels


def require_matplotlib() -> None:
    """Fail early, with what to do, when matplotlib is missing."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise KgraftError("PNG output needs matplotlib, which is not installed: pip install matplotlib "
                          "(or kgraft[draw]), or write .svg or .html instead")


def to_png(scene: Scene) -> bytes:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon
    from matplotlib.path import Path

    w, h = scene.width, scene.height
    fig = Figure(figsize=(w / 72, h / 72), dpi=72)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    font = {"family": "DejaVu Sans Mono"}

    def box(b, z):
        ax.add_patch(FancyBboxPatch((b.x, b.y), b.w, b.h, boxstyle="round,pad=0,rounding_size=4", fc=b.fill,
                                    ec=b.stroke, lw=b.stroke_width, ls=(0, (5, 3)) if b.dashed else "-", zorder=z))
        for i, (line, y) in enumerate(zip(b.lines, b.line_y)):
            bold = i == 0 and b.bold_first
            ax.text(b.x + PAD, b.y + y, line, fontsize=11, color="#0f172a" if bold else "#334155",
                    fontweight="bold" if bold else "normal", zorder=z + 0.5, **font)

    for b in scene.boxes:
        if b.cluster:
            box(b, 1)
    for e in scene.edges:
        verts, codes = [e.points[0]], [Path.MOVETO]
        for (x0, y0), (x1, y1) in zip(e.points, e.points[1:]):
            mid = (y0 + y1) / 2
            verts += [(x0, mid), (x1, mid), (x1, y1)]
            codes += [Path.CURVE4] * 3
        ax.add_patch(PathPatch(Path(verts, codes), fc="none", ec=e.color, lw=e.width, zorder=2))
        x, y = e.points[-1]
        ax.add_patch(Polygon([(x - 3.5, y - 7), (x + 3.5, y - 7), (x, y)], closed=True, fc=e.color, ec="none",
                             zorder=2))
    for b in scene.boxes:
        if not b.cluster:
            box(b, 3)
    for r in scene.rules:
        ax.plot([r.x1, r.x2], [r.y, r.y], color=r.color, lw=1.4, ls=(0, (6, 4)), zorder=4 if r.over else 1.5)
    for t in scene.labels:
        ax.text(t.x, t.y, t.text, fontsize=t.size, color=t.color, ha={"start": "left", "end": "right"}.get(
            t.anchor, "center"), fontweight="bold" if t.bold else "normal", zorder=5, **font)
    scale = min(2.0, _MAX_SIDE / max(w, h))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72 * scale, facecolor="white")
    return buffer.getvalue()
