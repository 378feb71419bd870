"""IR-level tests of the passes (inline-nested, prune-unreachable, extract, split, add-head), the
analyses (split_points, downstream), tensor refs and pass pipelines.

Most graphs are written as textual IR. Besides exact structure checks, :func:`symbolic` gives
an oracle that needs no Keras: it evaluates a graph on symbolic inputs (nested bodies
evaluated in place), so "the passes kept the computation" becomes "the expressions are equal".
Every pass is also checked to leave its input graph alone (``str(g)`` and ``g.version``).
"""

from __future__ import annotations

import contextlib
import textwrap

import pytest

from kgraft.ir import partitions_of
from kgraft import CutError, KgraftError, PipelineError, RefError, passes
from kgraft.ir import INPUT_CLASS, Graph, ValueRef, parse, verify
from kgraft.ir.refs import resolve
from kgraft.ir.tree import map_refs, thaw


# ---------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------- the oracles
def test_symbolic_oracle_sees_changes():
    """The oracle itself must tell different computations apart."""
    g = ir(DIAMOND)
    swapped = ir(DIAMOND.replace("[%l, %r]", "[%r, %l]"))
    assert symbolic(g) != symbolic(swapped)
    other_layer = ir(DIAMOND.replace("%l = Dense @l#0(%s)", "%l = Dense @l#0(%x)"))
    assert symbolic(g) != symbolic(other_layer)
    assert symbolic(g) == symbolic(ir(DIAMOND))


def test_brute_split_points_oracle_on_known_graphs(brute_split_points):
    assert brute_split_points(ir(CHAIN)) == ["a", "b"]
    assert brute_split_points(ir(DIAMOND)) == ["s", "add"]
    assert brute_split_points(ir(INPUT_SKIP)) == []


# ---------------------------------------------------------------------------- split points
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


# ---------------------------------------------------------------------------- refs
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


# ---------------------------------------------------------------------------- inline-nested
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


# ---------------------------------------------------------------------------- prune-unreachable
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


# ---------------------------------------------------------------------------- extract
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


# ---------------------------------------------------------------------------- split
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


# ---------------------------------------------------------------------------- add-head
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


# ---------------------------------------------------------------------------- downstream
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


# ---------------------------------------------------------------------------- pipelines
def test_pipeline_text_builds_the_same_passes():
    g = ir(LONG_SKIP)
    with untouched(g):
        from_text = partitions_of(passes.run(g, "split{at=[s0,[c,p]]}"))
        from_python = split_parts(g, at=["s0", ["c", "p"]])
    assert [str(p) for p in from_text] == [str(p) for p in from_python]
    parsed = passes.parse_pipeline("inline-nested, prune-unreachable ,split{at=[s0,[c,p]]}")
    assert [str(p) for p in parsed] == ["inline-nested", "prune-unreachable", "split{at=[s0,[c,p]]}"]
    assert [str(p) for p in passes.parse_pipeline(",".join(str(p) for p in parsed))] == [str(p) for p in parsed]


def test_pipeline_extract_and_split_as_one_graph():
    g = ir(NESTED)
    with untouched(g):
        a = passes.run(g, "inline-nested,prune-unreachable,extract{outputs=[add@1],inputs=[mid_dense@0]}")
        b = passes.extract(passes.inline_nested(g), outputs=["add@1"], inputs=["mid_dense@0"])
        assert str(a) == str(b)
        split = passes.run(g, "inline-nested,split{at=[add@0]},prune-unreachable")
    parts = partitions_of(split)  # passes after split run on the one graph that calls the partitions
    assert isinstance(split, Graph) and len(parts) == 2
    assert [str(p) for p in parts] == [str(p) for p in split_parts(g, at="mid/add@0")]
    assert symbolic(passes.inline_nested(split)) == symbolic(passes.inline_nested(g))  # inlining undoes split


def test_pipeline_quoted_refs_and_errors():
    g = ir(NESTED)
    parts = partitions_of(passes.run(g, 'split{at="mid/add@0"}'))
    assert output_names(parts[0]) == ["add"]
    with pytest.raises(PipelineError, match="inline-nested"):
        passes.run(g, "inline-nestd")
    with pytest.raises(PipelineError, match="no option"):
        passes.run(g, "split{where=a}")
    with pytest.raises(PipelineError):
        passes.run(g, "")
    with pytest.raises(PipelineError):
        passes.run(g, "split{at=[a,b}")
    with pytest.raises(PipelineError, match="no option"):
        split_parts(g, where="a")


def test_pass_errors_say_which_passes_ran():
    g = ir(LONG_SKIP)
    with pytest.raises(CutError) as info:
        passes.run(g, "inline-nested,prune-unreachable,split{at=p}")
    assert "inline-nested, prune-unreachable" in str(info.value)
    assert info.value.passes_run == ["inline-nested", "prune-unreachable"]


# ---------------------------------------------------------------------------- inputs stay untouched
EVERY_PASS = [
    ("inline_nested", lambda g: passes.inline_nested(g)),
    ("prune_unreachable", lambda g: passes.prune_unreachable(g)),
    ("extract", lambda g: passes.extract(g, outputs=["mid/add@1"], inputs=["mid/dense@0"])),
    ("extract_default", lambda g: passes.extract(g, outputs=["pre"])),
    ("split", lambda g: split_parts(g, at=["pre", "mid/add@0"])),
    ("add_head", lambda g: passes.add_head(g, at="pre", head=ir(HEAD))),
    ("split_points", lambda g: passes.split_points(g)),
    ("downstream", lambda g: passes.downstream(g, "mid/dense@1")),
    ("pipeline", lambda g: passes.run(g, "inline-nested,prune-unreachable,split{at=[pre]}")),
]


@pytest.mark.parametrize("fn", [f for _, f in EVERY_PASS], ids=[n for n, _ in EVERY_PASS])
def test_every_pass_leaves_its_input_alone(fn):
    g = ir(NESTED + "\n")
    dead = ir(NESTED.replace("  %dense = Dense @dense#0(%mid@1)", "  %gone = Dense @gone#0(%pre) {units=4} : f32[?,4]\n"
                             "  %dense = Dense @dense#0(%mid@1)"))
    bodies = {n: str(l.body) for n, l in g.layers.items() if l.body is not None}
    with untouched(g, dead):
        first = fn(g)
        fn(dead)
    assert {n: str(l.body) for n, l in g.layers.items() if l.body is not None} == bodies
    # results are independent of the input: changing one leaves the input alone
    results = first if isinstance(first, list) else [first]
    for r in results:
        if isinstance(r, Graph):
            with untouched(g):
                r.set_outputs(list(r.outputs)[:1])
                r.remove_unused_layers()


def test_manager_rejects_a_pass_that_mutates_its_input():
    from dataclasses import dataclass
    from typing import ClassVar

    from kgraft import PassError

    @dataclass(frozen=True)
    class Vandal(passes.Pass):
        name: ClassVar[str] = "vandal-test-only"

        def apply(self, graph):
            graph.set_outputs(graph.outputs)
            return graph.copy()

    with pytest.raises(PassError, match="changed its input"):
        passes.run(ir(CHAIN), [Vandal()])
