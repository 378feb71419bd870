"""Apply ``Layer.weight_plan`` (see :mod:`kgraft.ir.weight_plan`) while copying weights.

``copy_weights`` hands a layer with a plan to :func:`copy_planned_weights`: the source variables
are read by name, each step transforms them in numpy, and the results are assigned to the
rebuilt layer's variables of the same names. Weights that do not fit the rebuilt layer, with or
without a plan, raise :func:`shape_error` (a :class:`~kgraft.ShapeError` naming the layer, its
old and new input types, and what to do).
"""

from __future__ import annotations

import numpy as np

from ...ir import Layer, ShapeError
from ...ir.weight_plan import FoldBatchNorm, Take

__all__ = ["copy_planned_weights", "planned_values", "shape_error"]


def planned_values(layer: Layer) -> dict[str, np.ndarray]:
    """The layer's weights after its plan, by variable name (source variables from its handle)."""
    values = _values(layer.handle)
    for step in layer.weight_plan:
        if isinstance(step, Take):
            values[step.weight] = np.take(values[step.weight], list(step.keep), axis=step.axis)
        elif isinstance(step, FoldBatchNorm):
            _fold(values, step)
        else:  # a plan made by a newer kgraft
            raise TypeError(f"unknown weight plan step {type(step).__name__}")
    return values


def _values(keras_layer) -> dict[str, np.ndarray]:
    # a tf_keras variable is named "dense/kernel:0", a Keras 3 one "kernel"
    return {v.name.split("/")[-1].split(":")[0]: np.asarray(v.numpy()) for v in keras_layer.weights}


def _fold(values: dict[str, np.ndarray], step: FoldBatchNorm) -> None:
    bn = planned_values(step.bn) if step.bn.weight_plan else _values(step.bn.handle)
    cfg = step.bn.config
    mean, var = bn["moving_mean"].astype(np.float64), bn["moving_variance"].astype(np.float64)
    gamma = bn["gamma"].astype(np.float64) if cfg.get("scale", True) else np.ones_like(mean)
    beta = bn["beta"].astype(np.float64) if cfg.get("center", True) else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + cfg.get("epsilon", 1e-3))
    kernel = values["kernel"]
    flat = kernel.reshape(kernel.shape[: kernel.ndim - step.out_axes] + (-1,)).astype(np.float64)
    bias = values.get("bias", np.zeros(flat.shape[-1], kernel.dtype)).astype(np.float64)
    values["kernel"] = (flat * scale).reshape(kernel.shape).astype(kernel.dtype)
    values["bias"] = ((bias - mean) * scale + beta).astype(kernel.dtype)


def copy_planned_weights(layer: Layer, target) -> None:
    """Assign the planned weights of ``layer`` to the rebuilt Keras layer ``target``."""
    values = planned_values(layer)
    names = [v.name for v in target.weights]
    if sorted(names) != sorted(values) or any(values[v.name].shape != tuple(v.shape) for v in target.weights):
        raise shape_error(layer, target, [values[n].shape if n in values else None for n in names])
    for var in target.weights:
        var.assign(values[var.name])


def shape_error(layer: Layer, target, source_shapes=None) -> ShapeError:
    """The weights of ``layer`` do not fit the rebuilt ``target``: say where and why."""
    if source_shapes is None:
        source_shapes = [tuple(v.shape) for v in layer.handle.weights]
    old, new = _input_type(layer.handle), _input_type(target)
    if old == new and not layer.weight_plan and _config_is_the_sources(layer):  # the config is incomplete
        return ShapeError(
            f"layer {layer.qualified_name!r} ({layer.class_name}): its weights (shapes "
            f"{[tuple(s) if s is not None else None for s in source_shapes]}) do not fit the layer Keras rebuilds "
            f"from its config (shapes {[tuple(v.shape) for v in target.weights]}), though its input type is "
            f"unchanged ({old}): its get_config() omits a constructor argument that decides its weights. Add it "
            f"to {layer.class_name}.get_config().")
    return ShapeError(
        f"layer {layer.qualified_name!r} ({layer.class_name}): its weights (shapes "
        f"{[tuple(s) if s is not None else None for s in source_shapes]}) do not fit the rebuilt layer "
        f"(shapes {[tuple(v.shape) for v in target.weights]}): its input type was {old} and is now {new}. "
        "Keep the dimensions this layer reads (e.g. the channels of its input), or replace it with a "
        "new layer that is trained again (kgraft.replace_layer(model, ref, new_layer, copy_weights=False))."
    )


def _config_is_the_sources(layer: Layer) -> bool:
    """Whether ``layer``'s config is what its source layer writes (no surgery changed it)."""
    import json

    import keras

    def canonical(config: dict) -> str:
        return json.dumps({k: v for k, v in config.items() if k != "name"}, sort_keys=True, default=str)

    try:
        live = keras.saving.serialize_keras_object(layer.handle)["config"]
        return canonical(json.loads(json.dumps(live, default=str))) == canonical(layer.config)
    except Exception:
        return False


def _input_type(layer) -> str:
    """``f32[?,224,224,3]`` for the first call of a Keras layer ("unknown" when it has none)."""
    from ...ir import TensorType

    nodes = getattr(layer, "_inbound_nodes", None) or []
    tensors = nodes[0].input_tensors if nodes else []
    if not tensors:
        return "unknown"
    return ", ".join(str(TensorType(tuple(t.shape), str(t.dtype))) for t in tensors)
