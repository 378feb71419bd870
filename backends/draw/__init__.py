"""Pictures of the graph IR, in pure Python (no graphviz): SVG, HTML with pan/zoom, PNG.

    svg = kgraft.backends.draw.render(graph, "svg", cuts=[["conv4_block6_out"]])

:mod:`.layout` places a DAG of boxes in layers; :mod:`.scene` turns the IR into boxes
(chains collapsed, nested models as clusters, split points and cuts marked) and lays them
out; :mod:`.svg` and :mod:`.png` paint the scene. Imports no TensorFlow; PNG needs matplotlib
(``pip install kgraft[draw]``).
"""

from __future__ import annotations

from ...ir import Graph, KgraftError
from .scene import Scene, build_scene

__all__ = ["render", "build_scene", "Scene", "FORMATS"]

FORMATS = ("svg", "html", "png")


def render(graph: Graph, fmt: str = "svg", *, flat: bool = False, collapse: bool = True, cuts=None) -> str | bytes:
    """The picture of ``graph`` as SVG or HTML text, or PNG bytes."""
    if fmt not in FORMATS:
        raise KgraftError(f"unknown picture format {fmt!r}; use one of {', '.join(FORMATS)}")
    scene = build_scene(graph, flat=flat, collapse=collapse, cuts=cuts)
    if fmt == "png":
        from .png import to_png

        return to_png(scene)
    from .svg import to_html, to_svg

    return to_svg(scene) if fmt == "svg" else to_html(scene)
