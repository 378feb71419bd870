"""A kgraft result is the same model: layer state, weight owners, flags, names — each a regression.

Numbers are compared on inputs far from the default statistics (an adapted Normalization must
not come back as mean 0 / variance 1), lookup layers on real strings, and parts of a split are
fed numpy arrays, as across a process boundary.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kgraft
from kgraft import KgraftError, RefError, UnknownLayerError

L = keras.layers


class Scale(L.Layer):
    """A custom layer written the ordinary way: no get_config, so Keras writes no name in its config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.w


class NoKwargs(L.Layer):
    def __init__(self):
        super().__init__()

    def call(self, x):
        return x + 1.0


def _arrays(outputs):
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def _close(a, b, atol=1e-5):
    a, b = _arrays(a), _arrays(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(np.isnan(x), np.isnan(y))
        assert float(np.max(np.abs(x - y))) <= atol * max(1.0, float(np.max(np.abs(x)))), float(np.max(np.abs(x - y)))


# ---------------------------------------------------------------------------- 1. custom layers
def _scale_model():
    x = keras.Input((4,), name="x")
    h = L.Dense(4, name="d")(x)
    y = Scale(name="scale")(h)
    model = keras.Model(x, L.Dense(2, name="out")(y))
    model.get_layer("scale").w.assign(np.array([1.0, 2.0, 3.0, 4.0], "float32"))
    return model


def test_custom_layer_without_get_config_in_memory():
    model = _scale_model()
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    head, tail = kgraft.split(model, "scale")
    _close(model(x), tail(np.asarray(head(x))))
    _close(model(x), kgraft.flatten(model)(x))


def test_custom_layer_without_get_config_from_file(tmp_path):
    model = _scale_model()
    path = tmp_path / "scale.keras"
    model.save(path)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    head, tail = kgraft.split(path, "scale", custom_objects={"Scale": Scale})
    _close(model(x), tail(np.asarray(head(x))))
    with pytest.raises(UnknownLayerError, match=r"'Scale'.*custom_objects="):
        kgraft.split(path, "scale")


def test_custom_layer_without_kwargs_gets_a_fix():
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="out")(NoKwargs()(x)))
    with pytest.raises(KgraftError, match=r"NoKwargs.*give NoKwargs.__init__ a \*\*kwargs parameter"):
        kgraft.flatten(model)


def test_sequential_with_a_nameless_custom_layer():
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), Scale(), L.Dense(2)])
    x = np.ones((2, 4), "float32")
    _close(model(x), kgraft.flatten(model)(x))


# ---------------------------------------------------------------------------- 2. Functional subclasses
class Net(keras.Model):
    """A Functional subclass: the graph is built in __init__, get_config is not overridden."""

    def __init__(self, units=3, **kwargs):
        i = keras.Input((4,), name="net_in")
        o = L.Dense(units, name="net_dense")(L.Dense(5, name="net_hidden")(i))
        super().__init__(i, o, **kwargs)


def test_functional_subclass_alone_and_nested():
    net = Net(name="net")
    inp = keras.Input((4,), name="outer_in")
    outer = keras.Model(inp, L.Dense(2, name="top")(net(inp)))
    x = np.random.default_rng(1).normal(size=(2, 4)).astype("float32")
    assert type(kgraft.flatten(net)) is not Net
    _close(net(x), kgraft.flatten(net)(x))
    _close(outer(x), kgraft.flatten(outer)(x))
    sub = kgraft.extract(outer, "net/net_hidden")
    _close(keras.Model(net.inputs, net.get_layer("net_hidden").output)(x), sub(x))


def test_a_model_without_a_graph_is_refused():
    class Free(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(kgraft.UnsupportedModelError, match="no functional graph"):
        kgraft.lower(Free())


# ---------------------------------------------------------------------------- 3. state
def _adapted():
    rng = np.random.default_rng(0)
    norm = L.Normalization(name="norm")
    norm.adapt(rng.normal(300.0, 20.0, size=(64, 3)).astype("float32"))
    lookup = L.StringLookup(name="lookup")
    lookup.adapt(np.array(["cat", "dog", "fish", "dog", "cat", "cat"]))
    ints = L.IntegerLookup(name="ints")
    ints.adapt(np.array([7, 9, 9, 11, 7, 7]))
    vec = L.TextVectorization(max_tokens=20, output_sequence_length=4, name="vec")
    vec.adapt(np.array(["the cat sat", "the dog ran far", "a fish"]))
    num = keras.Input((3,), name="num")
    word = keras.Input((1,), dtype="string", name="word")
    code = keras.Input((1,), dtype="int64", name="code")
    text = keras.Input((1,), dtype="string", name="text")
    h = L.Dense(2, name="after_norm")(norm(num))
    w = L.Embedding(10, 2, name="word_emb")(lookup(word))
    c = L.Embedding(10, 2, name="code_emb")(ints(code))
    t = L.Embedding(20, 2, name="text_emb")(vec(text))
    merged = L.Concatenate(name="cat")([L.Flatten()(w), L.Flatten()(c), L.Flatten()(t), h])
    model = keras.Model([num, word, code, text], L.Dense(1, name="score")(merged))
    x = [rng.normal(300.0, 20.0, size=(4, 3)).astype("float32"), np.array([["dog"], ["cat"], ["bird"], ["fish"]]),
         np.array([[9], [7], [3], [11]], "int64"), np.array([["the dog sat"], ["a cat"], ["far far"], ["fish"]])]
    return model, x


def test_adapted_state_is_carried_by_every_operation(tmp_path):
    model, x = _adapted()
    expected = model(x)
    _close(expected, kgraft.flatten(model)(x))
    _close(keras.Model(model.inputs[0], model.get_layer("after_norm").output)(x[0]),
           kgraft.extract(model, "after_norm", inputs="num")(x[0]))
    aux = kgraft.add_head(model, "after_norm", L.Dense(1, name="aux"))
    _close(expected, aux(x)[0])
    path = tmp_path / "adapted.keras"
    model.save(path)
    _close(expected, kgraft.flatten(path)(x))


def test_split_carries_state_through_numpy():
    model, x = _adapted()
    head, tail = kgraft.split(model, "cat")
    _close(model(x), tail(np.asarray(head(x))))


class FromTensor(L.Layer):
    """Creates its variable from a tensor, which Keras forbids while initialization is deferred."""

    def build(self, shape):
        self.w = keras.Variable(np.linspace(1.0, 2.0, shape[-1]).astype("float32"), name="w")

    def call(self, x):
        return x * self.w


def test_copied_state_is_the_initial_value_and_the_rest_is_initialized():
    """The builder defers initialization: a copied variable starts as its source's value, one not
    copied runs its own initializer, and Keras's deferred-variable registry is left empty."""
    x = keras.Input((4,), name="x")
    y = L.Dense(3, kernel_initializer=keras.initializers.Constant(0.25), bias_initializer="ones", name="const")(x)
    model = keras.Model(x, L.Dense(2, name="glorot")(L.Dropout(0.5, seed=1, name="drop")(y)))
    model.get_layer("const").kernel.assign(np.full((4, 3), -3.0, "float32"))
    data = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    flat = kgraft.flatten(model)
    _close(model(data), flat(data))
    assert flat(data, training=True).shape == (2, 2)  # the Dropout's seed state is initialized
    assert np.all(np.asarray(flat.get_layer("const").kernel) == -3.0)
    flat.get_layer("const").kernel.assign(np.zeros((4, 3), "float32"))  # the result owns its values
    assert np.all(np.asarray(model.get_layer("const").kernel) == -3.0)
    fresh = kgraft.build(kgraft.lower(model), weights=False)
    assert np.all(np.asarray(fresh.get_layer("const").kernel) == 0.25)
    assert np.all(np.asarray(fresh.get_layer("const").bias) == 1.0)
    glorot = np.asarray(fresh.get_layer("glorot").kernel)
    assert glorot.std() > 0.1 and not np.allclose(glorot, np.asarray(model.get_layer("glorot").kernel))
    for result in (flat, fresh):
        for layer in model.layers:
            assert result.get_layer(layer.name).get_config() == layer.get_config()
    with keras.StatelessScope():  # would raise "already initialized" if the builder left its variables there
        pass


def test_a_variable_made_from_a_tensor_is_built_without_deferring():
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="out")(FromTensor(name="ft")(x)))
    model.get_layer("ft").w.assign(np.array([5.0, -1.0, 0.5, 2.0], "float32"))
    data = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    flat = kgraft.flatten(model)
    _close(model(data), flat(data))
    np.testing.assert_array_equal(np.asarray(flat.get_layer("ft").w), [5.0, -1.0, 0.5, 2.0])


# ---------------------------------------------------------------------------- 4. one owner per weight
def test_a_layer_shared_by_two_nested_models_stays_one():
    shared = L.Dense(12, name="shared")
    a_in, b_in = keras.Input((12,), name="a_in"), keras.Input((12,), name="b_in")
    a = keras.Model(a_in, L.Dense(12, name="a_top")(shared(a_in)), name="a")
    b = keras.Model(b_in, L.Dense(12, name="b_top")(shared(b_in)), name="b")
    x = keras.Input((12,), name="x")
    model = keras.Model(x, L.Add(name="sum")([a(x), b(x), shared(x)]))
    n_params = model.count_params()
    data = np.random.default_rng(0).normal(size=(2, 12)).astype("float32")
    for result in (kgraft.flatten(model), kgraft.extract(model, "sum")):
        _close(model(data), result(data))
        assert result.count_params() == n_params  # 216 if the shared layer were copied, not 144+...
        assert len(result.weights) == len(model.weights)
    aux = kgraft.add_head(model, "sum", L.Dense(1, name="aux"))
    _close(model(data), aux(data)[0])
    assert aux.count_params() == n_params + 13 and len(aux.weights) == len(model.weights) + 2


# ---------------------------------------------------------------------------- 5. configs read right
def test_tuple_outputs():
    x = keras.Input((4,), name="x")
    a, b = L.Dense(2, name="a")(x), L.Dense(3, name="b")(x)
    model = keras.Model(x, (a, b))
    data = np.ones((2, 4), "float32")
    _close(model(data), kgraft.flatten(model)(data))


def test_frozen_nested_model_with_an_unfrozen_layer():
    i = keras.Input((4,), name="i")
    inner = keras.Model(i, L.Add(name="plus")([L.Dense(4, name="b")(L.Dense(4, name="a")(i)), i]), name="inner")
    x = keras.Input((4,), name="x")
    outer = keras.Model(x, L.Dense(2, name="c")(inner(x)))
    inner.trainable = False
    inner.get_layer("b").trainable = True
    names = sorted(v.path for v in outer.trainable_weights)
    for result in (kgraft.flatten(outer), *kgraft.split(outer, "inner/plus")):
        got = sorted(v.path for v in result.trainable_weights)
        assert set(got) <= set(names)
    flat = kgraft.flatten(outer)
    assert sorted(v.path for v in flat.trainable_weights) == names
    assert sorted(v.path for v in flat.non_trainable_weights) == sorted(v.path for v in outer.non_trainable_weights)


def test_names_with_ref_syntax_are_reached_by_name():
    x = keras.Input((4,), name="x")
    h = L.Dense(4, name="enc:1")(x)
    y = L.Dense(4, name="a@b")(L.ReLU(name="act")(h))
    model = keras.Model(x, L.Dense(2, name="out")(y))
    points = kgraft.split_points(model)
    assert "enc:1" in points and "a@b" in points
    data = np.ones((2, 4), "float32")
    for point in ("enc:1", "a@b"):
        head, tail = kgraft.split(model, point)
        _close(model(data), tail(np.asarray(head(data))))


def test_nested_model_called_with_inputs_keyword():
    i = keras.Input((4,), name="i")
    inner = keras.Model(i, L.Dense(3, name="d")(i), name="inner")
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Dense(2, name="out")(inner(inputs=x)))
    data = np.ones((2, 4), "float32")
    _close(model(data), kgraft.flatten(model)(data))


def test_unzipped_keras_directory(tmp_path):
    model = _scale_model()
    path = tmp_path / "unzipped"
    model.save(path, zipped=False)
    data = np.ones((2, 4), "float32")
    _close(model(data), kgraft.flatten(path, custom_objects={"Scale": Scale})(data))


# ---------------------------------------------------------------------------- 6. errors that teach
def test_missing_custom_function_is_named(tmp_path):
    def doubled(t):
        return t * 2.0

    x = keras.Input((3,), name="x")
    model = keras.Model(x, L.Lambda(doubled, name="lam")(x))
    path = tmp_path / "fn.keras"
    model.save(path)
    with pytest.raises(UnknownLayerError, match=r"unknown function 'doubled'.*custom_objects=\{'doubled': doubled\}"):
        kgraft.lower(path, safe_mode=False)
    assert kgraft.lower(path, safe_mode=False, custom_objects={"doubled": doubled})
    data = np.ones((2, 3), "float32")
    assert np.allclose(kgraft.flatten(model)(data), 2.0)  # in memory, the live function is found


def test_unknown_ref_into_an_opaque_model_lists_names():
    model = _scale_model()
    with pytest.raises(RefError) as info:
        kgraft.extract(model, "nope/inner")
    assert "ValueRef(" not in str(info.value)


def test_a_call_site_that_exists_once_a_nested_model_is_inlined():
    """``shared@1`` names the call inside the nested model (top-level call sites keep their
    indices, inlined ones come after): valid after inlining, as split_points reports refs, so
    extract and split inline first (found by the hypothesis generator)."""
    shared = L.Dense(4, name="shared")
    i = keras.Input((4,), name="i")
    inner = keras.Model(i, L.ReLU(name="relu")(shared(i)), name="inner")
    x = keras.Input((4,), name="x")
    model = keras.Model(x, L.Concatenate(name="cat")([inner(x), shared(L.Dense(4, name="pre")(x))]))
    data = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    _close(shared(data), kgraft.extract(model, "shared@1")(data))
    _close(shared(model.get_layer("pre")(data)), kgraft.extract(model, "shared@0")(data))


def test_a_layer_shared_by_two_nested_models_keeps_its_name():
    """One layer object in two nested models is no name clash: flattened, it is still ``shared``
    (not ``a_shared`` or ``b_shared``, depending on which nested model came first)."""
    shared = L.Dense(12, name="shared")
    a_in, b_in = keras.Input((12,), name="a_in"), keras.Input((12,), name="b_in")
    a = keras.Model(a_in, L.Dense(12, name="top")(shared(a_in)), name="a")
    b = keras.Model(b_in, L.Dense(12, name="top")(shared(b_in)), name="b")
    x = keras.Input((12,), name="x")
    model = keras.Model(x, L.Add(name="sum")([a(x), b(x)]))
    flat = kgraft.flatten(model)
    assert sorted(l.name for l in flat.layers) == ["a_top", "b_top", "shared", "sum", "x"]
    assert len(flat.get_layer("shared")._inbound_nodes) == 2
    data = np.random.default_rng(0).normal(size=(2, 12)).astype("float32")
    _close(model(data), flat(data))
    _close(shared(data), kgraft.extract(model, "shared@0")(data))
