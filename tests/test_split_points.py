"""``split_points``: dominator-based single-tensor cuts, against a brute-force oracle."""

from __future__ import annotations

import pytest

from kgraft import passes
from kgraft.ir.refs import resolve
from support.passes_graphs import (
    AUX_OUTPUT, CHAIN, DIAMOND, INPUT_SKIP, LONG_SKIP, MIXED, NESTED, TWO_INPUTS, ir, untouched)


@pytest.mark.parametrize("text, expected", [
    (CHAIN, ["a", "b"]),
    (DIAMOND, ["s", "add"]),
    (TWO_INPUTS, ["c", "d"]),
    (LONG_SKIP, ["s0", "m"]),
    (INPUT_SKIP, []),
    (AUX_OUTPUT, ["h"]),
    (MIXED, ["cat", "add"]),
], ids=["chain", "diamond", "two-inputs", "long-skip", "input-skip", "aux-output", "mixed"])
def test_split_points_known_answers(text, expected, brute_split_points):
    g = ir(text)
    with untouched(g):
        points = passes.split_points(g)
    assert points == expected
    assert points == brute_split_points(passes.prune_unreachable(g))


def test_split_points_multi_output_node_is_not_a_point():
    """rnn dominates the output, but two of its outputs are used: no single tensor carries it."""
    g = ir(MIXED)
    assert "rnn" not in " ".join(passes.split_points(g))


def test_split_points_of_nested_model_are_inlined_refs(brute_split_points):
    g = ir(NESTED)
    with untouched(g):
        points = passes.split_points(g)
    flat = passes.inline_nested(g)
    assert points == brute_split_points(flat)
    assert points == ["pre", "mid_dense@0", "add@0", "mid_dense@1", "add@1"]
    for p in points:
        resolve(flat, p)


def test_split_points_single_output_used_by_several_sites_counts(brute_split_points):
    g = ir("""
    kgraft.model @fan(%x: f32[?,4]) {
      %s = Dense @s#0(%x) {units=4} : f32[?,4]
      %u = Dense @u#0(%s) {units=4} : f32[?,4]
      %v = Multiply @v#0([%s, %u]) : f32[?,4]
      %w = Add @w#0([%v, %s]) : f32[?,4]
      return %w
    }
    """)
    assert passes.split_points(g) == ["s"] == brute_split_points(g)
