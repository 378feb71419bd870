"""IR -> Keras model config (the format ``model.get_config()`` produces, Keras 3 flavour).

Emitting a config and letting Keras's own ``from_config`` build it keeps every layer's call
semantics exactly as Keras defines them, and costs the same as Keras's own rebuild.
Call-site indices are renumbered per layer, since passes may have dropped call sites.
"""

from __future__ import annotations

from ...ir import INPUT_CLASS, Graph, ValueRef
from ...ir.tree import map_refs

__all__ = ["to_config"]

_FUNCTIONAL = {"module": "keras.src.models.functional", "class_name": "Functional",
               "registered_name": "Functional"}


def to_config(graph: Graph) -> dict:
    """``{"class_name": "Functional"|"Sequential", "config": {...}}`` for ``graph``."""
    if graph.kind == "Sequential" and _is_chain(graph):
        return {"class_name": "Sequential", "config": _sequential(graph)}
    return {"class_name": "Functional", "config": _functional(graph)}


def _is_chain(graph: Graph) -> bool:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return False
    prev = ValueRef(graph.inputs[0])
    for node in graph.nodes()[1:]:
        operands = [ref for _, ref in node.operands()]
        if operands != [prev] or node.kwargs or len(graph.call_sites(node.layer)) != 1:
            return False
        prev = ValueRef(node.id)
    return graph.outputs == [prev]


def _entry(graph: Graph, name: str) -> dict:
    layer = graph.layers[name]
    entry = {**layer.spec, "name": name, "config": {**layer.spec.get("config", {}), "name": name}}
    if layer.body is not None:
        body = to_config(layer.body)
        entry["config"].update(body["config"])
        entry["config"]["name"] = name
        if body["class_name"] != layer.class_name:
            entry.update(_FUNCTIONAL)
    return entry


def _sequential(graph: Graph) -> dict:
    nodes = graph.nodes()
    layers = [_entry(graph, node.layer) for node in nodes]
    return {"name": graph.name, "trainable": True, "layers": layers}


def _functional(graph: Graph) -> dict:
    position: dict[str, int] = {}
    for name in graph.layers:
        for k, call in enumerate(graph.call_sites(name)):
            position[call.id] = k

    def tensor(ref: ValueRef) -> dict:
        ttype = graph.value_type(ref)
        producer = graph.node(ref.node)
        # Keras maps a serialized tensor to the call its keras_history names; shape and dtype only
        # make a placeholder, which must be valid even where the IR does not know them (legacy configs)
        return {"class_name": "__keras_tensor__", "config": {
            "shape": list(ttype.shape) if ttype.shape is not None else [],
            "dtype": ttype.dtype,
            "keras_history": [producer.layer, position[ref.node], ref.index]}}

    # Layers appear in topological order of their first call; each lists all its call sites in
    # call-index order, because Keras numbers a layer's nodes by their position in inbound_nodes
    # (a shared layer's call #1 may come before call #0 in topological order).
    entries: dict[str, dict] = {}
    for node in graph.nodes():
        if node.layer in entries:
            continue
        calls = graph.call_sites(node.layer)
        if graph.layers[node.layer].class_name == INPUT_CLASS:
            calls = []
        entries[node.layer] = {**_entry(graph, node.layer), "inbound_nodes": [
            {"args": map_refs(c.args, tensor), "kwargs": map_refs(c.kwargs, tensor)} for c in calls]}

    def endpoint(ref: ValueRef) -> list:
        # functional_from_config subtracts 1 from the node index of a Functional layer here (it
        # counts the model's "pre-existing node"), though not in inbound nodes.
        layer = graph.node(ref.node).layer
        from_one = graph.layers[layer].body is not None and entries[layer]["class_name"] != "Sequential"
        return [layer, position[ref.node] + from_one, ref.index]

    inputs = [endpoint(ValueRef(i)) for i in graph.inputs]
    outputs = [endpoint(r) for r in graph.outputs]
    return {
        "name": graph.name,
        "trainable": True,
        "layers": list(entries.values()),
        "input_layers": inputs[0] if len(inputs) == 1 else inputs,
        "output_layers": dict(zip(graph.output_keys, outputs)) if graph.output_keys is not None
        else outputs[0] if len(outputs) == 1 else outputs,
    }


