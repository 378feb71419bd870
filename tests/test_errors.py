"""Every error kgraft raises on purpose, checked by its message text.

A user must get a KgraftError (a ValueError) saying what was found and what to do, never a raw
Keras/h5py/zipfile exception.
"""

from __future__ import annotations

import inspect
import os
import re
import zipfile

import h5py
import keras
import numpy as np
import pytest

import kgraft
import kgraft.ir.errors as errors
from kgraft import KgraftError, UnknownLayerError, UnsupportedModelError
from kgraft.ir import parse


class AddOne(keras.layers.Layer):
    def call(self, x):
        return x + 1.0


class Double(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _dense_model(name="plain"):
    x = keras.Input((3,), name="x")
    return keras.Model(x, keras.layers.Dense(2, name="d")(x), name=name)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model files shared by the tests of this module (saved once)."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    x = keras.Input((3,), name="x")
    lam = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="lam")(keras.layers.Dense(3, name="d")(x))
    lambda_model = keras.Model(x, lam, name="with_lambda")
    out["lambda_model"] = lambda_model
    out["lambda"] = d / "lambda.keras"
    lambda_model.save(out["lambda"])

    inner_x = keras.Input((3,), name="ix")
    inner = keras.Model(inner_x, keras.layers.Lambda(lambda t: t - 1.0, name="inner_lam")(inner_x), name="inner")
    y = keras.Input((3,), name="y")
    out["nested_lambda"] = d / "nested_lambda.keras"
    keras.Model(y, inner(y), name="outer").save(out["nested_lambda"])

    z = keras.Input((3,), name="z")
    custom = keras.Model(z, Double(name="double")(AddOne(name="add_one")(z)), name="custom")
    out["custom_model"] = custom
    out["custom"] = d / "custom.keras"
    custom.save(out["custom"])
    out["custom_h5"] = d / "custom.h5"
    custom.save(out["custom_h5"])

    out["plain"] = d / "plain.keras"
    _dense_model().save(out["plain"])
    out["dir"] = d
    return out


# ---------------------------------------------------------------------------- error classes
def test_every_error_is_a_value_error():
    classes = [obj for _, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, Exception)]
    assert len(classes) >= 9
    for cls in classes:
        assert issubclass(cls, KgraftError) and issubclass(cls, ValueError), cls
    for name in ["KgraftError", "RefError", "CutError", "UnsupportedModelError", "UnknownLayerError",
                 "VerificationError", "IRParseError", "PipelineError", "PassError"]:
        assert getattr(kgraft, name) is getattr(errors, name)


# ---------------------------------------------------------------------------- Lambda layers
def test_lambda_file_requires_safe_mode_false(files):
    path = str(files["lambda"])
    with pytest.raises(KgraftError) as info:
        kgraft.lower(path)
    message = str(info.value)
    assert type(info.value) is KgraftError
    assert f"model file {path!r} contains Lambda layer(s) lam:" in message
    assert "safe_mode" in message
    assert f"kgraft.lower({path!r}, safe_mode=False)" in message
    assert "--unsafe" in message


def test_lambda_in_nested_model_is_named_by_path(files):
    with pytest.raises(KgraftError, match=r"contains Lambda layer\(s\) inner/inner_lam: .*safe_mode=False"):
        kgraft.lower(files["nested_lambda"])


def test_lambda_file_with_safe_mode_false_round_trips(files, assert_same_outputs, random_inputs):
    graph = kgraft.lower(files["lambda"], safe_mode=False)
    assert graph.layers["lam"].class_name == "Lambda"
    rebuilt = kgraft.build(graph)
    source = files["lambda_model"]
    x = random_inputs(source)
    assert_same_outputs(source, rebuilt, x, atol=1e-6)
    # the Lambda really ran: out = 2 * dense(x) + 1
    dense = np.asarray(source.get_layer("d")(x))
    np.testing.assert_allclose(np.asarray(rebuilt(x)), 2 * dense + 1, atol=1e-6)


def test_in_memory_lambda_model_needs_no_opt_in(files, assert_same_outputs, random_inputs):
    source = files["lambda_model"]
    assert_same_outputs(source, kgraft.build(kgraft.lower(source)), random_inputs(source), atol=1e-6)


# ---------------------------------------------------------------------------- custom classes
@pytest.mark.parametrize("key", ["custom", "custom_h5"])
def test_missing_custom_classes_are_all_named(files, key):
    path = str(files[key])
    with pytest.raises(UnknownLayerError) as info:
        kgraft.lower(path)
    message = str(info.value)
    assert info.value.missing == ["AddOne", "Double"]
    assert f"unknown layer classes 'AddOne', 'Double' in model file {path!r}" in message
    assert "custom_objects={'AddOne': AddOne, 'Double': Double}" in message
    assert "register_keras_serializable" in message


def test_one_missing_custom_class(files):
    with pytest.raises(UnknownLayerError) as info:
        kgraft.lower(files["custom"], custom_objects={"AddOne": AddOne})
    assert info.value.missing == ["Double"]
    assert "unknown layer class 'Double' in model file" in str(info.value)
    assert "custom_objects={'Double': Double}" in str(info.value)
    assert "AddOne" not in str(info.value)


def test_custom_classes_given(files, assert_same_outputs, random_inputs):
    graph = kgraft.lower(files["custom"], custom_objects={"AddOne": AddOne, "Double": Double})
    source = files["custom_model"]
    x = random_inputs(source)
    rebuilt = kgraft.build(graph)
    assert_same_outputs(source, rebuilt, x, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rebuilt(x)), (x + 1.0) * 2.0, atol=1e-6)


def test_build_of_parsed_text_with_unknown_class():
    text = """
    kgraft.model @m(%a: f32[?,4]) {
      %f = Frobnicate @f#0(%a) {level=3} : f32[?,4]
      %g = pkg>Gizmo @g#0(%f) : f32[?,4]
      return %g
    }
    """
    with pytest.raises(UnknownLayerError) as info:
        kgraft.build(parse(text))
    assert info.value.missing == ["Frobnicate", "pkg>Gizmo"]
    assert "unknown layer classes 'Frobnicate', 'pkg>Gizmo' in model 'm'" in str(info.value)
    assert "custom_objects={'Frobnicate': Frobnicate, 'pkg>Gizmo': Gizmo}" in str(info.value)


def test_build_of_parsed_text_of_builtin_layers():
    # parsed IR has no weights: build gives a fresh model of the same architecture
    text = str(kgraft.lower(_dense_model("arch")))
    model = kgraft.build(parse(text))
    assert model.name == "arch"
    assert tuple(model.outputs[0].shape) == (None, 2)
    assert [layer.name for layer in model.layers] == ["x", "d"]


# ---------------------------------------------------------------------------- unsupported models
class Subclassed(keras.Model):
    def __init__(self, units=2, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_subclassed_model_is_unsupported():
    model = Subclassed(name="sub")
    model(np.ones((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError) as info:
        kgraft.lower(model)
    message = str(info.value)
    assert "model 'sub' is a subclassed keras.Model (Subclassed)" in message
    assert "functional API" in message and "keras.Sequential" in message


def test_subclassed_model_file_is_unsupported(tmp_path):
    model = Subclassed(name="sub_file")
    model(np.ones((1, 3), "float32"))
    path = tmp_path / "sub.keras"
    model.save(path)
    with pytest.raises(UnsupportedModelError, match=r"model 'sub_file' is a subclassed keras.Model \(Subclassed\) with no functional graph"):
        kgraft.lower(path, custom_objects={"Subclassed": Subclassed})


def test_unbuilt_sequential_is_unsupported():
    model = keras.Sequential([keras.layers.Dense(2)], name="never_built")
    with pytest.raises(UnsupportedModelError,
                       match=r"Sequential model 'never_built' was never built, so it has no input shape"):
        kgraft.lower(model)


# ---------------------------------------------------------------------------- unreadable files
def _no_raw_exception(info):
    assert type(info.value).__module__.startswith("kgraft"), f"raw exception {type(info.value)}"


def test_random_bytes_keras_file(tmp_path):
    path = tmp_path / "random.keras"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(KgraftError, match=rf"model file '{re.escape(str(path))}' is corrupt or unreadable: "
                                          "BadZipFile") as info:
        kgraft.lower(path)
    _no_raw_exception(info)


def test_truncated_keras_file(tmp_path, files):
    data = files["plain"].read_bytes()
    path = tmp_path / "truncated.keras"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(KgraftError, match="is corrupt or unreadable") as info:
        kgraft.lower(path)
    _no_raw_exception(info)


def test_keras_zip_without_config(tmp_path):
    path = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(KgraftError, match="is corrupt or unreadable: KeyError: .*config.json"):
        kgraft.lower(path)


def test_keras_zip_with_bad_json(tmp_path):
    path = tmp_path / "badjson.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{not json")
    with pytest.raises(KgraftError, match="is corrupt or unreadable: JSONDecodeError"):
        kgraft.lower(path)


def test_keras_zip_with_garbage_config(tmp_path):
    path = tmp_path / "garbage.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"class_name": "Functional", "config": {"name": "g", "layers": [42]}}')
    with pytest.raises(KgraftError, match="corrupt model config") as info:
        kgraft.lower(path)
    _no_raw_exception(info)


def test_keras_file_without_weights(tmp_path, files):
    path = tmp_path / "noweights.keras"
    with zipfile.ZipFile(files["plain"]) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            if not name.startswith("model.weights"):
                dst.writestr(name, src.read(name))
    with pytest.raises(KgraftError, match=rf"Keras could not load model file '{re.escape(str(path))}': ") as info:
        kgraft.lower(path)
    _no_raw_exception(info)


def test_random_bytes_h5_file(tmp_path):
    path = tmp_path / "random.h5"
    path.write_bytes(np.random.default_rng(1).bytes(512))
    with pytest.raises(KgraftError, match="is corrupt or unreadable") as info:
        kgraft.lower(path)
    _no_raw_exception(info)


def test_h5_without_model_config(tmp_path):
    path = tmp_path / "weights_only.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kernel", data=np.ones((3, 2)))
    with pytest.raises(KgraftError, match=r"holds weights only \(no model_config\): save the whole model"):
        kgraft.lower(path)


def test_keras_weights_file(tmp_path):
    path = tmp_path / "plain.weights.h5"
    _dense_model().save_weights(path)
    with pytest.raises(KgraftError, match=r"holds weights only \(no model_config\)"):
        kgraft.lower(path)


def test_directory_named_like_a_model(tmp_path):
    path = tmp_path / "dir.keras"
    path.mkdir()
    with pytest.raises(KgraftError, match=r"has no config.json: expected an unzipped .keras archive"):
        kgraft.lower(path)


def test_nonexistent_path(tmp_path):
    path = str(tmp_path / "missing.keras")
    with pytest.raises(KgraftError, match=rf"no such model file: {re.escape(repr(path))}"):
        kgraft.lower(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00")
    with pytest.raises(KgraftError, match=r"unsupported model file .*model\.onnx.*expected one of \.keras, \.h5, \.hdf5"):
        kgraft.lower(path)


@pytest.mark.parametrize("value, name", [(42, "int"), (None, "NoneType"), ({"layers": []}, "dict"),
                                         (np.zeros(3), "ndarray")])
def test_lower_wrong_argument_type(value, name):
    with pytest.raises(KgraftError, match=f"expected a keras.Model or a path to a .keras/.h5 file, got {name}$"):
        kgraft.lower(value)


@pytest.mark.parametrize("value, name", [("model.keras", "str"), (None, "NoneType"), (42, "int")])
def test_build_wrong_argument_type(value, name):
    with pytest.raises(KgraftError, match=f"kgraft.build expects a kgraft IR Graph .*got {name}$"):
        kgraft.build(value)


def test_build_of_a_keras_model_says_lower_it_first():
    with pytest.raises(KgraftError, match=r"got Functional \(lower it first: kgraft.build\(kgraft.lower\(model\)\)\)"):
        kgraft.build(_dense_model())


def test_build_verifies_its_input():
    graph = kgraft.lower(_dense_model("broken"))
    graph.set_outputs([])
    with pytest.raises(kgraft.VerificationError, match="broken: the model has no outputs"):
        kgraft.build(graph)


def test_errors_do_not_leak_file_handles(tmp_path, files):
    # a failed lower must not keep the file open (it can be removed/overwritten right away)
    path = tmp_path / "again.keras"
    path.write_bytes(b"not a zip")
    for _ in range(3):
        with pytest.raises(KgraftError):
            kgraft.lower(path)
    os.remove(path)
    assert not path.exists()
