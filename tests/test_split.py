"""``split``: one graph calling the partitions, cuts checked and explained."""

from __future__ import annotations

import pytest

from kgraft import CutError, passes
from support.passes_graphs import (
    AUX_OUTPUT, CHAIN, DIAMOND, INPUT_SKIP, LONG_SKIP, MIXED, NESTED, TWO_INPUTS, check_pipeline,
    compose_symbolic, input_names, ir, output_names, split_parts, symbolic, untouched)


def test_split_single_split_point():
    g = ir(DIAMOND)
    with untouched(g):
        parts = split_parts(g, at="s")
    assert len(parts) == 2
    assert [input_names(p) for p in parts] == [["x"], ["s"]]
    assert [output_names(p) for p in parts] == [["s"], ["out"]]
    assert set(parts[0].layers) == {"x", "s"}
    assert set(parts[1].layers) == {"s", "l", "r", "add", "out"}
    assert [p.name for p in parts] == ["diamond_part0", "diamond_part1"]
    check_pipeline(g, parts)


def test_split_at_list_of_one_ref_is_the_same():
    g = ir(DIAMOND)
    a = split_parts(g, at="add")
    b = split_parts(g, at=["add"])
    c = split_parts(g, at=[["add"]])
    assert [str(p) for p in a] == [str(p) for p in b] == [str(p) for p in c]


def test_split_not_a_split_point_names_path_and_nearest_points():
    g = ir(LONG_SKIP)
    with untouched(g):
        with pytest.raises(CutError) as info:
            split_parts(g, at="p")
    msg = str(info.value)
    assert "'p'" in msg and "not a split point" in msg
    assert "a -> b -> c" in msg
    assert "s0 -> a -> b -> c -> m" in msg
    assert "Nearest split points" in msg and "s0 (before)" in msg and "m (after)" in msg


def test_split_no_split_points_at_all_says_so():
    g = ir(INPUT_SKIP)
    with pytest.raises(CutError) as info:
        split_parts(g, at="a")
    msg = str(info.value)
    assert "x -> add" in msg
    assert "no single-tensor split points" in msg


def test_split_multi_tensor_cut():
    g = ir(LONG_SKIP)
    with untouched(g):
        parts = split_parts(g, at=[["c", "p"]])
    assert [input_names(p) for p in parts] == [["x"], ["c", "p"]]
    assert [output_names(p) for p in parts] == [["c", "p"], ["out"]]
    check_pipeline(g, parts)
    # the order given is the order of the boundary
    swapped = split_parts(g, at=[["p", "c"]])
    assert input_names(swapped[1]) == ["p", "c"]
    check_pipeline(g, swapped)


def test_split_multi_tensor_non_separator_names_bypass():
    g = ir(LONG_SKIP)
    with pytest.raises(CutError) as info:
        split_parts(g, at=[["a", "b"]])
    assert "s0 -> p -> m" in str(info.value)


def test_split_n_way_pipeline():
    g = ir(LONG_SKIP)
    with untouched(g):
        parts = split_parts(g, at=["s0", ["c", "p"], "m"])
    assert len(parts) == 4
    assert [input_names(p) for p in parts] == [["x"], ["s0"], ["c", "p"], ["m"]]
    assert [output_names(p) for p in parts] == [["s0"], ["c", "p"], ["m"], ["out"]]
    check_pipeline(g, parts)


def test_split_skip_connection_over_a_cut_is_passed_through():
    """s0 is needed after the second cut: partition 1 gets it and hands it on unchanged."""
    g = ir("""
    kgraft.model @skip(%x: f32[?,4]) {
      %s0 = Dense @s0#0(%x) {units=4} : f32[?,4]
      %a = Dense @a#0(%s0) {units=4} : f32[?,4]
      %b = Dense @b#0(%a) {units=4} : f32[?,4]
      %add = Add @add#0([%b, %s0]) : f32[?,4]
      %out = Dense @out#0(%add) {units=2} : f32[?,2]
      return %out
    }
    """)
    parts = split_parts(g, at=[["a", "s0"], ["b", "s0"]])
    assert len(parts) == 3
    assert [output_names(p) for p in parts] == [["a", "s0"], ["b", "s0"], ["out"]]
    middle = parts[1]
    assert set(middle.layers) == {"a", "s0", "b"}
    assert middle.outputs[1] == middle.input_refs()[1]  # passed straight through
    check_pipeline(g, parts)


def test_split_skip_from_model_input_over_a_cut():
    g = ir(INPUT_SKIP)
    parts = split_parts(g, at=[["a", "x"]])
    assert [input_names(p) for p in parts] == [["x"], ["a", "x"]]
    assert parts[0].outputs[1] == parts[0].input_refs()[0]
    check_pipeline(g, parts)


def test_split_final_output_computed_early_is_passed_through():
    g = ir(AUX_OUTPUT)
    with untouched(g):
        parts = split_parts(g, at=["h", ["k", "aux"], ["m", "aux"]])
    assert [output_names(p) for p in parts] == [["h"], ["k", "aux"], ["m", "aux"], ["main", "aux"]]
    last = parts[-1]
    assert last.outputs[1] == last.input_refs()[1]
    assert set(last.layers) == {"m", "aux", "main"}
    check_pipeline(g, parts)


def test_split_single_ref_after_an_early_output():
    """k is no split point (aux does not go through it), but every output that depends on k
    does: aux is computed before the cut and passed through."""
    g = ir(AUX_OUTPUT)
    assert passes.split_points(g) == ["h"]
    with untouched(g):
        parts = split_parts(g, at="k")
    assert [output_names(p) for p in parts] == [["k", "aux"], ["main", "aux"]]
    assert parts[1].outputs[1] == parts[1].input_refs()[1]
    check_pipeline(g, parts)
    pipeline = split_parts(g, at=["h", "k", "m"])
    assert [output_names(p) for p in pipeline] == [["h"], ["k", "aux"], ["m", "aux"], ["main", "aux"]]
    check_pipeline(g, pipeline)
    # the same model with the early output fed by k's branch too: now k is bypassed
    g2 = ir(AUX_OUTPUT.replace("%main = Dense @main#0(%m)", "%main = Add @main#0([%m, %aux2])")
            .replace("%aux = Dense @aux#0(%h) {units=3} : f32[?,3]",
                     "%aux = Dense @aux#0(%h) {units=3} : f32[?,3]\n  %aux2 = Dense @aux2#0(%h) {units=4} : f32[?,4]"))
    with pytest.raises(CutError, match="h -> aux2 -> main"):
        split_parts(g2, at="k")


def test_split_of_multi_output_model_orders_outputs_like_the_model():
    g = ir(AUX_OUTPUT)
    parts = split_parts(g, at="h")
    assert output_names(parts[-1]) == ["main", "aux"]
    check_pipeline(g, parts)


@pytest.mark.parametrize("at", [["m", "s0"], ["s0", "s0"], [["c", "p"], "s0"], ["m", ["c", "p"]]],
                         ids=["reversed", "repeated", "multi-then-earlier", "later-then-multi"])
def test_split_cuts_out_of_order(at):
    g = ir(LONG_SKIP)
    with untouched(g):
        with pytest.raises(CutError, match="does not come after|is computed before cut"):
            split_parts(g, at=at)


@pytest.mark.parametrize("ref, kind", [("x", "model input"), ("out", "model output")])
def test_split_at_model_input_or_output(ref, kind):
    g = ir(LONG_SKIP)
    with pytest.raises(CutError, match=kind):
        split_parts(g, at=ref)


def test_split_at_output_of_multi_output_model():
    g = ir(AUX_OUTPUT)
    with pytest.raises(CutError, match="model output"):
        split_parts(g, at="aux")


@pytest.mark.parametrize("at", [[], [[]], ["s0", []]])
def test_split_without_cuts(at):
    with pytest.raises(CutError):
        split_parts(ir(LONG_SKIP), at=at)


def test_split_at_dead_value_is_a_cut_error():
    g = ir(MIXED)
    with untouched(g):
        with pytest.raises(CutError, match="dead"):
            split_parts(g, at="dead")
        with pytest.raises(CutError, match="dead"):
            split_parts(g, at=[["cat", "dead"]])


def test_split_drops_dead_code_and_unused_inputs_from_partitions():
    g = ir(MIXED)
    parts = split_parts(g, at="cat")
    assert input_names(parts[0]) == ["a", "b", "unused"]  # inputs stay: composition needs the same feed
    assert not any("dead" in p.layers or "deadu" in p.layers for p in parts)
    assert compose_symbolic(parts) == symbolic(g)


def test_split_shared_layer_across_partitions():
    g = ir("""
    kgraft.model @tied(%x: f32[?,4]) {
      %s@0 = Dense @s#0(%x) {units=4} : f32[?,4]
      %mid = Activation @mid#0(%s@0) {activation="relu"} : f32[?,4]
      %s@1 = Dense @s#1(%mid) {units=4} : f32[?,4]
      return %s@1
    }
    """)
    parts = split_parts(g, at="mid")
    assert "s" in parts[0].layers and "s" in parts[1].layers
    assert output_names(parts[1]) == ["s"]  # one call site left there
    assert compose_symbolic(parts) == symbolic(g)


def test_split_inside_nested_model():
    g = ir(NESTED)
    with untouched(g):
        parts = split_parts(g, at=["mid/add@0", "mid/dense@1"])
    assert len(parts) == 3
    assert all(l.body is None for p in parts for l in p.layers.values())
    assert output_names(parts[0]) == ["add"] and output_names(parts[1]) == ["mid_dense"]
    check_pipeline(passes.inline_nested(g), parts)
    assert compose_symbolic(parts) == symbolic(g)


def test_split_multi_input_model():
    g = ir(TWO_INPUTS)
    parts = split_parts(g, at=[["a", "b"], "c", "d"])
    assert [input_names(p) for p in parts] == [["x1", "x2"], ["a", "b"], ["c"], ["d"]]
    check_pipeline(g, parts)


def test_split_every_split_point_of_every_small_graph():
    for text in (CHAIN, DIAMOND, TWO_INPUTS, LONG_SKIP, AUX_OUTPUT, MIXED, NESTED):
        g = ir(text)
        points = passes.split_points(g)
        for p in points:
            check_pipeline(passes.inline_nested(g), split_parts(g, at=p))
        if points:
            all_at_once = split_parts(g, at=points)
            assert len(all_at_once) == len(points) + 1
            assert all(len(part.inputs) == 1 for part in all_at_once[1:])
            assert compose_symbolic(all_at_once, input_names(g)) == symbolic(g)
