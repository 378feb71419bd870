"""Every private Keras API kgraft uses, in one place, so that a Keras upgrade touches one file.

* the Functional/Sequential classes and the serialization helpers Keras's own ``get_config``
  uses, to write the functional config of a Functional *subclass* (a keras_hub backbone, a
  ``class Net(keras.Model)`` calling ``super().__init__(inputs, outputs)``), whose own
  ``get_config`` returns constructor arguments instead of its graph;
* a layer's direct sublayers and its live call sites (``_inbound_nodes``);
* ``SafeModeScope`` and ``deserialize_keras_object`` for rebuilding layers;
* deferred variable initialization (``StatelessScope`` and the variables it leaves uninitialized).
"""

from __future__ import annotations

import contextlib
import copy

import keras
from keras.src.backend import set_keras_mask
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope
from keras.src.models.functional import (Functional, functional_like_constructor, make_node_key, serialize_node,
                                         unpack_singleton)
from keras.src.saving import serialization_lib
from keras.src.legacy.saving import saving_utils
from keras.src.saving.serialization_lib import SafeModeScope, deserialize_keras_object

__all__ = ["Functional", "SafeModeScope", "deserialize_keras_object", "deserialize_layer", "graph_config",
           "is_graph_model", "sublayers", "call_nodes", "unserializable_layer", "set_keras_mask",
           "unpack_singleton", "deferred_initialization", "deferral_refused"]


def is_graph_model(obj) -> bool:
    """A model whose graph Keras records: Functional (subclasses too) or Sequential."""
    return isinstance(obj, (Functional, keras.Sequential))


def graph_config(model) -> dict:
    """``{"class_name": "Functional"|"Sequential", "config": {...}}``: the model's *graph* config,
    nested models included, also where a (nested) model's ``get_config`` returns constructor
    arguments. Layer entries of nested models that are subclasses become plain Functional ones."""
    if isinstance(model, keras.Sequential):
        config = model.get_config()
        kind, live = "Sequential", keras.Model.layers.fget(model)  # the InputLayer included
    elif functional_like_constructor(type(model)):
        config = model.get_config()
        kind, live = "Functional", model.operations
    else:
        config = _functional_config(model)
        kind, live = "Functional", model.operations
    _fill_nested(config["layers"], live)
    return {"class_name": kind, "config": config}


def _fill_nested(entries: list, live: list) -> None:
    """Give each nested model's entry its graph config; name entries Keras left nameless (a
    custom layer without ``get_config`` in a Sequential model)."""
    for entry, layer in zip(entries, live):
        config = entry.setdefault("config", {})
        if isinstance(config, dict) and "name" not in config:
            config["name"] = layer.name
        if not is_graph_model(layer):
            continue
        if isinstance(config.get("layers"), list):  # already a graph config: look deeper only
            inner = keras.Model.layers.fget(layer) if isinstance(layer, keras.Sequential) else layer.operations
            _fill_nested(config["layers"], inner)
            continue
        nested = graph_config(layer)
        entry.update(module="keras.src.models.functional", class_name="Functional", registered_name="Functional",
                     config={**nested["config"], "name": layer.name, "trainable": layer.trainable})
        entry.pop("build_config", None)


def _functional_config(model) -> dict:
    """What ``Functional.get_config`` writes for a model with a functional-like constructor
    (keras/src/models/functional.py), for any Functional."""
    reindex = {}
    for operation in model.operations:
        kept = 1 if isinstance(operation, Functional) else 0  # a model's "pre-existing node"
        for i, _ in enumerate(operation._inbound_nodes):
            key = make_node_key(operation, i)
            if key in model._nodes:
                reindex[key] = kept
                kept += 1
    layers = []
    for operation in model.operations:
        inbound = []
        for i, node in enumerate(operation._inbound_nodes):
            if make_node_key(operation, i) in model._nodes:
                data = serialize_node(node, own_nodes=model._nodes)
                if data is not None:
                    inbound.append(data)
        entry = serialization_lib.serialize_keras_object(operation)
        entry["name"] = operation.name
        entry["inbound_nodes"] = inbound
        layers.append(entry)

    def endpoint(tensor):
        operation, node_index, tensor_index = tensor._keras_history
        return [operation.name, reindex[make_node_key(operation, node_index)], tensor_index]

    return copy.deepcopy({
        "name": model.name, "trainable": model.trainable, "layers": layers,
        "input_layers": keras.tree.map_structure(endpoint, model._inputs_struct),
        "output_layers": keras.tree.map_structure(endpoint, model._outputs_struct),
    })


def unserializable_layer(model):
    """``(layer, error)`` for the first layer of ``model`` (nested ones included) whose own
    ``get_config`` fails, or ``None``."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if is_graph_model(layer):
            continue
        try:
            serialization_lib.serialize_keras_object(layer)
        except Exception as e:
            return layer, e
    return None


def sublayers(layer) -> list:
    """The layers ``layer`` tracks directly (its children), in a fixed order."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def call_nodes(model, layer) -> list:
    """The live Keras ``Node`` s of ``layer`` that belong to ``model``'s graph, in the order its
    config numbers them."""
    own = getattr(model, "_nodes", None)
    if own is None:  # a Sequential model keeps its graph in a Functional of its own
        functional = getattr(model, "_functional", None)
        own = getattr(functional, "_nodes", set())
    return [node for i, node in enumerate(layer._inbound_nodes) if make_node_key(layer, i) in own]


def deserialize_layer(entry: dict, custom_objects: dict):
    """A layer from its config entry, as ``functional_from_config`` makes it: an entry without a
    ``module`` is in the legacy (tf.keras, ``.h5``) format."""
    if "module" not in entry:
        return saving_utils.model_from_config(entry, custom_objects=custom_objects)
    return deserialize_keras_object(entry, custom_objects=custom_objects)


class _Deferring(keras.StatelessScope):
    """A ``StatelessScope`` that also keeps the variables it records updates of (Keras keys them by id)."""

    def __init__(self):
        super().__init__(initialize_variables=False)
        self.updated: dict[int, object] = {}

    def add_update(self, update):
        super().add_update(update)
        self.updated[id(update[0])] = update[0]


@contextlib.contextmanager
def deferred_initialization():
    """Run the body with variable initialization deferred, as Keras's ``StatelessScope`` does: a
    new variable runs no initializer and ``assign`` only records the value. On exit each variable
    the body created gets the last value assigned to it, or else what its own initializer makes,
    and variables that existed before get their assigned values: what eager code would have left.
    So a layer rebuilt and then given its source's state pays neither for random initial values
    that would be overwritten nor for the overwrite. Inside a caller's own ``StatelessScope``
    nothing is deferred: that scope decides what updates mean."""
    if in_stateless_scope():
        yield
        return
    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    start = len(pending)
    scope = _Deferring()
    try:
        with scope:
            yield
        for variable in pending[start:]:
            value = scope.state_mapping.pop(id(variable), None)
            if value is not None:
                variable._initializer = lambda shape, dtype, value=value: value
            variable._deferred_initialize()
        for key, value in scope.state_mapping.items():
            scope.updated[key].assign(value)
    finally:
        del pending[start:]  # also where the body failed: its variables belong to discarded layers


def deferral_refused(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is Keras refusing a variable made from a tensor while
    initialization is deferred: the one failure that building again without deferring cures."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ValueError) and "while in a stateless scope" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False
