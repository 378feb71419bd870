"""Model surgery: delete, insert and replace layers, set the input shape, rename, fold BatchNorm.

Every result is checked numerically against the source where the contract promises equality, on
small keras.applications models (weights=None, re-drawn by ``enliven`` so that activations stay
O(1)) and hand-built ones: nested models, tensors with several consumers, shared layers.
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraft
from support.models import iter_layers

keras = pytest.importorskip("keras")
L = keras.layers


def _chain(name="m"):
    x = keras.Input((12, 12, 3), name="image")
    c1 = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    b1 = L.BatchNormalization(name="bn1")(c1)
    r1 = L.ReLU(name="r1")(b1)
    d = L.Dropout(0.3, name="drop")(r1)
    c2 = L.Conv2D(4, 3, padding="same", name="c2")(d)
    p = L.GlobalAveragePooling2D(name="gap")(c2)
    return keras.Model(x, L.Dense(3, name="logits")(p), name=name)


def _with_stats(model, enliven):
    """Non-trivial BN statistics and O(1) activations, with every BN's gamma scaled by 0.8: a random
    deep network at He scale is chaotic (enlivened MobileNetV2 turns a 1e-6 input perturbation into
    6e-3 at its output), which amplifies float32 rounding past any tolerance (folded: 8e-4); at 0.8
    it still depends on its input (spread 0.76) and folding differs by 2.5e-6, so a comparison at
    1e-4 tests the surgery, not the chaos (0.5 made the output vanish)."""
    enliven(model)
    for layer in iter_layers(model):
        if isinstance(layer, L.BatchNormalization):
            layer.gamma.assign(layer.gamma.numpy() * 0.8)
    return model


def _nested_vgg():
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    x = keras.Input((32, 32, 3), name="image")
    y = L.Dense(4, name="predictions")(L.GlobalAveragePooling2D(name="gap")(base(x)))
    return keras.Model(x, y, name="classifier")


# ---------------------------------------------------------------------------- delete_layer
def test_delete_dropout_equals_source(assert_same_outputs, random_inputs, enliven):
    model = _with_stats(_chain(), enliven)
    result = kgraft.delete_layer(model, "drop")
    assert "drop" not in [l.name for l in result.layers]
    assert result.count_params() == model.count_params()
    assert_same_outputs(model, result, random_inputs(model))


def test_delete_inside_nested_model_keeps_it_nested(assert_same_outputs, random_inputs):
    inner = _chain("inner")
    x = keras.Input((12, 12, 3), name="image")
    model = keras.Model(x, L.Dense(2, name="top")(inner(x)))
    result = kgraft.delete_layer(model, "inner/drop")
    nested = result.get_layer("inner")
    assert isinstance(nested, keras.Model) and "drop" not in [l.name for l in nested.layers]
    assert_same_outputs(model, result, random_inputs(model))


def test_delete_in_nested_vgg16_refuses_a_pooling_layer():
    with pytest.raises(kgraft.KgraftError, match=r"'block3_pool' \(MaxPooling2D\) turns f32\[\?,8,8,256\] "
                                                 r"into f32\[\?,4,4,256\]"):
        kgraft.delete_layer(_nested_vgg(), "vgg16/block3_pool")


def test_delete_one_call_site_of_a_shared_layer(random_inputs, run_model):
    x = keras.Input((6,), name="x")
    shared = L.Dense(6, name="shared")
    h = shared(x)
    y = L.Dense(2, name="out")(shared(h))
    model = keras.Model(x, y)
    result = kgraft.delete_layer(model, "shared@1")
    xs = random_inputs(model)
    w, b = model.get_layer("shared").get_weights()
    wo, bo = model.get_layer("out").get_weights()
    np.testing.assert_allclose(run_model(result, xs), (xs @ w + b) @ wo + bo, atol=1e-5)
    assert len(result.get_layer("shared")._inbound_nodes) == 1


def test_delete_refuses_a_layer_that_changes_the_type():
    with pytest.raises(kgraft.KgraftError, match=r"delete-layer: 'gap' \(GlobalAveragePooling2D\) turns "
                                                 r"f32\[\?,12,12,4\] into f32\[\?,4\]"):
        kgraft.delete_layer(_chain(), "gap")


def test_delete_unknown_layer_names_the_closest():
    with pytest.raises(kgraft.RefError, match="Closest names: drop"):
        kgraft.delete_layer(_chain(), "dorp")


# ---------------------------------------------------------------------------- insert_layer
def test_insert_on_a_tensor_with_several_consumers(assert_same_outputs, random_inputs):
    x = keras.Input((8,), name="x")
    h = L.Dense(8, name="h")(x)
    a = L.Dense(2, name="a")(h)
    b = L.Dense(3, name="b")(h)
    model = keras.Model(x, [a, b, h])
    result = kgraft.insert_layer(model, "h", [L.Dropout(0.5, name="new_drop"), L.Identity(name="ident")])
    new_drop = result.get_layer("new_drop")
    assert [n.operation.name for n in new_drop._outbound_nodes] == ["ident"]
    assert {n.operation.name for n in result.get_layer("ident")._outbound_nodes} == {"a", "b"}
    assert result.outputs[2]._keras_history[0].name == "ident"  # the model output at h moved too
    assert_same_outputs(model, result, random_inputs(model))


def test_insert_dropout_inside_nested_vgg16(random_inputs, run_model):
    model = _nested_vgg()
    result = kgraft.insert_layer(model, "vgg16/block3_conv1", L.Dropout(0.4, name="ft_dropout"))
    inner = result.get_layer("vgg16")
    assert "ft_dropout" in [l.name for l in inner.layers]
    xs = random_inputs(model)
    np.testing.assert_allclose(run_model(result, xs), run_model(model, xs), atol=1e-5)
    trained = result(xs, training=True)
    assert not np.allclose(np.asarray(trained), run_model(model, xs))  # the dropout is live in training


def test_insert_a_type_changing_layer_is_reinferred(run_model, random_inputs):
    model = _chain()
    result = kgraft.insert_layer(model, "drop", L.UpSampling2D(name="up"))  # c2 still fits: same channels
    assert tuple(result.get_layer("c2").output.shape) == (None, 24, 24, 4)
    assert run_model(result, random_inputs(model)).shape == (2, 3)
    result = kgraft.insert_layer(model, "gap", [L.Dense(7, name="wide"), L.Dense(4, name="narrow")])
    assert result.get_layer("wide").kernel.shape == (4, 7)


def test_insert_with_weights_that_no_longer_fit_is_a_shape_error():
    with pytest.raises(kgraft.ShapeError, match=r"layer 'c2' \(Conv2D\).*input type was f32\[\?,12,12,8\] "
                                                r"and is now f32\[\?,12,12,5\]"):
        kgraft.insert_layer(_chain(), "drop", L.Conv2D(5, 1, name="squeeze"))


# ---------------------------------------------------------------------------- replace_layer
def test_replace_every_relu_of_mobilenetv2_by_class(random_inputs, run_model, enliven):
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    x = keras.Input((32, 32, 3))
    model = keras.Model(x, L.GlobalAveragePooling2D()(base(x)))
    enliven(model)
    relus = [l.name for l in base.layers if isinstance(l, L.ReLU)]
    result = kgraft.replace_layer(model, "ReLU", lambda old: L.LeakyReLU(negative_slope=0.0))
    inner = result.get_layer(base.name)
    assert isinstance(inner, keras.Model)
    kinds = {l.name: type(l).__name__ for l in inner.layers}
    assert len(relus) == 35 and all(kinds[n] == "LeakyReLU" for n in relus)
    xs = random_inputs(model)
    # LeakyReLU(0) is ReLU without the max_value=6 cap: equal where no activation exceeds 6
    got, want = run_model(result, xs), run_model(model, xs)
    assert got.shape == want.shape and np.all(np.isfinite(got))


def test_replace_with_an_equivalent_layer_equals_source(assert_same_outputs, random_inputs, enliven):
    model = _with_stats(_chain(), enliven)
    result = kgraft.replace_layer(model, "r1", L.Activation("relu", name="ignored"))
    assert type(result.get_layer("r1")).__name__ == "Activation"
    assert_same_outputs(model, result, random_inputs(model))


def test_replace_copies_weights_when_they_fit(assert_same_outputs, random_inputs):
    model = _chain()
    result = kgraft.replace_layer(model, "c2", L.Conv2D(4, 3, padding="same", activation="linear"))
    assert_same_outputs(model, result, random_inputs(model))


def test_replace_with_weights_that_do_not_fit():
    with pytest.raises(kgraft.ShapeError, match=r"layer 'c2' \(Conv2D\).*copy_weights=False"):
        kgraft.replace_layer(_chain(), "c2", L.Conv2D(6, 3, padding="same"))
    result = kgraft.replace_layer(_chain(), "c2", L.Conv2D(4, 1, padding="same"), copy_weights=False, check=True)
    assert result.get_layer("c2").kernel.shape == (1, 1, 8, 4)


def test_replace_unknown_target():
    with pytest.raises(kgraft.RefError, match="Closest classes: ReLU"):
        kgraft.replace_layer(_chain(), "RELU", L.ReLU())


# ---------------------------------------------------------------------------- set_input_shape
def test_set_input_shape_fully_convolutional_two_sizes(random_inputs, run_model, enliven):
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3),
                                           alpha=0.35, pooling="avg")
    enliven(model)
    result = kgraft.set_input_shape(model, (None, None, 3))  # checked equal at 32x32 inside
    assert tuple(result.inputs[0].shape) == (None, None, None, 3)
    for size in (32, 64):
        x = np.random.default_rng(size).standard_normal((1, size, size, 3)).astype("float32")
        assert run_model(result, x).shape == (1, 1280)
    x32 = random_inputs(model)
    np.testing.assert_allclose(run_model(result, x32), run_model(model, x32), atol=1e-5)


def test_set_input_shape_larger_fixed_size(run_model):
    model = _chain()
    result = kgraft.set_input_shape(model, (24, 24, 3))
    assert tuple(result.inputs[0].shape) == (None, 24, 24, 3)
    assert result.count_params() == model.count_params()
    assert run_model(result, np.zeros((1, 24, 24, 3), "float32")).shape == (1, 3)


def test_set_input_shape_into_a_nested_model(run_model):
    model = _nested_vgg()
    result = kgraft.set_input_shape(model, (64, 64, 3), check=False)
    assert tuple(result.get_layer("vgg16").inputs[0].shape) == (None, 64, 64, 3)
    assert run_model(result, np.ones((1, 64, 64, 3), "float32")).shape == (1, 4)


def _stem_then_nested():
    """A strided stem, then a nested model (itself nesting one behind a pooling layer)."""
    x_in = keras.Input((8, 8, 6))
    deepest = keras.Model(x_in, L.Conv2D(5, 3, padding="same", name="deep_conv")(x_in), name="deepest")
    y_in = keras.Input((16, 16, 6))
    y = deepest(L.MaxPooling2D(name="inner_pool")(L.Conv2D(6, 3, padding="same", name="inner_conv")(y_in)))
    inner = keras.Model(y_in, y, name="inner")
    x = keras.Input((32, 32, 3), name="image")
    stem = L.Conv2D(6, 3, strides=2, padding="same", name="stem")(x)
    return keras.Model(x, L.GlobalAveragePooling2D(name="gap")(inner(stem)), name="outer")


def test_set_input_shape_reaches_nested_models_behind_shape_changing_layers(run_model, enliven):
    model = _stem_then_nested()
    enliven(model)
    result = kgraft.set_input_shape(model, (None, None, 3))  # checked equal at 32x32
    assert tuple(result.get_layer("inner").inputs[0].shape) == (None, None, None, 6)
    assert tuple(result.get_layer("inner").get_layer("deepest").inputs[0].shape) == (None, None, None, 6)
    for size in (32, 48):
        assert run_model(result, np.ones((1, size, size, 3), "float32")).shape == (1, 5)
    fixed = kgraft.set_input_shape(model, (64, 64, 3))
    assert tuple(fixed.get_layer("inner").inputs[0].shape) == (None, 32, 32, 6)
    assert tuple(fixed.get_layer("inner").get_layer("deepest").inputs[0].shape) == (None, 16, 16, 6)


def test_set_input_shape_grayscale_is_a_shape_error():
    with pytest.raises(kgraft.ShapeError, match=r"layer 'c1' \(Conv2D\).*was f32\[\?,12,12,3\] and is now "
                                                r"f32\[\?,12,12,1\]"):
        kgraft.set_input_shape(_chain(), (12, 12, 1))


def test_set_input_shape_flatten_dense_is_a_shape_error():
    x = keras.Input((8, 8, 3))
    model = keras.Model(x, L.Dense(2, name="fc")(L.Flatten()(L.Conv2D(4, 3, name="conv")(x))))
    with pytest.raises(kgraft.ShapeError, match=r"layer 'fc' \(Dense\).*was f32\[\?,144\] and is now f32\[\?,400\]"):
        kgraft.set_input_shape(model, (12, 12, 3))


def test_set_input_shape_rank_must_stay():
    with pytest.raises(kgraft.KgraftError, match="the rank must stay"):
        kgraft.set_input_shape(_chain(), (12, 3))


# ---------------------------------------------------------------------------- rename
def test_rename_prefix_makes_an_ensemble_of_two_copies(random_inputs, run_model):
    model = _nested_vgg()
    a, b = kgraft.rename(model, "a_"), kgraft.rename(model, "b_")
    assert a.name == "a_classifier" and "a_vgg16" in [l.name for l in a.layers]
    assert a.get_layer("a_vgg16").get_layer("a_block1_conv1") is not None
    x = keras.Input((32, 32, 3), name="image")
    ensemble = keras.Model(x, L.Average()([a(x), b(x)]))
    xs = random_inputs(model)
    np.testing.assert_allclose(run_model(ensemble, xs), run_model(model, xs), atol=1e-5)


def test_rename_by_dict_and_callable(assert_same_outputs, random_inputs):
    model = _chain()
    by_dict = kgraft.rename(model, {"c1": "stem", "logits": "head"})
    assert [l.name for l in by_dict.layers][1] == "stem" and by_dict.layers[-1].name == "head"
    by_fn = kgraft.rename(model, lambda n: n.upper() if n.startswith("c") else None)
    assert {"C1", "C2", "bn1"} <= {l.name for l in by_fn.layers}
    assert_same_outputs(model, by_dict, random_inputs(model))


def test_rename_clash_names_both():
    with pytest.raises(kgraft.KgraftError, match="'c1' and 'c2' would both be called 'conv'"):
        kgraft.rename(_chain(), {"c1": "conv", "c2": "conv"})
    with pytest.raises(kgraft.KgraftError, match="no layer called 'nope'"):
        kgraft.rename(_chain(), {"nope": "x"})


# ---------------------------------------------------------------------------- fold_batchnorm
def test_fold_batchnorm_hand_built_with_statistics(random_inputs, run_model, enliven):
    x = keras.Input((10, 10, 3))
    y = L.BatchNormalization(name="bn_a")(L.Conv2D(6, 3, name="conv")(x))
    y = L.BatchNormalization(name="bn_b")(L.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(y))
    y = L.GlobalAveragePooling2D()(y)
    y = L.BatchNormalization(name="bn_c")(L.Dense(5, name="fc")(y))
    model = keras.Model(x, y)
    enliven(model)
    result = kgraft.fold_batchnorm(model)
    assert not any(isinstance(l, L.BatchNormalization) for l in result.layers)
    assert result.get_layer("dw").use_bias
    xs = random_inputs(model)
    want, got = run_model(model, xs), run_model(result, xs)
    assert np.max(np.abs(want - got)) <= 1e-4 * max(1.0, np.max(np.abs(want)))


def test_fold_keeps_bn_that_cannot_fold(run_model, random_inputs):
    x = keras.Input((8, 8, 3))
    c = L.Conv2D(4, 3, activation="relu", name="act_conv")(x)  # an activation in between: no fold
    shared_use = L.Conv2D(4, 1, name="two_uses")(c)
    y = L.Add()([L.BatchNormalization(name="bn_kept")(shared_use), shared_use])
    y = L.BatchNormalization(name="bn_after_act")(L.Activation("relu")(y))
    model = keras.Model(x, y)
    result = kgraft.fold_batchnorm(model)
    assert {"bn_kept", "bn_after_act"} <= {l.name for l in result.layers}


def test_fold_batchnorm_mobilenetv2_nested(enliven, random_inputs, run_model, assert_input_sensitive):
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35)
    x = keras.Input((32, 32, 3))
    model = _with_stats(keras.Model(x, L.GlobalAveragePooling2D()(base(x))), enliven)
    result = kgraft.fold_batchnorm(model)
    inner = result.get_layer(base.name)
    assert sum(isinstance(l, L.BatchNormalization) for l in base.layers) == 52
    assert sum(isinstance(l, L.BatchNormalization) for l in inner.layers) == 0
    xs = random_inputs(model)
    want = run_model(model, xs)
    assert_input_sensitive(want, atol=1e-4)
    assert np.max(np.abs(want - run_model(result, xs))) <= 1e-4 * max(1.0, np.max(np.abs(want)))


@pytest.mark.slow
def test_fold_batchnorm_resnet50(enliven, random_inputs, run_model):
    model = _with_stats(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), enliven)
    result = kgraft.fold_batchnorm(model)
    assert sum(isinstance(l, L.BatchNormalization) for l in model.layers) == 53
    assert sum(isinstance(l, L.BatchNormalization) for l in result.layers) == 0
    assert result.count_params() < model.count_params()


# ---------------------------------------------------------------------------- the argument and check
def test_check_catches_a_wrong_result(monkeypatch):
    from kgraft.backends.keras import weight_plan

    real = weight_plan._fold

    def broken(values, step):
        real(values, step)
        values["bias"] = values["bias"] + 1.0

    monkeypatch.setattr(weight_plan, "_fold", broken)
    with pytest.raises(kgraft.EquivalenceError, match=r"fold_batchnorm: the result does not compute what the source "
                                                      r"model computes .* the first differing tensor is 'c1' \(Conv2D\)"
                                                      r".*differing output\(s\): 'logits'"):
        kgraft.fold_batchnorm(_chain())


def test_delete_channels_check_catches_a_wrong_slice(monkeypatch):
    import importlib

    dc = importlib.import_module("kgraft.passes.delete_channels")
    real = dc._step

    def shifted(plan, layer, weight, axis, keep, first):  # c2 reads the first rows, not the kept ones
        real(plan, layer, weight, axis, tuple(range(len(keep))) if layer == "c2" else keep, first)

    monkeypatch.setattr(dc, "_step", shifted)
    with pytest.raises(kgraft.EquivalenceError, match=r"delete_channels: .*the first differing tensor is 'c2'"):
        kgraft.delete_channels(_chain(), "c1", [0, 1, 2])


def test_surgery_functions_accept_files(tmp_path, assert_same_outputs, random_inputs):
    model = _chain()
    path = str(tmp_path / "m.keras")
    model.save(path)
    result = kgraft.delete_layer(path, "drop")
    assert_same_outputs(model, result, random_inputs(model))
