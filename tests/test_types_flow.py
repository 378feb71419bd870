"""Partition inputs are typed from what really flows, where Keras's symbolic shape is wrong."""

from __future__ import annotations

import keras
import numpy as np

import kgraft

L = keras.layers


def test_attention_scores_with_a_longer_key_cross_a_cut():
    # Keras 3.15 types the scores (None, 2, 4, 4); the real tensor is (batch, 2, 4, 6)
    q, v = keras.Input((4, 8), name="q"), keras.Input((6, 8), name="v")
    out, scores = L.MultiHeadAttention(2, 4, name="mha")(L.Dense(8, name="pre")(q), v, return_attention_scores=True)
    model = keras.Model([q, v], [L.Dense(3, name="d")(out), L.Activation("relu", name="act")(scores)])
    graph = kgraft.lower(model)
    assert graph.node("mha#0").outputs[1].shape == (None, 2, 4, 6)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 4, 8)).astype("float32"), rng.normal(size=(2, 6, 8)).astype("float32")]
    head, tail = kgraft.split(model, [["mha:0", "mha:1"]])
    assert tuple(tail.inputs[1].shape) == (None, 2, 4, 6)
    got = tail([np.asarray(t) for t in head(x)])
    for a, b in zip(model(x), got):
        assert float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) <= 1e-6
