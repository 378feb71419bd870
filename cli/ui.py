"""What the commands print: progress on stderr, results (tables or JSON) on stdout.

Progress is a spinner per slow step on a terminal and one ``✓ step (1.2 s)`` line per finished
step (also in logs); ``-q`` silences it. Results never depend on the terminal: a table is as
wide as its content when stdout is not a terminal, and ``--json`` prints one JSON document.
TensorFlow is imported inside a step with the process's stderr muted, so its C++ start-up
logging does not bury the output (``--debug`` keeps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from typing import Any, Iterator, Sequence

import click
from rich import box
from rich.console import Console
from rich.table import Table

from ..ir.types import human_bytes

__all__ = ["UI", "ui_options", "get_ui", "human_bytes", "human_count", "format_shape", "format_bytes"]


class UI:
    """Progress, notes and results for one command run."""

    def __init__(self, quiet: bool = False, as_json: bool = False, debug: bool = False):
        self.quiet, self.as_json, self.debug = quiet, as_json, debug
        self.err = Console(stderr=True, highlight=False, quiet=quiet, soft_wrap=True)
        self.out = Console(highlight=False, width=None if sys.stdout.isatty() else 10_000, soft_wrap=True)

    # ------------------------------------------------------------------ progress (stderr)
    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        """A slow step: a spinner while it runs, a ``✓`` line with its duration when done."""
        started = time.perf_counter()
        status = self.err.status(text) if self.err.is_terminal else contextlib.nullcontext()
        with status:
            yield
        self.err.print(f"[green]✓[/] {text} [dim]({time.perf_counter() - started:.1f} s)[/]")

    def note(self, text: str) -> None:
        self.err.print(text)

    def import_tensorflow(self) -> None:
        """Import TensorFlow and Keras once, as a step, without their start-up noise."""
        if "keras" in sys.modules and "tensorflow" in sys.modules:
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with self.step("importing TensorFlow"), (contextlib.nullcontext() if self.debug else _muted_stderr()):
            import tensorflow as tf

            tf.config.list_logical_devices()  # device start-up logs now, while muted
            import keras  # noqa: F401
        if not self.debug:
            import logging

            for name in ("tensorflow", "absl", "tf2onnx"):
                logging.getLogger(name).setLevel(logging.ERROR)
            for module in ("keras", "tensorflow", "tf2onnx", "absl", "onnx"):
                warnings.filterwarnings("ignore", module=module)

    # ------------------------------------------------------------------ results (stdout)
    def echo(self, text: str = "") -> None:
        if not self.as_json:
            self.out.print(text, markup=False)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None,
              right: Sequence[str] = (), prefix: str = "") -> None:
        """A table on stdout (numbers right-aligned in the ``right`` columns), each line starting
        with ``prefix`` (``"// "`` keeps printed IR parseable)."""
        if self.as_json:
            return
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        if not prefix:
            self.out.print(table)
            self.out.print()
            return
        with self.out.capture() as captured:
            self.out.print(table)
        for line in captured.get().splitlines():
            click.echo((prefix + line).rstrip())

    def json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


@contextlib.contextmanager
def _muted_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null (C++ logging writes there directly, not via sys.stderr)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def human_count(n: int | float) -> str:
    """``23587712`` -> ``23.6M`` (parameters, FLOPs)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def ui_options(json_flag: bool = False):
    """``-q/--quiet`` (and ``--json`` when the command prints a table) for a command."""

    def decorate(fn):
        if json_flag:
            fn = click.option("--json", "as_json", is_flag=True,
                              help="Print the result as JSON on stdout instead of tables.")(fn)
        return click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")(fn)

    return decorate


def get_ui(quiet: bool, as_json: bool = False) -> UI:
    """The command's :class:`UI` (``--debug`` comes from the group's context)."""
    ctx = click.get_current_context(silent=True)
    debug = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("debug"))
    return UI(quiet=quiet, as_json=as_json, debug=debug)


def format_shape(shape) -> str:
    return "?" if shape is None else "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def format_bytes(n) -> str:
    return "?" if n is None else f"{n:,}"
