"""tf.keras 2.x models: in-memory ``tf_keras`` models, and the files tf.keras 2 wrote.

Their configs use the legacy format :mod:`kgraft.frontend.lower` reads. What Keras 3 cannot do is
load every such file: it rejects tf.keras 2 ``.keras`` files, and in an ``.h5`` file it numbers
the call sites of nested models differently, so it fails or, for a nested model called twice,
silently wires the wrong call. Those files are read with ``tf_keras`` (the library that wrote
them); flat ``.h5`` files stay with Keras 3, so custom layers given as Keras 3 classes work.
``tf_keras`` is imported only for such a file, or found already imported for such a model.

What a config does not say is read from the live tf_keras model: value types, masks (on its
symbolic tensors, see :mod:`.masks`), and that its calls follow tf.keras 2's training rule,
which results keep as :class:`RecordedTrainingModel` s.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import zipfile
from dataclasses import replace

import keras

from ...ir import INPUT_CLASS, RECORDED_TRAINING_WINS, Graph, KgraftError, TensorType, UnsupportedModelError
from .internals import Functional, set_keras_mask, unpack_singleton

__all__ = ["RecordedTrainingModel", "set_training_rule", "is_tf_keras_model", "model_classes", "call_outputs",
           "fill_types", "to_keras3", "file_keras_version", "tf_keras_reason", "load_file", "INSTALL_HINT"]

INSTALL_HINT = ("Install tf_keras, the tf.keras 2 package matching your TensorFlow (pip install tf_keras), "
                "and kgraft will read the file with it.")

# tf.keras 2 options that Keras 3 layers have no argument for, and the values at which dropping
# them changes nothing (build shapes and unused options: any value).
_DROPPABLE = {
    "groups": lambda v: v == 1,  # transposed, separable and depthwise convolutions
    "time_major": lambda v: v is False,  # recurrent layers
    "softmax_robust_masking": lambda v: v is False,  # MultiHeadAttention
    "batch_input_shape": lambda v: True,  # the graph's own input types say this
    "query_shape": lambda v: True,
    "key_shape": lambda v: True,
    "value_shape": lambda v: True,
    "kernel_initializer": lambda v: True,  # separable convolutions have no such kernel
    "kernel_regularizer": lambda v: True,
    "kernel_constraint": lambda v: True,
}
def _policy_name(dtype):
    """tf.keras 2's ``Policy`` (mixed precision) -> its name, which Keras 3 reads as a policy."""
    is_policy = isinstance(dtype, dict) and dtype.get("class_name") == "Policy"
    return dtype.get("config", {}).get("name") if is_policy else dtype


# tf.keras 2 values that Keras 3 spells differently: (class or None for any, option) -> converter
_CONVERT = {
    (None, "dtype"): _policy_name,
    ("BatchNormalization", "axis"): lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v,
}
# tf.keras 2 layers that hold TensorFlow ops or Python code in a form Keras 3 cannot rebuild
_NO_KERAS3 = {
    "TFOpLambda": "a TensorFlow op that tf.keras 2 recorded as a layer",
    "SlicingOpLambda": "a tensor slice that tf.keras 2 recorded as a layer",
    "Lambda": "a Lambda layer, whose code tf.keras 2 serializes in a form Keras 3 does not read",
}


@keras.saving.register_keras_serializable(package="kgraft")
class RecordedTrainingModel(Functional):
    """A Keras 3 Functional model that runs by tf.keras 2's training rule, the one kgraft builds
    from a tf.keras 2 source: a ``training`` recorded at a call site wins over the mode the model
    is called in, where Keras 3's Functional passes its own to every operation over it. So
    ``base(x, training=False)`` keeps ``base`` in inference under ``model(x, training=True)``
    (transfer learning), and ``Dropout()(x, training=True)`` stays active under ``training=False``.
    Calls that record none take the model's mode, as in both libraries. Saved and loaded as any
    Functional (its config is one), with kgraft imported."""

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Functional.call, with a recorded training kept (keras/src/models/functional.py)
        inputs = self._standardize_inputs(inputs)
        if mask is not None:
            for x, m in zip(inputs, keras.tree.flatten(mask)):
                if m is not None:
                    set_keras_mask(x, m)
        context = {"training": training, **kwargs}
        outputs = self._run_through_graph(inputs, operation_fn=lambda op: _unless_recorded(op, context))
        return unpack_singleton(outputs)


def _unless_recorded(operation, context: dict):
    """``operation`` called with the model's call-context arguments where its call records none."""
    names = getattr(operation, "_call_context_args", ())

    def call(*args, **kwargs):
        for name, value in context.items():
            if name in names and value is not None and kwargs.get(name) is None:
                kwargs[name] = value
        return operation(*args, **kwargs)

    return call


def set_training_rule(graph: Graph, model) -> None:
    """Mark ``graph`` (lowered from ``model``) as following tf.keras 2's training rule where its
    source does: a tf_keras model, a :class:`RecordedTrainingModel`, or a Keras 3 model nesting
    one where no other call records a ``training`` (the two rules then agree on those calls).
    Where one does, one result cannot follow both rules: refused."""
    if is_tf_keras_model(model) or isinstance(model, RecordedTrainingModel):
        graph.meta[RECORDED_TRAINING_WINS] = True
        return
    nested, recorded = {}, []
    _by_rule(graph, nested, recorded)
    if nested and recorded:
        raise UnsupportedModelError(
            f"model {model.name!r} nests {', '.join(repr(n) for n in nested)}, which kgraft built from a tf.keras 2 "
            f"model and which keeps tf.keras 2's training rule (a training recorded at a call wins), while "
            f"call(s) {', '.join(repr(r) for r in recorded)} record a training that Keras 3's rule lets the mode "
            "the model is called in override: one result cannot follow both. Call those without training=, "
            "or apply kgraft to the nested model itself.")
    if nested:
        graph.meta[RECORDED_TRAINING_WINS] = True


def _by_rule(graph: Graph, nested: dict, recorded: list) -> None:
    """Collect the nested :class:`RecordedTrainingModel` s of a Keras 3 graph, and the other calls
    that record a ``training`` (the nested models' own calls included)."""
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        if node.kwargs.get("training") is not None:
            recorded.append("/".join(layer.path[:-1] + (node.id,)))
        if isinstance(layer.handle, RecordedTrainingModel):
            nested[layer.qualified_name] = None
        elif layer.body is not None:
            _by_rule(layer.body, nested, recorded)


def is_tf_keras_model(obj) -> bool:
    """A ``tf_keras.Model`` (checked without importing ``tf_keras``)."""
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(obj, tf_keras.Model)


def model_classes() -> tuple[type, type]:
    """``tf_keras``'s ``(Sequential, Functional)`` classes."""
    from tf_keras.src.engine.functional import Functional
    from tf_keras.src.engine.sequential import Sequential

    return Sequential, Functional


def call_outputs(model, layer) -> list[list]:
    """The flattened output tensors of each call of ``layer`` in ``model``'s network.

    Call site ``k`` of a layer in the config is the ``k``-th of the layer's nodes that belong to
    this model's network (tf_keras's own numbering in ``get_config``, minus the pre-existing node
    of a nested model that :mod:`kgraft.frontend.lower` already discounts).
    """
    import tensorflow as tf

    network = model._network_nodes
    return [tf.nest.flatten(n.outputs) for i, n in enumerate(layer._inbound_nodes)
            if f"{layer.name}_ib-{i}" in network]


def fill_types(graph: Graph, model) -> None:
    """Fill the value types a legacy config leaves out from the tensors tf_keras recorded."""
    for node in graph.nodes():
        handle = graph.layers[node.layer].handle
        if handle is None or node.id in graph.inputs or all(t.known for t in node.outputs):
            continue
        calls = call_outputs(model, handle)
        if node.call_index >= len(calls):
            continue
        types = tuple(t if t.known else TensorType(tuple(x.shape), x.dtype.name)
                      for t, x in zip(node.outputs, calls[node.call_index]))
        graph.replace_node(replace(node, outputs=types + node.outputs[len(types):]))


def to_keras3(graph: Graph) -> None:
    """Rewrite the legacy layer configs of a tf_keras model into ones Keras 3 accepts."""
    for layer in list(graph.layers.values()):
        if layer.body is not None:
            to_keras3(layer.body)
        elif layer.class_name == INPUT_CLASS:  # Keras 3 reads its legacy batch_input_shape
            continue
        elif layer.class_name in _NO_KERAS3:
            raise UnsupportedModelError(
                f"layer {layer.qualified_name!r} of the tf_keras model is {_NO_KERAS3[layer.class_name]} "
                f"({layer.class_name}); Keras 3 has no equivalent. Rebuild that part of the model with "
                "Keras layers (or a custom layer class passed in custom_objects) before using kgraft."
            )
        else:
            spec = _keras3_spec(layer.spec, layer.qualified_name)
            if spec is not layer.spec:
                graph.set_layer(replace(layer, spec=spec))


def _keras3_spec(spec: dict, where: str) -> dict:
    """``spec`` without the tf.keras 2 options its Keras 3 class lacks (nested layers too)."""
    import keras

    config = {k: _keras3_spec(v, f"{where}/{k}") if isinstance(v, dict) and "class_name" in v else v
              for k, v in spec.get("config", {}).items()}
    cls = getattr(keras.layers, str(spec.get("class_name")), None)
    if isinstance(cls, type) and spec.get("module", "keras.layers") in ("keras.layers", None):
        accepted = _init_arguments(cls)
        for key in [k for k in config if k not in accepted and k in _DROPPABLE]:
            if not _DROPPABLE[key](config[key]):
                raise UnsupportedModelError(
                    f"layer {where!r} ({spec['class_name']}) sets the tf.keras 2 option "
                    f"{key}={config[key]!r}, which the Keras 3 {spec['class_name']} does not have"
                )
            del config[key]
    for (class_name, key), convert in _CONVERT.items():
        if class_name in (None, spec.get("class_name")) and key in config:
            config[key] = convert(config[key])
    if config == spec.get("config", {}) and "build_config" not in spec:
        return spec
    # tf.keras 2 build configs give one input shape even to multi-input layers (attention), which
    # Keras 3 builds from separate shapes; the graph's own calls build every layer anyway
    return {**{k: v for k, v in spec.items() if k != "build_config"}, "config": config}


def _init_arguments(cls: type) -> set[str]:
    """Keyword arguments a Keras 3 layer class accepts (its own and its bases' up to Layer)."""
    names = {"name", "dtype", "trainable", "input_shape", "input_dim"}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names


def file_keras_version(path: str) -> str | None:
    """The Keras version that wrote a ``.keras``/``.h5`` file (``None`` when not recorded)."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                version = json.loads(archive.read("metadata.json")).get("keras_version")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    version = version.decode() if isinstance(version, bytes) else version
    return version if isinstance(version, str) else None


def tf_keras_reason(path: str, graph: Graph) -> str | None:
    """Why a file is read with tf_keras rather than Keras 3 (``None``: not a tf.keras 2 file).

    Keras 3 cannot read a tf.keras 2 ``.keras`` file and miswires nested models of an ``.h5``
    one; a flat ``.h5`` goes to tf_keras when it is installed, as Keras 3 rejects many tf.keras 2
    layer options (``groups`` of depthwise convolutions, ``time_major`` of RNNs...).
    """
    version = file_keras_version(path) or ""
    if not version.startswith("2."):
        return None
    if path.endswith(".keras"):
        return f"it is a tf.keras {version} .keras file, a format Keras 3 does not read"
    nested = sorted(l.name for l in graph.layers.values() if l.body is not None)
    if nested:
        return (f"it was written by tf.keras {version} and holds nested model(s) {', '.join(nested)}, "
                "whose call sites Keras 3 numbers differently (it would fail or wire the wrong call)")
    if importlib.util.find_spec("tf_keras") is not None:
        return f"it was written by tf.keras {version}"
    return None


def load_file(path: str, reason: str, custom_objects: dict | None, safe_mode: bool):
    """The model of a tf.keras 2 file, loaded by ``tf_keras``."""
    try:
        import tf_keras
    except ImportError:
        raise KgraftError(f"cannot read model file {path!r} with Keras 3: {reason}. {INSTALL_HINT}") from None
    try:
        return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=False,
                                           safe_mode=safe_mode)
    except Exception as e:
        raise KgraftError(f"tf_keras could not load model file {path!r} ({reason}): "
                          f"{type(e).__name__}: {e}") from e
