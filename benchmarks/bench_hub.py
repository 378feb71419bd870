#!/usr/bin/env python
"""Flattening a keras_hub model: ``kgraft.flatten`` against Keras's own rebuild, same process.

keras_hub backbones are Functional subclasses whose ``get_config()`` holds constructor
arguments, so Keras rebuilds them by running the constructor again. Timed, for a tiny
``BertBackbone`` and ``GPT2Backbone`` (random weights, nothing downloaded):

* baseline (Keras): ``m2 = type(m).from_config(copy.deepcopy(m.get_config())); m2.set_weights(m.get_weights())``
* ``flatten``:      ``kgraft.flatten(m, check=False)`` (lower the recorded graph, inline, build, copy state)
* ``flatten+check``: ``kgraft.flatten(m)`` (the same, then source and result run once on probe inputs)

Runs are interleaved, the order rotating each round, after one warm-up of each; medians of wall
and process CPU time, and the ratio to the baseline (target: flatten <= 1.1x). Before timing, each
result is compared with the source on padded token ids (within 1e-5 of the output's scale, the
same number of variables: GPT-2's tied embedding stays one); a mismatch exits with status 2.
``--profile`` prints where one ``flatten`` spends its time (cProfile, cumulative).

    python benchmarks/bench_hub.py                     # bert + gpt2, 9 rounds
    python benchmarks/bench_hub.py --repeats 3 --models gpt2 --profile
    python benchmarks/bench_hub.py --json hub.json --check   # exit 1 if flatten exceeds --target
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_build import environment, log  # noqa: E402  (same directory)
from timing import interleaved, keras_rebuild, medians  # noqa: E402

TINY = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, vocabulary_size=50, max_sequence_length=8)
MODELS = ("bert", "gpt2")
RUNS = ("keras", "flatten", "flatten+check")


def make(name: str):
    import keras_hub

    backbone = {"bert": keras_hub.models.BertBackbone, "gpt2": keras_hub.models.GPT2Backbone}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return backbone(**TINY)


def run(name: str, model):
    import kgraft

    if name == "keras":
        return keras_rebuild(model)
    return kgraft.flatten(model, check=name.endswith("+check"))


def token_inputs(model) -> dict:
    """Padded token ids (the last three of the first row are padding), their mask, and segment
    ids where the model takes them (BERT)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (2, TINY["max_sequence_length"])
    ids = rng.integers(1, TINY["vocabulary_size"], size=shape)
    ids[0, -3:] = 0
    arrays = {"token_ids": ids, "padding_mask": ids != 0, "segment_ids": rng.integers(0, 2, size=shape)}
    return {key: arrays[key].astype("int32") for key in model.input}


def prove_same(model) -> float:
    """Every run's result computes the source's outputs; exits 2 otherwise."""
    import keras
    import numpy as np

    from kgraft.numerics import max_abs_diff, tolerance

    def outputs(m):  # BERT returns a dict (sequence_output, pooled_output)
        return keras.tree.map_structure(np.asarray, m(x))

    x = token_inputs(model)
    expected = outputs(model)
    worst = 0.0
    for op in RUNS:
        result = run(op, model)
        got = outputs(result)
        diff, tol = max_abs_diff(got, expected), tolerance(expected)
        if not diff <= tol or len(result.weights) != len(model.weights):
            log(f"FAIL: {op}: max abs diff {diff:.3g} (tolerance {tol:.1g}), "
                f"{len(result.weights)} variables (source {len(model.weights)})")
            sys.exit(2)
        worst = max(worst, diff)
    return worst


def profile(model, top: int = 20) -> str:
    """cProfile of one ``flatten`` (check=False): the ``top`` entries by cumulative time, then
    kgraft's own functions only (what is not Keras's from_config and variable creation)."""
    import kgraft

    profiler = cProfile.Profile()
    profiler.runcall(run, "flatten", model)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(top)
    stats.print_stats(re.escape(os.path.dirname(kgraft.__file__)) + r"/(?!\.venv|.*site-packages)", top)
    return out.getvalue()


def bench_model(name: str, repeats: int, show_profile: bool) -> dict:
    import keras

    log(f"== {name}: {TINY}")
    keras.utils.set_random_seed(0)
    model = make(name)
    log(f"   {len(model.layers)} layers, {len(model.weights)} variables, {model.count_params():,} parameters")
    diff = prove_same(model)
    log(f"   every result equals the source (max abs diff {diff:.3g}, same variable count)")

    samples = interleaved({op: (lambda op=op: run(op, model)) for op in RUNS}, repeats)
    med = medians(samples)
    base_wall, base_cpu = med["keras"]
    result = {"model": name, "config": TINY, "layers": len(model.layers), "variables": len(model.weights),
              "repeats": repeats, "max_abs_diff": diff,
              "runs": {op: {"wall_s": w, "cpu_s": c, "vs_keras_wall": w / base_wall, "vs_keras_cpu": c / base_cpu,
                            "wall_samples": [round(s, 4) for s in samples[op]["wall"]]} for op, (w, c) in med.items()}}
    if show_profile:
        result["profile"] = profile(model)
    return result


def report(env: dict, results: list[dict], target: float) -> list[str]:
    lines = [f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['memory_gib']} GiB; python {env['python']}, "
             f"keras {env['keras']}, tensorflow {env['tensorflow']}", "",
             "| model | layers / variables | Keras from_config + set_weights | flatten (check=False) | "
             "flatten (check=True) |", "|---|---|---|---|---|"]
    for r in results:
        k, f, c = (r["runs"][op] for op in RUNS)
        lines.append(f"| {r['model']} | {r['layers']} / {r['variables']} | {k['wall_s'] * 1e3:.0f} ms | "
                     f"{f['wall_s'] * 1e3:.0f} ms: **{f['vs_keras_wall']:.2f}x** (CPU {f['vs_keras_cpu']:.2f}x) | "
                     f"{c['wall_s'] * 1e3:.0f} ms: **{c['vs_keras_wall']:.2f}x** (CPU {c['vs_keras_cpu']:.2f}x) |")
    lines.append(f"(median of {results[0]['repeats'] if results else 0} interleaved rounds, wall clock (process CPU); "
                 f"target: flatten <= {target:.2f}x Keras)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds after one warm-up (default 9)")
    parser.add_argument("--target", type=float, default=1.1)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one flatten per model")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if flatten (check=False) exceeds --target")
    args = parser.parse_args(argv)

    env = environment()
    results = [bench_model(name, args.repeats, args.profile) for name in args.models]
    print("\n".join(report(env, results, args.target)))
    for r in results:
        if "profile" in r:
            print(f"\n== cProfile of one flatten of {r['model']} (check=False)\n{r['profile']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": results}, f, indent=2)
    over = [r["model"] for r in results if r["runs"]["flatten"]["vs_keras_wall"] > args.target]
    if args.check and over:
        log(f"flatten exceeds {args.target:.2f}x Keras on: {', '.join(over)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
