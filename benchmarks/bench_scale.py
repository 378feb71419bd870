"""IR scale: lowering, printing and passes on synthetic model configs of 10k to 1M call sites.

No TensorFlow and no Keras: the configs are plain dicts in the Keras 3 functional format (as
``model.get_config()`` returns them), built directly, so what is measured is kgraft's IR and pass
code alone. Three families of models:

* ``residual``:  a deep chain of residual blocks ``x + dense(relu(dense(x)))`` (4 call sites a
  block; every block output is a split point), with an unused "tap" layer every 64 blocks so that
  ``prune-unreachable`` has something to drop;
* ``inception``: wide blocks of ``--width`` parallel two-conv branches joined by a Concatenate
  (``2 * width + 1`` call sites a block);
* ``nested``:    ``--nest-depth`` Functional models nested one inside the next, each a residual
  chain with the next model called in its middle; every level reuses the same layer names, so
  inlining renames almost every layer (the worst case for naming).

Each (family, size) runs in a fresh subprocess so that its peak RSS is its own. Stages (each
through the public API, so the pass manager's verification and mutation check are included):

* ``lower``:  ``kgraft.frontend.lower_config(config)``
* ``print``:  ``str(graph)``
* ``inline``: ``kgraft.passes.inline_nested(graph)``
* ``prune``:  ``kgraft.passes.prune_unreachable(graph)``
* ``split_points``: ``kgraft.passes.split_points(flat)`` (``flat`` = the inlined graph)
* ``split``:  ``kgraft.passes.split(flat, at=<the middle split point>)``
* ``floor``:  not kgraft: the least any pass does, one dict of each call site's producers built
  in one sweep over ``flat`` (:func:`floor`). Its growth from 100k to 1M is what the machine's
  memory hierarchy alone adds to a linear Python sweep over a heap of that size; a stage that
  grows no faster than the floor is as linear as Python allows.

Usage::

    python benchmarks/bench_scale.py                       # 10k and 100k call sites, all families
    python benchmarks/bench_scale.py --sizes 10k 100k 1M   # 1M too (about 10 GiB of RAM, minutes)
    python benchmarks/bench_scale.py --families residual --sizes 100k --repeats 1
    python benchmarks/bench_scale.py --json scale.json     # also write the raw results
    python benchmarks/bench_scale.py --check               # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STAGES = ("lower", "print", "inline", "prune", "split_points", "split", "floor")
FAMILIES = ("residual", "inception", "nested")
GROWTH_TARGET = 12.0  # 100k -> 1M: near-linear
SECONDS_TARGET = 2.0  # per stage at 100k call sites


# ---------------------------------------------------------------------------- config dicts
_POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _tensor(t) -> dict:
    layer, node, index, shape = t
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shape), "dtype": "float32", "keras_history": [layer, node, index]}}


class ModelConfig:
    """Accumulates the ``layers`` list of one functional config; tensors are
    ``(layer, node_index, tensor_index, shape)``."""

    def __init__(self, name: str):
        self.name, self.layers, self.inputs = name, [], []

    def input(self, name: str, shape: list) -> tuple:
        self.layers.append({"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                            "name": name, "config": {"batch_shape": shape, "dtype": "float32", "sparse": False,
                                                     "name": name}, "inbound_nodes": []})
        self.inputs.append([name, 0, 0])
        return (name, 0, 0, shape)

    def call(self, cls: str, name: str, config: dict, args: list, shape: list) -> tuple:
        self.layers.append({
            "module": "keras.layers", "class_name": cls, "registered_name": None, "name": name,
            "config": {"name": name, "trainable": True, "dtype": _POLICY, **config},
            "inbound_nodes": [{"args": args, "kwargs": {}}]})
        return (name, 0, 0, shape)

    def nested(self, inner: dict, x: tuple, shape: list) -> tuple:
        name = inner["config"]["name"]
        self.layers.append({**inner, "inbound_nodes": [{"args": [_tensor(x)], "kwargs": {"mask": None}}]})
        return (name, 0, 0, shape)

    def finish(self, outputs: list) -> dict:
        return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
                "name": self.name, "config": {
                    "name": self.name, "trainable": True, "layers": self.layers,
                    "input_layers": self.inputs[0], "output_layers": [[t[0], t[1], t[2]] for t in outputs]}}


def _dense(m: ModelConfig, name: str, x: tuple, units: int = 64) -> tuple:
    cfg = {"units": units, "activation": "linear", "use_bias": True,
           "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                  "config": {"seed": None}, "registered_name": None}}
    return m.call("Dense", name, cfg, [_tensor(x)], [None, units])


def _residual_chain(m: ModelConfig, x: tuple, blocks: int, prefix: str = "block") -> tuple:
    for i in range(blocks):
        p = f"{prefix}{i}"
        a = _dense(m, f"{p}_a", x)
        r = m.call("Activation", f"{p}_relu", {"activation": "relu"}, [_tensor(a)], x[3])
        b = _dense(m, f"{p}_b", r)
        x = m.call("Add", f"{p}_add", {}, [[_tensor(x), _tensor(b)]], x[3])
        if i % 64 == 63:
            _dense(m, f"{p}_tap", x, 8)  # no output uses it
    return x


def residual(n: int, **_) -> dict:
    m = ModelConfig("residual")
    x = m.input("input", [None, 64])
    return m.finish([_residual_chain(m, x, max(1, n // 4))])


def inception(n: int, width: int = 8, **_) -> dict:
    m = ModelConfig("inception")
    x = m.input("input", [None, 16, 16, 64])
    channels = 64 // width
    for i in range(max(1, n // (2 * width + 1))):
        branches = []
        for j in range(width):
            p = f"mixed{i}_b{j}"
            c = m.call("Conv2D", f"{p}_1x1", {"filters": channels, "kernel_size": [1, 1], "padding": "same"},
                       [_tensor(x)], [None, 16, 16, channels])
            branches.append(m.call("Conv2D", f"{p}_3x3", {"filters": channels, "kernel_size": [3, 3],
                                                          "padding": "same"}, [_tensor(c)], [None, 16, 16, channels]))
        x = m.call("Concatenate", f"mixed{i}", {"axis": -1}, [[_tensor(b) for b in branches]], x[3])
    return m.finish([x])


def nested(n: int, nest_depth: int = 32, **_) -> dict:
    blocks = max(2, n // (4 * nest_depth))
    inner = None
    for level in range(nest_depth):
        m = ModelConfig(f"level{level}")
        x = m.input("input", [None, 64])
        x = _residual_chain(m, x, blocks // 2)  # same names at every level: inlining renames them
        if inner is not None:
            x = m.nested(inner, x, [None, 64])
        inner = m.finish([_residual_chain(m, x, blocks - blocks // 2, prefix="top")])
    return inner


# ---------------------------------------------------------------------------- one case
def floor(graph) -> dict:
    """The reference sweep: every call site and operand visited once, one small list allocated
    per call site (as a pass building a new graph allocates)."""
    return {node.id: [ref.node for _, ref in node.operands()] for node in graph.nodes()}


def _timed(fn, repeats: int, cpu: dict, stage: str):
    """The result of the last run and its median wall seconds (median CPU seconds into ``cpu``);
    a full collection before each run, outside the timing."""
    wall, used, result = [], [], None
    for _ in range(repeats):
        result = None
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        used.append(time.process_time() - start_cpu)
    cpu[stage] = statistics.median(used)
    return result, statistics.median(wall)


def run_case(family: str, size: int, repeats: int, width: int, nest_depth: int) -> dict:
    from kgraft import passes
    from kgraft.frontend import lower_config
    from kgraft.ir.nogc import gc_paused

    start = time.perf_counter()
    configs = [globals()[family](size, width=width, nest_depth=nest_depth)]
    generate = time.perf_counter() - start
    seconds, cpu = {}, {}
    graph, seconds["lower"] = _timed(lambda: lower_config(configs[0]), repeats, cpu, "lower")
    configs.clear()  # only the IR from here on (at 1M call sites the config alone is gigabytes)
    text, seconds["print"] = _timed(lambda: str(graph), repeats, cpu, "print")
    lines = text.count("\n")
    del text
    flat, seconds["inline"] = _timed(lambda: passes.inline_nested(graph), repeats, cpu, "inline")
    pruned, seconds["prune"] = _timed(lambda: passes.prune_unreachable(graph), repeats, cpu, "prune")
    del pruned
    points, seconds["split_points"] = _timed(lambda: passes.split_points(flat), repeats, cpu, "split_points")
    at = points[len(points) // 2]
    split, seconds["split"] = _timed(lambda: passes.split(flat, at=at), repeats, cpu, "split")
    parts = partitions_of(split)
    with gc_paused():  # as the passes run
        _, seconds["floor"] = _timed(lambda: floor(flat), repeats, cpu, "floor")
    return {"family": family, "size": size, "call_sites": len(flat), "layers": len(flat.layers),
            "printed_lines": lines, "split_points": len(points), "split_at": at,
            "partition_sizes": [len(p) for p in parts], "generate_s": generate, "seconds": seconds,
            "cpu_seconds": cpu, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0],
            "tensorflow_imported": "tensorflow" in sys.modules or "keras" in sys.modules}


# ---------------------------------------------------------------------------- driver
def parse_size(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: give e.g. 10000, 10k or 1M") from None


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def spawn_case(family: str, size: int, args) -> dict:
    """Run one case in a fresh interpreter (its own peak RSS, no heap left over from the last)."""
    cmd = [sys.executable, __file__, "--case", family, str(size), "--repeats", str(args.repeats),
           "--width", str(args.width), "--nest-depth", str(args.nest_depth)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"family": family, "size": size, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout)


def report(results: list[dict], sizes: list[int]) -> list[str]:
    """Markdown: seconds per stage at each size, and the growth from 100k to 1M where both ran."""
    lines = []
    by = {(r["family"], r["size"]): r for r in results}
    growth = [(a, b) for a, b in zip(sizes, sizes[1:])]
    head = ["family", "stage"] + [size_label(s) for s in sizes] + [f"{size_label(a)}->{size_label(b)}" for a, b in growth]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for family in dict.fromkeys(r["family"] for r in results):
        for stage in STAGES:
            row = [family, stage]
            for s in sizes:
                r = by.get((family, s))
                row.append("error" if r is None or "error" in r else f"{r['seconds'][stage]:.3f} s")
            for a, b in growth:
                ra, rb = by.get((family, a)), by.get((family, b))
                ok = ra and rb and "error" not in ra and "error" not in rb
                row.append(f"{rb['seconds'][stage] / ra['seconds'][stage]:.1f}x" if ok else "-")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("| family | size | call sites | layers | split points | lower+all stages | peak RSS |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['family']} | {size_label(r['size'])} | error: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['family']} | {size_label(r['size'])} | {r['call_sites']:,} | {r['layers']:,} | "
                     f"{r['split_points']:,} | {sum(v for k, v in r['seconds'].items() if k != 'floor'):.2f} s | "
                     f"{r['peak_rss_mib'] / 1024:.2f} GiB |")
    return lines


def misses(results: list[dict]) -> list[str]:
    """Targets missed: > 2 s per stage at 100k, growth > 12x from 100k to 1M."""
    by = {(r["family"], r["size"]): r for r in results if "error" not in r}
    found = [f"{r['family']} {size_label(r['size'])}: {r['error']}" for r in results if "error" in r]
    for (family, size), r in by.items():
        for stage, s in r["seconds"].items():
            if stage == "floor":
                continue
            if size == 100_000 and s > SECONDS_TARGET:
                found.append(f"{family} {stage}: {s:.2f} s at 100k (target {SECONDS_TARGET} s)")
            big = by.get((family, 1_000_000))
            if size == 100_000 and big and big["seconds"][stage] / s > GROWTH_TARGET:
                found.append(f"{family} {stage}: {big['seconds'][stage] / s:.1f}x from 100k to 1M")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[10_000, 100_000],
                        help="call sites per model (default: 10k 100k; add 1M for the full run)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each stage, median taken (default 3; sizes >= 1M run once)")
    parser.add_argument("--width", type=int, default=8, help="branches per inception block (default 8)")
    parser.add_argument("--nest-depth", type=int, default=32, help="levels of the nested family (default 32)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results to PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--case", nargs=2, metavar=("FAMILY", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:
        family, size = args.case[0], int(args.case[1])
        repeats = 1 if size >= 1_000_000 else args.repeats
        json.dump(run_case(family, size, repeats, args.width, args.nest_depth), sys.stdout)
        return 0

    sizes = sorted(set(args.sizes))
    results = []
    for family in args.families:
        for size in sizes:
            print(f"{family} {size_label(size)} ...", file=sys.stderr, flush=True)
            results.append(spawn_case(family, size, args))
            r = results[-1]
            print("   " + (r.get("error") or " ".join(f"{k} {v:.3f}s" for k, v in r["seconds"].items())),
                  file=sys.stderr, flush=True)
    print("\n".join(report(results, sizes)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    problems = misses(results)
    if problems:
        print("\ntargets missed:\n  " + "\n  ".join(problems))
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
