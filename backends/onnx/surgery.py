"""ONNX proto edits on a cut partition: tensors renamed to their refs, the batch dimension named.

(Cutting itself is :mod:`.cut`, on onnx-ir.)
"""

from __future__ import annotations

from ...ir import KgraftError

__all__ = ["rename_tensors", "name_batch_dims", "all_tensor_names"]


def all_tensor_names(graph) -> set[str]:
    names = {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {v.name for v in graph.value_info} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names.discard("")
    return names


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _rename_in_graph(graph, mapping: dict[str, str], top: bool) -> None:
    def sub(name: str) -> str:
        return mapping.get(name, name)

    for node in graph.node:
        node.input[:] = [sub(n) for n in node.input]
        node.output[:] = [sub(n) for n in node.output]
        for body in _subgraphs(node):  # bodies may use outer-scope names
            _rename_in_graph(body, mapping, top=False)
    for coll in (graph.input, graph.output, graph.value_info):
        for value in coll:
            value.name = sub(value.name)
    for tensor in graph.initializer:
        tensor.name = sub(tensor.name)


def rename_tensors(model, mapping: dict[str, str]) -> None:
    """Rename tensors of ``model`` in place (``old -> new``), consistently everywhere.

    A new name that some other tensor already has is first moved out of the way, so a ref
    that happens to equal a generated name cannot alias two tensors.
    """
    mapping = {k: v for k, v in mapping.items() if k != v}
    if not mapping:
        return
    if len(set(mapping.values())) != len(mapping):
        raise KgraftError(f"internal: two tensors would get the same ONNX name: {mapping}")
    existing = all_tensor_names(model.graph)
    clashes = (set(mapping.values()) & existing) - set(mapping)
    if clashes:
        taken = existing | set(mapping.values())
        moved = {}
        for name in sorted(clashes):
            i = 1
            while f"{name}__{i}" in taken:
                i += 1
            moved[name] = f"{name}__{i}"
            taken.add(moved[name])
        _rename_in_graph(model.graph, moved, top=True)
    _rename_in_graph(model.graph, mapping, top=True)


def name_batch_dims(model, batch: str = "batch") -> None:
    """Give the (dynamic) leading dimension of every graph input and output one symbolic name."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = batch
