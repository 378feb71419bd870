"""The ONNX backend: export_onnx (one tf2onnx conversion for all partitions), run_onnx, verify.

Small functional models keep the default run fast (~1 s per conversion); the real
architectures (ResNet50, MobileNetV2) are marked ``slow``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnx  # noqa: E402

import kgraft  # noqa: E402
from kgraft.backends import onnx as konnx  # noqa: E402


# ---------------------------------------------------------------------------- models
def residual_model():
    """x -> c1 -> r1 -> c2 -> bn2 -> r2 -> add(r1, r2) -> gap -> d: a residual block."""
    x = keras.Input((16, 16, 3), name="x")
    r1 = keras.layers.ReLU(name="r1")(keras.layers.Conv2D(8, 3, padding="same", name="c1")(x))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(r1)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    r2 = keras.layers.ReLU(name="r2")(h)
    s = keras.layers.Add(name="add")([r1, r2])
    y = keras.layers.Dense(5, name="d")(keras.layers.GlobalAveragePooling2D(name="gap")(s))
    model = keras.Model(x, y, name="resblock")
    bn = model.get_layer("bn2")  # non-trivial statistics, so BatchNormalization is really tested
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.standard_normal(8).astype("float32") * 0.1)
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    return model


def two_io_model():
    """Two inputs, two outputs; ``aux`` is computed early and must be passed through."""
    a = keras.Input((6,), name="a")
    b = keras.Input((4,), name="b")
    ha = keras.layers.Dense(8, activation="relu", name="ha")(a)
    hb = keras.layers.Dense(8, activation="relu", name="hb")(b)
    aux = keras.layers.Dense(2, name="aux")(ha)
    cat = keras.layers.Concatenate(name="cat")([ha, hb])
    h = keras.layers.Dense(8, activation="tanh", name="h")(cat)
    out = keras.layers.Dense(3, name="out")(h)
    return keras.Model([a, b], [out, aux], name="twoio")


@keras.saving.register_keras_serializable(package="kgraft_test_onnx")
class ErfInv(keras.layers.Layer):
    """keras.ops.erfinv: a TF op (Erfinv) that tf2onnx cannot convert at any opset."""

    def call(self, x):
        return keras.ops.erfinv(x)


@keras.saving.register_keras_serializable(package="kgraft_test_onnx")
class CumSum(keras.layers.Layer):
    """keras.ops.cumsum: TF Cumsum, which ONNX has from opset 11."""

    def call(self, x):
        return keras.ops.cumsum(x, axis=1)


@keras.saving.register_keras_serializable(package="kgraft_test_onnx")
class SymmetricPad(keras.layers.Layer):
    """Symmetric padding: tf2onnx's Pad handler refuses it below opset 9 (a handler failure)."""

    def call(self, x):
        return keras.ops.pad(x, [[0, 0], [1, 1]], mode="symmetric")


def dense_with(layer):
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="d1")(x)
    return keras.Model(x, keras.layers.Dense(2, name="d2")(layer(h)), name="odd")


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def keras_out(model, x):
    out = model(x, training=False)
    return [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


def check_chain(model, manifest, x, atol=1e-4):
    got = kgraft.run_onnx(manifest, x)
    want = keras_out(model, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.max(np.abs(g - w)) <= atol, np.max(np.abs(g - w))


def files_of(manifest):
    return [os.path.join(manifest["dir"], p["file"]) for p in manifest["partitions"]]


def assert_names_are_refs(manifest):
    for part, path in zip(manifest["partitions"], files_of(manifest)):
        graph = onnx.load(path).graph
        assert [v.name for v in graph.input] == [io["name"] for io in part["inputs"]]
        assert [v.name for v in graph.output] == [io["name"] for io in part["outputs"]]
        for io in part["inputs"] + part["outputs"]:
            assert io["name"] == io["ref"]
        for v in list(graph.input) + list(graph.output):
            assert v.type.tensor_type.shape.dim[0].dim_param == "batch"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def resblock():
    return residual_model()


@pytest.fixture(scope="module")
def exports(resblock, tmp_path_factory):
    """The residual model exported whole, at a split point, at a multi-tensor cut, and at two
    cuts with the skip tensor passed through the middle partition."""
    root = tmp_path_factory.mktemp("onnx")
    cuts = {"whole": None, "single": "r1", "multi": [["c2", "r1"]], "through": [["c2", "r1"], ["r2", "r1"]]}
    return {k: kgraft.export_onnx(resblock, root / k, at=at, cut_layout="keras") for k, at in cuts.items()}


# ---------------------------------------------------------------------------- export + run
@pytest.mark.parametrize("which", ["whole", "single", "multi", "through"])
def test_chain_equals_keras(resblock, exports, which):
    man = exports[which]
    check_chain(resblock, man, rand((3, 16, 16, 3)))
    report = konnx.verify(resblock, man)
    assert report.ok and report.max_abs_diff <= 1e-4
    cut_names = {d.name for d in report.outputs if d.kind == "cut"}
    assert cut_names == {io["name"] for p in man["partitions"][:-1] for io in p["outputs"]}


def test_single_split_manifest(resblock, exports):
    man = exports["single"]
    assert man["format"] == "kgraft-onnx/1" and man["cuts"] == [["r1"]] and man["opset"] == 17
    assert [p["file"] for p in man["partitions"]] == ["part0.onnx", "part1.onnx"]
    p0, p1 = man["partitions"]
    assert [io["name"] for io in p0["inputs"]] == ["x"] and p0["inputs"][0]["produced_by"] is None
    assert [io["name"] for io in p0["outputs"]] == ["r1"]
    assert p1["inputs"] == p0["outputs"]
    assert [io["name"] for io in p1["outputs"]] == ["d"] and man["outputs"] == p1["outputs"]
    assert p0["outputs"][0]["shape"] == [None, 16, 16, 8] and p0["outputs"][0]["dtype"] == "float32"
    assert p0["outputs"][0]["bytes_per_sample"] == 16 * 16 * 8 * 4 == p0["bytes_out_per_sample"]
    assert p0["inputs"][0]["bytes_per_sample"] == 16 * 16 * 3 * 4
    assert set(p0["layers"]) == {"c1", "r1"} and set(p1["layers"]) == {"c2", "bn2", "r2", "add", "gap", "d"}
    assert man["conversion"] == {"tool": "tf2onnx", "strategy": "joint", "conversions": 1}
    assert man["cut_layout"] == "keras" and {io["layout"] for io in p0["inputs"] + p0["outputs"]} == {"keras"}
    assert set(man["versions"]) >= {"kgraft", "tensorflow", "keras", "tf2onnx", "onnx"}


def test_manifest_file_is_what_export_returned(exports):
    for man in exports.values():
        with open(os.path.join(man["dir"], "manifest.json")) as f:
            on_disk = json.load(f)
        assert on_disk == {k: v for k, v in man.items() if k not in ("dir", "export_seconds", "cache")}


def test_multi_tensor_cut_bytes_are_analytic(resblock, exports):
    """What crosses a cut = the cut tensors, then skip tensors still needed downstream."""
    shape_bytes = {name: int(np.prod(resblock.get_layer(name).output.shape[1:])) * 4 for name in ("c2", "r1", "r2")}
    p0, p1 = exports["multi"]["partitions"]
    assert [io["name"] for io in p0["outputs"]] == ["c2", "r1"]
    assert [io["bytes_per_sample"] for io in p0["outputs"]] == [shape_bytes["c2"], shape_bytes["r1"]]
    assert p0["bytes_out_per_sample"] == shape_bytes["c2"] + shape_bytes["r1"] == p1["bytes_in_per_sample"]


def test_skip_tensor_passes_through_middle_partition(exports):
    man = exports["through"]
    p0, p1, p2 = man["partitions"]
    assert [io["name"] for io in p1["inputs"]] == ["c2", "r1"]
    assert [io["name"] for io in p1["outputs"]] == ["r2", "r1"]
    assert [io["produced_by"] for io in p1["outputs"]] == [1, 0]  # r1 is passed through
    assert [io["name"] for io in p2["inputs"]] == ["r2", "r1"]
    graph = onnx.load(files_of(man)[1]).graph  # in the file: output r1 *is* input r1
    assert "r1" in [v.name for v in graph.input] and "r1" in [v.name for v in graph.output]
    assert all("r1" not in node.output for node in graph.node)


def test_names_are_refs_and_files_pass_checker(exports):
    for man in exports.values():
        assert_names_are_refs(man)
        for path in files_of(man):
            onnx.checker.check_model(path, full_check=True)
            model = onnx.load(path)
            assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
            assert model.producer_name == "kgraft"


def test_partitions_run_standalone(resblock, exports):
    """An edge device runs part0 alone and ships its outputs; the server runs part1 on them."""
    import onnxruntime as ort

    man, x = exports["multi"], rand((2, 16, 16, 3), seed=3)
    s0, s1 = (ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in files_of(man))
    sent = dict(zip([o.name for o in s0.get_outputs()], s0.run(None, {"x": x})))
    assert sorted(sent) == ["c2", "r1"]
    (y,) = s1.run(None, sent)
    assert np.max(np.abs(y - keras_out(resblock, x)[0])) <= 1e-4


def test_sessions_created_once_and_batch_free(resblock, exports, monkeypatch):
    import onnxruntime as ort

    created = []
    real = ort.InferenceSession

    def counting(*args, **kwargs):
        created.append(args[0] if args else kwargs.get("path_or_bytes"))
        return real(*args, **kwargs)

    konnx.clear_cache()
    monkeypatch.setattr(ort, "InferenceSession", counting)
    man = exports["through"]
    for batch in (1, 4, 7):
        check_chain(resblock, man, rand((batch, 16, 16, 3), seed=batch))
    kgraft.run_onnx(man["dir"], rand((2, 16, 16, 3)))
    kgraft.run_onnx(os.path.join(man["dir"], "manifest.json"), rand((2, 16, 16, 3)))
    assert len(created) == 3  # one session per partition, reused by every call
    pipeline = konnx.load(man["dir"])
    assert pipeline is konnx.load(man) and len(pipeline) == 3
    assert isinstance(pipeline, konnx.OnnxPipeline)
    runner = konnx.OnnxPipeline(man["dir"])  # a pipeline object is reusable on its own
    assert len(created) == 6
    x = rand((3, 16, 16, 3))
    np.testing.assert_array_equal(runner.run(x)[0], runner(x)[0])
    assert len(created) == 6


def test_bound_chain_runs_again_without_touching_earlier_results(resblock, exports):
    """The chain binds each session's outputs once per input shape and runs into that memory
    again; what a run returned is the caller's own (a later run does not overwrite it), a new
    batch size binds anew, and the pass-through r1 reaches the last partition."""
    pipeline = konnx.OnnxPipeline(exports["through"]["dir"])
    x, y = rand((3, 16, 16, 3), seed=5), rand((3, 16, 16, 3), seed=6)
    first = pipeline.run(x)[0]
    kept = first.copy()
    cut = pipeline.run_all(x)["r1"]
    for a in (y, x, y):  # the bound path: same shapes
        (got,) = pipeline.run(a)
        assert np.max(np.abs(got - keras_out(resblock, a)[0])) <= 1e-4
    np.testing.assert_array_equal(first, kept)
    assert np.max(np.abs(cut - pipeline.run_all(y)["r1"])) > 1e-3  # r1 is y's now, the array x's still
    for batch in (1, 3):
        a = rand((batch, 16, 16, 3), seed=batch)
        assert np.max(np.abs(pipeline.run(a)[0] - keras_out(resblock, a)[0])) <= 1e-4


def test_chain_whose_output_shape_follows_the_values():
    """NonZero's output length depends on the values: the memory bound for one run does not fit
    the next, which then runs unbound (and so do the later ones), each with its own answer."""
    import onnx.helper as h
    import onnxruntime as ort

    graph = h.make_graph([h.make_node("NonZero", ["x"], ["y"])], "nonzero",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.INT64, [1, None])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    chain = konnx.SessionChain([ort.InferenceSession(model.SerializeToString(),
                                                             providers=["CPUExecutionProvider"])])
    for values in ([0, 1, 0, 2], [0, 1, 0, 2], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 3, 0]):
        x = np.array(values, "float32")
        np.testing.assert_array_equal(chain.run({"x": x}, ["y"])["y"], np.array(np.nonzero(x)))


def test_input_forms_and_errors(resblock, exports):
    man, x = exports["single"], rand((2, 16, 16, 3))
    want = kgraft.run_onnx(man, x)[0]
    for form in ([x], {"x": x}, x.astype(np.float64)):
        np.testing.assert_allclose(kgraft.run_onnx(man, form)[0], want, atol=1e-6)
    with pytest.raises(kgraft.KgraftError, match="expected \\['x'\\]"):
        kgraft.run_onnx(man, {"y": x})
    with pytest.raises(kgraft.KgraftError, match="expects \\(batch, 16, 16, 3\\)"):
        kgraft.run_onnx(man, rand((2, 8, 8, 3)))
    with pytest.raises(kgraft.KgraftError, match="no ONNX export"):
        kgraft.run_onnx(os.path.join(man["dir"], "nope"), x)


def test_two_inputs_two_outputs_early_output_passed_through(tmp_path, unchanged):
    model = two_io_model()
    with unchanged(model):
        man = kgraft.export_onnx(model, tmp_path / "e", at=[["cat", "aux"], ["h", "aux"]])
    p0, p1, p2 = man["partitions"]
    assert [io["name"] for io in p0["inputs"]] == ["a", "b"]
    assert [io["name"] for io in p0["outputs"]] == ["cat", "aux"]
    assert [io["name"] for io in p1["outputs"]] == ["h", "aux"]
    assert [io["name"] for io in p2["outputs"]] == ["out", "aux"] == [io["name"] for io in man["outputs"]]
    assert [io["produced_by"] for io in p2["outputs"]] == [2, 0]  # aux: computed early, carried along
    a, b = rand((3, 6)), rand((3, 4), seed=1)
    check_chain(model, man, [a, b])
    check_chain(model, man, {"b": b, "a": a})
    assert konnx.verify(model, man, inputs=[a, b]).ok
    assert_names_are_refs(man)


def test_single_ref_after_an_early_output(tmp_path):
    """``cat`` is not a split point (aux bypasses it), but aux is computed before it: passed through."""
    model = two_io_model()
    man = kgraft.export_onnx(model, tmp_path / "e", at="cat")
    p0, p1 = man["partitions"]
    assert [io["name"] for io in p0["outputs"]] == ["cat", "aux"] == [io["name"] for io in p1["inputs"]]
    assert [(io["name"], io["produced_by"]) for io in p1["outputs"]] == [("out", 1), ("aux", 0)]
    check_chain(model, man, [rand((2, 6)), rand((2, 4), seed=1)])


def test_per_partition_strategy_gives_the_same_export(resblock, exports, tmp_path):
    man = konnx.export(resblock, tmp_path / "pp", at=[["c2", "r1"], ["r2", "r1"]],
                       strategy="per-partition")
    assert man["conversion"] == {"tool": "tf2onnx", "strategy": "per-partition", "conversions": 3}
    assert man["partitions"] == exports["through"]["partitions"]
    check_chain(resblock, man, rand((2, 16, 16, 3)))


def test_nchw_cut_layout_needs_no_transposes_at_cuts(resblock, exports, tmp_path):
    man = kgraft.export_onnx(resblock, tmp_path / "nchw", at=[["c2", "r1"], ["r2", "r1"]], cut_layout="nchw")
    assert man["cut_layout"] == "nchw"
    p0, p1, p2 = man["partitions"]
    assert p0["inputs"][0]["layout"] == "keras" and p2["outputs"][0]["layout"] == "keras"
    for io in p1["inputs"] + p1["outputs"]:
        assert io["layout"] == "nchw" and io["shape"] == [None, 8, 16, 16] and io["keras_shape"] == [None, 16, 16, 8]
    assert [p["bytes_out_per_sample"] for p in man["partitions"]] == \
        [p["bytes_out_per_sample"] for p in exports["through"]["partitions"]]
    for part, path in zip(man["partitions"], files_of(man)):
        graph = onnx.load(path).graph
        for value, io in zip(list(graph.input) + list(graph.output), part["inputs"] + part["outputs"]):
            assert [d.dim_value or None for d in value.type.tensor_type.shape.dim] == io["shape"]
    middle = onnx.load(files_of(man)[1]).graph
    assert "Transpose" not in {n.op_type for n in middle.node}
    check_chain(resblock, man, rand((3, 16, 16, 3)))
    report = konnx.verify(resblock, man)  # cut tensors are compared after transposing back
    assert report.ok and {d.name for d in report.outputs if d.kind == "cut"} == {"c2", "r1", "r2"}


def test_export_from_a_model_file(resblock, tmp_path):
    path = tmp_path / "m.keras"
    resblock.save(path)
    man = kgraft.export_onnx(str(path), tmp_path / "e", at="add", opset=13)
    assert man["opset"] == 13 and [io["name"] for io in man["partitions"][0]["outputs"]] == ["add"]
    check_chain(resblock, man, rand((2, 16, 16, 3)))


# ---------------------------------------------------------------------------- writing
def test_existing_directory_is_kept_unless_overwrite(resblock, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(kgraft.KgraftError, match="not empty; pass overwrite=True"):
        kgraft.export_onnx(resblock, out, at="r1")
    assert os.listdir(out) == ["keep.txt"]
    man = kgraft.export_onnx(resblock, out, at="r1", overwrite=True)
    assert sorted(os.listdir(out)) == ["manifest.json", "part0.onnx", "part1.onnx"]
    assert os.listdir(tmp_path) == ["e"]  # no temporary directories left behind
    check_chain(resblock, man, rand((1, 16, 16, 3)))


def test_failed_export_leaves_nothing(tmp_path):
    with pytest.raises(kgraft.UnsupportedModelError):
        kgraft.export_onnx(dense_with(ErfInv(name="inv")), tmp_path / "e")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("opset", [5, 19, "17"])
def test_opset_outside_tf2onnx_range(resblock, tmp_path, opset):
    with pytest.raises(kgraft.KgraftError, match="opset"):
        kgraft.export_onnx(resblock, tmp_path / "e", opset=opset)


@pytest.mark.parametrize("layer, asked, minimum, op", [
    (CumSum, 9, 11, "Cumsum"),  # tf2onnx has no Cumsum handler below 11
    (SymmetricPad, 8, 9, "Pad"),  # the Pad handler itself fails below 9
])
def test_opset_too_low_names_the_minimum(tmp_path, layer, asked, minimum, op):
    model = dense_with(layer(name="odd_one"))
    with pytest.raises(konnx.OpsetError) as info:
        kgraft.export_onnx(model, tmp_path / "e", opset=asked)
    message = str(info.value)
    assert info.value.minimum == minimum and isinstance(info.value, kgraft.KgraftError)
    assert f"minimum opset needed is {minimum}" in message
    assert f"layer 'odd_one' ({layer.__name__}) uses TF op '{op}'" in message
    assert "Traceback" not in message
    man = kgraft.export_onnx(model, tmp_path / "ok", opset=minimum)
    check_chain(model, man, rand((2, 4)))


def test_unconvertible_op_names_the_layer(tmp_path):
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, activation="tanh", name="d1")(x)
    y = keras.layers.Dense(2, name="d2")(ErfInv(name="inverse_erf")(h))
    model = keras.Model(x, y)
    with pytest.raises(kgraft.UnsupportedModelError) as info:
        kgraft.export_onnx(model, tmp_path / "e", at="d1")
    message = str(info.value)
    assert "layer 'inverse_erf' (ErfInv) in partition 1 uses TF op 'Erfinv'" in message
    assert "Traceback" not in message and "at any opset" in message
    man = kgraft.export_onnx(kgraft.extract(model, "d1"), tmp_path / "edge")  # what can be exported, is
    assert [io["name"] for io in man["outputs"]] == ["d1"]


def test_bad_refs_and_cuts_are_reported(resblock, tmp_path):
    with pytest.raises(kgraft.RefError):
        kgraft.export_onnx(resblock, tmp_path / "e", at="r9")
    with pytest.raises(kgraft.CutError):
        kgraft.export_onnx(resblock, tmp_path / "e", at="c2")
    assert not os.path.exists(tmp_path / "e")


def test_verify_flags_a_mismatch(exports):
    other = residual_model()  # same architecture, other random weights
    with pytest.raises(konnx.OnnxMismatchError, match="MISMATCH"):
        konnx.verify(other, exports["single"])
    report = konnx.verify(other, exports["single"], strict=False)
    assert not report.ok and report.max_abs_diff > 1e-4
    assert "FAIL" in str(report)


# ---------------------------------------------------------------------------- real architectures
@pytest.mark.slow
def test_resnet50_split_at_block_output(tmp_path):
    model = keras.applications.ResNet50(input_shape=(32, 32, 3), weights=None, classifier_activation=None)
    man = kgraft.export_onnx(model, tmp_path / "r50", at="conv4_block6_out")
    p0, p1 = man["partitions"]
    assert [io["name"] for io in p0["outputs"]] == ["conv4_block6_out"] == [io["name"] for io in p1["inputs"]]
    # auto layout: the cut is held channels-first, as the ONNX convolutions compute it
    assert p0["outputs"][0]["shape"] == [None, 1024, 2, 2] and p0["outputs"][0]["keras_shape"] == [None, 2, 2, 1024]
    assert p0["outputs"][0]["bytes_per_sample"] == 2 * 2 * 1024 * 4
    assert_names_are_refs(man)
    report = konnx.verify(model, man, inputs=rand((2, 32, 32, 3)), atol=1e-4)
    assert report.ok and all(d.scale > 1e-2 for d in report.outputs), str(report)
    check_chain(model, man, rand((3, 32, 32, 3), seed=5))


def test_mobilenetv2_at_multi_tensor_cut(tmp_path, enliven):
    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                           classifier_activation=None)
    enliven(model)
    cuts = [["block_2_expand_relu", "block_1_project_BN"], ["block_2_depthwise_relu", "block_1_project_BN"]]
    man = kgraft.export_onnx(model, tmp_path / "mnv2", at=cuts)
    p0, p1, p2 = man["partitions"]
    assert [io["name"] for io in p0["outputs"]] == cuts[0]
    assert [io["name"] for io in p1["outputs"]] == cuts[1]  # the skip tensor passes through p1
    assert [io["produced_by"] for io in p1["outputs"]] == [1, 0]
    expand = model.get_layer("block_2_expand_relu").output.shape
    project = model.get_layer("block_1_project_BN").output.shape
    assert p0["bytes_out_per_sample"] == (int(np.prod(expand[1:])) + int(np.prod(project[1:]))) * 4
    assert_names_are_refs(man)
    report = konnx.verify(model, man, inputs=rand((2, 64, 64, 3)), atol=1e-4)
    assert report.ok and all(d.scale > 1e-1 for d in report.outputs), str(report)
