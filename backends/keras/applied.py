"""Keras layers given by a user, applied to fresh inputs and lowered: the templates that
``add-head``, ``insert-layer`` and ``replace-layer`` take as IR graphs."""

from __future__ import annotations

from typing import Any

from ...ir import Graph, KgraftError, TensorType

__all__ = ["lower_applied"]


def lower_applied(layers: Any, in_types: list[TensorType], what: str, role: str = "layers") -> Graph:
    """``layers`` (a Keras layer, a list applied in sequence, or a callable KerasTensor(s) ->
    KerasTensor(s)) applied to new ``keras.Input``s of ``in_types`` (one tensor, or a list when
    there are several), lowered. ``role`` names them in errors (``head``, ``new layers``)."""
    import keras

    from .load import lower

    for t in in_types:
        if t.shape is None:
            raise KgraftError(f"{what}: the tensor's type is unknown ({t}), so the {role} cannot be built")
    xs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in in_types]
    x = xs[0] if len(xs) == 1 else xs
    if isinstance(layers, keras.layers.Layer):
        y = layers(x)
    elif isinstance(layers, (list, tuple)) and all(isinstance(layer, keras.layers.Layer) for layer in layers):
        y = x
        for layer in layers:
            y = layer(y)
    elif callable(layers):
        y = layers(x)
    else:
        raise KgraftError(f"{what}: {role} must be a Keras layer, a list of layers or a callable "
                          f"(KerasTensor -> KerasTensor), got {type(layers).__name__}")
    try:
        return lower(keras.Model(xs, y))
    except KgraftError:
        raise
    except Exception as e:
        raise KgraftError(f"{what}: the {role} do not form a model on {', '.join(map(str, in_types))}: {e}") from None
