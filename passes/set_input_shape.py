"""``set-input-shape{shape,input}``: the same graph and weights for a new input shape.

``shape`` leaves out the batch dimension; ``null`` (Python ``None``) marks a free dimension:
``set-input-shape{shape=[null,null,3]}`` makes a fully convolutional network take any image size.
``input`` names the input when the model has several. The rank must stay. What lies downstream
is re-inferred when the model is built (Keras does it); a nested model fed by the input, directly
or through layers that keep the type (``Rescaling``, ``Normalization``...), gets the new input
shape too. A layer whose weights then no longer fit fails the build with a ``ShapeError``.

    before: kgraft.model @m(%image: f32[?,224,224,3])
    after:  kgraft.model @m(%image: f32[?,?,?,3])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..ir import Graph, KgraftError, RefError, TensorType, ValueRef
from .infra import Pass, register, required
from .surgery_sites import KEEPS_TYPE, invalidate, unbuilt

__all__ = ["SetInputShape", "with_input_type", "parse_shape"]


def parse_shape(shape) -> tuple:
    """``[null, 64, "3"]`` -> ``(None, 64, 3)``; a clear error for anything else."""
    dims = []
    for d in shape if isinstance(shape, (list, tuple)) else [shape]:
        if d is None or (isinstance(d, str) and d.strip().lower() in ("null", "none", "?")):
            dims.append(None)
            continue
        try:
            dims.append(int(d))
        except (TypeError, ValueError):
            raise KgraftError(f"set-input-shape: {d!r} in shape {list(shape)} is not a size; give sizes and "
                              "nulls without the batch dimension, e.g. shape=[null,null,3]") from None
        if dims[-1] <= 0:
            raise KgraftError(f"set-input-shape: sizes must be positive, got {dims[-1]} in {list(shape)}")
    return tuple(dims)


def with_input_type(graph: Graph, input_id: str, ttype: TensorType) -> Graph:
    """A copy of ``graph`` whose input ``input_id`` has type ``ttype``; see the module docstring."""
    new = graph.copy()
    layer = new.layers[new.node(input_id).layer]
    new.set_layer(unbuilt(replace(layer, spec={**layer.spec, "config": {**layer.config, "batch_shape": list(ttype.shape)}})))
    new.replace_node(replace(new.node(input_id), outputs=(ttype,)))
    exact = {ValueRef(input_id): ttype}  # values whose new type is known: the input, through KEEPS_TYPE layers
    for node in new.nodes():
        operands = [ref for _, ref in node.operands()]
        if len(operands) != 1 or operands[0] not in exact:
            continue
        nested = new.layers[node.layer]
        if nested.class_name in KEEPS_TYPE and len(node.outputs) == 1:
            exact[ValueRef(node.id)] = exact[operands[0]]
        elif nested.body is not None and len(nested.body.inputs) == 1:
            body = with_input_type(nested.body, nested.body.inputs[0], exact[operands[0]])
            new.set_layer(replace(nested, body=body))
    invalidate(new, [input_id], include_start=False)
    for value, vtype in exact.items():  # invalidate marked them unknown; their types are known
        node = new.node(value.node)
        if node.outputs != (vtype,):
            new.replace_node(replace(node, outputs=(vtype,)))
    return new


@register
@dataclass(frozen=True)
class SetInputShape(Pass):
    """Give input ``input`` (default: the only one) the shape ``shape`` (no batch dimension)."""

    name: ClassVar[str] = "set-input-shape"
    shape: tuple = required("[null,null,3]")  # without the batch dimension
    input: str | None = None

    def apply(self, graph: Graph) -> Graph:
        names = [graph.node(i).layer for i in graph.inputs]
        if self.input is None and len(names) != 1:
            raise KgraftError(f"set-input-shape: model {graph.name!r} has {len(names)} inputs ({', '.join(names)}); "
                              "say which with input=<name>")
        name = names[0] if self.input is None else self.input
        if name not in names:
            raise RefError(f"set-input-shape: {name!r} is not an input of model {graph.name!r}; its inputs: "
                           + ", ".join(names))
        input_id = graph.inputs[names.index(name)]
        old = graph.node(input_id).outputs[0]
        dims = parse_shape(self.shape)
        if old.shape is not None and len(old.shape) != len(dims) + 1:
            raise KgraftError(f"set-input-shape: input {name!r} has type {old} (rank {len(old.shape)}), the new shape "
                              f"{list(dims)} has rank {len(dims) + 1} with the batch; the rank must stay (give "
                              f"{len(old.shape) - 1} sizes, without the batch dimension)")
        batch = old.shape[0] if old.shape else None
        return with_input_type(graph, input_id, TensorType((batch,) + dims, old.dtype))
