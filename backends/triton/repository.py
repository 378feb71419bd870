"""``export_triton``: a Triton Inference Server model repository for the partitions of a split.

::

    repo/
      manifest.json                  # the ONNX manifest; files and tensor names as in this repo
      resnet50_part0/config.pbtxt    # platform onnxruntime_onnx
      resnet50_part0/1/model.onnx
      resnet50_part1/...
      resnet50/config.pbtxt          # ensemble: part0 -> part1 -> ...
      resnet50/1/                    # (Triton wants a version directory, empty for ensembles)
      resnet50_from1/config.pbtxt    # ensemble of part1 -> ... (with three or more partitions)

The partitions are exported by :func:`kgraft.export_onnx` (compression included), then each
tensor gets a name Triton and every KServe v2 client take as it is (``[A-Za-z0-9_]``; a ref
such as ``vgg16/block5_conv3`` or ``shared@1`` becomes ``vgg16_block5_conv3``, ``shared_1``,
with a suffix if that clashes): ``name`` in the manifest is the tensor's name in the files and
configs, ``ref`` the ref it carries. Every ``config.pbtxt`` is built as Triton's own
``ModelConfig`` protobuf (the one ``tritonclient`` ships) and printed with protobuf's text
format, so it parses as Triton parses it. The ensembles map each partition's inputs from the
tensor of that name (an ensemble input or an earlier step's output); a tensor a partition only
passes through is taken from the step that computed it, so every ensemble tensor has one
producer, as Triton requires.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import numpy as np

from ...ir import KgraftError
from ..atomic import check_target, replacing
from ..serve.chain import chain_io, chain_name, part_name

__all__ = ["export_triton", "config_proto", "read_config", "PLATFORM"]

PLATFORM = "onnxruntime_onnx"
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def export_triton(model, repo_dir, at=None, opset=None, compress=None, calibration=None,
                  max_batch_size: int = 0, *, custom_objects: dict | None = None, overwrite: bool = False,
                  cut_layout: str = "keras") -> dict:
    """Write ``model`` split at ``at`` as a Triton model repository; returns its manifest.

    ``max_batch_size > 0`` lets Triton batch requests (``dynamic_batching``): the configs then
    leave the batch dimension out of ``dims``, as Triton expects. Other arguments are those of
    :func:`kgraft.export_onnx`.
    """
    from ..onnx import export

    config_module()  # a missing tritonclient fails before the slow export
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 0:
        raise KgraftError(f"export_triton: max_batch_size must be an integer >= 0 (0: no batching), "
                          f"got {max_batch_size!r}")
    repo_dir = os.path.abspath(os.fspath(repo_dir))
    check_target(repo_dir, overwrite, what="export_triton")
    parent = os.path.dirname(repo_dir)
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".kgraft-triton-", dir=parent)
    try:
        manifest = export(model, os.path.join(scratch, "onnx"), at=at, opset=opset, custom_objects=custom_objects,
                          cut_layout=cut_layout, compress=compress, calibration=calibration)
        renames = _safe_names(manifest)
        repo = _repository_manifest(manifest, renames, max_batch_size)
        with replacing(repo_dir, overwrite=overwrite, what="export_triton") as tmp:
            _write(tmp, manifest, repo, renames, max_batch_size)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**repo, "dir": repo_dir}


# ------------------------------------------------------------------------------ names
def _safe_names(manifest: dict) -> dict[str, str]:
    """Tensor name in the ONNX export -> its name in the repository (unique, ``[A-Za-z0-9_]``)."""
    names = []
    for io in manifest["inputs"] + [io for p in manifest["partitions"] for io in p["inputs"] + p["outputs"]]:
        if io["name"] not in names:
            names.append(io["name"])
    taken = {n for n in names if not _UNSAFE.search(n)}
    renames = {}
    for name in names:
        if not _UNSAFE.search(name):
            renames[name] = name
            continue
        base = _UNSAFE.sub("_", name)
        safe, i = base, 1
        while safe in taken:
            i += 1
            safe = f"{base}_{i}"
        taken.add(safe)
        renames[name] = safe
    return renames


def _repository_manifest(manifest: dict, renames: dict[str, str], max_batch_size: int) -> dict:
    repo = json.loads(json.dumps({k: v for k, v in manifest.items() if k not in ("dir", "export_seconds")}))
    for io in repo["inputs"] + repo["outputs"] + [io for p in repo["partitions"] for io in p["inputs"] + p["outputs"]]:
        io["name"] = renames[io["name"]]
        if max_batch_size and (not io["shape"] or io["shape"][0] is not None):
            raise KgraftError(f"export_triton: max_batch_size={max_batch_size} needs a free batch dimension, but "
                              f"{io['ref']!r} has shape {io['shape']}; export with max_batch_size=0")
    for part in repo["partitions"]:
        part["file"] = f"{part_name(repo, part['index'])}/1/model.onnx"
    n = len(repo["partitions"])
    repo["triton"] = {
        "platform": PLATFORM,
        "max_batch_size": max_batch_size,
        "models": [part_name(repo, i) for i in range(n)],
        # the whole model, and every tail of two or more partitions (an edge running 0..k-1)
        "ensembles": {chain_name(repo, k): k for k in [0, *range(1, n - 1)]},
    }
    return repo


# ------------------------------------------------------------------------------ configs
def config_module():
    """Triton's ``model_config_pb2`` (from ``tritonclient``)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise KgraftError("export_triton needs tritonclient for Triton's ModelConfig protobuf: "
                          "pip install 'kgraft[serve]' (or tritonclient[grpc])") from e
    return model_config_pb2


def _data_type(pb, dtype: str):
    from tritonclient.utils import np_to_triton_dtype

    return pb.DataType.Value("TYPE_" + np_to_triton_dtype(np.dtype(dtype)))


def _tensor(pb, message, io: dict, max_batch_size: int) -> None:
    message.name = io["name"]
    message.data_type = _data_type(pb, io["dtype"])
    dims = [-1 if d is None else int(d) for d in io["shape"]]
    if max_batch_size:
        dims = dims[1:]
        if not dims:  # one value per sample: Triton wants a dimension, the model has none
            dims = [1]
            message.reshape.SetInParent()
    message.dims.extend(dims)


def config_proto(repo: dict, index: int | None = None, start: int | None = None):
    """The ``ModelConfig`` of partition ``index``, or of the ensemble from partition ``start``."""
    pb = config_module()
    batch = repo["triton"]["max_batch_size"]
    config = pb.ModelConfig(max_batch_size=batch)
    if index is not None:
        part = repo["partitions"][index]
        config.name, config.platform = part_name(repo, index), PLATFORM
        inputs, outputs = part["inputs"], part["outputs"]
        if batch:
            config.dynamic_batching.SetInParent()
    else:
        config.name, config.platform = chain_name(repo, start), "ensemble"
        inputs, outputs = chain_io(repo, start)
        available = {io["name"] for io in inputs}
        for part in repo["partitions"][start:]:
            step = config.ensemble_scheduling.step.add(model_name=part_name(repo, part["index"]), model_version=-1)
            for io in part["inputs"]:
                step.input_map[io["name"]] = io["name"]
            for io in part["outputs"]:
                if io["name"] not in available:
                    step.output_map[io["name"]] = io["name"]
                    available.add(io["name"])
    for io in inputs:
        _tensor(pb, config.input.add(), io, batch)
    for io in outputs:
        _tensor(pb, config.output.add(), io, batch)
    return config


def read_config(path):
    """A ``config.pbtxt`` parsed as Triton parses it (text format of ``ModelConfig``)."""
    from google.protobuf import text_format

    pb = config_module()
    with open(path) as f:
        return text_format.Parse(f.read(), pb.ModelConfig())


# ------------------------------------------------------------------------------ files
def _write(tmp: str, manifest: dict, repo: dict, renames: dict[str, str], max_batch_size: int) -> None:
    import onnx
    from google.protobuf import text_format

    from ..onnx import surgery

    for part, source in zip(repo["partitions"], manifest["partitions"]):
        proto = onnx.load(os.path.join(manifest["dir"], source["file"]))
        present = surgery.all_tensor_names(proto.graph)
        surgery.rename_tensors(proto, {old: new for old, new in renames.items() if old in present})
        path = os.path.join(tmp, part["file"])
        os.makedirs(os.path.dirname(path))
        onnx.save(proto, path)
        _text(os.path.join(tmp, part_name(repo, part["index"]), "config.pbtxt"),
              text_format.MessageToString(config_proto(repo, index=part["index"])))
    for name, start in repo["triton"]["ensembles"].items():
        os.makedirs(os.path.join(tmp, name, "1"))
        _text(os.path.join(tmp, name, "config.pbtxt"), text_format.MessageToString(config_proto(repo, start=start)))
    _text(os.path.join(tmp, "manifest.json"), json.dumps(repo, indent=2) + "\n")


def _text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
