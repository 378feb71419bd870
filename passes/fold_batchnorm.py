"""``fold-batchnorm``: fold each inference-mode BatchNormalization into the layer before it.

A BatchNormalization folds when its input is the only use of the output of a Conv1D/Conv2D/
Conv3D/DepthwiseConv2D/Dense call site, neither layer is shared, the convolution has no
activation, and the BN normalizes that layer's channel axis. The layer then gets a bias
(``use_bias=true``) and a weight plan ``fold <bn>``: its kernel is scaled by
``gamma / sqrt(moving_variance + epsilon)`` per output channel and its bias becomes
``(bias - moving_mean) * scale + beta``, applied when the backend copies the weights. The BN's
consumers read the layer's output. Nested models are folded inside, and stay nested. The result
equals the source in inference mode (``training=False``); in training mode a folded model no
longer normalizes by batch statistics, which is why edge deployments fold.

    before: %c = Conv2D @c#0(%x) {use_bias=false}; %bn = BatchNormalization @bn#0(%c)
    after:  %c = Conv2D @c#0(%x) {use_bias=true}   // weights of c: fold bn (out axes 1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from ..ir import Graph, ValueRef
from ..ir.weight_plan import FoldBatchNorm as FoldStep
from .infra import Pass, register

__all__ = ["FoldBatchNorm", "fold_all", "FOLDABLE"]

FOLDABLE = {"Conv1D": 1, "Conv2D": 1, "Conv3D": 1, "Dense": 1, "DepthwiseConv2D": 2}  # -> out axes


def _foldable(graph: Graph, bn_node) -> ValueRef | None:
    """The value a BN call site folds into, or None."""
    operands = [ref for _, ref in bn_node.operands()]
    if len(operands) != 1 or len(graph.call_sites(bn_node.layer)) != 1 or bn_node.kwargs.get("training"):
        return None
    src = operands[0]
    producer = graph.node(src.node)
    layer = graph.layers[producer.layer]
    if layer.class_name not in FOLDABLE or len(graph.call_sites(layer.name)) != 1 or len(graph.uses(src.node)) != 1:
        return None
    if src in graph.outputs or layer.config.get("activation", "linear") not in ("linear", None):
        return None
    rank = len(producer.outputs[0].shape) if producer.outputs[0].shape is not None else None
    channel_axis = 1 if layer.config.get("data_format") == "channels_first" else -1
    axis = graph.layers[bn_node.layer].config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not isinstance(axis, int) or rank is None:
        return None
    if axis % rank != channel_axis % rank:
        return None
    return src


def fold_all(graph: Graph) -> Graph:
    """A copy of ``graph`` with every foldable BN folded (nested bodies too); see the docstring."""
    new = graph.copy()
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        if layer.class_name != "BatchNormalization":
            continue
        src = _foldable(new, new.node(node.id))
        if src is None:
            continue
        conv = new.layer_of(src.node)
        new.set_layer(replace(conv, spec={**conv.spec, "config": {**conv.config, "use_bias": True}},
                              weight_plan=conv.weight_plan + (FoldStep(layer, FOLDABLE[conv.class_name]),)))
        new.replace_all_uses(ValueRef(node.id), src)
        new.remove_nodes([node.id])
    for name, layer in list(new.layers.items()):
        if layer.body is not None:
            body = fold_all(layer.body)
            if len(body) != len(layer.body):
                new.set_layer(replace(layer, body=body))
    new.remove_unused_layers()
    return new


@register
@dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold inference-mode BatchNormalization layers into the Conv*/Dense before them."""

    name: ClassVar[str] = "fold-batchnorm"

    def apply(self, graph: Graph) -> Graph:
        return fold_all(graph)
