"""Where a surgery happens: find the graph (top level or a nested body) a ref lives in, edit that
graph alone, and write the changed body back through every nested level above it.

Surgery keeps nested models nested (``vgg16/block3_conv1`` is edited inside ``vgg16``), unlike
``extract``, which inlines them. After a structural change the IR cannot re-infer shapes (Keras
does, when the backend builds), so :func:`invalidate` marks what lies downstream as unknown and
drops the layers' recorded build shapes; layers that keep their input's type (``KEEPS_TYPE``)
pass it on exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..ir import INPUT_CLASS, Graph, KgraftError, Layer, RefError, TensorType, ValueRef, parse
from ..ir.refs import _unknown_message, parse_ref

__all__ = ["Site", "locate", "edit_at", "invalidate", "unbuilt", "layer_sites", "template_layer", "value_users", "read_graph",
           "KEEPS_TYPE"]

# layers whose output type is their (single) input's
KEEPS_TYPE = frozenset({
    "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "PReLU", "ThresholdedReLU", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "Rescaling", "Normalization", "Identity", "ActivityRegularization",
    "RandomFlip", "RandomContrast", "RandomBrightness", "RandomRotation", "RandomTranslation",
    "RandomZoom"})


@dataclass(frozen=True)
class Site:
    """A ref placed: ``chain`` of nested model names from the top, the ref text inside them."""

    chain: tuple[str, ...]
    ref: str

    def graph(self, top: Graph) -> Graph:
        g = top
        for name in self.chain:
            g = g.layers[name].body
        return g


def locate(graph: Graph, text: str) -> Site:
    """The site of ``text``: a layer of ``graph`` itself, or ``outer/inner`` through nested
    models (each level by name or by its layers' qualified paths), or a bare name found in
    exactly one nested model."""
    ref = parse_ref(text)
    suffix = text.strip()[len(ref.path):]
    found = _find(graph, ref.path, ())
    if found is None:
        raise RefError(_unknown_message(graph, text))
    chain, inner = found
    return Site(chain, inner + suffix)


def _find(graph: Graph, path: str, chain: tuple) -> tuple[tuple, str] | None:
    if path.startswith(graph.name + "/") and path not in graph.layers:
        path = path[len(graph.name) + 1:]
    if path in graph.layers:
        return chain, path
    for layer in graph.layers.values():
        if layer.qualified_name == path and layer.name in graph.layers:
            return chain, layer.name
    head, _, rest = path.partition("/")
    nested = graph.layers.get(head)
    if rest and nested is not None and nested.body is not None:
        return _find(nested.body, rest, chain + (head,))
    hits = [hit for layer in graph.layers.values() if layer.body is not None
            for hit in [_find(layer.body, path, chain + (layer.name,))] if hit is not None]
    return hits[0] if len(hits) == 1 else None


def edit_at(graph: Graph, chain: tuple[str, ...], edit: Callable[[Graph], Graph]) -> Graph:
    """``edit`` applied to the graph at ``chain`` (a copy: ``edit`` may change it); every nested
    level above gets the new body, and where a body's output types changed, its callers' output
    types follow (or become unknown downstream)."""
    if not chain:
        return edit(graph.copy())
    new = graph.copy()
    outer = new.layers[chain[0]]
    body = edit_at(outer.body, chain[1:], edit)
    new.set_layer(replace(outer, body=body))
    out_types = tuple(body.value_type(r) for r in body.outputs)
    if out_types != tuple(outer.body.value_type(r) for r in outer.body.outputs):
        calls = new.call_sites(outer.name)
        for call in calls:
            new.replace_node(replace(call, outputs=out_types))
        invalidate(new, [c.id for c in calls], include_start=False)
    return new


def invalidate(graph: Graph, node_ids, include_start: bool = True) -> None:
    """Types downstream of ``node_ids`` may have changed: pass them through layers that keep
    their input's type, mark the rest unknown (Keras re-infers them when it builds), and drop
    the build shapes those layers recorded (``build_config``), so that Keras builds them anew."""
    start = set(node_ids)
    reached = graph.reach(start)
    for node_id in graph.topological_ids():
        if node_id not in reached or (node_id in start and not include_start):
            continue
        node = graph.node(node_id)
        layer = graph.layers[node.layer]
        if "build_config" in layer.spec:
            graph.set_layer(unbuilt(layer))
        if node_id in start:
            continue
        operands = [ref for _, ref in node.operands()]
        if layer.class_name in KEEPS_TYPE and len(operands) == 1 and len(node.outputs) == 1:
            types = (graph.value_type(operands[0]),)
        else:
            types = tuple(TensorType(None, t.dtype) for t in node.outputs)
        if types != node.outputs:
            graph.replace_node(replace(node, outputs=types))


def unbuilt(layer: Layer) -> Layer:
    """``layer`` without its recorded build shape (Keras builds it on its first call)."""
    return replace(layer, spec={k: v for k, v in layer.spec.items() if k != "build_config"})


def layer_sites(graph: Graph, site: Site, what: str) -> tuple[Graph, str, list]:
    """``(graph at the site, layer name, call sites)`` for a layer ref (``name`` or ``name@k``)."""
    g = site.graph(graph)
    ref = parse_ref(site.ref)
    if ref.output is not None:
        raise RefError(f"{what}: {site.ref!r} names one output of a layer; name the layer itself "
                       f"({ref.path!r}) or one call site ({ref.path}@k)")
    layer = g.layers[ref.path]
    calls = g.call_sites(layer.name)
    if ref.call is not None:
        calls = [c for c in calls if c.call_index == ref.call]
        if not calls:
            raise RefError(f"{what}: layer {ref.path!r} has no call site {ref.call}; it has "
                           + ", ".join(f"{ref.path}@{c.call_index}" for c in g.call_sites(layer.name)))
    if layer.class_name == INPUT_CLASS:
        raise KgraftError(f"{what}: {ref.path!r} is a model input, not a layer; to change the input use "
                          "set_input_shape, to start the model later use extract(model, outputs, inputs=...)")
    return g, layer.name, calls


def template_layer(template: Graph, what: str) -> tuple[Layer, "object"]:
    """The one layer (and its call site) of a template model: a model that applies a single
    layer to its inputs, as the Keras-level functions build it from a Keras layer."""
    calls = [n for n in template.nodes() if n.id not in template.inputs]
    if len({n.layer for n in calls}) != 1 or len(calls) != 1:
        raise KgraftError(f"{what}: the new layer must be given as a model that calls exactly one layer once, "
                          f"got {len(calls)} call sites in {template.name!r}")
    return template.layers[calls[0].layer], calls[0]


def read_graph(value, what: str, role: str) -> Graph:
    """An IR graph given as itself or as the path of a textual IR file (``role`` names it in errors)."""
    if isinstance(value, Graph):
        return value
    if isinstance(value, str):
        try:
            with open(value) as f:
                return parse(f.read())
        except OSError as e:
            raise KgraftError(f"{what}: cannot read {role} IR file {value!r}: {e}") from None
    raise KgraftError(f"{what}: {role} must be an IR Graph or the path of a .kgir file, "
                      f"got {type(value).__name__}")


def value_users(graph: Graph, value: ValueRef, skip: set[str]) -> list[str]:
    return sorted(u for u, out, _ in graph.uses(value.node) if out == value.index and u not in skip)
