"""The checks the surgery functions promise (``check=True``), kept apart from the operations.

Until kgraft has one shared equivalence check, these run a source model (or a reference made from
it) and a result on the same random probe inputs and raise :class:`~kgraft.EquivalenceError`
naming the first output that differs. NaN-strict: a NaN where the other model has a number is a
difference. Tolerances are relative to the output's scale (``tol * max(1, max |reference|)``).
"""

from __future__ import annotations

import numpy as np

from .ir import EquivalenceError

__all__ = ["probe_inputs", "compare_outputs"]


def probe_inputs(model, like=None, batch: int = 2, seed: int = 0):
    """Random inputs for ``model`` (free dimensions taken from ``like``'s inputs, else 8); integer
    inputs get ids below the smallest Embedding's ``input_dim``."""
    import keras

    rng = np.random.default_rng(seed)
    vocab = min([layer.input_dim for layer in _all_layers(model) if isinstance(layer, keras.layers.Embedding)] or [10])
    shapes = [tuple(t.shape) for t in (like if like is not None else model).inputs]
    arrays = []
    for tensor, fallback in zip(model.inputs, shapes):
        shape = tuple(batch if i == 0 else (d if d is not None else (fallback[i] or 8))
                      for i, d in enumerate(tensor.shape))
        dtype = str(tensor.dtype)
        if "int" in dtype:
            arrays.append(rng.integers(0, vocab, size=shape).astype(dtype))
        elif dtype == "bool":
            arrays.append(rng.random(shape) < 0.5)
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _numpy(outputs) -> list[np.ndarray]:
    import keras

    flat = keras.tree.flatten(outputs)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in flat]


def compare_outputs(what: str, reference, result, inputs, names: list[str], tol: float = 1e-5,
                    trim: dict | None = None) -> float:
    """Run both models on ``inputs`` (inference mode) and raise ``EquivalenceError`` at the first
    output (named by ``names``) that differs by more than ``tol`` relative; ``trim`` maps an output
    index to ``(axis, channels)`` deleted from the reference's output first. Returns the worst
    relative difference."""
    expected, got = _numpy(reference(inputs, training=False)), _numpy(result(inputs, training=False))
    worst = 0.0
    for i, (a, b) in enumerate(zip(expected, got)):
        name = names[i] if i < len(names) else f"output {i}"
        if trim and i in trim:
            axis, channels = trim[i]
            a = np.delete(a, sorted(channels), axis=axis)
        if a.shape != b.shape:
            raise EquivalenceError(f"{what}: output {name} has shape {b.shape}, expected {a.shape}")
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            raise EquivalenceError(f"{what}: output {name} is NaN where the reference is not (or the reverse)")
        a64, b64 = np.nan_to_num(a.astype(np.float64)), np.nan_to_num(b.astype(np.float64))
        scale = max(1.0, float(np.max(np.abs(a64)))) if a64.size else 1.0
        diff = float(np.max(np.abs(a64 - b64))) / scale if a64.size else 0.0
        if diff > tol:
            raise EquivalenceError(f"{what}: output {name} differs from the reference by {diff:.3e} "
                                   f"(max abs difference relative to its scale {scale:.3g}; tolerance {tol:g}). "
                                   "This is a kgraft bug: please report it with the model; check=False skips "
                                   "the check.")
        worst = max(worst, diff)
    return worst
