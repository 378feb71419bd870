"""The graph IR: call sites of Keras layers connected by tensors, on networkx.

* A :class:`Layer` owns weights and a config. A layer called twice (a shared, Siamese layer)
  is one ``Layer`` with two call sites.
* A :class:`Node` is one *call site* ``layer#k`` (as Keras's own ``Node``): its arguments as a
  tree whose tensor leaves are :class:`ValueRef` s, and the types of the tensors it returns.
* Edges are tensors: producer -> consumer with ``out`` (which output of the producer) and
  ``pos`` (where in the consumer's arguments). They are stored as each call site's operands
  (and, on demand, an index of uses); :attr:`Graph.nx` shows them as a ``networkx.MultiDiGraph``.
* A nested model is one ``Layer`` whose ``body`` is a ``Graph``; inlining it is a pass.
* ``inputs`` are the ``InputLayer`` call sites in order; ``outputs`` are ValueRefs in order.

Nodes and layers are frozen: a rewrite replaces them, so a graph is changed only through its
methods, which bump ``version`` (the pass manager uses it to prove passes left inputs alone).
The IR imports no TensorFlow; ``Layer.handle`` is an opaque pointer to the source layer whose
weights a backend copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx

from .errors import VerificationError
from .tree import ValueRef, iter_refs, map_refs
from .types import UNKNOWN, TensorType

__all__ = ["ValueRef", "Layer", "Node", "Graph", "INPUT_CLASS", "nested_call_inputs", "partitions_of",
           "RECORDED_TRAINING_WINS", "recorded_training_wins"]

INPUT_CLASS = "InputLayer"


@dataclass(frozen=True, slots=True)
class Layer:
    """A weight owner. ``spec`` is its Keras serialization minus name and call data.

    ``path`` is where the layer lives in the source model (``("vgg16", "block5_conv3")``), so it
    stays addressable as ``vgg16/block5_conv3`` after inlining and renaming.
    """

    name: str
    class_name: str
    spec: dict = field(default_factory=dict, compare=False)
    path: tuple[str, ...] = ()
    handle: Any = field(default=None, compare=False, repr=False)
    body: "Graph | None" = field(default=None, compare=False, repr=False)
    # surgery: how to compute this layer's weights from the handle's (kgraft.ir.weight_plan)
    weight_plan: tuple = field(default=(), compare=False, repr=False)

    @property
    def config(self) -> dict:
        return self.spec.get("config", {})

    @property
    def qualified_name(self) -> str:
        return "/".join(self.path) if self.path else self.name


@dataclass(frozen=True, slots=True)
class Node:
    """One call of a layer: ``outputs = layer(*args, **kwargs)``."""

    id: str
    layer: str
    call_index: int
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    outputs: tuple[TensorType, ...] = (UNKNOWN,)
    # Found once: linking, verifying and every analysis read the operands of every call site.
    _operands: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_operands",
                           tuple(iter_refs(self.args, ("args",)) + iter_refs(self.kwargs, ("kwargs",))))

    def operands(self) -> Iterator[tuple[tuple, ValueRef]]:
        """``(path, ref)`` for every tensor argument, positional first."""
        return iter(self._operands)

    def with_operands(self, fn, layer: str | None = None, call_index: int | None = None) -> "Node":
        """A copy with every operand ``ref`` replaced by ``fn(ref)``, optionally as another call
        (``layer#call_index``). When ``fn`` maps refs to refs, the operand list is mapped rather
        than searched for again in the new arguments."""
        layer = self.layer if layer is None else layer
        k = self.call_index if call_index is None else call_index
        args, kwargs = map_refs(self.args, fn), map_refs(self.kwargs, fn)
        operands = tuple((path, fn(ref)) for path, ref in self._operands)
        if not all(isinstance(ref, ValueRef) for _, ref in operands):
            return Node(Node.make_id(layer, k), layer, k, args, kwargs, self.outputs)
        new, init = object.__new__(Node), object.__setattr__  # frozen: set once, here
        init(new, "id", Node.make_id(layer, k))
        init(new, "layer", layer)
        init(new, "call_index", k)
        init(new, "args", args)
        init(new, "kwargs", kwargs)
        init(new, "outputs", self.outputs)
        init(new, "_operands", operands)
        return new

    @staticmethod
    def make_id(layer: str, call_index: int) -> str:
        return f"{layer}#{call_index}"



class Graph:
    """A Keras model as a DAG of call sites. See the module docstring for the invariants.

    Storage is a dict of call sites in the order they were added, not a networkx graph: adding,
    copying and walking it cost a dict operation per call site, where networkx's own
    bookkeeping (attribute dicts per node and edge, views) dominated every pass on a big graph.
    Adding a call site requires its producers to exist, so the storage order is topological
    unless :meth:`replace_node` made a call site use a later one; until then
    :meth:`topological_ids` needs no sort (``_ordered``). The users of each value are indexed on
    first need and kept current from then on; :attr:`nx` is built on first use and cached until
    the graph changes.
    """

    def __init__(self, name: str = "model", kind: str = "Functional"):
        self.name = name
        self.kind = kind  # "Functional" or "Sequential": how the source model was declared
        self.layers: dict[str, Layer] = {}
        self.inputs: list[str] = []
        self.outputs: list[ValueRef] = []
        self.meta: dict[str, Any] = {}  # opaque, shared by copies: source model, custom_objects
        # names of nested models inlined away -> {call index: their output values}, so that a ref
        # to a nested model's own output still resolves after inlining (see kgraft.ir.refs)
        self.aliases: dict[str, dict[int, list[ValueRef]]] = {}
        # a model whose inputs / outputs are a dict (Keras 3): its keys, in the order of ``inputs`` /
        # ``outputs``
        self.input_keys: list[str] | None = None
        self.output_keys: list[str] | None = None
        # the values that carry a Keras mask (padding), with the mask's type: Keras propagates
        # masks implicitly on tensors, so a pass that cuts between tensors must know them
        self.masks: dict[ValueRef, TensorType] = {}
        self._nodes: dict[str, Node] = {}
        self._seq: dict[str, int] = {}  # when each call site was added
        self._relinked: dict[str, int] = {}  # when replace_node last re-linked one (same clock)
        self._next_seq = 0
        self._ordered = True
        self._calls: dict[str, list[str]] = {}
        self._uses: dict[str, list[tuple[str, int, tuple]]] | None = None  # producer -> (user, out, pos)
        self._topo: list[str] | None = None
        self._nx: nx.MultiDiGraph | None = None
        self.version = 0

    # ------------------------------------------------------------------ construction
    def _touch(self) -> None:
        self.version += 1
        self._topo = None
        self._nx = None

    def add_layer(self, layer: Layer) -> Layer:
        if layer.name in self.layers and self.layers[layer.name] is not layer:
            raise VerificationError(f"layer name {layer.name!r} is already used in model {self.name!r}")
        self.layers[layer.name] = layer
        self._calls.setdefault(layer.name, [])
        self._touch()
        return layer

    def set_layer(self, layer: Layer) -> None:
        """Replace the layer of the same name (e.g. with a new body or handle)."""
        if layer.name not in self.layers:
            raise VerificationError(f"no layer {layer.name!r} to replace in model {self.name!r}")
        self.layers[layer.name] = layer
        self._touch()

    def add_node(self, node: Node) -> Node:
        if node.id in self._nodes:
            raise VerificationError(f"call site {node.id!r} is defined twice in model {self.name!r}")
        if node.layer not in self.layers:
            raise VerificationError(f"call site {node.id!r} calls unknown layer {node.layer!r}")
        self._check_operands(node)
        self._nodes[node.id] = node
        self._seq[node.id] = self._next_seq
        self._next_seq += 1
        self._index_uses(node)
        calls = self._calls[node.layer]
        calls.append(node.id)
        # ``calls`` is kept sorted by call index: re-sort only when the new call is out of order
        # (re-sorting on every add made adding k calls of one shared layer O(k^2)).
        if len(calls) > 1 and self._nodes[calls[-2]].call_index > node.call_index:
            calls.sort(key=lambda i: self._nodes[i].call_index)
        self._touch()
        return node

    def _check_operands(self, node: Node) -> None:
        for _, ref in node.operands():
            if ref.node not in self._nodes:
                raise VerificationError(
                    f"call site {node.id!r} uses {ref.node!r}, which is not defined before it"
                )

    def _index_uses(self, node: Node) -> None:
        if self._uses is not None:
            for path, ref in node.operands():
                self._uses.setdefault(ref.node, []).append((node.id, ref.index, path))

    def _unindex_uses(self, node: Node) -> None:
        if self._uses is not None:
            for producer in {ref.node for _, ref in node.operands()}:
                self._uses[producer] = [u for u in self._uses.get(producer, ()) if u[0] != node.id]

    def replace_node(self, node: Node) -> None:
        """Swap in a new version of an existing call site (same id), re-linking its operands."""
        if node.id not in self._nodes:
            raise VerificationError(f"no call site {node.id!r} to replace")
        self._check_operands(node)
        self._unindex_uses(self._nodes[node.id])
        self._nodes[node.id] = node
        self._index_uses(node)
        seq = self._seq
        if any(seq[ref.node] >= seq[node.id] for _, ref in node.operands()):
            self._ordered = False  # it uses a later call site: the storage order is no longer topological
        self._relinked[node.id] = self._next_seq
        self._next_seq += 1
        self._touch()

    def remove_nodes(self, node_ids: Iterable[str]) -> None:
        """Remove call sites; none may still be used by a call site that stays."""
        doomed = set(node_ids)
        # without an index of uses, one scan of the operands of what stays finds any violation
        if self._uses is not None or any(ref.node in doomed for node_id, node in self._nodes.items()
                                         if node_id not in doomed for _, ref in node.operands()):
            for node_id in doomed:
                kept_users = self.users(node_id) - doomed
                if kept_users:
                    raise VerificationError(f"cannot remove {node_id!r}: still used by {sorted(kept_users)}")
        for layer in {self.node(node_id).layer for node_id in doomed}:
            self._calls[layer] = [i for i in self._calls[layer] if i not in doomed]
        for node_id in doomed:
            self._unindex_uses(self._nodes.pop(node_id))
            del self._seq[node_id]
            self._relinked.pop(node_id, None)
            if self._uses is not None:
                self._uses.pop(node_id, None)
        if self.input_keys is not None:
            self.input_keys = [k for i, k in zip(self.inputs, self.input_keys) if i not in doomed]
        self.inputs = [i for i in self.inputs if i not in doomed]
        self._touch()

    def remove_unused_layers(self) -> None:
        for name in [n for n, calls in self._calls.items() if not calls]:
            del self.layers[name], self._calls[name]
        self._touch()

    def replace_all_uses(self, old: ValueRef, new: ValueRef) -> None:
        """Make every consumer of ``old`` (and the graph outputs) use ``new`` instead."""
        for user in sorted(self.users(old.node)):
            self.replace_node(self.node(user).with_operands(lambda r: new if r == old else r))
        self.outputs = [new if r == old else r for r in self.outputs]
        self._touch()

    def set_outputs(self, outputs: Iterable[ValueRef], keys: list[str] | None = None) -> None:
        """New outputs; ``keys`` names them when the model returns a dict (other outputs drop
        the old keys, which no longer apply)."""
        self.outputs = list(outputs)
        if keys is not None and len(keys) != len(self.outputs):
            raise VerificationError(f"{len(keys)} output keys for {len(self.outputs)} outputs of {self.name!r}")
        self.output_keys = None if keys is None else list(keys)
        self._touch()

    def set_inputs(self, inputs: Iterable[str], keys: list[str] | None = None) -> None:
        """New inputs; ``keys`` names them when the model takes a dict (as for ``set_outputs``)."""
        self.inputs = list(inputs)
        if keys is not None and len(keys) != len(self.inputs):
            raise VerificationError(f"{len(keys)} input keys for {len(self.inputs)} inputs of {self.name!r}")
        self.input_keys = None if keys is None else list(keys)
        self._touch()

    # ------------------------------------------------------------------ queries
    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The graph as a networkx ``MultiDiGraph``: call-site ids with node attrs ``node`` and
        ``seq``, one edge per tensor use with attrs ``out`` and ``pos``. Built on first use and
        cached until the graph changes: read it, do not edit it."""
        if self._nx is None:
            self._nx = _as_networkx(self)
        return self._nx

    def node(self, node_id: str) -> Node:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise VerificationError(f"no call site {node_id!r} in model {self.name!r}") from None

    def nodes(self) -> list[Node]:
        """All call sites in a fixed topological order (ties broken by insertion order)."""
        nodes = self._nodes
        return [nodes[i] for i in self.topological_ids()]

    def topological_ids(self) -> list[str]:
        if self._topo is None:
            if self._ordered:
                self._topo = list(self._nodes)
            else:
                self._topo = list(nx.lexicographical_topological_sort(self.nx, key=self._seq.__getitem__))
        return self._topo

    def uses(self, node_id: str) -> list[tuple[str, int, tuple]]:
        """``(user, output index, argument path)`` for every use of a value of ``node_id``."""
        return self._use_index().get(node_id, [])

    def _use_index(self) -> dict[str, list[tuple[str, int, tuple]]]:
        if self._uses is None:
            # in the order call sites were last linked, so that each value's uses are listed as
            # if kept current all along (as networkx's successor order would be)
            relinked, seq, nodes = self._relinked, self._seq, self._nodes
            order = sorted(nodes, key=lambda i: relinked.get(i, seq[i])) if relinked else nodes
            uses: dict[str, list[tuple[str, int, tuple]]] = {}
            for user in order:
                for path, ref in nodes[user]._operands:
                    entry = (user, ref.index, path)
                    listed = uses.get(ref.node)
                    if listed is None:
                        uses[ref.node] = [entry]
                    else:
                        listed.append(entry)
            self._uses = uses
        return self._uses

    def users(self, node_id: str) -> set[str]:
        return {user for user, _, _ in self.uses(node_id)}

    def reach(self, node_ids: Iterable[str], *, forward: bool = True) -> set[str]:
        """``node_ids`` and every call site that depends on one (``forward``) or that one depends
        on (backward): one linear walk for any number of starting points."""
        seen = set(node_ids)
        stack = list(seen)
        if forward:
            uses = self._use_index()
            while stack:
                for user, _, _ in uses.get(stack.pop(), ()):
                    if user not in seen:
                        seen.add(user)
                        stack.append(user)
        else:
            nodes = self._nodes
            while stack:
                for _, ref in nodes[stack.pop()]._operands:
                    if ref.node not in seen:
                        seen.add(ref.node)
                        stack.append(ref.node)
        return seen

    def call_sites(self, layer_name: str) -> list[Node]:
        """The call sites of one layer, ordered by call index."""
        return [self._nodes[i] for i in self._calls.get(layer_name, [])]

    def layer_of(self, node_id: str) -> Layer:
        return self.layers[self.node(node_id).layer]

    def value_type(self, ref: ValueRef) -> TensorType:
        outputs = self.node(ref.node).outputs
        return outputs[ref.index] if ref.index < len(outputs) else UNKNOWN

    def value_name(self, ref: ValueRef) -> str:
        """The ref that names this value: ``layer``, ``layer@k`` (shared), ``layer:i`` (multi-output)."""
        node = self.node(ref.node)
        name = node.layer
        if len(self._calls[node.layer]) > 1:
            name += f"@{node.call_index}"
        if len(node.outputs) > 1:
            name += f":{ref.index}"
        return name

    def input_refs(self) -> list[ValueRef]:
        return [ValueRef(i, 0) for i in self.inputs]

    # ------------------------------------------------------------------ whole-graph
    def copy(self) -> "Graph":
        """A copy that can be changed freely. Nodes, layers and bodies are immutable, so shared."""
        new = Graph(self.name, self.kind)
        new.layers = dict(self.layers)
        new.inputs = list(self.inputs)
        new.outputs = list(self.outputs)
        new.meta = self.meta
        new.aliases = dict(self.aliases)
        new.input_keys = self.input_keys
        new.output_keys = self.output_keys
        new.masks = dict(self.masks)
        new._nodes = dict(self._nodes)
        new._seq = dict(self._seq)
        new._relinked = dict(self._relinked)
        new._next_seq = self._next_seq
        new._ordered = self._ordered
        new._calls = {k: v.copy() for k, v in self._calls.items()}
        return new

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<kgraft.ir.Graph @{self.name}: {len(self)} call sites, {len(self.layers)} layers>"


def _as_networkx(graph: Graph) -> nx.MultiDiGraph:
    """The networkx form of ``graph``, filled in directly as networkx's own graph views are
    (``_node``/``_succ``/``_pred``): adding nodes and edges one by one through its API cost more
    than any pass. Successors are in order of use and predecessors in operand order, as
    ``add_edge`` in that order would leave them."""
    g = nx.MultiDiGraph()
    g._node = {node_id: {"node": node, "seq": graph._seq[node_id]} for node_id, node in graph._nodes.items()}
    succ: dict[str, dict] = {node_id: {} for node_id in graph._nodes}
    pred: dict[str, dict] = {node_id: {} for node_id in graph._nodes}
    for node_id in graph._nodes:
        for user, out, path in graph.uses(node_id):
            keys = succ[node_id].get(user)
            if keys is None:
                keys = succ[node_id][user] = {}
            keys[len(keys)] = {"out": out, "pos": path}
    for node_id, node in graph._nodes.items():
        for _, ref in node.operands():
            pred[node_id].setdefault(ref.node, succ[ref.node][node_id])
    g._succ = succ
    g._pred = pred
    return g


def nested_call_inputs(node: Node, body: Graph) -> list:
    """The values a call of a nested model passes to each of ``body``'s inputs, in order (``None``
    where it passes none): its first argument (positional or ``inputs=``), matched by input name
    when it is a dict, else flattened in order, as Keras's ``Functional`` binds them."""
    first = node.args[0] if node.args else node.kwargs.get("inputs")
    inputs = body.input_refs()
    if isinstance(first, dict):
        keys = body.input_keys or [body.node(r.node).layer for r in inputs]
        return [first.get(k) if isinstance(first.get(k), ValueRef) else None for k in keys]
    flat = [ref for _, ref in iter_refs(first)] if first is not None else []
    if len(node.args) > 1 and len(flat) < len(inputs):  # tf.keras 2 style: one positional arg per input
        flat = [ref for _, ref in iter_refs(node.args)]
    return flat if len(flat) == len(inputs) else flat + [None] * (len(inputs) - len(flat))


def partitions_of(graph: Graph) -> list[Graph] | None:
    """The partitions of a graph that the ``split`` pass returned (its top level calls nested
    graphs ``part0 .. partN`` in order, nothing else), or ``None`` for any other graph."""
    calls = [node for node in graph.nodes() if node.id not in graph.inputs]
    if not calls or any(node.layer != f"part{i}" or graph.layers[node.layer].body is None
                        for i, node in enumerate(calls)):
        return None
    return [graph.layers[node.layer].body for node in calls]


# ``graph.meta`` key, true for a graph whose calls follow tf.keras 2's training rule: a ``training``
# recorded at a call site wins over the mode the model is called in (``base(x, training=False)``
# keeps ``base`` in inference under ``model(x, training=True)``), and a nested model's reaches the
# layers inside it that record none. Keras 3's rule (absent): the caller's mode wins, as its
# Functional passes its own ``training`` to every operation. The rule is the library's that runs
# the source, not its config format's: a tf.keras 2 ``.h5`` file loaded by Keras 3 runs by Keras 3's.
RECORDED_TRAINING_WINS = "recorded_training_wins"


def recorded_training_wins(graph: Graph) -> bool:
    """Whether ``graph``'s calls follow tf.keras 2's training rule (:data:`RECORDED_TRAINING_WINS`)."""
    return bool(graph.meta.get(RECORDED_TRAINING_WINS))
