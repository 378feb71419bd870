#!/usr/bin/env python
"""The cost of ``check=True``: kgraft's operations with and without the equivalence check.

The check (:mod:`kgraft.equivalence`) runs the source model and the result once each on probe
inputs and compares their outputs; this measures what that adds, in one process, against:

* the same operation with ``check=False`` (the ratio is the check's cost);
* Keras's own rebuild, ``keras.Model.from_config(model.get_config())`` + ``set_weights(get_weights())``
  (a fresh config each time: Keras 3.15's ``from_config`` consumes its argument). Target: ``split``
  with the check <= 1.3x, without it <= 1.0x.

Operations: ``split`` at the middle split point, ``flatten``, ``extract`` of the same tensor. Runs
are interleaved, the order rotating each round, after one warm-up of each; medians of wall and
process CPU time. Before timing, every result is compared with the source model (check=True
passing is that comparison), and the check runs once on a deliberately wrong split, which must
raise EquivalenceError naming the changed layer; otherwise the script exits 2.

    python benchmarks/bench_check.py                      # ResNet152 + EfficientNetB7, 128x128x3, 3 rounds
    python benchmarks/bench_check.py --repeats 1 --models ResNet152
    python benchmarks/bench_check.py --json check.json --check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_build import environment, log, parse_shape  # noqa: E402  (same directory)

MODELS = ("ResNet152", "EfficientNetB7")
OPERATIONS = ("split", "flatten", "extract")
RUNS = ("keras",) + tuple(f"{op}{suffix}" for op in OPERATIONS for suffix in ("", "+check"))


def run(name: str, model, cut: str):
    import keras

    import kgraft

    if name == "keras":
        rebuilt = keras.Model.from_config(model.get_config())
        rebuilt.set_weights(model.get_weights())
        return rebuilt
    op, _, checked = name.partition("+")
    check = bool(checked)
    if op == "split":
        return kgraft.split(model, cut, check=check)
    if op == "flatten":
        return kgraft.flatten(model, check=check)
    return kgraft.extract(model, cut, check=check)


def prove_it_catches(model, cut: str) -> str:
    """A split whose tail has one bias entry changed must raise EquivalenceError naming that layer.

    The last layer's bias: with ``weights=None`` EfficientNet's activations vanish (~1e-9), so a
    change deep inside it does not reach the outputs at float32 precision, wrong or not.
    """
    import numpy as np

    import kgraft
    from kgraft.equivalence import check_split

    head, tail = kgraft.split(model, cut, check=False)
    victim = next(layer for layer in reversed(tail.layers) if getattr(layer, "bias", None) is not None)
    bias = victim.bias.numpy()
    bias[0] += 1.0
    victim.bias.assign(bias)
    try:
        check_split(model, [head, tail])
    except kgraft.EquivalenceError as e:
        if e.ref != victim.name:
            log(f"FAIL: the check blamed {e.ref!r}, the changed layer is {victim.name!r}")
            sys.exit(2)
        return e.ref
    log(f"FAIL: the check missed a changed bias in {victim.name!r}")
    sys.exit(2)


def bench_model(name: str, shape, repeats: int) -> dict:
    import keras

    import kgraft

    log(f"== {name} input_shape={shape}")
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    points = kgraft.split_points(model)
    cut = points[len(points) // 2]
    log(f"   {len(model.layers)} layers, {model.count_params():,} parameters; cut at {cut}")
    for op in RUNS[1:]:
        run(op, model, cut)  # +check: raises unless the result equals the source
    caught = prove_it_catches(model, cut)
    log(f"   every result passed its check; a changed bias in {caught!r} was caught and named")
    gc.collect()

    wall = {op: [] for op in RUNS}
    cpu = {op: [] for op in RUNS}
    for i in range(repeats + 1):  # round 0 is the warm-up
        for op in RUNS[i % len(RUNS):] + RUNS[:i % len(RUNS)]:
            gc.collect()
            c, t = time.process_time(), time.perf_counter()
            result = run(op, model, cut)
            t, c = time.perf_counter() - t, time.process_time() - c
            del result
            if i:
                wall[op].append(t)
                cpu[op].append(c)
        if i:
            log(f"   round {i}/{repeats}: " + "  ".join(f"{op} {wall[op][-1]:.2f}s" for op in RUNS))
    med = {op: (statistics.median(wall[op]), statistics.median(cpu[op])) for op in RUNS}
    result = {"model": name, "input_shape": list(shape), "layers": len(model.layers), "cut": cut,
              "repeats": repeats, "caught": caught,
              "runs": {op: {"wall_s": w, "cpu_s": c, "wall_samples": wall[op]} for op, (w, c) in med.items()}}
    for op in OPERATIONS:
        (w0, c0), (w1, c1) = med[op], med[f"{op}+check"]
        result[op] = {"check_cost_wall": w1 / w0, "check_cost_cpu": c1 / c0,
                      "vs_keras_wall": w0 / med["keras"][0], "checked_vs_keras_wall": w1 / med["keras"][0],
                      "checked_vs_keras_cpu": c1 / med["keras"][1]}
    del model
    keras.backend.clear_session()
    gc.collect()
    return result


def report(env: dict, results: list[dict], target: float) -> list[str]:
    lines = [f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; python {env['python']}, "
             f"keras {env['keras']}, tensorflow {env['tensorflow']}", "",
             "| model | Keras rebuild | op | without check | with check | check cost | with check vs Keras |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        keras_wall = r["runs"]["keras"]["wall_s"]
        for op in OPERATIONS:
            o = r[op]
            lines.append(f"| {r['model']} | {keras_wall:.2f} s | {op} | {r['runs'][op]['wall_s']:.2f} s "
                         f"({o['vs_keras_wall']:.2f}x Keras) | {r['runs'][op + '+check']['wall_s']:.2f} s | "
                         f"**{o['check_cost_wall']:.2f}x** (CPU {o['check_cost_cpu']:.2f}x) | "
                         f"**{o['checked_vs_keras_wall']:.2f}x** (CPU {o['checked_vs_keras_cpu']:.2f}x) |")
    lines.append(f"(median of {results[0]['repeats'] if results else 0} interleaved rounds, wall clock (process CPU); "
                 f"target: split with the check <= {target:.2f}x Keras)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"keras.applications names ({', '.join(MODELS)})")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up (default 3)")
    parser.add_argument("--input-shape", type=parse_shape, default=(128, 128, 3), help="default 128 (128,128,3)")
    parser.add_argument("--target", type=float, default=1.3)
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if split with the check exceeds --target")
    args = parser.parse_args(argv)

    env = environment()
    results = [bench_model(name, args.input_shape, args.repeats) for name in args.models]
    print("\n".join(report(env, results, args.target)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": vars(args), "results": results}, f, indent=2)
    slow = [r["model"] for r in results if r["split"]["checked_vs_keras_wall"] > args.target]
    if slow:
        print(f"\nsplit with the check over the {args.target}x target: {', '.join(slow)}")
    return 1 if args.check and slow else 0


if __name__ == "__main__":
    sys.exit(main())
