"""What each surgery promises (``check=True``), proven with the shared equivalence check.

Every comparison is :func:`kgraft.equivalence.check_model` (probe inputs, NaN-strict difference
relative to the output's scale, the first differing tensor named); this module only says what
must equal what:

* :func:`check_equal` (``rename``, ``fold_batchnorm``, ``set_input_shape`` at the old shape): the
  result's outputs are the source's;
* :func:`check_upstream` (``delete_layer``, ``insert_layer``, ``replace_layer``): the result, cut
  at the tensors that feed the change and at the outputs the change does not reach, gives the
  source's values there;
* :func:`check_channels` (``delete_channels``): the result equals the reference, the source in
  which the weights reading the deleted channels are zero, its outputs that lose channels
  trimmed to the kept ones.
"""

from __future__ import annotations

import numpy as np

from . import passes
from .equivalence import check_model
from .ir import Graph, RefError

__all__ = ["check_equal", "check_upstream", "check_channels"]


def check_equal(what: str, graph: Graph, built, rtol: float | None = None) -> None:
    """``built`` computes what ``graph``'s source computes (within ``rtol`` relative)."""
    check_model(graph.meta["source"], built, graph=graph, what=what, rtol=rtol)


def check_upstream(what: str, source: Graph, result: Graph, frontier: list[str], changed: set[str]) -> None:
    """Every tensor feeding the change (``frontier``, refs of the source) is unchanged in ``result``,
    and so is every model output that no changed top-level call site (``changed``) reaches."""
    reached = source.reach(changed)
    refs = list(frontier) + [source.value_name(r) for r in source.outputs if r.node not in reached]
    inputs = {source.node(i).layer for i in source.inputs}
    refs = [r for r in dict.fromkeys(refs) if r not in inputs]
    if not refs:
        return
    from .backends.keras import build

    try:
        cut = build(passes.extract(result, outputs=refs))
    except RefError:
        return  # a tensor inside a nested model that is called more than once has no single ref
    check_model(source.meta["source"], cut, outputs=refs, graph=source, what=what)


def check_channels(source: Graph, chain: tuple[str, ...], plan, built) -> None:
    """``built`` equals the zeroed-weights reference of the delete-channels ``plan`` (made for the
    model at ``chain`` of ``source``)."""
    import keras

    from .backends.keras import build
    from .passes.surgery_sites import edit_at

    reference = build(edit_at(source, chain, lambda _: plan.graph))
    planned = reference
    for name in chain:
        planned = planned.get_layer(name)
    for layer_name, zeroed in plan.zeroed.items():
        _zero(planned.get_layer(layer_name), zeroed)
    outputs = keras.tree.flatten(reference.outputs)
    for i, mask in plan.trimmed_outputs.items():
        outputs[i] = keras.ops.take(outputs[i], list(mask.keep()), axis=mask.axis)
    if plan.trimmed_outputs:
        reference = keras.Model(reference.inputs, outputs[0] if len(outputs) == 1 else outputs, name=reference.name)
    check_model(reference, built, what="delete_channels")


def _zero(layer, zeroed: list) -> None:
    by_name = {v.name: v for v in layer.weights}
    for name, axis, rows in zeroed:
        value = np.array(by_name[name].numpy())
        index = [slice(None)] * value.ndim
        index[axis] = list(rows)
        value[tuple(index)] = 0
        by_name[name].assign(value)
