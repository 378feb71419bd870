"""Shared fixtures for the kgraft test suite.

Helpers are exposed as fixtures (tests/ is not a package and pytest runs with
``--import-mode=importlib``, so test modules cannot import this file):

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
import functools
import hashlib
import sys
import zlib

import numpy as np
import pytest

pytest_plugins = ["pytester"]  # tests/test_source_guard.py runs the guard in a pytest session


# ---------------------------------------------------------------------------- plain helpers
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


# ---------------------------------------------------------------------------- the source guard
# kgraft's entry points that take a model (or a graph whose source is one) as first argument.
GUARDED = {
    "kgraft.backends.keras.load": ("lower", "load_model"),
    "kgraft.backends.keras.build": ("build",),
    "kgraft.backends.keras": ("lower", "load_model", "build"),
}


def _is_model(obj) -> bool:
    keras = sys.modules.get("keras")
    tf_keras = sys.modules.get("tf_keras")
    return (keras is not None and isinstance(obj, keras.Model)) or (
        tf_keras is not None and isinstance(obj, tf_keras.Model))


def _sources(arg) -> list:
    """The models an entry point's first argument stands for (a graph stands for its source)."""
    if isinstance(arg, (list, tuple)):
        return [m for a in arg for m in _sources(a)]
    if _is_model(arg):
        return [arg]
    source = getattr(arg, "meta", {}).get("source") if hasattr(arg, "meta") else None
    return [source] if _is_model(source) else []


def _structure(parts: dict) -> dict:
    """The parts of :func:`model_parts` a test rarely changes itself: layers, call sites, variables."""
    return {k: v[0:1] + v[2:] if k.startswith("layer ") else v for k, v in parts.items() if not k.startswith("weight ")}


class SourceGuard:
    """Fails a test in which kgraft mutated a model it was given.

    ``wrap(fn)`` records the structure of the models of ``fn``'s first argument (layers, call
    sites, trainable flags, variable objects) on entry to the outermost wrapped call and checks
    it on exit, and checks that the models returned share no layer or variable with them; it
    digests a model's weights when it first sees it. ``teardown()`` re-checks the structure
    (catching changes made later through shared objects) and the weights. Structure is cheap to
    check per call; reading the weights of a big model is not, so they are checked once per test.
    Problems are collected in ``problems``; the ``kgraft_guard`` fixture fails on them.
    """

    def __init__(self):
        self.problems: list[str] = []
        self.seen: dict[int, tuple] = {}  # id -> (model, structure after the last call)
        self.first: dict[int, tuple] = {}  # id -> (model, parts with weights, first call)
        self._depth = 0
        self._entered: dict[int, tuple] = {}  # id -> (model, structure) of the current outermost call

    def wrap(self, fn, where: str):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if _UNGUARDED[0]:
                return fn(*args, **kwargs)
            first = args[0] if args else next(iter(kwargs.values()), None)
            for model in _sources(first):
                if id(model) not in self._entered:
                    if id(model) not in self.first:
                        self.first[id(model)] = (model, model_parts(model), where)
                    self._entered[id(model)] = (model, model_parts(model, weights=False))
            self._depth += 1
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._after_call(where, result)

        guarded.__kgraft_guarded__ = True
        return guarded

    def _after_call(self, where: str, result) -> None:
        entered, self._entered = self._entered, {}
        for model, before in entered.values():
            after = model_parts(model, weights=False)
            changed = diff_parts(before, after)
            if changed:
                self.problems.append(f"{where} mutated model {model.name!r}: " + "; ".join(changed))
            self.seen[id(model)] = (model, _structure(after))
            shared = _shared_objects(model, result)
            if shared:
                self.problems.append(f"{where} returned a model sharing {', '.join(shared[:3])} with "
                                     f"its argument {model.name!r}")

    def forget(self) -> None:
        """Drop what was recorded (for tests of the guard itself)."""
        self.problems.clear(), self.seen.clear(), self.first.clear()

    def teardown(self) -> None:
        for model, structure in self.seen.values():
            changed = diff_parts(structure, _structure(model_parts(model, weights=False)))
            if changed:
                self.problems.append(f"model {model.name!r} changed after kgraft returned it: "
                                     + "; ".join(changed))
        for model, parts, where in self.first.values():
            weights = {k: v for k, v in parts.items() if k.startswith("weight ")}
            now = {k: v for k, v in model_parts(model).items() if k.startswith("weight ")}
            changed = diff_parts(weights, now)
            if changed:
                self.problems.append(f"the weights of model {model.name!r} changed during the test, "
                                     f"after it was handed to {where}: " + "; ".join(changed))


def _shared_objects(model, result) -> list[str]:
    """Layers and variables of ``model`` that the model(s) in ``result`` also hold."""
    # load_model hands a model argument back as it is (it loads files): that is not a copy sharing parts
    results = [r for r in (result if isinstance(result, (list, tuple)) else [result]) if _is_model(r) and r is not model]
    if not results:
        return []
    mine = {id(l): f"layer {l.name!r}" for l in iter_layers(model)}
    mine.update({id(v): f"variable {getattr(v, 'path', None) or v.name!r}" for v in model.weights})
    theirs = {id(o) for r in results for o in [*iter_layers(r), *r.weights]}
    return [mine[i] for i in mine if i in theirs]


def install_guard(guard: SourceGuard, monkeypatch) -> None:
    """Wrap kgraft's entry points (the public Keras-level functions included) for this test."""
    import kgraft.api
    import kgraft.surgery

    targets = {**GUARDED, "kgraft.api": (*kgraft.api.__all__, "lower", "build"),
               "kgraft.surgery": (*kgraft.surgery.__all__, "lower", "build")}
    wrapped = {}
    for module_name, names in targets.items():
        module = sys.modules[module_name]
        for name in names:
            fn = getattr(module, name)
            if fn not in wrapped:
                wrapped[fn] = guard.wrap(fn, f"kgraft.{name}")
            monkeypatch.setattr(module, name, wrapped[fn])


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
