"""Plain test helpers: output comparison, probe inputs, weight enlivening, model fingerprints, the
split-point oracle. Keras is imported inside the functions that need it."""

from __future__ import annotations

import contextlib
import hashlib
import zlib

import numpy as np

def brute_split_points(g) -> list[str]:
    """Oracle for ``split_points``: values whose removal disconnects every input from every
    output, by brute force (flat graphs)."""
    import networkx as nx

    from kgraft.ir import ValueRef

    live = set().union(*(nx.ancestors(g.nx, r.node) | {r.node} for r in g.outputs))
    h = nx.DiGraph()
    h.add_edges_from((u, v) for u, v in g.nx.edges() if u in live and v in live)
    h.add_edges_from(("^src", i) for i in g.inputs if i in live)
    h.add_edges_from((r.node, "^sink") for r in g.outputs)
    excluded = set(g.inputs) | {r.node for r in g.outputs}
    points = []
    for node_id in g.topological_ids():
        if node_id not in live or node_id in excluded:
            continue
        used = {d["out"] for _, v, d in g.nx.out_edges(node_id, data=True) if v in live}
        if len(used) != 1:
            continue
        cut = h.copy()
        cut.remove_node(node_id)
        if not nx.has_path(cut, "^src", "^sink"):
            points.append(g.value_name(ValueRef(node_id, used.pop())))
    return points


def max_abs_diff(outputs_a, outputs_b) -> float:
    """:func:`kgraft.numerics.max_abs_diff` (NaN-strict), asserting first that the output
    structures, shapes and dtypes agree (so a test says which)."""
    from kgraft.numerics import flatten_outputs, max_abs_diff as diff

    flat_a, flat_b = flatten_outputs(outputs_a), flatten_outputs(outputs_b)
    keys_a, keys_b = [k for k, _ in flat_a], [k for k, _ in flat_b]
    assert keys_a == keys_b, f"output structures differ: {keys_a} vs {keys_b}"
    assert flat_a, "the models returned no outputs"
    for (key, a), (_, b) in zip(flat_a, flat_b):
        assert a.shape == b.shape, f"output {key}: shape {a.shape} vs {b.shape}"
        assert a.dtype == b.dtype, f"output {key}: dtype {a.dtype} vs {b.dtype}"
    return diff(outputs_a, outputs_b)


def run_model(model, inputs):
    """Outputs of an inference call, as numpy (dict/list structure kept)."""
    import keras

    out = model(inputs, training=False)
    return keras.tree.map_structure(lambda t: np.asarray(keras.ops.convert_to_numpy(t)), out)


def assert_same_outputs(model_a, model_b, inputs, atol: float = 1e-5) -> float:
    """Run both models on ``inputs``; fail if any output differs by more than ``atol``."""
    assert model_a is not model_b, "comparing a model with itself proves nothing"
    diff = max_abs_diff(run_model(model_a, inputs), run_model(model_b, inputs))
    assert diff <= atol, f"outputs differ: max abs diff {diff:.3e} > {atol:.1e}"
    return diff


def enliven(model, seed: int = 0) -> None:
    """He-normal kernels (depthwise: fan-in = kernel area), then every BatchNormalization's
    statistics from one random batch (momentum 0 in a training call), in place."""
    import keras

    rng = np.random.default_rng(seed)
    norms = [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in iter_layers(model):
        for w in layer.weights:
            if w.path.endswith("kernel") and len(w.shape) >= 2:
                shape = tuple(w.shape)
                fan_in = int(np.prod(shape[:2])) if "depthwise" in w.path else int(np.prod(shape[:-1]))
                w.assign((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype("float32"))
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(random_inputs(model, batch=8, seed=seed), training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def assert_input_sensitive(outputs, atol: float = 1e-5) -> None:
    """Fail unless every output differs between the first two samples by more than 100 * atol.

    Outputs that barely depend on the input (vanishing activations, a saturated softmax) make
    a comparison at ``atol`` unable to tell a right model from a wrong one.
    """
    from kgraft.numerics import flatten_outputs

    for key, value in flatten_outputs(outputs):
        if value.ndim and value.shape[0] >= 2 and np.issubdtype(value.dtype, np.floating):
            spread = float(np.max(np.abs(value[0].astype(np.float64) - value[1])))
            assert spread > 100 * atol, (f"output {key} barely depends on the input (spread {spread:.2e} over "
                                         f"the batch): a comparison at {atol:g} would prove nothing")


def random_inputs(model, batch: int = 2, seed: int = 0, small: int | None = None):
    """:func:`kgraft.numerics.probe_inputs` for ``model`` (lowered :func:`unguarded`, so a test
    may change the model afterwards): one array for a single input, a list for several."""
    from kgraft import numerics
    from kgraft.backends.keras import lower

    with unguarded():
        graph = lower(model)
    arrays = numerics.probe_inputs(graph, batch, seed, numerics.SMALL_DIM if small is None else small)
    return arrays[0] if len(arrays) == 1 else arrays


_UNGUARDED = [0]  # > 0 while test helpers (not the code under test) call kgraft


@contextlib.contextmanager
def unguarded():
    """kgraft calls made by a test helper, which the source guard does not count as handing the
    model to kgraft (the test may still change the model afterwards, as ``enliven`` does)."""
    _UNGUARDED[0] += 1
    try:
        yield
    finally:
        _UNGUARDED[0] -= 1


def iter_layers(model):
    """Every layer of ``model``, nested models' layers included (depth first)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested keras.Model (or tf_keras.Model)
            yield from iter_layers(layer)


def model_parts(model, weights: bool = True) -> dict[str, tuple]:
    """What lowering/building must leave alone, keyed for a readable diff.

    For the model and every (nested) layer: its ``id``, trainable flag and number of call sites
    (``_inbound_nodes``, ``_outbound_nodes``); the ``id`` of every variable; with ``weights=True``
    also each weight's shape, dtype and a digest of its values (the costly part: a few
    milliseconds per 100 variables, plus the reading). Works for Keras 3 and ``tf_keras`` models.
    """
    parts = {"inputs/outputs": tuple(id(t) for t in [*_endpoints(model, "inputs"), *_endpoints(model, "outputs")])}
    for path, layer in _walk(model, ()):
        parts[f"layer {'/'.join(path) or model.name}"] = (
            id(layer), layer.trainable, len(layer._inbound_nodes), len(getattr(layer, "_outbound_nodes", [])))
    variables = model.weights
    parts["variables"] = tuple(map(id, variables))
    for i, var in enumerate(variables if weights else ()):
        parts[f"weight {i} {getattr(var, 'path', None) or var.name}"] = (
            tuple(var.shape), str(getattr(var.dtype, "name", var.dtype)), _digest(var))
    return parts


def _digest(var) -> int:
    """CRC of a variable's bytes (``numpy()``: half the cost of ``np.asarray``; reading the value
    costs more than hashing it)."""
    return zlib.crc32(np.ascontiguousarray(var.numpy()).reshape(-1).view(np.uint8))


def _endpoints(model, which: str) -> list:
    try:
        return list(getattr(model, which) or [])
    except AttributeError:  # a subclassed model never called has neither
        return []


def _walk(model, path):
    yield path, model
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _walk(layer, path + (layer.name,))
        else:
            yield path + (layer.name,), layer


def fingerprint(model) -> str:
    """A hash of :func:`model_parts`."""
    return hashlib.sha256(repr(sorted(model_parts(model).items())).encode()).hexdigest()


def diff_parts(before: dict, after: dict) -> list[str]:
    """What changed between two :func:`model_parts`, one line per part (at most 5)."""
    keys = sorted(set(before) | set(after))
    lines = [f"{k}: {before.get(k, 'absent')} -> {after.get(k, 'absent')}" for k in keys
             if before.get(k) != after.get(k)]
    return lines[:5] + ([f"... and {len(lines) - 5} more"] if len(lines) > 5 else [])


@contextlib.contextmanager
def unchanged_ctx(*models):
    before = [model_parts(m) for m in models]
    yield
    for model, b in zip(models, before):
        changed = diff_parts(b, model_parts(model))
        assert not changed, f"model {model.name!r} was mutated: " + "; ".join(changed)


def layer_summary(model, prefix: tuple = ()) -> list[tuple]:
    """``(path, class, trainable)`` of every layer, nested models included."""
    rows = []
    for layer in model.layers:
        path = prefix + (layer.name,)
        rows.append((path, type(layer).__name__, layer.trainable))
        if hasattr(layer, "layers"):
            rows += layer_summary(layer, path)
    return rows
