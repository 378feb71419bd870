"""Resolve the MODEL argument of the CLI: a file, textual IR, or a keras.applications name."""

from __future__ import annotations

import os

from ..ir import Graph, KgraftError, parse

__all__ = ["load_graph", "application_names", "IR_SUFFIXES"]

IR_SUFFIXES = (".kgir", ".mlir", ".ir", ".txt")


def application_names() -> list[str]:
    """Architectures in ``keras.applications`` (functions that build a model)."""
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


def load_graph(model: str, *, input_shape: tuple[int, ...] | None = None, unsafe: bool = False) -> Graph:
    """A graph for MODEL: textual IR is parsed (no TensorFlow), anything else is lowered."""
    if model.endswith(IR_SUFFIXES):
        if not os.path.exists(model):
            raise KgraftError(f"no such IR file: {model!r}")
        with open(model) as f:
            return parse(f.read())
    from ..backends.keras import lower

    if os.path.exists(model) or os.sep in model or "." in model:
        return lower(model, safe_mode=not unsafe)
    return lower(build_application(model, input_shape))


def build_application(name: str, input_shape: tuple[int, ...] | None = None):
    """``keras.applications.<name>(weights=None)``: no downloads."""
    import difflib

    import keras

    names = application_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KgraftError(
            f"{name!r} is neither a model file nor a keras.applications architecture.{hint} "
            f"Give a .keras/.h5 path, a textual IR file ({', '.join(IR_SUFFIXES)}), or one of: {', '.join(names)}"
        )
    kwargs = {"weights": None}
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    try:
        return getattr(keras.applications, name)(**kwargs)
    except Exception as e:
        raise KgraftError(f"keras.applications.{name}(**{kwargs}) failed: {e}") from e
