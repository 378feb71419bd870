"""Passes over the graph IR. Each is registered by kebab-case name for pipelines and the CLI,
and offered here as a function ``name(graph, **options)`` that never mutates ``graph``.

| pass | does |
|---|---|
| ``inline-nested`` | replace nested models by their bodies |
| ``prune-unreachable`` | drop what no output needs |
| ``extract{outputs,inputs}`` | sub-model between tensors |
| ``split{at}`` | partitions that compose back to the model |
| ``add-head{at,head}`` | attach new layers to any tensor |
| ``delete-layer{ref}``, ``insert-layer{at,layers}``, ``replace-layer{target,new}`` | model surgery |
| ``set-input-shape{shape,input}``, ``rename{prefix,names}`` | new input shape, new names |
| ``fold-batchnorm``, ``delete-channels{ref,channels}`` | fold BN into kernels, prune channels |

Analyses of any graph (nested models inlined, dead code pruned, then :mod:`kgraft.analysis` asked):
:func:`split_points`, :func:`downstream`, :func:`cut_costs` (bytes, parameters and FLOPs on each
side of a cut), :func:`rank_placements` (ranked edge/server placements, min-cut included).
"""

from .. import analysis
from ..ir import Graph, verify
from ..ir.nogc import gc_paused
from .add_head import AddHead
from .delete_channels import DeleteChannels
from .delete_layer import DeleteLayer
from .fold_batchnorm import FoldBatchNorm
from .insert_layer import InsertLayer
from .rename import Rename
from .replace_layer import ReplaceLayer
from .set_input_shape import SetInputShape
from .extract import Extract, inline_if_needed
from .infra import Pass, as_function, parse_pipeline, register, registry, run
from .inline_nested import InlineNested, inline
from .prune_unreachable import PruneUnreachable, prune
from .split import Split

inline_nested = as_function(InlineNested)
prune_unreachable = as_function(PruneUnreachable)
extract = as_function(Extract)
split = as_function(Split)
add_head = as_function(AddHead)
delete_layer = as_function(DeleteLayer)
insert_layer = as_function(InsertLayer)
replace_layer = as_function(ReplaceLayer)
set_input_shape = as_function(SetInputShape)
rename = as_function(Rename)
fold_batchnorm = as_function(FoldBatchNorm)
delete_channels = as_function(DeleteChannels)


def _flat(graph: Graph) -> Graph:
    verify(graph)
    return prune(inline(graph), keep_inputs=True)


@gc_paused()
def split_points(graph: Graph) -> list[str]:
    """Refs of every single-tensor split point, in topological order (nested models inlined)."""
    verify(graph)
    return analysis.split_points(inline(graph))


def downstream(graph: Graph, ref: str) -> list[str]:
    """Names of the layers whose output depends on ``ref``, in topological order."""
    verify(graph)
    return analysis.downstream(inline_if_needed(graph, [ref]), ref)


@gc_paused()
def cut_costs(graph: Graph, cuts=None) -> list[analysis.CutCost]:
    """:func:`kgraft.analysis.cut_costs` of the flat, pruned ``graph`` (refs as ``split_points`` names them)."""
    return analysis.cut_costs(_flat(graph), cuts)


@gc_paused()
def rank_placements(graph: Graph, bandwidth_bps: float, *args, **kwargs) -> list[analysis.PlanRow]:
    """:func:`kgraft.analysis.rank_placements` of the flat, pruned ``graph``."""
    return analysis.rank_placements(_flat(graph), bandwidth_bps, *args, **kwargs)

__all__ = ["Pass", "register", "registry", "parse_pipeline", "run", "inline_nested", "prune_unreachable",
           "extract", "split", "add_head", "delete_layer", "insert_layer", "replace_layer",
           "set_input_shape", "rename", "fold_batchnorm", "delete_channels", "split_points", "downstream", "cut_costs", "rank_placements"]
