"""Tensor references ("refs"), as users write them, resolved to IR values.

* ``block5_conv3``       output of the layer of that name
* ``vgg16/block5_conv3`` qualified path through nested models (valid before and after inlining)
* ``name:i``             output ``i`` of a layer with several outputs
* ``name@k``             call site ``k`` of a shared layer (combine: ``name@k:i``)

An unknown ref raises :class:`RefError` listing the closest names.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from .errors import RefError
from .graph import Graph, Layer, ValueRef

__all__ = ["Ref", "parse_ref", "resolve", "resolve_many", "all_refs", "NestedRef", "points_inside", "at_top_level",
           "sanitize"]

_REF = re.compile(r"^(?P<path>[^@:]+?)(?:@(?P<call>\d+))?(?::(?P<out>\d+))?$")


@dataclass(frozen=True)
class Ref:
    path: str
    call: int | None = None
    output: int | None = None


class NestedRef(RefError):
    """The ref names a value inside a nested model: inline nested models, then resolve again."""


def parse_ref(text: str) -> Ref:
    m = _REF.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise RefError(f"{text!r} is not a tensor ref: expected 'name', 'outer/inner', 'name:i' or 'name@k'")
    call, out = m.group("call"), m.group("out")
    return Ref(m.group("path"), int(call) if call else None, int(out) if out else None)


def _parse_in(graph: Graph, text: str) -> Ref:
    """``parse_ref``, except that an exact layer name wins over the syntax (a layer named ``enc:1``
    or ``a@b`` is reached by its name)."""
    if isinstance(text, str) and (_find_layer(graph, text) is not None or text in graph.aliases or any(
            _in_body(layer.body, text) for layer in graph.layers.values() if layer.body is not None)):
        return Ref(text)
    return parse_ref(text)


def _find_layer(graph: Graph, path: str) -> Layer | None:
    if path.startswith(graph.name + "/") and path not in graph.layers:
        path = path[len(graph.name) + 1:]
    layer = graph.layers.get(path)
    if layer is not None:
        return layer
    return next((l for l in graph.layers.values() if l.qualified_name == path), None)


def at_top_level(graph: Graph, text: str) -> bool:
    """True when ``text`` names a layer of ``graph`` itself (not one inside a nested model), and
    the call site it picks is one at this level: a layer shared with a nested model has its
    other call sites (``name@1``) only once that model is inlined."""
    ref = _parse_in(graph, text)
    layer = _find_layer(graph, ref.path)
    return layer is not None and (ref.call is None or any(c.call_index == ref.call for c in graph.call_sites(layer.name)))


def points_inside(graph: Graph, text: str) -> bool:
    """True when ``text`` names a layer inside a nested model of ``graph`` (not at its top level)."""
    ref = _parse_in(graph, text)
    if _find_layer(graph, ref.path) is not None:
        return False
    return any(_in_body(layer.body, ref.path) for layer in graph.layers.values() if layer.body is not None)


def _in_body(body: Graph, path: str) -> bool:
    for layer in body.layers.values():
        if layer.name == path or layer.qualified_name == path:
            return True
        if layer.body is not None and _in_body(layer.body, path):
            return True
    return False


def resolve(graph: Graph, text: str) -> ValueRef:
    """The value ``text`` names in ``graph`` (top level), or a RefError that says what exists."""
    ref = _parse_in(graph, text)
    layer = _find_layer(graph, ref.path)
    if layer is None:
        inlined = graph.aliases.get(ref.path)  # a nested model inlined away: its calls' outputs
        if inlined is not None and all(v.node in graph for outs in inlined.values() for v in outs):
            return _select(text, ref, ref.path, inlined, lambda first: ref.path)
        if points_inside(graph, text):
            raise NestedRef(f"{text!r} is inside a nested model of {graph.name!r}; inline nested models first")
        raise RefError(_unknown_message(graph, text))
    calls = {c.call_index: [ValueRef(c.id, i) for i in range(len(c.outputs))] for c in graph.call_sites(layer.name)}
    if not calls:
        raise RefError(f"layer {layer.name!r} is not called in model {graph.name!r} (it was pruned)")
    return _select(text, ref, layer.name, calls, lambda first: graph.value_name(first).rsplit(":", 1)[0])


def _select(text: str, ref: Ref, name: str, calls: dict[int, list[ValueRef]], base) -> ValueRef:
    """The output ``ref`` picks among the call sites ``calls`` (call index -> output values) of
    layer ``name``; ``base(first output)`` names the call in messages."""
    options = ", ".join(f"{name}@{k}" for k in calls)
    if ref.call is None:
        if len(calls) > 1:
            raise RefError(f"{text!r} is ambiguous: layer {name!r} is shared ({len(calls)} call sites); "
                           f"pick one: {options}")
        outputs = next(iter(calls.values()))
    else:
        outputs = calls.get(ref.call)
        if outputs is None:
            raise RefError(f"{text!r}: layer {name!r} has no call site {ref.call}; it has {options}")
    n_out = len(outputs)
    if ref.output is None:
        if n_out > 1:
            call = base(outputs[0])
            raise RefError(f"{text!r} is ambiguous: {call!r} has {n_out} outputs; pick one: "
                           + ", ".join(f"{call}:{i}" for i in range(n_out)))
        return outputs[0]
    if ref.output >= n_out:
        raise RefError(f"{text!r}: {name!r} has {n_out} output(s) (0..{n_out - 1}), not {ref.output}")
    return outputs[ref.output]


def resolve_many(graph: Graph, texts) -> list[ValueRef]:
    return [resolve(graph, t) for t in ([texts] if isinstance(texts, str) else texts)]


def all_refs(graph: Graph) -> list[str]:
    """Every ref that names a value in ``graph``, nested models' values included (for suggestions)."""
    names = []
    for node in graph.nodes():
        for i in range(len(node.outputs)):
            names.append(graph.value_name(ValueRef(node.id, i)))
        layer = graph.layers[node.layer]
        if layer.qualified_name != layer.name:
            names.append(layer.qualified_name)
        if layer.body is not None:
            names.extend(n for n in all_refs(layer.body) if n not in layer.body.layers
                         or layer.body.layers[n].class_name != "InputLayer")
    return list(dict.fromkeys(names))


def _unknown_message(graph: Graph, text: str) -> str:
    names = all_refs(graph)
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if text.split("/")[-1].split("_")[0] in n][:5]
    hint = f" Closest names: {', '.join(close)}." if close else ""
    return (f"unknown tensor {text!r} in model {graph.name!r} ({len(names)} tensors).{hint} "
            "List them all with `kgraft show MODEL` or kgraft.split_points(model).")


def sanitize(name: str) -> str:
    """A Keras-legal layer name for a ref (``a/b@1:0`` -> ``a_b_1_0``)."""
    return re.sub(r"[/@:]", "_", name)
