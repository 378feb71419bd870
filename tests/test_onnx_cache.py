"""One conversion per model: later cuts come from the kept conversion (in memory, on disk), with
files identical to a fresh export's; the per-partition fallback; errors for unconvertible ops."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

import keras  # noqa: E402
import onnx  # noqa: E402

import kgraft  # noqa: E402
from kgraft.backends import onnx as konnx  # noqa: E402
from kgraft.backends.onnx import cache  # noqa: E402


def convnet(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((12, 12, 3), name="x")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
    h = keras.layers.ReLU(name="r2")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="c3")(h)
    y = keras.layers.Dense(3, name="d")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    return keras.Model(x, y, name="convnet")


def files(man):
    return [open(os.path.join(man["dir"], p["file"]), "rb").read() for p in man["partitions"]]


def counting_conversions(monkeypatch):
    import importlib

    export_module = importlib.import_module("kgraft.backends.onnx.export")
    calls = []
    real = export_module.convert_units

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(export_module, "convert_units", counted)
    return calls


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KGRAFT_CACHE_DIR", str(tmp_path / "cache"))
    cache.clear(disk=False)
    yield tmp_path / "cache" / "onnx"
    cache.clear(disk=False)


def test_second_cut_converts_nothing_and_matches_a_fresh_export(tmp_path, fresh_cache, monkeypatch):
    model, x = convnet(), np.random.default_rng(0).standard_normal((2, 12, 12, 3)).astype("float32")
    calls = counting_conversions(monkeypatch)
    first = kgraft.export_onnx(model, tmp_path / "a", at="c1")
    assert first["cache"] == "miss" and len(calls) == 1
    assert len(os.listdir(fresh_cache)) == 1  # on disk, one file per model
    again = kgraft.export_onnx(model, tmp_path / "b", at=["c1", "r2"])
    assert again["cache"] == "memory" and len(calls) == 1
    fresh = kgraft.export_onnx(model, tmp_path / "c", at=["c1", "r2"], cache=False)
    assert fresh["cache"] == "off" and len(calls) == 2
    assert files(again) == files(fresh)  # same nodes, same numbers, byte for byte
    cache.clear(disk=False)
    from_disk = kgraft.export_onnx(model, tmp_path / "d", at=["c1", "r2"])
    assert from_disk["cache"] == "disk" and len(calls) == 2 and files(from_disk) == files(fresh)
    for man in (first, again, from_disk):
        got, want = kgraft.run_onnx(man, x)[0], np.asarray(model(x))
        assert np.max(np.abs(got - want)) <= 1e-4
        for path in (os.path.join(man["dir"], p["file"]) for p in man["partitions"]):
            onnx.checker.check_model(path, full_check=True)


def test_other_weights_or_opset_are_other_entries(tmp_path, fresh_cache, monkeypatch):
    calls = counting_conversions(monkeypatch)
    kgraft.export_onnx(convnet(0), tmp_path / "a", at="c1")
    kgraft.export_onnx(convnet(1), tmp_path / "b", at="c1")  # same architecture, other weights
    kgraft.export_onnx(convnet(0), tmp_path / "c", at="c1", opset=13)
    assert len(calls) == 3 and len(os.listdir(fresh_cache)) == 3
    x = np.ones((1, 12, 12, 3), "float32")
    assert not np.allclose(kgraft.run_onnx(tmp_path / "a", x)[0], kgraft.run_onnx(tmp_path / "b", x)[0])


def test_cache_off_by_environment_and_clear(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.setenv("KGRAFT_NO_CACHE", "1")
    assert cache.cache_dir() is None
    kgraft.export_onnx(convnet(), tmp_path / "a", at="c1")
    assert not fresh_cache.exists()
    monkeypatch.delenv("KGRAFT_NO_CACHE")
    kgraft.export_onnx(convnet(), tmp_path / "b", at="c2", cache=False)
    assert not fresh_cache.exists()
    cache.clear(disk=False)  # the first export kept it in memory (KGRAFT_NO_CACHE turns off the disk only)
    assert kgraft.export_onnx(convnet(), tmp_path / "c", at="c2")["cache"] == "miss"
    assert len(os.listdir(fresh_cache)) == 1
    cache.clear()
    assert os.listdir(fresh_cache) == []


def test_a_damaged_cache_file_is_a_miss(tmp_path, fresh_cache):
    man = kgraft.export_onnx(convnet(), tmp_path / "a", at="c1")
    (entry,) = os.listdir(fresh_cache)
    (fresh_cache / entry).write_bytes(b"not an onnx file")
    cache.clear(disk=False)
    again = kgraft.export_onnx(convnet(), tmp_path / "b", at="c1")
    assert again["cache"] == "miss" and files(again) == files(man)


def test_auto_layout_keeps_channels_first_cuts_without_transposes(tmp_path):
    model = convnet()
    man = kgraft.export_onnx(model, tmp_path / "e", at=["c1", "r2"])
    assert man["cut_layout"] == "auto"
    for part in man["partitions"][1:]:
        for io in part["inputs"]:
            assert io["layout"] == "nchw" and io["shape"] == [None, 8, 12, 12] and io["keras_shape"] == [None, 12, 12, 8]
    middle = onnx.load(os.path.join(man["dir"], "part1.onnx")).graph
    assert "Transpose" not in {n.op_type for n in middle.node}
    assert konnx.verify(model, man).ok  # cut tensors compared with Keras after transposing back


def test_fallback_converts_each_partition_and_says_so(tmp_path, monkeypatch):
    """If the one conversion cannot be cut (simulated: the readers of a cut tensor are not rewired
    to the new partition input, so partition 1 reads tensors computed before its inputs), each
    partition is converted on its own, with a warning and the reason in the manifest."""
    import onnx_ir as ir

    from kgraft.backends.onnx import cut

    model = convnet()
    monkeypatch.setattr(cut, "_file_input", lambda graph, value, port, name: ir.Value(
        name=name, type=value.type, shape=value.shape))
    with pytest.warns(konnx.ConversionFallbackWarning, match="converting each of the 2 partitions on its own"):
        man = kgraft.export_onnx(model, tmp_path / "e", at="c1", cache=False)
    assert man["conversion"]["strategy"] == "per-partition" and man["conversion"]["conversions"] == 2
    assert "partition 1" in man["conversion"]["fallback_reason"]
    assert "neither receives nor computes" in man["conversion"]["fallback_reason"]
    x = np.random.default_rng(1).standard_normal((2, 12, 12, 3)).astype("float32")
    assert np.max(np.abs(kgraft.run_onnx(man, x)[0] - np.asarray(model(x)))) <= 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.undo()
        assert kgraft.export_onnx(model, tmp_path / "j", at="c1")["conversion"]["strategy"] == "joint"


@keras.saving.register_keras_serializable(package="kgraft_test_onnx_cache")
class Spectrum(keras.layers.Layer):
    """|FFT| of the features: TF's FFT op, which tf2onnx cannot convert."""

    def call(self, x):
        real, imag = keras.ops.fft((x, keras.ops.zeros_like(x)))
        return keras.ops.sqrt(real * real + imag * imag)


def test_fft_is_named_in_a_clean_error(tmp_path):
    x = keras.Input((8,), name="x")
    h = keras.layers.Dense(8, name="d1")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="d2")(Spectrum(name="spectrum")(h)))
    with pytest.raises(kgraft.UnsupportedModelError) as info:
        kgraft.export_onnx(model, tmp_path / "e", at="d1")
    message = str(info.value)
    assert "layer 'spectrum' (Spectrum) in partition 1 uses TF op 'FFT'" in message, message
    assert "Traceback" not in message and "ValueRef" not in message
    assert not (tmp_path / "e").exists()


def test_cache_hit_across_processes(tmp_path, fresh_cache):
    """A second process finds the first one's conversion on disk."""
    path = tmp_path / "m.keras"
    convnet().save(path)
    script = ("import sys, kgraft; m = kgraft.export_onnx(sys.argv[1], sys.argv[2], at=sys.argv[3]); "
              "print(m['cache'])")
    env = {**os.environ, "KGRAFT_CACHE_DIR": str(fresh_cache.parent)}
    seen = [subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / f"e{k}"), at],
                           capture_output=True, text=True, env=env, check=True).stdout.split()[-1]
            for k, at in enumerate(["c1", "r2"])]
    assert seen == ["miss", "disk"]
    assert files(konnx.read_manifest(tmp_path / "e1")[1] | {"dir": str(tmp_path / "e1")})
