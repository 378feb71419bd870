"""Analyses of the graph IR: questions about a graph that rewrite nothing.

| module | answers |
|---|---|
| :mod:`.cuts` | split points (dominators), what a cut needs and what crosses it, why a cut is bad |
| :mod:`.costs` | bytes crossing a cut, parameters and FLOPs on each side |
| :mod:`.placement` | edge/server placements ranked by predicted latency (Neurosurgeon/DADS) |
| :mod:`.downstream` | the layers that depend on a tensor |
| :mod:`.channel_sources` | where a depthwise layer's channels come from (for channel pruning) |

They read a graph as it is: cost and placement analyses need a flat one (no nested models).
The :mod:`kgraft.passes` functions of the same names inline and prune any graph first.
Passes use analyses; analyses never run passes.
"""

from .costs import CutCost, TensorCost, cut_costs, graph_costs
from .cuts import split_points
from .downstream import downstream
from .placement import CostModel, Overhead, PlanRow, parse_bandwidth, rank_placements

__all__ = ["split_points", "cut_costs", "graph_costs", "CutCost", "TensorCost", "downstream",
           "rank_placements", "parse_bandwidth", "CostModel", "Overhead", "PlanRow"]
