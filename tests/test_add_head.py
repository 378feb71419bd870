"""``add-head``: new layers attached to any tensor."""

from __future__ import annotations

import textwrap

import pytest

from kgraft import CutError, KgraftError, passes
from kgraft.ir import ValueRef
from support.passes_graphs import CHAIN, DIAMOND, HEAD, NESTED, ir, output_names, symbolic, untouched


def test_add_head_on_top_level_with_name_clash():
    g = ir(DIAMOND.replace("%out = Dense @out#0", "%dense = Dense @dense#0").replace("return %out", "return %dense"))
    head = ir(HEAD)
    with untouched(g, head):
        out = passes.add_head(g, at="add", head=head)
    assert output_names(out) == ["dense", "probs"]
    assert "dense_1" in out.layers and out.layers["dense_1"].config["name"] == "dense_1"
    assert out.layers["dense_1"].config["units"] == 3
    assert out.layers["dense"].config["units"] == 2
    assert [next(n.operands())[1] for n in out.call_sites("dense_1")] == [ValueRef("add#0")]
    body, head_out = symbolic(out)
    assert [body] == symbolic(g)
    add_expr = symbolic(passes.extract(g, outputs=["add"]))[0]
    assert head_out == symbolic(head, [add_expr])[0]


def test_add_head_clash_twice_gets_next_suffix():
    g = ir(DIAMOND.replace("%l = Dense @l#0", "%dense_1 = Dense @dense_1#0").replace("[%l, %r]", "[%dense_1, %r]")
           .replace("%out = Dense @out#0", "%dense = Dense @dense#0").replace("return %out", "return %dense"))
    out = passes.add_head(g, at="s", head=ir(HEAD))
    assert "dense_2" in out.layers and out.layers["dense_2"].config["units"] == 3


def test_add_head_inside_nested_model():
    g = ir(NESTED)
    with untouched(g):
        out = passes.add_head(g, at="mid/seq/act@1", head=ir(HEAD), model_name="with_head")
    assert out.name == "with_head"
    assert all(l.body is None for l in out.layers.values())
    assert output_names(out) == ["dense", "probs"]
    assert "dense_1" in out.layers  # the head's dense clashes with the outer dense
    assert out.node(out.call_sites("dense_1")[0].id).args == (ValueRef("act#1"),)
    assert symbolic(out)[0] == symbolic(g)[0]


def test_add_head_keeps_head_shared_layers_shared():
    head = ir("""
    kgraft.model @head(%h: f32[?,4]) {
      %t@0 = Dense @t#0(%h) {units=4} : f32[?,4]
      %t@1 = Dense @t#1(%t@0) {units=4} : f32[?,4]
      return %t@1
    }
    """)
    out = passes.add_head(ir(CHAIN), at="b", head=head)
    assert [n.id for n in out.call_sites("t")] == ["t#0", "t#1"]
    assert output_names(out) == ["c", "t@1"]


def test_add_head_type_mismatch_and_bad_heads():
    g = ir(CHAIN)
    with untouched(g):
        with pytest.raises(CutError, match="f32\\[\\?,2\\]"):
            passes.add_head(g, at="c", head=ir(HEAD))
        two = ir("""
        kgraft.model @h2(%p: f32[?,4], %q: f32[?,4]) {
          %s = Add @s#0([%p, %q]) : f32[?,4]
          return %s
        }
        """)
        with pytest.raises(CutError, match="exactly one"):
            passes.add_head(g, at="a", head=two)
        with pytest.raises(KgraftError):
            passes.add_head(g, at="a")
        with pytest.raises(KgraftError, match="cannot read"):
            passes.add_head(g, at="a", head="/nonexistent/head.kgir")


def test_add_head_from_ir_file_and_pipeline(tmp_path):
    path = tmp_path / "head.kgir"
    path.write_text(textwrap.dedent(HEAD))
    g = ir(CHAIN)
    a = passes.add_head(g, at="a", head=str(path))
    b = passes.run(g, f"add-head{{at=a,head={path}}}")
    c = passes.add_head(g, at="a", head=ir(HEAD))
    assert str(a) == str(b) == str(c)
    assert output_names(a) == ["c", "probs"]
