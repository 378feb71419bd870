"""``replace-layer{target,new,copy_weights}``: put a new layer in the place of an old one.

``target`` is a layer ref (that layer, all its call sites; ``vgg16/block1_conv1`` inside a nested
model) or a layer class name (every layer of that class, nested models included; an exact layer
name wins). ``new`` is a template: a model that calls one layer once (an IR :class:`Graph` or a
``.kgir`` file; from Python also a dict ``old qualified name -> template``, as
:func:`kgraft.replace_layer` builds one per target). The new layer takes the old one's name (so
refs keep working), path and call sites. With ``copy_weights`` the old layer's weights are copied
into it when the model is built (a :class:`~kgraft.ShapeError` if they do not fit); without, it
keeps the template's own weights (or fresh ones).

    replace-layer{target=ReLU,new=leaky.kgir}:  %r = ReLU @r#0(%c)  ->  %r = LeakyReLU @r#0(%c)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..ir import Graph, KgraftError, Layer, RefError, TensorType
from ..ir.refs import parse_ref
from .infra import Pass, register, required
from .surgery_sites import Site, edit_at, invalidate, layer_sites, locate, read_graph, template_layer

__all__ = ["ReplaceLayer", "targets_of", "swap_layer"]


def targets_of(graph: Graph, target: str) -> list[tuple[tuple[str, ...], str]]:
    """``(chain, layer name)`` of every layer ``target`` names: a layer ref, else a class."""
    try:
        site = locate(graph, target)
    except RefError:
        site = None
    if site is not None:
        _, name, _ = layer_sites(graph, site, "replace-layer")
        if parse_ref(site.ref).call is not None:
            raise KgraftError(f"replace-layer: {target!r} names one call site; a layer's weights and config are "
                              f"shared by all its call sites, so replace the layer {parse_ref(site.ref).path!r}")
        return [(site.chain, name)]
    found: list[tuple[tuple[str, ...], str]] = []
    classes: set[str] = set()

    def walk(g: Graph, chain: tuple) -> None:
        for layer in g.layers.values():
            classes.add(layer.class_name)
            if layer.class_name == target and g.call_sites(layer.name):
                found.append((chain, layer.name))
            if layer.body is not None:
                walk(layer.body, chain + (layer.name,))

    walk(graph, ())
    if not found:
        close = difflib.get_close_matches(target, sorted(classes), n=3)
        raise RefError(f"replace-layer: {target!r} names no layer and no layer class of model {graph.name!r}."
                       + (f" Closest classes: {', '.join(close)}." if close else "")
                       + " Give a layer ref (kgraft show MODEL lists them) or a class name such as ReLU.")
    return found


def swap_layer(graph: Graph, name: str, template: Graph, copy_weights: bool) -> Graph:
    """``graph`` (changed in place) with layer ``name`` replaced by the template's layer."""
    new_layer, t_call = template_layer(template, "replace-layer")
    old = graph.layers[name]
    spec = {k: v for k, v in new_layer.spec.items() if k != "build_config"}
    spec["config"] = {**new_layer.config, "name": name}
    graph.set_layer(Layer(name, new_layer.class_name, spec, old.path,
                          handle=old.handle if copy_weights else new_layer.handle, body=new_layer.body))
    t_in = [template.value_type(r) for _, r in t_call.operands()]
    changed = []
    for call in graph.call_sites(name):
        if len(t_call.outputs) != len(call.outputs):
            raise KgraftError(f"replace-layer: {name!r} returns {len(call.outputs)} tensor(s), the new "
                              f"{new_layer.class_name} returns {len(t_call.outputs)}")
        same_inputs = [graph.value_type(r) for _, r in call.operands()] == t_in
        outputs = t_call.outputs if same_inputs else tuple(TensorType(None, t.dtype) for t in t_call.outputs)
        if outputs != call.outputs:
            graph.replace_node(replace(call, outputs=outputs))
            changed.append(call.id)
    if changed:
        invalidate(graph, changed, include_start=False)
    return graph


@register
@dataclass(frozen=True)
class ReplaceLayer(Pass):
    """Replace layer ``target`` (a ref, or every layer of a class) by the layer of template ``new``."""

    name: ClassVar[str] = "replace-layer"
    target: str = required("<layer ref or class>")
    new: Any = required("<IR graph or .kgir file>")
    copy_weights: bool = True

    def apply(self, graph: Graph) -> Graph:
        templates = self.new if isinstance(self.new, dict) else None
        shared = None if templates is not None else read_graph(self.new, "replace-layer", "new")
        for chain, name in targets_of(graph, self.target):
            template = shared
            if templates is not None:
                layer = Site(chain, name).graph(graph).layers[name]
                template = templates.get(layer.qualified_name)
                if template is None:
                    raise KgraftError(f"replace-layer: no new layer given for {layer.qualified_name!r}")
            graph = edit_at(graph, chain, lambda g, n=name, t=template: swap_layer(g, n, t, self.copy_weights))
        return graph

