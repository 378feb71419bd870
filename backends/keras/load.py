"""Lowering Keras models (in memory, ``.keras`` or ``.h5`` files) into the graph IR.

The graph comes from ``model.get_config()`` (pure lowering in :mod:`kgraft.frontend.lower`); this
module adds what only the live model knows: each layer's object (whose weights the backend
copies) and the types of values no layer consumes (model outputs). Files are read with
Keras's ``safe_mode`` on; their config is checked first so that a ``Lambda`` layer or a missing
custom class gives a clear error instead of a failure deep inside Keras. tf.keras 2 models
(``tf_keras``) are read the same way, from their legacy configs (see :mod:`.legacy`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import replace

import keras

from ...frontend import lower_config
from ...ir import Graph, KgraftError, TensorType, UnsupportedModelError
from . import legacy
from .classes import check_classes, iter_layers
from .internals import graph_config, is_graph_model, unserializable_layer
from .masks import record_masks
from .shapes import correct_types

__all__ = ["lower", "load_model", "read_file_config"]

_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


def lower(model_or_path, custom_objects: dict | None = None, *, safe_mode: bool = True) -> Graph:
    """``kgraft.lower``: a Keras model or a path to a ``.keras``/``.h5`` file -> IR graph."""
    model = load_model(model_or_path, custom_objects, safe_mode=safe_mode)
    graph = lower_config(model_config(model))
    if legacy.is_tf_keras_model(model):
        legacy.to_keras3(graph)
    _attach(graph, model)
    correct_types(graph)
    record_masks(graph, model)
    graph.meta.update(source=model, custom_objects=dict(custom_objects or {}))
    legacy.set_training_rule(graph, model)
    return graph


def model_config(model) -> dict:
    """``{"class_name": ..., "config": ...}``: the graph of a Functional (subclasses included, such
    as keras_hub backbones) or Sequential model."""
    if legacy.is_tf_keras_model(model):
        sequential, functional = legacy.model_classes()
        if isinstance(model, sequential):
            return {"class_name": "Sequential", "config": model.get_config()}
        if isinstance(model, functional):
            return {"class_name": "Functional", "config": model.get_config()}
    elif is_graph_model(model):
        try:
            return graph_config(model)
        except Exception as e:
            culprit = unserializable_layer(model)
            if culprit is not None:
                layer, error = culprit
                raise UnsupportedModelError(
                    f"model {model.name!r}: the get_config() of layer {layer.name!r} ({type(layer).__name__}) fails "
                    f"({type(error).__name__}: {error}), so its configuration cannot be read. An attribute set "
                    "after construction is the usual cause (e.g. layer.activation = None: set it to "
                    "keras.activations.linear instead, which get_config can name).") from e
            raise UnsupportedModelError(f"model {model.name!r} ({type(model).__name__}): Keras could not "
                                        f"serialize its graph: {type(e).__name__}: {e}") from e
    raise UnsupportedModelError(
        f"model {model.name!r} is a subclassed keras.Model ({type(model).__name__}) with no functional "
        "graph: its computation lives in the Python code of call(), not in a graph kgraft can read. "
        "Build it with the functional API (keras.Model(inputs, outputs), also from a subclass's __init__) "
        "or as a keras.Sequential."
    )


def load_model(model_or_path, custom_objects: dict | None = None, *, safe_mode: bool = True):
    """The Keras model itself, or the model stored at a path (never executing code silently)."""
    if isinstance(model_or_path, keras.Model) or legacy.is_tf_keras_model(model_or_path):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise KgraftError(
            f"expected a keras.Model or a path to a .keras/.h5 file, got {type(model_or_path).__name__}"
        )
    path = os.fspath(model_or_path)
    config = read_file_config(path)
    try:
        graph = lower_config(config)
    except UnsupportedModelError:  # a Functional subclass (keras_hub) stores constructor arguments:
        graph = _subclass_stub(config)  # check its class; Keras's own loading builds its graph
    lambdas = sorted(l.qualified_name for l in iter_layers(graph) if l.class_name == "Lambda")
    if lambdas and safe_mode:
        raise KgraftError(
            f"model file {path!r} contains Lambda layer(s) {', '.join(lambdas)}: loading them runs "
            "Python code stored in the file, which Keras's safe_mode forbids. If you trust the file, "
            f"opt in with kgraft.lower({path!r}, safe_mode=False), or load it yourself and pass the model to "
            f"any kgraft function: keras.saving.load_model({path!r}, safe_mode=False) (CLI: --unsafe)."
        )
    check_classes(graph, custom_objects, f"model file {path!r}")
    reason = legacy.tf_keras_reason(path, graph)
    if reason:
        return legacy.load_file(path, reason, custom_objects, safe_mode)
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    except Exception as e:
        version = legacy.file_keras_version(path) or ""
        hint = f" The file was written by tf.keras {version}. {legacy.INSTALL_HINT}" if version.startswith("2.") else ""
        raise KgraftError(f"Keras could not load model file {path!r}: {type(e).__name__}: {e}{hint}") from e


def read_file_config(path: str) -> dict:
    """The model config stored in a ``.keras`` (zip) or ``.h5`` file, without building the model."""
    if not os.path.exists(path):
        raise KgraftError(f"no such model file: {path!r}")
    if os.path.isdir(path):  # an unzipped .keras archive
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            raise KgraftError(f"model directory {path!r} has no config.json: expected an unzipped .keras "
                              "archive (config.json, model.weights.h5, metadata.json)")
        try:
            with open(config_file) as f:
                return json.load(f)
        except Exception as e:
            raise KgraftError(f"model directory {path!r}: config.json is unreadable: {type(e).__name__}: {e}") from e
    if not path.endswith(_FILE_SUFFIXES):
        raise KgraftError(f"unsupported model file {path!r}: expected one of {', '.join(_FILE_SUFFIXES)}")
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise KgraftError(f"model file {path!r} holds weights only (no model_config): save the whole model")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except KgraftError:
        raise
    except Exception as e:
        raise KgraftError(f"model file {path!r} is corrupt or unreadable: {type(e).__name__}: {e}") from e


def _subclass_stub(config: dict) -> Graph:
    """A one-layer graph standing for a model whose config holds no graph, so that its class is
    checked like any layer's before Keras loads it."""
    from ...ir import Layer

    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise KgraftError("corrupt model config: the model entry has no class_name")
    stub = Graph("stub")
    stub.add_layer(Layer(config["class_name"], config["class_name"], {k: v for k, v in config.items()}))
    return stub


def _attach(graph: Graph, model) -> None:
    """Point each IR layer at its source layer object and fill in output types."""
    by_name = {layer.name: layer for layer in model.layers}
    for layer in list(graph.layers.values()):
        handle = by_name.get(layer.name)
        if handle is None:
            continue  # an InputLayer that Sequential does not list
        if layer.body is not None:
            _attach(layer.body, handle)
        graph.set_layer(replace(layer, handle=handle))
    if legacy.is_tf_keras_model(model):
        legacy.fill_types(graph, model)
    elif graph.kind == "Sequential":
        _infer_sequential_types(graph)
    outputs = getattr(model, "outputs", None) or []
    for ref, tensor in zip(graph.outputs, outputs):
        node = graph.node(ref.node)
        if node.outputs[ref.index].known:
            continue
        types = list(node.outputs)
        types[ref.index] = TensorType(tuple(tensor.shape), getattr(tensor.dtype, "name", str(tensor.dtype)))
        graph.replace_node(replace(node, outputs=tuple(types)))


def _infer_sequential_types(graph: Graph) -> None:
    """Fill the holes a Sequential config leaves in value types, asking the live layers.

    A Sequential config records a layer's output shape only as the next layer's build input
    shape, and layers without weights (pooling, flatten, activations...) record none: so the
    output of ``Conv2D`` before ``GlobalAveragePooling2D`` would stay unknown, and a model cut
    there could not be rebuilt. ``compute_output_spec`` infers it without calling the layer.
    """
    for node in graph.nodes():
        if node.id in graph.inputs or len(node.outputs) != 1 or node.outputs[0].known:
            continue
        handle = graph.layers[node.layer].handle
        operands = [ref for _, ref in node.operands()]
        if handle is None or len(operands) != 1:
            continue
        in_type = graph.value_type(operands[0])
        if not in_type.known:
            continue
        try:
            spec = handle.compute_output_spec(keras.KerasTensor(in_type.shape, dtype=in_type.dtype))
        except Exception:  # a custom layer that cannot infer: leave the type unknown
            continue
        if isinstance(spec, keras.KerasTensor):
            graph.replace_node(replace(node, outputs=(TensorType(tuple(spec.shape), str(spec.dtype)),)))
