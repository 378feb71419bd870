"""ONNX partitions of the models people have: keras_hub transformers (exact GELU, attention,
several inputs passed through a cut), recurrent layers (Loop bodies reading outer-scope values),
tensor constants, an adapted Normalization, attention with query length != key length.

Every export is checked three ways: each file passes ``onnx.checker`` with the full check, the
ONNX Runtime chain (``run_onnx``, fed real padded data as numpy arrays) equals Keras within 1e-4,
and ``verify`` compares every tensor crossing a cut with Keras too.

keras_hub models are tiny configs built from constructors (random weights, nothing downloaded).
kgraft does not yet take keras_hub's Functional subclasses themselves (being fixed on main), so
each backbone is wrapped as ``keras.Model(backbone.input, backbone.output)``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnx  # noqa: E402

import kgraft  # noqa: E402
from kgraft.backends import onnx as konnx  # noqa: E402

VOCAB, SEQ, BATCH = 50, 8, 3


def tokens(seed=0, seq=SEQ):
    """Token ids and a padding mask: sample k keeps its first seq - k tokens, the rest are 0."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(BATCH, seq)).astype("int32")
    mask = np.ones((BATCH, seq), "int32")
    for k in range(BATCH):
        mask[k, seq - k:] = 0
    return ids * mask, mask


def flat_outputs(model, feed):
    out = model(feed, training=False)
    return [np.asarray(t) for t in keras.tree.flatten(out)]


def check_export(model, path, at, feed, onnx_inputs):
    """Export, check every file, and compare the ONNX chain and every cut tensor with Keras."""
    man = kgraft.export_onnx(model, path, at=at)
    for part in man["partitions"]:
        onnx.checker.check_model(os.path.join(man["dir"], part["file"]), full_check=True)
    got = kgraft.run_onnx(man, onnx_inputs)
    want = flat_outputs(model, feed)
    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=lambda a: a.shape), sorted(want, key=lambda a: a.shape)):
        assert g.shape == w.shape
        assert np.max(np.abs(g - w)) <= 1e-4 * max(1.0, float(np.max(np.abs(w))))
        assert np.max(np.abs(w)) > 1e-3  # the comparison is not between near-zeros
    report = konnx.verify(model, man, inputs=onnx_inputs, atol=1e-4)
    assert report.ok, str(report)
    return man


def wrapped(backbone):
    return keras.Model(backbone.input, backbone.output, name=backbone.name)  # see the module docstring


# ---------------------------------------------------------------------------- keras_hub
keras_hub = pytest.importorskip("keras_hub")

TEXT = {
    "bert": (lambda: keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=SEQ), [["transformer_layer_0", "padding_mask"]]),
    "distilbert": (lambda: keras_hub.models.DistilBertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=SEQ), [["transformer_layer_0", "padding_mask"]]),
    "roberta": (lambda: keras_hub.models.RobertaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=SEQ), [["transformer_layer_0", "padding_mask"]]),
    "gpt2": (lambda: keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=SEQ), "transformer_layer_1"),
    "gemma": (lambda: keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=16,
        intermediate_dim=32, head_dim=8), [["decoder_block_0", "padding_mask"]]),
}


@pytest.mark.parametrize("name", sorted(TEXT))
def test_text_backbone_at_a_cut(name, tmp_path):
    make, at = TEXT[name]
    model = wrapped(make())
    ids, mask = tokens()
    feed = {"token_ids": ids, "padding_mask": mask}
    if name == "bert":
        feed["segment_ids"] = (np.arange(SEQ)[None, :] >= SEQ // 2).repeat(BATCH, 0).astype("int32")
    man = check_export(model, tmp_path / name, at, feed, {k: feed[k] for k in feed})
    assert man["conversion"]["strategy"] == "joint"
    assert len(man["partitions"]) == 2


def test_whisper_three_inputs_two_passed_through(tmp_path):
    model = wrapped(keras_hub.models.WhisperBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, num_mels=8,
        max_encoder_sequence_length=16, max_decoder_sequence_length=SEQ))
    ids, mask = tokens(seed=1)
    feed = {"encoder_features": np.random.default_rng(2).standard_normal((BATCH, 16, 8)).astype("float32"),
            "decoder_token_ids": ids, "decoder_padding_mask": mask}
    at = [["transformer_encoder_layer_0", "decoder_token_ids", "decoder_padding_mask"]]
    man = check_export(model, tmp_path / "whisper", at, feed, feed)
    p0, p1 = man["partitions"]
    passed = {io["name"]: io["produced_by"] for io in p0["outputs"]}
    assert passed == {"transformer_encoder_layer_0": 0, "decoder_token_ids": None, "decoder_padding_mask": None}


def test_dinov2_at_its_embeddings(tmp_path):
    model = wrapped(keras_hub.models.DINOV2Backbone(
        patch_size=4, num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, image_shape=(16, 16, 3)))
    images = np.random.default_rng(3).standard_normal((2, 16, 16, 3)).astype("float32")
    check_export(model, tmp_path / "dino", "embeddings", images, images)


# ---------------------------------------------------------------------------- recurrent
def masked_recurrent(kind):
    """Padded int tokens -> Embedding(mask_zero) -> LSTM or bidirectional GRU -> Dense."""
    x = keras.Input((SEQ,), dtype="int32", name="tok")
    e = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="emb")(x)
    if kind == "lstm":
        h = keras.layers.LSTM(6, name="rnn")(e)
    else:
        h = keras.layers.Bidirectional(keras.layers.GRU(6), name="rnn")(e)
    h = keras.layers.Dense(5, activation="tanh", name="d1")(h)
    return keras.Model(x, keras.layers.Dense(3, name="d2")(h), name=f"masked_{kind}")


@pytest.mark.parametrize("kind", ["lstm", "bigru"])
@pytest.mark.parametrize("at", [None, "d1"])
def test_masked_recurrent_layers(kind, at, tmp_path):
    """The Loop bodies read tensors of the outer graph; cutting keeps them whole (at=None too:
    onnx.utils.Extractor wrote files that failed the checker). Cuts after the recurrent layer
    do not cross the mask."""
    model = masked_recurrent(kind)
    ids, _ = tokens(seed=4)
    man = check_export(model, tmp_path / "rnn", at, ids, ids)
    assert man["conversion"]["strategy"] == "joint"
    first = onnx.load(os.path.join(man["dir"], "part0.onnx"))
    assert {"Loop", "Scan"} & {n.op_type for n in first.graph.node}  # the recurrence, as a loop


# ---------------------------------------------------------------------------- masks across cuts
def padded_ids(seed=9, vocab=20):
    """Token ids in [1, vocab) padded with 0 (sample k loses its last k tokens)."""
    ids, _ = tokens(seed)
    return np.where(ids > 0, ids % (vocab - 1) + 1, 0).astype("int32")


MASKED_CUTS = {  # name: (model, cut); the cut tensor carries the Embedding's mask implicitly (a
    # Functional model's recurrent layer takes it as mask=, a tensor that crosses as itself)
    "lstm": (lambda: keras.Sequential([keras.Input((None,), dtype="int32"),
                                       keras.layers.Embedding(20, 4, mask_zero=True, name="embedding"),
                                       keras.layers.LSTM(4, name="lstm")], name="seq"), "embedding"),
    "lstm_to_gru": (lambda: keras.Sequential([keras.Input((None,), dtype="int32"),
                                              keras.layers.Embedding(20, 4, mask_zero=True, name="emb"),
                                              keras.layers.LSTM(4, return_sequences=True, name="l1"),
                                              keras.layers.GRU(3, name="gru")], name="stacked"), "l1"),
    "bigru": (lambda: keras.Sequential([keras.Input((SEQ,), dtype="int32"),
                                        keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="emb"),
                                        keras.layers.Bidirectional(keras.layers.GRU(6), name="rnn"),
                                        keras.layers.Dense(3, name="d")], name="bigru"), "emb"),
}


@pytest.mark.parametrize("name", sorted(MASKED_CUTS))
def test_a_mask_crosses_an_onnx_cut_as_a_boolean_tensor(name, tmp_path):
    """The mask is an output of the producing file and an input of the consumer, after its
    tensor, in the manifest too; the chain fed padded ids equals Keras, and without the mask
    (all true) the consumer computes something else."""
    make, at = MASKED_CUTS[name]
    model = make()
    ids = padded_ids(vocab=20 if name != "bigru" else VOCAB)
    want = flat_outputs(model, ids)[0]
    assert np.max(np.abs(want - flat_outputs(model, np.where(ids == 0, 1, ids))[0])) > 1e-4  # the mask matters
    with pytest.warns(konnx.ConversionFallbackWarning, match=f"cut 1 passes '{at}', which carries a Keras mask"):
        man = check_export(model, tmp_path / name, at, ids, ids)
    assert man["conversion"]["strategy"] == "per-partition" and man["conversion"]["conversions"] == 2
    mask = f"{at}_mask"
    head, tail = man["partitions"]
    assert [io["name"] for io in head["outputs"]] == [at, mask] == [io["name"] for io in tail["inputs"]]
    seq = None if name != "bigru" else SEQ
    expected = {"name": mask, "ref": at, "mask_of": at, "dtype": "bool", "shape": [None, seq],
                "bytes_per_sample": seq, "produced_by": 0}
    assert {k: head["outputs"][1][k] for k in expected} == expected == {k: tail["inputs"][1][k] for k in expected}
    for part, ios in ((head, "output"), (tail, "input")):
        proto = onnx.load(os.path.join(man["dir"], part["file"]))
        declared = {v.name: v.type.tensor_type.elem_type for v in getattr(proto.graph, ios)}
        assert declared[mask] == onnx.TensorProto.BOOL
    report = konnx.verify(model, man, inputs=ids)
    assert mask in [o.name for o in report.outputs if o.kind == "cut"]
    pipeline = konnx.load(man)
    crossing = pipeline.run_partition(0, {man["inputs"][0]["name"]: ids})
    np.testing.assert_array_equal(crossing[mask], ids != 0)
    (wrong,) = pipeline.run_partition(1, {at: crossing[at], mask: np.ones_like(crossing[mask])}).values()
    assert np.max(np.abs(wrong - want)) > 1e-4


# ---------------------------------------------------------------------------- constants
def test_keras_ops_constants_belong_to_their_partition(tmp_path):
    x = keras.Input((4,), name="x")
    h = keras.layers.Dense(4, name="d1")(x)
    scale = keras.ops.convert_to_tensor(np.array([1.0, 2.0, 3.0, 4.0], "float32"))
    y = keras.ops.sqrt(keras.ops.abs(h * scale + 1.0) + 0.5)
    out = keras.layers.Dense(3, name="d2")(y * keras.ops.cast(keras.ops.sqrt(16.0), "float32"))
    model = keras.Model(x, out)
    cuts = [None] + [r for r in kgraft.split_points(model) if r != "d1"][:1] + ["d1"]
    xs = np.random.default_rng(5).standard_normal((BATCH, 4)).astype("float32")
    for k, at in enumerate(cuts):
        man = check_export(model, tmp_path / f"e{k}", at, xs, xs)
        assert [io["name"] for io in man["inputs"]] == ["x"]  # constants are not inputs


def test_adapted_normalization(tmp_path):
    x = keras.Input((4,), name="x")
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(6).uniform(1, 9, (64, 4)).astype("float32"))
    h = keras.layers.Dense(4, activation="relu", name="d1")(norm(x))
    model = keras.Model(x, keras.layers.Dense(2, name="d2")(h))
    xs = np.random.default_rng(7).uniform(1, 9, (BATCH, 4)).astype("float32")
    for at in (None, "norm", "d1"):
        man = check_export(model, tmp_path / str(at), at, xs, xs)
        assert [io["name"] for io in man["partitions"][0]["inputs"]] == ["x"]


def test_attention_query_and_key_lengths_differ(tmp_path):
    q = keras.Input((3, 8), name="q")
    kv = keras.Input((5, 8), name="kv")
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(q, kv)
    d = keras.layers.Dense(4, activation="tanh", name="d")(a)
    model = keras.Model([q, kv], keras.layers.Dense(2, name="o")(d))
    rng = np.random.default_rng(8)
    qs, kvs = rng.standard_normal((BATCH, 3, 8)).astype("float32"), rng.standard_normal((BATCH, 5, 8)).astype("float32")
    for at in ("mha", "d"):
        man = check_export(model, tmp_path / at, at, [qs, kvs], [qs, kvs])
        assert man["partitions"][0]["outputs"][0]["shape"] == [None, 3, 8 if at == "mha" else 4]
