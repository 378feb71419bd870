"""``inline-nested``: replace every nested model call by the nested model's body.

Precondition: none. Guarantee: no layer has a ``body``; every value computes what it did
before. Inner layers keep their names where unique; otherwise they are renamed to their
qualified path joined by ``_`` (``vgg16_block1_conv1``), and stay addressable as
``vgg16/block1_conv1`` through ``Layer.path``. A nested model called twice yields inner layers
with two call sites each (still one set of weights). Layers of a frozen nested model
(``trainable=False``) are marked frozen. A nested call's ``training`` argument moves onto the
inlined calls that set none themselves (as Keras passes it down); any other call argument would
be lost, so it is refused.

    before: %enc = Functional @enc#0(%x) { ... %d = Dense @d#0(%in) ... return %d }
    after:  %d = Dense @d#0(%x)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import ClassVar

from ..ir import INPUT_CLASS, Graph, Layer, UnsupportedModelError, ValueRef, VerificationError
from ..ir.rewrite import clone_node, unique_name
from .infra import Pass, register

__all__ = ["InlineNested", "inline"]


def inline(graph: Graph) -> Graph:
    """A copy of ``graph`` with every nested model inlined, depth first."""
    nested = {name: layer for name, layer in graph.layers.items() if layer.body is not None}
    if not nested:
        return graph
    bodies = {name: inline(layer.body) for name, layer in nested.items()}
    names = _inner_names(graph, nested, bodies)
    new = Graph(graph.name, "Functional")
    new.meta = graph.meta
    remap: dict[ValueRef, ValueRef] = {}
    next_call: Counter[str] = Counter()
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        if layer.body is None:
            clone_node(new, node, remap, layer)
            continue
        body = bodies[layer.name]
        local = _bind_inputs(node, body, remap)
        frozen = layer.config.get("trainable") is False
        training = _training(node, body)
        for inner in body.nodes():
            if inner.id in body.inputs:
                continue
            if training is not None and "training" not in inner.kwargs:
                inner = replace(inner, kwargs={**inner.kwargs, "training": training})
            src = body.layers[inner.layer]
            target = new.layers.get(names[src.path]) or _renamed(src, names[src.path], frozen)
            copy = clone_node(new, inner, local, target, next_call[target.name])
            next_call[target.name] += 1
            if copy.id != inner.id:  # an unrenamed call site needs no entry (and is then shared as is)
                for i in range(len(inner.outputs)):
                    local[ValueRef(inner.id, i)] = ValueRef(copy.id, i)
        for i, out in enumerate(body.outputs):
            remap[ValueRef(node.id, i)] = local.get(out, out)
    new.set_inputs(graph.inputs)
    new.set_outputs(remap.get(r, r) for r in graph.outputs)
    return new


def _renamed(layer: Layer, name: str, frozen: bool) -> Layer:
    if name == layer.name and not frozen:
        return layer  # layers are immutable: nothing to copy
    config = {**layer.config, "name": name}
    if frozen:
        config["trainable"] = False
    return replace(layer, name=name, spec={**layer.spec, "config": config})


def _inner_names(graph: Graph, nested: dict[str, Layer], bodies: dict[str, Graph]) -> dict[tuple, str]:
    """Final name of each inlined layer (by qualified path): kept if unique, else path-joined."""
    outer = {name for name, layer in graph.layers.items() if layer.body is None}
    inner: dict[tuple, str] = {}
    for name in nested:
        body = bodies[name]
        for layer in body.layers.values():
            if layer.class_name != INPUT_CLASS:
                inner[layer.path] = layer.name
    counts = Counter(inner.values())
    taken = outer | set(inner.values())  # a new name avoids these and every name given so far
    final = {}
    for path, name in inner.items():
        keep = counts[name] == 1 and name not in outer
        final[path] = name if keep else unique_name("_".join(path), taken)
        taken.add(final[path])
    return final


def _training(node, body: Graph):
    """The ``training`` argument of a nested model's call; other call arguments cannot be inlined."""
    other = {k: v for k, v in node.kwargs.items() if k != "training" and v is not None}
    if other:
        raise UnsupportedModelError(
            f"call site {node.id!r} passes {', '.join(f'{k}={v!r}' for k, v in other.items())} to nested "
            f"model {body.name!r}; inlining it would drop the argument{'s' if len(other) > 1 else ''}. "
            f"Keep the model nested (refs like '{body.name}/<layer>' still work where no inlining is needed) "
            "or call the nested model without it."
        )
    return node.kwargs.get("training")


def _bind_inputs(node, body: Graph, remap: dict[ValueRef, ValueRef]) -> dict[ValueRef, ValueRef]:
    """Map the body's inputs to the call site's (renamed) operands, by name for dict inputs."""
    inputs = body.input_refs()
    if len(node.args) == 1 and isinstance(node.args[0], dict):
        by_name = node.args[0]
        operands = [by_name.get(body.node(r.node).layer) for r in inputs]
    else:
        operands = [ref for path, ref in node.operands() if path[0] == "args"]
    if len(operands) != len(inputs) or any(o is None for o in operands):
        raise VerificationError(
            f"call site {node.id!r} passes {len(operands)} tensor(s) to nested model "
            f"{body.name!r}, which has {len(inputs)} input(s)"
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
