"""Split real architectures (keras.applications, ``weights=None``, small inputs) at their split
points and check that the partitions compose back to the source within 1e-5.

Each model is built and lowered once per module; the passes run on the IR and the partitions
are built with ``kgraft.backends.keras.build`` (building is the expensive part).

Default run, per architecture:
* ``split_points`` equals a brute-force oracle (remove the node, is the sink still reachable?);
* ONE split at *every* split point at once (``len(points) + 1`` single-tensor partitions, built
  in one go, so every cut is exercised for the price of one model build);
* single splits at two deterministic points (a third and two thirds of the way);
* ResNet50 also gets a multi-tensor cut through a residual block.
Under ``-m slow``: every split point one at a time (two partitions each), and a multi-tensor cut
at a crossing set in the middle of every architecture.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import functools
from dataclasses import dataclass

import keras
import numpy as np
import pytest

import kgraft
from kgraft.ir import partitions_of
from kgraft import passes
from kgraft.backends.keras import build
from kgraft.ir import Graph, ValueRef

ATOL = 1e-5

ARCHITECTURES = {
    "ResNet50": ("ResNet50", (32, 32, 3)),
    "DenseNet121": ("DenseNet121", (32, 32, 3)),
    "MobileNetV3Small": ("MobileNetV3Small", (32, 32, 3)),
    "InceptionV3": ("InceptionV3", (75, 75, 3)),
    "EfficientNetB0": ("EfficientNetB0", (32, 32, 3)),
    "ConvNeXtTiny": ("ConvNeXtTiny", (32, 32, 3)),
}
NAMES = list(ARCHITECTURES)

def split_parts(graph, **options):
    """The partitions of ``kgraft.passes.split`` (one graph calling part0 .. partN), as a list."""
    return partitions_of(passes.split(graph, **options))



@dataclass
class Case:
    model: keras.Model
    graph: Graph
    points: list[str]
    x: np.ndarray
    expected: list[np.ndarray]


def to_list(values) -> list:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def predict(model, inputs) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in to_list(model(inputs, training=False))]


def compose(parts, x) -> list[np.ndarray]:
    values = [x]
    for i, part in enumerate(parts):
        assert len(part.inputs) == len(values), f"partition {i}: {len(part.inputs)} inputs, fed {len(values)}"
        values = predict(part, values if len(values) > 1 else values[0])
    return values


def assert_close(actual: list, expected: list, what: str) -> None:
    assert len(actual) == len(expected), what
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{what}: shape {a.shape} vs {e.shape}"
        diff = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
        assert diff <= ATOL, f"{what}: max abs diff {diff:.3e}"


def crossing_cut(g: Graph, position: float) -> list[str]:
    """The tensors crossing a topological prefix of ``g`` ending at ``position`` (0..1): a separator."""
    order = g.topological_ids()
    upstream = set(order[: max(1, int(len(order) * position))])
    cut = []
    for node_id in order:
        if node_id not in upstream:
            continue
        for _, user, d in sorted(g.nx.out_edges(node_id, data=True), key=lambda e: e[2]["out"]):
            name = g.value_name(ValueRef(node_id, d["out"]))
            if user not in upstream and name not in cut:
                cut.append(name)
    return cut


@functools.lru_cache(maxsize=None)
def _build_case(name: str, enliven, assert_input_sensitive) -> Case:
    ctor, shape = ARCHITECTURES[name]
    keras.utils.set_random_seed(0)
    # logits of a network whose activations do not vanish: a wrong split shows
    model = getattr(keras.applications, ctor)(weights=None, input_shape=shape, classes=10,
                                              classifier_activation=None)
    enliven(model)
    graph = kgraft.lower(model)
    x = np.random.default_rng(0).uniform(-1.0, 1.0, (2, *shape)).astype("float32")
    expected = predict(model, x)
    assert_input_sensitive(expected, ATOL)
    return Case(model, graph, passes.split_points(graph), x, expected)


@pytest.fixture(scope="module")
def case(enliven, assert_input_sensitive):
    """``case(name)``: the architecture's model, IR, split points and outputs, built once per module."""
    yield lambda name: _build_case(name, enliven, assert_input_sensitive)
    _build_case.cache_clear()
    keras.backend.clear_session()


def check_split(c: Case, at, what: str) -> list:
    before = (str(c.graph), c.graph.version)
    graphs = split_parts(c.graph, at=at)
    assert (str(c.graph), c.graph.version) == before, "split changed its input graph"
    parts = [build(g) for g in graphs]
    assert_close(compose(parts, c.x), c.expected, what)
    return graphs


# ---------------------------------------------------------------------------- default run
@pytest.mark.parametrize("name", NAMES)
def test_split_points_match_oracle(name, case, brute_split_points):
    c = case(name)
    assert len(c.points) >= 5, c.points
    flat = passes.inline_nested(c.graph)
    assert c.points == brute_split_points(flat)
    assert kgraft.split_points(c.model) == c.points  # the Keras-level function agrees


@pytest.mark.parametrize("name", NAMES)
def test_split_at_all_points_at_once(name, case):
    c = case(name)
    graphs = check_split(c, c.points, f"{name} split at all {len(c.points)} points")
    assert len(graphs) == len(c.points) + 1
    for i, g in enumerate(graphs):
        assert len(g.inputs) == 1 and len(g.outputs) == 1, f"partition {i} is not single-tensor"
    for i, p in enumerate(c.points):
        assert graphs[i].value_name(graphs[i].outputs[0]) == p


@pytest.mark.parametrize("fraction", [1 / 3, 2 / 3], ids=["third", "two-thirds"])
@pytest.mark.parametrize("name", NAMES)
def test_split_at_one_point(name, fraction, case):
    c = case(name)
    p = c.points[int(len(c.points) * fraction)]
    graphs = check_split(c, p, f"{name} split at {p}")
    assert len(graphs) == 2
    n0, n1 = len(graphs[0]), len(graphs[1])
    nested = any(layer.body is not None for g in graphs for layer in g.layers.values())
    total = len(c.graph) if nested else len(passes.inline_nested(c.graph))  # inlined only when needed
    assert n0 > 2 and n1 > 2 and n0 + n1 == total + 1  # + the new InputLayer


def test_resnet50_multi_tensor_cut_through_residual_block(case):
    c = case("ResNet50")
    cut = ["conv3_block2_2_relu", "conv3_block1_out"]  # the branch and the identity skip
    assert "conv3_block2_2_relu" not in c.points and "conv3_block1_out" in c.points
    graphs = check_split(c, [cut], "ResNet50 multi-tensor cut")
    assert [graphs[0].value_name(v) for v in graphs[0].outputs] == cut
    with pytest.raises(kgraft.CutError, match="conv3_block1_out|Nearest split points"):
        split_parts(c.graph, at=["conv3_block2_2_relu"])


# ---------------------------------------------------------------------------- slow: everything
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_split_at_every_point_one_by_one(name, case):
    c = case(name)
    for p in c.points:
        graphs = check_split(c, p, f"{name} split at {p}")
        assert len(graphs) == 2 and len(graphs[0].outputs) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_multi_tensor_cut_mid_model(name, case):
    c = case(name)
    flat = passes.inline_nested(c.graph)
    for position in (0.3, 0.55, 0.8):
        cut = crossing_cut(flat, position)
        if len(cut) == 1 and cut[0] not in c.points:
            continue
        check_split(c, [cut] if len(cut) > 1 else cut, f"{name} cut {cut}")
