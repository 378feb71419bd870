"""Textual IR: one line per call site, deterministic, parseable by :mod:`kgraft.ir.parser`.

    kgraft.model @m(%a: f32[?,8], %b: f32[?,8]) {
      %shared@0 = Dense @shared#0(%a) {units=4} : f32[?,4]
      %shared@1 = Dense @shared#1(%b) {units=4} : f32[?,4]
      %add = Add @add#0([%shared@0, %shared@1]) : f32[?,4]
      return %add
    }

Value names are refs (``name``, ``name@k`` for call site k of a shared layer, ``name:i`` for
output i). Attributes are the layer config minus what does not change the computation once
weights are copied (initializers, ``name``, default dtype/trainable, nulls), sorted by key.
A nested model prints its body as a region at its first call site. A graph whose calls follow
tf.keras 2's training rule says so in its header (``attributes {recorded_training_wins=true}``).
"""

from __future__ import annotations

from typing import Any

from .graph import INPUT_CLASS, RECORDED_TRAINING_WINS, Graph, Layer, Node, ValueRef, recorded_training_wins
from .types import compute_dtype
from .nogc import gc_paused
from .syntax import format_value
from .weight_plan import describe

__all__ = ["print_graph", "layer_attributes"]

_INDENT = "  "


def layer_attributes(layer: Layer) -> dict[str, Any]:
    """The config entries that matter for reading (and rebuilding) the computation."""
    attrs = {}
    for key, value in layer.config.items():
        if value is None or key == "name" or key.endswith("_initializer"):
            continue
        if key == "trainable" and value is True:
            continue
        if key == "dtype":
            value = compute_dtype(layer.spec) if isinstance(value, dict) else value
            if value in ("float32", None):
                continue
            if isinstance(layer.config["dtype"], dict):
                value = layer.config["dtype"].get("config", {}).get("name", value)
        attrs[key] = value
    return attrs


def _format_attrs(attrs: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={format_value(attrs[k])}" for k in sorted(attrs)) + "}"


def _header(graph: Graph, depth: int) -> str:
    kind = "sequential" if graph.kind == "Sequential" else "model"
    params = ", ".join(f"%{graph.node(i).layer}: {graph.node(i).outputs[0]}" for i in graph.inputs)
    rule = f" attributes {{{RECORDED_TRAINING_WINS}=true}}" if depth == 0 and recorded_training_wins(graph) else ""
    return f"kgraft.{kind} @{graph.name}({params}){rule} {{"


def _node_line(graph: Graph, node: Node) -> str:
    layer = graph.layers[node.layer]
    name_of = graph.value_name
    n_out = len(node.outputs)
    results = ", ".join("%" + name_of(ValueRef(node.id, i)) for i in range(n_out)) if n_out != 1 \
        else "%" + name_of(ValueRef(node.id, 0))
    operands = [format_value(a, name_of) for a in node.args]
    operands += [f"{k}={format_value(v, name_of)}" for k, v in node.kwargs.items() if v is not None]
    attrs = layer_attributes(layer)
    cls = layer.spec.get("registered_name") or layer.class_name
    line = f"{results} = {cls} @{node.id}({', '.join(operands)})"
    if attrs:
        line += " " + _format_attrs(attrs)
    return line + " : " + (str(node.outputs[0]) if n_out == 1 else ", ".join(str(t) for t in node.outputs))


def _print(graph: Graph, depth: int, out: list[str]) -> None:
    pad = _INDENT * depth
    out.append(pad + _header(graph, depth))
    printed_bodies: set[str] = set()
    inputs = set(graph.inputs)
    for node in graph.nodes():
        if node.id in inputs:
            continue
        layer = graph.layers[node.layer]
        line = pad + _INDENT + _node_line(graph, node)
        if layer.body is not None and layer.name not in printed_bodies and layer.class_name != INPUT_CLASS:
            printed_bodies.add(layer.name)
            out.append(line + " {")
            _print(layer.body, depth + 2, out)
            out.append(pad + _INDENT + "}")
        else:
            out.append(line)
        if layer.weight_plan and node.id == graph.call_sites(layer.name)[0].id:  # a comment: parse skips it
            out.append(pad + _INDENT + f"// weights of {layer.name}: {describe(layer.weight_plan)}")
    out.append(pad + _INDENT + "return " + ", ".join("%" + graph.value_name(r) for r in graph.outputs))
    out.append(pad + "}")


@gc_paused()
def print_graph(graph: Graph) -> str:
    out: list[str] = []
    _print(graph, 0, out)
    return "\n".join(out) + "\n"
