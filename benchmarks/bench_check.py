#!/usr/bin/env python
"""The cost of ``check=True``: kgraft's operations with and without the equivalence check.

The check (:mod:`kgraft.equivalence`) runs the source model and the result once each on probe
inputs and compares their outputs; this measures what that adds, in one process, against:

* the same operation with ``check=False`` (the ratio is the check's cost);
* Keras's own rebuild, :func:`timing.keras_rebuild` (``from_config`` on a deep copy of the
  config, then ``set_weights``). Target: ``split`` with the check <= 1.3x, without it <= 1.0x;
* ``forward``: one eager call of the source model on the check's probe inputs, the unit the
  check is made of (it costs two: the source, then the result or the parts chained).

Operations: ``split`` at the middle split point, ``flatten``, ``extract`` of the same tensor. Runs
are interleaved (:func:`timing.interleaved`: the order rotating each round, after one warm-up of
each); medians of wall and process CPU time. Before timing, every result is compared with the
source model (check=True passing is that comparison), and the check runs once on a deliberately
wrong split, which must raise EquivalenceError naming the changed layer; otherwise the script
exits 2.

    python benchmarks/bench_check.py                      # ResNet152 + EfficientNetB7, 128x128x3, 3 rounds
    python benchmarks/bench_check.py --repeats 1 --models ResNet152
    python benchmarks/bench_check.py --json check.json --check
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_build import environment, log, parse_shape  # noqa: E402  (same directory)
from timing import interleaved, keras_rebuild, medians  # noqa: E402

MODELS = ("ResNet152", "EfficientNetB7")
OPERATIONS = ("split", "flatten", "extract")
RUNS = ("keras", "forward") + tuple(f"{op}{suffix}" for op in OPERATIONS for suffix in ("", "+check"))


def run(name: str, model, cut: str, probe: list):
    import kgraft

    if name == "keras":
        return keras_rebuild(model)
    if name == "forward":
        return model(probe[0] if len(probe) == 1 else probe, training=False)
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
    from kgraft.numerics import probe_inputs, rows_needed

    log(f"== {name} input_shape={shape}")
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    points = kgraft.split_points(model)
    cut = points[len(points) // 2]
    graph = kgraft.lower(model)
    probe = probe_inputs(graph, rows_needed(graph))  # what the check feeds the source
    log(f"   {len(model.layers)} layers, {model.count_params():,} parameters; cut at {cut}")
    for op in RUNS[2:]:
        run(op, model, cut, probe)  # +check: raises unless the result equals the source
    caught = prove_it_catches(model, cut)
    log(f"   every result passed its check; a changed bias in {caught!r} was caught and named")
    del graph
    gc.collect()

    samples = interleaved({op: (lambda op=op: run(op, model, cut, probe)) for op in RUNS}, repeats,
                          lambda i, s: log(f"   round {i}/{repeats}: "
                                           + "  ".join(f"{op} {s[op]['wall'][-1]:.2f}s" for op in RUNS)))
    med = medians(samples)
    result = {"model": name, "input_shape": list(shape), "layers": len(model.layers), "cut": cut,
              "repeats": repeats, "caught": caught, "probe_rows": int(probe[0].shape[0]),
              "runs": {op: {"wall_s": w, "cpu_s": c, "wall_samples": samples[op]["wall"],
                            "cpu_samples": samples[op]["cpu"]} for op, (w, c) in med.items()}}
    (kw, kc), (fw, fc) = med["keras"], med["forward"]
    for op in OPERATIONS:
        (w0, c0), (w1, c1) = med[op], med[f"{op}+check"]
        result[op] = {"check_cost_wall": w1 / w0, "check_cost_cpu": c1 / c0,
                      "check_s_wall": w1 - w0, "check_s_cpu": c1 - c0,
                      "check_in_forwards_cpu": (c1 - c0) / fc,
                      "vs_keras_wall": w0 / kw, "vs_keras_cpu": c0 / kc,
                      "checked_vs_keras_wall": w1 / kw, "checked_vs_keras_cpu": c1 / kc}
    del model
    keras.backend.clear_session()
    gc.collect()
    return result


def report(env: dict, results: list[dict], target: float) -> list[str]:
    lines = [f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; python {env['python']}, "
             f"keras {env['keras']}, tensorflow {env['tensorflow']}", "",
             "| model | Keras rebuild | one forward pass | op | without check | with check | check cost | "
             "with check vs Keras |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        keras_wall, forward = r["runs"]["keras"]["wall_s"], r["runs"]["forward"]
        for op in OPERATIONS:
            o = r[op]
            lines.append(f"| {r['model']} | {keras_wall:.2f} s | {forward['wall_s']:.2f} s (CPU {forward['cpu_s']:.2f} s) "
                         f"| {op} | {r['runs'][op]['wall_s']:.2f} s ({o['vs_keras_wall']:.2f}x Keras, CPU "
                         f"{o['vs_keras_cpu']:.2f}x) | {r['runs'][op + '+check']['wall_s']:.2f} s | "
                         f"**{o['check_cost_wall']:.2f}x** (CPU {o['check_cost_cpu']:.2f}x: {o['check_s_cpu']:.2f} s, "
                         f"{o['check_in_forwards_cpu']:.1f} forward passes) | "
                         f"**{o['checked_vs_keras_wall']:.2f}x** (CPU {o['checked_vs_keras_cpu']:.2f}x) |")
    lines.append(f"(median of {results[0]['repeats'] if results else 0} interleaved rounds, wall clock (process CPU); "
                 f"one forward pass: the source model called eagerly on the check's probe "
                 f"({results[0]['probe_rows'] if results else 1} row); target: split with the check <= {target:.2f}x Keras)")
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
