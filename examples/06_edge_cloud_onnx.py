"""Split inference between an edge device and a server: where to cut, and the ONNX files.

A camera board runs the first layers of a ResNet50, sends what crosses the cut over a
20 Mbit/s link, and a server runs the rest. kgraft says what each split point costs (bytes
crossing, parameters and FLOPs on each side), plans the cut that minimises end-to-end latency
(split points and the best multi-tensor cut, found by a min-cut), writes one ONNX file per
partition plus a manifest, and chains them with ONNX Runtime: the chain equals the Keras model.

Run: python examples/06_edge_cloud_onnx.py
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

import kgraft


def main():
    keras.utils.set_random_seed(0)
    # logits, not softmax: random weights give near-uniform probabilities that hide any difference
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")

    costs = kgraft.cut_costs(model)  # one row per split point
    total = costs[0].flops_before + costs[0].flops_after
    # a weak edge device: keep at most a quarter of the FLOPs there, and send as little as possible
    chosen = min((c for c in costs if 0 < c.flops_before <= total / 4), key=lambda c: c.bytes_per_sample)
    print(f"{len(costs)} split points; with <= 25% of the {total / 1e9:.2f} GFLOPs on the edge, the smallest "
          f"crossing is {chosen.refs[0]} ({chosen.bytes_per_sample} bytes/sample, "
          f"{chosen.params_before} of {chosen.params_before + chosen.params_after} params before it)")

    # edge device 8x slower than this machine, 20 Mbit/s link; this machine's speed measured with ORT
    plan = kgraft.plan(model, "20Mbps", edge_slowdown=8)
    for row in plan[:3]:
        print(f"  {row.label:<28} {row.method:<22} {row.total_s * 1e3:7.2f} ms "
              f"(edge {row.edge_s * 1e3:.2f} + link {row.transfer_s * 1e3:.2f} + server {row.server_s * 1e3:.2f})")
    cut = list(chosen.refs)

    with tempfile.TemporaryDirectory() as tmp:
        manifest = kgraft.export_onnx(model, os.path.join(tmp, "parts"), at=[cut])
        for part in manifest["partitions"]:
            print(f"  {part['file']}: {[io['name'] for io in part['inputs']]} -> "
                  f"{[io['name'] for io in part['outputs']]}")
        (y,) = kgraft.run_onnx(os.path.join(tmp, "parts"), x)
    reference = np.asarray(model(x))
    diff = float(np.max(np.abs(y - reference)))
    crossing = manifest["partitions"][0]["bytes_out_per_sample"]
    print(f"ONNX chain vs Keras: max |diff| {diff:.2e}; {crossing} bytes/sample cross the cut")

    assert diff <= 1e-4 and crossing == chosen.bytes_per_sample
    return {"diff": diff, "spread": float(np.max(np.abs(reference[0] - reference[1]))), "crossing": crossing, "expected_crossing": chosen.bytes_per_sample,
            "plan": plan, "n_points": len(costs)}


if __name__ == "__main__":
    main()
