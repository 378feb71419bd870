"""``kgraft.backends.draw``: layout, scene and SVG of the graph IR (no TensorFlow involved)."""

from __future__ import annotations

import time

import networkx as nx

from kgraft.backends.draw import render
from kgraft.backends.draw.layout import _pack, layered
from kgraft.backends.draw.scene import CUT, SPLIT, build_scene
from kgraft.ir import parse

RES = """
kgraft.model @res(%x: f32[?,8]) {
  %d1 = Dense @d1#0(%x) {units=8} : f32[?,8]
  %a = Dense @a#0(%d1) {units=8} : f32[?,8]
  %a_bn = BatchNormalization @a_bn#0(%a) : f32[?,8]
  %b = Dense @b#0(%a_bn) {units=8} : f32[?,8]
  %add = Add @add#0([%d1, %b]) : f32[?,8]
  %head = Sequential @head#0(%add) : f32[?,3] {
    kgraft.sequential @head(%head_in: f32[?,8]) {
      %out = Dense @out#0(%head_in) {units=3} : f32[?,3]
      return %out
    }
  }
  return %head
}
"""


def deep_residual(blocks: int) -> str:
    """A ResNet-like IR: ``blocks`` residual blocks of 6 layers each."""
    lines, prev = ["kgraft.model @deep(%x: f32[?,16]) {"], "x"
    for i in range(blocks):
        chain = [f"c{i}_{k}" for k in range(5)]
        src = prev
        for name in chain:
            lines.append(f"  %{name} = Dense @{name}#0(%{src}) {{units=16}} : f32[?,16]")
            src = name
        lines.append(f"  %add{i} = Add @add{i}#0([%{prev}, %{src}]) : f32[?,16]")
        prev = f"add{i}"
    lines += [f"  return %{prev}", "}"]
    return "\n".join(lines)


def test_layers_order_and_spacing():
    g = nx.DiGraph([("in", "a"), ("in", "b"), ("a", "c"), ("b", "c"), ("in", "c")])
    sizes = {n: (40.0, 20.0) for n in g}
    place = layered(g, sizes, hgap=10)
    assert place.layer == {"in": 0, "a": 1, "b": 1, "c": 2}
    assert abs(place.x["a"] - place.x["b"]) >= 50  # no overlap within a layer
    assert place.y["in"] < place.y["a"] == place.y["b"] < place.y["c"]
    long = place.routes[("in", "c")]  # spans two layers: routed through a dummy point
    assert len(long) == 4 and long[0] == (place.x["in"], 20.0) and long[-1] == (place.x["c"], place.y["c"])


def test_pack_is_ordered_and_as_close_as_possible():
    assert _pack([0, 0, 0], [10, 10, 10], 5) == [-15, 0, 15]
    assert _pack([0, 100], [10, 10], 5) == [0, 100]


def test_scene_collapses_chains_and_marks_split_points():
    scene = build_scene(parse(RES))
    texts = [" / ".join(b.lines) for b in scene.boxes if b.refs]
    assert any(t.startswith("a … b / 3 layers: Dense BN") for t in texts)  # a chain is one box
    assert any(b.cluster and b.lines[0].startswith("head: Sequential head") for b in scene.boxes)
    labels = [t.text for t in scene.labels if t.color == SPLIT]
    assert [l.split()[0] for l in labels if "/sample" in l] == ["d1", "add"]
    assert len(build_scene(parse(RES), collapse=False).boxes) > len(scene.boxes)
    assert not any(b.cluster for b in build_scene(parse(RES), flat=True).boxes)


def test_scene_marks_a_multi_tensor_cut():
    scene = build_scene(parse(RES), cuts=[["a", "d1"]])
    red = [e for e in scene.edges if e.color == CUT]
    assert len(red) == 2  # a -> a_bn and the skip d1 -> add
    strokes = {b.stroke for b in scene.boxes if b.refs and not b.cluster and b.lines[0] != "x"}
    assert len(strokes) >= 2  # the partitions have their own colours


def test_svg_and_html_are_self_contained():
    svg = render(parse(RES), "svg", cuts=[["add"]])
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "cut 0: add" in svg and "<title>" in svg
    html = render(parse(RES), "html")
    assert "<svg" in html and "<script>" in html and "src=" not in html and "href=" not in html


def test_large_model_draws_fast_and_compact():
    text = deep_residual(100)  # 601 call sites
    started = time.perf_counter()
    scene = build_scene(parse(text))
    assert time.perf_counter() - started < 20
    boxes = [b for b in scene.boxes if b.refs]
    assert len(boxes) <= 202  # input + a chain box and an add per block
    assert sum(1 for t in scene.labels if "/sample" in t.text) == 99  # every add but the output
