"""Cut costs (bytes, parameters, FLOPs) and the split planner.

The planner is checked on small graphs whose optimum is worked out by hand in the comments,
with a measured-style ``profile`` so that every time is an exact number.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kgraft
from kgraft.ir import parse
from kgraft.analysis.costs import graph_costs
from kgraft.analysis.placement import CostModel, Overhead, min_cut_plan, parse_bandwidth
from kgraft.passes import cut_costs, rank_placements

# a residual block: the only single-tensor split points are %stem and %add
RESNET = """
kgraft.model @resnet(%image: f32[?,8,8,3]) {
  %stem = Conv2D @stem#0(%image) {filters=16, kernel_size=[3, 3], padding="same"} : f32[?,8,8,16]
  %conv1 = Conv2D @conv1#0(%stem) {filters=8, kernel_size=[1, 1], padding="same", use_bias=false} : f32[?,8,8,8]
  %conv2 = Conv2D @conv2#0(%conv1) {filters=16, kernel_size=[3, 3], padding="same"} : f32[?,8,8,16]
  %add = Add @add#0([%conv2, %stem]) : f32[?,8,8,16]
  %pool = GlobalAveragePooling2D @pool#0(%add) : f32[?,16]
  %logits = Dense @logits#0(%pool) {units=10} : f32[?,10]
  return %logits
}
"""


def test_cut_costs_by_hand():
    costs = {c.refs: c for c in cut_costs(parse(RESNET))}
    assert list(costs) == [("stem",), ("add",), ("pool",)]
    stem, pool = costs[("stem",)], costs[("pool",)]
    # stem: 3*3*3*16 + 16 = 448 params; conv1: 16*8 = 128; conv2: 3*3*8*16 + 16 = 1168; logits: 16*10 + 10 = 170
    assert (stem.params_before, stem.params_after) == (448, 128 + 1168 + 170)
    assert stem.bytes_per_sample == 8 * 8 * 16 * 4
    assert stem.tensors[0].shape == (None, 8, 8, 16) and stem.tensors[0].dtype == "float32"
    # FLOPs: stem 2*27*16*64 = 55296; conv1 2*16*8*64 = 16384; conv2 2*72*16*64 = 147456;
    # add 1024; pool 1024 (reads every input element); logits 2*16*10 = 320
    assert stem.flops_before == 55296
    assert pool.flops_before == 55296 + 16384 + 147456 + 1024 + 1024
    assert pool.flops_after == 320
    assert pool.bytes_per_sample == 16 * 4


def test_multi_tensor_cut_counts_the_skip_connection():
    (cost,) = cut_costs(parse(RESNET), [["conv1", "stem"]])
    assert cost.refs == ("conv1", "stem")
    assert [t.ref for t in cost.tensors] == ["conv1", "stem"]
    assert cost.bytes_per_sample == (8 * 8 * 8 + 8 * 8 * 16) * 4


def test_bad_cut_is_a_cut_error():
    with pytest.raises(kgraft.CutError, match="bypasses it"):
        cut_costs(parse(RESNET), [["conv1"]])


@pytest.mark.parametrize("name, shape", [("ResNet50", (64, 64, 3)), ("MobileNetV2", (64, 64, 3)),
                                         ("EfficientNetB0", (64, 64, 3)), ("ConvNeXtTiny", (64, 64, 3)),
                                         ("InceptionResNetV2", (96, 96, 3))])
def test_parameter_counts_match_keras_without_the_source_layers(name, shape):
    """Counted from the configs alone: the textual IR (no link to Keras layers) gives Keras's count."""
    model = getattr(keras.applications, name)(weights=None, input_shape=shape)
    graph = parse(str(kgraft.lower(model)))
    assert sum(graph_costs(graph).params.values()) == model.count_params()


def test_resnet50_flops_match_the_published_figure():
    # ResNet50 at 224x224: 3.86 G multiply-adds in its convolutions and dense layer
    graph = kgraft.lower(keras.applications.ResNet50(weights=None))
    costs = graph_costs(graph)
    macs = sum(f for n, f in costs.flops.items() if graph.layer_of(n).class_name in ("Conv2D", "Dense")) / 2
    assert 3.8e9 < macs < 3.9e9


def test_bytes_in_split_equal_the_partition_inputs():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    cut = ["block_2_project_BN", "block_1_project_BN"]
    (cost,) = cut_costs(kgraft.lower(model), [cut])
    _, tail = kgraft.split(model, [cut])
    expected = sum(int(np.prod(t.shape[1:])) * 4 for t in tail.inputs)
    assert cost.bytes_per_sample == expected


@pytest.mark.parametrize("text, bps", [("20Mbps", 20e6), ("1.5 Gbit/s", 1.5e9), ("500kbps", 5e5),
                                       ("10MB/s", 80e6), ("1e6", 1e6), (2e6, 2e6)])
def test_parse_bandwidth(text, bps):
    assert parse_bandwidth(text) == pytest.approx(bps)


@pytest.mark.parametrize("text", ["fast", "-3Mbps", "0", "20 parsecs"])
def test_bad_bandwidth(text):
    with pytest.raises(kgraft.KgraftError, match="bandwidth"):
        parse_bandwidth(text)


# p shrinks the input, q1 and q2 both read p and shrink it further, add joins them:
# the only split point is %p, but cutting {q1, q2} sends 8 bytes instead of p's 400.
DIAMOND = """
kgraft.model @diamond(%x: f32[?,1000]) {
  %p = Dense @p#0(%x) {units=100} : f32[?,100]
  %q1 = Dense @q1#0(%p) {units=1} : f32[?,1]
  %q2 = Dense @q2#0(%p) {units=1} : f32[?,1]
  %add = Add @add#0([%q1, %q2]) : f32[?,1]
  return %add
}
"""
PROFILE = {"x#0": 0.0, "p#0": 1.0, "q1#0": 1.0, "q2#0": 1.0, "add#0": 1.0}
KEEP = {"results_to_edge": False}  # these cases count only what crosses the cut, as Neurosurgeon does


def _by_label(rows):
    return {r.label: r for r in rows}


def test_planner_finds_the_multi_tensor_cut_on_a_slow_link():
    # 8 bit/s: sending x (4000 B) takes 4000 s, p (400 B) 400 s, {q1, q2} (8 B) 8 s.
    # edge 2x slower than the server: all on edge = 4*2 = 8 s, the optimum; {q1,q2} = 3*2 + 8 + 1
    # = 15; p = 2 + 400 + 3 = 405; all on server = 4000 + 4.
    rows = rank_placements(parse(DIAMOND), 8, edge_slowdown=2, profile=PROFILE, **KEEP)
    assert [(r.label, r.total_s) for r in rows] == [("all on edge", 8), ("p", 405), ("all on server", 4004)]
    assert rows[0].method == "all on edge, min-cut"
    # make the edge 10x slower: all on edge = 40, {q1,q2} = 30 + 8 + 1 = 39 wins
    rows = rank_placements(parse(DIAMOND), 8, edge_slowdown=10, profile=PROFILE, **KEEP)
    assert rows[0].label == "q1, q2" and rows[0].method == "min-cut"
    assert rows[0].total_s == pytest.approx(39)
    assert rows[0].cut == ("q1", "q2") and rows[0].bytes_per_sample == 8
    assert (rows[0].edge_s, rows[0].transfer_s, rows[0].server_s) == pytest.approx((30, 8, 1))


def test_planner_prefers_the_server_on_a_fast_link():
    # 1 Gbit/s and an edge 100x slower: all on server = 32 us + 4 s beats everything else
    rows = rank_placements(parse(DIAMOND), 1e9, edge_slowdown=100, profile=PROFILE, **KEEP)
    assert rows[0].label == "all on server" and rows[0].method == "all on server, min-cut"
    assert rows[0].total_s == pytest.approx(4 + 4000 * 8 / 1e9)
    assert rows[0].transfer_s == pytest.approx(4000 * 8 / 1e9)


def test_planner_picks_the_split_point_in_between():
    # 4000 bit/s: p = 3*1 (edge 3x slower) + 0.8 + 3 = 6.8, the optimum ({q1,q2} = 9 + 0.016 + 1
    # = 10.016 is beaten, so not listed); all on edge = 12; all on server = 8 + 4 = 12
    rows = rank_placements(parse(DIAMOND), 4000, edge_slowdown=3, profile=PROFILE, **KEEP)
    assert [(r.label, r.total_s) for r in rows] == [("p", pytest.approx(6.8)), ("all on edge", 12),
                                                      ("all on server", 12)]
    assert rows[0].method == "split point, min-cut"


def test_rtt_is_paid_once_by_every_plan_that_sends_something():
    rows = _by_label(rank_placements(parse(DIAMOND), 4000, edge_slowdown=3, rtt_s=0.5, profile=PROFILE, **KEEP))
    assert rows["p"].transfer_s == pytest.approx(0.8 + 0.5)
    assert rows["all on edge"].transfer_s == 0


def test_results_coming_back_can_keep_everything_on_the_edge():
    # as the slow-link case above (8 bit/s, edge 10x), but add's 4 B result returns to the edge
    # (4 s): {q1,q2} = 30 + 8 + 1 + 4 = 43 now loses to all on edge (40); p = 10 + 400 + 3 + 4 = 417;
    # all on server = 4000 + 4 + 4 = 4008
    rows = rank_placements(parse(DIAMOND), 8, edge_slowdown=10, profile=PROFILE)
    assert [(r.label, r.total_s) for r in rows] == [("all on edge", 40), ("p", 417), ("all on server", 4008)]
    assert rows[0].method == "all on edge, min-cut"
    assert [r.bytes_returned for r in rows] == [0, 4, 4]


def test_serving_overhead_is_paid_per_request_and_per_byte():
    # 4000 bit/s (2 ms/B) + 1 ms/B of serialisation = 3 ms per byte either way; per request
    # 0.25 s + 100 protocol bytes on the wire (0.2 s) = 0.45 s.
    # p: 3 + (400 + 4) * 0.003 + 0.45 + 3 = 7.662; all on server: (4000 + 4) * 0.003 + 0.45 + 4 =
    # 16.462; all on edge 12; {q1,q2} = 9 + 12 * 0.003 + 0.45 + 1 = 10.486, beaten by p in the min-cut
    overhead = Overhead(request_s=0.25, per_byte_s=1e-3, request_bytes=100)
    rows = rank_placements(parse(DIAMOND), 4000, edge_slowdown=3, profile=PROFILE, overhead=overhead)
    assert [(r.label, r.total_s) for r in rows] == [("p", pytest.approx(7.662)), ("all on edge", 12),
                                                      ("all on server", pytest.approx(16.462))]
    assert rows[0].transfer_s == pytest.approx(1.662) and rows[1].transfer_s == 0


@pytest.mark.parametrize("field", ["request_s", "per_byte_s", "request_bytes"])
def test_bad_overhead_is_refused(field):
    with pytest.raises(kgraft.KgraftError, match=f"overhead {field} must be a finite number >= 0"):
        Overhead(**{field: -1})
    with pytest.raises(kgraft.KgraftError, match="overhead must be a kgraft.analysis.placement.Overhead"):
        rank_placements(parse(DIAMOND), 8, profile=PROFILE, overhead=0.1)


def test_min_cut_is_the_optimum_over_all_closed_cuts():
    """Brute force over every edge set closed under producers: the min-cut plan is as cheap as the best."""
    import itertools

    graph = parse(RESNET)
    # the logits (40 B) come back when the server computes them; every byte costs 10 us more
    model = CostModel(bandwidth_bps=2e5, edge_slowdown=4, overhead=Overhead(per_byte_s=1e-5))
    seconds = {n: 1e-3 * (i % 3 + 1) for i, n in enumerate(graph.topological_ids())}
    seconds["image#0"] = 0.0

    def latency(edge):
        sent = {(p, o) for p, c, o in graph.nx.edges(data="out") if p in edge and c not in edge}
        nbytes = sum(graph.value_type(kgraft.ir.ValueRef(p, o)).bytes_per_sample for p, o in sent)
        returned = 0 if "logits#0" in edge else 40
        return (sum(seconds[n] for n in edge) * 4 + model.transfer_s(nbytes, returned)
                + sum(seconds[n] for n in graph.nx if n not in edge))

    nodes = [n for n in graph.topological_ids() if n != "image#0"]
    closed = []
    for k in range(len(nodes) + 1):
        for combo in itertools.combinations(nodes, k):
            edge = {"image#0", *combo}
            if all(p in edge for n in combo for p in graph.nx.predecessors(n)):
                closed.append(edge)
    best = min(latency(e) for e in closed)
    assert latency(min_cut_plan(graph, model, seconds)) == pytest.approx(best)


def test_plan_needs_known_shapes():
    text = DIAMOND.replace("f32[?,1000]", "f32[?,?]")
    with pytest.raises(kgraft.KgraftError, match="input shape"):
        rank_placements(parse(text), 8, profile=PROFILE)


def test_keras_level_plan_measures_layers_with_onnx_runtime():
    """kgraft.plan profiles the model in ONNX Runtime, and its all-on-server row adds up."""
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    rows = kgraft.plan(model, "10Mbps", edge_slowdown=8)
    assert {r.method.split(",")[0] for r in rows} >= {"all on edge", "all on server", "split point"}
    assert [r.total_s for r in rows] == sorted(r.total_s for r in rows)
    server = _by_label(rows)["all on server"]
    assert server.bytes_per_sample == 32 * 32 * 3 * 4
    assert server.bytes_returned == 1000 * 4  # the class probabilities come back
    assert server.transfer_s == pytest.approx((32 * 32 * 3 * 4 + 1000 * 4) * 8 / 10e6)
    edge = _by_label(rows)["all on edge"]
    assert edge.edge_s == pytest.approx(8 * server.server_s)


def test_partition_latency_is_measured_per_partition(tmp_path):
    from kgraft.backends.onnx.profile import partition_latency

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    kgraft.export_onnx(model, tmp_path / "x", at="block_6_project_BN")
    times = partition_latency(tmp_path / "x", runs=5)
    assert len(times) == 2 and all(t > 0 for t in times)


def test_keras_level_plan_from_flops_runs_nothing(monkeypatch):
    from kgraft.backends.onnx import profile

    monkeypatch.setattr(profile, "layer_profile", lambda *a, **k: pytest.fail("profiled"))
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    rows = _by_label(kgraft.plan(model, "10Mbps", edge_slowdown=8, flops_per_s=1e9))
    flops = sum(graph_costs(kgraft.lower(model)).flops.values())
    assert rows["all on server"].server_s == pytest.approx(flops / 1e9)


def test_layer_profile_covers_the_heavy_layers_and_adds_up():
    from kgraft.backends.onnx.profile import layer_profile

    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    seconds = layer_profile(model, runs=3, warmup=1)
    graph = kgraft.lower(model)
    assert set(seconds) <= set(graph.nx) and all(t >= 0 for t in seconds.values())
    # fused Conv+BN+ReLU groups land on one of their layers: every residual block is covered
    blocks = {n.split("_")[0] + "_" + n.split("_")[1] for n in seconds if n.startswith("conv")}
    assert {"conv2_block1", "conv3_block4", "conv4_block6", "conv5_block3"} <= blocks
    assert 0 < sum(seconds.values()) < 10
