"""``delete-layer{ref}``: remove a layer whose output type is its single input's, wiring its
consumers (and a model output) to that input.

``ref`` names a layer (all its call sites) or one call site of a shared layer (``name@k``), at the
top level or inside a nested model (``vgg16/block3_pool``); nested models stay nested. A layer with
several tensor inputs or outputs, or one that changes the type, is refused: its consumers could
not read its input (use ``replace-layer``).

    before: %d = Dense @d#0(%x); %drop = Dropout @drop#0(%d); %y = Dense @y#0(%drop)
    after:  %d = Dense @d#0(%x); %y = Dense @y#0(%d)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir import Graph, KgraftError, ValueRef
from .infra import Pass, register, required
from .surgery_sites import edit_at, layer_sites, locate

__all__ = ["DeleteLayer"]


def _delete(graph: Graph, layer: str, call_ids: list[str]) -> Graph:
    for call_id in call_ids:
        node = graph.node(call_id)
        operands = [ref for _, ref in node.operands()]
        where = graph.value_name(ValueRef(call_id)) if len(node.outputs) == 1 else call_id
        if len(operands) != 1 or len(node.outputs) != 1:
            raise KgraftError(
                f"delete-layer: {where!r} ({graph.layers[layer].class_name}) takes {len(operands)} tensor(s) and "
                f"returns {len(node.outputs)}; only a layer with one input and one output of the same type can be "
                "deleted (its consumers then read its input). Use replace-layer to put another layer there.")
        in_type, out_type = graph.value_type(operands[0]), node.outputs[0]
        if in_type.known and out_type.known and in_type != out_type:
            raise KgraftError(
                f"delete-layer: {where!r} ({graph.layers[layer].class_name}) turns {in_type} into {out_type}, so "
                f"its consumers could not read its input {graph.value_name(operands[0])!r} instead. Use "
                "replace-layer (kgraft.replace_layer) to put a layer of the right output type there.")
        graph.replace_all_uses(ValueRef(call_id), operands[0])
    graph.remove_nodes(call_ids)
    graph.remove_unused_layers()
    return graph


@register
@dataclass(frozen=True)
class DeleteLayer(Pass):
    """Remove layer ``ref`` (all call sites, or ``name@k``); consumers read its input."""

    name: ClassVar[str] = "delete-layer"
    ref: str = required("dropout")

    def apply(self, graph: Graph) -> Graph:
        site = locate(graph, self.ref)
        _, layer, calls = layer_sites(graph, site, "delete-layer")
        return edit_at(graph, site.chain, lambda g: _delete(g, layer, [c.id for c in calls]))
