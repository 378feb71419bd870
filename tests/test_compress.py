"""Compressed cut tensors (export_onnx compress="fp16"|"int8"): bytes, files, numbers, planner.

The int8 check that matters is on a model that is really trained: a small CNN trained here on
scikit-learn's bundled digits (no download), whose int8-split predictions must agree with Keras.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402

import kgraft  # noqa: E402
from kgraft.backends import onnx as konnx  # noqa: E402


def skip_model():
    """x -> c1 -> r1 -> c2 -> r2 -> add(r1, r2) -> c3 -> gap -> d (cuts [c2, r1], [r2, r1]:
    the middle partition passes r1 through)."""
    x = keras.Input((8, 8, 3), name="x")
    r1 = keras.layers.ReLU(name="r1")(keras.layers.Conv2D(4, 3, padding="same", name="c1")(x))
    r2 = keras.layers.ReLU(name="r2")(keras.layers.Conv2D(4, 3, padding="same", name="c2")(r1))
    s = keras.layers.Add(name="add")([r1, r2])
    h = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(4, 3, padding="same", name="c3")(s))
    return keras.Model(x, keras.layers.Dense(3, name="d")(h), name="skipnet")


CUTS = [["c2", "r1"], ["r2", "r1"]]
PER_SAMPLE = 8 * 8 * 4  # values in each cut tensor


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(scope="module")
def model():
    return skip_model()


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    calibration = rand((32, 8, 8, 3), 1)
    root = tmp_path_factory.mktemp("compress")
    return {c: kgraft.export_onnx(model, root / str(c), at=CUTS, compress=c,
                                  calibration=calibration if c == "int8" else None)
            for c in (None, "fp16", "int8")}


@pytest.mark.parametrize("compress, dtype, size", [(None, "float32", 4), ("fp16", "float16", 2), ("int8", "int8", 1)])
def test_bytes_and_file_types(exports, compress, dtype, size):
    manifest = exports[compress]
    for part in manifest["partitions"][:-1]:
        for io in part["outputs"]:
            assert io["dtype"] == dtype and io["bytes_per_sample"] == PER_SAMPLE * size
        assert part["bytes_out_per_sample"] == 2 * PER_SAMPLE * size
    assert manifest["inputs"][0]["dtype"] == "float32" and manifest["outputs"][0]["dtype"] == "float32"
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    for i, part in enumerate(manifest["partitions"]):
        graph = onnx.load(f"{manifest['dir']}/{part['file']}").graph
        crossing = [v for v in list(graph.input) + list(graph.output) if v.name in {"c2", "r1", "r2"}]
        assert crossing and all(v.type.tensor_type.elem_type == elem for v in crossing)
    if compress == "int8":
        assert manifest["partitions"][0]["bytes_out_per_sample"] * 4 == exports[None]["partitions"][0]["bytes_out_per_sample"]


def test_compression_lives_in_the_graphs(exports):
    ops = lambda m, i: [n.op_type for n in onnx.load(f"{m['dir']}/{m['partitions'][i]['file']}").graph.node]  # noqa: E731
    int8, fp16 = exports["int8"], exports["fp16"]
    assert ops(int8, 0).count("QuantizeLinear") == 2 and "DequantizeLinear" not in ops(int8, 0)
    # the middle partition decodes c2 (it computes r2 from it) and passes r1's int8 bytes on untouched
    assert ops(int8, 1).count("DequantizeLinear") == 1 and ops(int8, 1).count("QuantizeLinear") == 1
    assert ops(int8, 2).count("DequantizeLinear") == 2
    assert ops(fp16, 0).count("Cast") >= 2
    r1 = [io for io in int8["partitions"][1]["outputs"] if io["name"] == "r1"][0]
    assert r1["produced_by"] == 0 and r1["compression"]["method"] == "int8"
    scale, zero = r1["compression"]["scale"], r1["compression"]["zero_point"]
    assert scale > 0 and zero == -128  # r1 is a ReLU output: its range starts at 0


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("compress, rtol", [("fp16", 2e-3), ("int8", 3e-2)])
def test_numbers_stay_close(model, exports, compress, rtol, batch):
    x = rand((batch, 8, 8, 3), 5 + batch)
    want = np.asarray(model(x, training=False))
    got = kgraft.run_onnx(exports[compress]["dir"], x)[0]
    exact = kgraft.run_onnx(exports[None]["dir"], x)[0]
    scale = float(np.max(np.abs(want)))
    assert np.max(np.abs(got - want)) <= rtol * scale
    assert np.max(np.abs(got - exact)) > 1e-7  # really compressed, not a copy of the float32 chain


def test_int8_round_trip_of_a_cut_tensor_is_within_half_a_step(model, exports):
    x = rand((4, 8, 8, 3), 9)
    full = kgraft.backends.onnx.OnnxPipeline(exports[None]["dir"]).run_all(x)
    q = kgraft.backends.onnx.OnnxPipeline(exports["int8"]["dir"]).run_all(x)
    for io in exports["int8"]["partitions"][0]["outputs"]:
        scale, zero = io["compression"]["scale"], io["compression"]["zero_point"]
        decoded = (q[io["name"]].astype(np.float32) - zero) * scale
        inside = (full[io["name"]] >= (-128 - zero) * scale) & (full[io["name"]] <= (127 - zero) * scale)
        assert np.max(np.abs(decoded - full[io["name"]])[inside]) <= scale / 2 + 1e-6


def test_bad_arguments(model, tmp_path):
    with pytest.raises(kgraft.KgraftError, match="compress='int8' needs calibration="):
        kgraft.export_onnx(model, tmp_path / "a", at="c1", compress="int8")
    with pytest.raises(kgraft.KgraftError, match="unknown compress='int4'"):
        kgraft.export_onnx(model, tmp_path / "a", at="c1", compress="int4")
    with pytest.raises(kgraft.KgraftError, match="calibration= is only used with compress='int8'"):
        kgraft.export_onnx(model, tmp_path / "a", at="c1", calibration=rand((2, 8, 8, 3)))
    with pytest.raises(kgraft.KgraftError, match="calibration batch does not fit the model"):
        kgraft.export_onnx(model, tmp_path / "a", at="c1", compress="int8", calibration=rand((2, 8, 8, 1)))
    assert not (tmp_path / "a").exists()


def test_planner_counts_compressed_bytes(model):
    plain = {r.label: r for r in kgraft.plan(model, "10Mbps", flops_per_s=1e9)}
    int8 = {r.label: r for r in kgraft.plan(model, "10Mbps", flops_per_s=1e9, compress="int8")}
    fp16 = {r.label: r for r in kgraft.plan(model, "10Mbps", flops_per_s=1e9, compress="fp16")}
    assert plain["r1"].bytes_per_sample == 4 * PER_SAMPLE
    assert int8["r1"].bytes_per_sample == PER_SAMPLE and fp16["r1"].bytes_per_sample == 2 * PER_SAMPLE
    assert int8["r1"].transfer_s < plain["r1"].transfer_s
    # nothing to compress on the way in: the input crosses as it is
    assert int8["all on server"].bytes_per_sample == plain["all on server"].bytes_per_sample
    with pytest.raises(kgraft.KgraftError, match="unknown compress='int4'"):
        kgraft.plan(model, "10Mbps", flops_per_s=1e9, compress="int4")


# ---------------------------------------------------------------------------- a trained model
def test_int8_on_a_cnn_trained_on_digits(tmp_path):
    """Top-1 agreement with Keras >= 99% and accuracy within 1 point, int8 at both cuts."""
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()  # bundled with scikit-learn: 1797 8x8 images, no download
    images = (digits.images / 16.0).astype("float32")[..., None]
    labels = digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1300], order[1300:]
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(x)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    model = keras.Model(x, keras.layers.Dense(10, name="logits")(h), name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images[train], labels[train], epochs=12, batch_size=64, verbose=0)
    keras_pred = np.argmax(np.asarray(model(images[test])), axis=1)
    keras_acc = float(np.mean(keras_pred == labels[test]))
    assert keras_acc > 0.9  # the model is really trained

    manifest = kgraft.export_onnx(model, tmp_path / "int8", at=["conv2", "fc"], compress="int8",
                                  calibration=images[train[:256]])
    assert [p["bytes_out_per_sample"] for p in manifest["partitions"][:-1]] == [8 * 8 * 32, 64]
    int8_pred = np.argmax(kgraft.run_onnx(manifest["dir"], images[test])[0], axis=1)
    agreement = float(np.mean(int8_pred == keras_pred))
    int8_acc = float(np.mean(int8_pred == labels[test]))
    assert agreement >= 0.99, agreement
    assert abs(int8_acc - keras_acc) <= 0.01, (int8_acc, keras_acc)


@pytest.mark.parametrize("compress", ["fp16", "int8"])
def test_verify_understands_compressed_cut_tensors(model, exports, compress):
    """verify() decodes each compressed tensor (within its rounding), checks every partition on
    the decoded tensors it receives (1e-4), and shows the end-to-end outputs unjudged."""
    from kgraft.backends.onnx.verify import verify

    x = rand((4, 8, 8, 3), 2) * 0.5  # within the calibrated range
    report = verify(model, exports[compress]["dir"], inputs=x)
    kinds = {(o.name, o.kind) for o in report.outputs}
    assert kinds == {("c2", "part0"), ("r1", "part0"), ("r2", "part1"), ("d", "part2"), ("d", "e2e")}
    assert report.ok and "cut tensors: partitions checked on the decoded tensors" in str(report)
    cut = {o.name: o for o in report.outputs if o.kind == "part0"}["c2"]
    assert cut.tolerance is not None and 0 < cut.max_abs_diff <= cut.tolerance  # rounded, within its bound


def test_verify_catches_a_wrong_int8_scale(model, exports, tmp_path):
    """A manifest whose scale no longer matches the graph's QuantizeLinear: the decoded tensor is off."""
    import json
    import shutil

    from kgraft.backends.onnx.verify import OnnxMismatchError, verify

    broken = tmp_path / "broken"
    shutil.copytree(exports["int8"]["dir"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    for part in manifest["partitions"]:
        for io in part["inputs"] + part["outputs"]:
            if io["name"] == "c2" and "compression" in io:
                io["compression"]["scale"] *= 1.5
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OnnxMismatchError, match=r"c2 +part0 .* FAIL"):
        verify(model, broken, inputs=rand((4, 8, 8, 3), 2) * 0.5)


@pytest.mark.parametrize("recurrent", ["lstm", "bigru"])
def test_int8_before_a_masked_recurrent_layer(recurrent, tmp_path):
    """The int8 cut tensor feeds an LSTM's loop (its mask crosses too): ONNX Runtime 1.32 aborted
    the process opening a consumer whose DequantizeLinear reaches a Loop body's capture through a
    Transpose, so there the tensor is decoded as (Cast(q) - zero_point) * scale; the file opens
    with ONNX Runtime's default options (in a child process: an abort would end this one) and the
    chain, fed padded ids, follows Keras."""
    import subprocess
    import sys
    import warnings

    layer = keras.layers.LSTM(4) if recurrent == "lstm" else keras.layers.Bidirectional(keras.layers.GRU(3))
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(20, 4, mask_zero=True, name="embedding"), layer], name="seq")
    ids = np.random.default_rng(2).integers(1, 20, (6, 7)).astype("int32")
    for k in range(1, 6):
        ids[k, 7 - k:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", konnx.ConversionFallbackWarning)
        manifest = kgraft.export_onnx(model, tmp_path / "q", at="embedding", compress="int8", calibration=ids)
    tail = tmp_path / "q" / "part1.onnx"
    ops = [n.op_type for n in onnx.load(tail).graph.node]
    assert "DequantizeLinear" not in ops and ops[:3] == ["Cast", "Sub", "Mul"]
    opened = subprocess.run([sys.executable, "-c", "import sys, onnxruntime as ort; "
                             "ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])", str(tail)],
                            capture_output=True, text=True)
    assert opened.returncode == 0, opened.stderr[-2000:]
    want = np.asarray(model(ids, training=False))
    got = kgraft.run_onnx(manifest["dir"], ids)[0]
    exact = kgraft.run_onnx(kgraft.export_onnx(model, tmp_path / "f", at="embedding")["dir"], ids)[0]
    assert np.max(np.abs(got - want)) <= 3e-2 * float(np.max(np.abs(want)))
    assert np.max(np.abs(got - exact)) > 1e-7
    assert manifest["partitions"][1]["inputs"][0]["compression"]["method"] == "int8"
    assert konnx.verify(model, manifest, inputs=ids).ok
