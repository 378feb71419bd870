#!/usr/bin/env python
"""Rebuild cost: ``kgraft.build(kgraft.lower(m))`` against Keras's own rebuild, same process.

For each model (built with ``keras.applications.X(weights=None, input_shape=...)``; nothing is
downloaded) the two ways of rebuilding it with its weights are timed, interleaved
(A B B A A B ..., so neither always goes first) after one warm-up of each:

* baseline (Keras): ``m2 = keras.Model.from_config(m.get_config()); m2.set_weights(m.get_weights())``
* kgraft:           ``m3 = kgraft.build(kgraft.lower(m))``

It prints the median and min seconds of each, the ratio of the medians (target: <= 1.1) and
where kgraft's time goes (lower / verify / from_config / copy_weights). Before timing,
once per model, it checks that the kgraft model is the source model: every weight bit-identical
and, on one random input, outputs within 1e-5. Any mismatch exits with status 2.

    python benchmarks/bench_build.py                           # ResNet152, EfficientNetB7 at 224
    python benchmarks/bench_build.py --models ResNet50 --repeats 3 --input-shape 160
    python benchmarks/bench_build.py --json > build.json       # JSON on stdout (progress -> stderr)
    python benchmarks/bench_build.py --json build.json         # table on stdout, JSON to a file
    python benchmarks/bench_build.py --check                   # exit 1 if a ratio exceeds --target

The input size barely changes rebuild cost (the weights do not depend on it; only the
symbolic shapes do), so a small one keeps the numerical check short.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STAGES = ("lower", "verify", "from_config", "copy_weights")
TOLERANCE = 1e-5


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        return (parts[0], parts[0], 3)
    if len(parts) == 2:
        return (parts[0], parts[1], 3)
    if len(parts) == 3:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"--input-shape {text!r}: give S, H,W or H,W,C")


class StageTimer:
    """Times kgraft's stages by wrapping the module-level functions ``build``/``lower`` call.

    Each wrapper costs about a microsecond per call; only the outermost call of a recursive
    function is counted. ``copy_weights`` is the builder's per-layer state copy (``_copy_layer``);
    ``from_config`` is what remains of ``build``'s time (rebuilding and calling each layer, the
    class check, and the variables' initialization).
    """

    def __init__(self):
        import importlib

        # ``kgraft.backends.keras.build`` the attribute is the function; the module is this:
        build_mod = importlib.import_module("kgraft.backends.keras.build")
        self.build_mod = build_mod
        self.times: dict[str, float] = {}
        self._depth: dict[str, int] = {}
        self._originals = []
        for stage, name in (("verify", "verify"), ("copy_weights", "_copy_layer")):
            self._wrap(build_mod, name, stage)

    def _wrap(self, module, name: str, stage: str) -> None:
        original = getattr(module, name)
        self._originals.append((module, name, original))

        def timed(*args, **kwargs):
            depth = self._depth.get(stage, 0)
            self._depth[stage] = depth + 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth[stage] = depth
                if depth == 0:
                    self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start

        setattr(module, name, timed)

    def restore(self) -> None:
        for module, name, original in reversed(self._originals):
            setattr(module, name, original)

    def run(self, model):
        import kgraft

        self.times = {}
        cpu = time.process_time()
        start = time.perf_counter()
        graph = kgraft.lower(model)
        mid = time.perf_counter()
        rebuilt = kgraft.build(graph)
        end = time.perf_counter()
        cpu = time.process_time() - cpu
        stages = {"lower": mid - start}
        stages.update({k: self.times.get(k, 0.0) for k in ("verify", "copy_weights")})
        stages["from_config"] = (end - mid) - stages["verify"] - stages["copy_weights"]
        return rebuilt, end - start, cpu, stages


def keras_rebuild(model):
    import keras

    cpu = time.process_time()
    start = time.perf_counter()
    config = model.get_config()
    t_config = time.perf_counter()
    rebuilt = keras.Model.from_config(config)
    t_built = time.perf_counter()
    values = model.get_weights()
    t_get = time.perf_counter()
    rebuilt.set_weights(values)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    del values
    stages = {"get_config": t_config - start, "from_config": t_built - t_config,
              "get_weights": t_get - t_built, "set_weights": end - t_get}
    return rebuilt, end - start, cpu, stages


def check_same(model, rebuilt, shape, seed: int) -> dict:
    """Bit-identical weights and outputs within TOLERANCE on one random input, or exit 2."""
    import numpy as np

    source_w, rebuilt_w = model.get_weights(), rebuilt.get_weights()
    problems = []
    if len(source_w) != len(rebuilt_w):
        problems.append(f"{len(source_w)} source weights, {len(rebuilt_w)} rebuilt")
    else:
        unequal = [i for i, (a, b) in enumerate(zip(source_w, rebuilt_w))
                   if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b)]
        if unequal:
            problems.append(f"{len(unequal)} weight arrays differ (first: #{unequal[0]})")
    del source_w, rebuilt_w
    x = np.random.default_rng(seed).uniform(0.0, 255.0, size=(1, *shape)).astype("float32")
    ref = np.asarray(model(x, training=False))
    got = np.asarray(rebuilt(x, training=False))
    diff = float(np.max(np.abs(ref - got))) if ref.shape == got.shape else float("inf")
    if not diff <= TOLERANCE:
        problems.append(f"outputs differ: max abs diff {diff} > {TOLERANCE} (shapes {ref.shape}, {got.shape})")
    if problems:
        log(f"FAIL: kgraft's rebuild of {model.name} is not the source model:\n  " + "\n  ".join(problems))
        sys.exit(2)
    return {"max_abs_diff": diff, "weights_identical": True, "output_shape": list(ref.shape)}


def rss_mib() -> float:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return float("nan")


def summarize(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "min_s": min(samples),
            "samples_s": [round(s, 4) for s in samples]}


def bench_model(name: str, shape, repeats: int, seed: int, clear: bool) -> dict:
    import keras
    import kgraft

    log(f"== {name} input_shape={shape}")
    factory = getattr(keras.applications, name)
    keras.backend.clear_session()
    source = factory(weights=None, input_shape=shape)
    n_layers = len(source.layers)
    n_weights = len(source.weights)
    n_params = int(source.count_params())
    log(f"   {n_layers} layers, {n_weights} variables, {n_params:,} parameters")

    rebuilt = kgraft.build(kgraft.lower(source))
    check = check_same(source, rebuilt, shape, seed)
    log(f"   check: weights bit-identical, max abs output diff {check['max_abs_diff']:.3g}")
    del rebuilt
    gc.collect()

    timer = StageTimer()
    try:
        baseline, kgraft_t, base_stages, kg_stages = [], [], [], []
        cpu = {"keras": [], "kgraft": []}
        loads = []
        for i in range(repeats + 1):  # iteration 0 is the warm-up of each
            # A B, then B A: alternating who goes first cancels drift (other load, heap growth).
            for which in (("keras", "kgraft") if i % 2 == 0 else ("kgraft", "keras")):
                if clear:
                    keras.backend.clear_session(free_memory=True)
                gc.collect()
                if which == "keras":
                    model, seconds, cpu_s, stages = keras_rebuild(source)
                else:
                    model, seconds, cpu_s, stages = timer.run(source)
                del model
                if i == 0:
                    continue
                cpu[which].append(cpu_s)
                (baseline if which == "keras" else kgraft_t).append(seconds)
                (base_stages if which == "keras" else kg_stages).append(stages)
            if i:
                loads.append(os.getloadavg()[0])
                log(f"   run {i}/{repeats}: keras {baseline[-1]:.3f}s  kgraft {kgraft_t[-1]:.3f}s  "
                    f"(rss {rss_mib():.0f} MiB)")
    finally:
        timer.restore()
    gc.collect()

    base, kg = summarize(baseline), summarize(kgraft_t)
    result = {
        "model": name,
        "input_shape": list(shape),
        "layers": n_layers,
        "variables": n_weights,
        "parameters": n_params,
        "repeats": repeats,
        "keras": base,
        "kgraft": kg,
        "ratio_median": kg["median_s"] / base["median_s"],
        "ratio_min": kg["min_s"] / base["min_s"],
        "cpu": {"keras_median_s": statistics.median(cpu["keras"]),
                "kgraft_median_s": statistics.median(cpu["kgraft"]),
                "ratio_median": statistics.median(cpu["kgraft"]) / statistics.median(cpu["keras"])},
        "load_average_1min": {"min": min(loads), "max": max(loads)},
        "kgraft_breakdown_median_s": {s: statistics.median(d[s] for d in kg_stages) for s in STAGES},
        "keras_breakdown_median_s": {s: statistics.median(d[s] for d in base_stages) for s in base_stages[0]},
        "check": check,
    }
    del source
    keras.backend.clear_session()
    gc.collect()
    return result


def environment() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    mem = float("nan")
    with contextlib.suppress(OSError, ValueError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "platform": platform.platform(),
    }


def print_report(env: dict, results: list[dict], target: float) -> None:
    print(f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; {env['platform']}")
    print(f"python {env['python']}, keras {env['keras']} ({env['keras_backend']}), "
          f"tensorflow {env['tensorflow']}, numpy {env['numpy']}")
    print()
    header = f"{'model':<16} {'input':>11} {'reps':>4} {'keras med':>10} {'keras min':>10} " \
             f"{'kgraft med':>11} {'kgraft min':>11} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        shape = "x".join(map(str, r["input_shape"]))
        flag = "" if r["ratio_median"] <= target else "  > target"
        print(f"{r['model']:<16} {shape:>11} {r['repeats']:>4} {r['keras']['median_s']:>9.3f}s "
              f"{r['keras']['min_s']:>9.3f}s {r['kgraft']['median_s']:>10.3f}s {r['kgraft']['min_s']:>10.3f}s "
              f"{r['ratio_median']:>5.2f}x{flag}")
    print(f"(ratio = kgraft median / keras median, wall clock; target <= {target:.2f}x)")
    print()
    print("process CPU time (less sensitive to other load on the machine):")
    for r in results:
        c, la = r["cpu"], r["load_average_1min"]
        print(f"{r['model']:<16} keras {c['keras_median_s']:.3f}s  kgraft {c['kgraft_median_s']:.3f}s  "
              f"ratio {c['ratio_median']:.2f}x   (1-min load average during runs: {la['min']:.2f}-{la['max']:.2f})")
    print()
    print("kgraft breakdown (median seconds):")
    print(f"{'model':<16} " + " ".join(f"{s:>12}" for s in STAGES))
    for r in results:
        b = r["kgraft_breakdown_median_s"]
        print(f"{r['model']:<16} " + " ".join(f"{b[s]:>11.3f}s" for s in STAGES))
    print()
    print("keras baseline breakdown (median seconds):")
    stages = list(results[0]["keras_breakdown_median_s"]) if results else []
    print(f"{'model':<16} " + " ".join(f"{s:>12}" for s in stages))
    for r in results:
        b = r["keras_breakdown_median_s"]
        print(f"{r['model']:<16} " + " ".join(f"{b[s]:>11.3f}s" for s in stages))
    print()
    for r in results:
        print(f"check {r['model']}: weights bit-identical, max abs output diff "
              f"{r['check']['max_abs_diff']:.3g} (tolerance {TOLERANCE:g})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ResNet152", "EfficientNetB7"],
                        help="keras.applications constructors (default: ResNet152 EfficientNetB7)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, after one warm-up (default 5)")
    parser.add_argument("--input-shape", type=parse_shape, default=(224, 224, 3),
                        help="S, H,W or H,W,C for every model (default 224 -> 224,224,3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check's random input")
    parser.add_argument("--clear-session", action="store_true",
                        help="keras.backend.clear_session() before every build (default: gc.collect() only)")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="machine-readable results: --json prints JSON instead of the table, "
                             "--json PATH writes it to PATH and prints the table too")
    parser.add_argument("--target", type=float, default=1.1, help="ratio target (default 1.1)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a median ratio exceeds --target")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    import keras

    if not hasattr(keras, "applications"):
        parser.error("this Keras has no keras.applications")
    for name in args.models:
        if not callable(getattr(keras.applications, name, None)):
            parser.error(f"keras.applications has no model {name!r}")

    env = environment()
    results = [bench_model(name, args.input_shape, args.repeats, args.seed, args.clear_session)
               for name in args.models]
    document = {"environment": env, "args": {"models": args.models, "repeats": args.repeats,
                "input_shape": list(args.input_shape), "seed": args.seed, "clear_session": args.clear_session},
                "target": args.target, "tolerance": TOLERANCE,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "results": results}
    if args.json == "-":
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(document, f, indent=2)
                f.write("\n")
        print_report(env, results, args.target)
    if args.check and any(r["ratio_median"] > args.target for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
