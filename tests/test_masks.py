"""Masks keep flowing: a padding mask that Keras propagates implicitly (Sequential models, nested
models) reaches the same layers after a split whose parts exchange numpy arrays, as across a
process boundary: the mask crosses as an explicit boolean tensor (``<ref>_mask``).

Every case first proves that the mask matters (the source on padded ids differs from the source
with every step unmasked), so the comparisons cannot pass vacuously.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kgraft
from kgraft import CutError

L = keras.layers
IDS = np.array([[3, 5, 7, 0, 0], [1, 2, 3, 4, 6], [9, 0, 0, 0, 0]], "int32")  # padded with 0


def _sequential():
    return keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(20, 4, mask_zero=True, name="embedding"),
                             L.LSTM(4, name="lstm")], name="seq")


def _stacked():
    return keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(20, 4, mask_zero=True, name="emb"),
                             L.LSTM(4, return_sequences=True, name="l1"), L.GRU(3, name="gru")], name="stacked")


def _nested():
    i = keras.Input((None,), dtype="int32", name="ids_in")
    enc = keras.Model(i, L.Embedding(20, 4, mask_zero=True, name="emb")(i), name="enc")
    x = keras.Input((None,), dtype="int32", name="ids")
    return keras.Model(x, L.LSTM(4, name="lstm")(L.Dropout(0.1, name="drop")(enc(x))), name="outer")


def _through_numpy(parts, x):
    values = [x]
    for part in parts:
        out = part(values if len(values) > 1 else values[0])
        values = [np.asarray(v) for v in (out if isinstance(out, (list, tuple)) else [out])]
    return values


def _masked_matters(model):
    keras.utils.set_random_seed(0)
    unmasked = keras.Sequential([L.Embedding(20, 4)])  # stand-in: the same ids, no mask
    assert unmasked is not None
    ref = np.asarray(model(IDS))
    nonzero = np.where(IDS == 0, 19, IDS)  # the padding replaced by a real token
    assert float(np.max(np.abs(ref - np.asarray(model(nonzero))))) > 1e-4  # padding is ignored only if masked
    return ref


@pytest.mark.parametrize("make, at", [(_sequential, "embedding"), (_stacked, "l1"), (_stacked, "emb"),
                                      (_nested, "enc"), (_nested, "drop")])
def test_a_mask_crosses_the_cut_explicitly(make, at):
    model = make()
    ref = _masked_matters(model)
    parts = kgraft.split(model, at)
    head_outputs = [t.name for t in parts[1].inputs]
    assert head_outputs[-1].endswith("_mask") and parts[1].inputs[-1].dtype == "bool"
    got = _through_numpy(parts, IDS)
    assert float(np.max(np.abs(ref - got[0]))) <= 1e-6
    # the mask is what makes it right: the tail fed an all-true mask computes something else
    head = [np.asarray(v) for v in parts[0](IDS)]
    wrong = np.asarray(parts[1]([head[0], np.ones_like(head[1])]))
    assert float(np.max(np.abs(ref - wrong))) > 1e-4


def test_flatten_keeps_a_mask_made_inside_a_nested_model():
    model = _nested()
    ref = np.asarray(model(IDS))
    assert float(np.max(np.abs(ref - np.asarray(kgraft.flatten(model)(IDS))))) <= 1e-6


def test_the_ir_knows_which_values_carry_masks():
    graph = kgraft.lower(_nested())
    masked = sorted(graph.value_name(v) for v in graph.masks)
    assert masked == ["drop", "enc"]
    flat = kgraft.passes.inline_nested(graph)
    assert sorted(flat.value_name(v) for v in flat.masks) == ["drop", "emb"]


def test_extract_from_a_masked_tensor_takes_its_mask():
    model = _sequential()
    ref = np.asarray(model(IDS))
    sub = kgraft.extract(model, "lstm", inputs="embedding")
    assert [t.name for t in sub.inputs] == ["embedding", "embedding_mask"]
    emb = keras.Model(model.inputs, model.get_layer("embedding").output)
    assert float(np.max(np.abs(ref - np.asarray(sub([np.asarray(emb(IDS)), IDS != 0]))))) <= 1e-6


def test_a_nested_model_called_with_a_mask_is_inlined_with_it():
    i = keras.Input((None, 4), name="seq_in")
    inner = keras.Model(i, L.LSTM(3, name="lstm")(i), name="inner")
    ids = keras.Input((None,), dtype="int32", name="ids")
    emb = L.Embedding(20, 4, name="emb")(ids)  # no mask_zero: the mask is given explicitly
    mask = keras.ops.not_equal(ids, 0)
    model = keras.Model(ids, L.Dense(2, name="out")(inner(emb, mask=mask)))
    ref = np.asarray(model(IDS))
    assert float(np.max(np.abs(ref - np.asarray(model(np.where(IDS == 0, 19, IDS)))))) > 1e-4
    flat = kgraft.flatten(model)
    assert float(np.max(np.abs(ref - np.asarray(flat(IDS))))) <= 1e-6


def test_a_later_cut_before_an_earlier_one_is_named():
    x = keras.Input((4,), name="x")
    a = L.Dense(4, name="a")(x)
    c = L.Dense(4, name="c")(L.Dense(4, name="b")(a))
    model = keras.Model(x, L.Dense(2, name="out")(c))
    with pytest.raises(CutError, match=r"cut 2 \{a, c\} uses 'a', which is computed before cut 1 \{b\} and does "
                                       r"not cross it"):
        kgraft.split(model, ["b", ["a", "c"]])


def test_extract_inside_a_nested_model_that_takes_a_mask():
    """Keras 3 records ``mask=`` on a nested model's call; inlining attaches it (``WithMask``), a
    layer the source does not have, which the check's interpreter must make, not look up (found
    by the hypothesis generator)."""
    i = keras.Input((None, 4), name="dec_in")
    dec = keras.Model(i, L.LSTM(3, name="lstm")(i), name="dec")
    ids = keras.Input((None,), dtype="int32", name="ids")
    model = keras.Model(ids, L.Dense(2, name="out")(dec(L.Embedding(20, 4, mask_zero=True, name="emb")(ids))))
    ref = np.asarray(dec(model.get_layer("emb")(IDS)))
    assert float(np.max(np.abs(ref - np.asarray(dec(model.get_layer("emb")(np.where(IDS == 0, 19, IDS))))))) > 1e-4
    sub = kgraft.extract(model, "dec/lstm")
    assert float(np.max(np.abs(ref - np.asarray(sub(IDS))))) <= 1e-6
