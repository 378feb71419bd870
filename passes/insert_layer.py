"""``insert-layer{at,layers}``: apply new layers to tensor ``at``; every consumer of ``at`` (and a
model output at ``at``) then reads their result.

``layers`` is a model with one input and one output (an IR :class:`Graph`, or a ``.kgir`` file as
``add-head`` takes; the Keras-level :func:`kgraft.insert_layer` builds it from Keras layers). Its
layers keep their names unless the graph already has them (then ``_1``... is appended). ``at`` may
have several consumers or lie inside a nested model (which stays nested). Where the inserted
layers change the type, what lies downstream is re-inferred when the model is built.

    before: %conv = Conv2D @conv#0(%x); %pool = ... (%conv); %head = ... (%conv)
    after:  %conv = ...; %drop = Dropout @drop#0(%conv); %pool = ... (%drop); %head = ... (%drop)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..ir import Graph, KgraftError, ValueRef
from ..ir.refs import resolve
from .add_head import attach_head
from .infra import Pass, register, required
from .surgery_sites import edit_at, invalidate, locate, read_graph, value_users

__all__ = ["InsertLayer", "insert_after"]


def insert_after(graph: Graph, at: ValueRef, layers: Graph) -> Graph:
    """``graph`` with ``layers`` applied to ``at`` and every use of ``at`` moved to their output."""
    if len(layers.inputs) != 1 or len(layers.outputs) != 1:
        raise KgraftError(f"insert-layer: the layers to insert must take and return one tensor; they take "
                          f"{len(layers.inputs)} and return {len(layers.outputs)}")
    at_type, in_type = graph.value_type(at), layers.value_type(layers.input_refs()[0])
    if not at_type.compatible(in_type):
        raise KgraftError(f"insert-layer: {graph.value_name(at)!r} has type {at_type}, but the layers to insert "
                          f"expect {in_type}; build them for {at_type}")
    new = attach_head(graph, at, layers)
    result = new.outputs[-1]
    new.set_outputs(graph.outputs, graph.output_keys)
    added = set(new.topological_ids()) - set(graph.topological_ids())
    users = value_users(new, at, added)
    for user in users:
        new.replace_node(new.node(user).with_operands(lambda r: result if r == at else r))
    new.set_outputs([result if r == at else r for r in new.outputs], new.output_keys)
    if new.value_type(result) != graph.value_type(at):
        invalidate(new, users)
    return new


@register
@dataclass(frozen=True)
class InsertLayer(Pass):
    """Apply ``layers`` (IR graph or file, one input and output) to ``at``; its consumers read the result."""

    name: ClassVar[str] = "insert-layer"
    at: str = required("<ref>")
    layers: Any = required("<IR graph or .kgir file>")

    def apply(self, graph: Graph) -> Graph:
        layers = read_graph(self.layers, "insert-layer", "layers")
        site = locate(graph, self.at)
        return edit_at(graph, site.chain, lambda g: insert_after(g, resolve(g, site.ref), layers))
