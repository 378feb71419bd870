"""Config fuzzing: kgraft on mutated model configs and corrupted model files (hypothesis).

Real configs (a Functional model with a shared layer and a nested Sequential, in the Keras 3 and
the legacy tf.keras 2 format) are mutated: keys deleted, values replaced by other types, layer
names swapped (dangling refs, self refs, cycles, unknown classes), indices and shapes changed,
list items duplicated. Model files (``.keras`` and ``.h5``) are truncated, overwritten with random
bytes, bit-flipped, or given a mutated config. For every case:

* a failure of ``kgraft.frontend.lower_config`` / ``kgraft.backends.keras.build`` / ``kgraft.lower`` /
  ``kgraft.flatten`` is a :class:`kgraft.KgraftError` (never another exception from deep inside);
* when kgraft builds a model, Keras builds one from the same config too, and both (with the
  same weights) compute the same numbers, flattened or not: kgraft never returns a model Keras
  would reject, nor a silently different one.

Default run: a few dozen derandomized examples per target; ``-m slow`` runs many random ones.
Shrunk failures found by these properties are pinned as explicit regression tests below.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import copy
import io
import json
import zipfile
import zlib

import h5py
import hypothesis
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from keras import layers

import kgraft
from kgraft import KgraftError
from kgraft.backends.keras import build
from kgraft.frontend import lower_config

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))
SLOW = settings(FAST, max_examples=400, derandomize=os.environ.get("KGRAFT_FUZZ") != "explore")
ATOL = 1e-5
# options that do not change the graph: pruned so that mutations hit structure, not initializers
NOISE = ("kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer",
         "kernel_constraint", "bias_constraint", "activity_regularizer", "quantization_config")


# ---------------------------------------------------------------------------- the real configs
def base_model() -> keras.Model:
    """Two inputs, a Dense shared by both, a nested Sequential, a merge, a head."""
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = layers.Dense(3, name="shared")
    seq = keras.Sequential([keras.Input((3,)), layers.Dense(3, activation="relu", name="s1"),
                            layers.Dense(2, name="s2")], name="seq")
    h = layers.Concatenate(name="cat")([seq(shared(a)), shared(b)])
    return keras.Model([a, b], layers.Dense(2, name="out")(h), name="m")


def prune(tree):
    if isinstance(tree, dict):
        return {k: prune(v) for k, v in tree.items() if k not in NOISE}
    if isinstance(tree, list):
        return [prune(v) for v in tree]
    return tree


def keras3_config() -> dict:
    return prune(json.loads(json.dumps(keras.saving.serialize_keras_object(base_model()))))


def legacy_config() -> dict:
    """The same graph as tf.keras 2 writes it (flat: Keras 3 reads legacy nested models wrongly)."""
    def entry(cls, name, inbound, **config):
        return {"class_name": cls, "name": name, "inbound_nodes": inbound,
                "config": {"name": name, "trainable": True, "dtype": "float32", **config}}

    def inp(name):
        return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
                "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False, "name": name}}

    return {"class_name": "Functional", "config": {"name": "legacy", "layers": [
        inp("a"), inp("b"),
        entry("Dense", "shared", [[["a", 0, 0, {}]], [["b", 0, 0, {}]]], units=3),
        entry("Dense", "s1", [[["shared", 0, 0, {}]]], units=3, activation="relu"),
        entry("Concatenate", "cat", [[["s1", 0, 0, {}], ["shared", 1, 0, {}]]], axis=-1),
        entry("Dense", "out", [[["cat", 0, 0, {}]]], units=2),
    ], "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": [["out", 0, 0]]}}


def keras_reference(config):
    """The model Keras itself builds from ``config``, or None when Keras rejects it.

    As Keras's deserialization does, the class name picks ``Sequential.from_config`` or
    ``Model.from_config`` (which reads both formats); compile options play no part.
    """
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and isinstance(config.get("config"), dict)):
        return None
    cls = keras.Sequential if config.get("class_name") == "Sequential" else keras.Model
    try:
        model = cls.from_config(copy.deepcopy(config["config"]))
    except Exception:
        return None
    return model if isinstance(model, keras.Model) else None


# ---------------------------------------------------------------------------- mutations
def paths(tree, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path in a JSON tree (the root excluded)."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        found.append(prefix + (key,))
        found += paths(value, prefix + (key,))
    return found


def strings(tree) -> list[str]:
    if isinstance(tree, dict):
        return sorted({s for k, v in tree.items() for s in [k, *strings(v)]})
    if isinstance(tree, list):
        return sorted({s for v in tree for s in strings(v)})
    return [tree] if isinstance(tree, str) else []


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 6), st.sampled_from([0.5, -1.0, 1e9]),
    st.sampled_from(["", "nowhere", "Dense", "NoSuchLayer", "__keras_tensor__"]),
    st.lists(st.one_of(st.none(), st.integers(-1, 4), st.text("ab", max_size=2)), max_size=4),
    st.just({}), st.just({"class_name": "Dense", "config": {}}),
)


class Mutated(dict):
    """A mutated config; printed as its edits (hypothesis shows it for a failing example)."""

    edits: list[str]

    def __repr__(self) -> str:
        return f"<config with edits {self.edits}>"


@st.composite
def mutated(draw, base):
    """``base`` with 1-3 random edits (a :class:`Mutated`)."""
    config, done = copy.deepcopy(base), []
    pool = strings(base)
    for _ in range(draw(st.integers(1, 3), label="edits")):
        where = paths(config)
        if not where:
            break
        path = where[draw(st.integers(0, len(where) - 1), label="path")]
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        key, old = path[-1], parent[path[-1]]
        op = draw(st.sampled_from(["delete", "replace", "string", "int", "duplicate"]), label="op")
        if op == "delete":
            del parent[key]
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(old))
        elif op == "string":
            parent[key] = draw(st.sampled_from(pool), label="string")
        elif op == "int":
            parent[key] = (old if isinstance(old, int) and not isinstance(old, bool) else 0) \
                + draw(st.integers(-2, 2), label="delta")
        else:
            # a fresh copy: a shared value edited again would make the config contain itself
            parent[key] = copy.deepcopy(draw(JSON_VALUES, label="value"))
        done.append(f"{op} {'/'.join(map(str, path))}" + ("" if op == "delete" else f" = {parent[key]!r}"[:80]))
    result = Mutated(config)
    result.edits = done
    return result


# ---------------------------------------------------------------------------- comparing models
def leaf_layers(model, prefix: str = ""):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer, f"{prefix}{layer.name}/")
        else:
            yield f"{prefix}{layer.name}", layer


def set_weights(model, like=None) -> None:
    """Weights from the layer's path (so two models with the same layers get the same ones).

    ``like``: a model built from the same config whose leaf layers are named differently (Keras
    names a legacy layer entry without a config name itself, kgraft after its entry): weights
    then come from the path of the layer at the same position in ``like``.
    """
    leaves = list(leaf_layers(model))
    if like is not None:
        theirs = [path for path, _ in leaf_layers(like)]
        if sorted(theirs) != sorted(path for path, _ in leaves) and len(theirs) == len(leaves):
            leaves = [(path, layer) for path, (_, layer) in zip(theirs, leaves)]
    for path, layer in leaves:
        for i, var in enumerate(layer.weights):
            rng = np.random.default_rng(zlib.crc32(f"{path}#{i}".encode()))
            low = 0.5 if "variance" in var.path else -1.0
            var.assign(rng.uniform(low, 1.0, tuple(var.shape)).astype(var.dtype))


def feed(model) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = []
    for t in model.inputs:
        shape = tuple(2 if i == 0 and d is None else (3 if d is None else d) for i, d in enumerate(t.shape))
        arrays.append(rng.uniform(-1.0, 1.0, shape).astype(t.dtype))
    return arrays


def run(model, x: list) -> list[np.ndarray]:
    out = model(x if len(x) != 1 else x[0], training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(out)]


def assert_same_model(ours, theirs, what: str) -> None:
    assert len(ours.inputs) == len(theirs.inputs), f"{what}: {len(ours.inputs)} vs {len(theirs.inputs)} inputs"
    for a, b in zip(ours.inputs, theirs.inputs):
        assert tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype, f"{what}: input {a} vs {b}"
    x = feed(theirs)
    try:
        expected = run(theirs, x)
    except Exception:  # Keras built a model that cannot run (e.g. a nested model fed the wrong rank)
        with pytest.raises(Exception):
            run(ours, x)
        return
    mine = run(ours, x)
    assert len(mine) == len(expected), f"{what}: {len(mine)} vs {len(expected)} outputs"
    for i, (a, e) in enumerate(zip(mine, expected)):
        assert a.shape == e.shape, f"{what}: output {i} shape {a.shape} vs {e.shape}"
        np.testing.assert_allclose(a, e, atol=ATOL, rtol=0, equal_nan=True, err_msg=f"{what}: output {i}")


def event(what: str) -> None:
    """Count outcomes (``--hypothesis-show-statistics``), inside hypothesis tests only."""
    if currently_in_test_context():
        hypothesis.event(what)


def kgraft_or_error(fn, *args):
    """``fn(*args)``, or the KgraftError it raised; any other exception fails the test."""
    try:
        return fn(*args)
    except KgraftError as e:
        assert str(e).strip(), "a KgraftError without a message"
        return e


def check_config(config) -> None:
    """The property on one (mutated) config dict."""
    before = copy.deepcopy(config)
    ours = kgraft_or_error(lambda c: build(lower_config(c), weights=False), config)
    assert config == before, "lower_config/build mutated the config"
    if isinstance(ours, KgraftError):
        event("kgraft refused the config")
        return
    event("kgraft built a model")
    theirs = keras_reference(config)
    assert theirs is not None, "kgraft built a model from a config that Keras rejects"
    set_weights(ours, like=theirs)
    set_weights(theirs)
    assert_same_model(ours, theirs, "kgraft build vs Keras")
    flat = kgraft_or_error(kgraft.flatten, ours)
    if not isinstance(flat, KgraftError):
        assert_same_model(flat, theirs, "kgraft.flatten vs Keras")


# ---------------------------------------------------------------------------- config properties
SUBJECTS = {"keras3": keras3_config, "legacy": legacy_config}


@pytest.mark.parametrize("subject", list(SUBJECTS))
def test_unmutated_configs_build_the_reference(subject):
    config = SUBJECTS[subject]()
    assert keras_reference(config) is not None
    assert not isinstance(kgraft_or_error(lambda c: build(lower_config(c), weights=False), config), KgraftError)
    check_config(config)


@pytest.mark.parametrize("subject", list(SUBJECTS))
@FAST
@given(data=st.data())
def test_mutated_config(subject, data):
    check_config(dict(data.draw(mutated(SUBJECTS[subject]()), label="mutation")))


@pytest.mark.slow
@pytest.mark.parametrize("subject", list(SUBJECTS))
@SLOW
@given(data=st.data())
def test_mutated_config_slow(subject, data):
    check_config(dict(data.draw(mutated(SUBJECTS[subject]()), label="mutation")))


# ---------------------------------------------------------------------------- file properties
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """suffix -> bytes of the base model saved in that format (weights randomized)."""
    folder = tmp_path_factory.mktemp("fuzz_files")
    model = base_model()
    set_weights(model)
    files = {}
    for suffix in (".keras", ".h5"):
        path = folder / f"m{suffix}"
        model.save(path)
        files[suffix] = path.read_bytes()
    return files


def with_config(data: bytes, suffix: str, edit) -> bytes:
    """The file with its config JSON text replaced by ``edit(text)``."""
    if suffix == ".keras":
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.infolist():
                content = src.read(item)
                dst.writestr(item, edit(content.decode()).encode() if item.filename == "config.json" else content)
        return out.getvalue()
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        raw = f.attrs["model_config"]
        f.attrs["model_config"] = edit(raw.decode() if isinstance(raw, bytes) else raw)
    return buffer.getvalue()


@st.composite
def corrupted(draw, files):
    """(suffix, bytes, what was done) of a damaged model file."""
    suffix = draw(st.sampled_from(sorted(files)), label="suffix")
    data = files[suffix]
    how = draw(st.sampled_from(["truncate", "random", "flip", "config", "bad json", "drop member"]), label="how")
    if how == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1), label="length")]
    elif how == "random":
        data = draw(st.binary(max_size=2048), label="bytes")
    elif how == "flip":
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 8), label="flips")):
            i = draw(st.integers(0, len(raw) - 1), label="at")
            raw[i] ^= draw(st.integers(1, 255), label="mask")
        data = bytes(raw)
    elif how == "config":
        config = draw(mutated(json.loads(_config_text(data, suffix))), label="mutation")
        data = with_config(data, suffix, lambda _: json.dumps(dict(config)))
    elif how == "bad json":
        text = draw(st.sampled_from(["", "{", "[]", "null", "42", '{"class_name": 1}', "{\"config\": []}"]))
        data = with_config(data, suffix, lambda _: text)
    elif suffix == ".keras":  # drop member
        member = draw(st.sampled_from(["config.json", "model.weights.h5", "metadata.json"]), label="member")
        data = with_config(data, suffix, lambda t: t) if member == "metadata.json" else _drop(data, member)
    return suffix, data, how


def _config_text(data: bytes, suffix: str) -> str:
    if suffix == ".keras":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read("config.json").decode()
    with h5py.File(io.BytesIO(data), "r") as f:
        raw = f.attrs["model_config"]
        return raw.decode() if isinstance(raw, bytes) else raw


def _drop(data: bytes, member: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename != member:
                dst.writestr(item, src.read(item))
    return out.getvalue()


def check_file(path: str) -> None:
    """The property on one (damaged) model file."""
    graph = kgraft_or_error(kgraft.lower, path)
    flat = kgraft_or_error(kgraft.flatten, path)
    event("kgraft refused the file" if isinstance(flat, KgraftError) else "kgraft read the file")
    if isinstance(flat, KgraftError):
        return
    assert not isinstance(graph, KgraftError), f"flatten succeeded where lower failed: {graph}"
    theirs = keras.saving.load_model(path, compile=False, safe_mode=True)  # must load: kgraft did
    assert_same_model(flat, theirs, "kgraft.flatten vs Keras")


@FAST
@given(data=st.data())
def test_corrupted_file(data, model_files, tmp_path_factory):
    suffix, content, how = data.draw(corrupted(model_files), label="file")
    path = tmp_path_factory.mktemp("case") / f"model{suffix}"
    path.write_bytes(content)
    check_file(str(path))


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_corrupted_file_slow(data, model_files, tmp_path_factory):
    suffix, content, how = data.draw(corrupted(model_files), label="file")
    path = tmp_path_factory.mktemp("case") / f"model{suffix}"
    path.write_bytes(content)
    check_file(str(path))


# ---------------------------------------------------------------------------- regressions
def _at(config: dict, *path):
    for key in path:
        config = config[key]
    return config


def _set(path, value):
    def edit(config):
        _at(config, *path[:-1])[path[-1]] = value
    return edit


def _delete(*path):
    def edit(config):
        del _at(config, *path[:-1])[path[-1]]
    return edit


# Shrunk failures of the properties above: each raised something other than a KgraftError deep
# inside kgraft, or kgraft built a model from a config Keras rejects. (subject, edit, message)
REJECTED = {
    "entry config not a dict": ("keras3", _set(("config", "layers", 2, "config"), 1),
                                r"a layer entry of class 'InputLayer' has config=1 \(int\)"),
    "module not a string": ("keras3", _set(("config", "layers", 4, "module"), -2),
                            r"a layer entry of class 'Concatenate' has module=-2 \(int\)"),
    "class_name not a string": ("legacy", _set(("config", "layers", 5, "class_name"), -1),
                                r"layer entry .* has no class_name"),
    "model class_name a dict": ("keras3", _set(("class_name",), {}), r"the model's class_name is \{\}"),
    "tensor config not a dict": ("keras3", _set(("config", "layers", 4, "inbound_nodes", 0, "args", 0, 0, "config"),
                                                "m"), r"tensor without keras_history"),
    "tensor shape an int": ("keras3", _set(("config", "layers", 5, "inbound_nodes", 0, "args", 0, "config", "shape"), 0),
                            r"a tensor shape in model 'm' is 0, not a shape"),
    "tensor shape null": ("keras3", _set(("config", "layers", 1, "inbound_nodes", 0, "args", 0, "config", "shape"),
                                         None), r"a tensor's shape is null"),
    "tensor dtype not a dtype": ("keras3", _set(("config", "layers", 5, "inbound_nodes", 0, "args", 0, "config",
                                                 "dtype"), "compile_config"), r"a tensor's dtype is 'compile_config'"),
    "tensor dtype a dict": ("keras3", _set(("config", "layers", 5, "inbound_nodes", 0, "args", 0, "config",
                                            "dtype"), {}), r"a tensor's dtype is \{\}"),
    "tensor without dtype": ("keras3", _delete("config", "layers", 5, "inbound_nodes", 0, "args", 0, "config",
                                               "dtype"), r"a tensor without shape or dtype"),
    "input shape an int": ("legacy", _set(("config", "layers", 0, "config", "batch_input_shape"), -1),
                           r"the shape of input 'a' is -1, not a shape"),
    "call without kwargs": ("keras3", _delete("config", "layers", 1, "inbound_nodes", 1, "kwargs"),
                            r"call arguments .* are not \{'args'"),
    "entry without name": ("keras3", _delete("config", "layers", 2, "name"),
                           r"the InputLayer layer entry None is named 'b' in its config"),
    "model without name": ("keras3", _delete("config", "name"), r"Functional model 'model' has no name"),
    "input without inbound_nodes": ("keras3", _delete("config", "layers", 0, "inbound_nodes"),
                                    r"inbound_nodes of 'a' is not a list"),
    "input endpoint of 4 items": ("keras3", _set(("config", "input_layers", 1), ["b", 0, 0, 0]),
                                  r"input_layers of model 'm' is .*\(expected \[layer name, node index, tensor index\]"),
    "cycle": ("keras3", _set(("config", "layers", 4, "inbound_nodes", 0, "args", 0, 1, "config", "keras_history"),
                             ["out", 0, 0]), r"the layers of 'm' form a cycle"),
    "dangling ref": ("keras3", _set(("config", "layers", 5, "inbound_nodes", 0, "args", 0, "config",
                                     "keras_history"), ["nowhere", 0, 0]), r"uses 'nowhere#0', which the config"),
    "node index out of range": ("legacy", _set(("config", "layers", 4, "inbound_nodes", 0, 1, 1), 2),
                                r"uses 'shared#2', which the config does not define"),
    "unknown class": ("keras3", _set(("config", "layers", 5, "class_name"), "NoSuchLayer"),
                      r"unknown layer class 'NoSuchLayer'.*custom_objects="),
    "node index a string": ("legacy", _set(("config", "layers", 3, "inbound_nodes", 0, 0, 1), "x"),
                            r"bad tensor reference \['shared', 'x', 0\]"),
    "argument object without a class": ("keras3", _set(("config", "layers", 4, "inbound_nodes", 0, "args", 0, 1,
                                                          "class_name"), {}),
                                        r"call cat#0 of layer 'cat': its arguments in the model config hold a serialized"),
    "argument object of a layer class": ("keras3", _set(("config", "layers", 4, "inbound_nodes", 0, "args", 0, 1),
                                                        {"class_name": "Dense", "config": {}}),
                                         r"Keras cannot rebuild \(TypeError: Could not locate class 'Dense'"),
    "entry without config": ("keras3", _delete("config", "layers", 4, "config"),
                             r"a layer entry of class 'Concatenate' has config=None \(NoneType\)"),
    "tensor index out of range": ("legacy", _set(("config", "layers", 4, "inbound_nodes", 0, 1, 2), 1),
                                  r"layer 'cat' reads output 1 of 'shared#1', which returns 1 tensor"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_rejected_config(name):
    subject, edit, message = REJECTED[name]
    config = SUBJECTS[subject]()
    edit(config)
    with pytest.raises(KgraftError, match=message):
        build(lower_config(config), weights=False)
    assert keras_reference(config) is None, "Keras accepts it: kgraft should not be stricter"


def test_legacy_entry_without_config_name_builds_as_keras_does():
    """Keras names such a layer itself (``dense_7``); kgraft names it after its entry. Same
    numbers with the same weights (found by the slow fuzzer, which once seeded weights by name)."""
    config = legacy_config()
    del config["config"]["layers"][5]["config"]["name"]
    check_config(config)


def test_names_that_disagree_are_refused():
    """Keras accepts an entry named 'seq' whose config says 'ragged' (naming the layer 'ragged',
    finding its inputs through 'seq'); kgraft refuses such an edited config rather than guess."""
    config = keras3_config()
    config["config"]["layers"][3]["config"]["name"] = "ragged"
    assert keras_reference(config) is not None
    with pytest.raises(KgraftError, match=r"entry 'seq' is named 'ragged' in its config.*agree"):
        lower_config(config)


def test_class_name_sequential_decides():
    """A 'Sequential' config with functional keys is a Sequential for Keras: a chain of its layers."""
    a = keras.Input((4,), name="a")
    model = keras.Model(a, layers.Dense(2, name="d2")(layers.Dense(3, name="d1")(a)), name="chain")
    config = prune(json.loads(json.dumps(keras.saving.serialize_keras_object(model))))
    config["class_name"] = "Sequential"
    assert lower_config(config).kind == "Sequential"
    check_config(config)


def test_tensor_dtypes_are_keras_dtypes():
    from keras.src.backend.common import dtypes

    from kgraft.frontend.lower import TENSOR_DTYPES

    assert TENSOR_DTYPES == set(dtypes.ALLOWED_DTYPES)


def _nested_call(**kwargs) -> keras.Model:
    """``body`` (Dense, BatchNormalization, Dropout) called with ``kwargs`` inside ``outer``."""
    x = keras.Input((4,), name="bx")
    h = layers.Dropout(0.5, name="drop")(layers.BatchNormalization(name="bn")(layers.Dense(4, name="bd")(x)))
    body = keras.Model(x, h, name="body")
    a = keras.Input((4,), name="a")
    model = keras.Model(a, layers.Dense(2, name="head")(body(a, **kwargs)), name="outer")
    set_weights(model)
    return model


def test_training_argument_of_a_nested_call_survives_flatten():
    """``backbone(x, training=False)`` (transfer learning): the inlined calls carry the argument,
    as Keras passes it down (an outer ``training`` given at call time overrides both alike)."""
    model = _nested_call(training=False)
    flat = kgraft.flatten(model)
    for name in ("bd", "bn", "drop"):
        assert flat.get_layer(name)._inbound_nodes[0].arguments.kwargs.get("training") is False, name
    x = feed(model)
    for training in (None, False):
        np.testing.assert_allclose(np.asarray(flat(x[0], training=training)),
                                   np.asarray(model(x[0], training=training)), atol=ATOL, rtol=0)


def test_other_arguments_of_a_nested_call_are_refused():
    """Found by the fuzzer: ``mask=0.5`` on a nested call was silently dropped by inlining."""
    config = keras3_config()
    config["config"]["layers"][3]["inbound_nodes"][0]["kwargs"]["mask"] = 0.5
    ours = build(lower_config(config), weights=False)
    with pytest.raises(kgraft.UnsupportedModelError, match=r"passes mask=0\.5 to nested model 'seq'.*drop"):
        kgraft.flatten(ours)


@pytest.mark.parametrize("suffix, damage, message", [
    (".keras", lambda data: b"\x00garbage" * 10, r"is corrupt or unreadable: BadZipFile"),
    (".keras", lambda data: data[: len(data) // 2], r"is corrupt or unreadable"),
    (".keras", lambda data: _drop(data, "config.json"), r"is corrupt or unreadable: KeyError.*config\.json"),
    (".keras", lambda data: _drop(data, "model.weights.h5"), r"Keras could not load model file"),
    (".keras", lambda data: with_config(data, ".keras", lambda _: "{"), r"is corrupt or unreadable: JSONDecodeError"),
    (".h5", lambda data: data[:1000], r"is corrupt or unreadable"),
    (".h5", lambda data: with_config(data, ".h5", lambda _: "[]"), r"expected a model config dict, got list"),
])
def test_damaged_file(suffix, damage, message, model_files, tmp_path):
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(damage(model_files[suffix]))
    for entry_point in (kgraft.lower, kgraft.flatten):
        with pytest.raises(KgraftError, match=message):
            entry_point(str(path))
