"""Analyses behind extract and split: what a cut needs, where single-tensor cuts are valid,
what crosses a cut, and, when a cut is bad, which path bypasses it.

* :func:`needed_nodes` walks back from target values and stops at the given cut values.
* :func:`split_point_values` are the values that dominate every output: the dominators of a virtual
  sink after all outputs, from a virtual source over all inputs, found in one linear sweep.
* :func:`bypass_message` explains a bad cut as a path that goes around it, plus the nearest
  valid split points before and after (the message a user needs to fix the cut).
* :func:`cut_sides` are the call sites before a cut and the values crossing it (pass-through
  skip tensors and early outputs included), as ``split`` realises it and the cost model counts it.
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from ..ir import CutError, Graph, KgraftError, Node, ValueRef

__all__ = ["live_nodes", "needed_nodes", "split_point_values", "split_points", "bypass_message", "describe_node", "outputs_after",
           "require_separator", "normalize_cuts", "cut_sides", "require_flat"]

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


def split_point_values(graph: Graph) -> list[ValueRef]:
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
    points = split_point_values(graph)
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


def split_points(graph: Graph) -> list[str]:
    """Refs of every single-tensor split point of ``graph`` as it is, in topological order
    (:func:`kgraft.passes.split_points` inlines nested models first)."""
    return [graph.value_name(v) for v in split_point_values(graph)]


def live_nodes(graph: Graph) -> set[str]:
    """Call sites that some model output depends on (the outputs' producers included)."""
    return graph.reach((ref.node for ref in graph.outputs), forward=False)


def normalize_cuts(at) -> list[list[str]]:
    """``"a"`` -> ``[["a"]]``; ``["a", ["b", "c"]]`` -> ``[["a"], ["b", "c"]]``."""
    if isinstance(at, str):
        return [[at]]
    cuts = [[c] if isinstance(c, str) else list(c) for c in at]
    if not cuts or any(not c for c in cuts):
        raise CutError(f"split: no cut given in at={at!r}; give a ref, e.g. at='conv4_block6_out'")
    return cuts


def _crossing(graph: Graph, upstream: set[str], downstream: set[str], cut: list[ValueRef]) -> list[ValueRef]:
    """What must cross from ``upstream`` to ``downstream``: the cut first, then the rest in order."""
    crossing = list(dict.fromkeys(cut))
    seen = set(crossing)
    for node_id in graph.topological_ids():
        if node_id not in upstream:
            continue
        for user, out, _ in sorted(graph.uses(node_id), key=lambda use: use[1]):
            value = ValueRef(node_id, out)
            if user in downstream and value not in seen:
                seen.add(value)
                crossing.append(value)
    for value in graph.outputs:
        if value.node in upstream and value not in seen:
            seen.add(value)
            crossing.append(value)
    return crossing


def cut_sides(graph: Graph, cut: list[ValueRef], label: str) -> tuple[set[str], list[ValueRef]]:
    """The call sites computed before ``cut`` (of a pruned ``graph``), and the values crossing it.

    Raises :class:`CutError` when ``cut`` does not separate the inputs from the outputs after it.
    """
    what = (f"split: {label!r} is not a split point" if len(cut) == 1 else
            f"split: the cut {{{label}}} does not separate the model's inputs from its outputs")
    downstream = require_separator(graph, cut, what, targets=outputs_after(graph, cut))
    # what the upstream side needs runs there, also where it reads only cut values (a mask derived
    # from an input that both sides use): its outputs then cross like any other
    upstream = graph.reach(set(graph.topological_ids()) - downstream, forward=False)
    downstream -= upstream
    return upstream, _crossing(graph, upstream, downstream, cut)


def require_flat(graph: Graph, what: str) -> None:
    """Analyses that count per layer read a flat graph: a nested model is one layer to them."""
    nested = [name for name, layer in graph.layers.items() if layer.body is not None]
    if nested:
        raise KgraftError(f"{what} reads a flat graph, but {', '.join(map(repr, nested))} "
                          f"{'is a nested model' if len(nested) == 1 else 'are nested models'}; inline it first "
                          f"(kgraft.passes.inline_nested), or call kgraft.passes.{what}, which does")
