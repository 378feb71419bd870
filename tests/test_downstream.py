"""``downstream``: the layers that depend on a tensor."""

from __future__ import annotations

from kgraft import passes
from support.passes_graphs import DIAMOND, MIXED, NESTED, TWO_INPUTS, ir, untouched


def test_downstream_diamond():
    g = ir(DIAMOND)
    with untouched(g):
        assert passes.downstream(g, "s") == ["l", "r", "add", "out"]
        assert passes.downstream(g, "l") == ["add", "out"]
        assert passes.downstream(g, "x") == ["s", "l", "r", "add", "out"]
        assert passes.downstream(g, "out") == []


def test_downstream_multi_output_and_shared():
    g = ir(MIXED)
    assert passes.downstream(g, "rnn:1") == ["right", "add", "out"]
    assert passes.downstream(g, "rnn:0") == ["left", "dead", "add", "out"]
    assert passes.downstream(g, "shared@1") == ["cat", "rnn", "left", "right", "dead", "add", "out"]
    tied = ir("""
    kgraft.model @tied(%x: f32[?,4]) {
      %s@0 = Dense @s#0(%x) {units=4} : f32[?,4]
      %mid = Activation @mid#0(%s@0) {activation="relu"} : f32[?,4]
      %s@1 = Dense @s#1(%mid) {units=4} : f32[?,4]
      return %s@1
    }
    """)
    assert passes.downstream(tied, "s@0") == ["mid", "s"]
    assert passes.downstream(tied, "mid") == ["s"]
    assert passes.downstream(tied, "s@1") == []


def test_downstream_two_inputs_and_nested():
    g = ir(TWO_INPUTS)
    assert passes.downstream(g, "x2") == ["b", "c", "d", "out"]
    n = ir(NESTED)
    with untouched(n):
        assert passes.downstream(n, "mid/add@0") == ["mid_dense", "mid_seq_dense", "act", "add", "dense"]
        assert passes.downstream(n, "mid/seq/act@1") == ["add", "dense"]
