"""Input types of nested models after a structural change, as Keras infers them.

The IR does not infer shapes: after ``set-input-shape`` (or an inserted or replaced layer) the
values downstream become unknown, and Keras re-infers them when it builds the model. A nested
model, though, is built from its own input type, which its body records (``vgg16`` built for
``f32[?,112,112,64]`` refuses a ``f32[?,56,56,64]`` tensor). :func:`reinfer_nested` gives every
nested model whose operands' types became unknown the types Keras computes for them: it builds
the model up to those operands (no weights) and reads the shapes, then re-infers inside the new
body the same way. One prefix build per such nested model, none when there is none.
"""

from __future__ import annotations

from dataclasses import replace

from ...ir import Graph, TensorType

__all__ = ["reinfer_nested"]


def reinfer_nested(graph: Graph) -> Graph:
    """``graph`` with every stale nested model's input types re-inferred (a copy where one changed)."""
    from ...passes.extract import extract_values
    from ...passes.set_input_shape import with_input_type
    from .build import build

    done: set[str] = set()
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        operands = [ref for _, ref in node.operands()]
        if layer.body is None or layer.name in done or len(operands) != len(layer.body.inputs):
            continue
        if all(graph.value_type(r).known for r in operands):
            continue
        done.add(layer.name)
        prefix = build(extract_values(graph, operands, None), weights=False)
        outputs = prefix.outputs if isinstance(prefix.outputs, list) else [prefix.outputs]
        body = layer.body
        for input_id, tensor in zip(layer.body.inputs, outputs):
            body = with_input_type(body, input_id, TensorType(tuple(tensor.shape), str(tensor.dtype)))
        graph = graph.copy()
        graph.set_layer(replace(layer, body=reinfer_nested(body)))
    return graph
