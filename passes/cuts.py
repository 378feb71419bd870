"""Analyses behind extract and split: what a cut needs, where single-tensor cuts are valid,
and, when a cut is bad, which path bypasses it.

* :func:`needed_nodes` walks back from target values and stops at the given cut values.
* :func:`split_points` are the values that dominate every output, computed with
  ``networkx.immediate_dominators`` from a virtual source over all inputs to a virtual sink
  after all outputs.
* :func:`bypass_message` explains a bad cut as a path that goes around it, plus the nearest
  valid split points before and after (the message a user needs to fix the cut).
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from ..ir import CutError, Graph, ValueRef
from .prune_unreachable import prune

__all__ = ["needed_nodes", "split_points", "bypass_message", "describe_node", "outputs_after", "require_separator"]

_SOURCE, _SINK = ("^source",), ("^sink",)


def needed_nodes(graph: Graph, targets: Iterable[ValueRef], cut: set[ValueRef]) -> tuple[set[str], list[str]]:
    """Call sites needed to compute ``targets`` from ``cut``; and model inputs reached around it."""
    needed: set[str] = set()
    reached: list[str] = []
    inputs = set(graph.inputs)
    stack = [v for v in targets if v not in cut]
    while stack:
        value = stack.pop()
        if value.node in needed:
            continue
        needed.add(value.node)
        if value.node in inputs:
            reached.append(value.node)
            continue
        stack.extend(ref for _, ref in graph.node(value.node).operands() if ref not in cut)
    return needed, reached


def split_points(graph: Graph) -> list[ValueRef]:
    """Values through which every input-to-output path passes, in topological order.

    Model inputs and outputs are excluded, as are call sites with several used outputs
    (no single tensor carries everything there).
    """
    g = prune(graph, keep_inputs=False)
    dom = nx.DiGraph()
    dom.add_edges_from(g.nx.edges())
    dom.add_nodes_from(g.nx.nodes())
    dom.add_edges_from((_SOURCE, i) for i in g.inputs)
    dom.add_edges_from((r.node, _SINK) for r in g.outputs)
    idom = nx.immediate_dominators(dom, _SOURCE)
    chain, node = set(), idom.get(_SINK)
    while node is not None and node != _SOURCE:
        chain.add(node)
        node = idom[node]
    excluded = set(g.inputs) | {r.node for r in g.outputs}
    points = []
    for node_id in g.topological_ids():
        if node_id in chain and node_id not in excluded:
            used = {d["out"] for _, _, d in g.nx.out_edges(node_id, data=True)}
            if len(used) == 1:
                points.append(ValueRef(node_id, used.pop()))
    return points


def describe_node(graph: Graph, node_id: str) -> str:
    """``layer`` or ``layer@k`` (shared layer) for messages."""
    node = graph.node(node_id)
    return node.layer + (f"@{node.call_index}" if len(graph.call_sites(node.layer)) > 1 else "")


def _without_cut(graph: Graph, cut: set[ValueRef]) -> nx.MultiDiGraph:
    g = graph.nx
    return nx.subgraph_view(g, filter_edge=lambda u, v, k: ValueRef(u, g.edges[u, v, k]["out"]) not in cut)


def bypass_message(graph: Graph, cut: list[ValueRef], what: str) -> str:
    """'<what>: the path a -> b -> c bypasses it. Nearest split points: p (before), q (after).'"""
    cut_set, g = set(cut), graph.nx
    points = split_points(graph)
    cut_nodes = {v.node for v in cut}
    ancestors = set().union(*(nx.ancestors(g, n) for n in cut_nodes))
    descendants = set().union(*(nx.descendants(g, n) for n in cut_nodes))
    before = [p for p in points if p.node in ancestors]
    after = [p for p in points if p.node in descendants]
    sources = [before[-1].node] if before else list(graph.inputs)
    targets = [after[0].node] if after else [r.node for r in graph.outputs]
    view, path = _without_cut(graph, cut_set), None
    for s in sources:
        for t in targets:
            if s != t and nx.has_path(view, s, t):
                path = nx.shortest_path(view, s, t)
                break
        if path:
            break
    parts = [what]
    if path:
        parts.append(": the path\n  " + " -> ".join(describe_node(graph, n) for n in path) + "\nbypasses it.")
    else:
        parts.append(".")
    near = [f"{graph.value_name(before[-1])} (before)"] if before else []
    near += [f"{graph.value_name(after[0])} (after)"] if after else []
    if near:
        parts.append(" Nearest split points: " + ", ".join(near) + ".")
    elif not points:
        parts.append(" This model has no single-tensor split points; cut at several tensors at once.")
    return "".join(parts)


def outputs_after(graph: Graph, cut: list[ValueRef]) -> list[ValueRef]:
    """The model outputs that depend on the cut; the others are computed before it."""
    reach = {v.node for v in cut}.union(*(nx.descendants(graph.nx, v.node) for v in cut))
    return [o for o in graph.outputs if o.node in reach]


def require_separator(graph: Graph, cut: list[ValueRef], what: str,
                      targets: list[ValueRef] | None = None) -> set[str]:
    """The call sites between ``cut`` and ``targets`` (default: all outputs); CutError when a
    model input reaches a target around the cut."""
    needed, reached = needed_nodes(graph, graph.outputs if targets is None else targets, set(cut))
    if reached:
        raise CutError(bypass_message(graph, cut, what))
    return needed
