"""The graph IR: call sites of Keras layers connected by tensors, on networkx.

* A :class:`Layer` owns weights and a config. A layer called twice (a shared, Siamese layer)
  is one ``Layer`` with two call sites.
* A :class:`Node` is one *call site* ``layer#k`` (as Keras's own ``Node``): its arguments as a
  tree whose tensor leaves are :class:`ValueRef` s, and the types of the tensors it returns.
* Edges of the underlying ``networkx.MultiDiGraph`` are tensors: producer -> consumer with
  ``out`` (which output of the producer) and ``pos`` (where in the consumer's arguments).
* A nested model is one ``Layer`` whose ``body`` is a ``Graph``; inlining it is a pass.
* ``inputs`` are the ``InputLayer`` call sites in order; ``outputs`` are ValueRefs in order.

Nodes and layers are frozen: a rewrite replaces them, so a graph is changed only through its
methods, which bump ``version`` (the pass manager uses it to prove passes left inputs alone).
The IR imports no TensorFlow; ``Layer.handle`` is an opaque pointer to the source layer whose
weights a backend copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import networkx as nx

from .errors import VerificationError
from .tree import ValueRef, iter_refs, map_refs
from .types import UNKNOWN, TensorType

__all__ = ["ValueRef", "Layer", "Node", "Graph", "INPUT_CLASS"]

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

    def with_operands(self, fn) -> "Node":
        """A copy with every operand ``ref`` replaced by ``fn(ref)``."""
        return replace(self, args=map_refs(self.args, fn), kwargs=map_refs(self.kwargs, fn))

    @staticmethod
    def make_id(layer: str, call_index: int) -> str:
        return f"{layer}#{call_index}"


class Graph:
    """A Keras model as a DAG of call sites. See the module docstring for the invariants.

    Call sites are stored in the networkx graph in the order they were added (``seq``). Adding a
    call site requires its producers to exist, so that order is topological unless
    :meth:`replace_node` made a call site use a later one; until then :meth:`topological_ids` is
    the storage order and needs no sort (``_ordered``).
    """

    def __init__(self, name: str = "model", kind: str = "Functional"):
        self.name = name
        self.kind = kind  # "Functional" or "Sequential": how the source model was declared
        self.layers: dict[str, Layer] = {}
        self.inputs: list[str] = []
        self.outputs: list[ValueRef] = []
        self.meta: dict[str, Any] = {}  # opaque, shared by copies: source model, custom_objects
        self._g = nx.MultiDiGraph()
        self._next_seq = 0
        self._ordered = True
        self._calls: dict[str, list[str]] = {}
        self._topo: list[str] | None = None
        self.version = 0

    # ------------------------------------------------------------------ construction
    def _touch(self) -> None:
        self.version += 1
        self._topo = None

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
        if node.id in self._g._node:
            raise VerificationError(f"call site {node.id!r} is defined twice in model {self.name!r}")
        if node.layer not in self.layers:
            raise VerificationError(f"call site {node.id!r} calls unknown layer {node.layer!r}")
        self._g.add_node(node.id, node=node, seq=self._next_seq)
        self._next_seq += 1
        self._link(node)
        calls = self._calls[node.layer]
        calls.append(node.id)
        # ``calls`` is kept sorted by call index: re-sort only when the new call is out of order
        # (re-sorting on every add made adding k calls of one shared layer O(k^2)).
        if len(calls) > 1 and self.node(calls[-2]).call_index > node.call_index:
            calls.sort(key=lambda i: self.node(i).call_index)
        self._touch()
        return node

    def _link(self, node: Node) -> None:
        for path, ref in node.operands():
            if ref.node not in self._g._node:
                raise VerificationError(
                    f"call site {node.id!r} uses {ref.node!r}, which is not defined before it"
                )
            self._g.add_edge(ref.node, node.id, out=ref.index, pos=path)

    def replace_node(self, node: Node) -> None:
        """Swap in a new version of an existing call site (same id), re-linking its operands."""
        if node.id not in self._g._node:
            raise VerificationError(f"no call site {node.id!r} to replace")
        self._g.remove_edges_from(list(self._g.in_edges(node.id, keys=True)))
        # a new attribute dict, never an edit: copies of the graph share these dicts
        seq = self._g._node[node.id]["seq"]
        self._g._node[node.id] = {"node": node, "seq": seq}
        self._link(node)
        if any(self._g._node[ref.node]["seq"] > seq for _, ref in node.operands()):
            self._ordered = False  # it uses a later call site: the storage order is no longer topological
        self._touch()

    def remove_nodes(self, node_ids: Iterable[str]) -> None:
        """Remove call sites; none may still be used by a call site that stays."""
        doomed = set(node_ids)
        for node_id in doomed:
            kept_users = self.users(node_id) - doomed
            if kept_users:
                raise VerificationError(f"cannot remove {node_id!r}: still used by {sorted(kept_users)}")
        for layer in {self.node(node_id).layer for node_id in doomed}:
            self._calls[layer] = [i for i in self._calls[layer] if i not in doomed]
        self._g.remove_nodes_from(doomed)
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

    def set_outputs(self, outputs: Iterable[ValueRef]) -> None:
        self.outputs = list(outputs)
        self._touch()

    def set_inputs(self, inputs: Iterable[str]) -> None:
        self.inputs = list(inputs)
        self._touch()

    # ------------------------------------------------------------------ queries
    def __contains__(self, node_id: object) -> bool:
        return node_id in self._g._node

    def __len__(self) -> int:
        return len(self._g._node)

    @property
    def nx(self) -> nx.MultiDiGraph:
        """The networkx graph (call-site ids; node attr ``node``). Read it, do not edit it."""
        return self._g

    def node(self, node_id: str) -> Node:
        try:
            return self._g._node[node_id]["node"]
        except KeyError:
            raise VerificationError(f"no call site {node_id!r} in model {self.name!r}") from None

    def nodes(self) -> list[Node]:
        """All call sites in a fixed topological order (ties broken by insertion order)."""
        attrs = self._g._node
        return [attrs[i]["node"] for i in self.topological_ids()]

    def topological_ids(self) -> list[str]:
        if self._topo is None:
            if self._ordered:
                self._topo = list(self._g._node)
            else:
                seq = nx.get_node_attributes(self._g, "seq")
                self._topo = list(nx.lexicographical_topological_sort(self._g, key=seq.__getitem__))
        return self._topo

    def users(self, node_id: str) -> set[str]:
        return set(self._g._succ[node_id])

    def call_sites(self, layer_name: str) -> list[Node]:
        """The call sites of one layer, ordered by call index."""
        return [self.node(i) for i in self._calls.get(layer_name, [])]

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
        new._g = _copy_structure(self._g)
        new._next_seq = self._next_seq
        new._ordered = self._ordered
        new._calls = {k: v.copy() for k, v in self._calls.items()}
        return new

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"<kgraft.ir.Graph @{self.name}: {len(self)} call sites, {len(self.layers)} layers>"


def _copy_structure(g: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """``g.copy()`` at a fraction of the cost (``MultiDiGraph.copy`` re-adds every node and edge
    through the public API, the largest cost of a pass on a big graph).

    The attribute dicts of call sites and edges are shared: :class:`Graph` never edits one (it
    replaces a call site's dict), and only the adjacency dicts, which removals do change, are new.
    Assigning ``_node``/``_succ``/``_pred`` is how networkx's own graph views are built.
    """
    new = nx.MultiDiGraph()
    new.graph.update(g.graph)
    new._node = dict(g._node)
    succ = {u: {v: dict(keys) for v, keys in nbrs.items()} for u, nbrs in g._succ.items()}
    new._succ = succ
    new._pred = {v: {u: succ[u][v] for u in nbrs} for v, nbrs in g._pred.items()}
    return new
