"""Build runnable ``keras.Model`` s from IR graphs, with weights copied from the source layers.

Keras builds the model from the emitted config (so layers behave exactly as Keras defines
them); weights are then assigned variable to variable from the source layers, without a
round trip through numpy. Shared layers stay shared: one layer object, one set of weights.
"""

from __future__ import annotations

import keras
from keras.src.saving.serialization_lib import SafeModeScope

from ...ir import INPUT_CLASS, Graph, KgraftError, verify
from .classes import check_classes, classes_from_handles
from .emit import to_config

__all__ = ["build", "copy_weights"]


def build(graph: Graph | list[Graph], *, weights: bool = True):
    """``keras.Model`` for a graph (a list of models for a list of partitions)."""
    if isinstance(graph, (list, tuple)):
        return [build(g, weights=weights) for g in graph]
    verify(graph)
    custom = {**classes_from_handles(graph), **graph.meta.get("custom_objects", {})}
    check_classes(graph, custom, f"model {graph.name!r}")
    config = to_config(graph)
    cls = keras.Sequential if config["class_name"] == "Sequential" else keras.Model
    # Lambda code in the IR came from a live model or a file the user opted into
    # (safe_mode=False at load time), so rebuilding it runs nothing new.
    try:
        with SafeModeScope(False), keras.saving.custom_object_scope(custom):
            model = cls.from_config(config["config"], custom_objects=custom)
    except Exception as e:
        raise KgraftError(f"Keras could not rebuild model {graph.name!r}: {type(e).__name__}: {e}") from e
    if weights:
        copy_weights(graph, model)
    return model


def copy_weights(graph: Graph, model) -> None:
    """Assign every layer's weights from its source layer (``Layer.handle``), recursively."""
    targets = {layer.name: layer for layer in model.layers}
    for layer in graph.layers.values():
        if layer.class_name == INPUT_CLASS or layer.name not in targets:
            continue
        target = targets[layer.name]
        if layer.body is not None:
            copy_weights(layer.body, target)
            continue
        if layer.handle is None:
            continue
        source_vars, target_vars = layer.handle.weights, target.weights
        if [tuple(v.shape) for v in source_vars] != [tuple(v.shape) for v in target_vars]:
            raise KgraftError(
                f"cannot copy the weights of layer {layer.qualified_name!r}: the source has shapes "
                f"{[tuple(v.shape) for v in source_vars]}, the rebuilt layer "
                f"{[tuple(v.shape) for v in target_vars]}"
            )
        for target_var, source_var in zip(target_vars, source_vars):
            target_var.assign(source_var.value)
