#!/usr/bin/env python
"""ONNX export cost and chained-partition latency, against the unsplit model, same process.

(a) Export time. ``kgraft.export_onnx`` of one model at 2 and 4 partitions, against

* ``full``: the same call with ``at=None`` (one partition: lower, build, ONE tf2onnx
  conversion, checker, write) — the baseline of the ratio (target: <= 1.3);
* ``tf2onnx``: tf2onnx alone on the source model (``from_function``, as Keras's
  ``model.export(format="onnx")`` does), for reference;
* ``4 parts, per-partition``: one tf2onnx run per partition instead of one for all;
* ``nchw cuts``: ``cut_layout="nchw"`` (cut tensors held channels-first in the files).

Each export's time is split into tf2onnx conversion and the rest (lowering, planning, building
the partitions, cutting the ONNX graph, onnx.checker, writing).

(b) ONNX Runtime latency of the chained partitions (``OnnxPipeline``: one session per
partition, run through IOBinding, each cut tensor written into memory bound once per input
shape and read there by the next session) against the unsplit model run the same way, same
session options (``session_options(threads)``: no spinning), interleaved A B A B ... after a
warm-up (target: ratio of medians <= 1.02). Default ``cut_layout="auto"`` and ``"keras"``
cuts, and, for reference, the 2 and 4 partitions chained without bindings (``unbound``:
``run_with_ort_values``, each output allocated anew, as ``OnnxPipeline`` ran before).

(c) Re-split: after one export (which converts and caches), an export at another cut, from
the in-memory and from the on-disk cache, against one conversion (``full``; target <= 0.1),
and whether its files equal a fresh export's byte for byte; and across processes: a child
process exports the saved model at one cut, a second child at another (each timing its own
``export_onnx`` call; the second one hits the first one's disk entry). Before timing,
every export is verified against the Keras model (max abs diff <= 1e-4, cut tensors included).

On a shared machine wall-clock times swing with other people's load; the benchmark also
reports CPU time (``time.process_time``: export work of all threads; per inference run with
one ORT thread, the time actually computing), which is what to compare there.

    python benchmarks/bench_onnx.py                          # ResNet50 at 128x128
    python benchmarks/bench_onnx.py --input-shape 96 --runs 30 --batch 1 8
    python benchmarks/bench_onnx.py --json onnx.json         # also write the numbers as JSON

Conversion time barely depends on the input size (the graph does not); latency does.

Reading the latency ratios: each cut costs what ONNX Runtime does at a session's edges. With
``cut_layout="keras"`` a cut tensor is NHWC, so each cut adds a Transpose on both sides (tf2onnx
computes in NCHW); ``cut_layout="nchw"`` removes them (the partitions then hold exactly the
unsplit model's operators), leaving ORT's own per-session layout reorders (NCHWc blocking on
CPU), output allocation and the per-call overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CUTS = {
    2: ["conv4_block6_out"],
    4: ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out"],
}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def trained_like_statistics(model, seed: int = 0) -> None:
    """Distinct BatchNorm parameters in every layer, as a trained model has. With ``weights=None``
    every BN layer of a width folds to the same constants, which tf2onnx merges into one
    initializer named after whichever layer it met first, and that depends on the conversion's
    outputs (the cuts): a re-split's files then differ from a fresh export's in those names."""
    import keras
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w * rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in layer.get_weights()])


class ConvertTimer:
    """Seconds spent inside tf2onnx conversions during an export."""

    def __init__(self):
        import importlib

        export_mod = importlib.import_module("kgraft.backends.onnx.export")  # the module, not the function

        self.module, self.real, self.seconds = export_mod, export_mod.convert_units, 0.0

    def __enter__(self):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        self.module.convert_units = timed
        return self

    def __exit__(self, *exc):
        self.module.convert_units = self.real


def time_export(model, out_dir, at, strategy="joint", cut_layout="auto", cache=False):
    import kgraft

    with ConvertTimer() as timer:
        start, cpu = time.perf_counter(), time.process_time()
        manifest = kgraft.backends.onnx.export(model, out_dir, at=at, overwrite=True, strategy=strategy,
                                               cut_layout=cut_layout, cache=cache)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
    return manifest, total, cpu, timer.seconds


def time_raw_tf2onnx(model, opset):
    import tensorflow as tf
    import tf2onnx

    from kgraft.backends.onnx.convert import _captured_tf2onnx_log, _patch_tf2onnx

    _patch_tf2onnx()
    specs = [tf.TensorSpec(tuple(t.shape), t.dtype, name=f"in{i}") for i, t in enumerate(model.inputs)]
    fn = tf.function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False), autograph=False)
    start, cpu = time.perf_counter(), time.process_time()
    with _captured_tf2onnx_log():
        tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)
    return time.perf_counter() - start, time.process_time() - cpu


def resplit(model, root: str, one_conversion_s: float) -> dict:
    """Re-splitting from the kept conversion: an export at another cut after one at a first cut,
    from memory and (memory cleared) from the disk cache, against one conversion (``full``,
    ``cache=False``); and whether its files equal a fresh (uncached) export's, byte for byte."""
    from kgraft.backends.onnx import cache

    os.environ["KGRAFT_CACHE_DIR"] = os.path.join(root, "cache")
    cache.clear(disk=False)
    time_export(model, os.path.join(root, "r_first"), CUTS[4], cache=True)  # the miss: converts, stores
    out = {}
    for where in ("memory", "disk"):
        if where == "disk":
            cache.clear(disk=False)
        man, total, _, conv = time_export(model, os.path.join(root, f"r_{where}"), CUTS[2], cache=True)
        assert man["cache"] == where and conv == 0, (man["cache"], conv)
        out[where] = {"seconds": round(total, 3), "ratio_vs_one_conversion": round(total / one_conversion_s, 3)}
    fresh, *_ = time_export(model, os.path.join(root, "r_fresh"), CUTS[2], cache=False)

    def blobs(m):
        return [open(os.path.join(m["dir"], p["file"]), "rb").read() for p in m["partitions"]]

    def content(m):  # operators in order and initializer values, not names
        import hashlib

        import onnx
        from onnx import numpy_helper

        models = [onnx.load(os.path.join(m["dir"], p["file"])) for p in m["partitions"]]
        return [([n.op_type for n in g.graph.node],
                 sorted(hashlib.sha1(numpy_helper.to_array(t).tobytes()).hexdigest() for t in g.graph.initializer))
                for g in models]

    out["files_identical_to_fresh"] = blobs(fresh) == blobs(man)
    out["same_nodes_and_numbers_as_fresh"] = content(fresh) == content(man)
    out["process"] = across_processes(model, root, one_conversion_s)
    return out


CHILD = """
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, kgraft
import kgraft.backends.onnx, onnx_ir  # imported once per process by a first export (~1 s: onnx-ir
# imports sympy); not timed
model = keras.saving.load_model(sys.argv[1])
start = time.perf_counter()
manifest = kgraft.export_onnx(model, sys.argv[2], at=json.loads(sys.argv[3]), cache=True)
print(json.dumps({"seconds": time.perf_counter() - start, "cache": manifest["cache"]}))
"""


def across_processes(model, root: str, one_conversion_s: float) -> dict:
    """The cache across processes: one process exports (and stores) the saved model at one cut,
    a second one exports it at another cut; each times its own ``export_onnx`` call, after the
    imports a process pays once (onnx-ir's)."""
    import subprocess

    path = os.path.join(root, "model.keras")
    model.save(path)
    env = {**os.environ, "KGRAFT_CACHE_DIR": os.path.join(root, "process_cache")}
    runs = [json.loads(subprocess.run([sys.executable, "-c", CHILD, path, os.path.join(root, f"p{k}"), json.dumps(at)],
                                      capture_output=True, text=True, env=env, check=True).stdout.splitlines()[-1])
            for k, at in enumerate((CUTS[4], CUTS[2]))]
    assert [r["cache"] for r in runs] == ["miss", "disk"], runs
    return {"first_process_s": round(runs[0]["seconds"], 3), "second_process_s": round(runs[1]["seconds"], 3),
            "ratio_vs_one_conversion": round(runs[1]["seconds"] / one_conversion_s, 3)}


class Unbound:
    """The sessions of an ``OnnxPipeline`` chained without IOBinding (each output allocated anew)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def run(self, x):
        import onnxruntime as ort

        chain = self.pipeline.chain
        env = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.pipeline.normalize(x).items()}
        for session, feeds, fetches in zip(chain.sessions, chain.feeds, chain.fetches):
            env.update(zip(fetches, session.run_with_ort_values(fetches, {n: env[n] for n in feeds})))
        return [env[n].numpy() for n in self.pipeline.output_names]


def latency(pipelines: dict, x, runs: int, warmup: int = 3) -> tuple[dict, dict]:
    """Interleaved wall and CPU timings (seconds) of each pipeline's ``run(x)``."""
    for p in pipelines.values():
        for _ in range(warmup):
            p.run(x)
    wall, cpu = {k: [] for k in pipelines}, {k: [] for k in pipelines}
    for _ in range(runs):
        for k, p in pipelines.items():
            start, c = time.perf_counter(), time.process_time()
            p.run(x)
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - c)
    return wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ResNet50", help="a keras.applications architecture (weights=None)")
    parser.add_argument("--input-shape", type=int, default=128)
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--runs", type=int, default=40, help="latency runs per variant")
    parser.add_argument("--repeats", type=int, default=2,
                        help="exports of each variant, in rotating order; the minimum is reported")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads (default 1: steadier on a shared machine, "
                             "and then CPU time per run excludes time spent descheduled)")
    parser.add_argument("--skip-per-partition", action="store_true", help="skip the per-partition export")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    import kgraft
    from kgraft.backends import onnx as konnx
    from kgraft.backends.onnx.convert import check_opset

    if args.model != "ResNet50":
        parser.error("the cut tensors are ResNet50's; only --model ResNet50 is supported")
    model = getattr(keras.applications, args.model)(
        input_shape=(args.input_shape, args.input_shape, 3), weights=None)
    trained_like_statistics(model)
    results = {"model": args.model, "input_shape": args.input_shape, "cpu_count": os.cpu_count(),
               "load_avg_start": os.getloadavg(), "platform": platform.platform(),
               "versions": None, "export": {}, "latency": {}}
    root = tempfile.mkdtemp(prefix="kgraft-bench-onnx-")
    try:
        # warm-up: imports, tf2onnx handler registration, first tf.function trace
        x_small = keras.Input((4,), name="w")
        kgraft.export_onnx(keras.Model(x_small, keras.layers.Dense(2)(x_small)), os.path.join(root, "warm"))

        runs = [("full", None, "joint", "auto"), ("2 parts", CUTS[2], "joint", "auto"),
                ("4 parts", CUTS[4], "joint", "auto")]
        if not args.skip_per_partition:
            runs.append(("4 parts, per-partition", CUTS[4], "per-partition", "keras"))
        runs += [("2 parts, keras cuts", CUTS[2], "joint", "keras"), ("4 parts, keras cuts", CUTS[4], "joint", "keras")]
        manifests, samples = {}, {label: [] for label, *_ in runs + [("tf2onnx alone",)]}
        for round_ in range(args.repeats):
            shift = round_ % len(runs)
            for label, at, strategy, layout in runs[shift:] + runs[:shift]:
                log(f"[{round_ + 1}/{args.repeats}] exporting {label} ...")
                man, total, cpu, conv = time_export(
                    model, os.path.join(root, label.replace(" ", "_").replace(",", "")), at, strategy, layout)
                manifests[label] = man
                samples[label].append((total, cpu, conv, man["conversion"]["conversions"], len(man["partitions"])))
                results["versions"] = man["versions"]
            log(f"[{round_ + 1}/{args.repeats}] tf2onnx alone on the source model ...")
            wall, cpu = time_raw_tf2onnx(model, check_opset(args.opset))
            samples["tf2onnx alone"].append((wall, cpu, wall, 1, 1))
        for label, rows in samples.items():
            results["export"][label] = {
                "seconds": round(min(r[0] for r in rows), 2), "cpu_seconds": round(min(r[1] for r in rows), 2),
                "tf2onnx_seconds": round(min(r[2] for r in rows), 2), "conversions": rows[0][3],
                "partitions": rows[0][4], "all_seconds": [round(r[0], 2) for r in rows],
                "all_cpu_seconds": [round(r[1], 2) for r in rows]}
        base = results["export"]["full"]
        for row in results["export"].values():
            row["ratio_vs_full"] = round(row["seconds"] / base["seconds"], 3)
            row["cpu_ratio_vs_full"] = round(row["cpu_seconds"] / base["cpu_seconds"], 3)

        results["resplit"] = resplit(model, root, base["seconds"])
        latency_variants = ("full", "2 parts", "4 parts", "2 parts, keras cuts", "4 parts, keras cuts")
        for label in latency_variants:
            report = konnx.verify(model, manifests[label], inputs=np.random.default_rng(0).standard_normal(
                (2, args.input_shape, args.input_shape, 3)).astype("float32"))
            results["export"][label]["max_abs_diff"] = report.max_abs_diff
            log(str(report))

        from kgraft.backends.onnx.runtime import session_options

        pipelines = {label: konnx.OnnxPipeline(manifests[label], session_options=session_options(args.threads))
                     for label in latency_variants}
        for label in ("2 parts", "4 parts"):
            pipelines[f"{label}, unbound"] = Unbound(pipelines[label])
        for batch in args.batch:
            x = np.random.default_rng(batch).standard_normal(
                (batch, args.input_shape, args.input_shape, 3)).astype("float32")
            log(f"latency, batch {batch} ...")
            wall, cpu = latency(pipelines, x, args.runs)
            med = {k: statistics.median(v) for k, v in wall.items()}
            low = {k: min(v) for k, v in wall.items()}
            cmed = {k: statistics.median(v) for k, v in cpu.items()}
            results["latency"][f"batch {batch}"] = {
                k: {"median_ms": round(1e3 * med[k], 3), "min_ms": round(1e3 * low[k], 3),
                    "cpu_median_ms": round(1e3 * cmed[k], 3),
                    "ratio_vs_full": round(med[k] / med["full"], 3),
                    "min_ratio_vs_full": round(low[k] / low["full"], 3),
                    "cpu_ratio_vs_full": round(cmed[k] / cmed["full"], 3)} for k in wall}
        results["load_avg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(f"{args.model} {args.input_shape}x{args.input_shape}, {os.cpu_count()} CPUs, "
          f"load average {results['load_avg_start'][0]:.1f} -> {results['load_avg_end'][0]:.1f}")
    print(f"\n(a) export (s, min of {args.repeats})  wall  of which tf2onnx  conversions  wall ratio   CPU s"
          "  CPU ratio  (target <= 1.3)")
    for label, row in results["export"].items():
        print(f"  {label:<24} {row['seconds']:6.1f}  {row['tf2onnx_seconds']:15.1f}  {row.get('conversions', 1):11d}"
              f"  {row['ratio_vs_full']:10.2f}  {row['cpu_seconds']:6.1f}  {row['cpu_ratio_vs_full']:9.2f}")
    r = results["resplit"]
    print(f"\n(c) re-split from the kept conversion (s; ratio vs one conversion, target <= 0.1): memory "
          f"{r['memory']['seconds']:.2f} (x{r['memory']['ratio_vs_one_conversion']:.3f}), disk "
          f"{r['disk']['seconds']:.2f} (x{r['disk']['ratio_vs_one_conversion']:.3f}); vs a fresh export: "
          f"same nodes and numbers {r['same_nodes_and_numbers_as_fresh']}, byte-identical {r['files_identical_to_fresh']}"
          f"\n    across processes (a second process, the saved model at another cut): {r['process']['second_process_s']:.2f}"
          f" (x{r['process']['ratio_vs_one_conversion']:.3f}; the first process's export {r['process']['first_process_s']:.1f})")
    print(f"\n(b) ONNX Runtime latency, {args.threads} intra-op thread(s), {args.runs} interleaved runs "
          "(ms; ratio vs full, target <= 1.02)")
    print(f"  {'':<30} {'wall median':>18} {'wall min':>18} {'CPU median':>18}")
    for batch, rows in results["latency"].items():
        for k, v in rows.items():
            print(f"  {batch + ', ' + k:<30} {v['median_ms']:9.2f} (x{v['ratio_vs_full']:.3f})"
                  f" {v['min_ms']:9.2f} (x{v['min_ratio_vs_full']:.3f})"
                  f" {v['cpu_median_ms']:9.2f} (x{v['cpu_ratio_vs_full']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
