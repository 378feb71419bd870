"""Split planning for edge/cloud inference (what Neurosurgeon and DADS do).

The model runs on an *edge* device up to a cut, the tensors crossing the cut go over a link,
and a *server* computes the rest. End-to-end latency of one sample::

    edge_s + transfer_s + server_s
    edge_s     = sum of t(v) * edge_slowdown    over the call sites before the cut
    transfer_s = rtt_s + request_s + (8 / bandwidth_bps + per_byte_s) * (up + down)
                 + 8 * request_bytes / bandwidth_bps             (0 when nothing crosses)
    server_s   = sum of t(v) * server_slowdown  over the call sites after it

``up`` is the bytes crossing the cut, ``down`` the bytes of the model outputs computed on the
server, which come back to the edge (``results_to_edge``, as :class:`~kgraft.SplitRunner` does).
:class:`Overhead` is what the serving stack adds to each request on top of the link: a fixed
time, a time per tensor byte (serialisation, copies) and the protocol's own bytes (HTTP headers,
the v2 JSON header); ``kgraft.backends.serve.overhead.measure_overhead`` measures it against
``kgraft serve`` on loopback. Without it the planner underestimates every placement that sends.

``t(v)`` is the time of call site ``v`` on *this* machine: a measured profile when given,
else its FLOPs (:mod:`.costs`) divided by an assumed throughput (``flops_per_s``). "All on edge" and "all on server" (the inputs
cross) are candidates too.

Over a general DAG the best cut need not be a single tensor: :func:`min_cut_plan` finds the
optimal closed cut with one s-t minimum cut (DADS's formulation) on a flow network where

* ``source -> v`` costs ``v``'s server time (paid when ``v`` runs on the server),
  ``v -> sink`` its edge time (paid when it runs on the edge);
* each tensor is an extra node ``x``: ``producer -> x`` costs its transfer time and
  ``x -> consumer`` is infinite, so a tensor is paid once however many server-side users it has;
* ``consumer -> producer`` is infinite, so nothing computed on the server feeds the edge, and
  ``source -> input`` is infinite (the data starts on the edge).

Every candidate is then evaluated the way ``split`` would realise it (pass-through tensors
cross too), and :func:`rank_placements` returns them ranked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import networkx as nx

from ..ir import Graph, KgraftError, ValueRef
from .costs import graph_costs
from .cuts import cut_sides, require_flat, split_point_values

__all__ = ["PlanRow", "CostModel", "Overhead", "parse_bandwidth", "rank_placements", "min_cut_plan", "DEFAULT_FLOPS_PER_S"]

DEFAULT_FLOPS_PER_S = 50e9
"""A nominal CPU throughput, used only when no measured profile is given."""

_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_BANDWIDTH = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmgt]?)(bps|bit/s|b/s|bits/s|B/s|Bps)?\s*$",
                        re.IGNORECASE)


def parse_bandwidth(text: str | float) -> float:
    """Bits per second from ``"20Mbps"``, ``"1.5 Gbit/s"``, ``"500kbps"``, ``"10MB/s"`` (bytes), or a number."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _BANDWIDTH.match(text)
        if not m:
            raise KgraftError(f"bandwidth {text!r} is not understood; write e.g. 20Mbps, 1.5Gbit/s, 500kbps or 10MB/s")
        unit = m.group(3) or "bps"
        value = float(m.group(1)) * _UNITS[m.group(2).lower()] * (8 if unit in ("B/s", "Bps") else 1)
    if not value > 0 or math.isinf(value):
        raise KgraftError(f"bandwidth must be a positive number of bits per second, got {text!r}")
    return value


@dataclass(frozen=True)
class Overhead:
    """What one request costs beyond the link's rtt and bandwidth (see the module docstring)."""

    request_s: float = 0.0  # fixed seconds per request: client, HTTP, server framework
    per_byte_s: float = 0.0  # seconds per tensor byte sent or received: encoding, copies
    request_bytes: int = 0  # protocol bytes on the wire per request, both directions together

    def __post_init__(self):
        for what in ("request_s", "per_byte_s", "request_bytes"):
            value = getattr(self, what)
            if not (value >= 0 and math.isfinite(value)):
                raise KgraftError(f"plan: overhead {what} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class CostModel:
    """The devices and the link. Slowdowns are relative to this machine (8 = eight times slower)."""

    bandwidth_bps: float
    edge_slowdown: float = 1.0
    server_slowdown: float = 1.0
    rtt_s: float = 0.0
    flops_per_s: float = DEFAULT_FLOPS_PER_S
    compress: str | None = None  # "fp16" / "int8": float32 cut tensors cross in 2 / 1 bytes per value
    overhead: Overhead = Overhead()
    results_to_edge: bool = True  # the model outputs computed on the server are sent back

    def byte_s(self) -> float:
        """Seconds per tensor byte moved: the wire plus the stack's per-byte cost."""
        return 8 / self.bandwidth_bps + self.overhead.per_byte_s

    def transfer_s(self, nbytes: int, returned: int = 0) -> float:
        """One request sending ``nbytes`` and receiving ``returned`` (0 s when nothing is sent)."""
        if not nbytes:
            return 0.0
        fixed = self.rtt_s + self.overhead.request_s + 8 * self.overhead.request_bytes / self.bandwidth_bps
        return fixed + (nbytes + returned) * self.byte_s()


@dataclass(frozen=True)
class PlanRow:
    """One candidate placement and its predicted latency (seconds per sample)."""

    label: str
    method: str
    cut: tuple[str, ...]
    bytes_per_sample: int
    edge_s: float
    transfer_s: float
    server_s: float
    total_s: float
    bytes_returned: int = 0  # model outputs computed on the server, sent back (per sample)


def _node_seconds(graph: Graph, model: CostModel, profile: dict[str, float] | None) -> dict[str, float]:
    if profile is not None:
        return {n: float(profile.get(n, 0.0)) for n in graph.nx}
    flops = graph_costs(graph).flops
    return {n: flops[n] / model.flops_per_s for n in graph.nx}


_COMPRESSED_BYTES = {"fp16": 2, "int8": 1}


def _value_bytes(graph: Graph, value: ValueRef, compress: str | None = None) -> int:
    """Bytes per sample of ``value`` as it crosses a cut; ``compress`` shrinks float32 tensors
    computed before the cut that are not model outputs, as ``export_onnx(compress=...)`` does."""
    kind = graph.value_type(value)
    size = kind.bytes_per_sample
    if size is None:
        raise KgraftError(f"planning needs the size of every tensor, but {graph.value_name(value)!r} has type "
                          f"{kind}; give the model a fixed input shape (CLI: --input-shape)")
    if compress and kind.dtype == "float32" and value.node not in graph.inputs and value not in graph.outputs:
        return size // 4 * _COMPRESSED_BYTES[compress]
    return size


def _row(graph: Graph, model: CostModel, seconds: dict[str, float], label: str, method: str,
         upstream: set[str], crossing: list[ValueRef]) -> PlanRow:
    nbytes = sum(_value_bytes(graph, v, model.compress) for v in crossing)
    returned = sum(_returned_bytes(graph, model, upstream).values())
    edge = sum(seconds[n] for n in upstream) * model.edge_slowdown
    server = sum(seconds[n] for n in graph.nx if n not in upstream) * model.server_slowdown
    transfer = model.transfer_s(nbytes, returned)
    return PlanRow(label, method, tuple(graph.value_name(v) for v in crossing), nbytes,
                   edge, transfer, server, edge + transfer + server, returned)


def _returned_bytes(graph: Graph, model: CostModel, upstream: set[str] | None = None) -> dict[str, int]:
    """Bytes per sample of the model outputs each server-side call site sends back to the edge
    (every output producer when ``upstream`` is None); a model output computed on the edge stays."""
    returned: dict[str, int] = {}
    if not model.results_to_edge:
        return returned
    for value in dict.fromkeys(graph.outputs):
        if value.node not in graph.inputs and (upstream is None or value.node not in upstream):
            returned[value.node] = returned.get(value.node, 0) + _value_bytes(graph, value)
    return returned


def min_cut_plan(graph: Graph, model: CostModel, seconds: dict[str, float]) -> set[str]:
    """The call sites to run on the edge in the latency-optimal closed cut of a flat, pruned graph."""
    flow = nx.DiGraph()
    source, sink = ("^edge",), ("^server",)
    inputs = set(graph.inputs)
    returned = _returned_bytes(graph, model)  # paid when the producer runs on the server
    for n in graph.nx:
        if n in inputs:
            flow.add_edge(source, n)  # no capacity: infinite (the data starts on the edge)
        else:
            flow.add_edge(source, n, capacity=seconds[n] * model.server_slowdown + returned.get(n, 0) * model.byte_s())
            flow.add_edge(n, sink, capacity=seconds[n] * model.edge_slowdown)
    for producer, consumer, out in graph.nx.edges(data="out"):
        value = ("^value", producer, out)
        if not flow.has_edge(producer, value):
            flow.add_edge(producer, value, capacity=_value_bytes(graph, ValueRef(producer, out), model.compress)
                          * model.byte_s())
        flow.add_edge(value, consumer)
        flow.add_edge(consumer, producer)
    _, (edge_side, _) = nx.minimum_cut(flow, source, sink)
    return {n for n in edge_side if n in graph.nx}


def rank_placements(flat: Graph, bandwidth_bps: float, edge_slowdown: float = 1.0, server_slowdown: float = 1.0,
               rtt_s: float = 0.0, flops_per_s: float = DEFAULT_FLOPS_PER_S,
               profile: dict[str, float] | None = None, compress: str | None = None,
               overhead: Overhead | None = None, results_to_edge: bool = True) -> list[PlanRow]:
    """Every candidate (all on edge, all on server, each split point, the min-cut), best first,
    for a flat and pruned graph (:func:`kgraft.passes.rank_placements` inlines and prunes any graph).

    ``profile`` maps call-site ids of the flat graph to seconds on this machine (measured);
    without it, FLOPs / ``flops_per_s`` estimate them. ``compress`` ("fp16"/"int8") counts the
    cut tensors as ``export_onnx(compress=...)`` sends them. ``overhead`` is the serving stack's
    cost per request (:class:`Overhead`); ``results_to_edge=False`` when the server keeps them.
    """
    if compress not in (None, *_COMPRESSED_BYTES):
        raise KgraftError(f"plan: unknown compress={compress!r}; use 'fp16', 'int8' or None")
    if overhead is not None and not isinstance(overhead, Overhead):
        raise KgraftError(f"plan: overhead must be a kgraft.analysis.placement.Overhead (measure one with "
                          f"kgraft.backends.serve.overhead.measure_overhead()), got {type(overhead).__name__}")
    model = CostModel(parse_bandwidth(bandwidth_bps), edge_slowdown, server_slowdown, rtt_s, flops_per_s, compress,
                      overhead or Overhead(), bool(results_to_edge))
    for what, value in (("edge_slowdown", edge_slowdown), ("server_slowdown", server_slowdown),
                        ("flops_per_s", flops_per_s)):
        if not value > 0:
            raise KgraftError(f"plan: {what} must be positive, got {value!r}")
    if rtt_s < 0:
        raise KgraftError(f"plan: rtt_s must not be negative, got {rtt_s!r}")
    require_flat(flat, "rank_placements")
    seconds = _node_seconds(flat, model, profile)
    every = set(flat.nx)
    rows = {(): _row(flat, model, seconds, "all on edge", "all on edge", every, [])}
    server_only = _row(flat, model, seconds, "all on server", "all on server", set(flat.inputs), flat.input_refs())
    rows[server_only.cut] = server_only
    for point in split_point_values(flat):
        upstream, crossing = cut_sides(flat, [point], flat.value_name(point))
        row = _row(flat, model, seconds, flat.value_name(point), "split point", upstream, crossing)
        rows.setdefault(row.cut, row)
    edge_side = min_cut_plan(flat, model, seconds)
    if edge_side in (every, set(flat.inputs)):
        key = () if edge_side == every else server_only.cut
        rows[key] = replace(rows[key], method=rows[key].method + ", min-cut")
    else:
        cut = sorted({ValueRef(p, out) for p, c, out in flat.nx.edges(data="out")
                      if p in edge_side and c not in edge_side}, key=_topo_key(flat))
        upstream, crossing = cut_sides(flat, cut, ", ".join(flat.value_name(v) for v in cut))
        row = _row(flat, model, seconds, ", ".join(flat.value_name(v) for v in crossing), "min-cut",
                   upstream, crossing)
        if row.cut in rows:
            rows[row.cut] = replace(rows[row.cut], method=rows[row.cut].method + ", min-cut")
        else:
            rows[row.cut] = row
    return sorted(rows.values(), key=lambda r: (r.total_s, r.label))


def _topo_key(graph: Graph):
    order = {n: i for i, n in enumerate(graph.topological_ids())}
    return lambda v: (order[v.node], v.index)
