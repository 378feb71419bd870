"""``rename{prefix,names}``: new layer names, nested models' layers and inputs included.

``prefix`` is put before every name (the model's own name too), so that two copies of one
architecture can live in one ``keras.Model`` ("All operation names should be unique"). ``names``
maps old names (or qualified paths such as ``vgg16/block1_conv1``) to new ones; the Keras-level
:func:`kgraft.rename` also takes a callable. A new name that clashes with another layer of the same
model raises a :class:`~kgraft.KgraftError` naming both. Nothing else changes: same call sites,
same weights, same numbers.

    rename{prefix=a_}:  %conv = Conv2D @conv#0(%image)  ->  %a_conv = Conv2D @a_conv#0(%a_image)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from ..ir import Graph, KgraftError, ValueRef
from ..ir.rewrite import clone_node
from .infra import Pass, register

__all__ = ["Rename", "rename_graph"]


def rename_graph(graph: Graph, new_name, path: tuple[str, ...] = ()) -> Graph:
    """A copy of ``graph`` whose layers are called ``new_name(layer)`` (``None``: unchanged)."""
    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for layer in graph.layers.values():
        name = new_name(layer) or layer.name
        if name in owners:
            raise KgraftError(f"rename: {owners[name]!r} and {layer.qualified_name!r} would both be called "
                              f"{name!r} in model {graph.name!r}; give them different names")
        names[layer.name], owners[name] = name, layer.qualified_name
    new = Graph(graph.name, graph.kind)
    new.meta = graph.meta
    remap: dict[ValueRef, ValueRef] = {}
    for node in graph.nodes():
        old = graph.layers[node.layer]
        layer = new.layers.get(names[old.name])
        if layer is None:
            name = names[old.name]
            body = None if old.body is None else rename_graph(old.body, new_name, path + (name,))
            layer = replace(old, name=name, path=path + (name,), body=body,
                            spec={**old.spec, "config": {**old.config, "name": name}})
        copy = clone_node(new, node, remap, layer)
        for i in range(len(node.outputs)):
            remap[ValueRef(node.id, i)] = ValueRef(copy.id, i)
    new.set_inputs(remap[ValueRef(i)].node for i in graph.inputs)
    new.set_outputs((remap[r] for r in graph.outputs), graph.output_keys)
    return new


@register
@dataclass(frozen=True)
class Rename(Pass):
    """Prefix every layer name (``prefix``) and/or rename layers by a dict (``names``)."""

    name: ClassVar[str] = "rename"
    prefix: str = ""
    names: dict = field(default_factory=dict)

    def apply(self, graph: Graph) -> Graph:
        if not self.prefix and not self.names:
            raise KgraftError("rename needs prefix=<text> or names={old: new} (from Python)")
        table = dict(self.names)
        unused = set(table)

        def new_name(layer):
            key = layer.qualified_name if layer.qualified_name in table else layer.name
            if key in table:
                unused.discard(key)
                return table[key]
            return self.prefix + layer.name if self.prefix else None

        new = rename_graph(graph, new_name)
        unused.discard(graph.name)
        if unused:
            raise KgraftError(f"rename: no layer called {', '.join(sorted(map(repr, unused)))} in model "
                              f"{graph.name!r}; use layer names or qualified paths (outer/inner)")
        new.name = table.get(graph.name, self.prefix + graph.name)
        return new
