"""tf.keras 2 models (the ``tf_keras`` package): in memory, saved as ``.h5`` and as ``.keras``.

Every model is built here with tf_keras and its weights randomized (so a swapped weight shows),
then lowered, flattened and split by kgraft; the results must reproduce tf_keras's own outputs
within 1e-5. tf.keras 2 configs are the legacy format (``[[name, node, tensor, kwargs]]``
inbound nodes, tensors in kwargs as ``[name, node, tensor]``, a nested model's calls numbered
from 1), and their layer options are not all Keras 3's (``groups``, ``time_major``...).

Keras 3 cannot load every tf.keras 2 file: it rejects tf.keras ``.keras`` files, and in an
``.h5`` file with a nested model called twice it silently wires the wrong call
(``test_nested_model_called_on_two_inputs``); kgraft reads those with tf_keras.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest

import kgraft
from kgraft.ir import partitions_of
from kgraft import KgraftError, UnknownLayerError, UnsupportedModelError, passes
from kgraft.backends.keras import build
from kgraft.ir import ValueRef, parse, verify
from kgraft.ir import RECORDED_TRAINING_WINS

ATOL = 1e-5

def split_parts(graph, **options):
    """The partitions of ``kgraft.passes.split`` (one graph calling part0 .. partN), as a list."""
    return partitions_of(passes.split(graph, **options))



@pytest.fixture(scope="module")
def tk():
    return pytest.importorskip("tf_keras", reason="tf_keras (tf.keras 2) is not installed: pip install tf_keras")


# ---------------------------------------------------------------------------- tf_keras models
def sequential_cnn(tk):
    L = tk.layers
    return tk.Sequential([
        L.Conv2D(4, 3, padding="same", input_shape=(8, 8, 3), name="conv"), L.BatchNormalization(name="bn"),
        L.ReLU(name="relu"), L.MaxPooling2D(name="pool"), L.DepthwiseConv2D(3, padding="same", name="dw"),
        L.Flatten(name="flat"), L.Dropout(0.3, name="drop"), L.Dense(3, activation="softmax", name="out"),
    ], name="cnn")


def branches(tk):
    L = tk.layers
    x = tk.Input((6,), name="x")
    a = L.Dense(4, activation="relu", name="a")(x)
    b = L.Dense(4, activation="tanh", name="b")(x)
    h = L.Concatenate(name="cat")([L.Add(name="add")([a, b]), L.Multiply(name="mul")([a, b])])
    h = L.LayerNormalization(name="norm")(h)
    return tk.Model(x, L.Dense(2, name="out")(L.Activation("swish", name="act")(h)), name="branches")


def shared_multi_io(tk):
    L = tk.layers
    x1, x2 = tk.Input((6,), name="x1"), tk.Input((6,), name="x2")
    shared = L.Dense(4, activation="tanh", name="shared")
    h = L.Concatenate(name="cat")([shared(x1), shared(x2)])
    h = L.Dense(5, name="mid")(h)
    return tk.Model([x1, x2], [L.Dense(2, name="o1")(h), L.Dense(3, name="o2")(h)], name="shared_io")


def nested_sequential(tk):
    L = tk.layers
    unbuilt = tk.Sequential([L.Dense(5, activation="relu", name="s1"), L.Dense(4, name="s2")], name="unbuilt")
    with_input = tk.Sequential([tk.Input((4,)), L.Dense(4, activation="tanh", name="t1")], name="with_input")
    x = tk.Input((6,), name="x")
    h = with_input(unbuilt(L.Dense(6, name="pre")(x)))
    return tk.Model(x, L.Dense(2, name="post")(h), name="nested_seq")


def nested_functional_twice(tk):
    L = tk.layers
    xi = tk.Input((4,), name="xi")
    inner = tk.Model(xi, L.Dense(4, activation="tanh", name="d")(xi), name="inner")
    x = tk.Input((4,), name="x")
    h1 = inner(x)
    h2 = inner(h1)
    return tk.Model(x, L.Add(name="add")([h1, h2]), name="twice")


def nested_on_two_inputs(tk):
    """Keras 3 loads the .h5 of this one, feeding ``o`` from ``inner(x2)`` instead of ``inner(x1)``."""
    L = tk.layers
    xi = tk.Input((4,), name="xi")
    inner = tk.Model(xi, L.Dense(4, activation="tanh", name="d")(xi), name="inner")
    x1, x2 = tk.Input((4,), name="x1"), tk.Input((4,), name="x2")
    h1, h2 = inner(x1), inner(x2)
    return tk.Model([x1, x2], [L.Dense(3, name="o")(h1), h2], name="two_inputs")


def deep_nesting(tk):
    L = tk.layers
    seq = tk.Sequential([tk.Input((5,)), L.Dense(5, activation="relu", name="leaf")], name="seq")
    xm = tk.Input((5,), name="xm")
    middle = tk.Model(xm, L.Add(name="res")([xm, seq(xm)]), name="middle")
    x = tk.Input((5,), name="x")
    return tk.Model(x, L.Dense(2, name="head")(middle(L.Dense(5, name="stem")(x))), name="deep")


def recurrent_attention(tk):
    L = tk.layers
    tokens, feats = tk.Input((5,), dtype="int32", name="tokens"), tk.Input((3,), name="feats")
    e = L.Embedding(10, 4, name="emb")(tokens)
    h = L.GRU(5, name="gru")(L.LSTM(6, return_sequences=True, name="lstm")(e))
    att = L.MultiHeadAttention(2, 3, name="mha")(e, e)  # value passed as a kwarg tensor
    h = L.Concatenate(name="cat")([h, L.GlobalAveragePooling1D(name="gap")(att), feats])
    return tk.Model([tokens, feats], [L.Dense(2, name="o1")(h), L.Dense(1, activation="sigmoid", name="o2")(h)],
                    name="rnn_att")


def frozen_backbone(tk):
    """Transfer learning: a frozen backbone called with ``training=False`` (a legacy call kwarg)."""
    L = tk.layers
    xi = tk.Input((4,), name="bx")
    backbone = tk.Model(xi, L.BatchNormalization(name="bn")(L.Dense(4, name="bd")(xi)), name="backbone")
    backbone.trainable = False
    x = tk.Input((4,), name="x")
    return tk.Model(x, L.Dense(2, name="head")(L.Dropout(0.2, name="drop")(backbone(x, training=False))),
                    name="transfer")


def mixed_precision(tk):
    """float16 compute (tf.keras 2's ``Policy`` objects in the config), float32 output."""
    L = tk.layers
    x = tk.Input((4,), name="x")
    h = L.Dense(3, dtype="mixed_float16", name="d16")(L.Dense(4, dtype="mixed_float16", name="d16a")(x))
    return tk.Model(x, L.Activation("linear", dtype="float32", name="to32")(h), name="mixed")


def wrappers(tk):
    """Layers wrapping layers (nested layer configs): Bidirectional(LSTM), TimeDistributed(Dense)."""
    L = tk.layers
    x = tk.Input((6, 3), name="x")
    h = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(L.Conv1D(4, 3, padding="same", name="conv")(x))
    return tk.Model(x, L.Flatten(name="flat")(L.TimeDistributed(L.Dense(2), name="td")(h)), name="wrappers")


MODELS = {f.__name__: f for f in (sequential_cnn, branches, shared_multi_io, nested_sequential,
                                  nested_functional_twice, nested_on_two_inputs, deep_nesting, recurrent_attention,
                                  frozen_backbone, mixed_precision, wrappers)}


# a separator for the model whose two outputs leave no single split point
CUTS = {"nested_on_two_inputs": [["inner/d@0", "inner/d@1"]]}


# ---------------------------------------------------------------------------- helpers
def randomized(model, seed: int = 0):
    """Random weights (variances positive), so that swapped or missing weights change outputs."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        low = 0.5 if "variance" in var.name else -1.0
        var.assign(rng.uniform(low, 1.5, tuple(var.shape)).astype(var.dtype.name))
    return model


def inputs_for(model, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for t in model.inputs:
        shape = (2, *t.shape[1:])
        if t.dtype.is_integer:
            arrays.append(rng.integers(0, 10, shape).astype(t.dtype.name))
        else:
            arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays


def outputs(model, x: list) -> list[np.ndarray]:
    out = model(x if len(x) > 1 else x[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def assert_close(actual: list, expected: list, what: str) -> None:
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{what}: shape {a.shape} vs {e.shape}"
        diff = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
        assert diff <= ATOL, f"{what}: max abs diff {diff:.3e}"


def compose(parts, x: list) -> list[np.ndarray]:
    values = x
    for part in parts:
        values = outputs(part, values)
    return values


@pytest.fixture(scope="module")
def saved(tk, tmp_path_factory):
    """name -> (tf_keras model, its .h5 path), built once per module."""
    folder = tmp_path_factory.mktemp("tf_keras")
    cases = {}
    for name, make in MODELS.items():
        model = randomized(make(tk))
        path = str(folder / f"{name}.h5")
        model.save(path)
        cases[name] = (model, path)
    return cases


# ---------------------------------------------------------------------------- the properties
@pytest.mark.parametrize("source", ["memory", "h5"])
@pytest.mark.parametrize("name", list(MODELS))
def test_lower_flatten_split(name, source, saved):
    """Lowered once (reading an .h5 is the slow part); the public functions on in-memory models."""
    model, path = saved[name]
    x = inputs_for(model)
    expected = outputs(model, x)
    graph = verify(kgraft.lower(model if source == "memory" else path))
    assert str(parse(str(graph))) == str(graph)
    assert all(t.known for n in graph.nodes() for t in n.outputs), "types missing from the IR"
    at = CUTS.get(name) or passes.split_points(graph)[len(passes.split_points(graph)) // 2]
    if source == "memory":
        flat, parts = kgraft.flatten(model), kgraft.split(model, at)
        assert kgraft.split_points(model) == passes.split_points(graph)
    else:
        flat, parts = build(passes.inline_nested(graph)), [build(p) for p in split_parts(graph, at=at)]
    assert not any(isinstance(l, keras.Model) for l in flat.layers)
    assert sorted(w.dtype for w in flat.weights) == sorted(w.dtype.name for w in model.weights)
    assert flat.count_params() == model.count_params()
    assert_close(outputs(flat, x), expected, f"flatten ({source})")
    assert len(parts) == 2
    assert_close(compose(parts, x), expected, f"split ({source}) at {at}")


def test_frozen_backbone_stays_frozen_and_in_inference_mode(saved):
    flat = kgraft.flatten(saved["frozen_backbone"][0])
    assert not flat.get_layer("bn").trainable and not flat.get_layer("bd").trainable
    assert flat.get_layer("head").trainable
    assert flat.get_layer("bn")._inbound_nodes[0].arguments.kwargs.get("training") is False


def test_legacy_kwarg_tensor_is_an_operand(saved):
    graph = kgraft.lower(saved["recurrent_attention"][0])
    node = graph.node("mha#0")
    assert [ref.node for _, ref in node.operands()] == ["emb#0", "emb#0"]
    assert "%mha = MultiHeadAttention @mha#0(%emb, value=%emb)" in str(graph)


def test_nested_model_called_on_two_inputs(saved):
    """Keras 3 wires the .h5 file's ``o`` to the wrong call of ``inner``; kgraft does not."""
    model, path = saved["nested_on_two_inputs"]
    x = [np.ones((2, 4), "float32"), -np.ones((2, 4), "float32")]
    expected = outputs(model, x)
    graph = kgraft.lower(path)
    assert graph.node("o#0").args == (ValueRef("inner#0"),)
    assert_close(outputs(kgraft.flatten(path), x), expected, "flatten")


def test_tf_keras_dot_keras_file(tk, tmp_path):
    model = randomized(deep_nesting(tk))
    path = str(tmp_path / "deep.keras")
    model.save(path)
    x = inputs_for(model)
    assert_close(outputs(kgraft.flatten(path), x), outputs(model, x), "flatten(.keras)")


def test_source_model_is_not_mutated(saved, unchanged):
    model, _ = saved["nested_functional_twice"]
    with unchanged(model):
        flat = kgraft.flatten(model)
        for v in flat.weights:  # the result's variables are its own, not the source's tf.Variables
            v.assign(np.zeros(v.shape, v.dtype))
        kgraft.split(model, kgraft.split_points(model)[0])


# ---------------------------------------------------------------------------- without tf_keras
def test_flat_h5_without_tf_keras_is_read_by_keras3(saved, monkeypatch):
    model, path = saved["branches"]
    monkeypatch.setitem(sys.modules, "tf_keras", None)  # "import tf_keras" now fails
    x = inputs_for(model)
    expected = outputs(model, x)
    assert_close(outputs(kgraft.flatten(path), x), expected, "flatten")


@pytest.mark.parametrize("name, message", [
    ("nested_functional_twice", r"holds nested model\(s\) inner, whose call sites Keras 3 numbers differently"),
    ("recurrent_attention", r"Keras could not load model file .*time_major.*written by tf\.keras 2"),
])
def test_without_tf_keras_the_error_says_to_install_it(name, message, saved, monkeypatch):
    _, path = saved[name]
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    with pytest.raises(KgraftError, match=message) as info:
        kgraft.lower(path)
    assert "pip install tf_keras" in str(info.value)


# ---------------------------------------------------------------------------- what cannot work
def test_tf_op_layer_is_unsupported(tk):
    x = tk.Input((4,), name="x")
    model = tk.Model(x, tk.layers.Dense(2, name="d")(x) * 2.0, name="with_op")
    with pytest.raises(UnsupportedModelError, match=r"layer 'tf\.math\.multiply' .* TensorFlow op .*TFOpLambda"):
        kgraft.flatten(model)


def test_option_keras3_lacks_is_unsupported(tk):
    x = tk.Input((5, 3), name="x")
    model = tk.Model(x, tk.layers.LSTM(2, time_major=True, name="lstm")(x), name="time_major")
    with pytest.raises(UnsupportedModelError, match=r"'lstm' \(LSTM\) sets the tf\.keras 2 option time_major=True"):
        kgraft.lower(model)


def test_subclassed_tf_keras_model_is_unsupported(tk):
    class Mine(tk.Model):
        def call(self, x):
            return x

    with pytest.raises(UnsupportedModelError, match=r"subclassed keras\.Model \(Mine\)"):
        kgraft.lower(Mine(name="mine"))


def test_custom_tf_keras_layer_needs_a_keras3_class(tk):
    class Scale(tk.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w

    class Keras3Scale(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="zeros")

        def call(self, x):
            return x * self.w

    x = tk.Input((3,), name="x")
    model = randomized(tk.Model(x, Scale(name="scale")(tk.layers.Dense(3, name="d")(x)), name="custom"))
    with pytest.raises(UnknownLayerError, match=r"unknown layer class 'Scale'.*custom_objects="):
        kgraft.flatten(model)
    inputs = inputs_for(model)
    flat = kgraft.flatten(model, custom_objects={"Scale": Keras3Scale})
    assert_close(outputs(flat, inputs), outputs(model, inputs), "flatten with a Keras 3 Scale")


def test_other_keras_level_functions(saved):
    model, _ = saved["branches"]
    x = inputs_for(model)
    probe = tk_outputs_of(model, ["a", "norm"], x)
    assert_close(outputs(kgraft.extract(model, ["a", "norm"]), x), probe, "extract")
    with_head = kgraft.add_head(model, "norm", keras.layers.Dense(3, name="aux"))
    assert [tuple(t.shape) for t in with_head.outputs] == [(None, 2), (None, 3)]
    assert kgraft.downstream(model, "norm") == ["act", "out"]


def tk_outputs_of(model, names: list[str], x: list) -> list[np.ndarray]:
    """Intermediate tensors computed by tf_keras itself."""
    probe = type(model)(model.inputs, [model.get_layer(n).output for n in names])
    return outputs(probe, x)


# ---------------------------------------------------------------------------- tf.keras 2's training rule
# In tf.keras 2 a ``training`` recorded at a call site wins over the mode the model is called in
# (``base(x, training=False)`` keeps ``base`` in inference under ``model(x, training=True)``);
# Keras 3's Functional overrides it. Results of tf.keras 2 sources keep tf.keras 2's rule.
PROBE = np.random.default_rng(3).standard_normal((6, 4)).astype("float32")


def transfer(tk):
    """A trainable base called with training=False (its BN on moving statistics, its Dropout off),
    then a BN and a head that follow the model's mode."""
    L = tk.layers
    xi = tk.Input((4,), name="bx")
    h = L.BatchNormalization(name="bn")(L.Dense(4, name="bd")(xi))
    base = tk.Model(xi, L.Dropout(0.5, name="bdrop")(h), name="base")
    x = tk.Input((4,), name="x")
    h = L.BatchNormalization(name="bn2")(base(x, training=False))
    return randomized(tk.Model(x, L.Dense(2, name="head")(h), name="transfer"))


def through_numpy(parts, x, training: bool) -> list[np.ndarray]:
    values = [x]
    for part in parts:
        out = part(values if len(values) > 1 else values[0], training=training)
        values = [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
    return values


@pytest.mark.parametrize("training", [False, True])
def test_training_rule_of_tf_keras_2(tk, training, tmp_path):
    """Each layer runs in its tf.keras 2 mode: flattened (also from the source's .h5), rebuilt nested,
    saved and loaded, with a head added, split (parts fed numpy), and split again after flatten."""
    keras.utils.set_random_seed(0)
    expected = [np.asarray(transfer(tk)(PROBE, training=training))]  # a fresh source: training updates BN
    model = transfer(tk)
    model.save(tmp_path / "transfer.h5")
    flat = kgraft.flatten(model)
    flat.save(tmp_path / "flat.keras")
    results = {"flatten": flat, "build": build(kgraft.lower(model)),
               "from .h5": kgraft.flatten(tmp_path / "transfer.h5"),
               "loaded": keras.saving.load_model(tmp_path / "flat.keras")}
    for what, result in results.items():
        assert_close([np.asarray(result(PROBE, training=training))], expected, f"{what}, training={training}")
    with_head = kgraft.add_head(model, "bn2", keras.layers.Dense(3, name="aux"))
    assert_close([np.asarray(with_head(PROBE, training=training)[0])], expected, "add_head")
    assert_close(through_numpy(kgraft.split(model, "bn2"), PROBE, training), expected, "split")
    assert_close(through_numpy(kgraft.split(flat, "bn"), PROBE, training), expected, "split of the flattened")
    # the rule is what makes it right: by Keras 3's, the base would follow training=True
    graph = kgraft.lower(model)
    graph.meta = {k: v for k, v in graph.meta.items() if k != RECORDED_TRAINING_WINS}
    keras3 = np.asarray(build(passes.inline_nested(graph))(PROBE, training=training))
    assert (float(np.max(np.abs(keras3 - expected[0]))) > 1e-3) is training


def test_results_keep_the_rule_only_where_a_call_records_training(tk, saved):
    """Where no call records a training, the rules agree: the result is a plain Functional."""
    from kgraft.backends.keras.internals import Functional
    from kgraft.backends.keras.legacy import RecordedTrainingModel

    assert type(kgraft.flatten(transfer(tk))) is RecordedTrainingModel
    head, tail = kgraft.split(transfer(tk), "bn2")  # the base's call is in the head
    assert (type(head), type(tail)) == (RecordedTrainingModel, Functional)
    assert type(kgraft.flatten(saved["branches"][0])) is Functional


def test_the_ir_says_which_training_rule_its_calls_follow(tk):
    """The printed IR carries the rule, so a graph parsed back (a split too) builds by it."""
    from kgraft.backends.keras import build_partitions
    from kgraft.backends.keras.legacy import RecordedTrainingModel

    text = str(kgraft.lower(transfer(tk)))
    assert text.startswith("kgraft.model @transfer(%x: f32[?,4]) attributes {recorded_training_wins=true} {\n")
    assert "= Functional @base#0(%x, training=false)" in text
    split = str(passes.split(passes.inline_nested(parse(text)), at="bd"))
    assert str(parse(split)) == split
    assert type(build_partitions(parse(split), weights=False)[1]) is RecordedTrainingModel
    x = keras.Input((4,), name="x")
    keras3 = keras.Model(x, keras.layers.Dropout(0.5, name="d")(x, training=True))
    assert "attributes" not in str(kgraft.lower(keras3))  # Keras 3's rule: the caller's mode wins


@pytest.mark.parametrize("training", [False, True])
def test_a_keras3_model_nesting_a_result_keeps_its_rule(tk, training):
    """A result of a tf.keras 2 source nested in a Keras 3 model still runs by tf.keras 2's rule."""
    x = keras.Input((4,), name="xo")
    model = keras.Model(x, keras.layers.Dense(3, name="top")(kgraft.flatten(transfer(tk))(x)))
    expected = [np.asarray(model(PROBE, training=training))]  # BN in training mode: batch statistics only
    assert_close([np.asarray(kgraft.flatten(model)(PROBE, training=training))], expected, "flatten")
    assert_close(through_numpy(kgraft.split(model, "transfer/bn2"), PROBE, training), expected, "split")


def test_a_keras3_call_recording_training_beside_a_nested_result_is_refused(tk):
    x = keras.Input((4,), name="xo")
    model = keras.Model(x, keras.layers.Dropout(0.3, name="top")(kgraft.flatten(transfer(tk))(x), training=True))
    with pytest.raises(UnsupportedModelError, match=r"nests 'transfer', which kgraft built from a tf\.keras 2 model "
                                                     r".* call\(s\) 'top#0' record a training .*cannot follow both"):
        kgraft.flatten(model)


def mc_dropout(tk):
    """Monte Carlo dropout: a Dropout called with training=True inside a base called with
    training=False (tf.keras 2: the innermost recorded value wins) and one in the outer graph."""
    L = tk.layers
    xi = tk.Input((16,), name="bx")
    bd = L.Dense(16, name="bd")(xi)
    base = tk.Model(xi, [bd, L.Dropout(0.5, name="inner_mc")(bd, training=True)], name="base")
    x = tk.Input((16,), name="x")
    b_bd, b_mc = base(x, training=False)
    pre = L.Dense(16, name="pre")(b_mc)
    return randomized(tk.Model(x, [b_bd, b_mc, L.Dropout(0.5, name="mc")(pre, training=True)], name="mc"))


def assert_dropped(before: np.ndarray, after: np.ndarray, what: str) -> None:
    """``after`` is an active Dropout(0.5) of ``before``: each value zeroed or doubled, both seen."""
    zeroed, doubled = np.abs(after) <= ATOL, np.abs(after - 2 * before) <= ATOL * (1 + np.abs(before))
    assert np.all(zeroed | doubled), f"{what}: not a dropout of its input"
    assert zeroed.mean() > 0.2 and doubled.mean() > 0.2, f"{what}: dropout inactive"


@pytest.mark.parametrize("training", [False, True])
def test_mc_dropout_of_tf_keras_2_stays_active(tk, training):
    model = mc_dropout(tk)
    x = np.random.default_rng(4).standard_normal((32, 16)).astype("float32")
    kernel, bias = (np.asarray(w) for w in model.get_layer("pre").weights)
    keras.utils.set_random_seed(0)
    # check=False: the source itself is random in inference mode, so the check cannot compare it
    results = {"the source": [np.asarray(v) for v in model(x, training=training)],
               "flatten": [np.asarray(v) for v in kgraft.flatten(model, check=False)(x, training=training)],
               "split": through_numpy(kgraft.split(model, "pre", check=False), x, training)}
    for what, (b_bd, b_mc, mc) in results.items():
        assert_dropped(b_bd, b_mc, f"{what}: inner_mc, training={training}")
        assert_dropped(b_mc @ kernel + bias, mc, f"{what}: mc, training={training}")


def test_check_says_the_source_is_random_not_the_result(tk):
    """The check cannot compare a source that stays random in inference mode: it says so, naming
    the outputs that moved between two calls of the source, instead of blaming kgraft."""
    with pytest.raises(kgraft.EquivalenceError, match=r"the source model itself computes different .*'mc'.* "
                                                      r"on two calls with the same probe inputs") as info:
        kgraft.flatten(mc_dropout(tk))
    assert "kgraft bug" not in str(info.value)


def test_interpreter_follows_the_rule_of_the_graph(tk):
    """The interpreter (the equivalence check's) runs a result as it runs: recorded training wins."""
    from kgraft.backends.keras.interpret import Interpreter

    result = kgraft.flatten(mc_dropout(tk), check=False)
    x = np.random.default_rng(4).standard_normal((32, 16)).astype("float32")
    b_bd, b_mc, _ = Interpreter(kgraft.lower(result), result, training=False).run([x])
    assert_dropped(b_bd, b_mc, "interpreted inner_mc")


# ---------------------------------------------------------------------------- tf.keras 2 masks
IDS = np.array([[3, 5, 7, 0, 0], [1, 2, 3, 4, 6], [9, 0, 0, 0, 0]], "int32")  # padded with 0


def masked_sequential(tk):
    L = tk.layers
    return randomized(tk.Sequential([tk.Input((None,), dtype="int32"),
                                     L.Embedding(20, 4, mask_zero=True, name="embedding"), L.LSTM(4, name="lstm")],
                                    name="seq"))


def masked_nested(tk):
    """The mask is made inside a nested model (tf.keras 2 records it on the outer call too)."""
    L = tk.layers
    i = tk.Input((None,), dtype="int32", name="ids_in")
    enc = tk.Model(i, L.Embedding(20, 4, mask_zero=True, name="emb")(i), name="enc")
    x = tk.Input((None,), dtype="int32", name="ids")
    return randomized(tk.Model(x, L.LSTM(4, name="lstm")(L.Dropout(0.1, name="drop")(enc(x))), name="outer"))


@pytest.mark.parametrize("make, at", [(masked_sequential, "embedding"), (masked_nested, "enc"),
                                      (masked_nested, "drop")])
def test_tf_keras_mask_crosses_the_cut_explicitly(tk, make, at):
    model = make(tk)
    expected = np.asarray(model(IDS))
    unpadded = np.asarray(model(np.where(IDS == 0, 19, IDS)))
    assert float(np.max(np.abs(expected - unpadded))) > 1e-4  # the padding is ignored only if masked
    parts = kgraft.split(model, at)
    assert [t.name for t in parts[1].inputs] == [at, f"{at}_mask"] and parts[1].inputs[1].dtype == "bool"
    assert_close(through_numpy(parts, IDS, False), [expected], f"split at {at}")
    head = [np.asarray(v) for v in parts[0](IDS)]
    unmasked = np.asarray(parts[1]([head[0], np.ones_like(head[1])]))
    assert float(np.max(np.abs(expected - unmasked))) > 1e-4  # the mask is what makes it right
    assert_close([np.asarray(kgraft.flatten(model)(IDS))], [expected], "flatten")


def test_tf_keras_masks_are_in_the_ir(tk):
    graph = kgraft.lower(masked_nested(tk))
    assert sorted(graph.value_name(v) for v in graph.masks) == ["drop", "enc"]
    flat = passes.inline_nested(graph)
    assert sorted(flat.value_name(v) for v in flat.masks) == ["drop", "emb"]
