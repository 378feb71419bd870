"""``inline-nested``: replace every nested model call by the nested model's body.

Precondition: none. Guarantee: no layer has a ``body``; every value computes what it did
before. Inner layers keep their names where unique; otherwise they are renamed to their
qualified path joined by ``_`` (``vgg16_block1_conv1``), and stay addressable as
``vgg16/block1_conv1`` through ``Layer.path``. A nested model called twice yields inner layers
with two call sites each (still one set of weights), and a layer object that two nested models
(or a nested model and the outer graph) share stays one layer. Every layer keeps its own
``trainable`` flag (Keras counts a layer's weights as trainable by its own flag, also inside a
frozen nested model). A nested call's ``training`` argument goes onto every inlined call, over
theirs: a Keras 3 Functional called with ``training`` passes it to every operation it calls, so
the outermost recorded value wins. Under tf.keras 2's rule (``recorded_training_wins``) the
innermost one does: a recorded ``training`` wins there, and a nested call's reaches the calls
inside it that record none. Any other call argument would be lost, so it is refused.

    before: %enc = Functional @enc#0(%x) { ... %d = Dense @d#0(%in) ... return %d }
    after:  %d = Dense @d#0(%x)
"""

from __future__ import annotations

from collections import ChainMap, Counter
from dataclasses import dataclass, replace
from typing import ClassVar, NamedTuple

from ..ir import (INPUT_CLASS, Graph, Layer, UnsupportedModelError, ValueRef, VerificationError,
                  recorded_training_wins)
from ..ir import mask_layers
from ..ir.graph import nested_call_inputs
from ..ir.tree import iter_refs
from ..ir.rewrite import clone_node, unique_name
from .infra import Pass, register

__all__ = ["InlineNested", "inline"]


def inline(graph: Graph) -> Graph:
    """A copy of ``graph`` with every nested model inlined (``graph`` itself when none is nested).

    Names are settled level by level, innermost first, on the layers alone (:func:`_settle`);
    then every call site is copied once, straight into the result (:func:`_expand`). Inlining
    one level at a time copied each call site once per level above it: O(call sites x depth).
    """
    if not any(layer.body is not None for layer in graph.layers.values()):
        return graph
    first_call: dict[tuple, int] = {}
    _first_calls(graph, first_call, top=True)
    # by source layer; layers that are one weight owner in the source (one layer object shared by
    # two nested models, or by a nested model and the outer graph) become one layer
    owners = {id(l.handle): l for l in graph.layers.values() if l.body is None and l.handle is not None}
    final = {layer.path: owners.setdefault(id(layer.handle), layer) if layer.handle is not None else layer
             for layer in _settle(graph, first_call).visited.values()}
    for layer in _inner_layers(graph):  # a layer object two nested models share is settled under one path
        if layer.path not in final and layer.handle is not None and id(layer.handle) in owners:
            final[layer.path] = owners[id(layer.handle)]
    new = Graph(graph.name, "Functional")
    new.meta = graph.meta
    next_call = {name: len(graph.call_sites(name)) for name, l in graph.layers.items() if l.body is None}
    remap = _expand(graph, new, final, {}, None, next_call, recorded_training_wins(graph), top=True)
    new.set_inputs(graph.inputs, graph.input_keys)
    new.set_outputs((remap.get(r, r) for r in graph.outputs), graph.output_keys)
    new.aliases = dict(graph.aliases)
    for node in graph.nodes():  # the nested models' own outputs stay addressable by their names
        body = graph.layers[node.layer].body
        if body is not None:
            outputs = [remap[ValueRef(node.id, i)] for i in range(len(body.outputs))]
            new.aliases.setdefault(node.layer, {})[node.call_index] = outputs
    return new


class _Level(NamedTuple):
    """One graph, settled: the layers inlining it yields, by name."""

    named: dict[str, Layer]  # those the level above names (InputLayers aside)
    visited: dict[str, Layer]  # those of its call sites other than its inputs
    in_order: bool  # whether ``named`` is in the order inlining adds them (else see ``first_call``)


def _first_calls(graph: Graph, order: dict[tuple, int], top: bool = False) -> None:
    """Number the source layers (by path) in the order inlining first calls them (the layers of
    a nested model that is never called come last, in the order inlining it alone would call them)."""
    for node in graph.nodes():
        if top or node.id not in graph.inputs:
            layer = graph.layers[node.layer]
            if layer.body is not None:
                _first_calls(layer.body, order)
            else:
                order.setdefault(layer.path, len(order))
    for name, layer in graph.layers.items():
        if layer.body is not None and not graph.call_sites(name):
            _first_calls(layer.body, order)


def _settle(graph: Graph, first_call: dict[tuple, int]) -> _Level:
    """Name and freeze the layers of ``graph`` inlined, as inlining one level at a time would,
    checking each nested call as that would, innermost first."""
    nested = {name: layer for name, layer in graph.layers.items() if layer.body is not None}
    if not nested:
        inputs = set(graph.inputs)
        called = {node.layer: graph.layers[node.layer] for node in graph.nodes() if node.id not in inputs}
        return _Level({n: l for n, l in graph.layers.items() if l.class_name != INPUT_CLASS}, called, True)
    inner = {name: _settle(layer.body, first_call) for name, layer in nested.items()}
    renames = _inner_names(graph, nested, inner, first_call)
    inputs = set(graph.inputs)
    settled: dict[str, Layer] = {}
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        if layer.body is None:
            if node.id not in inputs:
                settled.setdefault(layer.name, layer)
            continue
        _bind_inputs(node, layer.body, {})
        _training(node, layer.body)
        part, renamed = inner[layer.name].visited, renames[layer.name]
        if renamed:  # the few renamed layers change; copying the rest is one C-level dict copy
            part = dict(part)
            for old, name in renamed.items():
                part[name] = _renamed(part.pop(old), name)
        settled.update(part)  # a layer seen before (a model called again) is the same layer
    return _Level(settled, settled, False)  # an input's layer is an InputLayer, which ``named`` leaves out


def _expand(body: Graph, new: Graph, final: dict[tuple, Layer], local: dict[ValueRef, ValueRef],
            training, next_call: dict[str, int], recorded_wins: bool, top: bool = False) -> dict:
    """Copy the call sites of ``body`` into ``new``, nested calls expanded in place; ``final``
    maps each source layer's path to the layer it becomes, ``local`` maps values of ``body`` to
    values of ``new`` where they differ, and is returned. Top-level call sites keep their call
    indices, inlined ones are numbered in order of call. ``training`` is the enclosing nested
    calls' (``None`` at the top)."""
    for node in body.nodes():
        if not top and node.id in body.inputs:
            continue
        layer = body.layers[node.layer]
        if layer.body is not None:
            own = _training(node, layer.body)
            bound = _with_masks(new, node, layer.body, _bind_inputs(node, layer.body, local), local, final)
            inner = _expand(layer.body, new, final, bound, _mode(training, own, recorded_wins), next_call,
                            recorded_wins)
            for i, out in enumerate(layer.body.outputs):
                local[ValueRef(node.id, i)] = inner.get(out, out)
        elif top:
            clone_node(new, node, local, layer)
        else:
            mode = _mode(training, node.kwargs.get("training"), recorded_wins)
            if mode is not node.kwargs.get("training"):
                node = replace(node, kwargs={**node.kwargs, "training": mode})
            target = final[layer.path]
            k = next_call.get(target.name, 0)
            copy = clone_node(new, node, local, target, k)
            next_call[target.name] = k + 1
            if copy.id != node.id:  # an unrenamed call site needs no entry (and is shared as is)
                for i in range(len(node.outputs)):
                    local[ValueRef(node.id, i)] = ValueRef(copy.id, i)
    for ref, mask in body.masks.items():  # which values carry a Keras mask, renamed as they were
        value = local.get(ref, ref)
        if value.node in new:
            new.masks.setdefault(value, mask)
    return local


def _mode(enclosing, own, recorded_wins: bool):
    """The ``training`` a call inlined from a nested model records: the enclosing nested calls'
    over its own (Keras 3), or its own over theirs (tf.keras 2)."""
    if recorded_wins:
        return enclosing if own is None else own
    return own if enclosing is None else enclosing


def _renamed(layer: Layer, name: str) -> Layer:
    if name == layer.name:
        return layer  # layers are immutable: nothing to copy
    config = {**layer.config, "name": name}
    return Layer(name, layer.class_name, {**layer.spec, "config": config}, layer.path, layer.handle, layer.body)


def _inner_names(graph: Graph, nested: dict[str, Layer], inner: dict[str, _Level],
                 first_call: dict[tuple, int]) -> dict[str, dict[str, str]]:
    """New names of inlined layers, per nested layer: a name is kept if unique, else replaced by
    the qualified path joined by ``_`` (made unique), given in the order inlining adds the
    layers. Only the changes are listed."""
    outer = {name: _owner(layer) for name, layer in graph.layers.items() if layer.body is None}
    # owners of each name across the nested models: one layer object in two of them is no clash
    owners = Counter(n for n, _ in {(n, _owner(l)) for nest in nested for n, l in inner[nest].named.items()}) \
        if len(nested) > 1 else None
    taken = ChainMap(dict.fromkeys(outer), *(inner[nest].named for nest in nested), {})  # a new name avoids
    renames: dict[str, dict[str, str]] = {}
    for nest in nested:
        table, in_order = inner[nest].named, inner[nest].in_order

        def clash(n: str) -> bool:
            return n in outer and outer[n] != _owner(table[n]) or owners is not None and owners[n] > 1

        if owners is None and not in_order:  # one nested model: its names clash only with outer ones
            clashes = [n for n in outer if n in table and clash(n)]
        else:
            clashes = [n for n in table if clash(n)]
        if not in_order:
            clashes.sort(key=lambda n: first_call[table[n].path])
        renames[nest] = {}
        for name in clashes:
            renames[nest][name] = new = unique_name("_".join(table[name].path), taken)
            taken.maps[-1][new] = None
    return renames


def _inner_layers(graph: Graph):
    """The layers of every nested model of ``graph``, at any depth (nested models aside)."""
    for layer in graph.layers.values():
        if layer.body is not None:
            for inner in layer.body.layers.values():
                if inner.body is None:
                    yield inner
            yield from _inner_layers(layer.body)


def _owner(layer: Layer) -> int:
    """Which weight owner a layer is: its source layer object (else the IR layer itself)."""
    return id(layer.handle) if layer.handle is not None else id(layer)


def _training(node, body: Graph):
    """The ``training`` argument of a nested model's call; other call arguments cannot be inlined."""
    other = {k: v for k, v in node.kwargs.items()
             if k not in ("training", "inputs") and not _nothing(v) and not (k == "mask" and _tensors(v))}
    if other:
        shown = ", ".join(f"{k}=<a tensor>" if iter_refs(v) else f"{k}={v!r}" for k, v in other.items())
        raise UnsupportedModelError(
            f"call site {node.id!r} passes {shown} to nested "
            f"model {body.name!r}; inlining it would drop the argument{'s' if len(other) > 1 else ''}. "
            f"Keep the model nested (refs like '{body.name}/<layer>' still work where no inlining is needed) "
            "or call the nested model without it."
        )
    return node.kwargs.get("training")


def _with_masks(new: Graph, node, body: Graph, bound: dict, local: dict, final: dict) -> dict:
    """A nested model called with ``mask=`` puts each mask on its input (``Functional.call`` sets
    them as the inputs' Keras masks): inlined, each input is ``WithMask([input, mask])``."""
    mask = node.kwargs.get("mask")
    if _nothing(mask) or not iter_refs(mask):
        return bound
    masks = nested_call_inputs(replace(node, args=[mask], kwargs={}), body)
    taken = set(new.layers) | {layer.name for layer in final.values()}
    bound = dict(bound)
    for inner, ref in zip(body.input_refs(), masks):
        if ref is None:
            continue
        name = unique_name(f"{node.layer}_{body.node(inner.node).layer}_masked", taken)
        taken.add(name)
        value = mask_layers.attach(new, bound[inner], local.get(ref, ref), name)
        new.masks[value] = new.value_type(local.get(ref, ref))
        bound[inner] = value
    return bound


def _tensors(value) -> bool:
    """A structure of tensors (and ``None`` s): what a ``mask=`` that inlining carries must be."""
    return _every_leaf(value, lambda leaf: leaf is None or isinstance(leaf, ValueRef))


def _nothing(value) -> bool:
    """``None``, or a structure of ``None`` s (``mask={'images': None}``): an argument that says nothing."""
    return _every_leaf(value, lambda leaf: leaf is None)


def _every_leaf(value, test) -> bool:
    if isinstance(value, dict):
        return all(_every_leaf(v, test) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_every_leaf(v, test) for v in value)
    return test(value)


def _bind_inputs(node, body: Graph, remap: dict[ValueRef, ValueRef]) -> dict[ValueRef, ValueRef]:
    """Map the body's inputs to the call site's (renamed) operands."""
    inputs, operands = body.input_refs(), nested_call_inputs(node, body)
    passed = [o for o in operands if o is not None]
    if len(passed) != len(inputs):
        raise VerificationError(
            f"call site {node.id!r} passes {len(passed)} tensor(s) to nested "
            f"model {body.name!r}, which has {len(inputs)} input(s)"
        )
    return {inner: remap.get(outer, outer) for inner, outer in zip(inputs, operands)}


@register
@dataclass(frozen=True)
class InlineNested(Pass):
    """Replace nested Functional/Sequential models by their bodies (any depth)."""

    name: ClassVar[str] = "inline-nested"

    def apply(self, graph: Graph) -> Graph:
        result = inline(graph)
        return result if result is not graph else graph.copy()
