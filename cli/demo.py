"""``kgraft demo``: the main job on a built-in model, end to end, with no downloads.

Lower ResNet50 (``weights=None``), list its split points, cut at the smallest tensor in the
middle half of the network, check that the partitions compose back to the model, save them as
``.keras`` files, export them as ONNX and check the ONNX chain against Keras, and draw the
graph with the cut marked. Everything lands in one output directory, written atomically.
"""

from __future__ import annotations

import math
import os

import click

from ..ir import KgraftError
from .app import main
from .options import check_output, force_option, parse_shape
from .ui import UI, get_ui, ui_options

__all__ = ["demo", "run_demo", "choose_split_point"]


def choose_split_point(graph) -> str:
    """The split point with the fewest elements per sample in the middle half of the network."""
    from ..analysis.cuts import split_point_values

    points = split_point_values(graph)
    if not points:
        raise KgraftError(f"model {graph.name!r} has no single-tensor split point")
    middle = points[len(points) // 4: max(len(points) // 4 + 1, 3 * len(points) // 4)]

    def size(value):
        shape = graph.value_type(value).shape or ()
        return math.prod(d for d in shape[1:] if d)

    return graph.value_name(min(reversed(middle), key=size))  # ties: the later block output


def run_demo(model_name: str, input_shape: tuple[int, ...], out_dir: str, ui: UI, force: bool = False) -> dict:
    """Run the demo; returns what it found and where it wrote it."""
    from ..backends.atomic import replacing
    from ..backends.draw import render
    from ..analysis.cuts import split_points
    from ..passes.split import resolve_split
    from .models import load_graph
    from .outputs import build_models, export_onnx_checked
    from ..compare import check_results

    say = ui.echo
    graph = load_graph(model_name, input_shape=input_shape, ui=ui)
    say(f"1. keras.applications.{model_name}(weights=None, input_shape={input_shape}) lowered to IR: "
        f"{len(graph)} call sites, {len(graph.layers)} layers")
    points = split_points(graph)
    say(f"2. {len(points)} split points, e.g. {', '.join(points[-6:])}")
    at = choose_split_point(graph)
    plan = resolve_split(graph, at)
    head, tail = models = build_models(plan.partitions, ui)
    say(f"3. split at {at!r}: head {len(head.layers)} layers -> {tuple(head.outputs[0].shape)} "
        f"-> tail {len(tail.layers)} layers")
    with ui.step("checking tail(head(x)) against model(x)"):
        check = check_results(graph, plan.partitions, models, "tail(head(x)) vs model(x)")
    say(f"4. {check.summary()}")
    if not check.ok:
        raise KgraftError(f"the partitions do not compose back to the model: {check.summary()}")

    name = graph.name
    with replacing(out_dir, overwrite=force, what="-o", flag="--force") as tmp:
        keras_files = [os.path.join(tmp, f"{name}_part{i}.keras") for i in range(len(models))]
        with ui.step(f"saving {len(models)} .keras files"):
            for model, path in zip(models, keras_files):
                model.save(path)
        manifest, report = export_onnx_checked(graph.meta["source"], os.path.join(tmp, "onnx"), [[at]], True, ui)
        say(f"5. ONNX partitions (opset {manifest['opset']}) vs Keras: max abs diff {report.max_abs_diff:.3g} "
            f"(tolerance {report.atol:g}) [OK]")
        with ui.step("drawing the graph (SVG, HTML)"):
            for fmt in ("svg", "html"):
                with open(os.path.join(tmp, f"{name}.{fmt}"), "w", encoding="utf-8") as f:
                    f.write(render(graph, fmt, cuts=[[at]]))
    where = os.path.abspath(out_dir)
    files = {
        "keras": [os.path.join(where, os.path.basename(p)) for p in keras_files],
        "onnx": [os.path.join(where, "onnx", p["file"]) for p in manifest["partitions"]]
                + [os.path.join(where, "onnx", "manifest.json")],
        "picture": [os.path.join(where, f"{name}.svg"), os.path.join(where, f"{name}.html")],
    }
    say(f"6. wrote {where}/")
    for kind, paths in files.items():
        say(f"   {kind + ':':<8} {', '.join(os.path.relpath(p, where) for p in paths)}")
    say(f"   open {files['picture'][1]} in a browser to see the cut")
    return {"model": name, "split_points": points, "at": at, "check": check.as_dict(),
            "onnx_max_abs_diff": report.max_abs_diff, "dir": where, "files": files}


@main.command()
@click.option("--model", "model_name", default="ResNet50", show_default=True,
              help="A keras.applications architecture (weights=None).")
@click.option("--input-shape", default="64,64,3", show_default=True, help="Input shape.")
@click.option("-o", "--out", "out_dir", default="kgraft-demo", show_default=True, help="Where to write results.")
@force_option
@ui_options(json_flag=True)
def demo(model_name, input_shape, out_dir, force, quiet, as_json):
    """Run the main job on a built-in model (no downloads): split it and prove the split.

    Lists the split points of ResNet50 (weights=None), splits at a sensible one, checks that
    tail(head(x)) == model(x), writes both partitions as .keras files and as ONNX (checked
    against Keras with onnxruntime), and draws the graph with the cut marked (.svg, .html).

    \b
    Examples:
      kgraft demo
      kgraft demo --model MobileNetV2 --input-shape 96,96,3 -o mobilenet-demo --force
    """
    shape = parse_shape(input_shape)
    check_output(out_dir, force, "-o")
    ui = get_ui(quiet, as_json)
    result = run_demo(model_name, shape, out_dir, ui, force)
    if as_json:
        ui.json(result)
