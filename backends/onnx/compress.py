"""Compressed cut tensors: what crosses a cut is sent as float16 or int8, inside the ONNX graphs.

``export_onnx(..., compress="fp16" | "int8", calibration=batch)`` ends the partition that
computes a cut tensor with a ``Cast`` (fp16) or a ``QuantizeLinear`` (int8) and starts every
partition that reads it with the inverse (``Cast`` back, ``DequantizeLinear``), so the files
alone carry the compression and any runtime or server (ONNX Runtime, Triton, KServe) runs them
unchanged. A partition that only passes such a tensor on (a skip connection over it) forwards
the compressed bytes as they are. Where the decoded tensor reaches a Loop/Scan body through
reshaping ops (a recurrent layer right after the cut), the int8 decoding is written out as
``(Cast(q) - zero_point) * scale``, the same numbers: ONNX Runtime 1.32 aborts opening a
DequantizeLinear there (see ``_reaches_a_capture``).

Which tensors: float32 tensors crossing a cut that a partition computes. The model's inputs and
outputs stay as they are (a model output computed early and passed through is sent in full),
as do integer and boolean tensors (ids, masks).

int8 is asymmetric and per tensor: ``scale = (hi - lo) / 255`` and ``zero_point`` from the
range ``[lo, hi]`` of the tensor over the calibration batch (0 always included), as
``QuantizeLinear`` defines it: ``q = saturate(round(x / scale) + zero_point)``. Both are in the
manifest, per tensor (``"compression"``), and ``bytes_per_sample`` there is the compressed size.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ...ir import KgraftError

__all__ = ["METHODS", "check_compress", "compress_cuts", "compressible", "wire_dtype"]

METHODS = {"fp16": "float16", "int8": "int8"}
SOURCE_DTYPES = ("float32",)
_RAW = "__kgraft_uncompressed"
_DECODED = "__kgraft_decoded"


def check_compress(compress, calibration, opset: int | None = None, what: str = "export_onnx") -> None:
    """Refuse a bad ``compress``/``calibration``/``opset`` before any slow work starts."""
    if compress is None:
        if calibration is not None:
            raise KgraftError(f"{what}: calibration= is only used with compress='int8'; pass compress='int8' "
                              "or drop calibration")
        return
    if compress not in METHODS:
        raise KgraftError(f"{what}: unknown compress={compress!r}; use one of {', '.join(map(repr, METHODS))} "
                          "(or None for uncompressed cut tensors)")
    if compress == "int8" and calibration is None:
        raise KgraftError(f"{what}: compress='int8' needs calibration=, an input batch like the data the model "
                          "will see (the int8 scales of the cut tensors come from their ranges on it)")
    if compress == "int8" and opset is not None and opset < 10:
        raise KgraftError(f"{what}: compress='int8' needs opset >= 10 (QuantizeLinear), got opset={opset}")


def wire_dtype(compress: str | None, dtype: str) -> str:
    """The dtype a tensor of ``dtype`` crosses a cut in."""
    return METHODS[compress] if compress and dtype in SOURCE_DTYPES else dtype


def compressible(manifest: dict) -> set[str]:
    """Names of the tensors ``compress`` applies to: float32, crossing a cut, computed by a partition."""
    finals = {io["name"] for io in manifest["outputs"]}
    names = set()
    for part in manifest["partitions"][:-1]:
        for io in part["outputs"]:
            if io["produced_by"] is not None and io["name"] not in finals and io["dtype"] in SOURCE_DTYPES:
                names.add(io["name"])
    return names


def compress_cuts(protos: list, manifest: dict, compress: str, calibration) -> list:
    """Add the encode/decode nodes to the partitions (``onnx.ModelProto``, edited in place) and
    record the compression in ``manifest`` (edited in place); returns ``protos``."""
    names = compressible(manifest)
    if not names:
        manifest["compress"] = compress
        return protos
    params = _int8_params(protos, manifest, names, calibration) if compress == "int8" else {}
    for proto, part in zip(protos, manifest["partitions"]):
        _rewrite(proto, part, names, compress, params)
        for io in part["inputs"] + part["outputs"]:
            if io["name"] in names:
                _describe(io, compress, params.get(io["name"]))
        part["bytes_in_per_sample"] = _total(part["inputs"])
        part["bytes_out_per_sample"] = _total(part["outputs"])
        _check(proto, part)
    manifest["compress"] = compress
    if compress == "int8":
        manifest["calibration"] = {"samples": int(_batch(calibration)), "method": "min-max, per tensor"}
    return protos


# ------------------------------------------------------------------------------ calibration
def _int8_params(protos, manifest, names, calibration) -> dict[str, tuple[float, int]]:
    """``(scale, zero_point)`` per tensor, from its range on the calibration batch."""
    from .runtime import OnnxPipeline

    with tempfile.TemporaryDirectory(prefix="kgraft-calibrate-") as tmp:
        for proto, part in zip(protos, manifest["partitions"]):
            with open(os.path.join(tmp, part["file"]), "wb") as f:
                f.write(proto.SerializeToString())
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        try:
            values = OnnxPipeline(tmp).run_all(calibration)
        except KgraftError as e:
            raise KgraftError(f"export_onnx: the calibration batch does not fit the model: {e}") from e
    params = {}
    for name in sorted(names):
        x = values[name]
        lo, hi = min(0.0, float(np.min(x))), max(0.0, float(np.max(x)))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise KgraftError(f"export_onnx: cut tensor {name!r} is not finite on the calibration batch; "
                              "int8 needs finite values")
        scale = (hi - lo) / 255.0 or 1.0
        zero_point = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
        params[name] = (float(np.float32(scale)), zero_point)
    return params


def _batch(inputs) -> int:
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else (
        inputs[0] if isinstance(inputs, (list, tuple)) else inputs)
    return int(np.shape(first)[0])


# ------------------------------------------------------------------------------ graph rewriting
def _rewrite(proto, part: dict, names: set[str], compress: str, params: dict) -> None:
    """Encode and decode in one partition (export_onnx runs the full checker on the result)."""
    graph = proto.graph
    index = part["index"]
    decoders = []
    for io in part["inputs"]:
        name = io["name"]
        if name not in names:
            continue
        _set_elem_type(graph.input, name, compress)
        if not _is_read(graph, name):
            continue  # only passed through: it leaves as it came, not decoded
        inner = name + _DECODED
        _replace_uses(graph, name, inner)
        decoders.append(_decode(name, inner, compress, params.get(name), _reaches_a_capture(graph, inner)))
    encoders = []
    for io in part["outputs"]:
        name = io["name"]
        if name not in names:
            continue
        _set_elem_type(graph.output, name, compress)
        if io["produced_by"] != index:
            continue  # a compressed input passed through: it leaves as it came
        raw = name + _RAW
        for node in graph.node:
            node.output[:] = [raw if o == name else o for o in node.output]
        _replace_uses(graph, name, raw)
        encoders.append(_encode(raw, name, compress, params.get(name)))
    initializers = [t for d in decoders + encoders for t in d[1]]
    nodes = [n for d in decoders for n in d[0]] + list(graph.node) + [n for e in encoders for n in e[0]]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.value_info[:]  # stale for the renamed tensors; ONNX Runtime infers them again


def _decode(wire: str, inner: str, compress: str, qparams, arithmetic: bool = False):
    """The decoding nodes: a ``Cast`` (fp16), a ``DequantizeLinear`` (int8), or with
    ``arithmetic`` the same int8 decoding as ``(Cast(q) - zero_point) * scale`` (exactly
    DequantizeLinear's numbers, in ops no runtime rewrites as quantization)."""
    from onnx import TensorProto, helper

    name = f"kgraft_decode/{wire}"
    if compress == "fp16":
        return [helper.make_node("Cast", [wire], [inner], to=TensorProto.FLOAT, name=name)], []
    scale, zero, tensors = _qparams(wire, qparams, zero_dtype=np.float32 if arithmetic else np.int8)
    if not arithmetic:
        return [helper.make_node("DequantizeLinear", [wire, scale, zero], [inner], name=name)], tensors
    steps = [f"{inner}__kgraft_cast", f"{inner}__kgraft_centred"]
    return [helper.make_node("Cast", [wire], [steps[0]], to=TensorProto.FLOAT, name=f"{name}/cast"),
            helper.make_node("Sub", [steps[0], zero], [steps[1]], name=f"{name}/sub"),
            helper.make_node("Mul", [steps[1], scale], [inner], name=f"{name}/mul")], tensors


# ONNX Runtime moves a DequantizeLinear forward past these ops (QDQPropagationTransformer)
_DQ_PROPAGATES_PAST = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"})


def _reaches_a_capture(graph, name: str) -> bool:
    """Whether ``name`` flows, through ops ONNX Runtime moves a DequantizeLinear past, into a
    tensor that a Loop/Scan/If body reads from the outer graph. ONNX Runtime (1.32) aborts the
    process opening such a file (its QDQ propagation indexes the body's capture as an explicit
    input: a masked LSTM after an int8 cut), so that tensor is decoded in plain arithmetic."""
    captured = set().union(*(_reads(body) for node in graph.node for body in _bodies(node)))
    frontier, seen = [name], {name}
    while frontier:
        value = frontier.pop()
        for node in graph.node:
            if value in node.input and node.op_type in _DQ_PROPAGATES_PAST:
                out = node.output[0]
                if out in captured:
                    return True
                if out not in seen:
                    seen.add(out)
                    frontier.append(out)
    return False


def _encode(raw: str, wire: str, compress: str, qparams):
    from onnx import TensorProto, helper

    if compress == "fp16":
        return [helper.make_node("Cast", [raw], [wire], to=TensorProto.FLOAT16, name=f"kgraft_encode/{wire}")], []
    scale, zero, tensors = _qparams(wire + _RAW, qparams)
    return [helper.make_node("QuantizeLinear", [raw, scale, zero], [wire], name=f"kgraft_encode/{wire}")], tensors


def _qparams(prefix: str, qparams, zero_dtype=np.int8):
    from onnx import numpy_helper

    scale, zero_point = qparams
    names = (f"{prefix}__kgraft_scale", f"{prefix}__kgraft_zero_point")
    tensors = [numpy_helper.from_array(np.array(scale, dtype=np.float32), names[0]),
               numpy_helper.from_array(np.array(zero_point, dtype=zero_dtype), names[1])]
    return names[0], names[1], tensors


def _bodies(node):
    import onnx

    for attr in node.attribute:
        yield from [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs


def _reads(graph) -> set[str]:
    """The tensor names the nodes of ``graph`` read (subgraph bodies included)."""
    return {name for node in graph.node for name in node.input}.union(
        *(_reads(body) for node in graph.node for body in _bodies(node)))


def _is_read(graph, name: str) -> bool:
    """Whether a node of ``graph`` (subgraph bodies included) reads tensor ``name``."""
    return name in _reads(graph)


def _replace_uses(graph, old: str, new: str, top: bool = True) -> None:
    """Every node (subgraph bodies included) reads ``new`` where it read ``old``; the top
    graph's own outputs keep their names (they are the partition's signature)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        for body in _bodies(node):
            if old not in {v.name for v in body.input}:  # not shadowed
                _replace_uses(body, old, new, top=False)
    if not top:
        for value in graph.output:
            if value.name == old:
                value.name = new


def _set_elem_type(values, name: str, compress: str) -> None:
    from onnx import helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(METHODS[compress]))
    for value in values:
        if value.name == name:
            value.type.tensor_type.elem_type = elem


# ------------------------------------------------------------------------------ manifest
def _describe(io: dict, compress: str, qparams) -> None:
    from .export import bytes_per_sample

    source = io["dtype"]
    io["dtype"] = wire_dtype(compress, source)
    io["bytes_per_sample"] = bytes_per_sample(io["shape"], io["dtype"])
    io["compression"] = {"method": compress, "dtype": source}
    if qparams is not None:
        io["compression"].update(scale=qparams[0], zero_point=qparams[1])


def _total(ios: list[dict]) -> int | None:
    sizes = [io["bytes_per_sample"] for io in ios]
    return None if any(s is None for s in sizes) else sum(sizes)


def _check(proto, part: dict) -> None:
    """The file's signature is the manifest's: names and element types, in order."""
    from onnx import helper

    for values, ios in ((proto.graph.input, part["inputs"]), (proto.graph.output, part["outputs"])):
        got = [(v.name, helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name) for v in values]
        want = [(io["name"], io["dtype"]) for io in ios]
        if got != want:
            raise KgraftError(f"internal: partition {part['index']} has signature {got} after compression, "
                              f"the manifest says {want}")
