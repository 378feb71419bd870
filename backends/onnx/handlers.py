"""tf2onnx conversions for TF ops it lacks, registered once on first conversion.

* ``Erfc``: exact GELU (``keras.activations.gelu(approximate=False)``, as in BERT-family,
  Whisper and DINOv2 models) is ``0.5 * x * erfc(-x / sqrt(2))`` in TensorFlow; tf2onnx 1.17
  converts ``Erf`` but not ``Erfc``. ONNX has ``Erf`` from opset 9, and ``erfc = 1 - erf``
  (an absolute error of at most one float32 ulp of 1, which GELU multiplies by ``x / 2``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["register"]

_REGISTERED = False


def register() -> None:
    """Add the handlers to tf2onnx's registry (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import tf2onnx.convert  # noqa: F401  (tf2onnx's own handlers first)
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class Erfc:  # noqa: F841  (registered by the decorator)
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
            one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
            erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
            node.type = "Sub"
            ctx.replace_inputs(node, [one.output[0], erf.output[0]])

    _REGISTERED = True
