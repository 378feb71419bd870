"""Run an IR graph eagerly on its live layers and read any value in it (torch.fx ``Interpreter`` style).

``keras.Model(model.inputs, inner_tensor)`` fails with "Graph disconnected" for a tensor inside a
nested model, and building a probe model for every tensor asked for would cost a Keras rebuild
each. The interpreter instead walks a graph (e.g. ``inline_nested(kgraft.lower(model))``, whose
layers are the model's own inner layers) and calls each call site's live layer (``Layer.handle``;
Keras ops are looked up in the model by their path) on concrete tensors with the recorded
arguments, as Keras's Functional does: masks ride on the eager tensors, and ``training`` is
passed to every layer that takes it. Eager calls record no new call sites on the layers.
Values no longer needed are dropped as it goes, so it runs big models in the memory of a
forward pass.
"""

from __future__ import annotations

from typing import Any, Iterable

import keras
import numpy as np

from ...ir import Graph, KgraftError, ValueRef, recorded_training_wins
from .arguments import call_arguments
from .masks import MASK_CLASSES

__all__ = ["Interpreter"]


class Interpreter:
    """``Interpreter(graph, model).run(inputs, want)`` -> the values at ``want`` (numpy arrays).

    ``model`` is the live model ``graph`` was lowered from (to find Keras ops, which have no
    ``Layer.handle``). ``training`` is passed to every layer whose call takes it (as Keras 3 does);
    for tf.keras 2 layers, and in a graph that follows tf.keras 2's rule, a ``training`` recorded
    at the call site wins (as tf.keras 2 does).
    """

    def __init__(self, graph: Graph, model=None, training: bool | None = False):
        self.graph, self.model, self.training = graph, model, training
        self.recorded_wins = recorded_training_wins(graph)
        self._ops: dict[str, Any] = {}

    def run(self, inputs: list, want: Iterable[ValueRef] | None = None,
            masks: Iterable[ValueRef] = ()) -> list[np.ndarray]:
        """The values ``want`` (default: the outputs), then the Keras masks of ``masks`` (which
        must be among ``want``; all true where a value carries none)."""
        graph = self.graph
        want = list(graph.outputs if want is None else want)
        masks = list(masks)
        if len(inputs) != len(graph.inputs):
            raise KgraftError(f"interpreter: model {graph.name!r} takes {len(graph.inputs)} inputs, got {len(inputs)}")
        needed = graph.reach({v.node for v in want}, forward=False)
        pending = {}  # value -> uses still to come (within what is needed)
        for node_id in needed:
            for _, ref in graph.node(node_id).operands():
                pending[ref] = pending.get(ref, 0) + 1
        keep = set(want)
        env: dict[ValueRef, Any] = {}
        for node_id, array in zip(graph.inputs, inputs):
            env[ValueRef(node_id)] = keras.ops.convert_to_tensor(array)
        for node_id in graph.topological_ids():
            if node_id not in needed or node_id in graph.inputs:
                continue
            node = graph.node(node_id)
            for i, value in enumerate(self.run_node(node, env)):
                env[ValueRef(node_id, i)] = value
            for _, ref in node.operands():
                pending[ref] -= 1
                if not pending[ref] and ref not in keep:
                    env.pop(ref, None)
        values = [np.asarray(keras.ops.convert_to_numpy(env[v])) for v in want]
        for v in masks:
            mask = getattr(env[v], "_keras_mask", None)
            values.append(np.asarray(keras.ops.convert_to_numpy(mask)) if mask is not None
                          else np.ones(values[want.index(v)].shape[:len(graph.masks[v].shape or (0, 0))], bool))
        return values

    def run_node(self, node, env: dict) -> list:
        """The outputs of one call site, its operands read from ``env``."""
        op = self.live(node.layer)
        args, kwargs = call_arguments(node, env.__getitem__)
        if self.training is not None and self._passes_training(op, kwargs):
            kwargs["training"] = self.training
        try:
            out = op(*args, **kwargs)
        except Exception as e:
            layer = self.graph.layers[node.layer]
            error = KgraftError(f"interpreter: calling layer {layer.qualified_name!r} ({layer.class_name}) "
                                f"failed: {type(e).__name__}: {e}")
            error.layer = layer  # which one, for callers that report it
            raise error from e
        return keras.tree.flatten(out)

    def _passes_training(self, op, kwargs: dict) -> bool:
        """Whether the interpreter's ``training`` goes to a call: where the call takes one, and
        under tf.keras 2's rule (its layers, or a graph that follows it) records none."""
        if not isinstance(op, keras.Operation):  # a tf.keras 2 layer
            return getattr(op, "_expects_training_arg", False) and kwargs.get("training") is None
        takes = "training" in getattr(op, "_call_context_args", ())
        return takes and not (self.recorded_wins and kwargs.get("training") is not None)

    def live(self, name: str):
        """The live layer (or Keras op) of IR layer ``name``."""
        op = self._ops.get(name)
        if op is None:
            layer = self.graph.layers[name]
            if layer.handle is not None:
                op = layer.handle
            elif layer.class_name in MASK_CLASSES:  # a pass may add them (at a cut, for a nested
                # call's mask=): they have no source layer to find, and no state
                op = MASK_CLASSES[layer.class_name].from_config(layer.config)
            else:
                op = self._find(layer.path or (layer.name,))
            self._ops[name] = op
        return op

    def _find(self, path: tuple[str, ...]):
        obj = self.model
        for name in path:
            children = getattr(obj, "operations", None) or getattr(obj, "layers", None) or []
            obj = next((op for op in children if op.name == name), None)
            if obj is None:
                raise KgraftError(f"interpreter: no layer or op {'/'.join(path)!r} in the live model "
                                  f"{getattr(self.model, 'name', None)!r}")
        return obj
