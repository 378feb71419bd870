"""The Keras-level functions of API.md: flatten, extract, split_points, split, add_head, downstream.

Each is checked on in-memory models and on ``.keras`` files (with ``custom_objects``), for
numbers (max abs diff <= 1e-5), copied weights, shared layers staying shared inside a result,
and for leaving the argument alone (weights, layers, call sites of every layer).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import hashlib

import keras
import numpy as np
import pytest
from keras import layers

import kgraft
from kgraft import CutError, KgraftError, RefError, UnknownLayerError

ATOL = 1e-5


# ---------------------------------------------------------------------------- helpers
def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def is_nested(model) -> bool:
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def to_list(values) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def predict(model, inputs) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in to_list(model(inputs, training=False))]


def compose(parts, inputs) -> list[np.ndarray]:
    """Feed each partition's outputs (a list, in order) to the next; the last one's outputs."""
    values = to_list(inputs)
    for i, part in enumerate(parts):
        assert len(part.inputs) == len(values), f"partition {i} takes {len(part.inputs)} inputs, got {len(values)}"
        values = predict(part, values if len(values) > 1 else values[0])
        assert len(values) == len(part.outputs)
    return values


def assert_close(actual: list, expected: list, atol: float = ATOL) -> float:
    assert len(actual) == len(expected), f"{len(actual)} outputs vs {len(expected)}"
    worst = 0.0
    for i, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"output {i}: shape {a.shape} vs {e.shape}"
        assert np.all(np.isfinite(e))
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))))
    assert worst <= atol, f"max abs diff {worst:.3e} > {atol:.0e}"
    return worst


def weight_digests(model) -> list[str]:
    return sorted(hashlib.sha256(np.ascontiguousarray(np.asarray(v.numpy())).tobytes()).hexdigest()
                  + str(tuple(v.shape)) for v in model.weights)


def assert_copied_from(results, source, extra=()) -> None:
    """Results are new models: no layer or variable of ``source`` (or of the ``extra`` layers, e.g.
    a head), and every weight is a weight of ``source`` or of ``extra``."""
    src_layers = {id(l) for l in all_layers(source)} | {id(source)} | {id(l) for l in extra}
    src_vars = {id(v) for v in source.weights} | {id(v) for l in extra for v in l.weights}
    src_digests = set(weight_digests(source)) | {d for l in extra for d in weight_digests(l)}
    for result in to_list(results):
        assert isinstance(result, keras.Model)
        assert id(result) not in src_layers
        assert not {id(l) for l in all_layers(result)} & src_layers, "a result reuses a layer of the argument"
        assert not {id(v) for v in result.weights} & src_vars, "a result reuses a variable of the argument"
        assert set(weight_digests(result)) <= src_digests, "a result has weights the argument does not have"


def node_tensor(model, layer_name: str, call: int = 0, index: int = 0):
    """The KerasTensor of call site ``call`` of a layer of a (flat) functional model."""
    return model.get_layer(layer_name)._inbound_nodes[call].outputs[index]


def oracle(flat, specs: list[tuple]) -> keras.Model:
    """A Keras-built model of ``flat``'s intermediate tensors ``(layer, call, index)``."""
    return keras.Model(flat.inputs, [node_tensor(flat, *s) for s in specs])


class Scale(keras.layers.Layer):
    """A custom layer with a weight, not registered with Keras."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = init

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init), name="scale")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


# ---------------------------------------------------------------------------- models
def make_chain(name: str = "chain") -> keras.Model:
    """One input, one output, split points all along. Nested Functional used twice, nested
    Sequential, a shared layer called twice, layer names that clash across levels."""
    keras.utils.set_random_seed(7)
    i = keras.Input((6,), name="ii")
    h = layers.Dense(6, activation="tanh", name="dense")(i)
    h2 = layers.Dense(6, name="inner_out")(h)
    inner = keras.Model(i, layers.Add(name="add")([h, h2]), name="inner")
    seq = keras.Sequential([keras.Input((6,), name="si"), layers.Dense(6, activation="relu", name="dense"),
                            layers.Dense(6, name="seq_out")], name="seq")
    x = keras.Input((8,), name="x")
    stem = layers.Dense(6, name="stem")(x)
    t = inner(inner(stem))
    s = seq(t)
    shared = layers.Dense(6, activation="sigmoid", name="shared")
    u = shared(shared(s))
    res = layers.Add(name="res")([u, s])
    out = layers.Dense(3, name="dense")(res)
    return keras.Model(x, out, name=name)


def make_multi(name: str = "multi") -> keras.Model:
    """Two inputs, two outputs, no split point; shared layer across inputs; nested models."""
    keras.utils.set_random_seed(11)
    i = keras.Input((6,), name="ii")
    h = layers.Dense(6, activation="tanh", name="dense")(i)
    inner = keras.Model(i, layers.Add(name="add")([h, layers.Dense(6, name="inner_out")(h)]), name="inner")
    seq = keras.Sequential([keras.Input((6,)), layers.Dense(6, activation="relu", name="dense"),
                            layers.Dense(6, name="seq_out")], name="seq")
    x, y = keras.Input((6,), name="x"), keras.Input((6,), name="y")
    shared = layers.Dense(6, name="shared")
    a, b = shared(x), shared(y)
    m = layers.Multiply(name="mul")([a, b])
    t = inner(inner(m))
    s = seq(t)
    c = layers.Concatenate(name="cat")([s, a])
    out1 = layers.Dense(3, name="dense")(c)
    out2 = layers.Dense(2, name="aux")(a)
    return keras.Model([x, y], [out1, out2], name=name)


def make_sequential() -> keras.Sequential:
    keras.utils.set_random_seed(3)
    inner = keras.Sequential([keras.Input((5,)), layers.Dense(5, activation="relu", name="d1"),
                              layers.Dense(5, name="d2")], name="block")
    return keras.Sequential([keras.Input((4,)), layers.Dense(5, name="d1"), inner,
                             layers.Activation("tanh", name="act"), layers.Dense(2, name="d2")], name="stack")


def make_custom() -> keras.Model:
    keras.utils.set_random_seed(5)
    x = keras.Input((4,), name="x")
    h = layers.Dense(4, name="d")(x)
    h = Scale(0.5, name="scale")(h)
    h = layers.Activation("relu", name="act")(h)
    return keras.Model(x, layers.Dense(2, name="out")(h), name="custom")


@pytest.fixture(scope="module")
def chain():
    return make_chain()


@pytest.fixture(scope="module")
def multi():
    return make_multi()


@pytest.fixture(scope="module")
def chain_x():
    return np.random.default_rng(0).standard_normal((3, 8)).astype("float32")


@pytest.fixture(scope="module")
def multi_x():
    rng = np.random.default_rng(1)
    return [rng.standard_normal((3, 6)).astype("float32") for _ in range(2)]


@pytest.fixture(scope="module")
def chain_flat(chain):
    return kgraft.flatten(chain)


@pytest.fixture(scope="module")
def multi_flat(multi):
    return kgraft.flatten(multi)


@pytest.fixture(scope="module")
def chain_file(tmp_path_factory, chain):
    path = tmp_path_factory.mktemp("models") / "chain.keras"
    chain.save(path)
    return str(path)


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory):
    model = make_custom()
    path = tmp_path_factory.mktemp("models") / "custom.keras"
    model.save(path)
    return model, str(path)


# ---------------------------------------------------------------------------- flatten
def test_flatten_nested_shared(chain, chain_x, chain_flat, unchanged):
    with unchanged(chain):
        flat = kgraft.flatten(chain)
    assert not is_nested(flat)
    assert_close(predict(flat, chain_x), predict(chain, chain_x))
    assert_copied_from(flat, chain)
    assert weight_digests(flat) == weight_digests(chain)
    assert flat.count_params() == chain.count_params()
    assert [t.shape for t in flat.inputs] == [t.shape for t in chain.inputs]
    # shared layers stay shared: one layer object, one set of weights, several call sites
    assert len(flat.get_layer("shared")._inbound_nodes) == 2
    names = [l.name for l in flat.layers]
    assert len(names) == len(set(names))
    assert "dense" in names  # the outer layer keeps its name
    inner_dense = [n for n in names if n.startswith("inner") and n.endswith("dense")]
    assert len(inner_dense) == 1
    assert len(flat.get_layer(inner_dense[0])._inbound_nodes) == 2  # inner model used twice
    assert len(flat.get_layer("inner_out")._inbound_nodes) == 2


def test_flatten_multi_input_output(multi, multi_x, multi_flat, unchanged):
    with unchanged(multi):
        flat = kgraft.flatten(multi)
    assert not is_nested(flat)
    assert len(flat.outputs) == 2 and len(flat.inputs) == 2
    assert_close(predict(flat, multi_x), predict(multi, multi_x))
    assert_copied_from(flat, multi)
    assert weight_digests(flat) == weight_digests(multi)


def test_flatten_sequential_with_nested_sequential(unchanged):
    model = make_sequential()
    x = np.random.default_rng(2).standard_normal((4, 4)).astype("float32")
    with unchanged(model):
        flat = kgraft.flatten(model)
    assert not is_nested(flat)
    assert [l.name for l in flat.layers if not isinstance(l, layers.InputLayer)] == [
        "d1", "block_d1", "block_d2", "act", "d2"]
    assert_close(predict(flat, x), predict(model, x))
    assert weight_digests(flat) == weight_digests(model)


def test_flatten_frozen_nested_model():
    keras.utils.set_random_seed(9)
    i = keras.Input((4,))
    inner = keras.Model(i, layers.Dense(4, name="frozen_dense")(layers.Dense(4, name="frozen_a")(i)), name="enc")
    inner.trainable = False
    x = keras.Input((4,), name="x")
    model = keras.Model(x, layers.Dense(2, name="head")(inner(x)), name="m")
    flat = kgraft.flatten(model)
    assert not is_nested(flat)
    assert not flat.get_layer("frozen_dense").trainable
    assert not flat.get_layer("frozen_a").trainable
    assert flat.get_layer("head").trainable
    assert len(flat.trainable_weights) == len(model.trainable_weights) == 2
    assert len(flat.non_trainable_weights) == len(model.non_trainable_weights) == 4
    xv = np.ones((2, 4), "float32")
    assert_close(predict(flat, xv), predict(model, xv))


def test_flatten_from_keras_file(chain, chain_file, chain_x):
    flat = kgraft.flatten(chain_file)
    assert not is_nested(flat)
    assert_close(predict(flat, chain_x), predict(chain, chain_x))


def test_h5_file(chain, chain_x, tmp_path):
    path = str(tmp_path / "chain.h5")
    chain.save(path)
    assert_close(predict(kgraft.flatten(path), chain_x), predict(chain, chain_x))
    assert kgraft.split_points(path) == kgraft.split_points(chain)
    assert_close(compose(kgraft.split(path, "inner/add@0"), chain_x), predict(chain, chain_x))


def test_custom_objects_from_file(custom_file):
    model, path = custom_file
    x = np.random.default_rng(4).standard_normal((2, 4)).astype("float32")
    with pytest.raises(UnknownLayerError) as info:
        kgraft.flatten(path)
    assert "Scale" in str(info.value) and "custom_objects" in str(info.value)
    custom = {"Scale": Scale}
    flat = kgraft.flatten(path, custom_objects=custom)
    assert isinstance(flat.get_layer("scale"), Scale)
    assert_close(predict(flat, x), predict(model, x))
    assert_close(predict(kgraft.extract(path, "out", custom_objects=custom), x), predict(model, x))
    with_head = kgraft.add_head(path, "act", layers.Dense(3, name="h"), custom_objects=custom)
    assert_close(predict(with_head, x)[:1], predict(model, x))
    parts = kgraft.split(path, "scale", custom_objects={"Scale": Scale})
    assert_close(compose(parts, x), predict(model, x))
    assert kgraft.split_points(path, custom_objects={"Scale": Scale}) == ["d", "scale", "act"]
    assert kgraft.downstream(path, "d", custom_objects={"Scale": Scale}) == ["scale", "act", "out"]
    with pytest.raises(UnknownLayerError):
        kgraft.split(path, "scale")


def test_custom_layer_in_memory_needs_no_custom_objects(unchanged):
    model = make_custom()
    x = np.random.default_rng(4).standard_normal((2, 4)).astype("float32")
    with unchanged(model):
        parts = kgraft.split(model, "scale")
    assert isinstance(parts[0].get_layer("scale"), Scale)
    assert_close(compose(parts, x), predict(model, x))


# ---------------------------------------------------------------------------- extract
def test_extract_intermediate_inside_nested_model(chain, chain_x, chain_flat, unchanged):
    with unchanged(chain):
        sub = kgraft.extract(chain, "inner/add@1")
    assert not is_nested(sub)
    assert len(sub.outputs) == 1
    expected = predict(oracle(chain_flat, [("add", 1, 0)]), chain_x)
    assert_close(predict(sub, chain_x), expected)
    assert_copied_from(sub, chain)
    assert "seq_out" not in [l.name for l in sub.layers]  # pruned


def test_extract_matches_numpy(multi, multi_x):
    sub = kgraft.extract(multi, ["mul", "shared@1"])
    w, b = (np.asarray(v) for v in multi.get_layer("shared").weights)
    a_np, b_np = multi_x[0] @ w + b, multi_x[1] @ w + b
    assert_close(predict(sub, multi_x), [a_np * b_np, b_np])
    assert len(sub.get_layer("shared")._inbound_nodes) == 2  # still one shared layer


def test_extract_default_inputs_only_needed(multi, multi_x, unchanged):
    with unchanged(multi):
        sub = kgraft.extract(multi, "aux")
    assert len(sub.inputs) == 1
    assert_close(predict(sub, multi_x[0]), predict(multi, multi_x)[1:])
    assert len(sub.get_layer("shared")._inbound_nodes) == 1


def test_extract_explicit_intermediate_inputs_compose(chain, chain_x, unchanged):
    with unchanged(chain):
        head = kgraft.extract(chain, ["stem"])
        tail = kgraft.extract(chain, outputs="dense", inputs=["stem"])
    assert len(tail.inputs) == 1
    assert tuple(tail.inputs[0].shape) == (None, 6)
    assert_close(compose([head, tail], chain_x), predict(chain, chain_x))


def test_extract_multi_tensor_inputs_and_pass_through(multi, multi_x, multi_flat):
    front = kgraft.extract(multi, ["shared@0", "mul"])
    back = kgraft.extract(multi, outputs=["dense", "aux", "shared@0"], inputs=["shared@0", "mul"])
    values = compose([front, back], multi_x)
    expected = predict(multi, multi_x) + predict(oracle(multi_flat, [("shared", 0, 0)]), multi_x)
    assert_close(values, expected)
    assert_close([values[2]], predict(front, multi_x)[:1], atol=0.0)  # passed through unchanged


def test_extract_errors(multi, chain):
    with pytest.raises(CutError) as info:
        kgraft.extract(multi, "dense", inputs=["mul"])
    assert "->" in str(info.value) and "cat" in str(info.value)
    with pytest.raises(RefError) as info:
        kgraft.extract(chain, "stme")
    assert "stem" in str(info.value)
    with pytest.raises(RefError, match="shared@0"):
        kgraft.extract(multi, "shared")


# ---------------------------------------------------------------------------- split_points / split
def test_split_points(chain, multi, unchanged):
    with unchanged(chain, multi):
        points = kgraft.split_points(chain)
        assert kgraft.split_points(multi) == []
    assert points == kgraft.passes.split_points(kgraft.lower(chain))
    assert points[0] == "stem"
    assert "res" in points and "shared@1" not in points  # res skips over shared@1
    assert all(isinstance(p, str) for p in points) and len(points) == len(set(points))
    assert "dense" not in points and "x" not in points  # model output / input


def test_split_at_every_split_point(chain, chain_x, chain_file, unchanged):
    expected = predict(chain, chain_x)
    points = kgraft.split_points(chain)
    assert len(points) >= 6
    for p in points:
        with unchanged(chain):
            parts = kgraft.split(chain, p)
        assert len(parts) == 2
        assert len(parts[0].outputs) == 1 and len(parts[1].inputs) == 1
        assert_close(compose(parts, chain_x), expected)
        assert_copied_from(parts, chain)
    for p in points[::3]:  # the same refs work on the file
        assert_close(compose(kgraft.split(chain_file, p), chain_x), expected)


def test_split_at_all_points_at_once(chain, chain_x):
    points = kgraft.split_points(chain)
    parts = kgraft.split(chain, points)
    assert len(parts) == len(points) + 1
    assert_close(compose(parts, chain_x), predict(chain, chain_x))


def test_split_keeps_shared_layers_shared_inside_a_partition(chain, chain_x):
    parts = kgraft.split(chain, "stem")
    assert len(parts[1].get_layer("shared")._inbound_nodes) == 2
    assert len(parts[1].get_layer("inner")._inbound_nodes) == 2  # a nested model used twice stays shared
    assert_close(compose(parts, chain_x), predict(chain, chain_x))
    parts = kgraft.split(chain, [["shared@0", "seq"]])  # the shared layer's two calls land apart
    assert len(parts[0].get_layer("shared")._inbound_nodes) == 1
    assert len(parts[1].get_layer("shared")._inbound_nodes) == 1
    assert_close(compose(parts, chain_x), predict(chain, chain_x))


def test_split_multi_tensor_cut_with_pass_through(multi, multi_x, unchanged):
    expected = predict(multi, multi_x)
    with unchanged(multi):
        parts = kgraft.split(multi, [["shared@0", "mul"]])
    assert [len(p.outputs) for p in parts] == [2, 2]
    assert_close(compose(parts, multi_x), expected)
    with unchanged(multi):
        parts = kgraft.split(multi, [["shared@0", "mul"], ["shared@0", "inner/add@1"], ["aux", "cat"]])
    assert [len(p.inputs) for p in parts] == [2, 2, 2, 2]
    assert [len(p.outputs) for p in parts] == [2, 2, 2, 2]
    assert_close(compose(parts, multi_x), expected)
    assert_copied_from(parts, multi)


def test_split_n_way_pipeline(chain, chain_x):
    parts = kgraft.split(chain, ["stem", "inner/add@0", ["shared@1", "seq_out"], "res"])
    assert len(parts) == 5
    assert [len(p.outputs) for p in parts] == [1, 1, 2, 1, 1]
    assert_close(compose(parts, chain_x), predict(chain, chain_x))


def test_split_ref_to_nested_model_output_mixed_with_inner_ref(chain, chain_x):
    assert len(kgraft.split(chain, "seq")) == 2  # alone it resolves (no inlining needed)
    parts = kgraft.split(chain, ["inner/add@0", ["shared@1", "seq"]])
    assert_close(compose(parts, chain_x), predict(chain, chain_x))


def test_split_errors(chain, multi, unchanged):
    with unchanged(chain):
        with pytest.raises(CutError) as info:
            kgraft.split(chain, "shared@1")
    msg = str(info.value)
    assert "->" in msg and "res" in msg and "Nearest split points" in msg
    with pytest.raises(CutError):
        kgraft.split(chain, ["res", "stem"])
    with pytest.raises(CutError):
        kgraft.split(chain, "x")
    with pytest.raises(CutError):
        kgraft.split(chain, "dense")
    with pytest.raises(CutError) as info:
        kgraft.split(multi, "mul")
    assert "no single-tensor split points" in str(info.value)
    with pytest.raises(RefError):
        kgraft.split(chain, "nowhere")
    assert isinstance(info.value, KgraftError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- add_head
def test_add_head_layer(chain, chain_x, chain_flat, unchanged):
    head = layers.Dense(4, name="dense")  # clashes with the model's output layer
    with unchanged(chain):
        out = kgraft.add_head(chain, "inner/add@1", head, name="with_head")
    assert out.name == "with_head"
    assert len(out.outputs) == 2
    names = [l.name for l in out.layers]
    assert len(names) == len(set(names)) and "dense_1" in names
    values = predict(out, chain_x)
    assert_close(values[:1], predict(chain, chain_x))
    at = predict(oracle(chain_flat, [("add", 1, 0)]), chain_x)[0]
    assert_close(values[1:], [np.asarray(head(at))])
    assert_copied_from(out, chain, extra=[head])


def test_add_head_list_of_layers(multi, multi_x, multi_flat, unchanged):
    head = [layers.Dense(5, activation="relu", name="h1"), layers.Dropout(0.5, name="drop"),
            layers.Dense(2, name="h2")]
    with unchanged(multi):
        out = kgraft.add_head(multi, "mul", head)
    assert len(out.outputs) == 3
    values = predict(out, multi_x)
    assert_close(values[:2], predict(multi, multi_x))
    at = predict(oracle(multi_flat, [("mul", 0, 0)]), multi_x)[0]
    expected = np.asarray(head[2](head[0](at)))
    assert_close(values[2:], [expected])
    assert len(out.get_layer("shared")._inbound_nodes) == 2


def test_add_head_callable_returning_list(chain, chain_x, chain_flat):
    made = {}

    def head(t):
        made["a"] = layers.Dense(2, name="ha")
        made["b"] = layers.Dense(3, activation="tanh", name="hb")
        return [made["a"](t), made["b"](layers.Activation("relu", name="hr")(t))]

    out = kgraft.add_head(chain, "seq", head)
    assert len(out.outputs) == 3
    values = predict(out, chain_x)
    at = predict(oracle(chain_flat, [("seq_out", 0, 0)]), chain_x)[0]
    assert_close(values, predict(chain, chain_x)
                 + [np.asarray(made["a"](at)), np.asarray(made["b"](np.maximum(at, 0)))])


def test_add_head_shared_head_layer_and_shared_at(chain, chain_x, chain_flat):
    t = layers.Dense(6, name="tied")
    out = kgraft.add_head(chain, "shared@0", lambda x: t(t(x)))
    assert len(out.get_layer("tied")._inbound_nodes) == 2
    assert len(out.get_layer("shared")._inbound_nodes) == 2
    at = predict(oracle(chain_flat, [("shared", 0, 0)]), chain_x)[0]
    assert_close(predict(out, chain_x)[1:], [np.asarray(t(t(at)))])


def test_add_head_from_file_and_errors(chain, chain_file, chain_x):
    out = kgraft.add_head(chain_file, "stem", layers.Dense(2, name="probe"))
    assert_close(predict(out, chain_x)[:1], predict(chain, chain_x))
    with pytest.raises(KgraftError):
        kgraft.add_head(chain, "stem", "not a head")
    with pytest.raises(RefError):
        kgraft.add_head(chain, "nothere", layers.Dense(2))


# ---------------------------------------------------------------------------- downstream
def test_downstream(chain, multi, unchanged):
    with unchanged(chain, multi):
        assert kgraft.downstream(chain, "shared@0") == ["shared", "res", "dense"]
        assert kgraft.downstream(chain, "res") == ["dense"]
        assert kgraft.downstream(chain, "dense") == []
        assert kgraft.downstream(multi, "aux") == []
        # a top-level ref names the model's own layers (nested models by their name) ...
        assert kgraft.downstream(multi, "shared@1") == ["mul", "inner", "seq", "cat", "dense"]
        # ... a ref inside a nested model names the layers of the flattened model
        assert kgraft.downstream(multi, "inner/add@0") == ["inner_dense", "inner_out", "add", "seq_dense",
                                                             "seq_out", "cat", "dense"]
    flat_order = [l.name for l in kgraft.flatten(chain).layers]
    down = kgraft.downstream(chain, "inner/add@0")
    assert down == sorted(down, key=flat_order.index)  # topological order
    assert "stem" not in down and "dense" in down and "inner_out" in down


def test_downstream_to_freeze_the_rest(chain, chain_x):
    """The documented use: train only what depends on a tensor."""
    flat = kgraft.flatten(chain)
    trainable = set(kgraft.downstream(chain, "seq"))
    assert trainable == {"shared", "res", "dense"}
    for layer in flat.layers:
        layer.trainable = layer.name in trainable
    frozen_before = {l.name: [np.asarray(v) for v in l.weights] for l in flat.layers if not l.trainable}
    flat.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    flat.fit(chain_x, np.ones((3, 3), "float32"), epochs=1, verbose=0)
    for name, values in frozen_before.items():
        for a, b in zip(values, flat.get_layer(name).weights):
            np.testing.assert_array_equal(a, np.asarray(b))
    assert not np.allclose(predict(flat, chain_x)[0], predict(chain, chain_x)[0])


# ---------------------------------------------------------------------------- regressions
def make_late_first_call() -> keras.Model:
    """A shared layer whose call #1 (on x) can be computed before call #0 (on mul): Keras lists
    ``shared`` before ``mul``, so a topological order of the IR has ``shared@1`` first."""
    keras.utils.set_random_seed(21)
    x = keras.Input((4,), name="x")
    m = layers.Multiply(name="mul")([x, x])
    shared = layers.Dense(4, name="shared")
    a, b = shared(m), shared(x)
    c0 = layers.Concatenate(name="c0")([b, layers.Activation("relu", name="r")(x)])
    return keras.Model(x, layers.Concatenate(name="cat")([c0, a]), name="late")


def test_shared_layer_whose_second_call_comes_first(unchanged):
    """Found by test_hypothesis_models: rebuilt models swapped the two calls of such a layer."""
    model = make_late_first_call()
    x = np.random.default_rng(3).standard_normal((2, 4)).astype("float32")
    expected = predict(model, x)
    with unchanged(model):
        assert_close(predict(kgraft.build(kgraft.lower(model)), x), expected)
        assert_close(predict(kgraft.flatten(model), x), expected)
        w, bias = (np.asarray(v) for v in model.get_layer("shared").weights)
        sub = kgraft.extract(model, ["shared@0", "shared@1"])
        assert_close(predict(sub, x), [(x * x) @ w + bias, x @ w + bias])
        parts = kgraft.split(model, [["shared@1", "r", "shared@0"]])
        assert_close(compose(parts, x), expected)


# ---------------------------------------------------------------------------- never mutates
@pytest.mark.mutates_source  # it zeroes a kernel of the argument at the end, on purpose
def test_nothing_mutates_the_argument(fingerprint, layer_summary):
    model = make_chain("guarded")
    x = np.random.default_rng(8).standard_normal((2, 8)).astype("float32")
    before, summary = fingerprint(model), layer_summary(model)
    counts = {id(l): len(l._inbound_nodes) for l in all_layers(model)}
    expected = predict(model, x)
    results = [
        kgraft.flatten(model),
        kgraft.extract(model, ["inner/add@0", "stem"]),
        *kgraft.split(model, ["stem", "res"]),
        kgraft.add_head(model, "seq", layers.Dense(2)),
    ]
    kgraft.split_points(model)
    kgraft.downstream(model, "stem")
    assert fingerprint(model) == before
    assert layer_summary(model) == summary
    assert {id(l): len(l._inbound_nodes) for l in all_layers(model)} == counts
    # results own their weights: changing them leaves the argument alone, and vice versa
    for r in results:
        for v in r.weights:
            v.assign(v.numpy() + 1.0)
    assert fingerprint(model) == before
    assert_close(predict(model, x), expected, atol=0.0)
    flat = kgraft.flatten(model)
    model.get_layer("stem").kernel.assign(model.get_layer("stem").kernel.numpy() * 0.0)
    assert not np.allclose(np.asarray(flat.get_layer("stem").kernel), 0.0)


def test_bad_argument_types():
    with pytest.raises(KgraftError):
        kgraft.flatten(42)
    with pytest.raises(KgraftError, match="no such model file"):
        kgraft.flatten("/nonexistent/model.keras")
