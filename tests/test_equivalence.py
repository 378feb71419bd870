"""The equivalence check (``check=True``, :mod:`kgraft.equivalence`): wrong results are caught.

Broken results are built by hand (``clone_model`` plus a changed weight, a dropped mask, a lost
vocabulary, a custom layer whose ``get_config`` omits an argument) so that these tests do not
depend on what kgraft itself gets right or wrong today. Each must raise ``EquivalenceError``
naming the first tensor that differs and its layer class; good results must pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest
from keras import layers

import kgraft
from kgraft import EquivalenceError
from kgraft.equivalence import check_model, check_split
from kgraft.numerics import max_abs_diff


def nested_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="x")
    inner_in = keras.Input((8,))
    h = layers.Dense(8, activation="tanh", name="d1")(inner_in)
    inner = keras.Model(inner_in, layers.Dense(8, activation="tanh", name="d2")(h), name="inner")
    y = inner(layers.Dense(8, name="d0")(x))
    y = keras.ops.add(y, x)  # a Keras op (no layer object) on the way
    return keras.Model(x, layers.Dense(3, name="out")(y), name="outer")


def masked_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((None,), dtype="int32"),
                             layers.Embedding(20, 4, mask_zero=True, name="embedding"),
                             layers.LSTM(4, name="lstm")], name="masked")


# ---------------------------------------------------------------------------- caught
def test_a_wrong_weight_is_named_by_its_layer():
    model = nested_model()
    broken = kgraft.flatten(model)
    broken.get_layer("d2").kernel.assign(np.zeros((8, 8), "float32"))
    with pytest.raises(EquivalenceError) as info:
        check_model(model, broken)
    e = info.value
    assert (e.ref, e.layer_class) == ("d2", "Dense") and e.max_abs_diff > 0.1
    assert "first differing tensor is 'd2' (Dense)" in str(e) and "'out'" in str(e)
    assert "ValueRef" not in str(e) and "check=False" in str(e)


def test_a_wrong_weight_inside_a_kept_nested_model():
    """The source's inner tensors cannot be read with keras.Model(...) ("Graph disconnected"):
    the interpreter reads them."""
    model = nested_model()
    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    broken.get_layer("inner").get_layer("d1").bias.assign(np.ones(8, "float32"))
    with pytest.raises(EquivalenceError) as info:
        check_model(model, broken)
    assert (info.value.ref, info.value.layer_class) == ("d1", "Dense")


def test_a_mask_dropped_at_a_cut_is_named_at_its_consumer():
    """A head returning the embedding and a tail that gets it as a plain array (as across a
    process boundary): the padded steps reach the LSTM unmasked."""
    model = masked_model()
    head = keras.Model(model.inputs, model.get_layer("embedding").output)
    cut = keras.Input((None, 4), name="embedding")
    tail = keras.Model(cut, layers.LSTM(4, name="lstm")(cut))
    tail.get_layer("lstm").set_weights(model.get_layer("lstm").get_weights())
    with pytest.raises(EquivalenceError) as info:
        check_split(model, [head, tail])
    e = info.value
    assert (e.ref, e.layer_class, e.part) == ("lstm", "LSTM", 1)
    assert "in part 1" in str(e)


def test_a_mask_dropped_inside_a_model():
    model = masked_model()
    unmasked = keras.Sequential([keras.Input((None,), dtype="int32"),
                                 layers.Embedding(20, 4, name="embedding"), layers.LSTM(4, name="lstm")])
    unmasked.set_weights(model.get_weights())
    with pytest.raises(EquivalenceError) as info:
        check_model(model, unmasked)
    assert (info.value.ref, info.value.layer_class) == ("lstm", "LSTM")  # the embeddings agree


def test_ids_beyond_the_old_random_range_are_probed():
    """Rows 5.. of the embedding table differ: random ids in [0, 5) would never read them."""
    model = masked_model()
    broken = keras.models.clone_model(model)
    table = model.get_layer("embedding").embeddings.numpy().copy()
    table[5:] += 1.0
    broken.set_weights([table] + model.get_weights()[1:])
    with pytest.raises(EquivalenceError) as info:
        check_model(model, broken)
    assert (info.value.ref, info.value.layer_class) == ("embedding", "Embedding")


def test_a_lost_vocabulary_is_caught():
    """An adapted StringLookup keeps its vocabulary outside its config and its weights: a clone
    from the config alone has an empty lookup table, which fails on the probe strings."""
    lookup = layers.StringLookup(name="lookup")
    lookup.adapt(np.array(["red", "green", "blue", "green"]))
    x = keras.Input((2,), dtype="string")
    model = keras.Model(x, layers.Embedding(6, 3, name="emb")(lookup(x)))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    with pytest.raises(EquivalenceError, match="the result fails in layer 'lookup' \\(StringLookup\\)") as info:
        check_model(model, clone)
    assert (info.value.ref, info.value.layer_class) == ("lookup", "StringLookup")


def test_extract_is_checked_against_the_inner_tensor():
    model = nested_model()
    features = kgraft.extract(model, "inner/d1")
    check_model(model, features, outputs=["inner/d1"])
    features.get_layer("d1").bias.assign(np.ones(8, "float32"))
    with pytest.raises(EquivalenceError, match="'d1' \\(Dense\\)"):
        check_model(model, features, outputs=["inner/d1"])


def test_a_nan_result_is_never_equal():
    model = nested_model()
    broken = kgraft.flatten(model)
    broken.get_layer("out").bias.assign(np.full(3, np.nan, "float32"))
    with pytest.raises(EquivalenceError) as info:
        check_model(model, broken)
    assert (info.value.ref, info.value.max_abs_diff) == ("out", float("inf"))


def test_a_source_computing_nan_is_reported_as_such():
    x = keras.Input((2,))
    model = keras.Model(x, layers.Lambda(lambda t: t * float("nan"), output_shape=(2,), name="nan")(x))
    with pytest.raises(EquivalenceError, match="the source model itself computes NaN"):
        check_model(model, kgraft.flatten(model, check=False))


def test_bisection_costs_log_n_forward_passes(monkeypatch):
    """A wrong weight at layer 40 of 64: found in O(log n) interpreter runs, not n."""
    from kgraft.backends.keras.interpret import Interpreter

    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    y = x
    for i in range(64):
        y = layers.Dense(4, activation="tanh", name=f"dense_{i}")(y)
    model = keras.Model(x, y)
    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    broken.get_layer("dense_40").bias.assign(np.ones(4, "float32"))
    runs = []
    original = Interpreter.run
    monkeypatch.setattr(Interpreter, "run", lambda self, *a, **k: runs.append(1) or original(self, *a, **k))
    with pytest.raises(EquivalenceError) as info:
        check_model(model, broken)
    assert info.value.ref == "dense_40"
    assert len(runs) <= 2 * (6 + 2), len(runs)


# ---------------------------------------------------------------------------- the API
@keras.saving.register_keras_serializable(package="kgraft_test_equivalence")
class Scale(layers.Layer):
    """A custom layer whose get_config omits its constructor argument (a real user's bug)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        config = super().get_config()
        config.pop("factor", None)  # forgotten
        return config


def scaled_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    return keras.Model(x, layers.Dense(2, name="out")(Scale(3.0, name="scale")(layers.Dense(4, name="d")(x))))


@pytest.mark.parametrize("call", [
    lambda m, **k: kgraft.flatten(m, **k),
    lambda m, **k: kgraft.split(m, "scale", **k),
    lambda m, **k: kgraft.extract(m, "scale", **k),
    lambda m, **k: kgraft.add_head(m, "d", layers.Dense(1), **k),
], ids=["flatten", "split", "extract", "add_head"])
def test_every_function_returning_models_checks_them(call):
    model = scaled_model()
    with pytest.raises(EquivalenceError) as info:
        call(model)
    assert (info.value.ref, info.value.layer_class) == ("scale", "Scale")


def test_check_false_skips_the_check():
    model = scaled_model()
    x = np.random.default_rng(0).standard_normal((2, 4)).astype("float32")
    wrong = kgraft.flatten(model, check=False)
    assert max_abs_diff(wrong(x), model(x)) > 0.01  # what check=True refused to return


def test_good_results_pass_on_masked_string_and_nested_models():
    model = nested_model()
    kgraft.flatten(model)
    kgraft.extract(model, ["inner/d1", "out"])
    kgraft.extract(model, "inner/d2", inputs="d0")
    kgraft.add_head(model, "inner/d1", layers.Dense(2))
    kgraft.split(model, kgraft.split_points(model)[0])
    masked = masked_model()
    kgraft.flatten(masked)
    kgraft.extract(masked, "lstm")
