"""The two layers that carry a Keras mask across a cut, as IR (the Keras backend defines them:
``kgraft.backends.keras.masks``).

``detach``: ``KerasMask`` returns the mask its input carries, as a boolean tensor, so a
partition can hand it over. ``attach``: ``WithMask([x, mask])`` is ``x`` carrying ``mask`` again,
so every layer after it sees the mask as in the source.
"""

from __future__ import annotations

from .graph import Graph, Layer, Node, ValueRef
from .types import TensorType

__all__ = ["attach", "detach", "carried", "CLASSES"]

CLASSES = ("KerasMask", "WithMask")
_MODULE = "kgraft.backends.keras.masks"


def _layer(graph: Graph, name: str, class_name: str, config: dict) -> Layer:
    spec = {"module": _MODULE, "class_name": class_name, "registered_name": f"kgraft>{class_name}",
            "config": {"name": name, "trainable": True, **config}}
    return graph.add_layer(Layer(name, class_name, spec, (name,)))


def attach(graph: Graph, value: ValueRef, mask: ValueRef, name: str) -> ValueRef:
    """``value`` carrying ``mask`` as its Keras mask (a new call site of a ``WithMask`` layer)."""
    _layer(graph, name, "WithMask", {})
    node = Node(Node.make_id(name, 0), name, 0, [[value, mask]], {}, (graph.value_type(value),))
    return ValueRef(graph.add_node(node).id)


def detach(graph: Graph, value: ValueRef, mask_type: TensorType, name: str) -> ValueRef:
    """The Keras mask ``value`` carries, as a boolean tensor of type ``mask_type``."""
    rank = len(mask_type.shape) if mask_type.shape is not None else 2
    _layer(graph, name, "KerasMask", {"rank": rank})
    node = Node(Node.make_id(name, 0), name, 0, [value], {}, (TensorType(mask_type.shape, "bool"),))
    return ValueRef(graph.add_node(node).id)


def carried(graph: Graph, value: ValueRef) -> TensorType | None:
    """The type of the mask ``value`` must take across a cut, or ``None``: none when it carries
    no Keras mask, or when every layer reading it is given its mask explicitly (``mask=`` a tensor,
    as Keras 3 records it in Functional models), so the mask crosses as a tensor of its own."""
    mask = graph.masks.get(value)
    if mask is None:
        return None
    users = [user for user, index, _ in graph.uses(value.node) if index == value.index]
    if users and all(isinstance(graph.node(user).kwargs.get("mask"), ValueRef) for user in users):
        return None
    return mask
