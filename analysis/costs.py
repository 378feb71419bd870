"""Cost analysis of cuts: what crosses a cut, and the parameters and FLOPs on each side.

Everything is computed from the IR alone (shapes and layer configs), so it works on parsed
textual IR as well as on lowered models, and costs nothing but a walk over the graph:

* bytes per sample of a tensor: product of its non-batch dimensions times the dtype size;
* parameters of a layer, per layer type (a layer of an unknown type asks its source layer's
  ``count_params()`` when the IR has one);
* FLOPs of a call site for one sample, counting a multiply-add as 2 (convolutions, dense),
  and one operation per output element for element-wise layers.

A shared layer's parameters count on every side that calls it (each side needs the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..ir import INPUT_CLASS, Graph, Node, TensorType, ValueRef
from ..ir.refs import resolve_many
from .cuts import cut_sides, normalize_cuts, require_flat, split_point_values

__all__ = ["TensorCost", "CutCost", "GraphCosts", "graph_costs", "cut_costs", "layer_params", "node_flops"]


@dataclass(frozen=True)
class TensorCost:
    """One tensor crossing a cut."""

    ref: str
    shape: tuple[int | None, ...] | None
    dtype: str | None
    bytes_per_sample: int | None


@dataclass(frozen=True)
class CutCost:
    """What a cut costs: the tensors crossing it (pass-through tensors included) and each side's work."""

    refs: tuple[str, ...]
    tensors: tuple[TensorCost, ...]
    bytes_per_sample: int | None
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int


# ----------------------------------------------------------------------------- per layer


def _prod(values) -> int:
    return math.prod(int(v) for v in values)


def _spatial(ttype: TensorType) -> int:
    """Number of positions of a channels-last feature map (dimensions between batch and channel)."""
    return _prod(ttype.shape[1:-1]) if ttype.shape and len(ttype.shape) > 2 else 1


def _elements(ttype: TensorType) -> int:
    return _prod(ttype.shape[1:]) if ttype.shape else 0


def _channels(ttype: TensorType, cfg: dict) -> int:
    axis = 1 if cfg.get("data_format") == "channels_first" else -1
    return int(ttype.shape[axis])


def _kernel(cfg: dict) -> int:
    size = cfg.get("kernel_size", 1)
    return _prod(size) if isinstance(size, (list, tuple)) else int(size)


def _bias(cfg: dict, n: int) -> int:
    return n if cfg.get("use_bias", True) else 0


def _conv_params(cfg, cin):
    return _kernel(cfg) * cin // int(cfg.get("groups", 1)) * cfg["filters"] + _bias(cfg, cfg["filters"])


def _conv_transpose_params(cfg, cin):
    return _kernel(cfg) * cin * cfg["filters"] + _bias(cfg, cfg["filters"])


def _depthwise_params(cfg, cin):
    dm = int(cfg.get("depth_multiplier", 1))
    return _kernel(cfg) * cin * dm + _bias(cfg, cin * dm)


def _separable_params(cfg, cin):
    dm = int(cfg.get("depth_multiplier", 1))
    return _kernel(cfg) * cin * dm + cin * dm * cfg["filters"] + _bias(cfg, cfg["filters"])


def _axis_size(cfg, ttype: TensorType) -> int:
    axes = cfg.get("axis", -1)
    axes = axes if isinstance(axes, (list, tuple)) else [axes]
    return _prod(ttype.shape[a] for a in axes)


def _batchnorm_params(cfg, _cin, ttype):
    return _axis_size(cfg, ttype) * (2 + bool(cfg.get("center", True)) + bool(cfg.get("scale", True)))


def _layernorm_params(cfg, _cin, ttype):
    return _axis_size(cfg, ttype) * (bool(cfg.get("center", True)) + bool(cfg.get("scale", True)))


def _normalization_params(cfg, _cin, ttype):
    if cfg.get("mean") is not None:  # constants in the config, no weights
        return 0
    return 2 * _axis_size(cfg, ttype) + 1  # mean, variance, count


# class name -> params(config, input channels)
_PARAMS: dict[str, Callable[[dict, int], int]] = {
    "Conv1D": _conv_params, "Conv2D": _conv_params, "Conv3D": _conv_params,
    "Conv1DTranspose": _conv_transpose_params, "Conv2DTranspose": _conv_transpose_params,
    "Conv3DTranspose": _conv_transpose_params,
    "DepthwiseConv1D": _depthwise_params, "DepthwiseConv2D": _depthwise_params,
    "SeparableConv1D": _separable_params, "SeparableConv2D": _separable_params,
    "Dense": lambda cfg, cin: cin * cfg["units"] + _bias(cfg, cfg["units"]),
    "Embedding": lambda cfg, cin: cfg["input_dim"] * cfg["output_dim"],
    "LayerScale": lambda cfg, cin: cfg["projection_dim"],
}
# class name -> params(config, input channels, input type)
_PARAMS_BY_TYPE = {
    "BatchNormalization": _batchnorm_params,
    "LayerNormalization": _layernorm_params,
    "Normalization": _normalization_params,
}
# layers that only move data: no FLOPs, no parameters
_DATA_MOVEMENT = {
    INPUT_CLASS, "Reshape", "Flatten", "Permute", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "Concatenate", "Dropout",
    "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "AlphaDropout",
    "Identity", "UpSampling1D", "UpSampling2D", "UpSampling3D",
}


def layer_params(graph: Graph, layer_name: str) -> int:
    """Number of weights (trainable or not) of one layer of ``graph``."""
    layer = graph.layers[layer_name]
    if layer.class_name in _DATA_MOVEMENT:
        return 0
    if layer.body is not None:
        return sum(layer_params(layer.body, name) for name in layer.body.layers)
    calls = graph.call_sites(layer_name)
    operands = [ref for _, ref in calls[0].operands()] if calls else []
    in_type = graph.value_type(operands[0]) if operands else TensorType()
    try:
        if layer.class_name in _PARAMS_BY_TYPE:
            return _PARAMS_BY_TYPE[layer.class_name](layer.config, 0, in_type)
        rule = _PARAMS.get(layer.class_name)
        if rule is not None:
            return rule(layer.config, _channels(in_type, layer.config) if in_type.shape else 0)
    except (KeyError, TypeError, IndexError):
        pass  # a config or type that does not say enough: fall back to the source layer
    count = getattr(layer.handle, "count_params", None)
    if count is not None:
        try:
            return int(count())
        except Exception:  # an unbuilt or odd custom layer: it has no countable weights
            return 0
    return 0


def _conv_flops(cfg, node_in, out):
    cin = _channels(node_in, cfg)
    return 2 * _kernel(cfg) * cin // int(cfg.get("groups", 1)) * cfg["filters"] * _spatial(out)


def _conv_transpose_flops(cfg, node_in, out):
    return 2 * _kernel(cfg) * _channels(node_in, cfg) * cfg["filters"] * _spatial(node_in)


def _depthwise_flops(cfg, node_in, out):
    return 2 * _kernel(cfg) * _elements(out)


def _separable_flops(cfg, node_in, out):
    cin, dm = _channels(node_in, cfg), int(cfg.get("depth_multiplier", 1))
    return 2 * _kernel(cfg) * cin * dm * _spatial(out) + 2 * cin * dm * cfg["filters"] * _spatial(out)


def _dense_flops(cfg, node_in, out):
    return 2 * int(node_in.shape[-1]) * cfg["units"] * _spatial(out)


def _pool_flops(cfg, node_in, out):
    return _kernel({"kernel_size": cfg.get("pool_size", 2)}) * _elements(out)


_FLOPS = {
    "Conv1D": _conv_flops, "Conv2D": _conv_flops, "Conv3D": _conv_flops,
    "Conv1DTranspose": _conv_transpose_flops, "Conv2DTranspose": _conv_transpose_flops,
    "Conv3DTranspose": _conv_transpose_flops,
    "DepthwiseConv1D": _depthwise_flops, "DepthwiseConv2D": _depthwise_flops,
    "SeparableConv1D": _separable_flops, "SeparableConv2D": _separable_flops,
    "Dense": _dense_flops,
    "MaxPooling1D": _pool_flops, "MaxPooling2D": _pool_flops, "MaxPooling3D": _pool_flops,
    "AveragePooling1D": _pool_flops, "AveragePooling2D": _pool_flops, "AveragePooling3D": _pool_flops,
    "GlobalAveragePooling1D": lambda cfg, i, o: _elements(i), "GlobalAveragePooling2D": lambda cfg, i, o: _elements(i),
    "GlobalMaxPooling1D": lambda cfg, i, o: _elements(i), "GlobalMaxPooling2D": lambda cfg, i, o: _elements(i),
    "BatchNormalization": lambda cfg, i, o: 2 * _elements(o),  # scale and shift (folded statistics)
    "LayerNormalization": lambda cfg, i, o: 5 * _elements(o),  # mean, variance, normalise, scale, shift
    "Embedding": lambda cfg, i, o: 0,
}


def node_flops(graph: Graph, node: Node) -> int:
    """FLOPs of one call for one sample (a multiply-add counts 2); 0 when shapes are unknown."""
    layer = graph.layers[node.layer]
    if layer.class_name in _DATA_MOVEMENT:
        return 0
    if layer.body is not None:
        return sum(node_flops(layer.body, n) for n in layer.body.nodes())
    operands = [graph.value_type(ref) for _, ref in node.operands()]
    out = node.outputs[0] if node.outputs else TensorType()
    if out.shape is None or any(d is None for d in out.shape[1:]):
        return 0
    rule = _FLOPS.get(layer.class_name)
    if rule is not None and operands and operands[0].shape is not None:
        try:
            return int(rule(layer.config, operands[0], out))
        except (KeyError, TypeError, IndexError, ValueError):
            pass
    # element-wise: Add of n tensors is n-1 operations per element; an activation is one
    return max(len(operands) - 1, 1) * sum(_elements(t) for t in node.outputs if t.shape)


# ----------------------------------------------------------------------------- per graph


@dataclass(frozen=True)
class GraphCosts:
    """Per call site FLOPs and per layer parameters of one flat graph, for summing over sides."""

    graph: Graph
    flops: dict[str, int]
    params: dict[str, int]

    def side(self, node_ids) -> tuple[int, int]:
        """``(params, flops)`` of a set of call sites (each layer's weights counted once)."""
        layers = {self.graph.node(n).layer for n in node_ids}
        return sum(self.params[name] for name in layers), sum(self.flops[n] for n in node_ids)


def graph_costs(graph: Graph) -> GraphCosts:
    """Costs of a flat graph (no nested models): call its result's ``side`` with node sets."""
    flops = {node.id: node_flops(graph, node) for node in graph.nodes()}
    params = {name: layer_params(graph, name) for name in graph.layers}
    return GraphCosts(graph, flops, params)


def tensor_cost(graph: Graph, value: ValueRef) -> TensorCost:
    ttype = graph.value_type(value)
    return TensorCost(graph.value_name(value), ttype.shape, ttype.dtype, ttype.bytes_per_sample)


def cut_costs(flat: Graph, cuts=None) -> list[CutCost]:
    """The cost of every split point (``cuts=None``) or of each given cut (a ref or a list of refs).

    ``flat`` is flat and pruned (:func:`kgraft.passes.cut_costs` inlines and prunes any graph
    first). A bad cut raises :class:`~kgraft.CutError` as ``split`` would.
    """
    require_flat(flat, "cut_costs")
    if cuts is None:
        values = [[v] for v in split_point_values(flat)]
    else:
        values = [resolve_many(flat, cut) for cut in normalize_cuts(cuts)]
    costs = graph_costs(flat)
    every = set(flat.nx)
    result = []
    for cut in values:
        refs = tuple(flat.value_name(v) for v in cut)
        upstream, crossing = cut_sides(flat, cut, ", ".join(refs))
        tensors = tuple(tensor_cost(flat, v) for v in crossing)
        sizes = [t.bytes_per_sample for t in tensors]
        before, after = costs.side(upstream), costs.side(every - upstream)
        result.append(CutCost(refs, tensors, None if None in sizes else sum(sizes),
                              before[0], after[0], before[1], after[1]))
    return result
