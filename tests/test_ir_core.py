"""The IR's data structures: TensorType, argument trees, Graph construction/queries/copies."""

from __future__ import annotations

import pytest

from kgraft.ir import INPUT_CLASS, Graph, Layer, Node, TensorType, ValueRef, VerificationError, parse, verify
import copy
import pickle

from kgraft.ir.tree import FrozenDict, freeze, iter_refs, map_refs, thaw
from kgraft.ir.types import UNKNOWN


# ---------------------------------------------------------------------------- TensorType
@pytest.mark.parametrize("ttype, text", [
    (TensorType((None, 32, 32, 3), "float32"), "f32[?,32,32,3]"),
    (TensorType((), "int64"), "i64[]"),
    (TensorType(None, "bfloat16"), "bf16[*]"),
    (TensorType((None, 4), None), "?[?,4]"),
    (TensorType(None, None), "?[*]"),
    (TensorType((2,), "bool"), "i1[2]"),
    (TensorType((1,), "float8_e4m3fn"), "float8_e4m3fn[1]"),  # unknown dtypes print in full
])
def test_tensor_type_text_round_trip(ttype, text):
    assert str(ttype) == text
    assert TensorType.parse(text) == ttype


@pytest.mark.parametrize("bad", ["f32", "f32[?,4", "f32[a]", "[4]x"])
def test_tensor_type_parse_rejects(bad):
    with pytest.raises(ValueError):
        TensorType.parse(bad)


def test_tensor_type_compatibility():
    a = TensorType((None, 4), "float32")
    assert a.compatible(TensorType((8, 4), "float32"))
    assert a.compatible(TensorType(None, "float32"))
    assert a.compatible(UNKNOWN) and UNKNOWN.compatible(a)
    assert a.compatible(TensorType((None, None), None))
    assert not a.compatible(TensorType((None, 5), "float32"))
    assert not a.compatible(TensorType((None, 4, 1), "float32"))
    assert not a.compatible(TensorType((None, 4), "float16"))
    assert a.known and not TensorType((None, 4)).known and not TensorType(None, "float32").known


# ---------------------------------------------------------------------------- argument trees
def test_iter_and_map_refs():
    a, b = ValueRef("a#0"), ValueRef("b#0", 1)
    tree = [a, {"k": [b, 3], "c": "const"}, (a,)]
    assert list(iter_refs(tree)) == [((0,), a), ((1, "k", 0), b), ((2, 0), a)]
    mapped = map_refs(tree, lambda r: ValueRef(r.node, r.index + 10))
    assert mapped == (ValueRef("a#0", 10), {"k": (ValueRef("b#0", 11), 3), "c": "const"}, (ValueRef("a#0", 10),))
    assert isinstance(mapped[1], FrozenDict) and isinstance(mapped[1]["k"], tuple)  # frozen, like a node's
    assert tree[0] == a and tree[1]["k"] == [b, 3]  # the input is not changed


def test_freeze_and_thaw():
    a = ValueRef("a#0")
    tree = [a, {"k": [a, {"n": [1]}]}, []]
    frozen = freeze(tree)
    assert frozen == (a, {"k": (a, {"n": (1,)})}, ())
    assert hash(frozen) == hash(freeze(thaw(frozen)))  # hashable, and thaw undoes freeze
    assert thaw(frozen) == tree and type(thaw(frozen)[1]["k"][1]) is dict
    assert freeze(frozen) == frozen
    inner = frozen[1]
    for change in (lambda: inner.__setitem__("x", 1), lambda: inner.update(x=1), lambda: inner.pop("k"),
                   lambda: inner.setdefault("x", 1), inner.clear, inner.popitem, lambda: inner.__delitem__("k")):
        with pytest.raises(TypeError, match="FrozenDict is read-only"):
            change()
    with pytest.raises(TypeError):
        inner |= {"x": 1}
    assert inner == {"k": (a, {"n": (1,)})}
    assert pickle.loads(pickle.dumps(frozen)) == frozen and copy.deepcopy(frozen) == frozen
    assert type(copy.deepcopy(inner)) is FrozenDict


# ---------------------------------------------------------------------------- Graph
def _input(g: Graph, name: str, shape=(None, 4)) -> str:
    g.add_layer(Layer(name, INPUT_CLASS, {"class_name": INPUT_CLASS, "config": {"batch_shape": list(shape)}}))
    return g.add_node(Node(f"{name}#0", name, 0, [], {}, (TensorType(shape, "float32"),))).id


def _small() -> Graph:
    g = Graph("g")
    _input(g, "a")
    _input(g, "b")
    g.add_layer(Layer("shared", "Dense", {"class_name": "Dense", "config": {"units": 4}}))
    g.add_node(Node("shared#0", "shared", 0, [ValueRef("a#0")], {}, (TensorType((None, 4), "float32"),)))
    g.add_node(Node("shared#1", "shared", 1, [ValueRef("b#0")], {}, (TensorType((None, 4), "float32"),)))
    g.add_layer(Layer("add", "Add", {"class_name": "Add", "config": {}}))
    g.add_node(Node("add#0", "add", 0, [[ValueRef("shared#0"), ValueRef("shared#1")]], {},
                    (TensorType((None, 4), "float32"),)))
    g.set_inputs(["a#0", "b#0"])
    g.set_outputs([ValueRef("add#0")])
    return verify(g)


def test_graph_queries():
    g = _small()
    assert len(g) == 5 and "add#0" in g and "nope#0" not in g
    assert [n.id for n in g.nodes()] == ["a#0", "b#0", "shared#0", "shared#1", "add#0"]
    assert g.users("a#0") == {"shared#0"}
    assert g.users("add#0") == set()
    assert [n.id for n in g.call_sites("shared")] == ["shared#0", "shared#1"]
    assert g.layer_of("shared#1").name == "shared"
    assert g.value_name(ValueRef("shared#1")) == "shared@1"
    assert g.value_name(ValueRef("add#0")) == "add"
    assert g.value_type(ValueRef("add#0", 5)) == UNKNOWN
    assert g.input_refs() == [ValueRef("a#0"), ValueRef("b#0")]
    assert repr(g) == "<kgraft.ir.Graph @g: 5 call sites, 4 layers>"
    with pytest.raises(VerificationError, match="no call site 'nope#0' in model 'g'"):
        g.node("nope#0")


def test_graph_text_round_trip():
    g = _small()
    text = str(g)
    assert text == (
        "kgraft.model @g(%a: f32[?,4], %b: f32[?,4]) {\n"
        "  %shared@0 = Dense @shared#0(%a) {units=4} : f32[?,4]\n"
        "  %shared@1 = Dense @shared#1(%b) {units=4} : f32[?,4]\n"
        "  %add = Add @add#0([%shared@0, %shared@1]) : f32[?,4]\n"
        "  return %add\n"
        "}\n"
    )
    assert str(parse(text)) == text


def test_construction_errors():
    g = _small()
    with pytest.raises(VerificationError, match="layer name 'add' is already used in model 'g'"):
        g.add_layer(Layer("add", "Add"))
    with pytest.raises(VerificationError, match="call site 'add#0' is defined twice"):
        g.add_node(Node("add#0", "add", 0, [ValueRef("a#0")]))
    with pytest.raises(VerificationError, match="calls unknown layer 'ghost'"):
        g.add_node(Node("ghost#0", "ghost", 0, [ValueRef("a#0")]))
    g.add_layer(Layer("late", "ReLU"))
    with pytest.raises(VerificationError, match="uses 'future#0', which is not defined before it"):
        g.add_node(Node("late#0", "late", 0, [ValueRef("future#0")]))
    with pytest.raises(VerificationError, match=r"cannot remove 'shared#0': still used by \['add#0'\]"):
        g.remove_nodes(["shared#0"])
    with pytest.raises(VerificationError, match="no layer 'nope' to replace"):
        g.set_layer(Layer("nope", "Dense"))
    with pytest.raises(VerificationError, match="no call site 'nope#0' to replace"):
        g.replace_node(Node("nope#0", "add", 0))


def test_every_change_bumps_version():
    g = _small()
    v = g.version
    g.set_outputs(list(g.outputs))
    assert g.version > v
    v = g.version
    g.set_layer(g.layers["add"])
    assert g.version > v
    v = g.version
    g.replace_node(g.node("add#0"))
    assert g.version > v
    v = g.version
    _ = g.nodes(), str(g), g.users("a#0"), g.copy()  # queries and copies do not
    assert g.version == v


def test_replace_all_uses():
    g = _small()
    g.replace_all_uses(ValueRef("shared#1"), ValueRef("shared#0"))
    assert g.node("add#0").args == ((ValueRef("shared#0"), ValueRef("shared#0")),)
    assert g.users("shared#1") == set()
    edges = sorted((u, d["pos"]) for u, v, d in g.nx.in_edges("add#0", data=True))
    assert edges == [("shared#0", ("args", 0, 0)), ("shared#0", ("args", 0, 1))]
    g.replace_all_uses(ValueRef("add#0"), ValueRef("shared#0"))
    assert g.outputs == (ValueRef("shared#0"),)


def test_remove_nodes_and_unused_layers():
    g = _small()
    g.set_outputs([ValueRef("shared#0")])
    g.remove_nodes(["add#0", "shared#1", "b#0"])
    g.remove_unused_layers()
    assert set(g.layers) == {"a", "shared"}
    assert g.inputs == ("a#0",)
    assert g.value_name(ValueRef("shared#0")) == "shared"  # no longer shared
    verify(g)


def test_copy_is_independent():
    g = _small()
    text, version = str(g), g.version
    c = g.copy()
    assert str(c) == text
    c.set_outputs([ValueRef("shared#0")])
    c.remove_nodes(["add#0"])
    c.remove_unused_layers()
    c.add_layer(Layer("extra", "ReLU"))
    c.add_node(Node("extra#0", "extra", 0, [ValueRef("shared#1")]))
    assert str(g) == text and g.version == version
    assert "add#0" in g and "extra" not in g.layers and "add" in g.layers
    assert [n.id for n in g.call_sites("shared")] == ["shared#0", "shared#1"]
    # new call sites of the copy sort after the existing ones
    assert c.topological_ids()[-1] == "extra#0"
    assert c.meta is g.meta  # opaque and shared


def test_frozen_nodes_and_layers():
    g = _small()
    with pytest.raises(AttributeError):
        g.node("add#0").layer = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        g.layers["add"].name = "x"  # type: ignore[misc]


def test_node_arguments_are_frozen():
    node = Node("n#0", "n", 0, [[ValueRef("a#0")], 3], {"mask": ValueRef("m#0"), "opts": {"k": [1]}})
    assert node.args == ((ValueRef("a#0"),), 3) and node.kwargs["opts"] == {"k": (1,)}
    with pytest.raises(AttributeError):
        node.args.append(ValueRef("b#0"))  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        node.args[0][0] = ValueRef("b#0")  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        node.kwargs["mask"] = ValueRef("b#0")
    with pytest.raises(TypeError, match="read-only"):
        node.kwargs["opts"]["k"] = 2
    assert [ref for _, ref in node.operands()] == [ValueRef("a#0"), ValueRef("m#0")]  # so never stale
    assert hash(node) == hash(Node("n#0", "n", 0, node.args, node.kwargs))


def test_graph_containers_are_read_only():
    g = _small()
    version = g.version
    with pytest.raises(TypeError):
        g.layers["add"] = Layer("add", "Add")  # type: ignore[index]
    with pytest.raises(TypeError):
        del g.layers["add"]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        g.inputs.append("x#0")  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        g.outputs.clear()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        g.masks[ValueRef("a#0")] = TensorType((None, 4), "bool")  # type: ignore[index]
    with pytest.raises(TypeError):
        g.aliases["x"] = {}  # type: ignore[index]
    for attribute in ("layers", "inputs", "outputs", "masks", "aliases", "input_keys", "output_keys", "version"):
        with pytest.raises(AttributeError):
            setattr(g, attribute, None)
    with pytest.raises(AttributeError):
        g.anything_else = 1  # type: ignore[attr-defined]
    assert g.version == version and g.layers["add"].class_name == "Add"
    with pytest.raises(Exception):
        g.nx.add_node("x#0")  # the networkx view is frozen too


def test_recorded_masks_and_aliases_bump_version():
    g = _small()
    v = g.version
    g.set_mask(ValueRef("a#0"), TensorType((None,), "bool"))
    g.set_alias("inner", 0, [ValueRef("add#0")])
    g.set_alias("inner", 1, [ValueRef("shared#0")])
    assert g.version == v + 3
    assert g.masks == {ValueRef("a#0"): TensorType((None,), "bool")}
    assert g.aliases == {"inner": {0: (ValueRef("add#0"),), 1: (ValueRef("shared#0"),)}}
    c = g.copy()
    c.set_masks({})
    c.set_alias("inner", 0, [])
    assert g.masks and g.aliases["inner"][0] == (ValueRef("add#0"),)  # the copy's changes are its own
    g.name = "renamed"
    assert g.version == v + 4 and c.name == "g"


def test_with_operands_builds_a_new_node():
    node = Node("n#0", "n", 0, [ValueRef("a#0"), 3], {"mask": ValueRef("m#0"), "k": None})
    new = node.with_operands(lambda r: ValueRef("z#0", r.index))
    assert new.args == (ValueRef("z#0"), 3) and new.kwargs == {"mask": ValueRef("z#0"), "k": None}
    assert node.args == (ValueRef("a#0"), 3)
    assert [p for p, _ in node.operands()] == [("args", 0), ("kwargs", "mask")]


def test_layer_qualified_name():
    assert Layer("c", "Dense", path=("vgg16", "block1", "c")).qualified_name == "vgg16/block1/c"
    assert Layer("c", "Dense").qualified_name == "c"
    assert Layer("c", "Dense", {"config": {"units": 3}}).config == {"units": 3}
    # handle and spec do not take part in equality
    assert Layer("c", "Dense", {"config": {"units": 3}}, handle=object()) == Layer("c", "Dense")
