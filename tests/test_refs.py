"""Tensor refs (``name``, ``name:i``, ``name@k``, ``outer/inner``) and their error messages."""

from __future__ import annotations

import pytest

from kgraft import KgraftError, RefError, passes
from kgraft.ir import ValueRef
from kgraft.ir.refs import resolve
from support.passes_graphs import HEAD, NESTED, ir, output_names, split_parts, untouched


REFS = """
kgraft.model @refs(%x: f32[?,4], %y: f32[?,4]) {
  %shared@0 = Dense @shared#0(%x) {units=4} : f32[?,4]
  %shared@1 = Dense @shared#1(%y) {units=4} : f32[?,4]
  %lstm:0, %lstm:1, %lstm:2 = LSTM @lstm#0(%shared@0) {units=4} : f32[?,4], f32[?,4], f32[?,4]
  %twice@0:0, %twice@0:1 = Splitter @twice#0(%shared@1) : f32[?,2], f32[?,2]
  %twice@1:0, %twice@1:1 = Splitter @twice#1(%lstm:1) : f32[?,2], f32[?,2]
  %dense_out = Concatenate @dense_out#0([%lstm:0, %lstm:2, %twice@0:1, %twice@1:0]) : f32[?,12]
  return %dense_out
}
"""


def test_refs_resolve():
    g = ir(REFS)
    assert resolve(g, "x") == ValueRef("x#0", 0)
    assert resolve(g, "dense_out") == ValueRef("dense_out#0", 0)
    assert resolve(g, "lstm:1") == ValueRef("lstm#0", 1)
    assert resolve(g, "lstm:0") == ValueRef("lstm#0", 0)
    assert resolve(g, "shared@1") == ValueRef("shared#1", 0)
    assert resolve(g, "twice@1:0") == ValueRef("twice#1", 0)
    assert resolve(g, "twice@0:1") == ValueRef("twice#0", 1)
    assert resolve(g, "refs/shared@0") == ValueRef("shared#0", 0)
    # value names print as refs, and every printed value name resolves back to itself
    for node in g.nodes():
        for i in range(len(node.outputs)):
            name = g.value_name(ValueRef(node.id, i))
            assert resolve(g, name) == ValueRef(node.id, i)


@pytest.mark.parametrize("ref, must_contain", [
    ("lstm", ["ambiguous", "lstm:0", "lstm:1", "lstm:2"]),
    ("shared", ["ambiguous", "shared@0", "shared@1"]),
    ("twice@1", ["ambiguous", "twice@1:0", "twice@1:1"]),
    ("lstm:3", ["lstm", "3"]),
    ("shared@2", ["shared@0", "shared@1"]),
    ("lstn", ["lstm"]),
    ("dense_ou", ["dense_out"]),
    ("nope/shared", []),
    ("a:b:c", []),
])
def test_bad_refs_raise_ref_error(ref, must_contain):
    g = ir(REFS)
    with pytest.raises(RefError) as info:
        resolve(g, ref)
    for text in must_contain:
        assert text in str(info.value), str(info.value)
    assert isinstance(info.value, KgraftError) and isinstance(info.value, ValueError)


def test_bad_refs_through_passes():
    g = ir(REFS)
    with untouched(g):
        with pytest.raises(RefError, match="lstm:0"):
            passes.extract(g, outputs=["lstm"])
        with pytest.raises(RefError, match="shared@0"):
            split_parts(g, at=["shared"])
        with pytest.raises(RefError, match="Closest names: .*dense_out"):
            passes.add_head(g, at="dense_ot", head=ir(HEAD))
        with pytest.raises(RefError):
            passes.downstream(g, "missing_layer")


def test_unknown_ref_lists_close_names_inside_nested_models():
    g = ir(NESTED)
    with pytest.raises(RefError) as info:
        passes.extract(g, outputs=["mid/seq/actt"])
    assert "mid/seq/act" in str(info.value)


def test_qualified_refs_before_and_after_inlining():
    g = ir(NESTED)
    flat = passes.inline_nested(g)
    assert resolve(flat, "mid/dense@1") == resolve(flat, "mid_dense@1") == ValueRef("mid_dense#1", 0)
    assert resolve(flat, "mid/seq/dense@0") == ValueRef("mid_seq_dense#0", 0)
    assert resolve(flat, "dense") == ValueRef("dense#0", 0)  # the outer one keeps its name
    assert resolve(flat, "mid/seq/act@1") == resolve(flat, "act@1")
    # the same qualified refs work on the nested graph (passes inline when needed)
    with untouched(g):
        sub = passes.extract(g, outputs=["mid/seq/dense@1"])
    assert output_names(sub) == ["mid_seq_dense@1"]  # both call sites are needed
    with pytest.raises(RefError, match="mid_dense@0, mid_dense@1"):
        passes.extract(g, outputs=["mid/dense"])


def test_nested_model_names_resolve_after_inlining():
    """A ref to a nested model's own output ('mid@1') names the same tensor before and after
    inlining, and keeps the shared-layer rules ('mid' alone is ambiguous)."""
    g = ir(NESTED)
    flat = passes.inline_nested(g)
    assert resolve(g, "mid@1") == ValueRef("mid#1", 0)
    assert resolve(flat, "mid@0") == ValueRef("add#0", 0) and resolve(flat, "mid@1:0") == ValueRef("add#1", 0)
    with pytest.raises(RefError, match=r"'mid' is ambiguous: layer 'mid' is shared \(2 call sites\); pick one: mid@0, mid@1"):
        resolve(flat, "mid")
    with pytest.raises(RefError, match="'mid@2': layer 'mid' has no call site 2; it has mid@0, mid@1"):
        resolve(flat, "mid@2")
    with pytest.raises(RefError, match=r"'mid' has 1 output\(s\) \(0..0\), not 1"):
        resolve(flat, "mid@0:1")
    # a pipeline that needs inlining for one ref still takes the nested model's name for another
    parts = split_parts(g, at=["mid/dense@1", "mid@1"])
    assert [output_names(p) for p in parts[:2]] == [["mid_dense@1"], ["add"]]  # add@1, alone in its part
    assert passes.prune_unreachable(flat).aliases == flat.aliases  # copies keep them
