"""Analyses behind extract and split: what a cut needs, where single-tensor cuts are valid,
and, when a cut is bad, which path bypasses it.

* :func:`needed_nodes` walks back from target values and stops at the given cut values.
* :func:`split_points` are the values that dominate every output: the dominators of a virtual
  sink after all outputs, from a virtual source over all inputs, found in one linear sweep.
* :func:`bypass_message` explains a bad cut as a path that goes around it, plus the nearest
  valid split points before and after (the message a user needs to fix the cut).
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from ..ir import CutError, Graph, Node, ValueRef
from .prune_unreachable import live_nodes

__all__ = ["needed_nodes", "split_points", "bypass_message", "describe_node", "outputs_after", "require_separator"]

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

    These are the dominators of a virtual sink after all outputs, seen from a virtual source
    before all inputs. In a DAG they come from one sweep over a topological order of the call
    sites on input-to-output paths: such a call site is on every path exactly when no edge jumps
    over it (starts before it and ends after it), counting the source -> input and
    output -> sink edges.
    """
    live, inputs = live_nodes(graph), set(graph.inputs)
    order: list[Node] = []
    position: dict[str, int] = {}
    lowest: list[int] = []  # per call site on a path: where the earliest edge into it starts
    for node in graph.nodes():
        starts = [-1] if node.id in inputs else [position[r.node] for _, r in node.operands() if r.node in position]
        if node.id in live and starts:
            position[node.id] = len(order)
            order.append(node)
            lowest.append(min(starts))
    outputs = {r.node for r in graph.outputs}
    ends = [position[n] for n in outputs if n in position]
    if not ends:
        return []
    on_chain, earliest = [], min(ends)  # earliest start of an edge ending after the current call site
    for i in range(len(order) - 1, -1, -1):
        on_chain.append(earliest >= i)
        earliest = min(earliest, lowest[i])
    on_chain.reverse()
    chain = {node.id for node, on in zip(order, on_chain) if on and node.id not in inputs and node.id not in outputs}
    used: dict[str, set[int]] = {node_id: set() for node_id in chain}
    for node in order:
        for _, ref in node.operands():
            if ref.node in chain:
                used[ref.node].add(ref.index)
    return [ValueRef(node.id, next(iter(used[node.id]))) for node in order
            if node.id in chain and len(used[node.id]) == 1]


def describe_node(graph: Graph, node_id: str) -> str:
    """``layer`` or ``layer@k`` (shared layer) for messages."""
    node = graph.node(node_id)
    return node.layer + (f"@{node.call_index}" if len(graph.call_sites(node.layer)) > 1 else "")


def _without_cut(graph: Graph, cut: set[ValueRef]) -> nx.MultiDiGraph:
    g = graph.nx
    return nx.subgraph_view(g, filter_edge=lambda u, v, k: ValueRef(u, g.edges[u, v, k]["out"]) not in cut)


def bypass_message(graph: Graph, cut: list[ValueRef], what: str) -> str:
    """'<what>: the path a -> b -> c bypasses it. Nearest split points: p (before), q (after).'"""
    cut_set = set(cut)
    points = split_points(graph)
    cut_nodes = {v.node for v in cut}
    ancestors = graph.reach((ref.node for n in cut_nodes for _, ref in graph.node(n).operands()), forward=False)
    descendants = graph.reach(user for n in cut_nodes for user in graph.users(n))
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
    reach = graph.reach(v.node for v in cut)
    return [o for o in graph.outputs if o.node in reach]


def require_separator(graph: Graph, cut: list[ValueRef], what: str,
                      targets: list[ValueRef] | None = None) -> set[str]:
    """The call sites between ``cut`` and ``targets`` (default: all outputs); CutError when a
    model input reaches a target around the cut."""
    needed, reached = needed_nodes(graph, graph.outputs if targets is None else targets, set(cut))
    if reached:
        raise CutError(bypass_message(graph, cut, what))
    return needed
