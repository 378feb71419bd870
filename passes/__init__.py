"""Passes over the graph IR. Each is registered by kebab-case name for pipelines and the CLI,
and offered here as a function ``name(graph, **options)`` that never mutates ``graph``.
"""

from .infra import Pass, as_function, parse_pipeline, register, registry, run
from .prune_unreachable import PruneUnreachable

prune_unreachable = as_function(PruneUnreachable)

__all__ = ["Pass", "register", "registry", "parse_pipeline", "run", "prune_unreachable"]
