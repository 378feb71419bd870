"""``prune-unreachable``: what no output needs is dropped."""

from __future__ import annotations

from kgraft import passes
from kgraft.ir import ValueRef, verify
from kgraft.ir.refs import resolve
from support.passes_graphs import CHAIN, MIXED, input_names, ir, symbolic, untouched


def test_prune_unreachable_drops_dead_nodes_layers_and_inputs():
    g = ir(MIXED)
    with untouched(g):
        pruned = passes.prune_unreachable(g)
    assert "dead" not in pruned.layers and "deadu" not in pruned.layers
    assert input_names(pruned) == ["a", "b"]
    assert set(pruned.layers) == {"a", "b", "shared", "cat", "rnn", "left", "right", "add", "out"}
    assert symbolic(pruned) == symbolic(g)


def test_prune_unreachable_partially_dead_shared_layer():
    g = ir("""
    kgraft.model @m(%x: f32[?,4]) {
      %s@0 = Dense @s#0(%x) {units=4} : f32[?,4]
      %s@1 = Dense @s#1(%s@0) {units=4} : f32[?,4]
      %out = Activation @out#0(%s@0) {activation="relu"} : f32[?,4]
      return %out
    }
    """)
    pruned = passes.prune_unreachable(g)
    assert [n.id for n in pruned.call_sites("s")] == ["s#0"]
    assert "s" in pruned.layers
    assert resolve(pruned, "s") == ValueRef("s#0")  # no longer ambiguous
    assert symbolic(pruned) == symbolic(g)


def test_prune_unreachable_inside_nested_body_keeps_body_inputs():
    g = ir("""
    kgraft.model @m(%x: f32[?,4], %y: f32[?,4]) {
      %n = Functional @n#0(%x, %y) : f32[?,4] {
        kgraft.model @n(%p: f32[?,4], %q: f32[?,4]) {
          %d = Dense @d#0(%p) {units=4} : f32[?,4]
          %dead = Dense @dead#0(%q) {units=4} : f32[?,4]
          return %d
        }
      }
      return %n
    }
    """)
    with untouched(g):
        pruned = passes.prune_unreachable(g)
    body = pruned.layers["n"].body
    assert "dead" not in body.layers
    assert input_names(body) == ["p", "q"]  # the caller still passes two tensors
    assert input_names(pruned) == ["x", "y"]
    assert "dead" in g.layers["n"].body.layers  # the input's body is untouched
    verify(pruned)
    assert symbolic(pruned) == symbolic(g)


def test_prune_unreachable_on_live_graph_is_an_equal_copy():
    g = ir(CHAIN)
    out = passes.prune_unreachable(g)
    assert out is not g and str(out) == str(g)
