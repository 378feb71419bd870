"""kgraft: cut, inspect and rewire trained Keras models, the way a compiler would.

``kgraft.ir`` and ``kgraft.passes`` import no TensorFlow; the Keras-level functions below load
it on first use.
"""

from importlib import import_module

from .ir.errors import (  # noqa: F401
    CutError,
    EquivalenceError,
    IRParseError,
    KgraftError,
    PassError,
    PipelineError,
    RefError,
    ShapeError,
    UnknownLayerError,
    UnsupportedModelError,
    VerificationError,
)

from ._version import __version__

_LAZY = {
    "lower": ".backends.keras",
    "build": ".backends.keras",
    "flatten": ".api",
    "extract": ".api",
    "split_points": ".api",
    "split": ".api",
    "add_head": ".api",
    "downstream": ".api",
    "cut_costs": ".api",
    "plan": ".api",
    "export_onnx": ".backends.onnx",
    "run_onnx": ".backends.onnx",
    "delete_layer": ".surgery",
    "insert_layer": ".surgery",
    "replace_layer": ".surgery",
    "set_input_shape": ".surgery",
    "rename": ".surgery",
    "fold_batchnorm": ".surgery",
    "delete_channels": ".surgery",
    "export_triton": ".backends.triton",
    "SplitRunner": ".backends.serve",
}

__all__ = ["KgraftError", "RefError", "CutError", "UnsupportedModelError", "UnknownLayerError",
           "VerificationError", "IRParseError", "PipelineError", "PassError", "EquivalenceError",
           "ShapeError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'kgraft' has no attribute {name!r}")
