"""The ``kgraft`` command group and its error policy.

Every failure ends as ``kgraft: error: <one line that says what is wrong>`` (plus, for some, a
hint or the lines the message itself carries) and an exit code: 2 for usage errors (bad
options, bad pipeline text, an output that exists without ``--force``), 1 for model errors
(unknown model or ref, bad cut, unreadable file) and unexpected failures. ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import sys

import click

from ..ir import KgraftError, PipelineError

__all__ = ["main", "UsageError", "print_error"]

UsageError = click.UsageError


def print_error(message: str) -> None:
    """One error as every command reports it (also one that does not end the command)."""
    click.echo(f"kgraft: error: {message}", err=True)


def _fail(message: str, code: int, hint: str | None = None) -> None:
    print_error(message)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns errors into one clear line and an exit code instead of a traceback."""

    def main(self, args=None, prog_name=None, **extra):
        try:
            code = super().main(args, prog_name or "kgraft", standalone_mode=False, **extra)
        except click.UsageError as e:
            command = e.ctx.command_path if e.ctx is not None else "kgraft"
            _fail(e.format_message(), 2, f"see '{command} --help'")
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(e, PipelineError):
                _fail(str(e), 2)
            if isinstance(e, KgraftError):
                _fail(str(e), 1)
            if isinstance(e, OSError) and e.filename:
                _fail(f"{e.strerror}: {e.filename!r}", 1)
            _fail(f"unexpected {type(e).__name__}: {_first_line(e)}", 1, "rerun with 'kgraft --debug ...' "
                  "for the traceback, and please report it")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show Python tracebacks and TensorFlow's own logging.")
@click.version_option(package_name="kgraft", message="kgraft %(version)s")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """kgraft: cut, inspect and rewire trained Keras models.

    MODEL is a .keras/.h5 file, a textual IR file (.kgir), or a keras.applications name such as
    ResNet50 (built with weights=None: nothing is downloaded). A REF names a tensor: a layer name
    (conv4_block6_out), a path through nested models (vgg16/block5_conv3), name:i for output i,
    name@k for call k of a shared layer.

    \b
    Examples:
      kgraft demo                                        # the main job, end to end
      kgraft show ResNet50 --input-shape 64,64,3         # IR + split points
      kgraft split model.keras --at conv4_block6_out -o parts/ --onnx onnx/
      kgraft opt model.keras -p 'inline-nested' -o flat.keras --verify
      kgraft draw ResNet50 --at conv4_block6_out -o resnet50.html
      kgraft plan ResNet50 --bandwidth 20Mbps --edge-slowdown 8

    Exit codes: 0 ok, 1 model error, 2 usage error. Progress goes to stderr (-q silences it).
    """
    ctx.ensure_object(dict)["debug"] = debug
