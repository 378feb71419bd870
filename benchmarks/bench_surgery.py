#!/usr/bin/env python
"""Surgery speed and what folding buys, on ResNet50 (``weights=None``), ratios in one process.

* ``delete_channels`` of 10 layers at once (2 channels of each ``convN_blockM_1_conv``), with
  ``check=False``, against Keras's own rebuild ``from_config(get_config())`` + ``set_weights``:
  one rebuild for all ten jobs, so the target is <= 1.2x. Runs interleaved, medians; the cyclic
  garbage of the previous run is collected before each timed run, so that neither side pays for
  the other's (a full collection of this heap costs ~0.8 s, and with ABBA ordering a collection
  every fourth run lands on the same side every time).
* ``fold_batchnorm``: BatchNormalization layers, parameters and variables before and after
  (53 -> 0); Keras inference latency folded / unfolded (an eager ``model(x, training=False)`` and
  a compiled ``predict_on_batch``, batch 1, interleaved medians of ``--runs`` runs); then both models
  exported to ONNX (``kgraft.export_onnx``) and timed in ONNX Runtime the same way: latency
  folded / unfolded and file sizes (tf2onnx folds BatchNorm itself, so ONNX gains nothing).

    python benchmarks/bench_surgery.py                  # 128x128x3, 5 rounds
    python benchmarks/bench_surgery.py --size 224 --repeats 5 --json surgery.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np

JOBS = [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (3, 4), (4, 1), (4, 2), (4, 3)]


def _timed(fn, collect: bool = False) -> float:
    if collect:
        gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: list, runs: int, collect: bool = False) -> list[float]:
    """Median seconds of each of ``fns`` over ``runs`` runs, the order alternating, after a warm-up
    (``collect``: the garbage collected before each run)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for r in range(runs):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            times[i].append(_timed(fns[i], collect))
    return [statistics.median(t) for t in times]


def bench_delete_channels(model, repeats: int) -> dict:
    import keras

    import kgraft

    jobs = {f"conv{s}_block{b}_1_conv": [0, 1] for s, b in JOBS}

    def keras_rebuild():
        copy = keras.Model.from_config(model.get_config())
        copy.set_weights(model.get_weights())

    def surgery():
        kgraft.delete_channels(model, jobs, check=False)

    result = kgraft.delete_channels(model, jobs)  # once with the check: the zeroed reference agrees
    removed = model.count_params() - result.count_params()
    k, g = _interleaved([keras_rebuild, surgery], repeats, collect=True)
    return {"keras_rebuild_s": k, "delete_channels_s": g, "ratio": g / k, "params_removed": removed}


def _ort_latency(paths: list[str], x: np.ndarray, runs: int) -> list[float]:
    import onnxruntime as ort

    sessions = []
    for path in paths:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        sessions.append((sess, sess.get_inputs()[0].name))
    return _interleaved([lambda s=sess, n=name: s.run(None, {n: x}) for sess, name in sessions], runs)


def bench_fold(model, size: int, runs: int) -> dict:
    import keras

    import kgraft

    folded = kgraft.fold_batchnorm(model)
    count = lambda m: sum(isinstance(l, keras.layers.BatchNormalization) for l in m.layers)  # noqa: E731
    out = {"bn_before": count(model), "bn_after": count(folded), "params_before": model.count_params(),
           "params_after": folded.count_params(), "variables_before": len(model.weights),
           "variables_after": len(folded.weights)}
    x = np.random.default_rng(0).standard_normal((1, size, size, 3)).astype("float32")
    eager = _interleaved([lambda: model(x, training=False), lambda: folded(x, training=False)], runs)
    compiled = _interleaved([lambda: model.predict_on_batch(x), lambda: folded.predict_on_batch(x)], runs)
    out.update(keras_eager_unfolded_ms=eager[0] * 1e3, keras_eager_folded_ms=eager[1] * 1e3,
               keras_eager_ratio=eager[1] / eager[0], keras_compiled_unfolded_ms=compiled[0] * 1e3,
               keras_compiled_folded_ms=compiled[1] * 1e3, keras_compiled_ratio=compiled[1] / compiled[0])
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for name, m in (("unfolded", model), ("folded", folded)):
            kgraft.export_onnx(m, os.path.join(tmp, name))
            dirs.append(os.path.join(tmp, name, "part0.onnx"))
        unfolded_s, folded_s = _ort_latency(dirs, x, runs)
        import onnx

        nodes = [len(onnx.load(p).graph.node) for p in dirs]
        out.update(ort_unfolded_ms=unfolded_s * 1e3, ort_folded_ms=folded_s * 1e3, latency_ratio=folded_s / unfolded_s,
                   onnx_nodes_unfolded=nodes[0], onnx_nodes_folded=nodes[1],
                   onnx_bytes_unfolded=os.path.getsize(dirs[0]), onnx_bytes_folded=os.path.getsize(dirs[1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30, help="inference runs per model (Keras, ONNX Runtime)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import keras

    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    results = {"model": "ResNet50", "size": args.size, "delete_channels": bench_delete_channels(model, args.repeats),
               "fold_batchnorm": bench_fold(model, args.size, args.runs)}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
