"""``export_onnx``: one ``.onnx`` file per partition of a split, plus ``manifest.json``.

Pipeline: lower the model and inline nested models, plan the split with the ``split`` pass
(:func:`resolve_split` gives the crossing tensors of every cut, pass-through skip tensors
included), convert the WHOLE model once with every tensor a cut may cross as an extra output
(one tf2onnx run, kept by :mod:`.cache` in memory and on disk, so a later cut converts
nothing), cut each partition out of that graph with onnx-ir (:mod:`.cut`, which keeps
``Loop``/``Scan`` bodies whole), name every partition input/output after its ref, check each
file with ``onnx.checker`` (full check), and write the directory atomically
(:mod:`kgraft.backends.atomic`). When a partition cannot be cut out of the one conversion
(it reads a tensor computed before its inputs), every partition is built as a Keras model and
converted on its own, with a warning, and the manifest says ``"strategy": "per-partition"`` and
why. A cut that a Keras mask crosses is exported that way too: the Keras partitions of the
split carry the mask explicitly (``KerasMask`` ends the producing one, ``WithMask`` starts the
consumer), so each file has it as a boolean output or input ``<ref>_mask``, right after the
tensor it masks, and the manifest lists it (``"mask_of": ref``).

``manifest.json`` (format ``kgraft-onnx/1``)::

    {"format": "kgraft-onnx/1", "model": "resnet50", "opset": 17, "cuts": [["conv4_block6_out"]],
     "inputs": [IO...], "outputs": [IO...],          # of the whole model, in order
     "partitions": [{"index": 0, "file": "part0.onnx", "inputs": [IO...], "outputs": [IO...],
                     "layers": [...], "bytes_in_per_sample": ..., "bytes_out_per_sample": ...}, ...],
     "cut_layout": "auto",
     "conversion": {"tool": "tf2onnx", "strategy": "joint", "conversions": 1},
     "versions": {"kgraft": ..., "tensorflow": ..., "keras": ..., "tf2onnx": ..., "onnx": ...}}

    IO = {"name": ref, "ref": ref, "shape": [null, 14, 14, 1024], "dtype": "float32",
          "bytes_per_sample": 802816, "layer": "conv4_block6_out", "produced_by": 0,
          "layout": "keras"}          # or "nchw", with "keras_shape" and "perm" (cut_layout="nchw")
    mask IO = {"name": "emb_mask", "ref": "emb", "mask_of": "emb", "shape": [null, 8], "dtype": "bool", ...}

``name`` is the tensor's name in the ONNX files (the ref; ``<ref>_mask`` for the Keras mask of
``ref``, with a suffix should that name be taken); ``produced_by`` is the index of
the partition computing it (``null`` for model inputs), so a tensor that a partition both
receives and returns is visibly passed through. ``bytes_per_sample`` is the product of the
non-batch dimensions times the dtype size (``null`` when a dimension is unknown).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import NamedTuple

import numpy as np

from ...ir import Graph, KgraftError, TensorType, ValueRef, mask_layers
from ...passes.split import resolve_split
from ..atomic import check_target, write_files
from . import cache
from .compress import check_compress, compress_cuts
from .convert import Unit, check_opset, convert_units
from .cut import NotClosed, Port, nchw_alias, partition

__all__ = ["export", "FORMAT", "MANIFEST", "ConversionFallbackWarning"]

FORMAT = "kgraft-onnx/1"
MANIFEST = "manifest.json"
STRATEGIES = ("joint", "per-partition")
LAYOUTS = ("auto", "keras", "nchw")
NCHW = [0, 3, 1, 2]  # file tensor = keras tensor transposed by this


class ConversionFallbackWarning(UserWarning):
    """The one conversion of the model could not be cut; each partition was converted on its own."""


class Wire(NamedTuple):
    """A tensor a partition file takes or returns: its name there, the value of the split's graph,
    and whether it is that value's Keras mask (a boolean tensor) rather than the value."""

    name: str
    value: ValueRef
    mask: bool = False

    def type(self, graph: Graph) -> TensorType:
        return graph.masks[self.value] if self.mask else graph.value_type(self.value)


def export(model, out_dir, at=None, opset=None, *, custom_objects: dict | None = None,
           overwrite: bool = False, strategy: str = "joint", cut_layout: str = "auto",
           cache: bool = True, compress: str | None = None, calibration=None) -> dict:
    """Write ``model`` split at ``at`` (as in ``kgraft.split``; None = one partition) as ONNX.

    ``strategy="joint"`` converts the whole model once and cuts the partitions out of it (the
    conversion is reused by later exports of the same model, also across processes, unless
    ``cache=False``); it falls back to ``"per-partition"`` (one tf2onnx run per partition,
    with a :class:`ConversionFallbackWarning`) when a partition cannot be cut out.
    ``cut_layout``: how rank-4 tensors crossing a cut (not model inputs/outputs) are held in
    the files: ``"keras"`` channels-last, ``"nchw"`` channels-first, ``"auto"`` (default)
    channels-first exactly where the converted graph computes them so, which saves a Transpose
    on each side of the cut; the manifest gives each such tensor's ``layout``, file ``shape``,
    ``keras_shape`` and ``perm``. Returns the manifest (plus ``"dir"``, ``"export_seconds"``
    and ``"cache"``: ``"memory"``, ``"disk"``, ``"miss"`` or ``"off"``, not written to the file).
    """
    from ...passes.inline_nested import inline
    from ...passes.prune_unreachable import prune
    from ..keras import load_model, lower

    if strategy not in STRATEGIES:
        raise KgraftError(f"export_onnx: unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if cut_layout not in LAYOUTS:
        raise KgraftError(f"export_onnx: unknown cut_layout {cut_layout!r}; use one of {', '.join(LAYOUTS)}")
    opset = check_opset(opset)
    check_compress(compress, calibration, opset)
    out_dir = os.path.abspath(os.fspath(out_dir))
    check_target(out_dir, overwrite, what="export_onnx")
    started = time.perf_counter()

    source = load_model(model, custom_objects)
    flat = prune(inline(lower(source, custom_objects)), keep_inputs=True)
    plan = resolve_split(flat, at)
    graph = plan.graph
    wires = _wires(plan)
    cut_refs = {w.name for ins, _ in wires[1:] for w in ins} - {w.name for w in wires[0][0] + wires[-1][1]}
    rank4 = {w.name for ins, _ in wires[1:] for w in ins
             if w.name in cut_refs and not w.mask and len(w.type(graph).shape or ()) == 4}

    protos, state, reason = None, "off", None
    nchw = rank4 if cut_layout == "nchw" else set()
    masked = _masked_cut(graph, wires)
    if strategy == "joint" and masked:
        reason = masked
        warnings.warn(f"export_onnx: {reason}; converting each of the {len(wires)} partitions on its own, "
                      "so that the mask crosses as a boolean tensor", ConversionFallbackWarning, stacklevel=2)
    elif strategy == "joint":
        places = {part.layers[n.layer].name: f"partition {i}" for i, part in enumerate(plan.partitions)
                  for n in part.nodes()} if len(plan.partitions) > 1 else {}
        converted, state = _converted(source, flat, opset, cache, places)
        if cut_layout == "auto":
            nchw = _computed_nchw(converted, rank4)
        try:
            protos = _cut_joint(converted, plan, wires, nchw, flat)
        except NotClosed as e:
            reason = str(e)
            warnings.warn(f"export_onnx: {reason}, so the one conversion of the model cannot be cut there; "
                          f"converting each of the {len(wires)} partitions on its own instead",
                          ConversionFallbackWarning, stacklevel=2)
    if protos is None:
        protos = _per_partition(plan, wires, nchw, opset)
    strategy_used = "joint" if reason is None and strategy == "joint" else "per-partition"

    manifest = _manifest(source, plan, wires, protos, opset, at, nchw)
    manifest["cut_layout"] = cut_layout
    manifest["conversion"] = {"tool": "tf2onnx", "strategy": strategy_used,
                              "conversions": 1 if strategy_used == "joint" else len(protos)}
    if reason:
        manifest["conversion"]["fallback_reason"] = reason
    if compress:
        protos = compress_cuts(protos, manifest, compress, calibration)
    files = {p["file"]: _checked_bytes(proto, f"partition {p['index']}")
             for p, proto in zip(manifest["partitions"], protos)}
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    write_files(out_dir, files, overwrite=overwrite, what="export_onnx")
    return {**manifest, "dir": out_dir, "export_seconds": round(time.perf_counter() - started, 3),
            "cache": state}


# ------------------------------------------------------------------------------ conversion
def _exposed(graph: Graph) -> list[ValueRef]:
    """The model's outputs, then every other value a cut may cross (every call site's outputs)."""
    values = list(dict.fromkeys(graph.outputs))
    seen = set(values)
    for node in graph.nodes():
        if node.id in graph.inputs:
            continue
        for index in range(len(node.outputs)):
            value = ValueRef(node.id, index)
            if value not in seen:
                seen.add(value)
                values.append(value)
    return [v for v in values if v.node not in graph.inputs]


def _converted(source, flat: Graph, opset: int, use_cache: bool,
               places: dict[str, str]) -> tuple[cache.Converted, str]:
    """The whole model converted once (from the cache when it holds it)."""
    key = cache.model_key(source, str(flat), opset) if use_cache else None
    if key is not None:
        hit, where = cache.lookup(key)
        if hit is not None:
            return hit, where
    from ..keras import build

    values = _exposed(flat)
    whole = flat.copy()
    whole.set_outputs(values)
    keras_model = build(whole)
    unit = Unit(keras_model, [f"kg_in{j}" for j in range(len(flat.inputs))],
                [f"kg_out{k}" for k in range(len(values))], label="the model",
                layers={l.name: l.class_name for l in flat.layers.values()}, places=places)
    proto = convert_units([unit], opset)
    refs = [flat.value_name(v) for v in flat.input_refs() + values]
    names = dict(zip(refs, unit.input_names + unit.output_names))
    shapes = dict(zip(refs, (_dims(t) for t in keras_model.inputs + keras_model.outputs)))
    entry = cache.Converted(proto, names, shapes)
    if key is None:
        return entry, "off"
    cache.store(key, entry)
    return entry, "miss"


def _dims(tensor) -> list:
    return [None if d is None else int(d) for d in tensor.shape]


def _computed_nchw(converted: cache.Converted, rank4: set[str]) -> set[str]:
    """Rank-4 cut tensors that the converted graph computes channels-first."""
    if not rank4:
        return set()
    import onnx_ir as ir

    graph = ir.serde.deserialize_model(converted.proto).graph
    outputs = {v.name: v for v in graph.outputs}
    return {r for r in rank4 if converted.names.get(r) in outputs and nchw_alias(outputs[converted.names[r]]) is not None}


def _declared(types: list[TensorType], names: list[str]) -> dict:
    import onnx_ir as ir

    declared = {}
    for t, name in zip(types, names):
        shape = ["batch" if i == 0 and d is None else d for i, d in enumerate(t.shape or ())]
        declared[name] = (ir.DataType.from_numpy(np.dtype(t.dtype or "float32")), shape)
    return declared


def _cut_joint(converted: cache.Converted, plan, wires, nchw: set[str], flat: Graph) -> list:
    names = converted.names
    inputs = flat.input_refs()
    declared = _declared([flat.value_type(v) for v in inputs], [names[flat.value_name(v)] for v in inputs])

    def port(w: Wire) -> Port:
        return Port(names[w.name], w.name, "nchw" if w.name in nchw else "keras", converted.shapes.get(w.name))

    protos = []
    for i, (ins, outs) in enumerate(wires):
        protos.append(_finish(partition(converted.proto, [port(w) for w in ins], [port(w) for w in _unique(outs)],
                                        f"partition {i}", declared),
                              plan.partitions[i].name, ins, outs, f"partition {i}"))
    return protos


def _per_partition(plan, wires, nchw: set[str], opset: int) -> list:
    """Each partition built as a Keras model and converted on its own (its masks included)."""
    from ..keras import build

    protos = []
    for i, (part, (ins, outs)) in enumerate(zip(plan.partitions, wires)):
        keras_model = build(part)
        unit = Unit(keras_model, [f"p{i}_in{j}" for j in range(len(ins))],
                    [f"p{i}_out{j}" for j in range(len(outs))], label=f"partition {i}",
                    layers={l.name: l.class_name for l in part.layers.values()})
        unit.nchw = {n for n, w in zip(unit.input_names + unit.output_names, ins + outs) if w.name in nchw}
        proto = convert_units([unit], opset)
        declared = _declared([w.type(plan.graph) for w in ins], unit.input_names)
        for name in unit.nchw & set(declared):
            dtype, shape = declared[name]
            declared[name] = (dtype, [shape[p] for p in NCHW])
        first = {}
        for name, w in zip(unit.output_names, outs):
            first.setdefault(w.name, name)
        shapes = dict(zip([w.name for w in ins + outs], (_dims(t) for t in keras_model.inputs + keras_model.outputs)))
        in_ports = [Port(n, w.name, shape=shapes[w.name] if w.name not in nchw else None)
                    for n, w in zip(unit.input_names, ins)]
        out_ports = [Port(n, r, shape=shapes[r] if r not in nchw else None) for r, n in first.items()]
        protos.append(_finish(partition(proto, in_ports, out_ports, f"partition {i}", declared), keras_model.name,
                              ins, outs, f"partition {i}"))
    return protos


def _unique(wires: list[Wire]) -> list[Wire]:
    return list(dict.fromkeys(wires))


def _finish(model, name: str, ins: list[Wire], outs: list[Wire], what: str):
    """Name the batch dimension and stamp the producer (the file is checked when written)."""
    from ..._version import __version__
    from .surgery import name_batch_dims

    name_batch_dims(model)
    model.producer_name, model.producer_version = "kgraft", __version__
    model.graph.name = name
    model.doc_string = (f"kgraft {what}: inputs {', '.join(w.name for w in ins)} -> outputs "
                        f"{', '.join(w.name for w in _unique(outs))} (converted with tf2onnx)")
    return model


def _checked_bytes(model, what: str) -> bytes:
    """The file's bytes, after the full ONNX checker passed on them (given bytes, the checker
    does not serialize the model again: ResNet50's partitions take 0.1 s each to serialize)."""
    import onnx

    data = model.SerializeToString()
    try:
        onnx.checker.check_model(data, full_check=True)
    except Exception as e:
        raise KgraftError(f"{what}: the ONNX model fails onnx.checker: {e}") from e
    return data


# ------------------------------------------------------------------------------ manifest
def bytes_per_sample(shape, dtype) -> int | None:
    """Product of the non-batch dimensions times the dtype's size (None if any is unknown)."""
    if shape is None:
        return None
    return TensorType(tuple(shape), None if dtype is None else str(dtype)).bytes_per_sample


def _file_types(proto) -> dict[str, tuple[list, str]]:
    """Name -> (shape, dtype) of a partition file's inputs and outputs (unknown dims: None)."""
    import onnx

    types = {}
    for value in list(proto.graph.input) + list(proto.graph.output):
        t = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        types[value.name] = (shape, str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)))
    return types


def _io(graph: Graph, wire: Wire, types: dict, producer: dict[str, int], nchw: set[str]) -> dict:
    ref = graph.value_name(wire.value)
    shape, dtype = types[wire.name]
    keras_shape = [shape[p] for p in np.argsort(NCHW)] if wire.name in nchw else shape
    io = {"name": wire.name, "ref": ref, "shape": keras_shape, "dtype": dtype,
          "bytes_per_sample": bytes_per_sample(keras_shape, dtype),
          "layer": graph.layer_of(wire.value.node).qualified_name,
          "produced_by": producer.get(wire.value.node), "layout": "keras"}
    if wire.mask:
        io["mask_of"] = ref
    if wire.name in nchw:
        io.update(shape=shape, layout="nchw", keras_shape=keras_shape, perm=list(NCHW))
    return io


def _versions() -> dict:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from ..._version import __version__

    versions = {"kgraft": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def _wires(plan) -> list[tuple[list[Wire], list[Wire]]]:
    """``(inputs, outputs)`` of every partition file, in the order of the Keras partitions: each
    boundary value, followed by its Keras mask where that crosses a cut (as ``split`` makes it)."""
    graph = plan.graph
    names = {graph.value_name(v) for b in plan.boundaries for v in b}
    mask_names: dict[ValueRef, str] = {}
    for value in (v for b in plan.boundaries[1:-1] for v in b):
        if value not in mask_names and value.node not in graph.inputs and mask_layers.carried(graph, value):
            name, k = f"{graph.value_name(value)}_mask", 1
            while name in names:
                k += 1
                name = f"{graph.value_name(value)}_mask_{k}"
            names.add(name)
            mask_names[value] = name

    def crossing(boundary: list[ValueRef], masks: bool) -> list[Wire]:
        wires = []
        for value in boundary:
            wires.append(Wire(graph.value_name(value), value))
            if masks and value in mask_names:
                wires.append(Wire(mask_names[value], value, mask=True))
        return wires

    last = len(plan.boundaries) - 2
    return [(crossing(plan.boundaries[i], i > 0), crossing(plan.boundaries[i + 1], i < last))
            for i in range(last + 1)]


def _masked_cut(graph: Graph, wires) -> str | None:
    """Why the one conversion cannot serve this split when a Keras mask crosses one of its cuts
    (it computes the mask from tensors before the cut), else None."""
    for i, (ins, _) in enumerate(wires[1:], start=1):
        for w in ins:
            if w.mask:
                v = w.value
                return (f"cut {i} passes {graph.value_name(v)!r}, which carries a Keras mask (made by "
                        f"{graph.layer_of(v.node).class_name} {graph.node(v.node).layer!r} or before it)")
    return None


def _manifest(source, plan, wires, protos, opset: int, at, nchw: set[str]) -> dict:
    from ...analysis.cuts import normalize_cuts

    graph = plan.graph
    producer = {}
    for i, part in enumerate(plan.partitions):
        for node in part.nodes():
            if node.id in graph and part.layers[node.layer].class_name != "InputLayer":
                producer[node.id] = i
    partitions = []
    for i, (proto, (ins, outs)) in enumerate(zip(protos, wires)):
        types = _file_types(proto)
        ins = [_io(graph, w, types, producer, nchw) for w in ins]
        outs = [_io(graph, w, types, producer, nchw) for w in _unique(outs)]
        layers = [n.layer for n in plan.partitions[i].nodes()
                  if plan.partitions[i].layers[n.layer].class_name != "InputLayer"]
        partitions.append({
            "index": i, "file": f"part{i}.onnx", "name": plan.partitions[i].name,
            "inputs": ins, "outputs": outs, "layers": list(dict.fromkeys(layers)),
            "bytes_in_per_sample": _total(ins), "bytes_out_per_sample": _total(outs),
        })
    types = _file_types(protos[-1])
    return {
        "format": FORMAT,
        "model": source.name,
        "opset": opset,
        "cuts": [] if at is None else normalize_cuts(at),
        "inputs": [dict(p) for p in partitions[0]["inputs"]],
        "outputs": [_io(graph, w, types, producer, nchw) for w in wires[-1][1]],
        "partitions": partitions,
        "versions": _versions(),
    }


def _total(ios: list[dict]) -> int | None:
    sizes = [io["bytes_per_sample"] for io in ios]
    return None if any(s is None for s in sizes) else sum(sizes)
