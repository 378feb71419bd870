"""``prune-unreachable``: drop every call site that no model output depends on.

Precondition: none. Guarantee: every remaining call site is an ancestor of an output; model
inputs that no output needs are dropped too (inside nested bodies inputs stay, since their
callers pass them). Layers left without call sites disappear.

    before: %a = Dense @a#0(%x); %dead = Dense @dead#0(%x); return %a
    after:  %a = Dense @a#0(%x); return %a
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..analysis.cuts import live_nodes
from ..ir import Graph
from .infra import Pass, register

__all__ = ["PruneUnreachable", "live_nodes", "prune"]


def prune(graph: Graph, *, keep_inputs: bool) -> Graph:
    """A pruned copy (the input graph is returned as is when nothing is dead)."""
    live = live_nodes(graph)
    if keep_inputs:
        live |= set(graph.inputs)
    bodies = {name: prune(layer.body, keep_inputs=True) for name, layer in graph.layers.items()
              if layer.body is not None}
    changed_bodies = {n: b for n, b in bodies.items() if b is not graph.layers[n].body}
    if len(live) == len(graph) and not changed_bodies:
        return graph
    new = graph.copy()
    new.remove_nodes(n for n in graph.topological_ids() if n not in live)
    for name, body in changed_bodies.items():
        new.set_layer(replace(new.layers[name], body=body))
    new.remove_unused_layers()
    return new


@register
@dataclass(frozen=True)
class PruneUnreachable(Pass):
    """Drop call sites and inputs that no model output depends on (also inside nested models)."""

    name: ClassVar[str] = "prune-unreachable"

    def apply(self, graph: Graph) -> Graph:
        pruned = prune(graph, keep_inputs=False)
        return pruned if pruned is not graph else graph.copy()
