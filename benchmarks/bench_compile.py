#!/usr/bin/env python
"""Compile speed: ``kgraft.split`` / ``flatten`` / ``extract`` against Keras's own rebuild, same process.

Each kgraft operation lowers the model, runs passes and builds new Keras models with the weights
copied. Its baseline is what a Keras user does to get a copy of the model with its weights:

    m2 = type(m).from_config(copy.deepcopy(m.get_config())); m2.set_weights(m.get_weights())

(``timing.keras_rebuild``; Keras 3.15's ``from_config`` consumes its argument.)

Building the partitions of a split is the same work as rebuilding the model once (every layer is
built once, every weight copied once), so the target is a ratio <= 1.1 for every operation.

* ``split``:   at the middle split point (a multi-tensor cut through the middle of the model when it
  has none, as NASNetLarge);
* ``flatten``: the whole model (these models have nothing nested: lower, inline, rebuild);
* ``extract``: the sub-model from the input to the same middle tensor.

Runs are interleaved (``timing.interleaved``), the order rotating each round (keras, split, flatten,
extract; then split, flatten, extract, keras; ...), after one warm-up of each; medians of wall and
process CPU time.
Before timing, once per model, the results are checked against the source model on one random
input (split partitions composed, flatten, extract against the source's own sub-model): outputs
within 1e-5 or exit 2.

Peak memory (``--memory``): in a fresh process per (model, operation), the resident set size is
sampled every 2 ms while ``split`` (or the Keras rebuild) runs; the peak above the level before
it is compared with the bytes of the source model's weights (the new models hold one copy).

    python benchmarks/bench_compile.py                    # 4 models, 128x128x3, 3 rounds, + --memory
    python benchmarks/bench_compile.py --quick            # ResNet152 + EfficientNetB7, 1 round, no memory
    python benchmarks/bench_compile.py --models ConvNeXtBase --repeats 5
    python benchmarks/bench_compile.py --json compile.json --check
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_build import environment, log, parse_shape  # noqa: E402  (same directory)
from timing import interleaved, keras_rebuild, medians  # noqa: E402

MODELS = ("ResNet152", "EfficientNetB7", "ConvNeXtBase", "NASNetLarge")
OPERATIONS = ("split", "flatten", "extract")
TOLERANCE = 1e-5


def middle_cut(model) -> list[str]:
    """The middle split point, or the values crossing the middle of the topological order."""
    import kgraft
    from kgraft.analysis.cuts import _crossing

    points = kgraft.split_points(model)
    if points:
        return [points[len(points) // 2]]
    graph = kgraft.lower(model)
    order = graph.topological_ids()
    upstream = set(order[: len(order) // 2])
    crossing = _crossing(graph, upstream, set(order) - upstream, [])
    return [graph.value_name(v) for v in crossing]


def run_operation(op: str, model, cut: list[str]):
    import kgraft

    if op == "keras":
        return keras_rebuild(model)
    # the equivalence check's own cost is measured by bench_check.py
    if op == "split":
        return kgraft.split(model, at=[cut], check=False)
    if op == "flatten":
        return kgraft.flatten(model, check=False)
    return kgraft.extract(model, cut, check=False)


def check(model, cut: list[str], results: dict, shape, seed: int) -> float:
    """Largest output difference of any operation from the source model; exit 2 beyond TOLERANCE."""
    import keras
    import numpy as np

    x = np.random.default_rng(seed).uniform(0.0, 255.0, size=(1, *shape)).astype("float32")
    want = np.asarray(model(x, training=False))
    first, second = results["split"]
    mid = first(x, training=False)
    mid = mid if isinstance(mid, (list, tuple)) else [mid]
    got = {"split": np.asarray(second(list(mid) if len(mid) > 1 else mid[0], training=False)),
           "flatten": np.asarray(results["flatten"](x, training=False))}
    if len(cut) == 1:
        name = cut[0].split(":")[0].split("@")[0]  # a layer, or an operation such as ConvNeXt's ``x + y``
        op = next(o for o in model.operations if o.name == name)
        reference = keras.Model(model.input, op.output)  # the source's own tensors: no new calls
        got["extract"] = np.asarray(results["extract"](x, training=False))
        want_extract = np.asarray(reference(x, training=False))
    worst = 0.0
    for op, value in got.items():
        target = want_extract if op == "extract" else want
        diff = float(np.max(np.abs(value - target))) if value.shape == target.shape else float("inf")
        worst = max(worst, diff)
        if not diff <= TOLERANCE:
            log(f"FAIL: kgraft.{op} of {model.name}: max abs difference {diff} > {TOLERANCE}")
            sys.exit(2)
    return worst


def bench_model(name: str, shape, repeats: int, seed: int) -> dict:
    import keras

    log(f"== {name} input_shape={shape}")
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    cut = middle_cut(model)
    log(f"   {len(model.layers)} layers, {model.count_params():,} parameters; cut at "
        + (cut[0] if len(cut) == 1 else f"{len(cut)} tensors ({', '.join(cut[:3])}, ...)"))
    worst = check(model, cut, {op: run_operation(op, model, cut) for op in OPERATIONS}, shape, seed)
    log(f"   check: outputs within {worst:.3g} of the source model")
    gc.collect()

    ops = ("keras",) + OPERATIONS
    samples = interleaved({op: (lambda op=op: run_operation(op, model, cut)) for op in ops}, repeats,
                          lambda i, s: log(f"   round {i}/{repeats}: "
                                           + "  ".join(f"{op} {s[op]['wall'][-1]:.2f}s" for op in ops)))
    med = medians(samples)
    keras_wall, keras_cpu = med["keras"]
    result = {"model": name, "input_shape": list(shape), "layers": len(model.layers),
              "parameters": int(model.count_params()), "cut": cut, "repeats": repeats, "max_abs_diff": worst,
              "keras": {"wall_s": keras_wall, "cpu_s": keras_cpu, "wall_samples": samples["keras"]["wall"]}}
    for op in OPERATIONS:
        w, c = med[op]
        result[op] = {"wall_s": w, "cpu_s": c, "wall_ratio": w / keras_wall, "cpu_ratio": c / keras_cpu,
                      "wall_samples": samples[op]["wall"]}
    del model
    keras.backend.clear_session()
    gc.collect()
    return result


# ---------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_during(fn) -> tuple[int, int]:
    """(resident bytes before ``fn``, peak resident bytes while it ran), sampled every 2 ms."""
    peak, done = [_rss_bytes()], threading.Event()
    before = peak[0]

    def sample():
        while not done.wait(0.002):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    del result
    return before, peak[0]


def memory_case(name: str, op: str, shape) -> dict:
    """Run in a fresh process: the extra resident memory of one ``op`` on one model."""
    import keras
    import numpy as np

    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    cut = middle_cut(model)
    weight_bytes = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)  # no copies
    gc.collect()
    before, peak = peak_rss_during(lambda: run_operation(op, model, cut))
    return {"model": name, "op": op, "weight_bytes": weight_bytes, "extra_bytes": peak - before,
            "extra_per_weights": (peak - before) / weight_bytes}


def spawn_memory_case(name: str, op: str, shape) -> dict:
    cmd = [sys.executable, __file__, "--memory-case", name, op, "--input-shape", ",".join(map(str, shape))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"model": name, "op": op, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- report
def report(env: dict, results: list[dict], memory: list[dict], target: float) -> list[str]:
    lines = [f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; python {env['python']}, "
             f"keras {env['keras']}, tensorflow {env['tensorflow']}", ""]
    lines.append("| model | layers / params | cut | Keras rebuild | split | flatten | extract |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        cut = r["cut"][0] if len(r["cut"]) == 1 else f"{len(r['cut'])} tensors"
        cells = [f"{r[op]['wall_s']:.2f} s (**{r[op]['wall_ratio']:.2f}x**, CPU {r[op]['cpu_ratio']:.2f}x)"
                 for op in OPERATIONS]
        lines.append(f"| {r['model']} | {r['layers']} / {r['parameters'] / 1e6:.1f} M | {cut} | "
                     f"{r['keras']['wall_s']:.2f} s (CPU {r['keras']['cpu_s']:.2f} s) | " + " | ".join(cells) + " |")
    lines.append(f"(median of {results[0]['repeats'] if results else 0} interleaved rounds; ratio = kgraft / Keras "
                 f"rebuild, wall clock (and process CPU time); target <= {target:.2f}x)")
    if memory:
        lines += ["", "| model | weights | split: extra peak RSS | Keras rebuild: extra peak RSS |", "|---|---|---|---|"]
        by = {(m["model"], m["op"]): m for m in memory}
        for name in dict.fromkeys(m["model"] for m in memory):
            cells = []
            for op in ("split", "keras"):
                m = by.get((name, op), {})
                cells.append(f"error: {m['error']}" if "error" in m else
                             f"{m['extra_bytes'] / 2**20:.0f} MiB ({m['extra_per_weights']:.2f}x the weights)")
            weights = next(m["weight_bytes"] for m in memory if m["model"] == name and "weight_bytes" in m)
            lines.append(f"| {name} | {weights / 2**20:.0f} MiB | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"keras.applications names ({', '.join(MODELS)})")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--input-shape", type=parse_shape, default=(128, 128, 3), help="default 128 (128,128,3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="ResNet152 and EfficientNetB7, 1 round, no memory")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--target", type=float, default=1.1)
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a median wall ratio exceeds --target")
    parser.add_argument("--memory-case", nargs=2, metavar=("MODEL", "OP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_case:
        print(json.dumps(memory_case(*args.memory_case, args.input_shape)))
        return 0
    if args.quick:
        args.models, args.repeats, args.no_memory = ["ResNet152", "EfficientNetB7"], 1, True

    env = environment()
    results = [bench_model(name, args.input_shape, args.repeats, args.seed) for name in args.models]
    memory = []
    if not args.no_memory:
        for name in args.models:
            for op in ("split", "keras"):
                log(f"== memory: {op} of {name}")
                memory.append(spawn_memory_case(name, op, args.input_shape))
    print("\n".join(report(env, results, memory, args.target)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": vars(args), "results": results, "memory": memory}, f, indent=2)
    slow = [f"{r['model']} {op}" for r in results for op in OPERATIONS if r[op]["wall_ratio"] > args.target]
    if slow:
        print(f"\nover the {args.target}x target: {', '.join(slow)}")
    return 1 if args.check and slow else 0


if __name__ == "__main__":
    sys.exit(main())
