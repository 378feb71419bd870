"""Pure-IR tests: lowering hand-written config dicts, the text form, and the verifier.

Nothing here imports TensorFlow or Keras (checked in a subprocess below).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap

import pytest

from kgraft.frontend import lower_config
from kgraft.ir import (
    INPUT_CLASS,
    Graph,
    IRParseError,
    KgraftError,
    Layer,
    Node,
    TensorType,
    UnsupportedModelError,
    ValueRef,
    VerificationError,
    parse,
    verify,
)


# ---------------------------------------------------------------------------- config builders
def kt(layer, node=0, index=0, shape=None, dtype="float32"):
    """A Keras 3 serialized KerasTensor."""
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": dtype, "keras_history": [layer, node, index]}}


def call(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def input_entry(name, shape, dtype="float32"):
    return {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": name,
            "config": {"batch_shape": [None, *shape], "dtype": dtype, "sparse": False, "name": name},
            "inbound_nodes": []}


def layer_entry(cls, name, calls=(), **config):
    return {"module": "keras.layers", "class_name": cls, "registered_name": None, "name": name,
            "config": {"name": name, "trainable": True, "dtype": "float32", **config},
            "inbound_nodes": list(calls)}


def functional(name, layers, inputs, outputs):
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "name": name, "config": {"name": name, "trainable": True, "layers": layers,
                                     "input_layers": inputs, "output_layers": outputs}}


def small_config():
    """a, b -> shared Dense (2 calls) -> Add -> Dense."""
    return functional("m", [
        input_entry("a", [8]),
        input_entry("b", [8]),
        layer_entry("Dense", "shared", [call(kt("a", shape=[None, 8])), call(kt("b", shape=[None, 8]))],
                    units=4, activation="relu", use_bias=True, kernel_initializer={"class_name": "GlorotUniform"},
                    kernel_regularizer=None),
        layer_entry("Add", "add", [call([kt("shared", 0, 0, [None, 4]), kt("shared", 1, 0, [None, 4])])]),
        layer_entry("Dense", "out", [call(kt("add", shape=[None, 4]))], units=2, activation="linear",
                    use_bias=False),
    ], [["a", 0, 0], ["b", 0, 0]], [["out", 0, 0]])


SMALL_TEXT = """\
kgraft.model @m(%a: f32[?,8], %b: f32[?,8]) {
  %shared@0 = Dense @shared#0(%a) {activation="relu", units=4, use_bias=true} : f32[?,4]
  %shared@1 = Dense @shared#1(%b) {activation="relu", units=4, use_bias=true} : f32[?,4]
  %add = Add @add#0([%shared@0, %shared@1]) : f32[?,4]
  %out = Dense @out#0(%add) {activation="linear", units=2, use_bias=false} : ?[*]
  return %out
}
"""


def legacy_config():
    """tf.keras 2.x format: [[name, node, tensor, kwargs]] inbound nodes, batch_input_shape."""
    def entry(cls, name, inbound, **config):
        return {"class_name": cls, "name": name, "inbound_nodes": inbound,
                "config": {"name": name, "trainable": True, "dtype": "float32", **config}}

    return {"class_name": "Model", "config": {"name": "legacy", "layers": [
        {"class_name": "InputLayer", "name": "in", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False,
                    "name": "in"}},
        entry("Dense", "d1", [[["in", 0, 0, {}]]], units=3, activation="relu"),
        entry("Dense", "d2", [[["in", 0, 0, {"training": False}]]], units=3, activation="tanh"),
        entry("Add", "add", [[["d1", 0, 0, {}], ["d2", 0, 0, {}]]]),
    ], "input_layers": [["in", 0, 0]], "output_layers": [["add", 0, 0]]}}


# ---------------------------------------------------------------------------- no TensorFlow
def test_ir_and_passes_import_no_tensorflow():
    code = textwrap.dedent("""
        import sys
        import kgraft, kgraft.ir, kgraft.passes
        from kgraft.frontend import lower_config
        from kgraft.ir import parse, verify
        g = parse('''kgraft.model @m(%a: f32[?,4]) {
          %d = Dense @d#0(%a) {units=2} : f32[?,2]
          %dead = Dense @dead#0(%a) {units=2} : f32[?,2]
          return %d
        }''')
        g2 = kgraft.passes.prune_unreachable(verify(g))
        assert "dead" not in g2.layers
        bad = [m for m in ("tensorflow", "keras", "tf_keras", "jax", "torch") if m in sys.modules]
        assert not bad, bad
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ---------------------------------------------------------------------------- Keras 3 format
def test_small_config_prints_exactly():
    graph = lower_config(small_config())
    verify(graph)
    assert str(graph) == SMALL_TEXT
    assert graph.inputs == ["a#0", "b#0"]
    assert graph.outputs == [ValueRef("out#0", 0)]
    assert graph.kind == "Functional" and graph.name == "m"


def test_small_config_structure():
    graph = lower_config(small_config())
    assert [n.id for n in graph.call_sites("shared")] == ["shared#0", "shared#1"]
    assert set(graph.layers) == {"a", "b", "shared", "add", "out"}
    assert len(graph) == 6
    add = graph.node("add#0")
    assert add.args == [[ValueRef("shared#0"), ValueRef("shared#1")]]
    assert list(add.operands()) == [(("args", 0, 0), ValueRef("shared#0")), (("args", 0, 1), ValueRef("shared#1"))]
    edges = sorted((u, v, d["out"], d["pos"]) for u, v, d in graph.nx.edges(data=True) if v == "add#0")
    assert edges == [("shared#0", "add#0", 0, ("args", 0, 0)), ("shared#1", "add#0", 0, ("args", 0, 1))]
    assert graph.value_type(ValueRef("shared#1")) == TensorType((None, 4), "float32")
    # the spec keeps the full config (initializers included), minus name/inbound nodes
    spec = graph.layers["shared"].spec
    assert "inbound_nodes" not in spec and "name" not in spec
    assert spec["config"]["kernel_initializer"] == {"class_name": "GlorotUniform"}
    assert graph.layers["shared"].path == ("shared",)


def test_lowering_is_deterministic():
    first = str(lower_config(small_config()))
    assert str(lower_config(small_config())) == first
    # a JSON round trip (lists instead of tuples) and shuffled config keys change nothing
    shuffled = json.loads(json.dumps(small_config()))
    for entry in shuffled["config"]["layers"]:
        entry["config"] = dict(reversed(list(entry["config"].items())))
    assert str(lower_config(shuffled)) == first


def test_lowering_does_not_mutate_config():
    config = small_config()
    before = copy.deepcopy(config)
    lower_config(config)
    assert config == before


def test_inner_config_without_class_name():
    inner = small_config()["config"]
    assert str(lower_config(inner)) == SMALL_TEXT


def test_single_endpoint_form():
    # Keras 3 writes one input/output as a bare [name, node, tensor] triple
    cfg = functional("one", [input_entry("x", [3]), layer_entry("ReLU", "r", [call(kt("x", shape=[None, 3]))])],
                     ["x", 0, 0], ["r", 0, 0])
    graph = lower_config(cfg)
    assert graph.inputs == ["x#0"] and graph.outputs == [ValueRef("r#0")]


def test_kwargs_with_tensors_and_constants():
    cfg = functional("kw", [
        input_entry("x", [5, 8]),
        input_entry("m", [5], dtype="bool"),
        layer_entry("MyAttention", "att", [
            call(kt("x", shape=[None, 5, 8]), mask=kt("m", shape=[None, 5], dtype="bool"), scale=2.0,
                 training=False, extra=None, pair=[kt("x", shape=[None, 5, 8]), 3])]),
    ], [["x", 0, 0], ["m", 0, 0]], [["att", 0, 0]])
    graph = verify(lower_config(cfg))
    node = graph.node("att#0")
    assert node.args == [ValueRef("x#0")]
    assert node.kwargs == {"mask": ValueRef("m#0"), "scale": 2.0, "training": False, "extra": None,
                           "pair": [ValueRef("x#0"), 3]}
    assert [p for p, _ in node.operands()] == [("args", 0), ("kwargs", "mask"), ("kwargs", "pair", 0)]
    assert graph.value_type(ValueRef("m#0")) == TensorType((None, 5), "bool")
    text = str(graph)
    assert '%att = MyAttention @att#0(%x, mask=%m, scale=2.0, training=false, pair=[%x, 3]) : ?[*]' in text
    assert "%m: i1[?,5]" in text
    assert str(parse(text)) == text


def test_shared_layer_call_listed_before_its_input_producer():
    # 'shared' is listed before 'mid', but its second call consumes mid's output
    cfg = functional("late", [
        input_entry("a", [4]),
        layer_entry("Dense", "shared", [call(kt("a", shape=[None, 4])), call(kt("mid", shape=[None, 4]))], units=4),
        layer_entry("Dense", "mid", [call(kt("shared", 0, 0, [None, 4]))], units=4),
    ], [["a", 0, 0]], [["shared", 1, 0]])
    graph = verify(lower_config(cfg))
    assert graph.topological_ids() == ["a#0", "shared#0", "mid#0", "shared#1"]
    assert graph.node("shared#1").args == [ValueRef("mid#0")]
    text = str(graph)
    assert text.splitlines()[1:4] == [
        "  %shared@0 = Dense @shared#0(%a) {units=4} : f32[?,4]",
        "  %mid = Dense @mid#0(%shared@0) {units=4} : f32[?,4]",
        "  %shared@1 = Dense @shared#1(%mid) {units=4} : ?[*]",
    ]
    assert str(parse(text)) == text


def test_multi_output_and_shared_value_names():
    cfg = functional("names", [
        input_entry("a", [4]),
        input_entry("b", [4]),
        layer_entry("Split", "pair", [call(kt("a", shape=[None, 4])), call(kt("b", shape=[None, 4]))]),
        layer_entry("LSTMish", "lstm", [call(kt("pair", 0, 1, [None, 2]))]),
        layer_entry("Concatenate", "cat", [call([kt("pair", 1, 0, [None, 2]), kt("pair", 1, 1, [None, 2]),
                                                 kt("lstm", 0, 1, [None, 2]), kt("pair", 0, 0, [None, 2])])]),
    ], [["a", 0, 0], ["b", 0, 0]], [["cat", 0, 0], ["lstm", 0, 0]])
    graph = verify(lower_config(cfg))
    assert graph.value_name(ValueRef("pair#1", 1)) == "pair@1:1"
    assert graph.value_name(ValueRef("pair#0", 0)) == "pair@0:0"
    assert graph.value_name(ValueRef("lstm#0", 1)) == "lstm:1"
    assert graph.value_name(ValueRef("cat#0")) == "cat"
    assert len(graph.node("pair#0").outputs) == 2 and len(graph.node("lstm#0").outputs) == 2
    text = str(graph)
    assert "  %pair@0:0, %pair@0:1 = Split @pair#0(%a) : f32[?,2], f32[?,2]\n" in text
    assert "  %lstm:0, %lstm:1 = LSTMish @lstm#0(%pair@0:1) : ?[*], f32[?,2]\n" in text
    assert "Concatenate @cat#0([%pair@1:0, %pair@1:1, %lstm:1, %pair@0:0])" in text
    assert text.rstrip().splitlines()[-2] == "  return %cat, %lstm:0"
    reparsed = parse(text)
    assert str(reparsed) == text
    assert reparsed.node("cat#0").args == graph.node("cat#0").args


# ---------------------------------------------------------------------------- legacy format
def test_legacy_tf_keras_format():
    graph = verify(lower_config(legacy_config()))
    assert graph.name == "legacy" and graph.kind == "Functional"
    assert graph.inputs == ["in#0"]
    assert graph.node("in#0").outputs == (TensorType((None, 4), "float32"),)
    assert graph.node("d1#0").args == [ValueRef("in#0")]
    assert graph.node("d1#0").kwargs == {}
    assert graph.node("d2#0").kwargs == {"training": False}
    # a merge layer's inbound tensors become one list argument
    assert graph.node("add#0").args == [[ValueRef("d1#0"), ValueRef("d2#0")]]
    text = str(graph)
    assert "%add = Add @add#0([%d1, %d2])" in text
    assert '%d2 = Dense @d2#0(%in, training=false) {activation="tanh", units=3}' in text
    assert str(parse(text)) == text


def test_legacy_shared_layer_and_tensor_index():
    cfg = legacy_config()
    layers = cfg["config"]["layers"]
    # d1 called twice: on the input and on its own first output; add uses the second call
    layers[1]["inbound_nodes"] = [[["in", 0, 0, {}]], [["d1", 0, 0, {}]]]
    layers[3]["inbound_nodes"] = [[["d1", 1, 0, {}], ["d2", 0, 0, {}]]]
    graph = verify(lower_config(cfg))
    assert [n.id for n in graph.call_sites("d1")] == ["d1#0", "d1#1"]
    assert graph.node("d1#1").args == [ValueRef("d1#0")]
    assert graph.node("add#0").args == [[ValueRef("d1#1"), ValueRef("d2#0")]]
    assert "%add = Add @add#0([%d1@1, %d2])" in str(graph)


def test_legacy_and_keras3_give_the_same_graph_shape():
    k3 = functional("legacy", [
        input_entry("in", [4]),
        layer_entry("Dense", "d1", [call(kt("in", shape=[None, 4]))], units=3, activation="relu"),
        layer_entry("Dense", "d2", [call(kt("in", shape=[None, 4]), training=False)], units=3, activation="tanh"),
        layer_entry("Add", "add", [call([kt("d1", shape=[None, 3]), kt("d2", shape=[None, 3])])]),
    ], [["in", 0, 0]], [["add", 0, 0]])
    a, b = lower_config(legacy_config()), lower_config(k3)
    # legacy configs record no tensor types; apart from types the text is identical
    strip = lambda t: "\n".join(line.split(" : ")[0] for line in t.splitlines())  # noqa: E731
    assert strip(str(a)) == strip(str(b))


def test_legacy_sequential():
    cfg = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 6], "dtype": "float32", "name": "x"}},
        {"class_name": "Dense", "config": {"name": "h", "units": 5, "activation": "relu", "dtype": "float32"}},
        {"class_name": "Dense", "config": {"name": "o", "units": 1, "dtype": "float32"}},
    ]}}
    graph = verify(lower_config(cfg))
    assert graph.kind == "Sequential"
    assert [n.id for n in graph.nodes()] == ["x#0", "h#0", "o#0"]
    assert graph.node("o#0").args == [ValueRef("h#0")]
    assert str(graph).splitlines()[0] == "kgraft.sequential @seq(%x: f32[?,6]) {"


def test_sequential_without_input_layer_uses_build_input_shape():
    cfg = {"class_name": "Sequential", "config": {"name": "s", "build_input_shape": [None, 7], "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2}},
    ]}}
    graph = verify(lower_config(cfg))
    assert graph.inputs == ["s_input#0"]
    assert graph.node("s_input#0").outputs[0] == TensorType((None, 7), "float32")
    never_built = {"class_name": "Sequential", "config": {"name": "nb", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}
    with pytest.raises(UnsupportedModelError, match=r"Sequential model 'nb' was never built.*keras\.Input"):
        lower_config(never_built)


# ---------------------------------------------------------------------------- nested configs
def nested_config():
    inner_seq = {"module": "keras", "class_name": "Sequential", "registered_name": None, "name": "inner_seq",
                 "config": {"name": "inner_seq", "trainable": False, "layers": [
                     input_entry("seq_in", [4]),
                     {**layer_entry("Dense", "sd", units=3), "inbound_nodes": None},
                 ]}}
    inner_seq["config"]["layers"][1].pop("inbound_nodes")
    inner_seq["config"]["layers"][0].pop("inbound_nodes")
    inner_fn = functional("inner_fn", [
        input_entry("fin", [3]),
        layer_entry("Dense", "fd", [call(kt("fin", shape=[None, 3]))], units=2),
        layer_entry("ReLU", "unused", [call(kt("fd", shape=[None, 2]))]),  # records fd's type
    ], [["fin", 0, 0]], [["fd", 0, 0]])
    inner_fn["inbound_nodes"] = [call(kt("inner_seq", 0, 0, [None, 3]))]
    inner_seq["inbound_nodes"] = [call(kt("x", shape=[None, 4]))]
    return functional("outer", [input_entry("x", [4]), inner_seq, inner_fn], [["x", 0, 0]], [["inner_fn", 1, 0]])


NESTED_TEXT = """\
kgraft.model @outer(%x: f32[?,4]) {
  %inner_seq = Sequential @inner_seq#0(%x) {trainable=false} : f32[?,3] {
    kgraft.sequential @inner_seq(%seq_in: f32[?,4]) {
      %sd = Dense @sd#0(%seq_in) {units=3} : f32[*]
      return %sd
    }
  }
  %inner_fn = Functional @inner_fn#0(%inner_seq) : f32[?,2] {
    kgraft.model @inner_fn(%fin: f32[?,3]) {
      %fd = Dense @fd#0(%fin) {units=2} : f32[?,2]
      %unused = ReLU @unused#0(%fd) : ?[*]
      return %fd
    }
  }
  return %inner_fn
}
"""


def test_nested_configs():
    graph = verify(lower_config(nested_config()))
    seq, fn = graph.layers["inner_seq"], graph.layers["inner_fn"]
    assert seq.body is not None and seq.body.kind == "Sequential"
    assert fn.body is not None and fn.body.kind == "Functional"
    assert seq.body.layers["sd"].path == ("inner_seq", "sd")
    assert seq.body.layers["sd"].qualified_name == "inner_seq/sd"
    assert fn.body.layers["fd"].path == ("inner_fn", "fd")
    # model keys live in the body; the spec keeps the rest (trainable flag included)
    assert "layers" not in seq.spec["config"] and seq.config["trainable"] is False
    # Keras 3 numbers a nested Functional's calls from 1 in output_layers only
    assert graph.outputs == [ValueRef("inner_fn#0")]
    assert graph.node("inner_fn#0").args == [ValueRef("inner_seq#0")]
    # the type of an output nobody consumes comes from the body
    assert graph.value_type(ValueRef("inner_fn#0")) == TensorType((None, 2), "float32")
    text = str(graph)
    assert text == NESTED_TEXT
    reparsed = parse(text)
    assert str(reparsed) == text
    assert reparsed.layers["inner_fn"].body.layers["fd"].path == ("inner_fn", "fd")


def test_subclassed_config_is_unsupported():
    with pytest.raises(UnsupportedModelError, match=r"MyModel 'mine' has no 'layers' list.*subclassed"):
        lower_config({"class_name": "MyModel", "config": {"name": "mine", "units": 3}})
    with pytest.raises(KgraftError, match="expected a model config dict, got list"):
        lower_config([1, 2])


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["config"]["layers"][2]["inbound_nodes"][0]["args"][0]["config"].pop("keras_history"),
     "tensor without keras_history"),
    (lambda c: c["config"]["layers"][3].__setitem__("inbound_nodes", [call(kt("nowhere", shape=[None, 4]))]),
     "call site 'add#0' of model 'm' uses 'nowhere#0', which the config does not define"),
    (lambda c: c["config"].__setitem__("output_layers", [["ghost", 0, 0]]), "output 'ghost#0' of 'm' is not defined"),
    (lambda c: c["config"].__setitem__("input_layers", [["shared", 0, 0]]), "input 'shared#0' of 'm' is not an InputLayer"),
    (lambda c: c["config"]["layers"][2].pop("name") and c["config"]["layers"][2]["config"].pop("name"),
     "a Dense layer entry has no name"),
    (lambda c: c["config"]["layers"][2].__setitem__("inbound_nodes", 5), "inbound_nodes of 'shared' is not a list"),
    (lambda c: c["config"]["layers"][2]["inbound_nodes"].__setitem__(0, 42), "unreadable inbound node 42"),
    (lambda c: c["config"].__setitem__("output_layers", "out"), "output_layers of model 'm' is 'out'"),
])
def test_corrupt_configs(mutate, message):
    cfg = small_config()
    mutate(cfg)
    with pytest.raises(KgraftError, match="corrupt model config") as info:
        lower_config(cfg)
    assert message in str(info.value)


@pytest.mark.parametrize("config", [
    {"class_name": "Sequential", "config": {"name": "s", "layers": [42]}},
    {"class_name": "Sequential", "config": {"name": "s", "layers": [{"config": {"name": "x"}}]}},
    {"class_name": "Functional", "config": {"name": "f", "layers": ["dense"], "input_layers": [],
                                            "output_layers": []}},
])
def test_layer_entries_that_are_not_layers(config):
    with pytest.raises(KgraftError, match="corrupt model config: layer entry .* has no class_name"):
        lower_config(config)


def test_config_cycle_is_reported():
    cfg = small_config()
    layers = cfg["config"]["layers"]
    # add consumes out, out consumes add
    layers[3]["inbound_nodes"] = [call([kt("shared", 0, 0, [None, 4]), kt("out", 0, 0, [None, 2])])]
    with pytest.raises(KgraftError, match="corrupt model config: the layers of 'm' form a cycle"):
        lower_config(cfg)


# ---------------------------------------------------------------------------- verifier
def _chain() -> Graph:
    return parse("""
        kgraft.model @chain(%a: f32[?,4], %b: f32[?,4]) {
          %d1 = Dense @d1#0(%a) {units=4} : f32[?,4]
          %d2 = Dense @d2#0(%d1) {units=4} : f32[?,4]
          %e = Dense @e#0(%b) {units=4} : f32[?,4]
          return %d2
        }
    """)


def test_verifier_accepts_valid_graph():
    g = _chain()
    assert verify(g) is g


def test_verifier_catches_cycle():
    g = _chain()
    d1 = g.node("d1#0")
    g.replace_node(d1.with_operands(lambda r: ValueRef("d2#0")))  # d1 <- d2 <- d1
    with pytest.raises(VerificationError, match=r"invalid IR \(1 problem\(s\)\):\n  chain: cycle ") as info:
        verify(g)
    assert "d1#0" in str(info.value) and "d2#0" in str(info.value)


def test_verifier_catches_undefined_operand():
    g = _chain()
    g.replace_node(g.node("d2#0").with_operands(lambda r: ValueRef("d1#0", 3)))
    with pytest.raises(VerificationError,
                       match=r"chain: call site 'd2#0' uses undefined value ValueRef\(node='d1#0', index=3\) at \('args', 0\)"):
        verify(g)


def test_verifier_catches_output_depending_on_no_input():
    g = _chain()
    g.set_inputs(["a#0"])  # 'b' is no longer a model input
    g.set_outputs([ValueRef("d2#0"), ValueRef("e#0")])
    with pytest.raises(VerificationError, match="chain: model output 'e' depends on no model input") as info:
        verify(g)
    assert "'d2'" not in str(info.value)


def test_verifier_catches_missing_and_undefined_outputs():
    g = _chain()
    g.set_outputs([])
    with pytest.raises(VerificationError, match="chain: the model has no outputs"):
        verify(g)
    g.set_outputs([ValueRef("d2#0", 1)])
    with pytest.raises(VerificationError, match=r"model output ValueRef\(node='d2#0', index=1\) is not defined"):
        verify(g)


def test_verifier_catches_input_type_clash():
    g = Graph("clash")
    g.add_layer(Layer("a", INPUT_CLASS, {"class_name": INPUT_CLASS, "config": {"batch_shape": [None, 8]}}))
    g.add_node(Node("a#0", "a", 0, [], {}, (TensorType((None, 4), "float32"),)))
    g.add_layer(Layer("d", "Dense", {"class_name": "Dense", "config": {"units": 2}}))
    g.add_node(Node("d#0", "d", 0, [ValueRef("a#0")], {}, (TensorType((None, 2), "float32"),)))
    g.set_inputs(["a#0"])
    g.set_outputs([ValueRef("d#0")])
    with pytest.raises(VerificationError, match=r"clash: input 'a' has type f32\[\?,4\] but its config says \[None, 8\]"):
        verify(g)
    g.set_layer(Layer("a", INPUT_CLASS, {"class_name": INPUT_CLASS, "config": {"batch_shape": [None, 4]}}))
    verify(g)


def test_verifier_catches_non_input_model_input():
    g = _chain()
    g.set_inputs(["a#0", "d1#0"])
    with pytest.raises(VerificationError, match="model input 'd1#0' is not an InputLayer call site"):
        verify(g)


def test_verifier_catches_call_without_operands():
    g = _chain()
    g.replace_node(g.node("e#0").with_operands(lambda r: 1.0))  # operand replaced by a constant
    with pytest.raises(VerificationError, match="call site 'e#0' has no tensor operands and is not an input"):
        verify(g)


NESTED = """\
kgraft.model @m(%a: f32[?,{outer}]) {{
  %seq = Sequential @seq#0(%a) : f32[?,4] {{
    kgraft.sequential @seq(%input_layer: f32[?,4]) {{
      %d1 = Dense @d1#0(%input_layer) {{units=4}} : f32[?,4]
      return %d1
    }}
  }}
  return %seq
}}
"""


def test_verifier_catches_nested_operand_type_clash():
    assert verify(parse(NESTED.format(outer=4)))
    assert verify(parse(NESTED.format(outer="?")))  # unknown dims are compatible
    with pytest.raises(VerificationError,
                       match=r"m: 'seq#0' passes 'a' of type f32\[\?,8\] to input 'input_layer' of type f32\[\?,4\]"):
        verify(parse(NESTED.format(outer=8)))


def test_verifier_checks_bodies_and_lists_every_problem():
    text = NESTED.format(outer=8).replace("return %d1", "return %input_layer").replace(
        "%d1 = Dense @d1#0(%input_layer) {units=4} : f32[?,4]", "%d1 = Dense @d1#0(%input_layer) {units=4} : f32[?,4]")
    g = parse(text)
    body = g.layers["seq"].body
    body.set_outputs([])
    with pytest.raises(VerificationError, match=r"invalid IR \(2 problem\(s\)\)") as info:
        verify(g)
    assert "m/seq: the model has no outputs" in str(info.value)
    assert "passes 'a' of type f32[?,8]" in str(info.value)


# ---------------------------------------------------------------------------- text parsing
def test_parse_skips_comment_lines():
    text = "// RUN: kgraft opt %s\n# a comment\n" + SMALL_TEXT + "// CHECK: return\n"
    assert str(parse(text)) == SMALL_TEXT


@pytest.mark.parametrize("text, message", [
    (SMALL_TEXT.replace("(%a) {activation", "(%zz) {activation", 1),
     "value %zz is used before it is defined"),
    (SMALL_TEXT.replace("kgraft.model @m", "kgraft.modle @m"), "line 1: expected 'kgraft.model @name"),
    (SMALL_TEXT.replace("  return %out\n}\n", ""), "unexpected end of input"),
    (SMALL_TEXT.replace(": f32[?,4]\n  %add", ": f32[?,4\n  %add"), "not a tensor type: 'f32[?,4'"),
    (SMALL_TEXT + "trailing\n", "line 8: unexpected text after the model: 'trailing'"),
    (SMALL_TEXT.replace("@shared#1", "@shared#0"), "line 3: call site 'shared#0' is defined twice"),
    (SMALL_TEXT.replace("@add#0", "@add"), "bad call-site id 'add'"),
])
def test_parse_errors(text, message):
    with pytest.raises(IRParseError) as info:
        parse(text)
    assert message in str(info.value)


def test_parse_error_has_caret_under_the_bad_name():
    with pytest.raises(IRParseError) as info:
        parse(SMALL_TEXT.replace("(%a) {activation", "(%zz) {activation", 1))
    lines = str(info.value).splitlines()
    assert re.match(r"line 2, column (\d+): value %zz is used before it is defined$", lines[0])
    assert lines[1].strip().startswith("%shared@0 = Dense @shared#0(%zz)")
    assert lines[2].strip() == "^" and lines[2].index("^") == lines[1].index("%zz")


# ---------------------------------------------------------------------------- call numbering of nested models
def _inner_functional(name="inner"):
    return functional(name, [input_entry("i", [4]),
                             layer_entry("Dense", "u", [call(kt("i", shape=[None, 4]))], units=4),
                             layer_entry("ReLU", "r", [call(kt("u", shape=[None, 4]))])],
                      [["i", 0, 0]], [["u", 0, 0]])


def test_keras3_nested_functional_is_numbered_from_one_in_output_layers():
    # keras.Model(a, [inner(inner(a)), inner(a)]).get_config(): inbound nodes count a nested
    # Functional's calls from 0, output_layers from 1 (Keras still counts a "pre-existing node")
    inner = _inner_functional()
    inner["inbound_nodes"] = [call(kt("a", shape=[None, 4])), call(kt("inner", 0, 0, [None, 4]))]
    cfg = functional("outer", [input_entry("a", [4]), inner], [["a", 0, 0]], [["inner", 2, 0], ["inner", 1, 0]])
    graph = verify(lower_config(cfg))
    assert graph.outputs == [ValueRef("inner#1"), ValueRef("inner#0")]
    assert graph.node("inner#1").args == [ValueRef("inner#0")]
    assert str(graph).rstrip().splitlines()[-2] == "  return %inner@1, %inner@0"


def test_keras3_single_nested_functional_output():
    # keras.Model(a, backbone(a)): output_layers [["backbone", 1, 0]]
    inner = _inner_functional("backbone")
    inner["inbound_nodes"] = [call(kt("a", shape=[None, 4]))]
    graph = verify(lower_config(functional("outer", [input_entry("a", [4]), inner], [["a", 0, 0]],
                                           [["backbone", 1, 0]])))
    assert graph.outputs == [ValueRef("backbone#0")]
    assert graph.value_type(ValueRef("backbone#0")) == TensorType((None, 4), "float32")


def test_keras3_nested_sequential_is_numbered_from_zero():
    seq = {"module": "keras", "class_name": "Sequential", "registered_name": None, "name": "seq",
           "config": {"name": "seq", "layers": [
               {k: v for k, v in input_entry("si", [4]).items() if k != "inbound_nodes"},
               {k: v for k, v in layer_entry("Dense", "sd", units=2).items() if k != "inbound_nodes"}]},
           "inbound_nodes": [call(kt("a", shape=[None, 4]))]}
    graph = verify(lower_config(functional("outer", [input_entry("a", [4]), seq], [["a", 0, 0]], [["seq", 0, 0]])))
    assert graph.outputs == [ValueRef("seq#0")]


def test_legacy_nested_models_are_numbered_from_one():
    # tf.keras 2 counts the "pre-existing node" of nested Functional models and of Sequential
    # models that start with an InputLayer, in inbound nodes and in output_layers alike
    def dense(name, units, inbound=None):
        entry = {"class_name": "Dense", "config": {"name": name, "units": units, "dtype": "float32"}}
        if inbound is not None:
            entry.update(name=name, inbound_nodes=inbound)
        return entry

    head = {"class_name": "Sequential", "name": "head", "inbound_nodes": [[["x", 0, 0, {}]]],
            "config": {"name": "head", "layers": [
                {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32",
                                                        "name": "head_in"}},
                dense("h1", 4)]}}
    sub = {"class_name": "Functional", "name": "sub",
           "inbound_nodes": [[["head", 1, 0, {}]], [["sub", 1, 0, {}]]],
           "config": {"name": "sub", "layers": [
               {"class_name": "InputLayer", "name": "si", "inbound_nodes": [],
                "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "si"}},
               dense("s1", 4, [[["si", 0, 0, {}]]])],
               "input_layers": [["si", 0, 0]], "output_layers": [["s1", 0, 0]]}}
    cfg = {"class_name": "Functional", "keras_version": "2.15.0", "config": {
        "name": "legacy_nested",
        "layers": [{"class_name": "InputLayer", "name": "x", "inbound_nodes": [],
                    "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "x"}},
                   head, sub, dense("final", 1, [[["sub", 2, 0, {}]]])],
        "input_layers": [["x", 0, 0]],
        "output_layers": [["final", 0, 0], ["sub", 1, 0]]}}
    graph = verify(lower_config(cfg))
    assert graph.node("sub#0").args == [ValueRef("head#0")]
    assert graph.node("sub#1").args == [ValueRef("sub#0")]
    assert graph.node("final#0").args == [ValueRef("sub#1")]
    assert graph.outputs == [ValueRef("final#0"), ValueRef("sub#0")]


def test_dict_outputs_follow_keras_flattening_order():
    # Keras flattens dict outputs in sorted key order (model.outputs); so must the IR
    cfg = functional("d", [
        input_entry("a", [3]),
        layer_entry("Dense", "zz", [call(kt("a", shape=[None, 3]))], units=2),
        layer_entry("Dense", "aa", [call(kt("a", shape=[None, 3]))], units=5),
    ], {"a": ["a", 0, 0]}, {"sum": ["zz", 0, 0], "dense": ["aa", 0, 0]})
    graph = verify(lower_config(cfg))
    assert graph.inputs == ["a#0"]
    assert graph.outputs == [ValueRef("aa#0"), ValueRef("zz#0")]
