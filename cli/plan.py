"""``kgraft plan``: where to cut a model between an edge device and a server, ranked by latency.

Each layer's time on this machine is measured with ONNX Runtime (a model with weights), or
estimated as FLOPs / ``--flops-per-s`` (always for textual IR, which cannot run); the planner
(:mod:`kgraft.analysis.placement`) scales them by the slowdowns, adds the transfer over the link, and
ranks every split point, the min-cut, "all on edge" and "all on server".
"""

from __future__ import annotations

import dataclasses

import click

from ..ir import KgraftError
from .app import main
from .options import model_options
from .ui import get_ui, human_bytes, ui_options

__all__ = ["plan"]

BASELINES = ("all on edge", "all on server")


def _bandwidth(ctx, param, value):
    from ..analysis.placement import parse_bandwidth

    try:
        return parse_bandwidth(value)
    except KgraftError as e:
        raise click.BadParameter(str(e)) from None


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _rate(bps: float) -> str:
    for unit, size in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= size:
            return f"{bps / size:g} {unit}"
    return f"{bps:g} bit/s"


@main.command()
@model_options
@click.option("--bandwidth", required=True, callback=_bandwidth, metavar="RATE",
              help="Link from edge to server, e.g. 20Mbps, 1.5Gbit/s, 500kbps, 10MB/s (bytes).")
@click.option("--edge-slowdown", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="How many times slower than this machine the edge device is.")
@click.option("--server-slowdown", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="How many times slower than this machine the server is (0.1 = ten times faster).")
@click.option("--rtt", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Round-trip time in seconds, paid by every placement that sends something.")
@click.option("--flops-per-s", type=click.FloatRange(min=0, min_open=True),
              help="Estimate layer times as FLOPs / this throughput (e.g. 50e9) instead of measuring them.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Rows to show.")
@click.option("--compress", type=click.Choice(["fp16", "int8"]),
              help="Count cut tensors as export_onnx(compress=...) sends them (2 or 1 byte per float32).")
@click.option("--measure-overhead", is_flag=True,
              help="Measure what a request to kgraft serve costs beyond the link (fixed, per byte, protocol bytes) "
                   "on 127.0.0.1 and count it (needs kgraft[serve]).")
@ui_options(json_flag=True)
def plan(model, input_shape, unsafe, custom_objects, bandwidth, edge_slowdown, server_slowdown, rtt, flops_per_s, top,
         compress, measure_overhead, quiet, as_json):
    """Rank where to split MODEL between an edge device and a server by end-to-end latency.

    Latency per sample = edge time before the cut + transfer (rtt + bytes / bandwidth, the
    results coming back included; with --measure-overhead also the serving stack's cost) +
    server time after it. Candidates: every split point, the optimal multi-tensor cut
    (min-cut), all on edge, all on server. Layer times are measured on this machine with ONNX
    Runtime and scaled by the slowdowns; --flops-per-s estimates them from FLOPs instead.

    \b
    Examples:
      kgraft plan ResNet50 --input-shape 224,224,3 --bandwidth 20Mbps --edge-slowdown 8 --rtt 0.02
      kgraft plan model.keras --bandwidth 1Gbps --flops-per-s 50e9 --top 5 --json
    """
    from ..analysis.placement import DEFAULT_FLOPS_PER_S
    from ..passes import rank_placements
    from .models import load_graph

    ui = get_ui(quiet, as_json)
    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, custom_objects=custom_objects, ui=ui)
    profile = None
    if flops_per_s is None and graph.meta.get("source") is None:
        flops_per_s = DEFAULT_FLOPS_PER_S
        ui.note(f"textual IR cannot be run: layer times are estimated from FLOPs at {flops_per_s / 1e9:g} GFLOP/s "
                "(--flops-per-s)")
    if flops_per_s is None:
        from ..backends.onnx.profile import layer_profile

        with ui.step("measuring each layer with ONNX Runtime (tf2onnx conversion + profiling)"):
            profile = layer_profile(graph.meta["source"])
    overhead = None
    if measure_overhead:
        from ..backends.serve.overhead import measure_overhead as measure

        with ui.step("measuring the serving overhead (kgraft serve on 127.0.0.1)"):
            overhead = measure()
    rows = rank_placements(graph, bandwidth, edge_slowdown, server_slowdown, rtt,
                      flops_per_s or DEFAULT_FLOPS_PER_S, profile=profile, compress=compress, overhead=overhead)
    shown = [(i, r) for i, r in enumerate(rows, 1) if i <= top or r.label in BASELINES]
    timing = "measured with ONNX Runtime" if profile is not None else f"FLOPs at {flops_per_s / 1e9:g} GFLOP/s"
    if as_json:
        ui.json({"model": graph.name, "bandwidth_bps": bandwidth, "edge_slowdown": edge_slowdown,
                 "server_slowdown": server_slowdown, "rtt_s": rtt, "layer_times": timing, "compress": compress,
                 "overhead": dataclasses.asdict(overhead) if overhead else None,
                 "candidates": len(rows),
                 "rows": [{"rank": i, **dataclasses.asdict(r)} for i, r in shown]})
        return
    ui.table(["#", "placement", "method", "crosses/sample", "edge ms", "transfer ms", "server ms", "total ms"],
             [[i, r.label, r.method, human_bytes(r.bytes_per_sample), _ms(r.edge_s), _ms(r.transfer_s),
               _ms(r.server_s), _ms(r.total_s)] for i, r in shown],
             title=f"{graph.name}: {_rate(bandwidth)} link, rtt {rtt * 1e3:g} ms, edge {edge_slowdown:g}x and server "
                   f"{server_slowdown:g}x this machine; layer times {timing}; {len(rows)} candidates",
             right=["#", "crosses/sample", "edge ms", "transfer ms", "server ms", "total ms"])
    best = rows[0]
    where = best.label if best.label in BASELINES else f"cut at {best.label}"
    ui.echo(f"best: {where}, {_ms(best.total_s)} ms per sample")
