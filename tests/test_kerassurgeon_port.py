"""kerassurgeon's own test cases (BenWhetton/keras-surgeon, tests/test_surgeon.py), ported to kgraft.

Each test keeps the name of the case it ports (``ks_<name>``) and its check: the new weights equal
the old ones with the deleted channels' slices removed (``np.delete``), or the model equals the
expected one. Where kgraft behaves differently on purpose the test asserts kgraft's behaviour and
says why; README.md ("Ported kerassurgeon tests") lists them all. ``channels_first`` variants are
left out: TensorFlow has no channels-first convolution on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraft

keras = pytest.importorskip("keras")
L = keras.layers

CHANNELS = [[0], [-1], [1, 2]]  # kerassurgeon's channel_index fixture


def _model_3():
    x = keras.Input((7, 7, 1))
    y = L.Conv2D(3, 3, name="conv_a")(x)
    y = L.Conv2D(3, 3, name="conv_b")(y)
    y = L.Dense(1)(L.Dense(3, name="dense_a")(L.Flatten()(y)))
    model = keras.Model(x, y)
    model.get_layer("conv_a").set_weights([np.arange(27, dtype="float32").reshape(3, 3, 1, 3) + 1,
                                           np.array([100, 200, 300], "float32")])
    model.get_layer("conv_b").set_weights([np.arange(81, dtype="float32").reshape(3, 3, 3, 3),
                                           np.array([100, 200, 300], "float32")])
    return model


def _norm(channels, count):
    return sorted({c % count for c in channels})


def ks_assert_weights(new_layer, old_layer, changes):
    want = [np.delete(w, idx, axis=ax) if idx is not None else w
            for w, (idx, ax) in zip(old_layer.get_weights(), changes)]
    for got, exp in zip(new_layer.get_weights(), want):
        np.testing.assert_array_equal(got, exp)


def test_ks_rebuild_submodel(assert_same_outputs, random_inputs):
    model = _model_3()
    assert_same_outputs(model, kgraft.build(kgraft.lower(model)), random_inputs(model))


def test_ks_delete_channels_rec_1():
    x = keras.Input((784,))
    y = L.Dense(64, activation="relu", name="d1")(x)
    y = L.Dense(64, activation="relu", name="d2")(y)
    model = keras.Model(x, L.Dense(10, activation="softmax", name="d3")(y))
    result = kgraft.delete_channels(model, "d2", [0])
    assert result.get_layer("d2").units == 63 and result.get_layer("d3").kernel.shape == (63, 10)


@pytest.mark.parametrize("channels", CHANNELS, ids=str)
def test_ks_delete_channels_conv2d_conv2d(channels):
    model = _model_3()
    result = kgraft.delete_channels(model, "conv_a", channels)
    idx = _norm(channels, 3)
    ks_assert_weights(result.get_layer("conv_a"), model.get_layer("conv_a"), [(idx, -1), (idx, 0)])
    ks_assert_weights(result.get_layer("conv_b"), model.get_layer("conv_b"), [(idx, -2), (None, 0)])  # next layer


@pytest.mark.parametrize("channels", CHANNELS, ids=str)
def test_ks_delete_channels_flatten(channels):
    x = keras.Input((6, 5, 4))
    conv = L.Conv2D(3, 3, name="conv")(x)
    model = keras.Model(x, L.Dense(5, name="fc")(L.Flatten()(conv)))
    result = kgraft.delete_channels(model, "conv", channels)
    flat = int(np.prod(conv.shape[1:]))
    rows = [c + i for i in range(0, flat, 3) for c in _norm(channels, 3)]
    ks_assert_weights(result.get_layer("fc"), model.get_layer("fc"), [(rows, 0), (None, 0)])


_LAYERS_1D = {"maxpooling1d": lambda: L.MaxPooling1D(2), "cropping1d": lambda: L.Cropping1D(3),
              "upsampling1d": lambda: L.UpSampling1D(3), "zeropadding1d": lambda: L.ZeroPadding1D(3),
              "averagepooling1d": lambda: L.AveragePooling1D(3)}
_LAYERS_2D = {"maxpooling2d": lambda: L.MaxPooling2D([2, 2]), "cropping2d": lambda: L.Cropping2D([2, 3]),
              "upsampling2d": lambda: L.UpSampling2D([2, 3]), "zeropadding2d": lambda: L.ZeroPadding2D([2, 3]),
              "averagepooling2d": lambda: L.AveragePooling2D([2, 3]), "batchnormalization": L.BatchNormalization,
              "leakyrelu": L.LeakyReLU, "elu": L.ELU, "gaussiannoise": lambda: L.GaussianNoise(0.5),
              "gaussiandropout": lambda: L.GaussianDropout(0.5), "alphadropout": lambda: L.AlphaDropout(0.5)}
_LAYERS_3D = {"maxpooling3d": lambda: L.MaxPooling3D([2, 3, 2]), "cropping3d": lambda: L.Cropping3D([2, 3, 2]),
              "upsampling3d": lambda: L.UpSampling3D([2, 3, 2]), "zeropadding3d": lambda: L.ZeroPadding3D([2, 3, 2]),
              "averagepooling3d": lambda: L.AveragePooling3D([2, 3, 2])}


def _flatten_case(conv, layer, shape, channels):
    """kerassurgeon's layer_test_helper_flatten_*: conv -> layer -> Flatten -> Dense."""
    x = keras.Input(shape)
    mid = layer(conv(x))
    model = keras.Model(x, L.Dense(5, name="fc")(L.Flatten()(mid)))
    result = kgraft.delete_channels(model, conv.name, channels)
    flat = int(np.prod(mid.shape[1:]))
    rows = [c + i for i in range(0, flat, 3) for c in _norm(channels, 3)]
    ks_assert_weights(result.get_layer("fc"), model.get_layer("fc"), [(rows, 0), (None, 0)])


@pytest.mark.parametrize("channels", CHANNELS, ids=str)
@pytest.mark.parametrize("kind", sorted(_LAYERS_1D))
def test_ks_delete_channels_1d(kind, channels):
    _flatten_case(L.Conv1D(3, 3, name="conv"), _LAYERS_1D[kind](), (15, 4), channels)


@pytest.mark.parametrize("channels", CHANNELS, ids=str)
@pytest.mark.parametrize("kind", sorted(_LAYERS_2D))
def test_ks_delete_channels_2d(kind, channels):
    _flatten_case(L.Conv2D(3, [3, 3], name="conv"), _LAYERS_2D[kind](), (14, 13, 4), channels)


@pytest.mark.parametrize("kind", sorted(_LAYERS_3D))
def test_ks_delete_channels_3d(kind):
    _flatten_case(L.Conv3D(3, [3, 3, 2], name="conv"), _LAYERS_3D[kind](), (12, 13, 11, 2), [1, 2])


@pytest.mark.parametrize("pool, conv, shape", [(L.GlobalAveragePooling1D, L.Conv1D, (14, 4)),
                                               (L.GlobalAveragePooling2D, L.Conv2D, (12, 11, 4))])
@pytest.mark.parametrize("channels", CHANNELS, ids=str)
def test_ks_delete_channels_global_pooling(pool, conv, shape, channels):
    x = keras.Input(shape)
    model = keras.Model(x, L.Dense(5, name="fc")(pool()(conv(3, 3, name="conv")(x))))
    result = kgraft.delete_channels(model, "conv", channels)
    ks_assert_weights(result.get_layer("fc"), model.get_layer("fc"), [(_norm(channels, 3), 0), (None, 0)])


@pytest.mark.parametrize("channels", CHANNELS, ids=str)
def test_ks_delete_channels_merge_concatenate(channels):
    a, b = keras.Input((12, 11, 4)), keras.Input((12, 11, 4))
    cat = L.Concatenate(name="cat_1")([L.Conv2D(3, 3, name="conv_1")(a), L.Conv2D(3, 3, name="conv_2")(b)])
    model = keras.Model([a, b], L.Dense(5, name="dense_1")(L.Flatten()(cat)))
    result = kgraft.delete_channels(model, "conv_1", channels)
    flat = int(np.prod(cat.shape[1:]))
    rows = [c + i for i in range(0, flat, 6) for c in _norm(channels, 3)]
    ks_assert_weights(result.get_layer("dense_1"), model.get_layer("dense_1"), [(rows, 0), (None, 0)])


@pytest.mark.parametrize("merge", [L.Add, L.Multiply, L.Average, L.Maximum])
@pytest.mark.parametrize("channels", CHANNELS, ids=str)
def test_ks_delete_channels_merge_others(merge, channels):
    a, b = keras.Input((12, 11, 4)), keras.Input((12, 11, 4))
    merged = merge()([L.Conv2D(3, 3, name="conv_1")(a), L.Conv2D(3, 3, name="conv_2")(b)])
    model = keras.Model([a, b], L.Dense(5, name="dense_1")(L.Flatten()(merged)))
    result = kgraft.delete_channels(model, {"conv_1": channels, "conv_2": channels})
    flat = int(np.prod(merged.shape[1:]))
    rows = [c + i for i in range(0, flat, 3) for c in _norm(channels, 3)]
    ks_assert_weights(result.get_layer("dense_1"), model.get_layer("dense_1"), [(rows, 0), (None, 0)])


@pytest.mark.parametrize("rnn", [L.SimpleRNN, L.GRU, L.LSTM])
def test_ks_delete_channels_recurrent_is_refused(rnn):
    """Not supported: kerassurgeon slices the next RNN's input kernel; kgraft refuses recurrent
    layers by name (their gates mix channels in ways it does not model yet)."""
    x = keras.Input((32, 10))
    y = L.GRU(4, name="next")(rnn(9, return_sequences=True, name="rnn")(x))
    with pytest.raises(kgraft.KgraftError, match=r"'rnn' is a "):
        kgraft.delete_channels(keras.Model(x, L.Dense(5)(y)), "rnn", [0])


def _dense_chain(names, reuse=None):
    x = keras.Input((3,), name="input_1")
    layers = {n: L.Dense(3 if n != "dense_4" else 1, name=n) for n in names}
    y = x
    for n in reuse or names:
        y = layers[n](y)
    return keras.Model(x, y)


def test_ks_delete_layer():
    model = _dense_chain(["dense_1", "dense_2", "dense_3", "dense_4"])
    result = kgraft.delete_layer(model, "dense_2")
    assert [l.name for l in result.layers] == ["input_1", "dense_1", "dense_3", "dense_4"]
    xs = np.ones((1, 3), "float32")
    d1, d3, d4 = (model.get_layer(n) for n in ("dense_1", "dense_3", "dense_4"))
    np.testing.assert_allclose(np.asarray(result(xs)), np.asarray(d4(d3(d1(xs)))), atol=1e-5)


def test_ks_delete_layer_reuse():
    model = _dense_chain(["dense_1", "dense_2", "dense_3", "dense_4"], reuse=["dense_1", "dense_2", "dense_3",
                                                                               "dense_2", "dense_4"])
    result = kgraft.delete_layer(model, "dense_2")  # every call site of the shared layer
    xs = np.ones((1, 3), "float32")
    d1, d3, d4 = (model.get_layer(n) for n in ("dense_1", "dense_3", "dense_4"))
    np.testing.assert_allclose(np.asarray(result(xs)), np.asarray(d4(d3(d1(xs)))), atol=1e-5)


def test_ks_replace_layer():
    model = _dense_chain(["dense_1", "dense_2", "dense_4"])
    new = L.Dense(3, name="dense_3")
    result = kgraft.replace_layer(model, "dense_2", new, copy_weights=False)
    assert result.get_layer("dense_2").get_weights()[0].tolist() == new.get_weights()[0].tolist()
    assert result.get_layer("dense_1").get_weights()[0].tolist() == model.get_layer("dense_1").get_weights()[0].tolist()


def test_ks_insert_layer():
    model = _dense_chain(["dense_1", "dense_2", "dense_4"])
    result = kgraft.insert_layer(model, "dense_2", L.Dense(3, name="dense_3"))  # before dense_4
    assert [l.name for l in result.layers] == ["input_1", "dense_1", "dense_2", "dense_3", "dense_4"]


def test_ks_delete_layer_same_layer_outputs():
    x = keras.Input((10,))
    d1, d2, d3, d4 = (L.Dense(3 if i < 4 else 1, name=f"dense_{i}") for i in range(1, 5))
    h = d1(x)
    model = keras.Model(x, [d4(d3(h)), d4(d2(h))])
    result = kgraft.delete_layer(model, "dense_3")
    xs = np.ones((1, 10), "float32")
    got = result(xs)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(d4(d1(xs))), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(d4(d2(d1(xs)))), atol=1e-5)


def test_ks_delete_channels_downstream_sharing_is_refused():
    """Different from kerassurgeon on purpose: deleting channel 0 of dense_1 and channel 1 of dense_2,
    which both feed the shared dense_3, would need two different kernels for one layer;
    kerassurgeon's test compares configs only, kgraft refuses."""
    x = keras.Input((5,))
    d3 = L.Dense(3, name="dense_3")
    model = keras.Model(x, [d3(L.Dense(4, name="dense_1")(x)), d3(L.Dense(4, name="dense_2")(x))])
    with pytest.raises(kgraft.KgraftError, match="'dense_3' is shared"):
        kgraft.delete_channels(model, {"dense_1": [0], "dense_2": [1]})
    result = kgraft.delete_channels(model, {"dense_1": [0], "dense_2": [0]})  # the same channel: fine
    assert result.get_layer("dense_3").kernel.shape == (3, 3)


@pytest.mark.parametrize("long", [False, True])
def test_ks_delete_all_channels_in_branch_is_refused(long):
    """Not supported: kerassurgeon removes a branch whose channels are all deleted (and the
    Concatenate with it); kgraft refuses and points to delete_layer / extract."""
    x = keras.Input((20, 20, 3))
    a = L.Conv2D(2, 3, name="conv_1")(x)
    if long:
        a = L.Conv2D(4, 1, name="conv_3")(a)
    model = keras.Model(x, L.Concatenate(name="cat_1")([a, L.Conv2D(3, 3, name="conv_2")(x)]))
    with pytest.raises(kgraft.KgraftError, match="would leave none of its 2"):
        kgraft.delete_channels(model, "conv_1", [0, 1])
