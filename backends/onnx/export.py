"""``export_onnx``: one ``.onnx`` file per partition of a split, plus ``manifest.json``.

Pipeline: lower the model, plan the split with the ``split`` pass (:func:`plan_split` gives the
crossing tensors of every cut, pass-through skip tensors included), build the partitions as
Keras models (weights copied), convert all of them with ONE tf2onnx run (see :mod:`.convert`),
cut the converted graph into the partitions with ``onnx.utils.Extractor``, name every
partition input/output after its ref, check each file with ``onnx.checker``, and write the
directory atomically (:mod:`kgraft.backends.atomic`).

``manifest.json`` (format ``kgraft-onnx/1``)::

    {"format": "kgraft-onnx/1", "model": "resnet50", "opset": 17, "cuts": [["conv4_block6_out"]],
     "inputs": [IO...], "outputs": [IO...],          # of the whole model, in order
     "partitions": [{"index": 0, "file": "part0.onnx", "inputs": [IO...], "outputs": [IO...],
                     "layers": [...], "bytes_in_per_sample": ..., "bytes_out_per_sample": ...}, ...],
     "conversion": {"tool": "tf2onnx", "strategy": "joint", "conversions": 1},
     "versions": {"kgraft": ..., "tensorflow": ..., "keras": ..., "tf2onnx": ..., "onnx": ...}}

    IO = {"name": ref, "ref": ref, "shape": [null, 14, 14, 1024], "dtype": "float32",
          "bytes_per_sample": 802816, "layer": "conv4_block6_out", "produced_by": 0,
          "layout": "keras"}          # or "nchw", with "keras_shape" and "perm" (cut_layout="nchw")

``name`` is the tensor's name in the ONNX files (it is the ref); ``produced_by`` is the index of
the partition computing it (``null`` for model inputs), so a tensor that a partition both
receives and returns is visibly passed through. ``bytes_per_sample`` is the product of the
non-batch dimensions times the dtype size (``null`` when a dimension is unknown).
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np

from ...ir import Graph, KgraftError, TensorType, ValueRef
from ...passes.split import plan_split
from ..atomic import check_target, write_files
from . import surgery
from .compress import check_compress, compress_cuts
from .convert import Unit, check_opset, convert_units

__all__ = ["export", "FORMAT", "MANIFEST"]

FORMAT = "kgraft-onnx/1"
MANIFEST = "manifest.json"
STRATEGIES = ("joint", "per-partition")
LAYOUTS = ("keras", "nchw")
NCHW = [0, 3, 1, 2]  # file tensor = keras tensor transposed by this


def export(model, out_dir, at=None, opset=None, *, custom_objects: dict | None = None,
           overwrite: bool = False, strategy: str = "joint", cut_layout: str = "keras",
           compress: str | None = None, calibration=None) -> dict:
    """Write ``model`` split at ``at`` (as in ``kgraft.split``; None = one partition) as ONNX.

    ``strategy="joint"`` converts all partitions with one tf2onnx run and cuts the result
    (falling back to ``"per-partition"`` — one tf2onnx run per partition — if the cut graph is
    not self-contained). ``cut_layout="nchw"`` holds rank-4 tensors crossing a cut (not the
    model's inputs/outputs) channels-first in the files, as ONNX convolutions compute them,
    which saves a Transpose on each side of each cut; the manifest then gives their
    ``layout``, file ``shape``, ``keras_shape`` and ``perm``. Returns the manifest (plus
    ``"dir"``, the absolute output directory, which is not written to the file).
    ``compress="fp16"|"int8"`` (int8 scales from ``calibration``, an input batch) sends what
    crosses each cut compressed: see :mod:`.compress`.
    """
    from ..keras import build, load_model, lower

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
    plan = plan_split(lower(source, custom_objects), at)
    models = build(plan.partitions)
    graph, bounds = plan.graph, plan.boundaries
    refs = [[graph.value_name(v) for v in b] for b in bounds]
    nchw = _nchw_refs(models, refs) if cut_layout == "nchw" else set()
    units = []
    for i, (part, keras_model) in enumerate(zip(plan.partitions, models)):
        unit = Unit(
            keras_model,
            [f"p{i}_in{j}" for j in range(len(bounds[i]))],
            [f"p{i}_out{j}" for j in range(len(bounds[i + 1]))],
            label=f"partition {i}",
            layers={l.name: l.class_name for l in part.layers.values()},
        )
        unit.nchw = {n for n, r in zip(unit.input_names, refs[i]) if r in nchw}
        unit.nchw |= {n for n, r in zip(unit.output_names, refs[i + 1]) if r in nchw}
        units.append(unit)

    strategy_used, reason = strategy, None
    if strategy == "joint":
        try:
            protos = _joint(units, refs, opset)
        except _CutFailed as e:
            reason = str(e)
            warnings.warn(f"export_onnx: the jointly converted graph could not be cut ({reason}); "
                          "converting each partition separately", stacklevel=2)
            strategy_used = "per-partition"
    if strategy_used == "per-partition":
        protos = [_finish(convert_units([u], opset), u, refs[i], refs[i + 1], f"partition {i}",
                          extractor=None)
                  for i, u in enumerate(units)]

    manifest = _manifest(source, graph, plan, models, opset, at, nchw)
    manifest["cut_layout"] = cut_layout
    manifest["conversion"] = {"tool": "tf2onnx", "strategy": strategy_used,
                              "conversions": 1 if strategy_used == "joint" else len(units)}
    if reason:
        manifest["conversion"]["fallback_reason"] = reason
    if compress:
        protos = compress_cuts(protos, manifest, compress, calibration)
    files = {p["file"]: proto.SerializeToString() for p, proto in zip(manifest["partitions"], protos)}
    files[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    write_files(out_dir, files, overwrite=overwrite, what="export_onnx")
    return {**manifest, "dir": out_dir, "export_seconds": round(time.perf_counter() - started, 3)}


# ------------------------------------------------------------------------------ conversion
class _CutFailed(KgraftError):
    pass


def _nchw_refs(models, refs) -> set[str]:
    """Rank-4 tensors crossing a cut that are not model inputs or outputs."""
    ends = set(refs[0]) | set(refs[-1])
    found = set()
    for i, keras_model in enumerate(models[1:], start=1):
        for ref, tensor in zip(refs[i], keras_model.inputs):
            if ref not in ends and len(tensor.shape) == 4:
                found.add(ref)
    return found


def _joint(units: list[Unit], refs: list[list[str]], opset: int) -> list:
    import onnx.utils

    joint = convert_units(units, opset)
    extractor = onnx.utils.Extractor(joint)
    try:
        return [_finish(joint, u, refs[i], refs[i + 1], f"partition {i}", extractor)
                for i, u in enumerate(units)]
    except KgraftError as e:
        raise _CutFailed(str(e)) from e


def _declared_inputs(unit: Unit) -> dict:
    import onnx

    out = {}
    for tensor, name in zip(unit.model.inputs, unit.input_names):
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(str(tensor.dtype)))
        shape = ["batch" if d is None and i == 0 else (None if d is None else d)
                 for i, d in enumerate(tensor.shape)]
        out[name] = onnx.helper.make_tensor_value_info(name, elem, shape)
    return out


def _finish(proto, unit: Unit, in_refs: list[str], out_refs: list[str], what: str, extractor):
    """Partition ``unit`` as a standalone model whose inputs/outputs are named by their refs."""
    import onnx
    import onnx.utils

    import kgraft

    outputs, seen = [], set()
    for name, ref in zip(unit.output_names, out_refs):  # a model output listed twice: once
        if ref not in seen:
            seen.add(ref)
            outputs.append((name, ref))
    if extractor is None:
        extractor = onnx.utils.Extractor(proto)
    model = surgery.extract(extractor, unit.input_names, [n for n, _ in outputs], _declared_inputs(unit))
    mapping = dict(zip(unit.input_names, in_refs))
    by_ref = dict(zip(in_refs, unit.input_names))
    for name, ref in outputs:
        if ref in by_ref:  # passed through: the output is the input
            surgery.bypass_identities(model, name, by_ref[ref])
        else:
            mapping[name] = ref
    surgery.rename_tensors(model, mapping)
    surgery.name_batch_dims(model)
    surgery.check_closed(model, what)
    model.producer_name, model.producer_version = "kgraft", kgraft.__version__
    model.graph.name = unit.model.name
    model.doc_string = (f"kgraft {what}: inputs {', '.join(in_refs)} -> outputs "
                        f"{', '.join(r for _, r in outputs)} (converted with tf2onnx)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise KgraftError(f"{what}: the ONNX model fails onnx.checker: {e}") from e
    return model


# ------------------------------------------------------------------------------ manifest
def bytes_per_sample(shape, dtype) -> int | None:
    """Product of the non-batch dimensions times the dtype's size (None if any is unknown)."""
    if shape is None:
        return None
    return TensorType(tuple(shape), None if dtype is None else str(dtype)).bytes_per_sample


def _io(graph: Graph, value: ValueRef, tensor, producer: dict[str, int], nchw: set[str]) -> dict:
    ref = graph.value_name(value)
    shape = [None if d is None else int(d) for d in tensor.shape]
    dtype = str(tensor.dtype)
    io = {"name": ref, "ref": ref, "shape": shape, "dtype": dtype,
          "bytes_per_sample": bytes_per_sample(shape, dtype),
          "layer": graph.layer_of(value.node).qualified_name,
          "produced_by": producer.get(value.node), "layout": "keras"}
    if ref in nchw:
        io.update(shape=[shape[p] for p in NCHW], layout="nchw", keras_shape=shape, perm=list(NCHW))
    return io


def _versions() -> dict:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    import kgraft

    versions = {"kgraft": kgraft.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def _manifest(source, graph: Graph, plan, models, opset: int, at, nchw: set[str]) -> dict:
    from ...passes.split import normalize_cuts

    producer = {}
    for i, part in enumerate(plan.partitions):
        for node in part.nodes():
            if node.id in graph and part.layers[node.layer].class_name != "InputLayer":
                producer[node.id] = i
    partitions = []
    for i, keras_model in enumerate(models):
        ins = [_io(graph, v, t, producer, nchw) for v, t in zip(plan.boundaries[i], keras_model.inputs)]
        outs, seen = [], set()
        for v, t in zip(plan.boundaries[i + 1], keras_model.outputs):
            if v not in seen:
                seen.add(v)
                outs.append(_io(graph, v, t, producer, nchw))
        layers = [n.layer for n in plan.partitions[i].nodes()
                  if plan.partitions[i].layers[n.layer].class_name != "InputLayer"]
        partitions.append({
            "index": i, "file": f"part{i}.onnx", "name": keras_model.name,
            "inputs": ins, "outputs": outs, "layers": list(dict.fromkeys(layers)),
            "bytes_in_per_sample": _total(ins), "bytes_out_per_sample": _total(outs),
        })
    last = models[-1]
    return {
        "format": FORMAT,
        "model": source.name,
        "opset": opset,
        "cuts": [] if at is None else normalize_cuts(at),
        "inputs": [dict(p) for p in partitions[0]["inputs"]],
        "outputs": [_io(graph, v, t, producer, nchw) for v, t in zip(plan.boundaries[-1], last.outputs)],
        "partitions": partitions,
        "versions": _versions(),
    }


def _total(ios: list[dict]) -> int | None:
    sizes = [io["bytes_per_sample"] for io in ios]
    return None if any(s is None for s in sizes) else sum(sizes)
