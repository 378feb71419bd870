"""ONNX graph surgery: cut a converted graph into partitions and give tensors their refs' names.

Everything here edits ``onnx`` protos with onnx's own data model; cutting uses
``onnx.utils.Extractor`` (the engine of ``onnx.utils.extract_model``).
"""

from __future__ import annotations

from ...ir import KgraftError

__all__ = ["extract", "rename_tensors", "bypass_identities", "name_batch_dims", "check_closed",
           "all_tensor_names"]


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


def bypass_identities(model, output: str, graph_input: str) -> None:
    """Make graph output ``output`` *be* ``graph_input`` when it is only Identity nodes of it.

    A pass-through tensor (a skip connection carried across a partition) then has one name on
    both sides, as the manifest says. Raises when ``output`` is computed otherwise.
    """
    graph = model.graph
    producer = {o: node for node in graph.node for o in node.output}
    chain, name = [], output
    while name != graph_input:
        node = producer.get(name)
        if node is None or node.op_type != "Identity" or len(node.input) != 1:
            raise KgraftError(f"internal: output {output!r} should pass input {graph_input!r} through "
                              f"unchanged, but is computed by {node.op_type if node else 'nothing'}")
        chain.append(node)
        name = node.input[0]
    if not chain:
        return
    for node in graph.node:  # other users of the identities read the input instead
        node.input[:] = [graph_input if n in {c.output[0] for c in chain} else n for n in node.input]
    for node in chain:
        graph.node.remove(node)
    for value in graph.output:
        if value.name == output:
            value.name = graph_input
    kept = [v for v in graph.value_info if v.name not in {c.output[0] for c in chain}]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def name_batch_dims(model, batch: str = "batch") -> None:
    """Give the (dynamic) leading dimension of every graph input and output one symbolic name."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = batch


def check_closed(model, what: str) -> None:
    """Every node input is a graph input, an initializer or an earlier node's output."""
    graph = model.graph
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    for node in graph.node:
        missing = [n for n in node.input if n not in known]
        if missing:
            raise KgraftError(f"{what}: node {node.name!r} ({node.op_type}) reads {missing}, which the "
                              "partition neither receives nor computes")
        known.update(node.output)
    missing = [v.name for v in graph.output if v.name not in known]
    if missing:
        raise KgraftError(f"{what}: outputs {missing} are not computed")


def extract(extractor, inputs: list[str], outputs: list[str], declared: dict | None = None):
    """The sub-model of ``extractor``'s model between ``inputs`` and ``outputs`` (joint names).

    Declared inputs the converter dropped (a model input nothing uses) are added back from
    ``declared`` (name -> ValueInfoProto), unused, so the file's signature is the partition's.
    """
    present = set(extractor.value_infos)
    model = extractor.extract_model([n for n in inputs if n in present], outputs)
    graph = model.graph
    have = {v.name for v in graph.input}
    for name in inputs:
        if name not in have:
            if not declared or name not in declared:
                raise KgraftError(f"internal: partition input {name!r} is missing from the converted graph")
            graph.input.append(declared[name])
    order = {n: i for i, n in enumerate(inputs)}
    ordered = sorted(graph.input, key=lambda v: order.get(v.name, len(order)))
    del graph.input[:]
    graph.input.extend(ordered)
    return model
