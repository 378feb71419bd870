"""Measured costs on this machine with ONNX Runtime: per-partition latency of an export, the
time of each call site (the planner's measured profile), and the throughput (FLOPs per second)
that turns FLOP counts into seconds when no profile is taken.

Partition latencies are medians over ``runs`` after ``warmup`` runs, each partition fed with
the tensors the chain computed before it, so every partition sees realistic inputs.

Per call site times come from ONNX Runtime's own profiler on the whole model: tf2onnx names
every ONNX node after the Keras layer it came from (``model_1/block_1_expand_relu_1/Relu6``),
and ORT names a fused node (Conv + BatchNorm + ReLU) after one of its parts, so the time of a
fused group lands on one of its layers. Nodes that name no layer (layout transposes) are spread
over the layers in proportion, and the profile is scaled to add up to the least time of whole
runs in a session *without* the profiler (its per-node recording is not the model's cost).

By default (``threads=1``) every session has one intra-op thread and times are that thread's
CPU time (:func:`~.runtime.compute_clock`): what the work costs on one core of this machine,
whatever else runs on it. Wall times of a shared host moved 2-8x between runs (the planner's
profile and the runs it predicted disagreed by that much); one core's CPU time moves about 10%.
``threads=None`` uses ONNX Runtime's default thread pool and wall time.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict

from .runtime import compute_clock, load, session_options
from .verify import manifest_inputs

__all__ = ["partition_latency", "throughput", "layer_profile"]


def partition_latency(manifest_or_dir, batch: int = 1, runs: int = 20, warmup: int = 3,
                      seed: int = 0) -> list[float]:
    """Median seconds of each partition of an export, in order (one call with ``batch`` samples)."""
    pipeline = load(manifest_or_dir)
    env = pipeline.normalize(manifest_inputs(pipeline.inputs, batch=batch, seed=seed))
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
    from ...analysis.costs import graph_costs
    from ..keras import lower
    from .export import export

    flops = sum(graph_costs(lower(model, custom_objects)).flops.values())
    with tempfile.TemporaryDirectory(prefix="kgraft-calibrate-") as tmp:
        export(model, f"{tmp}/model", custom_objects=custom_objects)
        (seconds,) = partition_latency(f"{tmp}/model", runs=runs)
    return flops / seconds


def layer_profile(model, custom_objects: dict | None = None, runs: int = 10, warmup: int = 3,
                  threads: int | None = 1, gap_s: float = 0.0) -> dict[str, float]:
    """Seconds per call site of ``kgraft.lower(model)`` inlined (ids like ``conv1#0``), batch 1,
    adding up to the model's whole time on ``threads`` ONNX Runtime threads (see the module doc).

    The profile is scaled to the least time of ``runs`` whole-model runs, ``gap_s`` apart: back to
    back (0, the default) and undisturbed is the speed of a device that runs nothing else, which
    the emulated edge of :class:`~kgraft.SplitRunner` reproduces; on a shared host a run after a
    pause costs more (MobileNetV2 +25% after 20 ms, +40% after 200 ms: caches and clocks gone
    cold) and the host's other tenants move the median by 10-25%.
    """
    import onnxruntime as ort

    from ...passes import inline_nested
    from ..keras import lower
    from .export import export

    graph = inline_nested(lower(model, custom_objects))
    clock = compute_clock(threads)
    with tempfile.TemporaryDirectory(prefix="kgraft-profile-") as tmp:
        manifest = export(model, os.path.join(tmp, "model"), custom_objects=custom_objects)
        path = os.path.join(tmp, "model", "part0.onnx")
        plain = ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        profiled = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = _probe_feeds(graph, manifest, plain)
        for _ in range(warmup + runs):
            profiled.run(None, feeds)
        with open(profiled.end_profiling()) as f:
            events = json.load(f)
        for _ in range(warmup):
            plain.run(None, feeds)
        latencies = []
        for _ in range(runs):  # apart from the profiled session's runs, which evict its caches
            time.sleep(gap_s)
            start = clock()
            plain.run(None, feeds)
            latencies.append(clock() - start)
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[-len(kernels) * runs // (runs + warmup):]  # the timed runs only
    return _attribute(graph, kernels, min(latencies))


def _probe_feeds(graph, manifest: dict, session) -> dict:
    """One sample per model input, valid for the layers it reaches (token ids within each
    embedding's range: random ids 0..4 index past a 2-row segment embedding), by input name."""
    from ...ir import ValueRef
    from ...numerics import probe_inputs

    by_name = {graph.value_name(ValueRef(i)): a for i, a in zip(graph.inputs, probe_inputs(graph, batch=1))}
    fallback = dict(zip([io["name"] for io in manifest["inputs"]], manifest_inputs(manifest["inputs"], batch=1)))
    return {i.name: by_name.get(i.name, fallback.get(i.name)) for i in session.get_inputs()}


_CALL_SUFFIX = re.compile(r"_\d+$")


def _attribute(graph, kernels: list[dict], latency: float) -> dict[str, float]:
    """Per call site seconds from ORT kernel events, scaled to add up to ``latency``."""
    by_name = {}
    for layer in graph.layers.values():
        by_name.setdefault(layer.name, layer.name)
        by_name.setdefault(layer.path[-1] if layer.path else layer.name, layer.name)
    per_layer: dict[str, float] = defaultdict(float)
    for event in kernels:
        for part in reversed(event["name"].split("/")[:-1]):
            name = by_name.get(part) or by_name.get(_CALL_SUFFIX.sub("", part))
            if name is not None:
                per_layer[name] += event["dur"]
                break
    total = sum(per_layer.values())
    if not total:
        return {}
    seconds = {}
    for layer, micros in per_layer.items():
        calls = graph.call_sites(layer)
        for call in calls:
            seconds[call.id] = latency * micros / total / len(calls)
    return seconds
