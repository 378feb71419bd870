"""export_triton: a Triton model repository whose configs parse as Triton's ModelConfig and chain.

No Triton server runs here (it is not on PyPI); the configs are parsed with the protobuf that
``tritonclient`` ships, and the ensembles are followed step by step with ONNX Runtime, reading
each step's model file and maps exactly as Triton would.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnxruntime as ort  # noqa: E402

import kgraft  # noqa: E402
from kgraft.backends.triton import read_config  # noqa: E402
from kgraft.backends.triton.repository import config_module  # noqa: E402

pytestmark = pytest.mark.serve
CUTS = [["c2", "r1"], ["r2", "r1"]]


def dtype(tensor) -> str:
    return config_module().DataType.Name(tensor.data_type)


def skip_model():
    """x -> c1 -> r1 -> c2 -> r2 -> add(r1, r2) -> c3 -> gap -> d. Cut at [c2, r1] and then at
    [r2, r1], the middle partition (c2 -> r2) passes the skip tensor r1 through."""
    x = keras.Input((8, 8, 3), name="x")
    r1 = keras.layers.ReLU(name="r1")(keras.layers.Conv2D(4, 3, padding="same", name="c1")(x))
    r2 = keras.layers.ReLU(name="r2")(keras.layers.Conv2D(4, 3, padding="same", name="c2")(r1))
    s = keras.layers.Add(name="add")([r1, r2])
    h = keras.layers.Conv2D(4, 3, padding="same", name="c3")(s)
    return keras.Model(x, keras.layers.Dense(3, name="d")(keras.layers.GlobalAveragePooling2D(name="gap")(h)),
                       name="skipnet")


def nested_model():
    """A nested model called twice and a shared layer: refs with '/', '@' name the cut."""
    inner_in = keras.Input((6,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.Dense(6, activation="tanh", name="add")(inner_in), name="inner")
    a = keras.Input((6,), name="a")
    shared = keras.layers.Dense(6, name="shared")
    h = shared(inner(a))
    h2 = shared(keras.layers.Dense(6, name="mid")(h))
    return keras.Model(a, keras.layers.Dense(2, name="head")(h2), name="nest.ed")


def masked_model():
    t = keras.Input((6,), dtype="int32", name="ids")
    e = keras.layers.Embedding(20, 4, mask_zero=True, name="emb")(t)
    h = keras.layers.Dense(4, name="proj")(e)
    return keras.Model(t, keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling1D(name="pool")(h)),
                       name="masked")


def follow_ensemble(repo: str, name: str, feeds: dict) -> dict:
    """Run ensemble ``name`` of the repository as Triton does: steps in order, tensors by the maps."""
    config = read_config(os.path.join(repo, name, "config.pbtxt"))
    assert config.platform == "ensemble"
    tensors = dict(feeds)
    assert set(tensors) == {t.name for t in config.input}
    for step in config.ensemble_scheduling.step:
        session = ort.InferenceSession(os.path.join(repo, step.model_name, "1", "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        step_config = read_config(os.path.join(repo, step.model_name, "config.pbtxt"))
        assert {t.name for t in step_config.input} == set(step.input_map)
        results = session.run(list(step.output_map), {k: tensors[v] for k, v in step.input_map.items()})
        for (model_tensor, ensemble_tensor), value in zip(step.output_map.items(), results):
            assert ensemble_tensor not in tensors, f"{ensemble_tensor} produced twice"
            tensors[ensemble_tensor] = value
    return {t.name: tensors[t.name] for t in config.output}


def keras_outputs(model, x):
    out = model(x, training=False)
    return [np.asarray(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


@pytest.fixture(scope="module")
def skip_repo(tmp_path_factory):
    model = skip_model()
    repo = tmp_path_factory.mktemp("triton") / "repo"
    manifest = kgraft.export_triton(model, repo, at=CUTS)
    return model, str(repo), manifest


def test_repository_layout_and_configs_parse(skip_repo):
    model, repo, manifest = skip_repo
    assert sorted(os.listdir(repo)) == ["manifest.json", "skipnet", "skipnet_from1", "skipnet_part0",
                                        "skipnet_part1", "skipnet_part2"]
    assert os.listdir(os.path.join(repo, "skipnet", "1")) == []  # ensembles: an empty version directory
    with open(os.path.join(repo, "manifest.json")) as f:
        assert json.load(f) == {k: v for k, v in manifest.items() if k != "dir"}
    for i, part in enumerate(manifest["partitions"]):
        config = read_config(os.path.join(repo, f"skipnet_part{i}", "config.pbtxt"))
        assert config.name == f"skipnet_part{i}" and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
        assert part["file"] == f"skipnet_part{i}/1/model.onnx"
        session = ort.InferenceSession(os.path.join(repo, part["file"]), providers=["CPUExecutionProvider"])
        for tensors, declared in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
            assert [t.name for t in tensors] == [d.name for d in declared]
            for t, d in zip(tensors, declared):
                assert list(t.dims) == [-1 if not isinstance(s, int) else s for s in d.shape]
                assert dtype(t) == "TYPE_FP32" and d.type == "tensor(float)"


def test_middle_partition_passes_the_skip_through(skip_repo):
    _, repo, manifest = skip_repo
    middle = manifest["partitions"][1]
    assert {io["name"] for io in middle["inputs"]} == {"c2", "r1"}
    assert {io["name"] for io in middle["outputs"]} == {"r1", "r2"}
    assert {io["name"]: io["produced_by"] for io in middle["outputs"]} == {"r1": 0, "r2": 1}
    ensemble = read_config(os.path.join(repo, "skipnet", "config.pbtxt"))
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps] == ["skipnet_part0", "skipnet_part1", "skipnet_part2"]
    assert dict(steps[1].output_map) == {"r2": "r2"}  # r1 comes from the step that computed it
    assert dict(steps[2].input_map) == {"r2": "r2", "r1": "r1"}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("ensemble, start", [("skipnet", 0), ("skipnet_from1", 1)])
def test_following_the_ensemble_reproduces_the_model(skip_repo, batch, ensemble, start):
    model, repo, manifest = skip_repo
    x = np.random.default_rng(batch).standard_normal((batch, 8, 8, 3)).astype("float32")
    feeds = {"x": x}
    if start:
        feeds = {io["name"]: v for io, v in zip(manifest["partitions"][0]["outputs"],
                                                kgraft.backends.onnx.OnnxPipeline(repo).run_partition(0, feeds).values())}
    (got,) = follow_ensemble(repo, ensemble, feeds).values()
    (want,) = keras_outputs(model, x)
    assert got.shape == want.shape and np.max(np.abs(got - want)) <= 1e-4 * max(1.0, np.max(np.abs(want)))


def test_batching_leaves_the_batch_dimension_out(tmp_path):
    model = skip_model()
    manifest = kgraft.export_triton(model, tmp_path / "repo", at="c1", max_batch_size=8)
    part = read_config(tmp_path / "repo" / "skipnet_part1" / "config.pbtxt")
    assert part.max_batch_size == 8 and part.HasField("dynamic_batching")
    assert [list(t.dims) for t in part.input] == [[8, 8, 4]] and [list(t.dims) for t in part.output] == [[3]]
    ensemble = read_config(tmp_path / "repo" / "skipnet" / "config.pbtxt")
    assert ensemble.max_batch_size == 8 and [list(t.dims) for t in ensemble.input] == [[8, 8, 3]]
    assert manifest["triton"]["max_batch_size"] == 8


def test_refs_with_slash_and_at_get_safe_names(tmp_path):
    model = nested_model()
    manifest = kgraft.export_triton(model, tmp_path / "repo", at=["inner/add", "shared@1"])
    ios = {io["ref"]: io for p in manifest["partitions"] for io in p["inputs"] + p["outputs"]}
    assert ios["add"]["layer"] == "inner/add" and ios["add"]["name"] == "add"  # the nested ref's tensor
    assert ios["shared@1"]["name"] == "shared_1"
    assert manifest["model"] == "nest.ed" and manifest["triton"]["models"][0] == "nest_ed_part0"
    config = read_config(tmp_path / "repo" / "nest_ed_part1" / "config.pbtxt")
    assert [t.name for t in config.input] == ["add"] and [t.name for t in config.output] == ["shared_1"]
    x = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    (got,) = follow_ensemble(str(tmp_path / "repo"), "nest_ed", {"a": x}).values()
    np.testing.assert_allclose(got, keras_outputs(model, x)[0], atol=1e-5)
    np.testing.assert_allclose(kgraft.run_onnx(tmp_path / "repo", x)[0], got, atol=1e-6)  # the manifest runs too


def test_explicit_mask_crosses_as_bool(tmp_path):
    model = masked_model()
    # Keras numbers its op layers per process (not_equal_22 after other tests made masks)
    (mask,) = [op.name for op in model.operations if op.name.startswith("not_equal")]
    kgraft.export_triton(model, tmp_path / "repo", at=[["proj", mask]])
    config = read_config(tmp_path / "repo" / "masked_part0" / "config.pbtxt")
    assert {t.name: dtype(t) for t in config.output} == {"proj": "TYPE_FP32", mask: "TYPE_BOOL"}
    ids = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9]], dtype="int32")
    (got,) = follow_ensemble(str(tmp_path / "repo"), "masked", {"ids": ids}).values()
    np.testing.assert_allclose(got, keras_outputs(model, ids)[0], atol=1e-5)


def test_implicit_mask_crosses_as_its_own_bool_tensor(tmp_path):
    """An Embedding's mask that the LSTM after the cut takes implicitly: the repository carries it
    as ``embedding_mask``, from the step that makes it to the one that reads it."""
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(20, 4, mask_zero=True, name="embedding"),
                              keras.layers.LSTM(4, name="lstm")], name="seq")
    kgraft.export_triton(model, tmp_path / "repo", at="embedding")
    part0, part1 = (read_config(tmp_path / "repo" / f"seq_part{i}" / "config.pbtxt") for i in (0, 1))
    assert {t.name: dtype(t) for t in part0.output} == {"embedding": "TYPE_FP32", "embedding_mask": "TYPE_BOOL"}
    assert [(t.name, list(t.dims)) for t in part1.input] == [("embedding", [-1, -1, 4]), ("embedding_mask", [-1, -1])]
    ids = np.array([[3, 5, 7, 0, 0], [1, 2, 3, 4, 6], [9, 0, 0, 0, 0]], dtype="int32")
    (got,) = follow_ensemble(str(tmp_path / "repo"), "seq", {part0.input[0].name: ids}).values()
    want = keras_outputs(model, ids)[0]
    assert np.max(np.abs(want - keras_outputs(model, np.where(ids == 0, 1, ids))[0])) > 1e-4  # the mask matters
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_compressed_cut_tensors_are_int8_in_the_configs(tmp_path):
    model = skip_model()
    x = np.random.default_rng(0).standard_normal((16, 8, 8, 3)).astype("float32")
    kgraft.export_triton(model, tmp_path / "repo", at="c1", compress="int8", calibration=x)
    part = read_config(tmp_path / "repo" / "skipnet_part1" / "config.pbtxt")
    assert [dtype(t) for t in part.input] == ["TYPE_INT8"]
    (got,) = follow_ensemble(str(tmp_path / "repo"), "skipnet", {"x": x[:3]}).values()
    want = keras_outputs(model, x[:3])[0]
    assert np.max(np.abs(got - want)) <= 0.05 * np.max(np.abs(want))


def test_bad_arguments_and_existing_repository(tmp_path):
    model = skip_model()
    with pytest.raises(kgraft.KgraftError, match="max_batch_size must be an integer >= 0"):
        kgraft.export_triton(model, tmp_path / "r", max_batch_size=-1)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(kgraft.KgraftError, match="overwrite=True"):
        kgraft.export_triton(model, tmp_path / "taken")
    assert (tmp_path / "taken" / "x").read_text() == "keep"


def test_safe_names_never_clash():
    from kgraft.backends.triton.repository import _safe_names

    io = lambda name: {"name": name}  # noqa: E731
    manifest = {"inputs": [io("x")], "partitions": [{"inputs": [io("x")], "outputs": [io("enc:1"), io("enc_1")]},
                                                     {"inputs": [io("enc:1"), io("enc_1")], "outputs": [io("y/z")]}]}
    assert _safe_names(manifest) == {"x": "x", "enc:1": "enc_1_2", "enc_1": "enc_1", "y/z": "y_z"}
