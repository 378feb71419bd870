"""Shared fixtures for the kgraft test suite.

Helpers live in ``tests/support`` (importable: ``pythonpath = ["tests"]``); the common ones
are also fixtures here:

* ``assert_same_outputs(model_a, model_b, inputs, atol=1e-5)`` -> the max abs difference;
* ``random_inputs(model, batch=2, seed=0)`` -> inputs matching ``model.inputs``
  (:func:`kgraft.numerics.probe_inputs`: ids inside embedding ranges, padded sequences where a
  mask is produced); ``max_abs_diff`` is :func:`kgraft.numerics.max_abs_diff` (NaN-strict);
* ``fingerprint(model)`` -> a hashable summary of a model's weights and call-site counts;
* ``enliven(model, seed=0)`` re-draws kernels He-normal and sets BatchNormalization statistics
  from a batch, so that a ``weights=None`` network's activations stay O(1) instead of vanishing
  (~1e-9 after MobileNetV2, EfficientNet), which would let any wrong model pass a 1e-5
  comparison; ``assert_input_sensitive(outputs)`` proves they did not;
* ``brute_split_points(graph)`` -> the split points found by brute force (the oracle of
  ``split_points``);
* ``unchanged(*models)`` -> a context manager asserting the models' fingerprints are the same
  after the block (``kgraft.lower``/``kgraft.build`` must never mutate a source model).

Every test also runs under ``kgraft_guard`` (autouse, see :class:`SourceGuard`): the structure of
each model handed to a kgraft entry point (layers, call sites, flags) is checked around the call,
the models returned must not share layers or variables with it, and at teardown its structure
and weights are checked again. A test that changes such a model itself, after handing it to
kgraft, says so with ``@pytest.mark.mutates_source``.

Keras and TensorFlow are imported lazily so that pure-IR tests stay cheap.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# ONNX conversions are cached on disk (kgraft.backends.onnx.cache): keep the suite's out of ~/.cache
os.environ.setdefault("KGRAFT_CACHE_DIR", os.path.join(__import__("tempfile").mkdtemp(prefix="kgraft-test-cache-")))

import contextlib
import sys

import pytest

from support.guard import SourceGuard, install_guard
from support.models import (assert_input_sensitive, assert_same_outputs, brute_split_points, enliven, fingerprint,
                            iter_layers, layer_summary, max_abs_diff, random_inputs, run_model, unchanged_ctx)

pytest_plugins = ["pytester"]  # tests/test_source_guard.py runs the guard in a pytest session


# ---------------------------------------------------------------------------- fixtures
def pytest_configure(config):
    config.addinivalue_line("markers", "mutates_source: the test itself changes a model it handed to "
                            "kgraft, after the call (the source guard then skips its teardown checks)")


@pytest.fixture(name="assert_same_outputs")
def _assert_same_outputs_fixture():
    return assert_same_outputs


@pytest.fixture(name="max_abs_diff")
def _max_abs_diff_fixture():
    return max_abs_diff


@pytest.fixture(name="run_model")
def _run_model_fixture():
    return run_model


@pytest.fixture(name="enliven", scope="session")
def _enliven_fixture():
    return enliven


@pytest.fixture(name="assert_input_sensitive", scope="session")
def _assert_input_sensitive_fixture():
    return assert_input_sensitive


@pytest.fixture(name="brute_split_points", scope="session")
def _brute_split_points_fixture():
    return brute_split_points


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



@pytest.fixture(autouse=True)
def kgraft_guard(request, monkeypatch):
    """Autouse: fail the test if kgraft mutated a model it was given (see :class:`SourceGuard`).

    Installed only once Keras is imported, so pure-IR tests stay free of TensorFlow.
    """
    guard = SourceGuard()
    if "keras" in sys.modules:
        import kgraft.backends.keras  # noqa: F401  (cheap once Keras is loaded)

        install_guard(guard, monkeypatch)
    yield guard
    if request.node.get_closest_marker("mutates_source") is None:
        guard.teardown()
    if guard.problems:
        pytest.fail("kgraft mutated a source model:\n  " + "\n  ".join(guard.problems), pytrace=False)
