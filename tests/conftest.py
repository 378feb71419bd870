"""Shared fixtures for the kgraft test suite.

Helpers are exposed as fixtures (tests/ is not a package and pytest runs with
``--import-mode=importlib``, so test modules cannot import this file):

* ``assert_same_outputs(model_a, model_b, inputs, atol=1e-5)`` -> the max abs difference;
* ``random_inputs(model, batch=2, seed=0)`` -> inputs matching ``model.inputs``;
* ``fingerprint(model)`` -> a hashable summary of a model's weights and call-site counts;
* ``unchanged(*models)`` -> a context manager asserting the models' fingerprints are the same
  after the block (``kgraft.lower``/``kgraft.build`` must never mutate a source model).

Keras and TensorFlow are imported lazily so that pure-IR tests stay cheap.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import contextlib
import hashlib

import numpy as np
import pytest

SMALL_DIM = 3  # what an unknown (None) non-batch dimension becomes in random inputs


# ---------------------------------------------------------------------------- plain helpers
def _flatten_outputs(outputs):
    """``[(key, array), ...]`` for a single tensor, a list/tuple or a dict of outputs."""
    if isinstance(outputs, dict):
        items = []
        for key in sorted(outputs):
            items += [((key,) + k, v) for k, v in _flatten_outputs(outputs[key])]
        return items
    if isinstance(outputs, (list, tuple)):
        items = []
        for i, item in enumerate(outputs):
            items += [((i,) + k, v) for k, v in _flatten_outputs(item)]
        return items
    return [((), np.asarray(outputs))]


def max_abs_diff(outputs_a, outputs_b) -> float:
    """Max abs difference over all outputs; the output structures must agree exactly."""
    flat_a, flat_b = _flatten_outputs(outputs_a), _flatten_outputs(outputs_b)
    keys_a, keys_b = [k for k, _ in flat_a], [k for k, _ in flat_b]
    assert keys_a == keys_b, f"output structures differ: {keys_a} vs {keys_b}"
    assert flat_a, "the models returned no outputs"
    worst = 0.0
    for (key, a), (_, b) in zip(flat_a, flat_b):
        assert a.shape == b.shape, f"output {key}: shape {a.shape} vs {b.shape}"
        assert a.dtype == b.dtype, f"output {key}: dtype {a.dtype} vs {b.dtype}"
        assert np.all(np.isfinite(a)), f"output {key} of the first model is not finite"
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


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


def random_inputs(model, batch: int = 2, seed: int = 0, small: int = SMALL_DIM):
    """Random inputs for ``model.inputs`` (None dims -> ``batch`` / ``small``).

    One array for a single input, a list for several; integer inputs get small ints.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = [batch if i == 0 and d is None else (small if d is None else d)
                 for i, d in enumerate(tensor.shape)]
        dtype = np.dtype(str(tensor.dtype))
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 5, size=shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def iter_layers(model):
    """Every layer of ``model``, nested models' layers included (depth first)."""
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def fingerprint(model) -> str:
    """A hash of everything lowering/building must leave alone.

    All weights (name, shape, dtype, bytes), and for the model and every (nested) layer its
    ``id``, name, trainable flag and number of call sites (``len(layer._inbound_nodes)``).
    """
    h = hashlib.sha256()
    for var in model.weights:
        value = np.asarray(var.numpy())
        h.update(f"{var.path}|{value.shape}|{value.dtype}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    for layer in [model, *iter_layers(model)]:
        h.update(f"{id(layer)}|{layer.name}|{layer.trainable}|{len(layer._inbound_nodes)}|"
                 f"{len(getattr(layer, '_outbound_nodes', []))};".encode())
    h.update(repr([id(t) for t in model.inputs] + [id(t) for t in model.outputs]).encode())
    return h.hexdigest()


@contextlib.contextmanager
def unchanged_ctx(*models):
    before = [fingerprint(m) for m in models]
    yield
    after = [fingerprint(m) for m in models]
    for model, b, a in zip(models, before, after):
        assert a == b, f"model {model.name!r} was mutated (weights, layers or call sites changed)"


def layer_summary(model, prefix: tuple = ()) -> list[tuple]:
    """``(path, class, trainable)`` of every layer, nested models included."""
    import keras

    rows = []
    for layer in model.layers:
        path = prefix + (layer.name,)
        rows.append((path, type(layer).__name__, layer.trainable))
        if isinstance(layer, keras.Model):
            rows += layer_summary(layer, path)
    return rows


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(name="assert_same_outputs")
def _assert_same_outputs_fixture():
    return assert_same_outputs


@pytest.fixture(name="max_abs_diff")
def _max_abs_diff_fixture():
    return max_abs_diff


@pytest.fixture(name="run_model")
def _run_model_fixture():
    return run_model


@pytest.fixture(name="random_inputs")
def _random_inputs_fixture():
    return random_inputs


@pytest.fixture(name="fingerprint")
def _fingerprint_fixture():
    return fingerprint


@pytest.fixture
def unchanged():
    """``with unchanged(model): kgraft.lower(model) ...`` fails if ``model`` was mutated."""
    return unchanged_ctx


@pytest.fixture(name="layer_summary")
def _layer_summary_fixture():
    return layer_summary


@pytest.fixture(name="roundtrip")
def _roundtrip_fixture():
    """``roundtrip(model_or_path, **lower_kwargs) -> (graph, rebuilt)``, checking the source is
    not mutated, the IR verifies and its text parses back identically."""

    def roundtrip(source, inputs=None, atol: float = 1e-5, **lower_kwargs):
        import keras

        import kgraft
        from kgraft.ir import parse, verify

        is_model = isinstance(source, keras.Model)
        guard = unchanged_ctx(source) if is_model else contextlib.nullcontext()
        with guard:
            graph = kgraft.lower(source, **lower_kwargs)
            verify(graph)
            rebuilt = kgraft.build(graph)
        text = str(graph)
        assert str(parse(text)) == text
        if is_model:
            assert rebuilt is not source
            source_ids = {id(l) for l in iter_layers(source)}
            assert not source_ids & {id(l) for l in iter_layers(rebuilt)}, "rebuilt model reuses source layers"
            assert not {id(v) for v in source.weights} & {id(v) for v in rebuilt.weights}
            if inputs is None:
                inputs = random_inputs(source)
            assert_same_outputs(source, rebuilt, inputs, atol=atol)
        return graph, rebuilt

    return roundtrip
