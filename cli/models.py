"""Resolve the MODEL argument of the CLI: a file, textual IR, or a keras.applications name.

Textual IR is parsed without TensorFlow. Anything else imports TensorFlow (a step of its
own, as it takes seconds) and is lowered; the Keras model stays in ``graph.meta["source"]``
for the weights and the numeric checks.
"""

from __future__ import annotations

import os

from ..ir import Graph, KgraftError, parse
from .ui import UI

__all__ = ["load_graph", "application_names", "build_application", "is_ir", "IR_SUFFIXES"]

IR_SUFFIXES = (".kgir", ".mlir", ".ir", ".txt")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_ir(model: str) -> bool:
    return model.endswith(IR_SUFFIXES)


def application_names() -> list[str]:
    """Architectures in ``keras.applications`` (functions that build a model)."""
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


def load_graph(model: str, *, input_shape: tuple[int, ...] | None = None, unsafe: bool = False,
               custom_objects: dict | None = None, ui: UI | None = None) -> Graph:
    """A graph for MODEL: textual IR is parsed (no TensorFlow), anything else is lowered."""
    ui = ui or UI(quiet=True)
    if is_ir(model):
        if not os.path.exists(model):
            raise KgraftError(f"no such IR file: {model!r}")
        with open(model) as f:
            return parse(f.read())
    is_file = os.path.exists(model) or os.sep in model or model.endswith(MODEL_SUFFIXES)
    if is_file and not os.path.exists(model):
        raise KgraftError(f"no such model file: {model!r}")
    ui.import_tensorflow()
    from ..backends.keras import lower

    if is_file:
        with ui.step(f"loading {model}"):
            return lower(model, custom_objects, safe_mode=not unsafe)
    keras_model = build_application(model, input_shape, ui)
    with ui.step("lowering to IR"):
        return lower(keras_model)


def build_application(name: str, input_shape: tuple[int, ...] | None = None, ui: UI | None = None):
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
    shape = f", input_shape={tuple(input_shape)}" if input_shape is not None else ""
    with (ui or UI(quiet=True)).step(f"building keras.applications.{name}(weights=None{shape})"):
        try:
            return getattr(keras.applications, name)(**kwargs)
        except Exception as e:
            raise KgraftError(f"keras.applications.{name}(**{kwargs}) failed: {e}") from e
