"""The Keras-level functions: each lowers the model, runs passes, and builds new models.

Every function accepts a ``keras.Model`` or a path to a ``.keras``/``.h5`` file (plus
``custom_objects``), returns new models whose weights are copied from the argument, and never
mutates the argument. Those that return models check them first (``check=True``, see
:mod:`kgraft.equivalence`): a result that computes something else raises ``EquivalenceError``.
"""

from __future__ import annotations

from typing import Any

from . import passes
from .backends.keras import build, build_partitions, lower
from .backends.keras.applied import lower_applied
from .equivalence import check_model, check_split
from .ir import KgraftError, ValueRef
from .ir.refs import resolve
from .passes.extract import inline_if_needed

__all__ = ["flatten", "extract", "split_points", "split", "add_head", "downstream", "cut_costs", "plan"]


def flatten(model, custom_objects: dict | None = None, check: bool = True):
    """Inline every nested model; same inputs, outputs and numbers."""
    graph = lower(model, custom_objects)
    result = build(passes.inline_nested(graph))
    if check:
        check_model(graph.meta["source"], result, graph=graph, what="flatten")
    return result


def extract(model, outputs, inputs=None, custom_objects: dict | None = None, check: bool = True):
    """Sub-model from ``inputs`` (refs; default: the model's inputs) to ``outputs`` (ref or refs)."""
    outs = [outputs] if isinstance(outputs, str) else list(outputs)
    ins = [inputs] if isinstance(inputs, str) else inputs
    graph = lower(model, custom_objects)
    sub = passes.extract(graph, outputs=outs, inputs=ins)
    result = build(sub)
    if check:
        kept = ins if ins is not None else [sub.value_name(ValueRef(i)) for i in sub.inputs]  # model inputs
        check_model(graph.meta["source"], result, inputs=kept, outputs=outs, graph=graph, what="extract")
    return result


def split_points(model, custom_objects: dict | None = None) -> list[str]:
    """Every ref where a single-tensor split is valid, in topological order."""
    return passes.split_points(lower(model, custom_objects))


def split(model, at, custom_objects: dict | None = None, check: bool = True) -> list:
    """``len(cuts) + 1`` models that compose back to ``model`` (see :mod:`kgraft.passes.split`)."""
    graph = lower(model, custom_objects)
    parts = build_partitions(passes.split(graph, at=at))
    if check:
        check_split(graph.meta["source"], parts, graph=graph, what="split")
    return parts


def add_head(model, at: str, head: Any, name: str | None = None, custom_objects: dict | None = None,
             check: bool = True):
    """Attach ``head`` (a layer, a list of layers, or a callable on a KerasTensor) to tensor ``at``.

    The result's outputs are the model's outputs followed by the head's (which are not checked:
    the source has no counterpart).
    """
    source = lower(model, custom_objects)
    graph = inline_if_needed(source, [at])
    head_graph = lower_applied(head, [graph.value_type(resolve(graph, at))], "add_head", "head")
    result = build(passes.add_head(graph, at=at, head=head_graph, model_name=name))
    if check:
        kept = [graph.value_name(v) for v in graph.outputs]
        check_model(source.meta["source"], result, outputs=kept + [None] * (len(result.outputs) - len(kept)),
                    graph=source, what="add_head")
    return result


def downstream(model, ref: str, custom_objects: dict | None = None) -> list[str]:
    """Names of all layers whose output depends on ``ref``, in topological order."""
    return passes.downstream(lower(model, custom_objects), ref)


def cut_costs(model, cuts=None, custom_objects: dict | None = None) -> list:
    """Bytes crossing, parameters and FLOPs before/after every split point (or each cut given).

    See :mod:`kgraft.analysis.costs`; ``cuts`` is a list of cuts as ``split`` takes them.
    """
    return passes.cut_costs(lower(model, custom_objects), cuts)


def plan(model, bandwidth, edge_slowdown: float = 1.0, server_slowdown: float = 1.0, rtt: float = 0.0,
         flops_per_s: float | None = None, custom_objects: dict | None = None, compress: str | None = None,
         overhead=None, results_to_edge: bool = True) -> list:
    """Ranked edge/server placements of ``model`` (best first): see :mod:`kgraft.analysis.placement`.

    ``bandwidth`` is bits per second or text like ``"20Mbps"``; slowdowns are relative to this
    machine. Each layer's time on this machine is measured with ONNX Runtime's profiler, unless
    ``flops_per_s`` is given: then it is estimated as FLOPs / ``flops_per_s`` (nothing is run).
    ``compress`` ("fp16"/"int8") counts cut tensors compressed, as ``export_onnx(compress=...)``;
    ``overhead`` (a :class:`kgraft.analysis.placement.Overhead`, e.g. measured against ``kgraft serve``) adds
    the serving cost per request; ``results_to_edge`` counts the outputs sent back to the edge.
    """
    from .analysis.placement import parse_bandwidth

    bandwidth_bps = parse_bandwidth(bandwidth)  # bad input fails before the slow measurement
    graph = lower(model, custom_objects)
    if flops_per_s is not None:
        return passes.rank_placements(graph, bandwidth_bps, edge_slowdown, server_slowdown, rtt, flops_per_s, compress=compress,
                               overhead=overhead, results_to_edge=results_to_edge)
    from .backends.onnx.profile import layer_profile

    return passes.rank_placements(graph, bandwidth_bps, edge_slowdown, server_slowdown, rtt,
                                  profile=layer_profile(model, custom_objects), compress=compress, overhead=overhead,
                      results_to_edge=results_to_edge)
