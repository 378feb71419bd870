"""IR graphs and helpers shared by the per-pass tests: ``ir(text)``, ``split_parts``, ``untouched``
(a pass left its input alone), the symbolic oracle and the graphs as textual IR."""

from __future__ import annotations

import contextlib
import textwrap

from kgraft import passes
from kgraft.ir import INPUT_CLASS, Graph, ValueRef, parse, partitions_of, verify
from kgraft.ir.tree import map_refs, thaw


def ir(text: str) -> Graph:
    return verify(parse(textwrap.dedent(text)))

def split_parts(graph, **options):
    """The partitions of ``kgraft.passes.split`` (one graph calling part0 .. partN), as a list."""
    return partitions_of(passes.split(graph, **options))



def _state(g: Graph):
    return (str(g), g.version, dict(g.layers), list(g.inputs), list(g.outputs),
            sorted((u, v, d["out"], d["pos"]) for u, v, d in g.nx.edges(data=True)))


@contextlib.contextmanager
def untouched(*graphs: Graph):
    """Fail if any of ``graphs`` (text, version, layers, inputs, outputs, edges) changes."""
    before = [_state(g) for g in graphs]
    yield
    for g, b in zip(graphs, before):
        after = _state(g)
        assert after[0] == b[0], f"graph {g.name!r} text changed"
        assert after == b, f"graph {g.name!r} was mutated"


def symbolic(g: Graph, inputs: list | None = None) -> list[str]:
    """Evaluate ``g`` on symbolic inputs (default: the input layers' names).

    A layer call becomes ``Class<path>(args; kwargs)`` where ``path`` is the layer's qualified
    path in the source model, so inlining and renaming keep expressions equal, while any change
    to what a call computes (operand, order, layer, constant argument) changes them.
    """
    names = [g.node(i).layer for i in g.inputs] if inputs is None else list(inputs)
    assert len(names) == len(g.inputs), f"{g.name}: {len(g.inputs)} inputs, fed {len(names)}"
    env: dict[ValueRef, str] = {ValueRef(i, 0): v for i, v in zip(g.inputs, names)}
    for node in g.nodes():
        if node.id in g.inputs:
            continue
        layer = g.layers[node.layer]
        assert layer.class_name != INPUT_CLASS, f"{node.id} is an InputLayer call that is not a model input"
        if layer.body is not None:
            operands = [env[ref] for path, ref in node.operands() if path[0] == "args"]
            outs = symbolic(layer.body, operands)
        else:
            args = thaw(map_refs(node.args, env.__getitem__))
            kwargs = thaw(map_refs(node.kwargs, env.__getitem__))
            call = f"{layer.class_name}<{'/'.join(layer.path)}>({args!r}; {kwargs!r})"
            outs = [call] if len(node.outputs) == 1 else [f"{call}[{i}]" for i in range(len(node.outputs))]
        for i, expr in enumerate(outs):
            env[ValueRef(node.id, i)] = expr
    return [env[r] for r in g.outputs]


def compose_symbolic(parts: list[Graph], inputs: list | None = None) -> list[str]:
    """Feed each partition's outputs, in order, to the next."""
    values = symbolic(parts[0], inputs)
    for part in parts[1:]:
        values = symbolic(part, values)
    return values


def check_pipeline(g: Graph, parts: list[Graph]) -> None:
    """Partitions verify, chain type-correctly, split the call sites, and compose back to ``g``."""
    for part in parts:
        verify(part)
    for prev, nxt in zip(parts, parts[1:]):
        assert len(prev.outputs) == len(nxt.inputs), (prev.name, nxt.name)
        for out, inp in zip(prev.outputs, nxt.input_refs()):
            assert prev.value_type(out) == nxt.value_type(inp)
    assert [g.value_type(r) for r in g.input_refs()] == [parts[0].value_type(r) for r in parts[0].input_refs()]
    assert [g.value_type(r) for r in g.outputs] == [parts[-1].value_type(r) for r in parts[-1].outputs]
    owned = [n for p in parts for n in p.nx if n not in p.inputs]
    assert len(owned) == len(set(owned)), "a call site is computed by two partitions"
    assert compose_symbolic(parts) == symbolic(g)


def input_names(g: Graph) -> list[str]:
    return [g.node(i).layer for i in g.inputs]


def output_names(g: Graph) -> list[str]:
    return [g.value_name(r) for r in g.outputs]



# ---------------------------------------------------------------------------- graphs
CHAIN = """
kgraft.model @chain(%x: f32[?,4]) {
  %a = Dense @a#0(%x) {units=4} : f32[?,4]
  %b = Dense @b#0(%a) {units=4} : f32[?,4]
  %c = Dense @c#0(%b) {units=2} : f32[?,2]
  return %c
}
"""

DIAMOND = """
kgraft.model @diamond(%x: f32[?,4]) {
  %s = Dense @s#0(%x) {units=4} : f32[?,4]
  %l = Dense @l#0(%s) {units=4} : f32[?,4]
  %r = Activation @r#0(%s) {activation="relu"} : f32[?,4]
  %add = Add @add#0([%l, %r]) : f32[?,4]
  %out = Dense @out#0(%add) {units=2} : f32[?,2]
  return %out
}
"""

TWO_INPUTS = """
kgraft.model @two(%x1: f32[?,4], %x2: f32[?,4]) {
  %a = Dense @a#0(%x1) {units=4} : f32[?,4]
  %b = Dense @b#0(%x2) {units=4} : f32[?,4]
  %c = Add @c#0([%a, %b]) : f32[?,4]
  %d = Dense @d#0(%c) {units=4} : f32[?,4]
  %out = Dense @out#0(%d) {units=2} : f32[?,2]
  return %out
}
"""

# s0 is a split point; p is not: s0 -> a -> b -> c -> m goes around it.
LONG_SKIP = """
kgraft.model @m(%x: f32[?,4]) {
  %s0 = Dense @s0#0(%x) {units=4} : f32[?,4]
  %a = Dense @a#0(%s0) {units=4} : f32[?,4]
  %b = Dense @b#0(%a) {units=4} : f32[?,4]
  %c = Dense @c#0(%b) {units=4} : f32[?,4]
  %p = Dense @p#0(%s0) {units=4} : f32[?,4]
  %m = Add @m#0([%c, %p]) : f32[?,4]
  %out = Dense @out#0(%m) {units=2} : f32[?,2]
  return %out
}
"""

# The input itself skips everything: no split point at all.
INPUT_SKIP = """
kgraft.model @res(%x: f32[?,4]) {
  %a = Dense @a#0(%x) {units=4} : f32[?,4]
  %b = Dense @b#0(%a) {units=4} : f32[?,4]
  %add = Add @add#0([%b, %x]) : f32[?,4]
  return %add
}
"""

# Two outputs; the auxiliary one is computed early from h.
AUX_OUTPUT = """
kgraft.model @aux(%x: f32[?,4]) {
  %h = Dense @h#0(%x) {units=4} : f32[?,4]
  %aux = Dense @aux#0(%h) {units=3} : f32[?,3]
  %k = Dense @k#0(%h) {units=4} : f32[?,4]
  %m = Dense @m#0(%k) {units=4} : f32[?,4]
  %main = Dense @main#0(%m) {units=2} : f32[?,2]
  return %main, %aux
}
"""

# A shared layer, a multi-output layer, a dead branch and an unused input.
MIXED = """
kgraft.model @mixed(%a: f32[?,4], %b: f32[?,4], %unused: f32[?,4]) {
  %shared@0 = Dense @shared#0(%a) {units=4} : f32[?,4]
  %shared@1 = Dense @shared#1(%b) {units=4} : f32[?,4]
  %cat = Concatenate @cat#0([%shared@0, %shared@1]) {axis=-1} : f32[?,8]
  %rnn:0, %rnn:1 = Splitter @rnn#0(%cat) : f32[?,4], f32[?,4]
  %left = Dense @left#0(%rnn:0) {units=4} : f32[?,4]
  %right = Dense @right#0(%rnn:1) {units=4} : f32[?,4]
  %dead = Dense @dead#0(%left) {units=4} : f32[?,4]
  %deadu = Dense @deadu#0(%unused) {units=4} : f32[?,4]
  %add = Add @add#0([%left, %right]) : f32[?,4]
  %out = Dense @out#0(%add) {units=2} : f32[?,2]
  return %out
}
"""

# outer -> mid (Functional, called twice) -> seq (Sequential): three levels. "dense" exists at
# every level, so inner ones must be renamed.
NESTED = """
kgraft.model @outer(%x: f32[?,4]) {
  %pre = Dense @pre#0(%x) {units=4} : f32[?,4]
  %mid@0 = Functional @mid#0(%pre) : f32[?,4] {
    kgraft.model @mid(%mi: f32[?,4]) {
      %dense = Dense @dense#0(%mi) {units=4} : f32[?,4]
      %seq = Sequential @seq#0(%dense) : f32[?,4] {
        kgraft.sequential @seq(%si: f32[?,4]) {
          %dense = Dense @dense#0(%si) {units=4} : f32[?,4]
          %act = Activation @act#0(%dense) {activation="relu"} : f32[?,4]
          return %act
        }
      }
      %add = Add @add#0([%seq, %dense]) : f32[?,4]
      return %add
    }
  }
  %mid@1 = Functional @mid#1(%mid@0) : f32[?,4]
  %dense = Dense @dense#0(%mid@1) {units=2} : f32[?,2]
  return %dense
}
"""

NESTED_FLAT = """\
kgraft.model @outer(%x: f32[?,4]) {
  %pre = Dense @pre#0(%x) {units=4} : f32[?,4]
  %mid_dense@0 = Dense @mid_dense#0(%pre) {units=4} : f32[?,4]
  %mid_seq_dense@0 = Dense @mid_seq_dense#0(%mid_dense@0) {units=4} : f32[?,4]
  %act@0 = Activation @act#0(%mid_seq_dense@0) {activation="relu"} : f32[?,4]
  %add@0 = Add @add#0([%act@0, %mid_dense@0]) : f32[?,4]
  %mid_dense@1 = Dense @mid_dense#1(%add@0) {units=4} : f32[?,4]
  %mid_seq_dense@1 = Dense @mid_seq_dense#1(%mid_dense@1) {units=4} : f32[?,4]
  %act@1 = Activation @act#1(%mid_seq_dense@1) {activation="relu"} : f32[?,4]
  %add@1 = Add @add#1([%act@1, %mid_dense@1]) : f32[?,4]
  %dense = Dense @dense#0(%add@1) {units=2} : f32[?,2]
  return %dense
}
"""

HEAD = """
kgraft.model @head(%h: f32[?,4]) {
  %dense = Dense @dense#0(%h) {units=3} : f32[?,3]
  %probs = Activation @probs#0(%dense) {activation="softmax"} : f32[?,3]
  return %probs
}
"""
