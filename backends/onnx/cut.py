"""Cut one partition out of a converted ONNX graph, with onnx-ir.

``onnx.utils.Extractor`` walks node inputs only, so it drops the producers of outer-scope
values that a ``Loop``/``Scan``/``If`` body reads (LSTM and GRU layers convert to such loops)
and writes files that fail ``onnx.checker``. onnx-ir models a subgraph's reads of outer values
as ordinary uses, so rewiring the cut tensors to new graph inputs and removing what no output
needs, counting what bodies read (:func:`_remove_unneeded`), keeps every body whole with what it
captures.

A cut tensor is the converted graph's output for its ref. tf2onnx computes convolutions
channels-first and returns a channels-last tensor as ``Transpose(T)``, while the layers after it
read ``T`` itself; so the readers of ``T`` are rewired too, to the cut input transposed back
(``layout="keras"``), or to the cut input itself when the file holds the tensor channels-first
(``layout="nchw"``: no Transpose on either side of the cut). A partition that still reads a
tensor it neither receives nor computes raises :class:`NotClosed`; the exporter then converts
each partition on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ir import KgraftError

__all__ = ["Port", "NotClosed", "partition", "nchw_alias"]

TO_NCHW = (0, 3, 1, 2)  # keras (NHWC) -> file (NCHW)
TO_NHWC = (0, 2, 3, 1)


class NotClosed(KgraftError):
    """The partition reads a tensor computed upstream of its inputs (it cannot be cut out)."""


@dataclass(frozen=True)
class Port:
    """One partition input or output: its name in the converted graph, its ref, its layout."""

    name: str
    ref: str
    layout: str = "keras"  # or "nchw": held channels-first in the file
    shape: tuple | None = None  # the Keras shape (None: unknown dims), to fill in what ONNX left unknown


def _values(graph) -> dict:
    found = {v.name: v for v in graph.inputs}
    found.update(graph.initializers)
    for node in graph:
        found.update((o.name, o) for o in node.outputs)
    return found


def _chain(value):
    """``value`` and the Identity nodes' inputs behind it: ``[value, ..., source]``."""
    chain = [value]
    while (node := chain[-1].producer()) is not None and node.op_type == "Identity" and node.inputs[0] is not None:
        chain.append(node.inputs[0])
    return chain


def nchw_alias(value):
    """The channels-first tensor ``T`` when ``value`` is ``Transpose(T, perm=[0, 2, 3, 1])``."""
    source = _chain(value)[-1]
    node = source.producer()
    if node is None or node.op_type != "Transpose" or node.inputs[0] is None:
        return None
    perm = node.attributes.get("perm")
    return node.inputs[0] if perm is not None and tuple(perm.as_ints()) == TO_NHWC else None


def _transpose(graph, value, perm, first: bool = False):
    import onnx_ir as ir

    node = ir.node("Transpose", [value], attributes={"perm": list(perm)})
    if first and len(graph):  # reads a graph input: before every reader
        graph.insert_before(graph.node(0), node)
    else:
        graph.append(node)
    out = node.outputs[0]
    out.dtype = value.dtype
    if value.shape is not None:
        out.shape = ir.Shape([value.shape[p] for p in perm])
    return out


def _file_input(graph, value, port: Port, name: str):
    """A new graph input for cut tensor ``value``; readers of ``value`` (and of its channels-first
    alias) read it instead."""
    import onnx_ir as ir

    shape = value.shape
    if port.layout == "nchw" and shape is not None:
        shape = ir.Shape([shape[p] for p in TO_NCHW])
    new = ir.Value(name=name, type=value.type, shape=shape)
    alias = nchw_alias(value)
    keras_view = new if port.layout == "keras" else _transpose(graph, new, TO_NHWC, first=True)
    for v in _chain(value):
        v.replace_all_uses_with(keras_view)
    if alias is not None:
        alias.replace_all_uses_with(new if port.layout == "nchw" else _transpose(graph, new, TO_NCHW, first=True))
    return new


def _file_output(graph, value, port: Port):
    if port.layout != "nchw":
        return value
    import onnx_ir as ir

    alias = nchw_alias(value)
    if alias is None:
        return _transpose(graph, value, TO_NCHW)
    if alias.dtype is None:  # an inner tensor: tf2onnx typed only the graph's outputs
        alias.dtype = value.dtype
    if alias.shape is None and value.shape is not None:
        alias.shape = ir.Shape([value.shape[p] for p in TO_NCHW])
    return alias


def _fold_transpose_pairs(graph) -> None:
    """``Transpose(Transpose(x, p), q)`` that restores ``x``'s layout reads ``x`` instead.

    Every tensor a cut may cross is an output of the converted graph, so tf2onnx leaves a
    channels-last copy of it (``Transpose``) that the next convolution transposes back; inside
    one partition, and at the cut inputs made here, such pairs are no-ops.
    """
    for node in list(graph):
        if node.op_type != "Transpose" or node.inputs[0] is None:
            continue
        inner = node.inputs[0].producer()
        if inner is None or inner.op_type != "Transpose" or inner.inputs[0] is None:
            continue
        p, q = inner.attributes.get("perm"), node.attributes.get("perm")
        if p is None or q is None:
            continue
        p, q = p.as_ints(), q.as_ints()
        out = node.outputs[0]
        if len(p) == len(q) and all(p[q[i]] == i for i in range(len(q))) and not out.is_graph_output():
            out.replace_all_uses_with(inner.inputs[0])


def _bodies(node):
    import onnx_ir as ir

    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            yield attr.as_graph()
        elif attr.type == ir.AttributeType.GRAPHS:
            yield from attr.as_graphs()


def _remove_unneeded(graph) -> None:
    """Drop the nodes no graph output needs, counting what their bodies read as needed.

    A removed ``Loop`` keeps its body's nodes, which still count as uses of the outer values
    they read (so ``RemoveUnusedNodesPass`` would keep those producers); their inputs are
    detached first.
    """
    import onnx_ir as ir

    needed = set(graph.outputs)
    keep = set()
    for node in reversed(graph):
        if any(o in needed for o in node.outputs):
            keep.add(node)
            needed.update(v for v in node.inputs if v is not None)
            for body in _bodies(node):
                for inner in ir.traversal.RecursiveGraphIterator(body):
                    needed.update(v for v in inner.inputs if v is not None)
    for node in reversed(list(graph)):
        if node in keep:
            continue
        for body in _bodies(node):
            for inner in ir.traversal.RecursiveGraphIterator(body):
                for i in range(len(inner.inputs)):
                    inner.replace_input_with(i, None)
        graph.remove(node, safe=True)


def _refine_shape(value, port: Port) -> None:
    """Dimensions Keras knows and the converted graph left symbolic take Keras's value."""
    import onnx_ir as ir

    if port.shape is None or value.shape is None or len(value.shape) != len(port.shape):
        return
    known = list(port.shape) if port.layout == "keras" else [port.shape[p] for p in TO_NCHW]
    dims = [k if isinstance(k, int) and not isinstance(d, int) else d for d, k in zip(value.shape, known)]
    value.shape = ir.Shape(dims)


def _check_closed(graph, what: str) -> None:
    """Every value a node reads (in bodies too) is computed, an initializer or an input of its graph."""
    import onnx_ir as ir

    for node in ir.traversal.RecursiveGraphIterator(graph):
        for value in node.inputs:
            if value is None or value.producer() is not None or value.is_initializer():
                continue
            owner = value.graph
            if owner is None or value not in owner.inputs:
                raise NotClosed(f"{what}: node {node.name!r} ({node.op_type}) reads {value.name!r}, which "
                                "the partition neither receives nor computes")


def partition(proto, ins: list[Port], outs: list[Port], what: str, declared: dict | None = None):
    """The ``ModelProto`` computing ``outs`` from ``ins`` out of converted model ``proto`` (not
    modified). Inputs and outputs are named by their refs, in the given order; an output whose ref
    is an input's is that input (passed through). ``declared``: name -> ``(dtype, shape)`` of
    inputs the converter dropped (nothing reads them), added back so the signature is complete.
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass

    from .surgery import rename_tensors

    model = ir.serde.deserialize_model(proto)
    graph = model.graph
    values = _values(graph)
    wanted = {}
    for port in outs:  # look outputs up before inputs are rewired
        if port.name not in values and port.ref not in {p.ref for p in ins}:
            raise KgraftError(f"internal: {what} output {port.ref!r} ({port.name}) is not in the converted graph")
        wanted[port.ref] = values.get(port.name)
    graph.outputs.clear()
    originals = list(graph.inputs)
    graph.inputs.clear()
    new_inputs, by_ref = [], {}
    for j, port in enumerate(ins):
        value = values.get(port.name)
        if value is None:
            if not declared or port.name not in declared:
                raise KgraftError(f"internal: {what} input {port.ref!r} is missing from the converted graph")
            dtype, shape = declared[port.name]
            value = ir.Value(name=port.name, type=ir.TensorType(dtype), shape=ir.Shape(shape))
        elif value not in originals:
            value = _file_input(graph, value, port, f"__kgraft_in{j}")
        new_inputs.append(value)
        by_ref[port.ref] = value
    graph.inputs.extend(new_inputs)
    new_outputs = []
    for port in outs:
        value = by_ref.get(port.ref)
        new_outputs.append(value if value is not None else _file_output(graph, wanted[port.ref], port))
    graph.outputs.extend(new_outputs)
    for value, port in [*zip(new_inputs, ins), *zip(new_outputs, outs)]:
        _refine_shape(value, port)
    _remove_unneeded(graph)
    _fold_transpose_pairs(graph)
    _remove_unneeded(graph)
    RemoveUnusedNodesPass()(model)  # and the initializers nothing reads
    RemoveUnusedOpsetsPass()(model)
    _check_closed(graph, what)
    graph.sort()
    names = {}
    for j, value in enumerate(new_outputs):
        if not value.name:
            value.name = f"__kgraft_out{j}"
    for value, port in [*zip(new_inputs, ins), *zip(new_outputs, outs)]:
        names[value.name] = port.ref
    result = ir.serde.serialize_model(model)
    rename_tensors(result, names)
    return result
