"""``kgraft opt``: run a pass pipeline (like mlir-opt); print the IR or write Keras models."""

from __future__ import annotations

import click

from ..ir import KgraftError, VerificationError, partitions_of, verify
from .app import UsageError, main, print_error
from .options import check_output, force_option, model_options
from .ui import get_ui, ui_options

__all__ = ["opt"]

SEPARATOR = "// -----"


@main.command()
@model_options
@click.option("-p", "--pipeline", "pipeline", required=True,
              help="Pass pipeline, e.g. 'inline-nested,prune-unreachable' or 'split{at=conv4_block6_out}'.")
@click.option("--print-ir-after-all", is_flag=True, help="Print the IR after every pass.")
@click.option("--split-input-file", is_flag=True,
              help="Textual IR only: treat each '// -----'-separated chunk as its own input (as mlir-opt "
                   "does); results are separated the same way, an error ends only its chunk.")
@click.option("-o", "--out", "out", metavar="OUT",
              help="Write Keras models instead of printing IR: OUT.keras for one model, else a directory "
                   "(DIR/part0.keras, ... for partitions; DIR/model.keras for one model).")
@click.option("--verify", "verify_numbers", is_flag=True,
              help="Check the result numerically against MODEL (partitions are chained) and print the max abs diff.")
@force_option
@ui_options()
def opt(model, input_shape, unsafe, custom_objects, pipeline, print_ir_after_all, split_input_file, out,
        verify_numbers, force, quiet):
    """Run a pass pipeline on MODEL and print the resulting IR (like mlir-opt).

    Passes: inline-nested, prune-unreachable, extract{outputs,inputs}, split{at},
    add-head{at,head}. With -o the result is built as Keras models, weights copied from MODEL;
    -o and --verify print their results instead of the IR.

    \b
    Examples:
      kgraft opt model.kgir -p 'prune-unreachable'
      kgraft opt ResNet50 --input-shape 64,64,3 -p 'split{at=conv4_block6_out}' -o parts/ --verify
      kgraft opt classifier.keras -p 'extract{outputs=[vgg16/block5_conv3,predictions]}' -o gradcam.keras
    """
    from ..passes import parse_pipeline, run
    from .models import is_ir, load_graph

    passes = parse_pipeline(pipeline)  # usage errors before any slow loading
    check_output(out, force, "-o", directory=not (out or "").endswith(".keras"))
    if is_ir(model) and (out or verify_numbers):
        raise UsageError(f"{'-o' if out else '--verify'} needs a Keras model with weights; {model!r} is textual IR")
    if split_input_file:
        if not is_ir(model) or out or verify_numbers:
            raise UsageError("--split-input-file takes a textual IR file and prints IR (no -o, no --verify)")
        return _opt_chunks(model, passes, print_ir_after_all)
    ui = get_ui(quiet)
    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, custom_objects=custom_objects, ui=ui)
    _verified(graph, repr(model))

    result = run(graph, passes, after_each=_dump if print_ir_after_all else None)
    results = partitions_of(result) or [result]  # a split pipeline writes one model per partition
    if not (out or verify_numbers or print_ir_after_all):
        click.echo(str(result), nl=False)
    if not (out or verify_numbers):
        return
    if out and out.endswith(".keras") and len(results) > 1:
        raise UsageError(f"-o {out}: the pipeline gives {len(results)} partitions; give a directory, not a .keras file")
    from .outputs import build_models, save_keras
    from ..compare import check_results

    models = build_models(results, ui)
    if verify_numbers:
        what = "chain of partitions vs model" if len(results) > 1 else "result vs model"
        with ui.step("checking the result against the model"):
            check = check_results(graph, results, models, what)
        click.echo(check.summary())
        if not check.ok:
            raise KgraftError(f"the result does not match the model{', nothing written' if out else ''}: "
                              f"{check.summary()}")
    if out:
        files = save_keras(models, out, force, ui)
        click.echo(f"wrote {', '.join(files)}")


def _dump(p, result) -> None:
    click.echo(f"// -----// IR after {p} //----- //")
    click.echo(str(result), nl=False)


def _verified(graph, where: str):
    """Like mlir-opt: reject invalid input instead of blaming (or hiding it behind) the first pass."""
    try:
        verify(graph)
    except VerificationError as e:
        raise VerificationError(f"{e}\n(in the input {where}, before any pass ran)") from None
    return graph


def _opt_chunks(path: str, passes, print_ir_after_all: bool) -> None:
    """Each chunk of ``path`` through the pipeline. A chunk keeps its lines' numbers in the file
    (it is parsed behind as many blank lines as precede it), so errors point into the file."""
    from ..ir import parse
    from ..passes import run

    with open(path) as f:
        lines = f.read().split("\n")
    separators = [i for i, line in enumerate(lines) if line.strip() == SEPARATOR]
    starts, ends = [0] + [i + 1 for i in separators], separators + [len(lines)]
    failed = 0
    for k, (start, end) in enumerate(zip(starts, ends)):
        if k:
            click.echo(SEPARATOR)
        try:
            graph = _verified(parse("\n" * start + "\n".join(lines[start:end])), f"{path!r}, chunk {k + 1}")
            result = run(graph, passes, after_each=_dump if print_ir_after_all else None)
            if not print_ir_after_all:
                click.echo(str(result), nl=False)
        except KgraftError as e:
            failed += 1
            print_error(str(e))
    if failed:
        raise KgraftError(f"{failed} of {len(starts)} chunks of {path!r} failed (errors above)")
