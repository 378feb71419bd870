"""``inline-nested``: nested models replaced by their bodies, names and refs kept."""

from __future__ import annotations

from kgraft import passes
from kgraft.ir import ValueRef
from kgraft.ir.refs import resolve
from support.passes_graphs import (
    DIAMOND, NESTED, NESTED_FLAT, input_names, ir, output_names, symbolic, untouched)


def test_inline_nested_three_levels_shared_twice():
    g = ir(NESTED)
    with untouched(g):
        flat = passes.inline_nested(g)
    assert str(flat) == NESTED_FLAT
    assert all(layer.body is None for layer in flat.layers.values())
    assert flat.kind == "Functional"
    # a nested model used twice: its layers get two call sites and stay one layer each
    for name in ("mid_dense", "mid_seq_dense", "act", "add"):
        assert [n.id for n in flat.call_sites(name)] == [f"{name}#0", f"{name}#1"]
    assert flat.layers["mid_dense"].path == ("mid", "dense")
    assert flat.layers["mid_seq_dense"].path == ("mid", "seq", "dense")
    assert flat.layers["mid_dense"].config["name"] == "mid_dense"
    assert symbolic(flat) == symbolic(g)


def test_inline_nested_is_deterministic_and_idempotent():
    a = passes.inline_nested(ir(NESTED))
    b = passes.inline_nested(ir(NESTED))
    assert str(a) == str(b)
    again = passes.inline_nested(a)
    assert again is not a
    assert str(again) == str(a)


def test_inline_nested_without_nested_models_returns_an_equal_copy():
    g = ir(DIAMOND)
    with untouched(g):
        out = passes.inline_nested(g)
    assert out is not g and str(out) == str(g)
    out.set_outputs([ValueRef("s#0")])  # changing the result leaves the input alone
    assert output_names(g) == ["out"]


def test_inline_nested_collision_with_taken_path_name():
    """The path-joined name is itself taken: a suffix keeps names unique, deterministically."""
    text = """
    kgraft.model @m(%x: f32[?,4]) {
      %dense = Dense @dense#0(%x) {units=4} : f32[?,4]
      %enc_dense = Dense @enc_dense#0(%dense) {units=4} : f32[?,4]
      %enc = Functional @enc#0(%enc_dense) : f32[?,4] {
        kgraft.model @enc(%i: f32[?,4]) {
          %dense = Dense @dense#0(%i) {units=4} : f32[?,4]
          %only = Dense @only#0(%dense) {units=4} : f32[?,4]
          return %only
        }
      }
      return %enc
    }
    """
    g = ir(text)
    flat = passes.inline_nested(g)
    assert set(flat.layers) == {"x", "dense", "enc_dense", "enc_dense_1", "only"}
    assert flat.layers["enc_dense_1"].path == ("enc", "dense")
    assert resolve(flat, "enc/dense") == ValueRef("enc_dense_1#0")
    assert resolve(flat, "enc_dense") == ValueRef("enc_dense#0")
    assert symbolic(flat) == symbolic(g)
    assert str(passes.inline_nested(ir(text))) == str(flat)


def test_inline_nested_two_nested_models_with_same_inner_names():
    text = """
    kgraft.model @ae(%x: f32[?,4]) {
      %enc = Functional @enc#0(%x) : f32[?,2] {
        kgraft.model @enc(%i: f32[?,4]) {
          %d = Dense @d#0(%i) {units=2} : f32[?,2]
          return %d
        }
      }
      %dec = Sequential @dec#0(%enc) : f32[?,4] {
        kgraft.sequential @dec(%j: f32[?,2]) {
          %d = Dense @d#0(%j) {units=4} : f32[?,4]
          return %d
        }
      }
      return %dec
    }
    """
    g = ir(text)
    flat = passes.inline_nested(g)
    assert set(flat.layers) == {"x", "enc_d", "dec_d"}
    assert flat.layers["enc_d"].config["units"] == 2 and flat.layers["dec_d"].config["units"] == 4
    assert resolve(flat, "enc/d") == ValueRef("enc_d#0") and resolve(flat, "dec/d") == ValueRef("dec_d#0")
    assert symbolic(flat) == symbolic(g)


def test_inline_nested_keeps_every_layers_own_trainable_flag():
    """Keras counts a layer's weights as trainable by the layer's own flag, also inside a frozen
    nested model (``inner.trainable = False; inner.get_layer('b').trainable = True`` leaves b's
    weights in ``trainable_weights``): inlining keeps each flag and invents none."""
    text = NESTED.replace("%mid@0 = Functional @mid#0(%pre) :", "%mid@0 = Functional @mid#0(%pre) {trainable=false} :")
    text = text.replace("%mid@1 = Functional @mid#1(%mid@0) :", "%mid@1 = Functional @mid#1(%mid@0) {trainable=false} :")
    text = text.replace("%dense = Dense @dense#0(%mi) {units=4}", "%dense = Dense @dense#0(%mi) {trainable=false, units=4}")
    g = ir(text)
    flat = passes.inline_nested(g)
    assert flat.layers["mid_dense"].config.get("trainable") is False
    for name in ("mid_seq_dense", "act", "add", "pre", "dense"):
        assert flat.layers[name].config.get("trainable", True) is True, name
    assert symbolic(flat) == symbolic(g)


def test_inline_nested_shared_layer_inside_body_called_by_twice_used_model():
    text = """
    kgraft.model @m(%x: f32[?,4]) {
      %blk@0 = Functional @blk#0(%x) : f32[?,4] {
        kgraft.model @blk(%i: f32[?,4]) {
          %s@0 = Dense @s#0(%i) {units=4} : f32[?,4]
          %s@1 = Dense @s#1(%s@0) {units=4} : f32[?,4]
          return %s@1
        }
      }
      %blk@1 = Functional @blk#1(%blk@0) : f32[?,4]
      return %blk@1
    }
    """
    g = ir(text)
    flat = passes.inline_nested(g)
    assert [n.id for n in flat.call_sites("s")] == ["s#0", "s#1", "s#2", "s#3"]
    assert output_names(flat) == ["s@3"]
    assert symbolic(flat) == symbolic(g)


def test_inline_nested_multi_input_multi_output_body():
    text = """
    kgraft.model @m(%x: f32[?,4], %y: f32[?,4]) {
      %two:0, %two:1 = Functional @two#0(%x, %y) : f32[?,4], f32[?,4] {
        kgraft.model @two(%p: f32[?,4], %q: f32[?,4]) {
          %sub = Subtract @sub#0([%p, %q]) : f32[?,4]
          %mul = Multiply @mul#0([%q, %sub]) : f32[?,4]
          return %mul, %sub
        }
      }
      %out = Add @out#0([%two:1, %two:0]) : f32[?,4]
      return %out, %two:0
    }
    """
    g = ir(text)
    flat = passes.inline_nested(g)
    assert input_names(flat) == ["x", "y"]
    assert output_names(flat) == ["out", "mul"]
    assert symbolic(flat) == symbolic(g)
    assert symbolic(flat)[1] != symbolic(ir(text.replace("(%x, %y)", "(%y, %x)")))[1]
