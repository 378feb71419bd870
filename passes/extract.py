"""``extract{outputs,inputs}``: the sub-model from ``inputs`` to ``outputs``.

Like ``onnx.utils.extract_model``, but checking that the inputs suffice: when a model input
reaches an output around them, a :class:`CutError` names that path. Inputs default to the
model's inputs (then only those the outputs need are kept). A value that is both an input and
an output passes straight through. Refs inside nested models inline them first.

    extract{outputs=block5_conv3}: VGG16 -> the model up to block5_conv3
    extract{inputs=b, outputs=c}:  a -> b -> c  ->  b -> c (b becomes a new InputLayer)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..analysis.cuts import bypass_message, needed_nodes
from ..ir import CutError, Graph, ValueRef
from ..ir.refs import at_top_level, resolve_many, sanitize
from ..ir import mask_layers
from ..ir.rewrite import add_input, clone_node, unique_name
from .infra import Pass, register
from .inline_nested import inline

__all__ = ["Extract", "extract_values", "build_subgraph", "inline_if_needed"]


def inline_if_needed(graph: Graph, refs: list[str]) -> Graph:
    """``graph``, or its inlined form when any ref points inside a nested model, or names a layer
    that exists only once nested models are inlined (a renamed ``mid_dense``, as
    :func:`~kgraft.passes.split_points` reports it)."""
    if not any(layer.body is not None for layer in graph.layers.values()):
        return graph
    return inline(graph) if not all(at_top_level(graph, r) for r in refs) else graph


def build_subgraph(graph: Graph, name: str, nodes: set[str], inputs: list[ValueRef],
                   outputs: list[ValueRef], *, mask_outputs: bool = False) -> Graph:
    """A new graph computing ``outputs`` from ``inputs`` with the call sites ``nodes``.

    Model inputs among ``inputs`` stay as they are; other values become new InputLayers named
    after their refs. An input that carries a Keras mask in ``graph`` (see ``Graph.masks``) comes
    with a boolean input ``<ref>_mask`` right after it, attached again (``WithMask``) before
    anything reads it; with ``mask_outputs``, so does every masked output (``KerasMask``), so
    that partitions chained in order hand each other their masks explicitly.
    """
    new = Graph(name, "Functional")
    new.meta = graph.meta
    taken = {graph.node(n).layer for n in nodes}
    remap: dict[ValueRef, ValueRef] = {}
    received: dict[ValueRef, tuple[ValueRef, ValueRef]] = {}  # a masked input -> (it, its mask) as inputs
    for value in inputs:
        if value in remap:
            continue
        if value.node in graph.inputs and value.node not in new:
            clone_node(new, graph.node(value.node), remap, graph.layer_of(value.node))
            new.set_inputs(new.inputs + [value.node])
            remap[value] = value
            continue
        input_name = unique_name(sanitize(graph.value_name(value)), taken)
        taken.add(input_name)
        remap[value] = add_input(new, input_name, graph.value_type(value))
        if mask_layers.carried(graph, value) is not None:
            mask = add_input(new, _taken(f"{input_name}_mask", taken), graph.masks[value])
            received[value] = (remap[value], mask)
            remap[value] = mask_layers.attach(new, remap[value], mask, _taken(f"{input_name}_masked", taken))
            new.masks[remap[value]] = graph.masks[value]
    for node_id in graph.topological_ids():
        if node_id in nodes and node_id not in new and node_id not in graph.inputs:
            clone_node(new, graph.node(node_id), remap, graph.layer_of(node_id))
    new.masks.update({v: t for v, t in graph.masks.items() if v.node in nodes and v.node in new})
    results = []
    for value in outputs:
        if value in received and mask_outputs:  # passed through: the value as received, then its mask
            results += list(received[value])
            continue
        results.append(remap.get(value, value))
        if mask_outputs and mask_layers.carried(graph, value) is not None:
            label = _taken(f"{sanitize(graph.value_name(value))}_mask", taken)
            results.append(mask_layers.detach(new, remap.get(value, value), graph.masks[value], label))
    new.set_outputs(results)
    return new


def _taken(name: str, taken: set) -> str:
    name = unique_name(name, taken)
    taken.add(name)
    return name


def extract_values(graph: Graph, outputs: list[ValueRef], inputs: list[ValueRef] | None) -> Graph:
    explicit = inputs is not None
    inputs = list(inputs) if explicit else graph.input_refs()
    needed, reached = needed_nodes(graph, outputs, set(inputs))
    if reached:
        given = ", ".join(graph.value_name(v) for v in inputs)
        scope = graph.copy()  # explain the cut against the outputs asked for, not the model's
        scope.set_outputs(outputs)
        raise CutError(bypass_message(
            scope, inputs, f"extract: the inputs ({given}) do not suffice to compute "
            + ", ".join(graph.value_name(v) for v in outputs)))
    if not explicit:
        used = {ref for node_id in needed for _, ref in graph.node(node_id).operands()}
        inputs = [v for v in inputs if v in used or v in outputs]
    return build_subgraph(graph, graph.name, needed, inputs, outputs)


@register
@dataclass(frozen=True)
class Extract(Pass):
    """Sub-model from ``inputs`` (default: the model inputs) to ``outputs`` (refs)."""

    name: ClassVar[str] = "extract"
    outputs: list = field(default_factory=list)
    inputs: list | None = None

    def apply(self, graph: Graph) -> Graph:
        outputs = [self.outputs] if isinstance(self.outputs, str) else list(self.outputs)
        inputs = [self.inputs] if isinstance(self.inputs, str) else self.inputs
        if not outputs:
            raise CutError("extract: no outputs given; name at least one tensor, e.g. extract{outputs=block5_conv3}")
        graph = inline_if_needed(graph, outputs + list(inputs or []))
        out_refs = resolve_many(graph, outputs)
        in_refs = resolve_many(graph, inputs) if inputs is not None else None
        return extract_values(graph, out_refs, in_refs)
