"""Which layers carry channels, and where a depthwise layer's channels come from.

A DepthwiseConv makes its output channels ``c*m .. c*m+m-1`` (``m`` = ``depth_multiplier``) from
its input channel ``c`` alone, so it has no channels of its own to delete: deleting its output
channels means deleting whole groups, that is input channels ``c``, from the layers that produce
them. :func:`upstream_jobs` walks from the depthwise call sites up through the layers that carry
channels one to one (per-channel layers, activations, pooling, padding, other depthwise layers,
element-wise merges: every operand; Concatenate: the operand at the offset) to the Conv*/Dense/
SeparableConv layers that make them, and returns those as delete-channels jobs. Deleting them
there deletes them from everything that reads them (the depthwise layer included), as the forward
walk of :mod:`~kgraft.passes.delete_channels` then does. A group cut in half, or channels that
come from a model input or a layer that makes no channels of its own, are refused by name.

    %c = Conv2D @c#0(%x) {filters=4}; %bn = BatchNormalization(%c); %dw = DepthwiseConv2D(%bn)
    delete-channels{ref=dw,channels=[1]}  ==  delete-channels{ref=c,channels=[1]}
"""

from __future__ import annotations

from ..ir import Graph, KgraftError, ValueRef

__all__ = ["ROOTS", "DEPTHWISE", "ELEMENTWISE", "SPATIAL", "GLOBAL", "MERGES", "upstream_jobs", "channel_axis"]

ROOTS = {"Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters", "Dense": "units",
         "SeparableConv1D": "filters", "SeparableConv2D": "filters"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
ELEMENTWISE = {"ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "GaussianNoise", "GaussianDropout",
               "AlphaDropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "Identity",
               "ActivityRegularization"}
SPATIAL = {f"{op}{d}D" for op in ("MaxPooling", "AveragePooling", "ZeroPadding", "Cropping", "UpSampling")
           for d in (1, 2, 3)}
GLOBAL = {f"Global{op}Pooling{d}D" for op in ("Average", "Max") for d in (1, 2, 3)}
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
MIXING_ACTIVATIONS = {"softmax", "log_softmax"}
# what carries channels one to one without changing the rank (upstream of a depthwise layer)
_CARRIERS = ELEMENTWISE | SPATIAL | {"BatchNormalization", "PReLU", "Activation"}


def channel_axis(layer, rank: int) -> int:
    return 1 if layer.config.get("data_format") == "channels_first" else rank - 1


def upstream_jobs(graph: Graph, layer, deleted: frozenset) -> list[tuple[str, frozenset]]:
    """``(root layer, channels)`` jobs equal to deleting output channels ``deleted`` of the
    depthwise ``layer`` (every call site of it); see the module docstring."""
    jobs: list[tuple[str, frozenset]] = []
    for node in graph.call_sites(layer.name):
        (source,) = [ref for _, ref in node.operands()]
        rank = len(graph.value_type(source).shape)
        jobs += _sources(graph, source, _groups(graph, node, deleted), channel_axis(layer, rank), layer.name)
    return jobs


def _groups(graph: Graph, node, deleted: frozenset) -> frozenset:
    """The input channels of depthwise call ``node`` whose every output channel is deleted."""
    layer = graph.layers[node.layer]
    mult = layer.config.get("depth_multiplier", 1)
    inputs = frozenset(c // mult for c in deleted)
    whole = frozenset(c * mult + k for c in inputs for k in range(mult))
    if whole != deleted:
        raise KgraftError(
            f"delete-channels: {layer.name!r} ({layer.class_name}, depth_multiplier={mult}) makes its output channels "
            f"c*{mult}..c*{mult}+{mult - 1} from its input channel c alone, so only whole groups can go: delete "
            f"{sorted(whole)} (input channels {sorted(inputs)}), not {sorted(deleted)}")
    return inputs


def _sources(graph: Graph, value: ValueRef, channels: frozenset, axis: int, what: str) -> list[tuple[str, frozenset]]:
    node = graph.node(value.node)
    layer = graph.layers[node.layer]
    cls = layer.class_name
    operands = [ref for _, ref in node.operands()]
    if cls in ROOTS:
        return [(layer.name, channels)]
    if cls in MERGES:
        return [job for ref in operands for job in _sources(graph, ref, channels, axis, what)]
    if cls in DEPTHWISE:
        return _sources(graph, operands[0], _groups(graph, node, channels), axis, what)
    if cls == "Concatenate" and layer.config.get("axis", -1) % len(node.outputs[0].shape or [0]) == axis:
        jobs, offset = [], 0
        for ref in operands:
            size = (graph.value_type(ref).shape or [None] * (axis + 1))[axis]
            if size is None:
                break
            mine = frozenset(c - offset for c in channels if offset <= c < offset + size)
            jobs += _sources(graph, ref, mine, axis, what) if mine else []
            offset += size
        else:
            return jobs
    elif cls in _CARRIERS and len(operands) == 1 and layer.config.get("activation") not in MIXING_ACTIVATIONS:
        return _sources(graph, operands[0], channels, axis, what)
    source = f"the model input {layer.name!r}" if node.id in graph.inputs else f"{graph.value_name(value)!r} ({cls})"
    raise KgraftError(
        f"delete-channels: the channels of {what!r} come from {source}, which kgraft cannot delete channels from "
        f"(they are followed up through per-channel layers, activations, pooling, padding, depthwise layers, "
        f"element-wise merges and Concatenate to Conv*/Dense/SeparableConv layers); delete the channels of a "
        f"layer after {what!r} instead, or change the model first.")
