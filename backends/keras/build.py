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

__all__ = ["build", "copy_weights", "restore_trainable"]


def build(graph: Graph | list[Graph], *, weights: bool = True):
    """``keras.Model`` for a graph (a list of models for a list of partitions)."""
    if isinstance(graph, (list, tuple)):
        return [build(g, weights=weights) for g in graph]
    if not isinstance(graph, Graph):
        hint = " (lower it first: kgraft.build(kgraft.lower(model)))" if isinstance(graph, keras.Model) else ""
        raise KgraftError(f"kgraft.build expects a kgraft IR Graph (from kgraft.lower or kgraft.ir.parse) "
                          f"or a list of them, got {type(graph).__name__}{hint}")
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
    restore_trainable(graph, model)
    if weights:
        copy_weights(graph, model)
    return model


def restore_trainable(graph: Graph, model) -> None:
    """Set each layer's ``trainable`` flag from its config, nested models included.

    Keras's ``from_config`` drops a nested model's flag, and setting a model's flag resets its
    children's, so parents are set first and their children after them.
    """
    targets = {layer.name: layer for layer in model.layers}
    for layer in graph.layers.values():
        target = targets.get(layer.name)
        if target is None or layer.class_name == INPUT_CLASS:
            continue
        flag = layer.config.get("trainable", True)
        if isinstance(flag, bool) and target.trainable != flag:
            target.trainable = flag
        if layer.body is not None:
            restore_trainable(layer.body, target)


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
            # a tf_keras source holds tf.Variables, which Keras 3 variables assign directly
            target_var.assign(source_var.value if isinstance(source_var, keras.Variable) else source_var)
        finalize = getattr(target, "finalize_state", None)
        if callable(finalize):  # an adapted Normalization recomputes the mean/variance it computes with
            finalize()
