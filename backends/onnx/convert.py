"""tf2onnx, driven with known tensor names, with errors a user can act on.

:func:`convert_units` converts Keras models with ONE tf2onnx run: a single ``tf.function``
takes every model's inputs as separate placeholders and returns every model's outputs under
the names the caller chose, so nothing has to be guessed from tf2onnx's generated names. The
exporter converts the whole model (every tensor a cut may cross as an output) and cuts it with
:mod:`.cut`, which also handles the channels-first copies tf2onnx's transpose optimizer makes;
it converts the partitions one by one only when that graph cannot be cut.

Failures are turned into :class:`UnsupportedModelError` (an op tf2onnx cannot convert, named
with its Keras layer) or :class:`OpsetError` (an opset too low, with the minimum needed),
from tf2onnx's own log records; tf2onnx's tracebacks never reach the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ...ir import KgraftError, UnsupportedModelError

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET", "OpsetError", "Unit", "check_opset",
           "convert_units", "min_handler_opset"]

DEFAULT_OPSET = 17
MIN_OPSET = 7


class OpsetError(KgraftError):
    """The requested ONNX opset is outside what tf2onnx supports, or too low for the model."""

    def __init__(self, message: str, minimum: int | None = None):
        super().__init__(message)
        self.minimum = minimum


def _max_opset() -> int:
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def __getattr__(name):  # MAX_OPSET without importing tf2onnx at module import
    if name == "MAX_OPSET":
        return _max_opset()
    raise AttributeError(name)


def check_opset(opset) -> int:
    """``opset`` (``None`` -> :data:`DEFAULT_OPSET`) as an int within what tf2onnx can emit."""
    if opset is None:
        return DEFAULT_OPSET
    top = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise OpsetError(f"opset must be an integer between {MIN_OPSET} and {top}, got {opset!r}")
    if not MIN_OPSET <= opset <= top:
        import tf2onnx

        raise OpsetError(f"opset {opset} is not supported: tf2onnx {tf2onnx.__version__} emits ONNX "
                         f"opsets {MIN_OPSET} to {top}; pass e.g. opset={DEFAULT_OPSET}",
                         minimum=MIN_OPSET if opset < MIN_OPSET else None)
    return opset


@dataclass
class Unit:
    """One Keras model to convert: ONNX names for its inputs and outputs (in Keras order)."""

    model: object
    input_names: list[str]
    output_names: list[str]
    label: str = ""
    layers: dict[str, str] = field(default_factory=dict)  # layer name -> class name, for messages
    nchw: set[str] = field(default_factory=set)  # rank-4 inputs/outputs to hold as NCHW in ONNX
    places: dict[str, str] = field(default_factory=dict)  # layer name -> where it is ("partition 1")


# ------------------------------------------------------------------------------ conversion
def _tensor_spec(tensor, name: str):
    import tensorflow as tf

    return tf.TensorSpec(tuple(tensor.shape), tf.as_dtype(str(tensor.dtype)), name=name)


def convert_units(units: list[Unit], opset: int):
    """One ONNX ``ModelProto`` holding every unit, inputs/outputs named as the units say.

    Names in ``Unit.nchw`` are held channels-first in ONNX (tf2onnx's ``inputs_as_nchw`` /
    ``outputs_as_nchw``): tf2onnx computes convolutions in NCHW anyway, so a cut tensor kept in
    NCHW needs no Transpose on either side of the cut.
    """
    import tensorflow as tf

    specs = [_tensor_spec(t, n) for u in units for t, n in zip(u.model.inputs, u.input_names)]

    def fn(*args):
        result, pos = {}, 0
        for unit in units:
            xs = list(args[pos:pos + len(unit.input_names)])
            pos += len(unit.input_names)
            ys = unit.model(xs[0] if len(xs) == 1 else xs, training=False)
            ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
            for name, y in zip(unit.output_names, ys):
                # Own Identity per output: tf2onnx's outputs_as_nchw rewires the consumers of the
                # output node's *input*, which must then be this Identity and nothing else.
                result[name] = tf.identity(y)
        return result

    function = tf.function(fn, autograph=False)
    concrete = function.get_concrete_function(*specs)  # from_function reuses this trace
    layout = {}
    nchw = {n for u in units for n in u.nchw}
    if nchw:
        tf_names = {k: v.name for k, v in concrete.structured_outputs.items()}
        layout = {"inputs_as_nchw": [f"{n}:0" for u in units for n in u.input_names if n in nchw],
                  "outputs_as_nchw": [tf_names[n] for u in units for n in u.output_names if n in nchw]}
    proto = _run_tf2onnx(function, specs, opset, units, **layout)
    _captures_to_initializers(proto, concrete)
    proto.graph.doc_string = ""  # tf2onnx writes the traced function's name, which counts up per trace
    return proto


def _captures_to_initializers(proto, concrete) -> None:
    """Tensor constants the trace captured (an adapted Normalization's mean, a ``keras.ops``
    constant such as Gemma's ``sqrt(hidden_dim)``) become initializers of the graph.

    tf2onnx freezes captured *variables* but turns captured eager tensors into graph inputs,
    which no caller would know to feed; they are constants of the model and belong in it.
    """
    import onnx.numpy_helper
    import tensorflow as tf

    values = {internal.name: external for external, internal in concrete.graph.captures
              if internal.dtype != tf.resource}
    graph = proto.graph
    captured = [v for v in graph.input if v.name in values]
    for value in captured:
        graph.input.remove(value)
        array = np.asarray(values[value.name].numpy())
        graph.initializer.append(onnx.numpy_helper.from_array(array, value.name))


def _run_tf2onnx(function, specs, opset: int, units: list[Unit], **options):
    import tf2onnx

    from . import handlers

    _patch_tf2onnx()
    handlers.register()
    tf2onnx.utils.INTERNAL_NAME = 1  # its generated names count from here: the same model, the same file
    with _captured_tf2onnx_log() as records:
        try:
            try:
                with _optimizer_errors_raise():
                    proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset,
                                                             **options)
            except Exception:  # maybe an ONNX optimizer failed: again, letting tf2onnx skip it
                records.clear()
                proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset,
                                                         **options)
        except Exception as e:  # tf2onnx raises on what continue_on_error cannot skip
            problems = _problems(records, units)
            if problems:
                _raise_for(problems, opset, units)
            raise UnsupportedModelError(
                f"tf2onnx {tf2onnx.__version__} could not convert the model at opset {opset}: "
                f"{type(e).__name__}: {_first_line(e)}") from None
    problems = _problems(records, units)
    problems += _leftover_ops(proto, opset, units, {p.node for p in problems})
    if problems:
        unclear = [p for p in problems if p.needs is None and min_handler_opset(p.op) is not None]
        if unclear and opset < _max_opset():
            _raise_if_higher_opset_works(function, specs, opset, units, options)
        _raise_for(problems, opset, units)
    return proto


def _converts(function, specs, opset: int, options: dict) -> bool:
    import tf2onnx

    with _captured_tf2onnx_log() as records:
        try:
            tf2onnx.convert.from_function(function, input_signature=specs, opset=opset, **options)
        except Exception:
            return False
    return not any(r.levelno >= logging.ERROR for r in records)


def _raise_if_higher_opset_works(function, specs, opset: int, units, options: dict) -> None:
    """A handler failed without saying why: if a higher opset converts, find the lowest that does
    (bisection, a conversion per step; only on this error path)."""
    top = _max_opset()
    if not _converts(function, specs, top, options):
        return
    low, high = opset, top  # low fails, high works
    while high - low > 1:
        mid = (low + high) // 2
        if _converts(function, specs, mid, options):
            high = mid
        else:
            low = mid
    raise OpsetError(f"opset {opset} is too low for this model: tf2onnx converts it from opset {high} "
                     f"on (the minimum needed is {high}); pass opset={high} or higher (up to {top}).",
                     minimum=high)


def _patch_tf2onnx() -> None:
    """Keras's own numpy-2 compatibility patch for tf2onnx (what ``model.export(format="onnx")`` uses)."""
    import warnings

    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
    except ImportError:  # a Keras without it: tf2onnx may still work with this numpy
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch_tf2onnx()


@contextlib.contextmanager
def _optimizer_errors_raise():
    """Run tf2onnx's ONNX optimizers without a deep copy of the graph before each one.

    By default tf2onnx copies the whole graph before every optimizer pass (~36 copies, about a
    fifth of a ResNet50 conversion) to undo a pass that fails; :func:`_run_tf2onnx` instead
    converts again, with the copies, in the rare case that something fails.
    """
    from tf2onnx import constants

    key = constants.ENV_TF2ONNX_CATCH_ERRORS
    saved = os.environ.get(key)
    os.environ[key] = "FALSE"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def _captured_tf2onnx_log():
    """tf2onnx's warnings and errors collected (not printed) while converting."""
    logger = logging.getLogger("tf2onnx")
    saved = logger.handlers[:], logger.propagate, logger.level
    collect = _Collect()
    logger.handlers, logger.propagate = [collect], False
    logger.setLevel(logging.WARNING)
    try:
        yield collect.records
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


# ------------------------------------------------------------------------------ diagnosis
@dataclass
class _Problem:
    node: str  # TF node name
    op: str  # TF op type ("" when unknown)
    needs: int | None  # the opset that would work, None when no opset would
    detail: str = ""


def min_handler_opset(op_type: str) -> int | None:
    """The lowest ONNX opset at which tf2onnx has a handler for TF op ``op_type`` (None: none)."""
    import tf2onnx.convert  # noqa: F401  (registers the handlers)
    from tf2onnx.handler import tf_op

    for version, handlers in enumerate(tf_op.get_opsets().get("", [])):
        if op_type in handlers:
            return version
    return None


_OPSET_IN_MESSAGE = re.compile(r"opset\s*(?:>=\s*|of\s+|version\s+)?(\d+)", re.IGNORECASE)


def _problems(records, units) -> list[_Problem]:
    found = []
    for record in records:
        if record.levelno < logging.ERROR or not isinstance(record.args, tuple):
            continue
        msg = str(record.msg)
        if msg.startswith("Tensorflow op [") and len(record.args) >= 2:
            node, op = str(record.args[0]), str(record.args[1])
            found.append(_Problem(node, op, min_handler_opset(op)))
        elif msg.startswith("Failed to convert node") and record.args:
            node = str(record.args[0])
            exc = record.exc_info[1] if record.exc_info else None
            detail = _first_line(exc) if exc is not None else ""
            op = _op_from_summary(record.args[2] if len(record.args) > 2 else "")
            m = _OPSET_IN_MESSAGE.search(detail)
            found.append(_Problem(node, op, int(m.group(1)) if m else None, detail))
    return found


def _op_from_summary(summary) -> str:
    m = re.search(r"^OP=(\S+)", str(summary), re.MULTILINE)
    return m.group(1) if m else ""


def _leftover_ops(proto, opset: int, units, seen: set[str]) -> list[_Problem]:
    """Nodes still carrying a TF op that is no ONNX operator (tf2onnx left them unconverted)."""
    import onnx

    problems = []
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.name in seen:
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except Exception:
            problems.append(_Problem(node.name, node.op_type, min_handler_opset(node.op_type)))
    return problems


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_SUFFIX = re.compile(r"_\d+$")


def locate(node_name: str, units: list[Unit]) -> tuple[Unit | None, str | None]:
    """The unit and Keras layer a TF node came from, read from its name scopes."""
    parts = [p for p in node_name.split("/") if p]
    by_model = {u.model.name: u for u in units}

    def candidates(part):
        out = [_SUFFIX.sub("", part), part]
        return list(dict.fromkeys(out))

    unit, start = None, 0
    for i, part in enumerate(parts):
        hit = next((by_model[c] for c in candidates(part) if c in by_model), None)
        if hit is not None:
            unit, start = hit, i + 1
            break
    pool = [unit] if unit is not None else units
    for part in parts[start:]:
        for c in candidates(part):
            for u in pool:
                if c in u.layers:
                    return u, c
    return unit, None


def _describe(problem: _Problem, units) -> str:
    unit, layer = locate(problem.node, units)
    where = f"layer {layer!r} ({unit.layers[layer]})" if layer else f"TF node {problem.node!r}"
    if unit is not None and layer in unit.places:
        where += f" in {unit.places[layer]}"
    elif unit is not None and unit.label and len(units) > 1:
        where += f" in {unit.label}"
    op = f"TF op {problem.op!r}" if problem.op else "an op"
    return f"{where} uses {op}" + (f" ({problem.detail})" if problem.detail else "")


def _raise_for(problems: list[_Problem], opset: int, units) -> None:
    import tf2onnx

    version = f"tf2onnx {tf2onnx.__version__}"
    hopeless = [p for p in problems if p.needs is None or p.needs <= opset]
    if hopeless:
        lines = sorted({_describe(p, units) for p in hopeless})
        raise UnsupportedModelError(
            f"cannot export to ONNX: {version} cannot convert these ops at any opset:\n  "
            + "\n  ".join(lines)
            + "\nReplace the layer(s) with ONNX-convertible ones, or cut the model before them "
              "(export_onnx(..., at=...)) and run that part elsewhere.")
    minimum = max(p.needs for p in problems)
    lines = sorted({_describe(p, units) + f", which needs opset >= {p.needs}" for p in problems})
    raise OpsetError(
        f"opset {opset} is too low for this model: the minimum opset needed is {minimum}:\n  "
        + "\n  ".join(lines) + f"\nPass opset={minimum} or higher (up to {_max_opset()}).",
        minimum=minimum)
