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
        kgraft.flatten(model)
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
