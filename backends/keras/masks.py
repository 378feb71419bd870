"""Keras masks made explicit, so that a mask survives a cut (and a trip through numpy).

Keras propagates a padding mask *implicitly*, on the tensor object (``Embedding(mask_zero=True)``
-> ``LSTM``). Across a cut the tensor becomes a numpy array or an ONNX tensor and the mask is
gone. So a cut that a masked tensor crosses carries its mask as a boolean tensor of its own:
the producing partition ends in :class:`KerasMask` (the mask of its input, as a tensor), the
consuming one starts with :class:`WithMask` (its input again, with that mask attached), and
everything after it sees the mask exactly as in the source.

:func:`record_masks` finds which values carry a mask in a live model: from Keras's own symbolic
tensors (tf_keras's for a tf.keras 2 model, whose config never records a mask), and, where a
nested model hides it (Keras records no mask on the outer call of a nested model, although at
run time the mask rides on the tensor it returns), by propagating the nested model's output
masks through the layers after it as Keras would (``compute_mask``).
"""

from __future__ import annotations

import keras

from ...ir import Graph, TensorType, ValueRef
from ...ir.graph import nested_call_inputs
from . import legacy
from .internals import call_nodes

__all__ = ["KerasMask", "WithMask", "record_masks", "MASK_CLASSES"]


@keras.saving.register_keras_serializable(package="kgraft")
class KerasMask(keras.layers.Layer):
    """The Keras mask of its input, as a boolean tensor of rank ``rank``."""

    def __init__(self, rank: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:  # nothing was masked: every step counts
            return keras.ops.ones(keras.ops.shape(inputs)[:self.rank], dtype="bool")
        return keras.ops.cast(mask, "bool")

    def compute_output_spec(self, inputs, mask=None):
        return keras.KerasTensor(inputs.shape[:self.rank], dtype="bool")

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "rank": self.rank}


@keras.saving.register_keras_serializable(package="kgraft")
class WithMask(keras.layers.Layer):
    """``WithMask()([x, mask])`` is ``x`` carrying ``mask`` as its Keras mask."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return keras.ops.copy(inputs[0])

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype=inputs[0].dtype)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.cast(inputs[1], "bool")


MASK_CLASSES = {"kgraft>KerasMask": KerasMask, "kgraft>WithMask": WithMask,
                "KerasMask": KerasMask, "WithMask": WithMask}


def record_masks(graph: Graph, model) -> None:
    """Fill ``graph.masks`` (and its nested bodies') with the type of every value's Keras mask."""
    _record(graph, model, {})


def _record(graph: Graph, model, bound: dict[ValueRef, TensorType]) -> None:
    masks = dict(bound)
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        handle = layer.handle
        if node.id in graph.inputs or handle is None:
            continue
        live = _calls(model, handle)
        if node.call_index >= len(live):
            continue
        live_node, tensors = live[node.call_index]
        first = next((ref for path, ref in node.operands() if path[:2] in (("args", 0), ("kwargs", "inputs"))), None)
        if layer.body is not None:
            inner = {inp: masks[ref] for inp, ref in zip(layer.body.input_refs(), nested_call_inputs(node, layer.body))
                     if ref in masks}
            _record(layer.body, handle, inner)
            for i, out in enumerate(layer.body.outputs):
                if out in layer.body.masks:
                    masks[ValueRef(node.id, i)] = layer.body.masks[out]
            continue
        for i, tensor in enumerate(tensors):
            mask = getattr(tensor, "_keras_mask", None)
            if mask is None and first in masks and _propagates(handle):
                mask = _propagated(handle, live_node, masks[first])
            if mask is not None:
                masks[ValueRef(node.id, i)] = TensorType(tuple(mask.shape), "bool")
    graph.masks = masks


def _calls(model, handle) -> list[tuple]:
    """``(live node, its flattened output tensors)`` per call of ``handle`` in ``model``. A tf_keras
    node is no Keras 3 node, so it comes as ``None``: its tensors' masks are all there is to read
    (tf.keras 2 records a nested model's output mask on the outer call too)."""
    if legacy.is_tf_keras_model(model):
        return [(None, tensors) for tensors in legacy.call_outputs(model, handle)]
    return [(node, keras.tree.flatten(node.output_tensors)) for node in call_nodes(model, handle)]


def _propagates(handle) -> bool:
    return isinstance(handle, keras.layers.Layer) and getattr(handle, "supports_masking", False)


def _propagated(handle, live_node, mask_type: TensorType):
    """What ``handle`` makes of an input mask Keras's symbolic call did not see (``compute_mask``
    on the recorded input and a symbolic mask)."""
    inputs = live_node.arguments.args[0] if live_node.arguments.args else None
    if inputs is None:
        return None
    try:
        mask = handle.compute_mask(inputs, keras.KerasTensor(mask_type.shape, dtype="bool"))
    except Exception:  # a layer whose compute_mask cannot run symbolically: Keras's own record stands
        return None
    return mask if isinstance(mask, keras.KerasTensor) else None
