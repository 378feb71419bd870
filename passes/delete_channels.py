"""``delete-channels{ref,channels}``: remove output channels of Conv*/Dense/SeparableConv layers and
the matching input channels of everything that reads them. A DepthwiseConv's output channels are
made from its input's, so they are deleted where those are made (whole groups of its
``depth_multiplier``; :mod:`~kgraft.analysis.channel_sources` walks up to the producers).

The deleted channels are followed through every layer that carries channels one to one: per-channel
layers (BatchNormalization, PReLU, DepthwiseConv: their weights are sliced), activations, dropout and
noise, pooling, padding, cropping and upsampling, global pooling, Flatten (the flattened positions of
those channels), element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum: every operand
must lose the same channels) and Concatenate (at its offsets). They stop at the first layers that mix
channels (Conv*, Dense, the depthwise and pointwise kernels of SeparableConv), whose kernels lose the
matching input rows. Anything else is refused by name. Several layers go in one run (``ref`` and
``channels`` as parallel lists), as kerassurgeon's ``Surgeon`` batches jobs: one rebuild for all.
Refs such as ``vgg16/block3_conv1`` reach into nested models. Where every job lies in one model
(nested or not) and the channels stay in it, it is edited in place and nesting is kept; where they
cross a nested model's boundary, the model is inlined first and the result is flat (a nested
model's input or output type would change, and a nested model may be called where its other
callers keep the old channels).

Weights are not touched here: each changed layer gets ``Take`` steps in its weight plan, applied by
the backend when it copies weights; ``filters``/``units`` shrink. :func:`plan_channels` returns the
plan itself, which the Keras-level check uses to build the reference (the source with the weights
that read the deleted channels zeroed).

    delete-channels{ref=c1,channels=[0,3]}:
      %c1 = Conv2D @c1#0(%x) {filters=6} : f32[?,8,8,6]   // weights of c1: take kernel[axis -1: keep 1,2,4..7]; ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from ..ir import Graph, KgraftError, ValueRef
from ..ir.refs import _find_layer, parse_ref, resolve
from ..ir.weight_plan import Take
from .infra import Pass, register
from .inline_nested import inline
from ..analysis.channel_sources import (DEPTHWISE, ELEMENTWISE, GLOBAL, MERGES, MIXING_ACTIVATIONS, ROOTS, SPATIAL,
                              channel_axis, upstream_jobs)
from .surgery_sites import edit_at, locate, unbuilt

__all__ = ["DeleteChannels", "ChannelPlan", "plan_nested", "plan_channels", "apply_plan", "ROOTS"]



@dataclass(frozen=True)
class Channels:
    """Which channels of a value are deleted: along ``axis`` (non-negative), of ``size`` in all."""

    axis: int
    size: int
    deleted: frozenset

    def keep(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.size) if i not in self.deleted)


@dataclass
class ChannelPlan:
    """What deleting the channels does: new configs, weight steps per layer, the input rows that
    the first channel-mixing layers stop reading (``zeroed``: layer -> [(variable, axis, rows)]),
    and the model outputs that lose channels (output index -> ``Channels``)."""

    graph: Graph
    configs: dict[str, dict] = field(default_factory=dict)
    steps: dict[str, list] = field(default_factory=dict)
    zeroed: dict[str, list] = field(default_factory=dict)
    masks: dict[ValueRef, Channels] = field(default_factory=dict)
    trimmed_outputs: dict[int, Channels] = field(default_factory=dict)


def plan_nested(graph: Graph, jobs: list[tuple[str, list[int]]]) -> tuple[tuple[str, ...], ChannelPlan]:
    """``(chain, plan)``: planned inside the one model (the top level or a nested one, at ``chain``)
    that holds every job when the channels stay in it, so that nesting is kept; else planned on the
    inlined graph (``chain`` empty), whose result is flat. Apply it with
    ``edit_at(graph, chain, lambda _: apply_plan(plan))``."""
    if any(layer.body is not None for layer in graph.layers.values()):
        try:
            sites = [locate(graph, ref) for ref, _ in jobs]
            chains = {site.chain for site in sites}
            plan = _plan(sites[0].graph(graph), [(s.ref, c) for s, (_, c) in zip(sites, jobs)]) if len(chains) == 1 else None
        except KgraftError:  # the channels reach a nested model: follow them through its inlined body
            plan = None
        if plan is not None and not (sites[0].chain and plan.trimmed_outputs):
            return sites[0].chain, plan
    return (), plan_channels(graph, jobs)


def plan_channels(graph: Graph, jobs: list[tuple[str, list[int]]]) -> ChannelPlan:
    """Follow the channels each job deletes through ``graph`` (inlined when it nests models)."""
    return _plan(inline(graph), jobs)


def _plan(graph: Graph, jobs: list[tuple[str, list[int]]]) -> ChannelPlan:
    roots: dict[str, frozenset] = {}
    for ref, channels in jobs:
        layer = _find_layer(graph, parse_ref(ref).path)
        if layer is None:
            layer = graph.layer_of(resolve(graph, ref).node)  # a RefError naming the closest refs, if unknown
        if layer.class_name in DEPTHWISE:  # its channels are made upstream: delete them there
            size = _out_channels(graph, layer)
            for root, deleted in upstream_jobs(graph, layer, _normalize(ref, channels, size)):
                _add_root(graph, roots, root, deleted, repr(ref) + f" (through {root!r})")
            continue
        if layer.class_name not in ROOTS:
            raise KgraftError(f"delete-channels: {ref!r} is a {layer.class_name}; channels can be deleted from "
                              f"{', '.join(sorted(ROOTS.keys() | DEPTHWISE))} layers.")
        _add_root(graph, roots, layer.name, _normalize(ref, channels, layer.config[ROOTS[layer.class_name]]), repr(ref))
    plan = ChannelPlan(graph)
    seen: dict[str, tuple] = {}  # layer -> input masks at its first call site (shared layers)
    for node in graph.nodes():
        layer = graph.layers[node.layer]
        incoming = [(ref, plan.masks[ref]) for _, ref in node.operands() if ref in plan.masks]
        if not incoming and layer.name not in roots:
            continue
        signature = tuple((i, m) for i, (_, ref) in enumerate(node.operands()) for m in [plan.masks.get(ref)])
        first = layer.name not in seen
        if not first and seen[layer.name] != signature:
            raise KgraftError(f"delete-channels: layer {layer.name!r} is shared, and its call sites would lose "
                              "different channels; one set of weights cannot fit both")
        seen[layer.name] = signature
        out = _through(plan, node, layer, incoming, first) if incoming else None
        if layer.name in roots:
            out = _root(plan, node, layer, roots[layer.name], first)
        if out is not None:
            plan.masks[ValueRef(node.id)] = out
    for i, ref in enumerate(graph.outputs):
        if ref in plan.masks:
            plan.trimmed_outputs[i] = plan.masks[ref]
    return plan


def _add_root(graph: Graph, roots: dict, name: str, deleted: frozenset, what: str) -> None:
    size = graph.layers[name].config[ROOTS[graph.layers[name].class_name]]
    roots[name] = roots.get(name, frozenset()) | deleted
    if len(roots[name]) >= size:
        raise KgraftError(f"delete-channels: deleting channels {sorted(roots[name])} of {what} would leave "
                          f"none of its {size}; delete the branch instead (delete_layer / extract)")


def _out_channels(graph: Graph, layer) -> int:
    shape = graph.call_sites(layer.name)[0].outputs[0].shape
    if shape is None:
        raise KgraftError(f"delete-channels: the output type of {layer.name!r} is unknown, so its channels cannot "
                          "be counted; delete them from the layer that makes them")
    return shape[channel_axis(layer, len(shape))]


def _normalize(ref: str, channels, size: int) -> frozenset:
    out = set()
    for c in channels:
        try:
            c = int(c)
        except (TypeError, ValueError):
            raise KgraftError(f"delete-channels: channel {c!r} of {ref!r} is not an index") from None
        if not -size <= c < size:
            raise KgraftError(f"delete-channels: {ref!r} has {size} channels (0..{size - 1}), not {c}")
        out.add(c % size)
    if not out:
        raise KgraftError(f"delete-channels: no channels given for {ref!r}")
    return frozenset(out)


def _rank(graph: Graph, ref: ValueRef) -> int | None:
    shape = graph.value_type(ref).shape
    return None if shape is None else len(shape)


def _step(plan: ChannelPlan, layer: str, weight: str, axis: int, keep, first: bool) -> None:
    if first:
        plan.steps.setdefault(layer, []).append(Take(weight, axis, tuple(keep)))


def _root(plan: ChannelPlan, node, layer, deleted: frozenset, first: bool) -> Channels:
    size = layer.config[ROOTS[layer.class_name]]
    out = Channels(0, size, deleted)  # axis set below
    keep = out.keep()
    kernel = "pointwise_kernel" if layer.class_name.startswith("Separable") else "kernel"
    _step(plan, layer.name, kernel, -1, keep, first)
    if layer.config.get("use_bias", True):
        _step(plan, layer.name, "bias", 0, keep, first)
    plan.configs[layer.name] = {ROOTS[layer.class_name]: len(keep)}
    if node.outputs[0].shape is None:
        raise _refuse(plan, node, layer, " (its output type is unknown)")
    rank = len(node.outputs[0].shape)
    axis = rank - 1 if layer.class_name == "Dense" else channel_axis(layer, rank)
    return replace(out, axis=axis)


def _refuse(plan: ChannelPlan, node, layer, why: str = "") -> KgraftError:
    name = plan.graph.value_name(ValueRef(node.id)) if len(node.outputs) == 1 else node.id
    return KgraftError(
        f"delete-channels: cannot follow the deleted channels through {name!r} ({layer.class_name}){why}. They can "
        "pass per-channel layers, activations, pooling, padding, Flatten, element-wise merges and Concatenate, and "
        "end in Conv*/Dense/SeparableConv layers; delete channels of another layer, or change the model first.")


def _through(plan: ChannelPlan, node, layer, incoming, first: bool) -> Channels | None:
    """The deleted channels of this call site's output (None where a mixing layer absorbs them)."""
    cls, cfg, g = layer.class_name, layer.config, plan.graph
    if cls in MERGES or cls == "Concatenate":
        return _merge(plan, node, layer, incoming)
    if len(incoming) != 1 or len(node.outputs) != 1:
        raise _refuse(plan, node, layer, " (several tensors)")
    ref, mask = incoming[0]
    rank = _rank(g, ref)
    keep = mask.keep()
    if cls in ("Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose",
               "Conv2DTranspose", "Conv3DTranspose", "Dense"):
        axis = rank - 1 if cls == "Dense" else channel_axis(layer, rank)
        if mask.axis != axis:
            raise _refuse(plan, node, layer, " (it mixes another axis)")
        if cfg.get("groups", 1) != 1:
            raise _refuse(plan, node, layer, f" (groups={cfg.get('groups')})")
        rows = sorted(mask.deleted)
        if cls.startswith("Separable"):
            mult = cfg.get("depth_multiplier", 1)
            _step(plan, layer.name, "depthwise_kernel", -2, keep, first)
            _step(plan, layer.name, "pointwise_kernel", -2, _expand(keep, mult), first)
            plan.zeroed[layer.name] = [("pointwise_kernel", -2, _expand(rows, mult))]
        else:
            in_axis = 0 if cls == "Dense" else (-1 if cls.endswith("Transpose") else -2)
            _step(plan, layer.name, "kernel", in_axis, keep, first)
            plan.zeroed[layer.name] = [("kernel", in_axis, rows)]
        _touch(plan, layer)
        return None
    out = mask
    if cls == "BatchNormalization":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if not isinstance(axis, int) or axis % rank != mask.axis:
            raise _refuse(plan, node, layer, " (it normalizes another axis)")
        names = ["gamma"] * bool(cfg.get("scale", True)) + ["beta"] * bool(cfg.get("center", True))
        for name in names + ["moving_mean", "moving_variance"]:
            _step(plan, layer.name, name, 0, keep, first)
    elif cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        if mask.axis != channel_axis(layer, rank):
            raise _refuse(plan, node, layer, " (its channel axis differs)")
        mult = cfg.get("depth_multiplier", 1)
        _step(plan, layer.name, "kernel", -2, keep, first)
        if cfg.get("use_bias", True):
            _step(plan, layer.name, "bias", 0, _expand(keep, mult), first)
        out = Channels(mask.axis, mask.size * mult, frozenset(_expand(sorted(mask.deleted), mult)))
    elif cls == "PReLU":
        shared = {a % rank for a in (cfg.get("shared_axes") or [])}
        if mask.axis not in shared:
            _step(plan, layer.name, "alpha", mask.axis - 1, keep, first)
    elif cls == "Activation":
        if cfg.get("activation") in MIXING_ACTIVATIONS and mask.axis == rank - 1:
            raise _refuse(plan, node, layer, f" ({cfg.get('activation')} mixes the channels)")
    elif cls == "Softmax":
        axis = cfg.get("axis", -1)
        if any(a % rank == mask.axis for a in (axis if isinstance(axis, list) else [axis])):
            raise _refuse(plan, node, layer, " (it mixes the channels)")
    elif cls in SPATIAL:
        if mask.axis != channel_axis(layer, rank):
            raise _refuse(plan, node, layer, " (its channel axis differs)")
    elif cls in GLOBAL:
        if mask.axis != channel_axis(layer, rank):
            raise _refuse(plan, node, layer, " (its channel axis differs)")
        if not cfg.get("keepdims", False):
            out = replace(mask, axis=1)
    elif cls == "Flatten":
        out = _flatten(plan, node, layer, ref, mask)
    elif cls not in ELEMENTWISE:
        raise _refuse(plan, node, layer)
    _touch(plan, layer)
    return out


def _merge(plan: ChannelPlan, node, layer, incoming) -> Channels:
    g = plan.graph
    operands = [ref for _, ref in node.operands()]
    rank = _rank(g, operands[0])
    if layer.class_name == "Concatenate" and layer.config.get("axis", -1) % rank == incoming[0][1].axis:
        axis, offset, deleted = incoming[0][1].axis, 0, set()
        for ref in operands:
            mask = plan.masks.get(ref)
            size = mask.size if mask else (g.value_type(ref).shape or [None] * rank)[axis]
            if size is None:
                raise _refuse(plan, node, layer, f" ({g.value_name(ref)!r} has an unknown channel count)")
            if mask and mask.axis != axis:
                raise _refuse(plan, node, layer, " (operands carry channels on different axes)")
            deleted |= {offset + d for d in (mask.deleted if mask else ())}
            offset += size
        _touch(plan, layer)
        return Channels(axis, offset, frozenset(deleted))
    masks = [plan.masks.get(ref) for ref in operands]
    if any(m != masks[0] for m in masks):
        lost = "; ".join(f"{g.value_name(r)} loses " + (str(sorted(m.deleted)) if m else "none")
                         for r, m in zip(operands, masks))
        raise _refuse(plan, node, layer, f": every operand must lose the same channels ({lost}); delete the "
                      "same channels from the layers that feed each operand, in one call")
    _touch(plan, layer)
    return masks[0]


def _flatten(plan: ChannelPlan, node, layer, ref: ValueRef, mask: Channels) -> Channels:
    shape = plan.graph.value_type(ref).shape
    if shape is None or any(d is None for d in shape[1:]):
        raise _refuse(plan, node, layer, " (its input size is not fixed)")
    channel = np.indices(shape[1:])[mask.axis - 1]
    if layer.config.get("data_format") == "channels_first" and len(shape) > 2:
        channel = np.moveaxis(channel, 0, -1)  # Keras flattens channels-first inputs as channels-last
    flat = channel.reshape(-1)
    return Channels(1, flat.size, frozenset(np.flatnonzero(np.isin(flat, list(mask.deleted))).tolist()))


def _expand(channels, mult: int) -> list[int]:
    return [c * mult + m for c in channels for m in range(mult)]


def _touch(plan: ChannelPlan, layer) -> None:
    """``layer`` reads fewer channels: its recorded build shape goes (see :func:`apply_plan`)."""
    plan.configs.setdefault(layer.name, {})


def apply_plan(plan: ChannelPlan) -> Graph:
    """The graph with the plan's configs, weight steps and new value types."""
    graph = plan.graph.copy()
    for name, updates in plan.configs.items():
        layer = unbuilt(graph.layers[name])
        steps = tuple(plan.steps.get(name, ()))
        graph.set_layer(replace(layer, spec={**layer.spec, "config": {**layer.config, **updates}},
                                weight_plan=layer.weight_plan + steps))
    for value, mask in plan.masks.items():
        node = graph.node(value.node)
        ttype = node.outputs[value.index]
        if ttype.shape is not None:
            shape = list(ttype.shape)
            shape[mask.axis] = mask.size - len(mask.deleted)
            types = list(node.outputs)
            types[value.index] = replace(ttype, shape=tuple(shape))
            graph.replace_node(replace(node, outputs=tuple(types)))
    return graph


def _jobs(ref: Any, channels: Any) -> list[tuple[str, list]]:
    refs = [ref] if isinstance(ref, str) else list(ref)
    if len(refs) == 1 and (not channels or not isinstance(channels[0], (list, tuple))):
        return [(refs[0], list(channels))]
    if len(refs) != len(channels) or not all(isinstance(c, (list, tuple)) for c in channels):
        raise KgraftError(f"delete-channels: {len(refs)} layers need {len(refs)} channel lists, e.g. "
                          "delete-channels{ref=[c1,c2],channels=[[0],[1,2]]}")
    return [(r, list(c)) for r, c in zip(refs, channels)]


@register
@dataclass(frozen=True)
class DeleteChannels(Pass):
    """Delete ``channels`` of layer ``ref`` (or of each layer of a list) and follow them downstream."""

    name: ClassVar[str] = "delete-channels"
    ref: Any = ""
    channels: list = field(default_factory=list)

    def apply(self, graph: Graph) -> Graph:
        if not self.ref:
            raise KgraftError("delete-channels needs ref=<layer> and channels=[...], e.g. "
                              "delete-channels{ref=conv1,channels=[0,3]}")
        chain, plan = plan_nested(graph, _jobs(self.ref, self.channels))
        return edit_at(graph, chain, lambda _: apply_plan(plan))
