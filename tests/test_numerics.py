"""kgraft.numerics: probe inputs that exercise ids, masks and vocabularies; NaN-strict comparisons.

Probe inputs are read from IR text (no TensorFlow) except where the vocabulary exists only in a
live Keras layer. The comparison tests pin the rule of issue 11 item 6: a NaN is never equal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kgraft.ir import parse
from kgraft.numerics import assert_close, close, max_abs_diff, probe_inputs, tolerance


def probe(text: str, **kwargs) -> list[np.ndarray]:
    return probe_inputs(parse(text), **kwargs)


# ---------------------------------------------------------------------------- probe inputs
def test_floats_and_unknown_dimensions():
    (x,) = probe("""kgraft.model @m(%x: f32[?,?,5]) {
      %d = Dense @d#0(%x) {units=2} : f32[?,?,2]
      return %d
    }""", batch=4)
    assert x.shape == (4, 3, 5) and x.dtype == np.float32 and x.std() > 0.3


def test_a_fixed_batch_dimension_is_kept():
    (x,) = probe("""kgraft.model @m(%x: f32[7,5]) {
      %d = Dense @d#0(%x) {units=2} : f32[7,2]
      return %d
    }""", batch=2)
    assert x.shape == (7, 5)


def test_ids_lie_inside_every_embedding_they_reach_and_cover_it():
    """Through a pass-through Reshape the ids reach a 7-row table too: the smaller range wins,
    and the ids cover it (the old [0, 5) left two rows of it unexercised)."""
    (ids,) = probe("""kgraft.model @m(%ids: i32[?,6]) {
      %big = Embedding @big#0(%ids) {input_dim=20, output_dim=3} : f32[?,6,3]
      %r = Reshape @r#0(%ids) {target_shape=[6]} : i32[?,6]
      %small = Embedding @small#0(%r) {input_dim=7, output_dim=3} : f32[?,6,3]
      return %big, %small
    }""", batch=32)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() == 6


def test_ids_of_a_nested_model_follow_it_inside():
    (ids,) = probe("""kgraft.model @m(%ids: i64[?,4]) {
      %enc = Functional @enc#0(%ids) : f32[?,4,2] {
        kgraft.model @enc(%enc_in: i64[?,4]) {
          %e = Embedding @e#0(%enc_in) {input_dim=3, output_dim=2} : f32[?,4,2]
          return %e
        }
      }
      return %enc
    }""", batch=16)
    assert ids.dtype == np.int64 and set(np.unique(ids)) == {0, 1, 2}


@pytest.mark.parametrize("layer, values", [
    ("CategoryEncoding @c#0(%ids) {num_tokens=4, output_mode=\"multi_hot\"} : f32[?,4]", {0, 1, 2, 3}),
    ("IntegerLookup @c#0(%ids) {vocabulary=[10, 20, 30]} : i64[?,4]", {10, 20, 30}),
    ("OneHot @c#0(%ids) {num_classes=2} : f32[?,3,2]", {0, 1}),
])
def test_other_id_consumers(layer, values):
    (ids,) = probe(f"""kgraft.model @m(%ids: i32[?,3]) {{
      %c = {layer}
      return %c
    }}""", batch=16)
    assert set(np.unique(ids)) == values


def test_padded_sequences_where_mask_zero():
    """Each row is padded with 0 at the end to a different length; real ids are never 0."""
    (ids,) = probe("""kgraft.model @m(%ids: i32[?,?]) {
      %e = Embedding @e#0(%ids) {input_dim=20, mask_zero=true, output_dim=4} : f32[?,?,4]
      %l = LSTM @l#0(%e) {units=4} : f32[?,4]
      return %l
    }""", batch=3, small=6)
    lengths = [int(np.count_nonzero(row)) for row in ids]
    assert len(set(lengths)) == 3 and max(lengths) == 6
    for row, n in zip(ids, lengths):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()


def test_masking_pads_with_its_mask_value():
    (x,) = probe("""kgraft.model @m(%x: f32[?,4,2]) {
      %m = Masking @m#0(%x) {mask_value=-1.0} : f32[?,4,2]
      %g = GRU @g#0(%m) {units=3} : f32[?,3]
      return %g
    }""", batch=2)
    assert (x[0] != -1.0).all() and (x[1, 2:] == -1.0).all() and (x[1, :2] != -1.0).all()


def test_strings_from_a_configured_vocabulary():
    (s,) = probe("""kgraft.model @m(%s: str[?,1]) {
      %l = StringLookup @l#0(%s) {vocabulary=["cat", "dog", "fish"]} : i64[?,1]
      return %l
    }""", batch=12)
    assert s.shape == (12, 1) and set(s.ravel()) == {"cat", "dog", "fish"}


def test_strings_from_a_vocabulary_only_the_live_layer_has():
    """An adapted StringLookup records no vocabulary in its config: the probe asks the layer."""
    import keras

    import kgraft

    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(np.array(["red", "green", "blue", "green"]))
    x = keras.Input((2,), dtype="string")
    model = keras.Model(x, lookup(x))
    assert model.get_layer("lookup").get_config().get("vocabulary") is None
    (s,) = probe_inputs(kgraft.lower(model), batch=8)
    assert set(s.ravel()) <= {"red", "green", "blue"} and len(set(s.ravel())) > 1
    assert (np.asarray(model(s)) > 0).all()  # no out-of-vocabulary index


def test_sentences_for_text_vectorization_have_different_lengths():
    (s,) = probe("""kgraft.model @m(%s: str[?]) {
      %t = TextVectorization @t#0(%s) {output_sequence_length=4, vocabulary=["the", "cat", "sat"]} : i64[?,4]
      return %t
    }""", batch=3)
    words = [row.split() for row in s]
    assert {len(w) for w in words} == {4, 3, 2} and {w for row in words for w in row} <= {"the", "cat", "sat"}


# ---------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("a, b, expected", [
    ([1.0, 2.0], [1.0, 2.5], 0.5),
    ([np.nan, 1.0], [np.nan, 1.0], math.inf),  # NaN is never equal, not even to NaN
    ([np.nan], [0.0], math.inf),
    ([0.0], [np.nan], math.inf),
    ([np.inf, 1.0], [np.inf, 1.0], 0.0),  # equal infinities are equal
    ([np.inf], [1e30], math.inf),
    ([np.inf], [-np.inf], math.inf),
    ([[1.0, 2.0]], [1.0, 2.0], math.inf),  # shape mismatch
])
def test_max_abs_diff_is_nan_strict(a, b, expected):
    assert max_abs_diff(np.array(a, "float32"), np.array(b, "float32")) == expected


def test_an_all_nan_output_is_not_equal_to_anything():
    """np.nanmax over an all-NaN difference gave 0.0 ("OK") in the CLI's check."""
    nan = np.full((2, 3), np.nan, "float32")
    assert max_abs_diff(nan, np.zeros((2, 3), "float32")) == math.inf
    assert not close(nan, nan)


def test_max_abs_diff_over_structures():
    a = {"x": np.zeros(2), "y": [np.ones(1), np.ones(3)]}
    b = {"x": np.zeros(2), "y": [np.ones(1), np.full(3, 1.25)]}
    assert max_abs_diff(a, b) == 0.25
    assert max_abs_diff(a, {"x": np.zeros(2)}) == math.inf
    assert max_abs_diff([np.zeros(2)], [np.zeros(2), np.zeros(2)]) == math.inf
    assert max_abs_diff(np.array(["a", "b"]), np.array(["a", "b"])) == 0.0
    assert max_abs_diff(np.array(["a", "b"]), np.array(["a", "c"])) == math.inf


def test_tolerance_is_relative_to_the_output_scale():
    assert tolerance(np.array([0.5, -0.2], "float32")) == pytest.approx(5e-6)
    assert tolerance(np.array([1000.0, np.inf], "float32")) == pytest.approx(1e-2)  # inf is no scale
    assert tolerance(np.array([1.0], "float16")) == pytest.approx(1e-3)
    assert close(np.array([1000.005]), np.array([1000.0]))
    softmax = np.full(1000, 1e-3)  # a change of 1e-6 is a 0.1% change here
    assert not close(softmax + 1e-6, softmax) and close(softmax + 1e-9, softmax)
    assert not close(np.array([1e-20]), np.array([0.0])) and close(np.zeros(3), np.zeros(3))


def test_assert_close_names_the_difference():
    assert assert_close(np.array([1.0]), np.array([1.0])) == 0.0
    with pytest.raises(AssertionError, match=r"max abs diff inf > tolerance"):
        assert_close(np.array([np.nan]), np.array([1.0]))


def test_cli_verify_reports_a_nan_model_as_a_mismatch():
    """``kgraft split``/``opt --verify``/``demo`` compare through kgraft.compare: a result that
    computes NaN is a MISMATCH there (it printed OK with max abs diff 0)."""
    import keras

    import kgraft
    from kgraft.compare import check_results

    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(3, name="d")(x))
    broken = keras.models.clone_model(model)
    broken.get_layer("d").kernel.assign(np.full((4, 3), np.nan, "float32"))
    graph = kgraft.lower(model)
    check = check_results(graph, [graph], [broken], "result vs model")
    assert not check.ok and check.max_abs_diff == math.inf and "MISMATCH" in check.summary()
