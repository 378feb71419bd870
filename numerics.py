"""Every numeric comparison and every probe input kgraft makes, in one place.

* :func:`probe_inputs` makes inputs from a model's IR input types that exercise what the model
  really does: integer ids inside the range of every Embedding (or other id-consuming layer) they
  reach, padded sequences (trailing padding, a different length per row) wherever a mask is
  produced, strings from a lookup vocabulary. Random floats alone would leave masks, vocabularies
  and most of an embedding table unexercised, so a model that lost them would still compare equal.
* :func:`max_abs_diff` is NaN-strict: a NaN anywhere, an inf where the other side has something
  else, or a shape or structure mismatch makes the difference ``inf``, so a broken model never
  compares equal (``np.nanmax`` would report 0.0 for an all-NaN output).
* :func:`tolerance` / :func:`assert_close`: the project rule, a max abs difference of at most
  ``1e-5`` for float32 (looser for half precision), relative to the output's scale.

Imports numpy only; a graph comes from ``kgraft.lower`` (or anything with the same interface).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Layer, ValueRef

__all__ = ["probe_inputs", "rows_needed", "flatten_outputs", "max_abs_diff", "scale", "tolerance", "close", "assert_close",
           "SMALL_DIM", "RTOL"]

SMALL_DIM = 3  # what an unknown (None) non-batch dimension becomes
FREE_INT_HIGH = 5  # integer inputs that reach no id-consuming layer get ids in [0, 5)
RTOL = {"float16": 1e-3, "bfloat16": 1e-2}  # else 1e-5 (float32 and wider)
DEFAULT_RTOL = 1e-5

# layers that hand ids (or the values to be masked) on unchanged, so the consumer after them decides
_PASS_THROUGH = {"Reshape", "Flatten", "Permute", "RepeatVector", "Cropping1D", "Identity", "Cast", "Concatenate",
                 "ZeroPadding1D", "Squeeze", "ExpandDims", "Transpose", "GetItem", "Slice", "StridedSlice",
                 "Masking", "Dropout", "SpatialDropout1D", "ActivityRegularization"}
# config keys that bound the integer ids a layer accepts: ids must lie in [0, bound)
_ID_BOUNDS = ("input_dim", "vocabulary_size", "num_tokens", "num_classes")
_LOOKUPS = {"StringLookup", "IntegerLookup", "TextVectorization"}


# ---------------------------------------------------------------------------- probe inputs
@dataclass
class _Needs:
    """What the layers an input reaches ask of its values."""

    bounds: list[int] = field(default_factory=list)
    vocabulary: list = field(default_factory=list)
    sentence_steps: int = 0  # TextVectorization: sentences of up to this many words
    pad_with: list = field(default_factory=list)  # values that mark a masked step (0, Masking's mask_value)


def probe_inputs(graph: Graph, batch: int = 2, seed: int = 0, small: int = SMALL_DIM) -> list[np.ndarray]:
    """One array per input of ``graph`` (in order), made from its type and the layers it reaches.

    Floats are standard normal. Integer ids lie in ``[0, n)`` for the smallest ``n`` any
    Embedding/CategoryEncoding/one_hot... they reach accepts (``[1, n)`` where 0 is padding), or
    in an IntegerLookup's vocabulary. Where a mask is produced (``mask_zero=True``, ``Masking``),
    each row is padded at the end to a different length (with 0 or the ``mask_value``). Strings
    come from a StringLookup/TextVectorization vocabulary (the config's, else the live layer's).
    An unknown batch dimension becomes ``batch``, other unknown dimensions ``small``.
    """
    types = [graph.value_type(ValueRef(i)) for i in graph.inputs]
    return _arrays([(t.shape, t.dtype) for t in types], [_needs(graph, ValueRef(i)) for i in graph.inputs],
                   batch, seed, small)


def typed_inputs(types: list[tuple], batch: int = 2, seed: int = 0, small: int = SMALL_DIM) -> list[np.ndarray]:
    """One array per ``(shape, dtype)`` (an ONNX manifest's inputs), as :func:`probe_inputs` makes
    them for inputs that reach no layer with demands: integers in ``[0, FREE_INT_HIGH)``."""
    return _arrays(types, [_Needs() for _ in types], batch, seed, small)


def _arrays(types: list[tuple], needs: list[_Needs], batch: int, seed: int, small: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for (dims, dtype), need in zip(types, needs):
        dims = dims or (None, None)
        shape = [batch if dims[0] is None else dims[0]] + [small if d is None else d for d in dims[1:]]
        arrays.append(_array(dtype or "float32", shape, need, rng))
    return arrays


def rows_needed(graph: Graph) -> int:
    """The fewest probe rows that exercise every input of ``graph``: 2 where sequences are padded
    (each row to a different length), else 1."""
    needs = [_needs(graph, ValueRef(i)) for i in graph.inputs]
    return 2 if any(n.pad_with or n.sentence_steps for n in needs) else 1


def _needs(graph: Graph, value: ValueRef) -> _Needs:
    """Follow ``value``'s uses through pass-through layers and nested models to the layers that
    constrain it."""
    needs = _Needs()
    stack, seen = [(graph, value)], set()
    while stack:
        g, v = stack.pop()
        if (id(g), v) in seen:
            continue
        seen.add((id(g), v))
        for user, out, _ in g.uses(v.node):
            if out != v.index:
                continue
            node = g.node(user)
            layer = g.layers[node.layer]
            if layer.body is not None:  # into the nested model, at the input this operand feeds
                position = [ref for _, ref in node.operands()].index(v)
                if position < len(layer.body.inputs):
                    stack.append((layer.body, ValueRef(layer.body.inputs[position])))
                continue
            _constrain(needs, layer)
            if layer.class_name in _PASS_THROUGH:
                stack.extend((g, ValueRef(user, i)) for i in range(len(node.outputs)))
    return needs


def _constrain(needs: _Needs, layer: Layer) -> None:
    config = layer.config
    if config.get("mask_zero"):
        needs.pad_with.append(0)
    if layer.class_name == "Masking":
        needs.pad_with.append(config.get("mask_value", 0.0))
    if layer.class_name in _LOOKUPS:
        needs.vocabulary = needs.vocabulary or _vocabulary(layer)
        if layer.class_name == "TextVectorization":
            needs.sentence_steps = needs.sentence_steps or int(config.get("output_sequence_length") or SMALL_DIM + 1)
        return
    needs.bounds.extend(int(config[k]) for k in _ID_BOUNDS if isinstance(config.get(k), int) and config[k] > 0)


def _vocabulary(layer: Layer) -> list:
    """The lookup's tokens (config, else the live layer), without its mask and OOV tokens."""
    vocab = layer.config.get("vocabulary")
    if not isinstance(vocab, list) and layer.handle is not None and hasattr(layer.handle, "get_vocabulary"):
        vocab = layer.handle.get_vocabulary()
    special = {layer.config.get("oov_token", "[UNK]"), layer.config.get("mask_token"), "", -1}
    return [t for t in (vocab if isinstance(vocab, list) else []) if t not in special]


def _lengths(steps: int, batch: int) -> np.ndarray:
    """Row lengths from ``steps`` down, all different while there are enough steps (4, 2 / 3, 2)."""
    return np.array([max(1, math.ceil(steps * (batch - i) / batch)) for i in range(batch)])


def _array(dtype: str, shape: list[int], needs: _Needs, rng: np.random.Generator) -> np.ndarray:
    pad = needs.pad_with[0] if needs.pad_with and len(shape) >= 2 else None
    if dtype == "string":
        return _strings(shape, needs, rng)
    np_dtype = np.dtype(dtype)
    if np_dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(np_dtype, np.integer):
        if needs.vocabulary:
            values = rng.choice(np.asarray(needs.vocabulary), size=shape)
        else:
            high = min(needs.bounds, default=FREE_INT_HIGH)
            low = 1 if pad is not None and high > 1 else 0
            values = rng.integers(low, high, size=shape)
        values = values.astype(np_dtype)
    else:
        values = rng.standard_normal(shape).astype(np_dtype)
    if pad is not None:
        for row, length in enumerate(_lengths(shape[1], shape[0])):
            values[row, length:] = pad
    return values


def _strings(shape: list[int], needs: _Needs, rng: np.random.Generator) -> np.ndarray:
    words = [str(w) for w in needs.vocabulary] or ["a", "b", "c"]
    size = int(np.prod(shape))
    if not needs.sentence_steps:
        return np.asarray(rng.choice(words, size=size)).reshape(shape)
    counts = _lengths(needs.sentence_steps, size)  # sentences of different lengths: padded sequences
    return np.array([" ".join(rng.choice(words, size=int(n))) for n in counts]).reshape(shape)


# ---------------------------------------------------------------------------- comparisons
def flatten_outputs(outputs) -> list[tuple[tuple, np.ndarray]]:
    """``[(key, array), ...]`` for a single tensor, a list/tuple or a dict (sorted keys) of outputs."""
    if isinstance(outputs, dict):
        return [((key,) + k, v) for key in sorted(outputs) for k, v in flatten_outputs(outputs[key])]
    if isinstance(outputs, (list, tuple)):
        return [((i,) + k, v) for i, item in enumerate(outputs) for k, v in flatten_outputs(item)]
    return [((), np.asarray(outputs))]


def max_abs_diff(a, b) -> float:
    """Max abs difference over all outputs (arrays, lists or dicts of them), NaN-strict.

    ``inf`` when the structures or shapes differ, when either side has a NaN, or where one side
    has an inf the other does not; equal infinities are equal. Non-numeric arrays (strings)
    differ by 0 or ``inf``.
    """
    flat_a, flat_b = flatten_outputs(a), flatten_outputs(b)
    if [k for k, _ in flat_a] != [k for k, _ in flat_b]:
        return math.inf
    return max((_array_diff(x, y) for (_, x), (_, y) in zip(flat_a, flat_b)), default=0.0)


def _array_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    if not a.size:
        return 0.0
    if not (_numeric(a) and _numeric(b)):
        return 0.0 if np.array_equal(a, b) else math.inf
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if np.isnan(a64).any() or np.isnan(b64).any():
        return math.inf
    with np.errstate(invalid="ignore"):  # inf - inf where both are equal: masked by the where
        return float(np.max(np.where(a64 == b64, 0.0, np.abs(a64 - b64))))


def _numeric(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_


def scale(reference) -> float:
    """The largest finite magnitude in ``reference`` (0.0 when there is none)."""
    values = [v.astype(np.float64) for _, v in flatten_outputs(reference) if v.size and _numeric(v)]
    finite = [np.abs(v[np.isfinite(v)]) for v in values]
    return max((float(f.max()) for f in finite if f.size), default=0.0)


def tolerance(reference, rtol: float | None = None) -> float:
    """The largest acceptable max abs difference from ``reference``: ``rtol`` (1e-5 for float32,
    :data:`RTOL` for half precision) times the output's scale. Relative, not absolute: a softmax
    over 1000 classes (values near 1e-3) or a vanishing activation must not pass any change below
    1e-5. An all-zero reference tolerates only differences below the smallest normal float32."""
    if rtol is None:
        dtypes = {str(v.dtype) for _, v in flatten_outputs(reference)}
        rtol = max((RTOL.get(d, DEFAULT_RTOL) for d in dtypes), default=DEFAULT_RTOL)
    return rtol * max(scale(reference), float(np.finfo(np.float32).tiny))


def close(actual, expected, rtol: float | None = None) -> bool:
    """True when ``actual`` equals ``expected`` within :func:`tolerance` (NaN-strict)."""
    return max_abs_diff(actual, expected) <= tolerance(expected, rtol)


def assert_close(actual, expected, rtol: float | None = None, what: str = "outputs") -> float:
    """Raise ``AssertionError`` unless :func:`close`; returns the max abs difference."""
    diff, tol = max_abs_diff(actual, expected), tolerance(expected, rtol)
    if not diff <= tol:
        raise AssertionError(f"{what} differ: max abs diff {diff:.3e} > tolerance {tol:.1e} "
                             f"(scale {scale(expected):.3g})")
    return diff
