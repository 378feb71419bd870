"""Lowering a Keras model *config* (``model.get_config()``, a plain dict) into the graph IR.

Handles Functional and Sequential configs nested to any depth, in the Keras 3 format
(``inbound_nodes`` as ``{"args", "kwargs"}`` with ``__keras_tensor__`` leaves) and the legacy
tf.keras 2.x format (``[[name, node_index, tensor_index, kwargs], ...]``). Pure Python: value
types come from the tensors recorded at their uses; a backend fills in what a config lacks
(the types of model outputs) from the live model.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from ..ir.errors import KgraftError, UnsupportedModelError
from ..ir.graph import INPUT_CLASS, Graph, Layer, Node, ValueRef
from ..ir.nogc import gc_paused
from ..ir.types import UNKNOWN, TensorType, compute_dtype

__all__ = ["lower_config", "is_model_spec", "MODEL_CLASSES"]

MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})
_MODEL_KEYS = ("layers", "input_layers", "output_layers", "build_input_shape")
# the dtypes Keras gives tensors (keras.src.backend.common.dtypes.ALLOWED_DTYPES)
TENSOR_DTYPES = frozenset({
    "bfloat16", "bool", "complex128", "complex64", "float16", "float32", "float64", "float8_e4m3fn",
    "float8_e5m2", "int16", "int32", "int64", "int8", "string", "uint16", "uint32", "uint64", "uint8"})


@gc_paused()
def lower_config(config: dict, path: tuple[str, ...] = ()) -> Graph:
    """Lower a model config: ``{"class_name": "Functional", "config": {...}}`` or the inner dict."""
    if not isinstance(config, dict):
        raise KgraftError(f"expected a model config dict, got {type(config).__name__}")
    if isinstance(config.get("config"), dict) and "layers" not in config:
        kind, inner = config.get("class_name"), config["config"]
        if not isinstance(kind, str):
            raise KgraftError(f"corrupt model config: the model's class_name is {kind!r}, not a string")
    else:
        kind, inner = ("Functional" if "input_layers" in config else "Sequential"), config
    if not isinstance(inner.get("layers"), list):
        raise UnsupportedModelError(
            f"config of {kind} {inner.get('name', '?')!r} has no 'layers' list: only Functional and "
            "Sequential models have a graph kgraft can read (subclassed models do not)"
        )
    if not isinstance(inner.get("name", ""), str):
        raise KgraftError(f"corrupt model config: the model name {inner['name']!r} is not a string")
    for entry in inner["layers"]:
        _check_entry(entry)
    # the class name decides, as in Keras's deserialization; a subclass goes by its keys
    if kind == "Sequential" or (kind not in MODEL_CLASSES and "input_layers" not in inner):
        return _lower_sequential(inner, path)
    return _lower_functional(inner, path)


def _check_entry(entry: Any) -> None:
    """A layer entry has the shape Keras writes: a class name, a config dict, string modules."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) or not entry["class_name"]:
        raise KgraftError(f"corrupt model config: layer entry {str(entry)[:80]!r} has no class_name")
    found = {k: entry[k] for k in ("module", "registered_name") if not isinstance(entry.get(k), (str, type(None)))}
    if not isinstance(entry.get("config"), dict):  # Keras refuses an entry without one too
        found["config"] = entry.get("config")
    for key in ("build_config", "compile_config"):  # Keras builds / compiles from a true one
        if entry.get(key) and not isinstance(entry[key], dict):
            found[key] = entry[key]
    if found:
        raise KgraftError(
            f"corrupt model config: a layer entry of class {entry['class_name']!r} has "
            + ", ".join(f"{k}={repr(v)[:40]} ({type(v).__name__})" for k, v in found.items())
            + "; Keras writes dicts for config, build_config and compile_config and strings for module "
            "and registered_name"
        )


def is_model_spec(entry: dict) -> bool:
    """True for a layer entry that is itself a Functional or Sequential model."""
    cfg = entry.get("config")
    return isinstance(cfg, dict) and isinstance(cfg.get("layers"), list) and (
        entry.get("class_name") in MODEL_CLASSES or "input_layers" in cfg
    )


def _layer_name(entry: dict, functional: bool = False) -> str:
    """The layer's name, from its config; a Functional entry repeats it as ``name`` (what refs use).

    A custom layer that does not override ``get_config`` has no name in its config (Keras 3 writes
    it only beside it, in a Functional entry): the entry's name is the layer's then, as Keras reads it.
    """
    name = entry.get("config", {}).get("name")
    if name is None and functional and not is_model_spec(entry):  # Keras requires a model's own name
        name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise KgraftError(f"corrupt model config: a {entry.get('class_name', '?')} layer entry has no name")
    if functional and entry.get("name") != name:
        raise KgraftError(
            f"corrupt model config: the {entry['class_name']} layer entry {entry.get('name')!r} is named "
            f"{name!r} in its config; Keras would name the layer by one and find its inputs by the other. "
            "Make the two names agree."
        )
    return name


def _make_layer(entry: dict, path: tuple[str, ...], functional: bool = False) -> Layer:
    name = _layer_name(entry, functional)
    spec = {k: v for k, v in entry.items() if k not in ("inbound_nodes", "name")}
    body = None
    if is_model_spec(entry):
        body = lower_config(entry, path + (name,))
        spec["config"] = {k: v for k, v in entry["config"].items() if k not in _MODEL_KEYS}
    return Layer(name, entry["class_name"], spec, path + (name,), body=body)


def _shape(value: Any, what: str) -> tuple | None:
    """A shape from a config: None, or a list of sizes (ints, None for unknown)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(d is None or _is_index(d) for d in value):
        return tuple(value)
    raise KgraftError(f"corrupt model config: {what} is {value!r}, not a shape (a list of sizes or nulls)")


def _build_shape(entry: dict) -> tuple | None:
    """The input shape a Sequential layer entry was built with (``build_config``)."""
    build_config = entry.get("build_config")
    if build_config is not None and not isinstance(build_config, dict):
        raise KgraftError(f"corrupt model config: build_config of {entry.get('class_name')} layer is {build_config!r}")
    return _shape((build_config or {}).get("input_shape"), f"the build input shape of {_layer_name(entry)!r}")


def _input_node(layer: Layer) -> Node:
    cfg = layer.config
    shape = _shape(cfg.get("batch_shape", cfg.get("batch_input_shape")), f"the shape of input {layer.name!r}")
    dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else compute_dtype(layer.spec)
    ttype = TensorType(shape, dtype or "float32")
    return Node(Node.make_id(layer.name, 0), layer.name, 0, [], {}, (ttype,))


def _lower_sequential(cfg: dict, path: tuple[str, ...]) -> Graph:
    graph = Graph(cfg.get("name", "sequential"), "Sequential")
    entries = list(cfg["layers"])
    if entries and entries[0].get("class_name") == INPUT_CLASS:
        input_layer = _make_layer(entries.pop(0), path)
    else:
        shape = _shape(cfg.get("build_input_shape"), f"build_input_shape of {graph.name!r}")
        if shape is None and entries:
            shape = _build_shape(entries[0])
        if shape is None:
            raise UnsupportedModelError(
                f"Sequential model {graph.name!r} was never built, so it has no input shape: "
                "give it a keras.Input(...) first or call it on data once"
            )
        name = f"{graph.name}_input"
        input_layer = Layer(name, INPUT_CLASS, {"module": "keras.layers", "class_name": INPUT_CLASS,
                            "config": {"batch_shape": list(shape), "dtype": "float32", "name": name}},
                            path + (name,))
    graph.add_layer(input_layer)
    prev = ValueRef(graph.add_node(_input_node(input_layer)).id)
    graph.set_inputs([prev.node])
    for i, entry in enumerate(entries):
        layer = graph.add_layer(_make_layer(entry, path))
        next_shape = _build_shape(entries[i + 1]) if i + 1 < len(entries) else None
        out = TensorType(next_shape or None, compute_dtype(layer.spec))
        if layer.body is not None and not out.known and layer.body.outputs:
            inner = layer.body.value_type(layer.body.outputs[0])
            out = TensorType(out.shape if out.shape is not None else inner.shape, out.dtype or inner.dtype)
        prev = ValueRef(graph.add_node(Node(Node.make_id(layer.name, 0), layer.name, 0, [prev], {}, (out,))).id)
    graph.set_outputs([prev])
    return graph


class _CallDecoder:
    """Turns serialized call arguments into trees of ValueRefs, recording each tensor's type."""

    def __init__(self, where: str):
        self.where = where
        self.types: dict[ValueRef, TensorType] = {}
        self._interned: dict[tuple, TensorType] = {}  # (shape, dtype) -> its checked TensorType

    def ref(self, layer: str, node_index: int, tensor_index: int, ttype: TensorType = UNKNOWN) -> ValueRef:
        if not (isinstance(layer, str) and _is_index(node_index) and _is_index(tensor_index)):
            raise KgraftError(f"corrupt model config in {self.where}: bad tensor reference "
                              f"{[layer, node_index, tensor_index]!r} (expected [layer name, node index, "
                              "tensor index])")
        ref = ValueRef(Node.make_id(layer, node_index), tensor_index)
        if ttype.known or ref not in self.types:
            self.types[ref] = ttype
        return ref

    def tensor(self, cfg: Any) -> ValueRef:
        """A ``__keras_tensor__`` leaf's config, checked as Keras reads it."""
        hist = cfg.get("keras_history") if isinstance(cfg, dict) else None
        if not (isinstance(hist, (list, tuple)) and len(hist) == 3):
            raise KgraftError(f"corrupt model config in {self.where}: tensor without keras_history")
        if "shape" not in cfg or "dtype" not in cfg:  # Keras reads both
            raise KgraftError(f"corrupt model config in {self.where}: a tensor without shape or dtype")
        shape, dtype = cfg["shape"], cfg["dtype"]
        if shape is None:  # Keras rebuilds the tensor, and a tensor must have a rank
            raise KgraftError(f"corrupt model config in {self.where}: a tensor's shape is null "
                              "(Keras requires a list of sizes)")
        key = None  # hashable, and only ints or None in the shape (True == 1 must not hit (1,))
        if (dtype is None or type(dtype) is str) and type(shape) in (list, tuple) and all(
                type(d) is int or d is None for d in shape):
            key = (tuple(shape), dtype)
        ttype = self._interned.get(key)
        if ttype is None:  # a new type: check it (the same shape and dtype recur on most tensors)
            if dtype is not None and not (isinstance(dtype, str) and dtype in TENSOR_DTYPES):
                raise KgraftError(f"corrupt model config in {self.where}: a tensor's dtype is {dtype!r}, "
                                  f"not one of Keras's ({', '.join(sorted(TENSOR_DTYPES))})")
            ttype = TensorType(_shape(shape, f"a tensor shape in {self.where}"), dtype)
            if key is not None:
                self._interned[key] = ttype
        return self.ref(*hist, ttype)

    def tree(self, value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                return self.tensor(value.get("config", {}))
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):  # live configs hold tuples, JSON files lists
            return [self.tree(v) if isinstance(v, (dict, list, tuple)) else v for v in value]
        return value

    def call(self, node_data: Any) -> tuple[list, dict]:
        if isinstance(node_data, dict):  # Keras 3
            args, kwargs = node_data.get("args"), node_data.get("kwargs")
            if not (isinstance(args, (list, tuple)) and isinstance(kwargs, dict)):
                raise KgraftError(f"corrupt model config in {self.where}: call arguments {str(node_data)[:80]!r} "
                                  "are not {'args': [...], 'kwargs': {...}}")
            return self.tree(args), self.tree(kwargs)
        if isinstance(node_data, (list, tuple)) and node_data:  # legacy: [layer, node, tensor, kwargs] entries
            return self.legacy_call(node_data)
        raise KgraftError(f"corrupt model config in {self.where}: unreadable inbound node {node_data!r}")

    def legacy_call(self, node_data: list) -> tuple[list, dict]:
        """The first call argument is ``node_data`` with each entry replaced by its tensor (a lone
        tensor unwrapped, as tf.keras does); the kwargs ride on every entry."""
        kwargs: dict = {}
        entries = []

        def walk(value: Any) -> Any:
            nonlocal kwargs
            if isinstance(value, (list, tuple)) and len(value) in (3, 4) and isinstance(value[0], str):
                kwargs = value[3] if len(value) == 4 else {}
                entries.append(value)
                # tf.keras 2 records a constant in the first argument as ["_CONSTANT_VALUE", -1, value]
                return value[2] if value[0] == "_CONSTANT_VALUE" else self.ref(*value[:3])
            if isinstance(value, dict) and value:
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)) and value:
                return [walk(v) for v in value]
            raise KgraftError(f"corrupt model config in {self.where}: bad inbound entry {value!r}")

        first = walk(node_data)
        while isinstance(first, list) and len(entries) == 1:
            first = first[0]
        if not isinstance(kwargs, dict):
            raise KgraftError(f"corrupt model config in {self.where}: call kwargs {kwargs!r} are not a dict")
        return [first], self.legacy_tree(kwargs)

    def legacy_tree(self, value: Any) -> Any:
        """tf.keras 2 kwargs: a tensor is a ``[layer, node, tensor]`` list (tf.keras's own test)."""
        if isinstance(value, dict):
            return {k: self.legacy_tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if len(value) in (3, 4) and isinstance(value[0], str):
                return self.ref(*value[:3])
            return [self.legacy_tree(v) for v in value]
        return value


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _endpoints(value: Any, what: str, model: str) -> list[ValueRef]:
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        value = [value]
    if isinstance(value, tuple):  # keras.Model(x, (a, b)) keeps the tuple in a live config
        value = list(value)
    if isinstance(value, dict):  # Keras 3 may key the outputs of a model with dict outputs;
        value = [value[k] for k in sorted(value)]  # model.outputs flattens them in sorted key order
    if not isinstance(value, list) or not all(
            isinstance(v, (list, tuple)) and len(v) == 3 and isinstance(v[0], str) and _is_index(v[1])
            and _is_index(v[2]) for v in value):
        raise KgraftError(f"corrupt model config: {what} of model {model!r} is {value!r} "
                          "(expected [layer name, node index, tensor index] triples)")
    return [ValueRef(Node.make_id(v[0], v[1]), v[2]) for v in value]


def _numbers_calls_from_one(entry: Any, legacy: bool) -> bool:
    """Whether the config refers to this layer's k-th call as node k+1.

    Keras counts a nested Functional model's "pre-existing node" (the call that built it):
    Keras 3 in ``output_layers`` only (``functional_from_config`` subtracts 1 again), tf.keras 2
    everywhere, for Sequential models with an input too (``_should_skip_first_node``).
    """
    if not isinstance(entry, dict) or not is_model_spec(entry):
        return False
    cfg = entry["config"]
    if "input_layers" in cfg:
        return True
    return legacy and bool(cfg["layers"]) and isinstance(cfg["layers"][0], dict) \
        and cfg["layers"][0].get("class_name") == INPUT_CLASS


def _lower_functional(cfg: dict, path: tuple[str, ...]) -> Graph:
    graph = Graph(cfg.get("name", "model"), "Functional")
    missing = [k for k in ("name", "input_layers", "output_layers") if k not in cfg]  # as Keras requires
    if missing:
        raise KgraftError(f"corrupt model config: Functional model {graph.name!r} has no {' or '.join(missing)}")
    decoder = _CallDecoder(f"model {graph.name!r}")
    pending: dict[str, Node] = {}
    legacy, nested = False, []  # whether any call is in the legacy format; the nested models' entries
    for entry in cfg["layers"]:
        layer = graph.add_layer(_make_layer(entry, path, functional=True))
        inbound = entry.get("inbound_nodes")
        if not isinstance(inbound, list):  # Keras requires the list, empty for an InputLayer
            raise KgraftError(f"corrupt model config: inbound_nodes of {layer.name!r} is not a list")
        if layer.body is not None:
            nested.append(entry)
        if layer.class_name == INPUT_CLASS:
            if any(not isinstance(n, list) for n in inbound):  # Keras would call the InputLayer on nothing
                raise KgraftError(f"corrupt model config: InputLayer {layer.name!r} has inbound nodes "
                                  f"{str(inbound)[:60]}; an input is called by nothing (inbound_nodes: [])")
            legacy = legacy or any(isinstance(n, list) for n in inbound)
            node = _input_node(layer)
            pending[node.id] = node
            continue
        for k, node_data in enumerate(inbound):
            legacy = legacy or isinstance(node_data, list)
            args, kwargs = decoder.call(node_data)
            node = Node(Node.make_id(layer.name, k), layer.name, k, args, kwargs, ())
            pending[node.id] = node
    from_one = {_layer_name(e, functional=True) for e in nested if _numbers_calls_from_one(e, legacy)}

    def shift(ref: ValueRef) -> ValueRef:
        layer, _, k = ref.node.rpartition("#")
        return ValueRef(Node.make_id(layer, int(k) - 1), ref.index) if layer in from_one and int(k) > 0 else ref

    if legacy and from_one:  # tf.keras 2 numbers a nested model's calls from 1 in inbound nodes too
        pending = {i: n.with_operands(shift) for i, n in pending.items()}
        decoder.types = {shift(r): t for r, t in decoder.types.items()}
    inputs = [r.node for r in _endpoints(cfg.get("input_layers", []), "input_layers", graph.name)]
    outputs = [shift(r) for r in _endpoints(cfg.get("output_layers", []), "output_layers", graph.name)]
    input_keys = sorted(cfg["input_layers"]) if isinstance(cfg.get("input_layers"), dict) else None
    keys = sorted(cfg["output_layers"]) if isinstance(cfg.get("output_layers"), dict) else None
    for ref in outputs:
        decoder.types.setdefault(ref, UNKNOWN)
    _add_in_dependency_order(graph, pending, decoder.types)
    for node_id in inputs:
        if node_id not in graph or graph.layer_of(node_id).class_name != INPUT_CLASS:
            raise KgraftError(f"corrupt model config: input {node_id!r} of {graph.name!r} is not an InputLayer")
    graph.set_inputs(inputs, input_keys)
    for ref in outputs:
        if ref.node not in graph:
            raise KgraftError(f"corrupt model config: output {ref.node!r} of {graph.name!r} is not defined")
    graph.set_outputs(outputs, keys)
    return graph


def _add_in_dependency_order(graph: Graph, pending: dict[str, Node], types: dict) -> None:
    """Keras lists a shared layer's calls together, before some of their inputs exist: sort them."""
    order = {node_id: i for i, node_id in enumerate(pending)}
    n_outputs: dict[str, int] = {}
    for ref in types:
        n_outputs[ref.node] = max(n_outputs.get(ref.node, 0), ref.index + 1)
    in_order = True
    for position, node in enumerate(pending.values()):
        for _, ref in node.operands():
            producer = order.get(ref.node)
            if producer is None:
                raise KgraftError(
                    f"corrupt model config: call site {node.id!r} of model {graph.name!r} uses "
                    f"{ref.node!r}, which the config does not define"
                )
            in_order = in_order and producer < position
    if in_order:
        # Every producer is listed before its users (no shared layer called out of order): the
        # lexicographical topological sort below would return the config order unchanged.
        ids = list(pending)
    else:
        deps = nx.DiGraph()
        deps.add_nodes_from(pending)
        deps.add_edges_from((ref.node, node.id) for node in pending.values() for _, ref in node.operands())
        try:
            ids = list(nx.lexicographical_topological_sort(deps, key=order.__getitem__))
        except nx.NetworkXUnfeasible:
            raise KgraftError(f"corrupt model config: the layers of {graph.name!r} form a cycle") from None
    for node_id in ids:
        node = pending[node_id]
        if not node.outputs:
            outs = tuple(types.get(ValueRef(node_id, i), UNKNOWN) for i in range(n_outputs.get(node_id, 1)))
            body = graph.layers[node.layer].body
            if body is not None and len(body.outputs) == len(outs):
                outs = tuple(t if t.known else body.value_type(b) for t, b in zip(outs, body.outputs))
            # ``node`` is this function's own until added: settle its types in place (a copy per
            # call site was a tenth of lowering a big config)
            object.__setattr__(node, "outputs", outs)
        graph.add_node(node)
