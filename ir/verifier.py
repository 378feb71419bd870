"""The IR's invariants, checked after every pass by the pass manager.

* the call-site graph is acyclic (a topological order exists), and every operand names an existing output of its producer;
* layer names are unique and every call site ``layer#k`` belongs to its layer;
* ``inputs`` are InputLayer call sites; ``outputs`` are defined and depend on an input;
* types agree where known: an InputLayer's type matches its config, and a nested model's
  operands match its body's inputs. Bodies are verified recursively.
"""

from __future__ import annotations

import networkx as nx

from .errors import VerificationError
from .graph import INPUT_CLASS, Graph, Node, ValueRef, nested_call_inputs

__all__ = ["verify"]


def verify(graph: Graph) -> Graph:
    """Raise :class:`VerificationError` listing every broken invariant; return the graph."""
    problems: list[str] = []
    _check(graph, problems, graph.name)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise VerificationError(f"invalid IR ({len(problems)} problem(s)):\n  {shown}{more}")
    return graph


def _check(graph: Graph, problems: list[str], where: str) -> None:
    try:
        # Graph keeps its storage order topological while it can and sorts otherwise, so a
        # cycle is exactly a failed sort: checking costs nothing on an ordered graph
        nodes = graph.nodes()
    except nx.NetworkXUnfeasible:
        problems.append(f"{where}: cycle " + " -> ".join(u for u, _, *_ in nx.find_cycle(graph.nx)))
        return
    by_id = {node.id: node for node in nodes}
    inputs = set(graph.inputs)
    fed: set[str] = set()  # call sites that depend on a model input, found in the same sweep
    for node in nodes:
        if _check_node(graph, by_id, node, problems, where) & fed or node.id in inputs:
            fed.add(node.id)
    for node_id in graph.inputs:
        if node_id not in by_id or graph.layer_of(node_id).class_name != INPUT_CLASS:
            problems.append(f"{where}: model input {node_id!r} is not an InputLayer call site")
    for ref in graph.outputs:
        if ref.node not in by_id or ref.index >= len(by_id[ref.node].outputs):
            problems.append(f"{where}: model output {ref} is not defined")
        elif ref.node not in fed:
            problems.append(f"{where}: model output {graph.value_name(ref)!r} depends on no model input")
    if not graph.outputs:
        problems.append(f"{where}: the model has no outputs")
    for layer in graph.layers.values():
        if layer.body is not None:
            _check(layer.body, problems, f"{where}/{layer.name}")


def _check_node(graph: Graph, by_id: dict[str, Node], node: Node, problems: list[str], where: str) -> set[str]:
    """Check one call site; return the call sites it uses."""
    layer = graph.layers.get(node.layer)
    if layer is None:
        problems.append(f"{where}: call site {node.id!r} calls unknown layer {node.layer!r}")
        return set()
    if node.id != Node.make_id(node.layer, node.call_index):
        problems.append(f"{where}: call site id {node.id!r} does not match {node.layer}#{node.call_index}")
    operands = list(node.operands())
    for path, ref in operands:
        producer = by_id.get(ref.node)
        if producer is None or ref.index >= len(producer.outputs):
            problems.append(f"{where}: call site {node.id!r} uses undefined value {ref} at {path}")
    if layer.class_name == INPUT_CLASS:
        declared = layer.config.get("batch_shape", layer.config.get("batch_input_shape"))
        if declared is not None and node.outputs[0].shape is not None and list(node.outputs[0].shape) != list(declared):
            problems.append(f"{where}: input {node.layer!r} has type {node.outputs[0]} but its config says {declared}")
    elif not operands:
        problems.append(f"{where}: call site {node.id!r} has no tensor operands and is not an input")
    if layer.body is not None:
        for ref, inner in _nested_operands(node, layer.body, operands):
            outer_t, inner_t = graph.value_type(ref), layer.body.value_type(inner)
            if ref.node in by_id and not outer_t.compatible(inner_t):
                problems.append(
                    f"{where}: {node.id!r} passes {graph.value_name(ref)!r} of type {outer_t} to "
                    f"input {layer.body.node(inner.node).layer!r} of type {inner_t}"
                )
    return {ref.node for _, ref in operands}


def _nested_operands(node: Node, body: Graph, operands: list) -> list:
    """``(outer operand, body input)`` pairs, bound as inlining binds them."""
    return [(o, r) for o, r in zip(nested_call_inputs(node, body), body.input_refs()) if o is not None]
