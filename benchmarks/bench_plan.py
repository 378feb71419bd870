#!/usr/bin/env python
"""The split planner: chosen placement and predicted vs measured latency, for a few bandwidths.

The planner needs each call site's time on this machine, from one of two sources:

* ``profile``: ONNX Runtime's profiler on the whole model, per layer (what ``kgraft.plan`` does);
* ``flops``: FLOPs / this machine's throughput (measured once on the whole model).

For each bandwidth and source this benchmark takes the planner's best placement, exports it as
ONNX partitions, measures each partition's latency in ONNX Runtime on this machine, and
computes the *measured* end-to-end latency with the same device model (edge partition x edge
slowdown + transfer + server partition x server slowdown). predicted / measured says how
close the prediction is; a cut chosen from a wrong prediction shows up as a worse measurement.

    python benchmarks/bench_plan.py                           # ResNet50 at 224x224, edge 8x slower
    python benchmarks/bench_plan.py --model MobileNetV2 --bandwidth 1Mbps 20Mbps 1Gbps
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def measured_latency(row, times: list[float], full: float, edge_slowdown: float, server_slowdown: float) -> float:
    """End-to-end seconds of ``row``'s placement from measured partition latencies."""
    if row.label == "all on edge":
        return full * edge_slowdown
    if row.label == "all on server":
        return row.transfer_s + full * server_slowdown
    return times[0] * edge_slowdown + row.transfer_s + times[1] * server_slowdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications architecture (weights=None)")
    parser.add_argument("--input-shape", type=int, default=224)
    parser.add_argument("--bandwidth", nargs="+", default=["1Mbps", "10Mbps", "100Mbps", "1Gbps"])
    parser.add_argument("--edge-slowdown", type=float, default=8.0)
    parser.add_argument("--server-slowdown", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)

    import keras

    import kgraft
    from kgraft.backends.onnx.profile import layer_profile, partition_latency, throughput
    from kgraft.passes import rank_placements

    model = getattr(keras.applications, args.model)(
        weights=None, input_shape=(args.input_shape, args.input_shape, 3))
    graph = kgraft.lower(model)
    log("measuring throughput and the per-layer profile with ONNX Runtime ...")
    sources = {"flops": {"flops_per_s": throughput(model, runs=args.runs)},
               "profile": {"profile": layer_profile(model, runs=args.runs)}}
    root = tempfile.mkdtemp(prefix="kgraft-bench-plan-")
    kgraft.export_onnx(model, os.path.join(root, "full"))
    (full,) = partition_latency(os.path.join(root, "full"), runs=args.runs)
    print(f"{args.model} {args.input_shape}x{args.input_shape}: "
          f"{sources['flops']['flops_per_s'] / 1e9:.1f} GFLOP/s measured, whole model {full * 1e3:.1f} ms on this "
          f"machine; edge {args.edge_slowdown:g}x slower, server {args.server_slowdown:g}x\n")
    print("| bandwidth | times from | chosen placement | method | MB crossing | predicted ms | measured ms "
          "| predicted/measured |")
    print("|---|---|---|---|---|---|---|---|")
    exports: dict[tuple, list[float]] = {}
    for bandwidth in args.bandwidth:
        for source, options in sources.items():
            best = rank_placements(graph, bandwidth, args.edge_slowdown, args.server_slowdown, **options)[0]
            times: list[float] = []
            if best.label not in ("all on edge", "all on server"):
                if best.cut not in exports:
                    out = os.path.join(root, f"cut{len(exports)}")
                    log(f"exporting the cut {best.label} ...")
                    kgraft.export_onnx(model, out, at=[list(best.cut)])
                    exports[best.cut] = partition_latency(out, runs=args.runs)
                times = exports[best.cut]
            measured = measured_latency(best, times, full, args.edge_slowdown, args.server_slowdown)
            print(f"| {bandwidth} | {source} | {best.label} | {best.method} | {best.bytes_per_sample / 1e6:.3f} | "
                  f"{best.total_s * 1e3:.1f} | {measured * 1e3:.1f} | {best.total_s / measured:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
