"""``kgraft show``: the textual IR of a model and what each split point would cost.

Below the IR, a table of the split points (the tensors a single-tensor cut can go through):
shape, bytes per sample crossing there, and parameters and FLOPs before and after. The table
lines are IR comments (``//``), so the output still parses as IR: ``kgraft show m.keras >
m.kgir`` works.
"""

from __future__ import annotations

import click

from .app import main
from .options import model_options
from .ui import format_bytes, format_shape, get_ui, human_count, ui_options

__all__ = ["show"]


def split_point_rows(graph) -> list[dict]:
    from ..passes import cut_costs

    rows = []
    for cost in cut_costs(graph):
        (tensor,) = cost.tensors
        rows.append({"ref": tensor.ref, "shape": list(tensor.shape) if tensor.shape is not None else None,
                     "dtype": tensor.dtype, "bytes_per_sample": cost.bytes_per_sample,
                     "params_before": cost.params_before, "params_after": cost.params_after,
                     "flops_before": cost.flops_before, "flops_after": cost.flops_after})
    return rows


@main.command()
@model_options
@click.option("--nested/--flat", default=True, show_default=True,
              help="Print nested models as nested regions, or inline them first.")
@ui_options(json_flag=True)
def show(model, input_shape, unsafe, custom_objects, nested, quiet, as_json):
    """Print the textual IR of MODEL and a table of its split points.

    The table gives, for each split point, the tensor's shape, the bytes per sample that would
    cross a cut there, and the parameters and FLOPs (per sample) before and after it. Split
    points are named as in the inlined graph (kgraft split takes these refs).

    \b
    Examples:
      kgraft show ResNet50 --input-shape 64,64,3
      kgraft show classifier.keras --flat
      kgraft show model.keras --json | jq '.split_points[] | .ref'
    """
    from ..passes import inline_nested
    from .models import load_graph

    ui = get_ui(quiet, as_json)
    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, custom_objects=custom_objects, ui=ui)
    text = str(graph if nested else inline_nested(graph))
    rows = split_point_rows(graph)
    if as_json:
        ui.json({"model": graph.name, "ir": text, "split_points": rows})
        return
    click.echo(text, nl=False)
    if not rows:
        ui.note("no single-tensor split points: a cut needs several tensors (kgraft split --at a,b)")
        return
    ui.table(["split point", "shape", "bytes/sample", "params before", "params after", "FLOPs before",
              "FLOPs after"],
             [[r["ref"], format_shape(r["shape"]), format_bytes(r["bytes_per_sample"]), human_count(r["params_before"]), human_count(r["params_after"]), human_count(r["flops_before"]),
               human_count(r["flops_after"])] for r in rows],
             title=f"{len(rows)} split points (FLOPs per sample):",
             right=["bytes/sample", "params before", "params after", "FLOPs before", "FLOPs after"], prefix="// ")
