"""``split{at}``: cut a model into a pipeline of partitions that compose back to it.

``at`` is a list of cuts in order; each cut is one ref (a split point: it dominates every
output) or a list of refs that together separate the inputs from the outputs (a multi-tensor
cut, e.g. both branches of a residual block). Outputs that do not depend on a cut are computed
before it, so a single ref after such an early output is a valid cut too. ``m`` cuts give ``m + 1``
partitions. Partition ``i`` takes what crosses cut ``i - 1`` and returns what crosses cut
``i``: the cut tensors first, in the order given, then every other tensor still needed
downstream (a skip connection jumping over a multi-tensor cut, a model output computed early),
passed through unchanged. A tensor that carries a Keras mask crosses with its mask right after
it, as a boolean tensor (``<ref>_mask``), which the next partition attaches again: the mask
reaches the same layers as in the source even when the partitions run in two processes. So
``p_m(...p_1(p_0(x)))`` equals ``model(x)``.

The pass returns ONE graph whose top level calls the partitions in order, as nested graphs
``part0 .. partN`` (as torch.fx's ``split_module`` returns one module); ``inline-nested`` of it
computes what the source computes, and :func:`~kgraft.ir.graph.partitions_of` lists them::

    kgraft.model @m(%x) { %part0 = Functional @part0#0(%x) {...}   %part1 = Functional @part1#0(%part0) {...} }

Precondition: none (nested models are inlined when a cut points inside one; dead code is
pruned). A bad cut raises :class:`CutError` naming a bypassing path and the nearest split
points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..analysis.cuts import cut_sides, normalize_cuts
from ..ir import CutError, Graph, Layer, Node, ValueRef
from ..ir.refs import resolve_many
from .extract import build_subgraph, inline_if_needed
from .infra import Pass, register
from .prune_unreachable import prune

__all__ = ["Split", "SplitPlan", "resolve_split", "pipeline_graph"]


@dataclass(frozen=True)
class SplitPlan:
    """A split before building: ``boundaries[i]`` are partition ``i``'s inputs (values of ``graph``,
    the pruned graph the cuts refer to) and ``boundaries[i + 1]`` its outputs."""

    graph: Graph
    boundaries: list[list[ValueRef]]
    partitions: list[Graph]


def resolve_split(graph: Graph, at) -> SplitPlan:
    """Resolve ``at`` (as the ``split`` pass takes it; ``None`` = one partition) into a :class:`SplitPlan`."""
    cuts = [] if at is None else normalize_cuts(at)
    graph = inline_if_needed(graph, [r for cut in cuts for r in cut])
    values = [resolve_many(graph, cut) for cut in cuts]
    return _plan(graph, values, [", ".join(cut) for cut in cuts])


def _plan(graph: Graph, cuts: list[list[ValueRef]], labels: list[str]) -> SplitPlan:
    pruned = prune(graph, keep_inputs=True)
    for cut, label in zip(cuts, labels):
        dead = [graph.value_name(v) for v in cut if v.node not in pruned]
        if dead:
            raise CutError(f"split: in cut {{{label}}}, no model output depends on {', '.join(dead)}; "
                           "cut only tensors on a path from the inputs to the outputs")
    graph = pruned
    all_nodes = set(graph.topological_ids())
    boundaries = [graph.input_refs()]
    upstreams: list[set[str]] = [set()]
    for cut, label in zip(cuts, labels):
        if len(cut) == 1 and (cut[0].node in graph.inputs or cut[0] in graph.outputs):
            kind = "a model input" if cut[0].node in graph.inputs else "a model output"
            raise CutError(f"split: {label!r} is {kind}, not a split point; cut between layers")
        upstream, crossing = cut_sides(graph, cut, label)
        if not upstreams[-1] <= upstream or upstream == upstreams[-1]:
            raise CutError(f"split: cut {{{label}}} does not come after the previous cut; "
                           "give cuts in order from inputs to outputs")
        _available(graph, cut, label, upstreams[-1], boundaries[-1], labels[:len(upstreams) - 1])
        boundaries.append(crossing)
        upstreams.append(upstream)
    upstreams.append(all_nodes)
    boundaries.append(list(graph.outputs))
    partitions = [
        build_subgraph(graph, f"{graph.name}_part{i}", upstreams[i + 1] - upstreams[i],
                       boundaries[i], boundaries[i + 1], mask_outputs=i < len(cuts))
        for i in range(len(cuts) + 1)
    ]
    return SplitPlan(graph, boundaries, partitions)


def _available(graph: Graph, cut: list[ValueRef], label: str, before: set[str], received: list[ValueRef],
               earlier: list[str]) -> None:
    """A cut's tensors exist in the partition that ends at it: computed there, or received across
    the previous cut. One computed before the previous cut that does not cross it is not."""
    for value in cut:
        if value.node in before and value not in received:
            raise CutError(
                f"split: cut {len(earlier) + 1} {{{label}}} uses {graph.value_name(value)!r}, which is computed "
                f"before cut {len(earlier)} {{{earlier[-1]}}} and does not cross it, so the partition between the "
                f"two cuts does not have it. Add {graph.value_name(value)!r} to cut {len(earlier)}, or give cuts "
                "in order from inputs to outputs.")


@register
@dataclass(frozen=True)
class Split(Pass):
    """Cut the model at ``at`` (a list of cuts; a cut is a ref or a list of refs)."""

    name: ClassVar[str] = "split"
    at: list = field(default_factory=list)

    def apply(self, graph: Graph) -> Graph:
        return pipeline_graph(resolve_split(graph, normalize_cuts(self.at)))


def pipeline_graph(plan: SplitPlan) -> Graph:
    """One graph calling the partitions of ``plan`` in order: ``part{i}`` takes what ``part{i-1}``
    returns (partition 0 the model's inputs), and the last one's outputs are the model's."""
    source = plan.graph
    top = Graph(source.name, "Functional")
    top.meta = source.meta
    for node_id in source.inputs:
        top.add_layer(source.layer_of(node_id))
        top.add_node(source.node(node_id))
    top.set_inputs(source.inputs, source.input_keys)
    values = source.input_refs()
    for i, body in enumerate(plan.partitions):
        name = f"part{i}"  # the layer; its body keeps the name the partition's model gets (m_part0)
        spec = {"module": "keras.src.models.functional", "class_name": "Functional",
                "registered_name": "Functional", "config": {"name": name, "trainable": True}}
        top.add_layer(Layer(name, "Functional", spec, (name,), body=body))
        args = [values[0]] if len(values) == 1 else [list(values)]
        types = tuple(body.value_type(r) for r in body.outputs)
        top.add_node(Node(Node.make_id(name, 0), name, 0, args, {}, types))
        values = [ValueRef(Node.make_id(name, 0), j) for j in range(len(types))]
    top.set_outputs(values, source.output_keys)
    return top
