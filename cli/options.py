"""Options several commands share, and their checks (all before any slow work starts)."""

from __future__ import annotations

import os

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
    click.option("--custom-objects", "custom_objects", metavar="FILE.py",
                 callback=lambda ctx, param, value: custom_objects_from(value),
                 help="A Python file whose Keras classes and functions (defined or registered there) "
                      "the model file needs."),
]


def custom_objects_from(path: str | None) -> dict:
    """The Keras classes and functions a user's Python file defines or registers, by name."""
    if path is None:
        return {}
    import importlib.util

    if not os.path.isfile(path):
        raise UsageError(f"--custom-objects: no such file: {path!r}")
    import keras

    before = dict(keras.saving.get_custom_objects())
    name = f"kgraft_custom_objects_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"--custom-objects: {path!r} failed to run: {type(e).__name__}: {e}") from None
    found = {k: v for k, v in keras.saving.get_custom_objects().items() if before.get(k) is not v}
    for attr, value in vars(module).items():
        defined_here = getattr(value, "__module__", None) == name
        if defined_here and (isinstance(value, type) or callable(value)):
            found.setdefault(attr, value)
    return found


def model_options(fn):
    """MODEL, ``--input-shape`` (parsed to a tuple), ``--unsafe`` and ``--custom-objects`` (a dict)."""
    for option in reversed(_model_options):
        fn = option(fn)
    return fn


force_option = click.option("--force", is_flag=True, help="Replace outputs that already exist.")
