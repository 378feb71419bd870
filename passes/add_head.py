"""``add-head{at,head}``: attach a head (a small graph with one input) to tensor ``at``.

The result computes everything the model did, plus the head's outputs appended to the model
outputs. The head's layers keep their names unless they clash with the model's (then
``_1``, ``_2``... is appended). ``head`` is a :class:`Graph` or a path to a textual IR file;
``at`` may point inside a nested model (nested models are inlined first).

    before: ... return %logits
    after:  ... %aux = Dense @aux#0(%block5a_expand_conv) ...; return %logits, %aux
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..ir import CutError, Graph, ValueRef
from ..ir.refs import resolve
from ..ir.rewrite import clone_node, unique_name
from .extract import inline_if_needed
from .infra import Pass, register, required
from .surgery_sites import read_graph

__all__ = ["AddHead", "attach_head"]


def attach_head(graph: Graph, at: ValueRef, head: Graph, name: str | None = None) -> Graph:
    if len(head.inputs) != 1:
        raise CutError(f"add-head: the head must take exactly one tensor, it takes {len(head.inputs)}")
    head_in = head.input_refs()[0]
    at_type, in_type = graph.value_type(at), head.value_type(head_in)
    if not at_type.compatible(in_type):
        raise CutError(f"add-head: {graph.value_name(at)!r} has type {at_type}, "
                       f"but the head expects {in_type}")
    new = graph.copy()
    if name:
        new.name = name
    remap: dict[ValueRef, ValueRef] = {head_in: at}
    renamed: dict[str, str] = {}
    for node in head.nodes():
        if node.id in head.inputs:
            continue
        layer = head.layers[node.layer]
        if layer.name not in renamed:
            renamed[layer.name] = unique_name(layer.name, new.layers)
        target = new.layers.get(renamed[layer.name])
        if target is None:
            new_name = renamed[layer.name]
            target = replace(layer, name=new_name, spec={**layer.spec, "config": {**layer.config, "name": new_name}})
        copy = clone_node(new, node, remap, target)
        for i in range(len(node.outputs)):
            remap[ValueRef(node.id, i)] = ValueRef(copy.id, i)
    new.set_outputs(new.outputs + tuple(remap[o] for o in head.outputs))
    return new


@register
@dataclass(frozen=True)
class AddHead(Pass):
    """Attach ``head`` (IR graph or IR file) to tensor ``at``; its outputs join the model's."""

    name: ClassVar[str] = "add-head"
    at: str = required("<ref>")
    head: Any = required("<IR graph or .kgir file>")
    model_name: str | None = None

    def apply(self, graph: Graph) -> Graph:
        graph = inline_if_needed(graph, [self.at])
        return attach_head(graph, resolve(graph, self.at), read_graph(self.head, "add-head", "head"), self.model_name)

