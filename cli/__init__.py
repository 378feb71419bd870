"""The ``kgraft`` command line: ``show``, ``opt``, ``demo``.

Errors print one line plus a hint and exit 1 (model errors) or 2 (usage errors); ``--debug``
shows the traceback.
"""

from __future__ import annotations

import sys

import click

from ..ir import KgraftError, PipelineError, VerificationError, verify

__all__ = ["main"]


def _shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 224,224,3") from None


class _Group(click.Group):
    """Turns kgraft errors into one clear line and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PipelineError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"kgraft: error: {e}", err=True)
            sys.exit(2)
        except KgraftError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"kgraft: error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """kgraft: cut, inspect and rewire trained Keras models.

    MODEL is a .keras/.h5 file, a textual IR file (.kgir), or a keras.applications
    name such as ResNet50 (built with weights=None: nothing is downloaded).
    """
    ctx.ensure_object(dict)["debug"] = debug


_model_options = [
    click.argument("model"),
    click.option("--input-shape", help="Input shape for a keras.applications MODEL, e.g. 64,64,3."),
    click.option("--unsafe", is_flag=True, help="Allow Lambda layers in model files (runs their code)."),
]


def model_options(fn):
    for option in reversed(_model_options):
        fn = option(fn)
    return fn


@main.command()
@model_options
def show(model: str, input_shape: str | None, unsafe: bool) -> None:
    """Print the textual IR of MODEL.

    \b
    Example:  kgraft show ResNet50 --input-shape 64,64,3
    """
    from .models import load_graph

    click.echo(str(load_graph(model, input_shape=_shape(input_shape), unsafe=unsafe)), nl=False)


@main.command()
@model_options
@click.option("-p", "--pipeline", "pipeline", required=True, help="Pass pipeline, e.g. 'inline-nested,prune-unreachable'.")
@click.option("--print-ir-after-all", is_flag=True, help="Print the IR after every pass.")
def opt(model: str, input_shape: str | None, unsafe: bool, pipeline: str, print_ir_after_all: bool) -> None:
    """Run a pass pipeline on MODEL and print the resulting IR (like mlir-opt).

    \b
    Example:  kgraft opt model.kgir -p 'prune-unreachable'
    """
    from ..passes import parse_pipeline, run
    from .models import load_graph

    passes = parse_pipeline(pipeline)  # usage errors before any slow loading
    graph = load_graph(model, input_shape=_shape(input_shape), unsafe=unsafe)
    try:  # like mlir-opt: reject invalid input instead of blaming (or hiding it behind) the first pass
        verify(graph)
    except VerificationError as e:
        raise VerificationError(f"{e}\n(in the input {model!r}, before any pass ran)") from None

    def dump(p, result):
        click.echo(f"// -----// IR after {p} //----- //")
        for g in result if isinstance(result, list) else [result]:
            click.echo(str(g), nl=False)

    result = run(graph, passes, after_each=dump if print_ir_after_all else None)
    if not print_ir_after_all:
        for g in result if isinstance(result, list) else [result]:
            click.echo(str(g), nl=False)


@main.command()
@click.option("--model", "model_name", default="ResNet50", show_default=True,
              help="A keras.applications architecture (weights=None).")
@click.option("--input-shape", default="64,64,3", show_default=True, help="Input shape.")
@click.option("-o", "--out", "out_dir", default="kgraft-demo", show_default=True, help="Where to write results.")
def demo(model_name: str, input_shape: str, out_dir: str) -> None:
    """Run the main job on a built-in model (no downloads): split it and prove the split.

    \b
    Lists the split points of ResNet50 (weights=None), splits at a sensible one, checks
    that tail(head(x)) == model(x), and writes both partitions as .keras files.
    """
    from .demo import run_demo

    result = run_demo(model_name, _shape(input_shape), out_dir)
    if result["max_abs_diff"] > 1e-5:
        raise KgraftError(f"the partitions do not compose back to the model (diff {result['max_abs_diff']})")
