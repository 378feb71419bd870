"""Check an ONNX export against the Keras model: per-output max abs difference.

``verify(model, export_dir)`` runs the Keras model and the chained ONNX partitions on the same
inputs (random ones when none are given) and returns a :class:`VerifyReport`; with
``strict=True`` (the default) a difference above ``atol`` raises :class:`OnnxMismatchError`.

An export with compressed cut tensors (``compress="fp16"|"int8"``) cannot equal the model
within ``atol``: its outputs carry the rounding of every cut. It is checked where it can be:

* each compressed tensor, decoded as its consumer decodes it, lies within its encoding's
  rounding of the Keras tensor (fp16: half a unit in the last place, ``|x| * 2**-11``; int8:
  half a step, ``scale / 2``; values outside the int8 range calibrated are saturated, counted
  in the notes, not judged);
* each partition, fed the decoded tensors the chain gave it, equals the Keras partition fed the
  same (``atol``), so every partition computes what the model computes from what it receives;
* the model's outputs against Keras are reported (kind ``e2e``), not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...ir import KgraftError
from ...numerics import max_abs_diff, typed_inputs
from .runtime import load

__all__ = ["verify", "VerifyReport", "OutputDiff", "OnnxMismatchError", "manifest_inputs"]


class OnnxMismatchError(KgraftError):
    """The ONNX chain's outputs differ from the Keras model's by more than the tolerance."""

    def __init__(self, report: "VerifyReport"):
        super().__init__(f"the ONNX export does not match the Keras model:\n{report}")
        self.report = report


@dataclass(frozen=True)
class OutputDiff:
    name: str
    shape: tuple
    max_abs_diff: float
    ok: bool
    kind: str = "output"  # "output" (of the model), "cut" (a tensor crossing a cut), "part<i>"
    #                       (partition i's output on the chain's inputs), "e2e" (not judged)
    scale: float = 0.0  # max abs value of the Keras tensor, to judge the difference against
    tolerance: float | None = None  # the bound it was judged by, when not atol (None: atol, or not judged)


@dataclass(frozen=True)
class VerifyReport:
    outputs: list[OutputDiff]
    atol: float
    batch: int
    partitions: int
    dir: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=0.0)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        width = max([len(o.name) for o in self.outputs] + [6])
        lines = [f"Keras vs ONNX chain ({self.partitions} partition(s), batch {self.batch}, atol {self.atol:g}):"]
        for o in self.outputs:
            verdict = "shown" if o.kind == "e2e" else "ok" if o.ok else "FAIL"
            bound = f", bound {o.tolerance:.3g}" if o.tolerance is not None else ""
            lines.append(f"  {o.name:<{width}}  {o.kind:<6}  {str(list(o.shape)):<20} "
                         f"max|diff| = {o.max_abs_diff:.3e}  (max|x| {o.scale:.3g}{bound})  {verdict}")
        lines.append(f"  {'result':<{width}}  {'OK' if self.ok else 'MISMATCH'} (max {self.max_abs_diff:.3e}"
                     + (f"; {', '.join(self.notes)})" if self.notes else ")"))
        return "\n".join(lines)


def manifest_inputs(inputs: list[dict], batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Probe arrays for a manifest's inputs (:func:`kgraft.numerics.typed_inputs`)."""
    return typed_inputs([(io["shape"], io["dtype"]) for io in inputs], batch=batch, seed=seed)


def _numpy(outputs) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def _keras_value(io: dict, computed: dict) -> np.ndarray:
    """A cut tensor as Keras computes it; for a mask (``mask_of``), the Keras mask that rides on
    its tensor (all true where Keras has none, as the exported ``KerasMask`` says)."""
    import keras

    if "mask_of" not in io:
        return np.asarray(keras.ops.convert_to_numpy(computed[io["name"]]))
    tensor = computed[io["mask_of"]]
    mask = getattr(tensor, "_keras_mask", None)
    if mask is None:
        return np.ones(tuple(tensor.shape)[:len(io["shape"])], bool)
    return np.asarray(keras.ops.convert_to_numpy(mask))


def _cut_names(pipeline) -> list[str]:
    """Tensors crossing the cuts (not model inputs/outputs), each once, in order."""
    skip = set(pipeline.input_names) | set(pipeline.output_names)
    names = [io["name"] for part in pipeline.manifest["partitions"][:-1] for io in part["outputs"]]
    return [n for n in dict.fromkeys(names) if n not in skip]


def _keras_feed(source, names: list[str], arrays: list):
    """The arrays as the Keras model takes them: one, a list, or a dict (a model built on a dict of
    inputs, as keras_hub backbones are), matched by input name. (A Sequential model whose
    Functional graph Keras built lazily has no ``input``: it takes one array or a list.)"""
    structure = getattr(source, "input", None)
    if isinstance(structure, dict):
        by_name = dict(zip(names, arrays))
        return {key: by_name.get(tensor.name, by_name.get(key)) for key, tensor in structure.items()}
    return arrays[0] if len(arrays) == 1 else arrays


def verify(model, manifest_or_dir, inputs=None, atol: float = 1e-4, *, batch: int = 2, seed: int = 0,
           intermediates: bool = True, custom_objects: dict | None = None,
           strict: bool = True) -> VerifyReport:
    """Compare the Keras ``model`` (or model file) with the ONNX chain of ``manifest_or_dir``.

    Reports the max abs difference of every model output and (``intermediates=True``) of every
    tensor crossing a cut, against the same tensor computed by Keras, so a mismatch points at
    the partition that introduces it. ``strict``: raise :class:`OnnxMismatchError` above ``atol``.
    """
    from ..keras import load_model

    source = load_model(model, custom_objects)
    pipeline = load(manifest_or_dir)
    if pipeline.manifest.get("compress"):
        return _verify_compressed(source, pipeline, inputs, atol, batch, seed, custom_objects, strict)
    notes = []
    arrays = _input_arrays(pipeline, inputs, batch, seed, notes)
    env = pipeline.run_all(arrays)
    onnx_out = [env[n] for n in pipeline.output_names]
    feed = _keras_feed(source, pipeline.input_names, arrays)
    keras_out = _numpy(source(feed, training=False))
    if len(keras_out) != len(onnx_out):
        raise KgraftError(f"verify: the Keras model has {len(keras_out)} outputs, the export "
                          f"{len(onnx_out)} ({pipeline.output_names}): is this export of this model?")
    pairs = [(name, "output", k, o) for name, k, o in zip(pipeline.output_names, keras_out, onnx_out)]
    cuts = _cut_names(pipeline) if intermediates else []
    if cuts:
        import keras

        from ...passes import extract
        from ..keras import build, lower

        layout = {io["name"]: io for part in pipeline.manifest["partitions"] for io in part["outputs"]}
        refs = [n for n in cuts if "mask_of" not in layout[n]]
        probe = build(extract(lower(source, custom_objects), outputs=refs))
        computed = dict(zip(refs, keras.tree.flatten(probe(feed, training=False))))
        for name in cuts:
            k, o = _keras_value(layout[name], computed), env[name]
            if layout[name].get("layout") == "nchw":  # held channels-first in the files
                o = np.transpose(o, np.argsort(layout[name]["perm"]))
            pairs.append((name, "cut", k, o))
    diffs = []
    for name, kind, k, o in pairs:
        if k.shape != o.shape:
            raise KgraftError(f"verify: {name!r} has shape {o.shape} in ONNX but {k.shape} in Keras")
        d = max_abs_diff(k, o)
        scale = float(np.nanmax(np.abs(k.astype(np.float64)))) if k.size else 0.0
        diffs.append(OutputDiff(name, tuple(o.shape), d, d <= atol, kind, scale))
    report = VerifyReport(diffs, atol, int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 0,
                          len(pipeline), pipeline.dir, notes)
    if strict and not report.ok:
        raise OnnxMismatchError(report)
    return report


# ------------------------------------------------------------------------------ compressed exports
def _decode(io: dict, array: np.ndarray) -> np.ndarray:
    """A tensor as its consumer computes with it: float32, decoded as the graph's Cast or
    DequantizeLinear decodes it, and in the Keras layout."""
    method = (io.get("compression") or {}).get("method")
    if method == "fp16":
        array = array.astype(np.float32)
    elif method == "int8":
        c = io["compression"]
        array = (array.astype(np.float32) - np.float32(c["zero_point"])) * np.float32(c["scale"])
    return _to_keras(io, array)


def _to_keras(io: dict, array: np.ndarray) -> np.ndarray:
    return np.transpose(array, np.argsort(io["perm"])) if io.get("layout") == "nchw" else array


def _compared(name: str, kind: str, io: dict, k: np.ndarray, o: np.ndarray, atol: float, notes: list) -> OutputDiff:
    """``o`` (decoded) against Keras's ``k``, within ``atol`` plus the rounding of ``io``'s encoding."""
    if k.shape != o.shape:
        raise KgraftError(f"verify: {name!r} has shape {o.shape} in ONNX but {k.shape} in Keras")
    k64, d = k.astype(np.float64), np.abs(o.astype(np.float64) - k.astype(np.float64))
    scale = float(np.nanmax(np.abs(k64))) if k.size else 0.0
    compression = io.get("compression") or {}
    tolerance = None
    if compression.get("method") == "fp16":
        allowed = atol + np.abs(k64) * 2.0 ** -11
        tolerance = atol + scale * 2.0 ** -11
    elif compression.get("method") == "int8":
        step = compression["scale"]
        lo, hi = (-128 - compression["zero_point"]) * step, (127 - compression["zero_point"]) * step
        saturated = (k64 < lo - step / 2) | (k64 > hi + step / 2)
        if saturated.any():
            notes.append(f"{int(saturated.sum())} value(s) of {name!r} outside the calibrated int8 range "
                         f"[{lo:.3g}, {hi:.3g}] (saturated, not judged)")
        tolerance = atol + step / 2 * (1 + 1e-5)
        allowed = np.where(saturated, np.inf, tolerance)
    else:
        allowed = atol
    ok = bool(np.all(d <= allowed))  # NaN-strict: a NaN on either side is never within tolerance
    return OutputDiff(name, tuple(o.shape), max_abs_diff(k, o), ok, kind, scale, tolerance)


def _input_arrays(pipeline, inputs, batch: int, seed: int, notes: list) -> list:
    """The arrays the check feeds: ``inputs`` in the pipeline's order, or random ones (noted)."""
    if inputs is None:
        notes.append(f"random inputs (seed {seed})")
        return manifest_inputs(pipeline.inputs, batch=batch, seed=seed)
    return list(pipeline.normalize(inputs).values())


def _verify_compressed(source, pipeline, inputs, atol, batch, seed, custom_objects, strict) -> VerifyReport:
    """Each compressed tensor within its rounding, each partition on the chain's own inputs (see the module doc)."""
    from ...passes import split
    from ..keras import build_partitions, lower

    manifest = pipeline.manifest
    notes = [f"{manifest['compress']} cut tensors: partitions checked on the decoded tensors they receive, "
             "end-to-end outputs shown, not judged"]
    arrays = _input_arrays(pipeline, inputs, batch, seed, notes)
    env = pipeline.run_all(arrays)
    parts = build_partitions(split(lower(source, custom_objects), at=manifest["cuts"]))
    diffs, seen = [], set()
    for index, (part, keras_part) in enumerate(zip(manifest["partitions"], parts)):
        feed = [_decode(io, env[io["name"]]) for io in part["inputs"]]
        keras_feed = _keras_feed(keras_part, [io["name"] for io in part["inputs"]], feed)
        produced = _numpy(keras_part(keras_feed, training=False))
        if len(produced) != len(part["outputs"]):
            raise KgraftError(f"verify: partition {index} has {len(part['outputs'])} outputs in the export but "
                              f"{len(produced)} in kgraft.split(model, {manifest['cuts']}): is this export of this model?")
        for io, k in zip(part["outputs"], produced):
            if io["produced_by"] == index and io["name"] not in seen:  # computed here (not passed through)
                seen.add(io["name"])
                diffs.append(_compared(io["name"], f"part{index}", io, k, _decode(io, env[io["name"]]), atol, notes))
    feed = _keras_feed(source, pipeline.input_names, arrays)
    for io, k in zip(pipeline.outputs, _numpy(source(feed, training=False))):
        o = _to_keras(io, env[io["name"]])
        diffs.append(replace(_compared(io["name"], "e2e", io, k, o, atol, []), ok=True))
    report = VerifyReport(diffs, atol, int(arrays[0].shape[0]) if arrays and arrays[0].ndim else 0,
                          len(pipeline), pipeline.dir, notes)
    if strict and not report.ok:
        raise OnnxMismatchError(report)
    return report
