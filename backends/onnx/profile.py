"""Measured costs on this machine with ONNX Runtime: per-partition latency of an export, and the
throughput (FLOPs per second) that turns the planner's FLOP counts into seconds.

Timings are medians over ``runs`` after ``warmup`` runs, each partition fed with the tensors
the chain computed before it, so every partition sees realistic inputs.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from .runtime import load
from .verify import random_inputs

__all__ = ["partition_latency", "throughput"]


def partition_latency(manifest_or_dir, batch: int = 1, runs: int = 20, warmup: int = 3,
                      seed: int = 0) -> list[float]:
    """Median seconds of each partition of an export, in order (one call with ``batch`` samples)."""
    pipeline = load(manifest_or_dir)
    env = pipeline.normalize(random_inputs(pipeline.inputs, batch=batch, seed=seed))
    times = []
    for index in range(len(pipeline)):
        samples = []
        for k in range(warmup + runs):
            start = time.perf_counter()
            out = pipeline.run_partition(index, env)
            if k >= warmup:
                samples.append(time.perf_counter() - start)
        env.update(out)
        times.append(statistics.median(samples))
    return times


def throughput(model, custom_objects: dict | None = None, runs: int = 20) -> float:
    """FLOPs per second of this machine on ``model`` in ONNX Runtime (batch 1), for the planner."""
    from ...passes.costs import graph_costs
    from ..keras import lower
    from .export import export

    flops = sum(graph_costs(lower(model, custom_objects)).flops.values())
    with tempfile.TemporaryDirectory(prefix="kgraft-calibrate-") as tmp:
        export(model, f"{tmp}/model", custom_objects=custom_objects)
        (seconds,) = partition_latency(f"{tmp}/model", runs=runs)
    return flops / seconds
