"""Options several commands share, and their checks (all before any slow work starts)."""

from __future__ import annotations

import click

from ..backends.atomic import check_target
from ..ir import KgraftError
from .app import UsageError

__all__ = ["model_options", "parse_shape", "parse_cuts", "check_output", "force_option"]


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"224,224,3"`` (or ``224x224x3``) -> ``(224, 224, 3)``."""
    if not text:
        return None
    try:
        return tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape like 224,224,3", param_hint="'--input-shape'") from None


def parse_cuts(at: tuple[str, ...]) -> list[list[str]]:
    """Repeated ``--at`` = several cuts; commas inside one ``--at`` = one cut of several tensors."""
    cuts = []
    for text in at:
        refs = [r.strip() for r in text.split(",")]
        if not all(refs):
            raise click.BadParameter(f"{text!r} has an empty ref; write one cut as REF or REF1,REF2",
                                     param_hint="'--at'")
        cuts.append(refs)
    return cuts


def check_output(path: str | None, force: bool, option: str, directory: bool = True) -> None:
    """A usage error (exit 2) when ``path`` exists and is not empty, unless ``--force``."""
    if path is None or path == "-":
        return
    try:
        check_target(path, force, what=option, directory=directory, flag="--force")
    except KgraftError as e:
        raise UsageError(str(e)) from None


_model_options = [
    click.argument("model"),
    click.option("--input-shape", callback=lambda ctx, param, value: parse_shape(value),
                 help="Input shape for a keras.applications MODEL, e.g. 64,64,3."),
    click.option("--unsafe", is_flag=True, help="Allow Lambda layers in model files (runs their code)."),
]


def model_options(fn):
    """MODEL, ``--input-shape`` (parsed to a tuple) and ``--unsafe``."""
    for option in reversed(_model_options):
        fn = option(fn)
    return fn


force_option = click.option("--force", is_flag=True, help="Replace outputs that already exist.")
