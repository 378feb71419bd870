"""``extract``: sub-models between tensors."""

from __future__ import annotations

import pytest

from kgraft import CutError, passes
from kgraft.ir import INPUT_CLASS
from support.passes_graphs import (
    CHAIN, LONG_SKIP, NESTED, TWO_INPUTS, input_names, ir, output_names, symbolic, untouched)


def test_extract_default_inputs_keeps_only_needed_ones():
    g = ir(TWO_INPUTS)
    with untouched(g):
        sub = passes.extract(g, outputs=["a"])
    assert input_names(sub) == ["x1"]
    assert output_names(sub) == ["a"]
    assert set(sub.layers) == {"x1", "a"}
    assert symbolic(sub) == ["Dense<a>(['x1']; {})"]


def test_extract_intermediate_outputs_in_given_order():
    g = ir(LONG_SKIP)
    sub = passes.extract(g, outputs=["p", "b", "s0"])
    assert output_names(sub) == ["p", "b", "s0"]
    assert "c" not in sub.layers and "m" not in sub.layers
    full = passes.extract(g, outputs=["out"])
    assert symbolic(full) == symbolic(g)


def test_extract_explicit_intermediate_inputs():
    g = ir(LONG_SKIP)
    with untouched(g):
        sub = passes.extract(g, inputs=["c", "p"], outputs=["out"])
    assert input_names(sub) == ["c", "p"]
    assert [str(t) for t in (sub.value_type(r) for r in sub.input_refs())] == ["f32[?,4]", "f32[?,4]"]
    assert set(sub.layers) == {"c", "p", "m", "out"}
    assert sub.layers["c"].class_name == INPUT_CLASS
    # feeding the real c and p gives the real output
    c_expr, p_expr = symbolic(passes.extract(g, outputs=["c", "p"]))
    assert symbolic(sub, [c_expr, p_expr]) == symbolic(g)


def test_extract_pass_through_value_that_is_input_and_output():
    g = ir(LONG_SKIP)
    sub = passes.extract(g, inputs=["s0"], outputs=["s0", "m", "s0"])
    assert input_names(sub) == ["s0"]
    assert sub.outputs[0] == sub.input_refs()[0] == sub.outputs[2]
    s0, m, s0_again = symbolic(sub, ["S0"])
    assert s0 == s0_again == "S0" and "S0" in m


def test_extract_model_input_given_explicitly_stays_an_input():
    g = ir(TWO_INPUTS)
    sub = passes.extract(g, inputs=["a", "x2"], outputs=["out"])
    assert input_names(sub) == ["a", "x2"]
    assert sub.layers["x2"].config["batch_shape"] == [None, 4]
    a_expr = symbolic(passes.extract(g, outputs=["a"]))[0]
    assert symbolic(sub, [a_expr, "x2"]) == symbolic(g)


def test_extract_missing_input_names_bypassing_path():
    g = ir(TWO_INPUTS)
    with untouched(g):
        with pytest.raises(CutError) as info:
            passes.extract(g, inputs=["a"], outputs=["out"])
    msg = str(info.value)
    assert "x2 -> b -> c" in msg, msg
    assert "a" in msg and "out" in msg


def test_extract_missing_input_long_skip():
    g = ir(LONG_SKIP)
    with pytest.raises(CutError) as info:
        passes.extract(g, inputs=["b"], outputs=["out"])
    assert "s0 -> p -> m" in str(info.value)
    assert "Nearest split points: s0 (before), m (after)" in str(info.value)


def test_extract_output_upstream_of_inputs_is_a_cut_error():
    g = ir(CHAIN)
    with pytest.raises(CutError):
        passes.extract(g, inputs=["b"], outputs=["a"])


def test_extract_needs_outputs():
    with pytest.raises(CutError, match="no outputs"):
        passes.extract(ir(CHAIN), outputs=[])


def test_extract_inside_nested_model():
    g = ir(NESTED)
    with untouched(g):
        sub = passes.extract(g, inputs=["mid/dense@1"], outputs=["mid/add@1"])
    assert input_names(sub) == ["mid_dense_1"]
    assert set(sub.layers) == {"mid_dense_1", "mid_seq_dense", "act", "add"}
    assert all(layer.body is None for layer in sub.layers.values())
    flat = passes.inline_nested(g)
    before = symbolic(passes.extract(flat, outputs=["mid_dense@1"]))
    assert symbolic(sub, before) == symbolic(passes.extract(flat, outputs=["add@1"]))
