"""``kgraft draw``: a picture of the graph (SVG, HTML with pan/zoom, or PNG), no graphviz needed."""

from __future__ import annotations

import os

import click

from .app import UsageError, main
from .options import check_output, force_option, model_options, parse_cuts
from .ui import get_ui, ui_options

__all__ = ["draw"]


@main.command()
@model_options
@click.option("-o", "--out", "out", metavar="FILE",
              help="graph.svg, graph.html (pan/zoom/search in a browser) or graph.png (needs matplotlib); "
                   "'-' writes SVG to stdout. Default: <model name>.svg.")
@click.option("--at", "at", multiple=True, metavar="REF[,REF...]",
              help="Mark a cut (as in kgraft split): partitions get one colour each, crossing tensors are red.")
@click.option("--flat", is_flag=True, help="Inline nested models instead of drawing them as clusters.")
@click.option("--collapse/--no-collapse", default=True, show_default=True,
              help="Draw a chain of layers with one way in and one way out as one box.")
@force_option
@ui_options()
def draw(model, input_shape, unsafe, custom_objects, out, at, flat, collapse, force, quiet):
    """Draw MODEL's graph (SVG, HTML or PNG) with split points and cuts marked.

    Chains of layers are collapsed into one box (every split point keeps a line of its own),
    nested models are dashed clusters (or inlined with --flat). Hover a box for its layers;
    in the .html page, wheel zooms, drag pans, and the search box jumps to a layer.

    \b
    Examples:
      kgraft draw ResNet50 --input-shape 64,64,3 -o resnet50.html
      kgraft draw model.keras --at conv4_block6_out -o cut.svg
      kgraft draw classifier.keras --flat -o flat.png
    """
    from ..backends.draw import FORMATS, render
    from ..backends.draw.png import require_matplotlib
    from .models import load_graph

    fmt = "svg" if out in (None, "-") else os.path.splitext(out)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise UsageError(f"-o {out}: cannot tell the picture format; name the file .svg, .html or .png")
    if fmt == "png":
        require_matplotlib()
    check_output(out, force, "-o", directory=False)
    cuts = parse_cuts(at)
    ui = get_ui(quiet)
    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, custom_objects=custom_objects, ui=ui)
    target = out or f"{graph.name}.{fmt}"
    if out is None:
        check_output(target, force, "-o", directory=False)
    with ui.step(f"drawing {len(graph)} call sites as {fmt.upper()}"):
        picture = render(graph, fmt, flat=flat, collapse=collapse, cuts=cuts)
    if target == "-":
        click.echo(picture, nl=False)
        return
    from ..backends.atomic import replacing

    with replacing(target, overwrite=force, directory=False, what="-o", flag="--force") as tmp:
        with open(tmp, "wb") as f:
            f.write(picture.encode() if isinstance(picture, str) else picture)
    click.echo(f"wrote {target}")
