"""Passes over the graph IR. Each is registered by kebab-case name for pipelines and the CLI,
and offered here as a function ``name(graph, **options)`` that never mutates ``graph``.

| pass | does |
|---|---|
| ``inline-nested`` | replace nested models by their bodies |
| ``prune-unreachable`` | drop what no output needs |
| ``extract{outputs,inputs}`` | sub-model between tensors |
| ``split{at}`` | partitions that compose back to the model |
| ``add-head{at,head}`` | attach new layers to any tensor |

Analyses: :func:`split_points`, :func:`downstream`, :func:`cut_costs` (bytes, parameters and FLOPs
on each side of a cut), :func:`plan_split` (ranked edge/server placements, min-cut included).
"""

from ..ir import Graph
from ..ir.nogc import gc_paused
from .add_head import AddHead
from .costs import cut_costs
from .cuts import split_points as _split_point_values
from .downstream import downstream
from .extract import Extract
from .infra import Pass, as_function, parse_pipeline, register, registry, run
from .inline_nested import InlineNested
from .plan import plan_split
from .prune_unreachable import PruneUnreachable
from .split import Split

inline_nested = as_function(InlineNested)
prune_unreachable = as_function(PruneUnreachable)
extract = as_function(Extract)
split = as_function(Split)
add_head = as_function(AddHead)


@gc_paused()
def split_points(graph: Graph) -> list[str]:
    """Refs of every single-tensor split point, in topological order (nested models inlined)."""
    flat = run(graph, "inline-nested")
    return [flat.value_name(v) for v in _split_point_values(flat)]


__all__ = ["Pass", "register", "registry", "parse_pipeline", "run", "inline_nested", "prune_unreachable",
           "extract", "split", "add_head", "split_points", "downstream", "cut_costs", "plan_split"]
