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

Analyses: :func:`split_points`, :func:`downstream`, :func:`cut_costs` (bytes, parameters and FLOPs
on each side of a cut), :func:`rank_placements` (ranked edge/server placements, min-cut included).
"""

from ..ir import Graph
from ..ir.nogc import gc_paused
from .add_head import AddHead
from .delete_channels import DeleteChannels
from .delete_layer import DeleteLayer
from .fold_batchnorm import FoldBatchNorm
from .insert_layer import InsertLayer
from .rename import Rename
from .replace_layer import ReplaceLayer
from .set_input_shape import SetInputShape
from .costs import cut_costs
from .cuts import split_points as _split_point_values
from .downstream import downstream
from .extract import Extract
from .infra import Pass, as_function, parse_pipeline, register, registry, run
from .inline_nested import InlineNested
from .plan import rank_placements
from .prune_unreachable import PruneUnreachable
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


@gc_paused()
def split_points(graph: Graph) -> list[str]:
    """Refs of every single-tensor split point, in topological order (nested models inlined)."""
    flat = run(graph, "inline-nested")
    return [flat.value_name(v) for v in _split_point_values(flat)]


__all__ = ["Pass", "register", "registry", "parse_pipeline", "run", "inline_nested", "prune_unreachable",
           "extract", "split", "add_head", "delete_layer", "insert_layer", "replace_layer",
           "set_input_shape", "rename", "fold_batchnorm", "delete_channels", "split_points", "downstream", "cut_costs", "rank_placements"]
