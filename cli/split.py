"""``kgraft split``: cut a model into a pipeline of partitions, show what crosses each cut,
prove that the partitions compose back to the model, and write them (.keras and/or ONNX)."""

from __future__ import annotations

import os

import click

from ..ir import Graph, KgraftError
from .app import UsageError, main
from .options import check_output, force_option, model_options, parse_cuts
from .ui import UI, format_bytes, format_shape, get_ui, human_bytes, ui_options

__all__ = ["split", "crossing_rows", "partition_rows"]


def crossing_rows(graph: Graph, boundary, cut: list[str]) -> list[dict]:
    """What crosses one cut: the cut's tensors, then tensors passed through it."""
    from ..ir.refs import resolve

    asked = {resolve(graph, r) for r in cut}
    rows = []
    for value in boundary:
        t = graph.value_type(value)
        rows.append({"ref": graph.value_name(value), "shape": list(t.shape) if t.shape is not None else None,
                     "dtype": t.dtype, "bytes_per_sample": t.bytes_per_sample,
                     "role": "cut" if value in asked else "passed through"})
    return rows


def partition_rows(plan) -> list[dict]:
    g = plan.graph
    return [{"index": i, "call_sites": sum(1 for n in part.nodes() if n.id not in part.inputs),
             "inputs": [g.value_name(v) for v in plan.boundaries[i]],
             "outputs": [g.value_name(v) for v in plan.boundaries[i + 1]]}
            for i, part in enumerate(plan.partitions)]


def print_crossings(ui: UI, cuts: list[dict]) -> None:
    for cut in cuts:
        total = human_bytes(cut["bytes_per_sample"])
        ui.table(["ref", "shape", "dtype", "bytes/sample", ""],
                 [[t["ref"], format_shape(t["shape"]), t["dtype"] or "?", format_bytes(t["bytes_per_sample"]),
                   "" if t["role"] == "cut" else t["role"]] for t in cut["tensors"]],
                 title=f"cut {cut['index']} ({', '.join(cut['refs'])}): {total} per sample crosses it",
                 right=["bytes/sample"])


def _total(rows: list[dict]) -> int | None:
    sizes = [r["bytes_per_sample"] for r in rows]
    return None if any(s is None for s in sizes) else sum(sizes)


@main.command()
@model_options
@click.option("--at", "at", multiple=True, required=True, metavar="REF[,REF...]",
              help="A cut: one ref, or several comma-separated refs that together separate inputs "
                   "from outputs. Repeat --at for several cuts (an N-way pipeline).")
@click.option("-o", "--out", "out_dir", metavar="DIR", help="Write the partitions as DIR/part0.keras, part1.keras, ...")
@click.option("--onnx", "onnx_dir", metavar="DIR", help="Write ONNX partitions + manifest.json to DIR (checked "
                                                         "against Keras with onnxruntime).")
@click.option("--opset", type=int, help="ONNX opset (default 17).")
@force_option
@ui_options(json_flag=True)
def split(model, input_shape, unsafe, custom_objects, at, out_dir, onnx_dir, opset, force, quiet, as_json):
    """Cut MODEL into partitions that compose back to it.

    Prints what crosses each cut (refs, shape, dtype, bytes per sample), checks numerically
    that feeding each partition's outputs to the next reproduces MODEL(x), and with -o/--onnx
    writes the partitions. A skip connection that jumps over a multi-tensor cut is passed
    through as an extra output/input. `kgraft show MODEL` lists the split points.

    \b
    Examples:
      kgraft split ResNet50 --input-shape 64,64,3 --at conv4_block6_out
      kgraft split model.keras --at conv3_block4_out --at conv4_block6_out -o parts/
      kgraft split ResNet50 --at conv2_block2_1_relu,conv2_block1_out --onnx onnx/ --json
    """
    from ..passes.split import resolve_split
    from .models import is_ir, load_graph
    from .outputs import build_models, export_onnx_checked, save_keras
    from ..compare import check_results

    cuts = parse_cuts(at)
    check_output(out_dir, force, "-o")
    check_output(onnx_dir, force, "--onnx")
    if out_dir and onnx_dir and os.path.abspath(out_dir) == os.path.abspath(onnx_dir):
        raise UsageError("-o and --onnx name the same directory; give two directories")
    if is_ir(model) and (out_dir or onnx_dir):
        raise UsageError(f"-o/--onnx need a Keras model with weights; {model!r} is textual IR")
    ui = get_ui(quiet, as_json)
    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, custom_objects=custom_objects, ui=ui)
    plan = resolve_split(graph, cuts)
    result = {"model": graph.name, "cuts": [], "partitions": partition_rows(plan)}
    for i, cut in enumerate(cuts):
        rows = crossing_rows(plan.graph, plan.boundaries[i + 1], cut)
        result["cuts"].append({"index": i, "refs": cut, "tensors": rows, "bytes_per_sample": _total(rows)})
    print_crossings(ui, result["cuts"])
    ui.table(["partition", "call sites", "inputs", "outputs"],
             [[f"part{p['index']}", p["call_sites"], ", ".join(p["inputs"]), ", ".join(p["outputs"])]
              for p in result["partitions"]], right=["call sites"])

    if graph.meta.get("source") is None:
        ui.note("textual IR carries no weights: nothing to check numerically")
    else:
        source = graph.meta["source"]
        models = build_models(plan.partitions, ui)
        with ui.step("checking the chain of partitions against the model"):
            check = check_results(graph, plan.partitions, models, "chain of partitions vs model")
        result["check"] = check.as_dict()
        ui.echo(check.summary())
        if not check.ok:
            raise KgraftError(f"the partitions do not compose back to the model: {check.summary()}")
        if out_dir:
            result["files"] = save_keras(models, out_dir, force, ui)
            ui.echo(f"wrote {', '.join(result['files'])}")
        if onnx_dir:
            manifest, report = export_onnx_checked(source, onnx_dir, cuts, force, ui, opset)
            result["onnx"] = {"dir": manifest["dir"], "files": [p["file"] for p in manifest["partitions"]],
                              "max_abs_diff": report.max_abs_diff}
            ui.echo(f"ONNX chain vs Keras: max abs diff {report.max_abs_diff:.3g} "
                    f"(tolerance {report.atol:g}) [OK]")
            ui.echo(f"wrote {onnx_dir}/ ({', '.join(result['onnx']['files'])}, manifest.json)")
    if as_json:
        ui.json(result)
