"""Small building blocks that passes use to build new graphs out of old ones."""

from __future__ import annotations

from .graph import INPUT_CLASS, Graph, Layer, Node, ValueRef
from .types import TensorType

__all__ = ["unique_name", "add_input", "clone_node"]


def unique_name(base: str, taken) -> str:
    """``base``, or ``base_1``, ``base_2``, ... whichever is first not in ``taken``."""
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def add_input(graph: Graph, name: str, ttype: TensorType, path: tuple[str, ...] = ()) -> ValueRef:
    """Append a new model input (an InputLayer call site) of type ``ttype``."""
    shape = list(ttype.shape) if ttype.shape is not None else None
    spec = {"module": "keras.layers", "class_name": INPUT_CLASS, "registered_name": None,
            "config": {"batch_shape": shape, "dtype": ttype.dtype or "float32", "name": name}}
    graph.add_layer(Layer(name, INPUT_CLASS, spec, path or (name,)))
    node = graph.add_node(Node(Node.make_id(name, 0), name, 0, [], {}, (ttype,)))
    graph.set_inputs(graph.inputs + (node.id,))
    return ValueRef(node.id)


def clone_node(graph: Graph, node: Node, remap: dict[ValueRef, ValueRef], layer: Layer,
               call_index: int | None = None) -> Node:
    """Add a copy of ``node`` calling ``layer`` (added if new), operands renamed through ``remap``."""
    if layer.name not in graph.layers:
        graph.add_layer(layer)
    k = node.call_index if call_index is None else call_index
    if layer.name == node.layer and k == node.call_index and not any(ref in remap for _, ref in node.operands()):
        return graph.add_node(node)  # nothing to rename: nodes are immutable, so share it

    return graph.add_node(node.with_operands(lambda ref: remap.get(ref, ref), layer.name, k))
