"""Layered (Sugiyama-style) layout of a DAG with sized boxes, top to bottom, in pure Python.

No graphviz: the machines and CI have no ``dot`` binary. The steps are the classic ones,
each kept simple:

1. layers: longest path from the sources (``networkx`` topological order); a source that
   feeds only late nodes moves down next to its first consumer;
2. edges spanning several layers get one dummy point per layer crossed, so they route around
   the boxes instead of through them;
3. order within each layer: barycenter sweeps down and up, keeping the order with the fewest
   crossings;
4. x: each node wants the mean x of its neighbours; the best positions that keep the order
   and the spacing are an isotonic regression (pool-adjacent-violators), exact and O(n);
5. y: layer bands as tall as their tallest box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import networkx as nx

__all__ = ["Placement", "layered"]

Point = tuple[float, float]


@dataclass
class Placement:
    """``x``: box centres; ``y``: box tops; ``routes[(u, v)]``: edge polyline, from the bottom of
    ``u`` to the top of ``v``; ``bands[i]``: (top, bottom) of layer ``i``."""

    x: dict[Hashable, float] = field(default_factory=dict)
    y: dict[Hashable, float] = field(default_factory=dict)
    layer: dict[Hashable, int] = field(default_factory=dict)
    routes: dict[tuple, list[Point]] = field(default_factory=dict)
    bands: list[tuple[float, float]] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0


class _Dummy:
    """A point of a long edge in one intermediate layer."""

    __slots__ = ("edge", "index")

    def __init__(self, edge: tuple, index: int):
        self.edge, self.index = edge, index


def layered(g: nx.DiGraph, sizes: dict[Hashable, tuple[float, float]], hgap: float = 24,
            vgap: float = 36, dummy_width: float = 8, sweeps: int = 8) -> Placement:
    """Place the nodes of DAG ``g`` (``sizes[n] = (width, height)``) in layers, top to bottom."""
    if not g:
        return Placement()
    layer = _layers(g)
    rows, edges = _with_dummies(g, layer)
    rows = _order(rows, edges, sweeps)
    width = {n: (dummy_width if isinstance(n, _Dummy) else sizes[n][0]) for row in rows for n in row}
    x = _xs(rows, edges, width, hgap)
    left = min(x[n] - width[n] / 2 for row in rows for n in row)
    x = {n: v - left for n, v in x.items()}

    place = Placement(layer=layer)
    top = 0.0
    for row in rows:
        height = max((sizes[n][1] for n in row if not isinstance(n, _Dummy)), default=0.0)
        place.bands.append((top, top + height))
        for n in row:
            if not isinstance(n, _Dummy):
                place.x[n], place.y[n] = x[n], top
        top += height + vgap
    for u, v in g.edges():
        points = [(x[u], place.y[u] + sizes[u][1])]
        for i in range(layer[u] + 1, layer[v]):
            d = edges.dummies[(u, v)][i - layer[u] - 1]
            band = place.bands[i]
            points += [(x[d], band[0]), (x[d], band[1])]
        points.append((x[v], place.y[v]))
        place.routes[(u, v)] = points
    place.width = max(x[n] + width[n] / 2 for row in rows for n in row)
    place.height = top - vgap
    return place


def _layers(g: nx.DiGraph) -> dict:
    order = list(nx.topological_sort(g))
    layer: dict = {}
    for n in order:
        layer[n] = max((layer[p] + 1 for p in g.predecessors(n)), default=0)
    for n in order:  # sources (inputs) sit right above their first consumer
        if g.in_degree(n) == 0 and g.out_degree(n):
            layer[n] = min(layer[s] for s in g.successors(n)) - 1
    return layer


class _Edges:
    """Adjacency between consecutive layers once long edges are cut into dummy segments."""

    def __init__(self):
        self.up: dict = {}
        self.down: dict = {}
        self.dummies: dict[tuple, list[_Dummy]] = {}

    def add(self, a, b) -> None:
        self.down.setdefault(a, []).append(b)
        self.up.setdefault(b, []).append(a)


def _with_dummies(g: nx.DiGraph, layer: dict) -> tuple[list[list], _Edges]:
    depth = max(layer.values()) + 1
    rows: list[list] = [[] for _ in range(depth)]
    for n in _dfs(g, [n for n in g if g.in_degree(n) == 0]):
        rows[layer[n]].append(n)
    edges = _Edges()
    for u, v in g.edges():
        chain = [u]
        for i in range(layer[u] + 1, layer[v]):
            d = _Dummy((u, v), i)
            rows[i].append(d)
            chain.append(d)
        edges.dummies[(u, v)] = chain[1:]
        chain.append(v)
        for a, b in zip(chain, chain[1:]):
            edges.add(a, b)
    return rows, edges


def _dfs(g: nx.DiGraph, sources: list) -> list:
    """Depth-first order from the sources, so that a branch's nodes start out next to each other."""
    order, seen = [], set()
    for s in sources:
        for n in nx.dfs_preorder_nodes(g, s):
            if n not in seen:
                seen.add(n)
                order.append(n)
    return order


def _order(rows: list[list], edges: _Edges, sweeps: int) -> list[list]:
    best, best_cost = [list(r) for r in rows], _crossings(rows, edges)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        indices = range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)
        for i in indices:
            fixed = {n: k for k, n in enumerate(rows[i - 1 if down else i + 1])}
            near = edges.up if down else edges.down
            current = {n: k for k, n in enumerate(rows[i])}

            def bary(n):
                ks = [fixed[m] for m in near.get(n, ()) if m in fixed]
                return sum(ks) / len(ks) if ks else current[n]

            rows[i] = sorted(rows[i], key=bary)
        cost = _crossings(rows, edges)
        if cost < best_cost:
            best, best_cost = [list(r) for r in rows], cost
    return best


def _crossings(rows: list[list], edges: _Edges) -> int:
    total = 0
    for upper, lower in zip(rows, rows[1:]):
        pos = {n: k for k, n in enumerate(lower)}
        pairs = sorted((k, pos[m]) for k, n in enumerate(upper) for m in edges.down.get(n, ()) if m in pos)
        targets = [b for _, b in pairs]
        total += sum(1 for i in range(len(pairs)) for j in range(i + 1, len(pairs))
                     if pairs[i][0] < pairs[j][0] and targets[j] < targets[i])
    return total


def _xs(rows: list[list], edges: _Edges, width: dict, hgap: float) -> dict:
    x: dict = {}
    for row in rows:
        x.update(zip(row, _pack([0.0] * len(row), [width[n] for n in row], hgap)))
    passes = [(range(1, len(rows)), (edges.up,)), (range(len(rows) - 2, -1, -1), (edges.down,))] * 4
    passes.append((range(len(rows)), (edges.up, edges.down)))
    for indices, neighbours in passes:
        for i in indices:
            row = rows[i]
            wanted = []
            for n in row:
                near = [x[m] for adj in neighbours for m in adj.get(n, ())]
                wanted.append(sum(near) / len(near) if near else x[n])
            x.update(zip(row, _pack(wanted, [width[n] for n in row], hgap)))
    return x


def _pack(wanted: list[float], widths: list[float], hgap: float) -> list[float]:
    """Centres as close as possible (least squares) to ``wanted``, in order, ``hgap`` apart."""
    offsets = [0.0]
    for a, b in zip(widths, widths[1:]):
        offsets.append(offsets[-1] + (a + b) / 2 + hgap)
    blocks: list[list[float]] = []  # [sum, count] of pooled targets, non-decreasing means
    for target in (w - o for w, o in zip(wanted, offsets)):
        blocks.append([target, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    pooled = [s / c for s, c in blocks for _ in range(int(c))]
    return [p + o for p, o in zip(pooled, offsets)]
