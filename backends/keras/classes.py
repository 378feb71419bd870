"""Which layer classes Keras can resolve, so a missing custom class is reported up front.

Keras would fail on the first missing class with a deep traceback; kgraft names them all.
"""

from __future__ import annotations

import importlib
from typing import Iterator

import keras

from ...ir import Graph, Layer, UnknownLayerError
from ...frontend import MODEL_CLASSES

__all__ = ["iter_layers", "missing_classes", "missing_functions", "check_classes", "classes_from_handles"]

_KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")  # as serialization_lib


def iter_layers(graph: Graph) -> Iterator[Layer]:
    """Every layer of the graph and of its nested bodies, outer first."""
    for layer in graph.layers.values():
        yield layer
        if layer.body is not None:
            yield from iter_layers(layer.body)


def _resolvable(layer: Layer, custom_objects: dict) -> bool:
    registered = layer.spec.get("registered_name")
    if layer.class_name in MODEL_CLASSES or layer.class_name in custom_objects or registered in custom_objects:
        return True
    if keras.saving.get_registered_object(registered or layer.class_name, custom_objects) is not None:
        return True
    module = layer.spec.get("module") or "keras.layers"
    if module.split(".")[0] not in _KERAS_PACKAGES:
        return False
    if hasattr(keras.layers, layer.class_name):
        return True
    # like Keras's own deserialization: classes of its packages resolve by module, even when
    # unregistered (e.g. CustomScaleLayer of keras.src.applications.inception_resnet_v2)
    try:
        return isinstance(vars(importlib.import_module(module)).get(layer.class_name), type)
    except ImportError:
        return False


def missing_classes(graph: Graph, custom_objects: dict | None) -> list[str]:
    custom = custom_objects or {}
    return sorted({l.spec.get("registered_name") or l.class_name
                   for l in iter_layers(graph) if not _resolvable(l, custom)})


def missing_functions(graph: Graph, custom_objects: dict | None) -> list[str]:
    """Python functions the layer configs name (a ``Lambda``'s function, a TextVectorization
    ``standardize``) that Keras could not find when rebuilding: neither registered, nor in
    ``custom_objects``, nor in a Keras module."""
    custom = custom_objects or {}
    return sorted({name for layer in iter_layers(graph) for name in _functions(layer.config)
                   if not _function_resolvable(name, custom)})


def _functions(config) -> list[str]:
    found = []
    if isinstance(config, dict):
        if config.get("class_name") == "function" and isinstance(config.get("config"), str):
            registered = config.get("registered_name")
            name = registered if isinstance(registered, str) and registered != "function" else config["config"]
            module = config.get("module")
            return [name] if module in (None, "builtins") or not module.startswith(_KERAS_PACKAGES) else []
        for value in config.values():
            found += _functions(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found += _functions(value)
    return found


def _function_resolvable(name: str, custom: dict) -> bool:
    return name in custom or name.split(">")[-1] in custom or keras.saving.get_registered_object(name) is not None


def check_classes(graph: Graph, custom_objects: dict | None, where: str) -> None:
    missing = missing_classes(graph, custom_objects)
    functions = missing_functions(graph, custom_objects)
    if missing or functions:
        raise UnknownLayerError(missing, where, functions)


def classes_from_handles(graph: Graph) -> dict[str, type]:
    """Custom classes and functions of a live source model, so in-memory models need no
    custom_objects. A function is found among the attributes of the layer whose config names it.

    Only Keras 3 classes: a ``tf_keras`` layer (built-in or custom) cannot live in a Keras 3 model.
    """
    found = {}
    for layer in iter_layers(graph):
        cls = type(layer.handle) if isinstance(layer.handle, keras.layers.Layer) else None
        if cls is None:
            continue
        if not cls.__module__.startswith("keras"):
            found[layer.class_name] = cls
            if layer.spec.get("registered_name"):
                found[layer.spec["registered_name"]] = cls
        for name in _functions(layer.config):
            fn = next((v for v in vars(layer.handle).values()
                       if callable(v) and getattr(v, "__name__", None) == name.split(">")[-1]), None)
            if fn is not None:
                found[name] = fn
    return found
