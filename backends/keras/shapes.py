"""Value types where Keras's own symbolic shape is known to be wrong, corrected from what flows.

``MultiHeadAttention(..., return_attention_scores=True)`` types its scores
``(batch, heads, query_len, query_len)`` whatever the key's length (Keras 3.15), while the
real tensor is ``(batch, heads, query_len, key_len)``: a partition taking the scores would
refuse real data. The key length comes from the call's key (or value) operand; where it is not
known, the dimension stays free.
"""

from __future__ import annotations

from dataclasses import replace

from ...ir import Graph, TensorType, ValueRef

__all__ = ["correct_types"]


def correct_types(graph: Graph) -> None:
    """Fix the known-wrong value types of ``graph`` (and of its nested bodies) in place."""
    for layer in graph.layers.values():
        if layer.body is not None:
            correct_types(layer.body)
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        if layer.class_name == "MultiHeadAttention" and len(node.outputs) == 2:
            _attention_scores(graph, node)


def _attention_scores(graph: Graph, node) -> None:
    scores = node.outputs[1]
    if scores.shape is None or len(scores.shape) != 4:
        return  # attention over several axes: Keras's own type stands
    operands = dict((path, ref) for path, ref in node.operands())
    key = operands.get(("kwargs", "key")) or operands.get(("args", 2)) or operands.get(("kwargs", "value")) \
        or operands.get(("args", 1))
    key_type = graph.value_type(key) if isinstance(key, ValueRef) else TensorType()
    key_len = key_type.shape[1] if key_type.shape is not None and len(key_type.shape) == 3 else None
    fixed = TensorType(scores.shape[:3] + (key_len,), scores.dtype)
    if fixed != scores:
        graph.replace_node(replace(node, outputs=(node.outputs[0], fixed)))
