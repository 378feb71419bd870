"""Model surgery at the Keras level: delete, insert and replace layers, set the input shape,
rename, fold BatchNorm, delete channels.

Each function lowers the model, runs one surgery pass (:mod:`kgraft.passes`), builds a new
``keras.Model`` with the weights copied (and transformed where the pass planned it), and, with
``check=True``, proves what the operation promises before returning (:mod:`kgraft.surgery_check`):

* ``rename``, ``fold_batchnorm``, ``set_input_shape`` (at the old shape, where it still fits):
  the same outputs as the source;
* ``delete_channels``: the same outputs as the source in which the weights that read the deleted
  channels are zero (minus the deleted channels, for outputs that lose them);
* ``delete_layer``, ``insert_layer``, ``replace_layer``: every tensor that feeds the change, and every
  output the change does not reach, unchanged.

The argument is never mutated.
"""

from __future__ import annotations

from typing import Callable

from . import passes
from .backends.keras import build, lower
from .backends.keras.applied import lower_applied
from .ir import Graph, KgraftError, ShapeError
from .ir.refs import resolve
from .ir.tree import iter_refs
from .passes.surgery_sites import Site, layer_sites, locate
from .surgery_check import check_channels, check_equal, check_upstream

__all__ = ["delete_layer", "insert_layer", "replace_layer", "set_input_shape", "rename", "fold_batchnorm",
           "delete_channels"]


def delete_layer(model, ref: str, custom_objects: dict | None = None, check: bool = True):
    """Remove layer ``ref`` (all its call sites; ``name@k`` for one) whose output type is its
    input's; its consumers then read its input. Refs into nested models work."""
    graph = lower(model, custom_objects)
    site = locate(graph, ref)
    g, _, calls = layer_sites(graph, site, "delete_layer")
    frontier = _qualified(site, _feeding(g, calls))
    result = passes.delete_layer(graph, ref=ref)
    return _finish("delete_layer", graph, result, check and _upstream(frontier, _changed(graph, site, calls)))


def insert_layer(model, at: str, layers, custom_objects: dict | None = None, check: bool = True):
    """Apply ``layers`` (a layer, a list applied in sequence, or a callable KerasTensor ->
    KerasTensor) to tensor ``at``; every consumer of ``at`` (and a model output at ``at``) then
    uses the result."""
    graph = lower(model, custom_objects)
    site = locate(graph, at)
    g = site.graph(graph)
    value = resolve(g, site.ref)
    template = lower_applied(layers, [g.value_type(value)], "insert_layer", "new layers")
    result = passes.insert_layer(graph, at=at, layers=template)
    users = [g.node(u) for u, out, _ in g.uses(value.node) if out == value.index]
    changed = _changed(graph, site, users) | ({value.node} if value in graph.outputs else set())
    return _finish("insert_layer", graph, result, check and _upstream(_qualified(site, [site.ref]), changed))


def replace_layer(model, target, new, copy_weights: bool = True, custom_objects: dict | None = None,
                  check: bool = True):
    """Put ``new`` in the place of ``target``: a ref (that layer, all its call sites) or a layer
    class (every layer of that class, nested models included). ``new`` is a layer (a copy per
    target when there are several) or a callable ``old_layer -> new_layer``. With
    ``copy_weights``, the old weights go into the new layer (a ``ShapeError`` if they do not fit);
    the new layer keeps the old name."""
    import keras

    graph = lower(model, custom_objects)
    target_text = target if isinstance(target, str) else getattr(target, "__name__", None)
    if not isinstance(target_text, str):
        raise KgraftError(f"replace_layer: target must be a layer ref or a layer class, got {type(target).__name__}")
    from .passes.replace_layer import targets_of

    targets = targets_of(graph, target_text)
    templates, frontier, changed, has_weights = {}, [], set(), False
    for chain, name in targets:
        g = Site(chain, name).graph(graph)
        layer = g.layers[name]
        calls = g.call_sites(name)
        if callable(new) and not isinstance(new, keras.layers.Layer):
            made = new(layer.handle)
        elif isinstance(new, keras.layers.Layer):
            made = new if len(targets) == 1 else new.__class__.from_config(new.get_config())
        else:
            raise KgraftError(f"replace_layer: new must be a Keras layer or a callable old_layer -> new_layer, "
                              f"got {type(new).__name__}")
        if not isinstance(made, keras.layers.Layer):
            raise KgraftError(f"replace_layer: the callable returned {type(made).__name__} for "
                              f"{layer.qualified_name!r}, not a Keras layer")
        operands = calls[0].args
        templates[layer.qualified_name] = _lower_call(made, g, operands)
        frontier += _qualified(Site(chain, ""), _feeding(g, calls))
        changed |= _changed(graph, Site(chain, name), calls)
        has_weights |= bool(layer.handle is not None and layer.handle.weights)
    result = passes.replace_layer(graph, target=target_text, new=templates, copy_weights=copy_weights and has_weights)
    return _finish("replace_layer", graph, result, check and _upstream(frontier, changed))


def set_input_shape(model, shape, input: str | None = None, custom_objects: dict | None = None,
                    check: bool = True):
    """The same graph and weights for a new input shape (no batch dimension; ``None`` for free
    dimensions). Checked equal to the source at the old shape when the new one admits it."""
    graph = lower(model, custom_objects)
    result = passes.set_input_shape(graph, shape=list(shape), input=input)
    try:
        built = build(result)
    except ShapeError:
        raise
    except KgraftError as e:
        raise ShapeError(f"set_input_shape: with input shape {list(shape)} the model no longer builds: {e}. "
                         "Keep the sizes the layers after the input depend on (a Flatten before a Dense "
                         "fixes the spatial size), or replace those layers.") from None
    if check:
        src_model = graph.meta["source"]
        old = [tuple(t.shape) for t in src_model.inputs]
        new = [tuple(t.shape) for t in built.inputs]
        fits = all(len(o) == len(n) and all(b is None or a == b for a, b in zip(o[1:], n[1:]))
                   for o, n in zip(old, new))
        if fits:
            check_equal("set_input_shape", graph, built)
    return built


def rename(model, names, custom_objects: dict | None = None, check: bool = True):
    """New layer names: ``names`` is a prefix, a dict old -> new (names or qualified paths), or a
    callable ``old name -> new name`` (``None`` keeps it); nested models' layers included."""
    graph = lower(model, custom_objects)
    if isinstance(names, str):
        result = passes.rename(graph, prefix=names)
    elif isinstance(names, dict):
        result = passes.rename(graph, names=dict(names))
    elif callable(names):
        table = {}
        _each_layer(graph, lambda layer: table.setdefault(layer.qualified_name, names(layer.name)))
        table = {k: v for k, v in table.items() if v}
        if names(graph.name):
            table.setdefault(graph.name, names(graph.name))
        result = passes.rename(graph, names=table) if table else graph.copy()
    else:
        raise KgraftError(f"rename: names must be a prefix string, a dict or a callable, got {type(names).__name__}")
    return _finish("rename", graph, result, check and _equal())


def fold_batchnorm(model, custom_objects: dict | None = None, check: bool = True):
    """Fold each inference-mode BatchNormalization whose input comes only from a Conv1D/2D/3D,
    DepthwiseConv2D or Dense into that layer's kernel and bias (equal in inference, 1e-4 relative)."""
    graph = lower(model, custom_objects)
    return _finish("fold_batchnorm", graph, passes.fold_batchnorm(graph), check and _equal(1e-4))


def delete_channels(model, ref, channels=None, custom_objects: dict | None = None, check: bool = True):
    """Remove output ``channels`` of layer ``ref`` and the matching input channels of what reads
    them. Several layers at once (one rebuild): ``ref`` a dict ``{ref: channels}``, or a list of
    refs with ``channels`` a list of lists."""
    from .ir import verify
    from .passes.delete_channels import _jobs, apply_plan, plan_nested
    from .passes.surgery_sites import edit_at

    graph = lower(model, custom_objects)
    jobs = list(ref.items()) if isinstance(ref, dict) else _jobs(ref, list(channels or []))
    chain, plan = plan_nested(graph, jobs)  # what the delete-channels pass does, keeping the plan for the check
    built = build(verify(edit_at(graph, chain, lambda _: apply_plan(plan))))
    if check:
        check_channels(graph, chain, plan, built)
    return built


# ---------------------------------------------------------------------------- helpers
def _finish(what: str, source: Graph, result: Graph, check: Callable | bool):
    built = build(result)
    if check:
        check(what, source, result, built)
    return built


def _equal(rtol: float | None = None) -> Callable:
    return lambda what, source, result, built: check_equal(what, source, built, rtol)


def _upstream(frontier: list[str], changed: set[str]) -> Callable:
    return lambda what, source, result, built: check_upstream(what, source, result, frontier, changed)


def _feeding(graph: Graph, calls) -> list[str]:
    """Refs of the tensors that feed ``calls`` and do not depend on them (a shared layer's later
    call site may read what its first one changed)."""
    after = graph.reach(c.id for c in calls)
    return [graph.value_name(r) for c in calls for _, r in c.operands() if r.node not in after]


def _changed(graph: Graph, site: Site, calls) -> set[str]:
    """The top-level call sites a change at ``site`` (to ``calls``) alters: the calls themselves, or
    the calls of the outermost nested model that holds them."""
    if site.chain:
        return {c.id for c in graph.call_sites(site.chain[0])}
    return {c.id for c in calls}


def _qualified(site: Site, names: list[str]) -> list[str]:
    return ["/".join(site.chain + (n,)) for n in names]


def _each_layer(graph: Graph, fn) -> None:
    for layer in graph.layers.values():
        fn(layer)
        if layer.body is not None:
            _each_layer(layer.body, fn)


def _lower_call(layer, graph: Graph, args: list) -> Graph:
    """``layer`` called like the old call site (one tensor, or a list of tensors), lowered."""
    types = [graph.value_type(r) for _, r in iter_refs(args)]
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return lower_applied(lambda xs: layer(list(xs) if isinstance(xs, list) else [xs]), types, "replace_layer",
                             "new layer")
    return lower_applied(layer, types, "replace_layer", "new layer")
