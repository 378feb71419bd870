"""Round trips of hand-built models: kgraft.lower -> kgraft.build must compute the same thing.

Every model's weights are randomized (biases and BatchNormalization statistics included), so a
weight that is not copied, or copied to the wrong layer, changes the outputs.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

import kgraft
from kgraft.ir import ValueRef, parse, verify


class Scale(keras.layers.Layer):
    """A custom layer with a weight (deliberately not registered with Keras)."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), name="scale",
                                     initializer=keras.initializers.Constant(self.init))

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


def randomize(model, seed: int = 0):
    """Set every weight to random values (positive ones for variances)."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        value = rng.standard_normal(tuple(var.shape)).astype(var.dtype)
        if "variance" in var.path:
            value = np.abs(value) + 0.5
        var.assign(value)
    return model


# ---------------------------------------------------------------------------- models
def shared_model():
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    merged = keras.layers.Concatenate(name="cat")([shared(a), shared(b)])
    return randomize(keras.Model([a, b], keras.layers.Dense(3, name="out")(merged), name="siamese"))


def multi_io_model():
    a = keras.Input((5,), name="a")
    b = keras.Input((4, 3), name="b")
    h = keras.layers.Dense(6, activation="relu", name="ha")(a)
    g = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Conv1D(6, 2, name="conv")(b))
    s = keras.layers.Add(name="add")([h, g])
    out1 = keras.layers.Dense(2, name="head1")(s)
    out2 = keras.layers.Dense(3, activation="softmax", name="head2")(keras.layers.Multiply(name="mul")([s, g]))
    return randomize(keras.Model([a, b], [out1, out2, g], name="multi_io"), seed=1)


def sequential_model():
    return randomize(keras.Sequential([
        keras.Input((7,)),
        keras.layers.Dense(5, activation="relu", name="d1"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dropout(0.5, name="drop"),
        keras.layers.Dense(3, name="d2"),
    ], name="plain_seq"), seed=2)


def nested_model():
    """Sequential( Functional( Sequential ) ), with BatchNormalization at every level."""
    inner = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(4, activation="relu", name="i1"),
        keras.layers.BatchNormalization(name="ibn"),
        keras.layers.Dense(4, name="i2"),
    ], name="inner")
    x = keras.Input((4,), name="mid_in")
    y = keras.layers.Dense(3, name="m1")(keras.layers.Add(name="madd")([inner(x), x]))
    mid = keras.Model(x, y, name="mid")
    outer = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(4, name="o1"),
        mid,
        keras.layers.BatchNormalization(name="obn"),
        keras.layers.Dense(2, name="o2"),
    ], name="outer")
    return randomize(outer, seed=3)


def custom_model():
    x = keras.Input((6,), name="x")
    h = Scale(name="scale")(keras.layers.Dense(4, name="d")(x))
    return randomize(keras.Model(x, keras.layers.Dense(2, name="out")(h), name="custom"), seed=4)


@pytest.fixture(scope="module")
def nested():
    return nested_model()


# ---------------------------------------------------------------------------- shared layers
def test_shared_layer_stays_one_layer(roundtrip, random_inputs):
    model = shared_model()
    graph, rebuilt = roundtrip(model)
    assert [n.id for n in graph.call_sites("shared")] == ["shared#0", "shared#1"]
    assert graph.node("cat#0").args == ((ValueRef("shared#0"), ValueRef("shared#1")),)
    shared = [layer for layer in rebuilt.layers if layer.name == "shared"]
    assert len(shared) == 1, "the shared layer was duplicated"
    assert len(shared[0]._inbound_nodes) == 2
    assert len(model.get_layer("shared")._inbound_nodes) == 2  # the source is untouched
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    for src, dst in zip(model.get_layer("shared").weights, shared[0].weights):
        np.testing.assert_array_equal(np.asarray(src), np.asarray(dst))
    assert len(rebuilt.weights) == len(model.weights) == 4


def test_rebuilt_weights_are_copies_not_aliases(random_inputs, run_model, max_abs_diff):
    model = shared_model()
    rebuilt = kgraft.build(kgraft.lower(model))
    x = random_inputs(model)
    before = run_model(model, x)
    rebuilt.get_layer("shared").kernel.assign(np.zeros((6, 4), "float32"))
    assert max_abs_diff(run_model(model, x), before) == 0.0
    assert max_abs_diff(run_model(rebuilt, x), before) > 1e-3


def test_weights_false_builds_fresh_weights(random_inputs, run_model, max_abs_diff):
    model = shared_model()
    graph = kgraft.lower(model)
    fresh = kgraft.build(graph, weights=False)
    x = random_inputs(model)
    assert max_abs_diff(run_model(model, x), run_model(fresh, x)) > 1e-3  # weights do matter here
    kgraft.backends.keras.copy_weights(graph, fresh)
    assert max_abs_diff(run_model(model, x), run_model(fresh, x)) <= 1e-6


# ---------------------------------------------------------------------------- multi input / output
def test_multi_input_multi_output(roundtrip):
    model = multi_io_model()
    graph, rebuilt = roundtrip(model)
    assert graph.inputs == ("a#0", "b#0")
    assert graph.outputs == (ValueRef("head1#0"), ValueRef("head2#0"), ValueRef("pool#0"))
    assert [str(graph.value_type(r)) for r in graph.outputs] == ["f32[?,2]", "f32[?,3]", "f32[?,6]"]
    assert [t.name for t in rebuilt.inputs] == ["a", "b"]
    assert rebuilt.output_names == model.output_names


def test_dict_outputs_keep_their_order_and_types(run_model, random_inputs, max_abs_diff, unchanged):
    a = keras.Input((3,), name="a")
    b = keras.Input((3,), name="b")
    outputs = {"sum": keras.layers.Add(name="s")([a, b]), "dense": keras.layers.Dense(2, name="dd")(a)}
    model = randomize(keras.Model({"a": a, "b": b}, outputs, name="dict_io"), seed=5)
    with unchanged(model):
        graph = kgraft.lower(model)
        rebuilt = kgraft.build(graph)
    # model.outputs flattens the dict in sorted key order: dense, sum
    assert graph.outputs == (ValueRef("dd#0"), ValueRef("s#0"))
    assert [str(graph.value_type(r)) for r in graph.outputs] == ["f32[?,2]", "f32[?,3]"]
    x = {"a": random_inputs(model, seed=1)[0], "b": random_inputs(model, seed=2)[1]}
    expected = run_model(model, x)
    got = run_model(rebuilt, [x["a"], x["b"]])
    assert max_abs_diff(keras.tree.flatten(expected), keras.tree.flatten(got)) <= 1e-6


def test_dict_output_structure_is_kept(run_model, random_inputs, max_abs_diff):
    """A model returning a dict comes back returning the same dict (flatten too); a pass that
    changes the outputs (here extract) returns a list."""
    a = keras.Input((3,), name="a")
    model = keras.Model(a, {"y": keras.layers.Dense(1, name="dy")(a), "x": keras.layers.Dense(2, name="dx")(a)})
    x = random_inputs(model)
    want = run_model(model, x)
    for rebuilt in (kgraft.build(kgraft.lower(model)), kgraft.flatten(model)):
        got = run_model(rebuilt, x)
        assert isinstance(got, dict) and sorted(got) == ["x", "y"]
        assert max(max_abs_diff(want[k], got[k]) for k in ("x", "y")) == 0.0
    assert not isinstance(run_model(kgraft.extract(model, ["dx", "dy"]), x), dict)


def test_multi_output_layer_and_masking(roundtrip, random_inputs):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    emb = keras.layers.Embedding(5, 4, mask_zero=True, name="emb")(tokens)
    seq, h, c = keras.layers.LSTM(3, return_sequences=True, return_state=True, name="lstm")(emb)
    pooled = keras.layers.GlobalMaxPooling1D(name="gmp")(seq)
    out = keras.layers.Concatenate(name="cat")([pooled, h, c])
    model = randomize(keras.Model(tokens, out, name="rnn"), seed=6)
    x = random_inputs(model)
    assert x.dtype == np.int32 and (x == 0).any()  # some positions are masked
    graph, _ = roundtrip(model, inputs=x)
    assert len(graph.node("lstm#0").outputs) == 3
    # Keras records the mask as an op (NotEqual) passed to the LSTM as a keyword argument
    assert re.search(r"\n  %lstm:0, %lstm:1, %lstm:2 = LSTM @lstm#0\(%emb, training=false, mask=%(not_equal\w*)\)",
                     str(graph))
    mask = graph.node("lstm#0").kwargs["mask"]
    assert graph.layer_of(mask.node).class_name == "NotEqual"
    assert graph.node(mask.node).args == (ValueRef("tokens#0"), 0)
    assert graph.node("cat#0").args == ((ValueRef("gmp#0"), ValueRef("lstm#0", 1), ValueRef("lstm#0", 2)),)


def test_layer_called_with_two_tensors_and_kwargs(roundtrip):
    x = keras.Input((4, 8), name="x")
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(x, x, use_causal_mask=True)
    model = randomize(keras.Model(x, keras.layers.LayerNormalization(name="ln")(att + x)), seed=7)
    graph, _ = roundtrip(model, atol=1e-5)
    mha = graph.node("mha#0")
    operands = [ref for _, ref in mha.operands()]
    assert operands.count(ValueRef("x#0")) == 2


# ---------------------------------------------------------------------------- custom classes
def test_custom_layer_from_keras_file(tmp_path, assert_same_outputs, random_inputs):
    model = custom_model()
    path = tmp_path / "custom.keras"
    model.save(path)
    graph = kgraft.lower(path, custom_objects={"Scale": Scale})
    assert graph.layers["scale"].class_name == "Scale"
    rebuilt = kgraft.build(graph)
    assert type(rebuilt.get_layer("scale")) is Scale
    np.testing.assert_array_equal(np.asarray(rebuilt.get_layer("scale").scale), np.asarray(model.get_layer("scale").scale))
    x = random_inputs(model)
    assert_same_outputs(model, rebuilt, x, atol=1e-6)
    text = str(graph)
    assert "= Scale @scale#0(%d)" in text and str(parse(text)) == text
    # kgraft.lower also accepts str paths
    assert str(kgraft.lower(str(path), custom_objects={"Scale": Scale})) == text


def test_custom_layer_in_memory_needs_no_custom_objects(roundtrip):
    _, rebuilt = roundtrip(custom_model())
    assert type(rebuilt.get_layer("scale")) is Scale


# ---------------------------------------------------------------------------- sequential / nesting
def test_plain_sequential(roundtrip):
    model = sequential_model()
    graph, rebuilt = roundtrip(model)
    assert graph.kind == "Sequential"
    assert str(graph).startswith("kgraft.sequential @plain_seq(")
    assert isinstance(rebuilt, keras.Sequential)
    assert rebuilt.name == "plain_seq"
    assert [layer.name for layer in rebuilt.layers] == ["d1", "bn", "drop", "d2"]


def test_sequential_built_without_input(roundtrip, random_inputs):
    model = keras.Sequential([keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")], name="lazy")
    model.build((None, 4))
    randomize(model, seed=8)
    graph, rebuilt = roundtrip(model)
    assert graph.node(graph.inputs[0]).outputs[0].shape == (None, 4)
    assert [layer.name for layer in rebuilt.layers] == ["a", "b"]


def test_nested_three_levels(roundtrip, nested, layer_summary):
    graph, rebuilt = roundtrip(nested)
    mid = graph.layers["mid"]
    assert mid.body is not None and mid.body.kind == "Functional"
    inner = mid.body.layers["inner"]
    assert inner.body is not None and inner.body.kind == "Sequential"
    assert inner.body.layers["ibn"].qualified_name == "mid/inner/ibn"
    assert isinstance(rebuilt, keras.Sequential)
    assert type(rebuilt.get_layer("mid")).__name__ == "Functional"
    assert isinstance(rebuilt.get_layer("mid").get_layer("inner"), keras.Sequential)
    assert layer_summary(rebuilt) == layer_summary(nested)
    assert len(rebuilt.weights) == len(nested.weights)


def test_trainable_flags_and_names_kept(layer_summary, assert_same_outputs, random_inputs, unchanged):
    model = nested_model()
    model.get_layer("mid").get_layer("inner").trainable = False  # a nested model
    model.get_layer("o2").trainable = False
    model.get_layer("mid").get_layer("m1").trainable = False
    expected = layer_summary(model)
    assert ("mid", "inner") in [row[0] for row in expected if row[2] is False]
    with unchanged(model):
        rebuilt = kgraft.build(kgraft.lower(model))
    assert layer_summary(rebuilt) == expected
    assert len(rebuilt.trainable_weights) == len(model.trainable_weights)
    assert len(rebuilt.non_trainable_weights) == len(model.non_trainable_weights)
    assert_same_outputs(model, rebuilt, random_inputs(model))


def test_trainable_nested_model_with_trainable_child(layer_summary):
    model = nested_model()
    inner = model.get_layer("mid").get_layer("inner")
    inner.trainable = False
    inner.get_layer("i2").trainable = True  # Keras allows a trainable child of a frozen model
    rebuilt = kgraft.build(kgraft.lower(model))
    assert layer_summary(rebuilt) == layer_summary(model)


def test_nested_functional_as_output_and_called_twice(roundtrip):
    x = keras.Input((4,), name="fx")
    block = keras.Model(x, keras.layers.Dense(4, activation="tanh", name="bd")(x), name="block")
    a = keras.Input((4,), name="a")
    h1 = block(a)
    h2 = block(h1)
    model = randomize(keras.Model(a, [h2, h1, keras.layers.Dense(2, name="head")(h2)], name="twice"), seed=9)
    graph, rebuilt = roundtrip(model)
    assert graph.outputs == (ValueRef("block#1"), ValueRef("block#0"), ValueRef("head#0"))
    assert len(rebuilt.get_layer("block")._inbound_nodes) == 2


def test_nested_functional_as_the_only_output(roundtrip):
    x = keras.Input((4,), name="bx")
    backbone = keras.Model(x, keras.layers.Dense(3, name="bd")(x), name="backbone")
    a = keras.Input((4,), name="a")
    graph, _ = roundtrip(randomize(keras.Model(a, backbone(a), name="wrapper"), seed=10))
    assert graph.outputs == (ValueRef("backbone#0"),)


def test_lower_then_build_twice_gives_independent_models(nested, random_inputs, run_model, max_abs_diff):
    graph = kgraft.lower(nested)
    first, second = kgraft.build(graph), kgraft.build(graph)
    assert first is not second
    second.get_layer("o2").kernel.assign(np.zeros(tuple(second.get_layer("o2").kernel.shape), "float32"))
    x = random_inputs(nested)
    assert max_abs_diff(run_model(nested, x), run_model(first, x)) <= 1e-5
    assert max_abs_diff(run_model(nested, x), run_model(second, x)) > 1e-3


# ---------------------------------------------------------------------------- text and .h5
@pytest.mark.parametrize("make", [shared_model, multi_io_model, sequential_model, nested_model, custom_model])
def test_text_round_trip(make):
    model = make()
    graph = kgraft.lower(model)
    text = str(graph)
    reparsed = parse(text)
    assert str(reparsed) == text
    verify(reparsed)
    assert str(kgraft.lower(model)) == text  # deterministic


@pytest.mark.parametrize("make", [shared_model, multi_io_model, sequential_model, nested_model])
def test_h5_files_lower(tmp_path, make, assert_same_outputs, random_inputs, unchanged):
    model = make()
    path = tmp_path / f"{model.name}.h5"
    model.save(path)
    graph = verify(kgraft.lower(path))
    rebuilt = kgraft.build(graph)
    assert_same_outputs(model, rebuilt, random_inputs(model))
    assert str(parse(str(graph))) == str(graph)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]


def test_h5_custom_layer(tmp_path, assert_same_outputs, random_inputs):
    model = custom_model()
    path = tmp_path / "custom.h5"
    model.save(path)
    rebuilt = kgraft.build(kgraft.lower(path, custom_objects={"Scale": Scale}))
    assert_same_outputs(model, rebuilt, random_inputs(model), atol=1e-6)
