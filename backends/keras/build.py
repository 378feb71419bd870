"""Build runnable ``keras.Model`` s from IR graphs, with all layer state copied from the source.

The builder does what Keras's own ``Functional.from_config`` does — deserialize each layer from
its config, then call it on Keras tensors in topological order — but keys the layer objects by
*weight owner* (the source layer object, ``Layer.handle``), not by name: a layer shared between
call sites, between nested models, or between a nested model and the outer graph (an embedding
tied to the output projection) is one layer object with one set of variables in the result, as
in the source. A config cannot say that; a graph of calls can.

State is then copied the way Keras's saving carries it (:mod:`.state`): variables, assets
(vocabularies), and what ``load_own_variables`` finalizes (Normalization statistics). Variable
initialization is deferred meanwhile, so that a copied variable's first value is its source's
(no random initial values drawn only to be overwritten); the others run their own initializers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import Any

import keras
import networkx as nx

from ...ir import (INPUT_CLASS, Graph, KgraftError, Layer, TensorType, ValueRef, partitions_of,
                   recorded_training_wins, verify)
from ...ir.graph import nested_call_inputs
from .classes import check_classes, classes_from_handles, iter_layers
from .arguments import call_arguments
from .internals import SafeModeScope, deferral_refused, deferred_initialization, deserialize_layer
from .legacy import RecordedTrainingModel
from .masks import MASK_CLASSES
from .state import copy_state
from .weight_plan import copy_planned_weights, shape_error

__all__ = ["build", "build_partitions", "copy_weights"]


def build(graph: Graph, *, weights: bool = True):
    """``keras.Model`` for a graph; for a graph that ``split`` returned, see :func:`build_partitions`."""
    if not isinstance(graph, Graph):
        hint = " (lower it first: kgraft.build(kgraft.lower(model)))" if isinstance(graph, keras.Model) else ""
        raise KgraftError(f"kgraft.build expects a kgraft IR Graph (from kgraft.lower or kgraft.ir.parse), "
                          f"got {type(graph).__name__}{hint}")
    verify(graph)
    custom = {**MASK_CLASSES, **classes_from_handles(graph), **graph.meta.get("custom_objects", {})}
    check_classes(graph, custom, f"model {graph.name!r}")
    try:  # see deferred_initialization: no copied variable pays for initial values it never keeps
        with deferred_initialization():
            return _build(graph, custom, weights)
    except Exception as e:
        if not deferral_refused(e):  # any other failure would only fail again
            raise
        return _build(graph, custom, weights)  # a layer that makes a variable from a tensor


def _build(graph: Graph, custom: dict, weights: bool):
    """The model, its layers built as Keras builds them (configs and initializers unchanged). Under
    ``deferred_initialization`` each copied variable's initial value is its source's value, and
    only the variables not copied run their initializers. A layer that creates a variable from a
    tensor (which Keras forbids while initialization is deferred) fails that build, and ``build``
    builds again without deferring."""
    builder = _Builder(custom, RecordedTrainingModel if _keeps_recorded_training(graph) else keras.Model)
    # Lambda code in the IR came from a live model or a file the user opted into
    # (safe_mode=False at load time), so rebuilding it runs nothing new.
    with SafeModeScope(False), keras.saving.custom_object_scope(custom):
        try:
            model = builder.model(graph)
        except _RebuildError as e:  # name every layer that cannot be rebuilt, not only the first
            raise KgraftError("; ".join(builder.every_rebuild_error(graph)) or str(e)) from e
    builder.restore_trainable()
    if weights:
        builder.copy_state()
    return model


def build_partitions(graph: Graph, *, weights: bool = True) -> list:
    """One ``keras.Model`` per partition of a graph that the ``split`` pass returned, in order:
    feeding each one's outputs to the next reproduces the source model."""
    parts = partitions_of(graph) if isinstance(graph, Graph) else None
    if parts is None:
        raise KgraftError(f"build_partitions expects a graph that the split pass returned (its top level "
                          f"calls part0 .. partN), got {graph!r}; for any other graph use build(graph)")
    return [build(part, weights=weights) for part in parts]


def copy_weights(graph: Graph, model) -> None:
    """Load the state of every layer of ``graph``'s source into ``model``'s layers of the same names."""
    targets = {layer.name: layer for layer in model.layers}
    for layer in graph.layers.values():
        target = targets.get(layer.name)
        if target is None or layer.class_name == INPUT_CLASS:
            continue
        if layer.body is not None:
            copy_weights(layer.body, target)
        elif layer.handle is not None:
            _copy_layer(layer, target)


class _Builder:
    """Layer objects by weight owner, and the IR layer each was made from; models of
    ``model_class`` (the graph's training rule, nested models included)."""

    def __init__(self, custom_objects: dict, model_class: type):
        self.custom, self.model_class = custom_objects, model_class
        self.objects: dict[Any, Any] = {}
        self.made: list[tuple[Layer, Any]] = []

    def layer(self, layer: Layer, graph: Graph, passed: list | None = None):
        """The Keras object of ``layer`` (of ``graph``); a nested model is built on first use for
        the tensors ``passed`` to its inputs."""
        if layer.class_name == INPUT_CLASS:  # each model its own inputs, also where the IR shares them
            key = ("input", id(graph), layer.name)
        elif layer.handle is not None:
            key = ("source", id(layer.handle))
        else:
            key = ("ir", id(layer))
        obj = self.objects.get(key)
        if obj is None:
            obj = self.model(layer.body, layer, passed) if layer.body is not None else self._deserialize(layer)
            self.objects[key] = obj
            self.made.append((layer, obj))
        return obj

    def _deserialize(self, layer: Layer):
        entry = {**layer.spec, "config": {**layer.config, "name": layer.name}}
        try:
            return deserialize_layer(entry, self.custom)
        except Exception as e:
            raise _RebuildError(rebuild_message(layer, e)) from e

    def model(self, graph: Graph, layer: Layer | None = None, passed: list | None = None):
        """``graph`` as a Keras model. A nested model is built for the tensors ``passed`` to it
        where they no longer fit the input types its body records (after a surgery upstream
        changed them, as Keras re-infers every shape)."""
        name = layer.name if layer is not None else graph.name
        inputs = {node_id: self.layer(_retyped(graph.layers[graph.node(node_id).layer], graph.value_type(ValueRef(node_id)), t), graph)
                  for node_id, t in zip(graph.inputs, passed or [None] * len(graph.inputs))}
        if graph.kind == "Sequential" and _is_chain(graph):
            stack = [inputs[node.id] if node.id in inputs else self.layer(graph.layers[node.layer], graph)
                     for node in graph.nodes()]
            return _assembled(name, lambda: keras.Sequential(stack, name=name))
        values: dict[str, list] = {node_id: [obj.output] for node_id, obj in inputs.items()}
        for node in _call_order(graph):
            if node.id in inputs:
                continue
            ir_layer = graph.layers[node.layer]
            value = functools.partial(_produced, graph, values, node)
            args, kwargs = call_arguments(node, value)
            passed_in = None if ir_layer.body is None else [
                None if ref is None else value(ref) for ref in nested_call_inputs(node, ir_layer.body)]
            obj = self.layer(ir_layer, graph, passed_in)
            try:
                result = obj(*args, **kwargs)
            except Exception as e:
                raise KgraftError(f"Keras could not call layer {node.layer!r} ({ir_layer.class_name}) "
                                  f"at call site {node.id!r} of model {name!r}: {type(e).__name__}: {e}") from e
            values[node.id] = keras.tree.flatten(result)
        ins = [values[i][0] for i in graph.inputs]
        outs = [values[r.node][r.index] for r in graph.outputs]
        return _assembled(name, lambda: self.model_class(
            dict(zip(graph.input_keys, ins)) if graph.input_keys is not None else ins[0] if len(ins) == 1 else ins,
            dict(zip(graph.output_keys, outs)) if graph.output_keys is not None
            else outs[0] if len(outs) == 1 else outs,
            name=name))

    def every_rebuild_error(self, graph: Graph) -> list[str]:
        found = []
        for layer in iter_layers(graph):
            if layer.body is None and layer.class_name != INPUT_CLASS:
                try:
                    self._deserialize(layer)
                except _RebuildError as e:
                    found.append(str(e))
        return list(dict.fromkeys(found))

    def restore_trainable(self) -> None:
        """Each layer's own ``trainable`` flag. Setting a model's flag resets its children's, so
        models (made after their layers) are set first, then every other layer."""
        for layer, obj in sorted(self.made, key=lambda pair: pair[0].body is None):
            flag = layer.config.get("trainable", True)
            if isinstance(flag, bool) and isinstance(obj, keras.layers.Layer) and obj.trainable != flag:
                obj.trainable = flag

    def copy_state(self) -> None:
        for layer, obj in self.made:
            if layer.body is None and layer.handle is not None and isinstance(obj, keras.layers.Layer):
                _copy_layer(layer, obj)


def _copy_layer(layer: Layer, target) -> None:
    source = layer.handle
    if isinstance(source, keras.Operation) and not isinstance(source, keras.layers.Layer):
        return  # an operation (keras.ops) has no state
    if layer.weight_plan:  # surgery: sliced or folded weights
        copy_planned_weights(layer, target)
        return
    source_vars, target_vars = source.weights, target.weights
    if [tuple(v.shape) for v in source_vars] != [tuple(v.shape) for v in target_vars]:
        raise shape_error(layer, target)
    if isinstance(source, keras.layers.Layer):
        copy_state(source, target, layer.qualified_name)
        return
    # a tf_keras source: its variables are tf.Variables, assigned in order
    for target_var, source_var in zip(target_vars, source_vars):
        target_var.assign(source_var)


def _assembled(name: str, make):
    """``make()``, a Keras model from built layers; Keras's own checks (a layer built for other
    shapes than its inputs have) fail here as they fail in ``from_config``."""
    try:
        return make()
    except KgraftError:
        raise
    except Exception as e:
        raise KgraftError(f"Keras could not assemble model {name!r}: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from e


def _retyped(layer: Layer, declared: TensorType, tensor) -> Layer:
    """An InputLayer for ``tensor`` where its declared type (of the same rank) no longer fits it."""
    if tensor is None:
        return layer
    actual = TensorType(tuple(tensor.shape), str(tensor.dtype))
    if declared.shape is None or len(declared.shape) != len(actual.shape):
        return layer  # another rank: Keras's own call decides (it adjusts a trailing 1, else refuses)
    if declared.dtype == actual.dtype and all(d is None or d == a for d, a in zip(declared.shape, actual.shape)):
        return layer  # the declared type admits what is passed (free dims stay free)
    config = {k: v for k, v in layer.config.items() if k != "batch_input_shape"}
    return replace(layer, spec={**layer.spec, "config": {**config, "batch_shape": list(actual.shape),
                                                       "dtype": actual.dtype}})


class _RebuildError(KgraftError):
    """A layer Keras cannot rebuild from its config."""


def rebuild_message(layer: Layer, error: Exception) -> str:
    """Why Keras cannot rebuild ``layer`` from its config, and how to fix the class: the innermost
    reason of Keras's nested message, without its config dumps."""
    reason = " ".join(str(error).split()).rsplit("Exception encountered: ", 1)[-1]
    what = f"layer {layer.qualified_name!r} ({layer.class_name})"
    missing = re.findall(r"'(\w+)'", reason.split("missing", 1)[1]) if "required positional argument" in reason else []
    if missing:
        names = ", ".join(repr(m) for m in missing)
        example = ", ".join(f"{m!r}: self.{m}" for m in missing)
        return (f"{what}: its get_config() omits the constructor argument{'s' if len(missing) > 1 else ''} {names}, "
                f"so Keras cannot rebuild it ({reason}). Add {'them' if len(missing) > 1 else 'it'} to "
                f"{layer.class_name}.get_config(): return {{**super().get_config(), {example}}}")
    if "unexpected keyword argument" in reason:
        return (f"{what}: Keras cannot rebuild the custom layer class {layer.class_name} from its config: {reason}. "
                f"Keras passes name, trainable and dtype to every layer's __init__: give {layer.class_name}.__init__ "
                "a **kwargs parameter and pass it on with super().__init__(**kwargs) (or define get_config/from_config).")
    return (f"Keras could not rebuild {what} from its config, so its own get_config/from_config round trip is "
            f"broken: {type(error).__name__}: {reason}")


def _produced(graph: Graph, values: dict[str, list], user, ref: ValueRef):
    """The Keras tensor ``ref`` names; a config may name an output its producer does not return
    (Keras fails on it deep inside ``from_config``)."""
    produced = values[ref.node]
    if ref.index >= len(produced):
        raise KgraftError(f"layer {user.layer!r} reads output {ref.index} of {ref.node!r}, which returns "
                          f"{len(produced)} tensor(s); the model config's inbound nodes name a tensor that "
                          "does not exist: fix or re-save the model")
    return produced[ref.index]


def _keeps_recorded_training(graph: Graph) -> bool:
    """Whether the result must keep tf.keras 2's training rule: the graph follows it and a call
    (nested ones included) records a ``training`` (else a plain Functional behaves the same)."""
    def records(g: Graph) -> bool:
        return any(node.kwargs.get("training") is not None or (g.layers[node.layer].body is not None
                   and records(g.layers[node.layer].body)) for node in g.nodes())

    return recorded_training_wins(graph) and records(graph)


def _call_order(graph: Graph) -> list:
    """Call sites in a topological order that calls each layer in call-index order, so that the
    rebuilt layer's Keras nodes are numbered as the IR numbers its calls (``shared@1`` names the
    same call in the source and the result), as Keras's ``from_config`` orders them. Where no such
    order exists (calls of one weight owner merged from several nested models), any topological one."""
    ids = graph.topological_ids()
    position = {node_id: i for i, node_id in enumerate(ids)}
    chains = [(a.id, b.id) for name in graph.layers for a, b in zip(graph.call_sites(name), graph.call_sites(name)[1:])]
    if all(position[a] < position[b] for a, b in chains):
        return graph.nodes()
    deps = nx.DiGraph(graph.nx)
    deps.add_edges_from(chains)
    try:
        ids = list(nx.lexicographical_topological_sort(deps, key=position.__getitem__))
    except nx.NetworkXUnfeasible:
        pass
    return [graph.node(node_id) for node_id in ids]


def _is_chain(graph: Graph) -> bool:
    """Whether a Sequential-declared graph is still one chain of single-use layers."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        return False
    prev = ValueRef(graph.inputs[0])
    for node in graph.nodes()[1:]:
        operands = [ref for _, ref in node.operands()]
        if operands != [prev] or node.kwargs or len(graph.call_sites(node.layer)) != 1:
            return False
        prev = ValueRef(node.id)
    return graph.outputs == (prev,)
