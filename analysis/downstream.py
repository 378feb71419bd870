"""``downstream``: the layers whose outputs depend on a tensor (analysis, no rewrite).

Typical use: freeze a pretrained model and set only the layers above a cut trainable.
"""

from __future__ import annotations

from ..ir import INPUT_CLASS, Graph
from ..ir.refs import resolve

__all__ = ["downstream"]


def downstream(graph: Graph, ref: str) -> list[str]:
    """Names of the layers that depend on ``ref``, in topological order (``ref``'s own excluded).

    ``ref`` resolves in ``graph`` as it is (:func:`kgraft.passes.downstream` inlines nested models
    first where ``ref`` points inside one).
    """
    value = resolve(graph, ref)
    reached = graph.reach(user for user, out, _ in graph.uses(value.node) if out == value.index)
    names: dict[str, None] = {}
    for node in graph.nodes():
        if node.id in reached and graph.layers[node.layer].class_name != INPUT_CLASS:
            names.setdefault(node.layer)
    return list(names)
