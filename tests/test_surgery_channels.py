"""delete_channels: the deleted channels are followed through everything that carries them.

``check=True`` (on in every call here) compares the result with the reference the contract names:
the source with the weights that read the deleted channels zeroed in the first channel-mixing
consumers. The tests add what that cannot see: parameter counts drop by exactly what was removed,
kept weights are the source's, and what cannot be followed is refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest

import kgraft

keras = pytest.importorskip("keras")
L = keras.layers


def _conv_stack():
    x = keras.Input((10, 10, 3), name="image")
    y = L.Conv2D(6, 3, padding="same", name="c1")(x)
    y = L.BatchNormalization(name="bn")(y)
    y = L.PReLU(shared_axes=[1, 2], name="prelu")(y)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.ZeroPadding2D(1, name="pad")(y)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(y)
    y = L.SeparableConv2D(5, 3, padding="same", name="sep")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, L.Dense(2, name="fc")(y), name="stack")


def _stats(model, enliven):
    enliven(model)
    return model


def test_delete_channels_through_per_channel_layers(enliven):
    model = _stats(_conv_stack(), enliven)
    result = kgraft.delete_channels(model, "c1", [0, 3])
    dw_mult, kept = 2, 4
    assert result.get_layer("c1").filters == kept
    assert result.get_layer("dw").kernel.shape == (3, 3, kept, dw_mult)
    assert result.get_layer("sep").depthwise_kernel.shape == (3, 3, kept * dw_mult, 1)
    # c1 kernel+bias, BN (4 per channel), PReLU alpha, dw kernel+bias (x2), sep depthwise and pointwise rows
    removed = 2 * (27 + 1) + 2 * 4 + 2 + 2 * (9 * 2 + 2) + 4 * 9 + 4 * 5
    assert model.count_params() - result.count_params() == removed
    keep = [1, 2, 4, 5]
    np.testing.assert_array_equal(result.get_layer("c1").kernel.numpy(), model.get_layer("c1").kernel.numpy()[..., keep])
    np.testing.assert_array_equal(result.get_layer("bn").moving_mean.numpy(), model.get_layer("bn").moving_mean.numpy()[keep])


def test_delete_channels_flatten_then_dense(random_inputs, run_model):
    x = keras.Input((5, 4, 2))
    y = L.Flatten(name="flat")(L.Conv2D(3, 2, name="conv")(x))
    model = keras.Model(x, L.Dense(2, name="fc")(y))
    result = kgraft.delete_channels(model, "conv", [1])
    positions = np.arange(4 * 3 * 3).reshape(4, 3, 3)[..., [0, 2]].reshape(-1)  # channels-last flatten
    np.testing.assert_array_equal(result.get_layer("fc").kernel.numpy(), model.get_layer("fc").kernel.numpy()[positions])


def test_delete_channels_concatenate_offsets():
    x = keras.Input((6, 6, 3))
    a, b = L.Conv2D(2, 1, name="a")(x), L.Conv2D(3, 1, name="b")(x)
    y = L.Concatenate(name="cat")([a, b])
    model = keras.Model(x, L.Conv2D(4, 1, name="mix")(y))
    result = kgraft.delete_channels(model, "b", [0, 2])
    np.testing.assert_array_equal(result.get_layer("mix").kernel.numpy(), model.get_layer("mix").kernel.numpy()[:, :, [0, 1, 3], :])


def _residual():
    x = keras.Input((6, 6, 4))
    a, b = L.Conv2D(4, 1, name="a")(x), L.Conv2D(4, 1, name="b")(x)
    y = L.ReLU(name="relu")(L.Add(name="add")([a, b]))
    return keras.Model(x, L.Conv2D(2, 1, name="mix")(y))


def test_delete_channels_element_wise_merge_needs_the_same_channels_everywhere():
    model = _residual()
    result = kgraft.delete_channels(model, {"a": [1], "b": [1]})  # one rebuild for both
    assert result.get_layer("mix").kernel.shape == (1, 1, 3, 2)
    with pytest.raises(kgraft.KgraftError, match=r"through 'add' \(Add\): every operand must lose the same "
                                                 r"channels \(a loses \[1\]; b loses none\)"):
        kgraft.delete_channels(model, "a", [1])


def test_delete_channels_as_parallel_lists_and_into_the_output(run_model, random_inputs):
    model = _residual()
    result = kgraft.delete_channels(model, ["a", "b", "mix"], [[0], [0], [1]])
    assert run_model(result, random_inputs(model)).shape == (2, 6, 6, 1)  # the output lost channel 1


def test_delete_channels_in_a_nested_model_and_on_a_shared_consumer(random_inputs, run_model):
    inner = _conv_stack()
    x = keras.Input((10, 10, 3))
    model = keras.Model(x, inner(x))
    result = kgraft.delete_channels(model, "stack/c1", [2])  # the channels stay inside: nesting kept
    assert result.get_layer("stack").get_layer("c1").filters == 5
    assert model.count_params() - result.count_params() == 28 + 4 + 1 + (9 * 2 + 2) + 2 * 9 + 2 * 5
    shared = L.Dense(3, name="shared")
    x2 = keras.Input((4,))
    h = L.Dense(4, name="h")(x2)
    model2 = keras.Model(x2, [shared(h), shared(L.ReLU()(h))])
    result2 = kgraft.delete_channels(model2, "h", [3])
    assert result2.get_layer("shared").kernel.shape == (3, 3)


def test_delete_channels_across_a_nested_models_boundary_inlines_it(enliven):
    inner_in = keras.Input((6, 6, 4))
    inner = keras.Model(inner_in, L.Conv2D(3, 1, name="inner_conv")(L.ReLU(name="inner_relu")(inner_in)), name="inner")
    x = keras.Input((6, 6, 3))
    stem = L.Conv2D(4, 3, padding="same", name="stem")(x)
    model = keras.Model(x, L.GlobalAveragePooling2D(name="gap")(inner(stem)))
    enliven(model)
    result = kgraft.delete_channels(model, "stem", [1])  # checked against the zeroed reference
    assert "inner" not in [layer.name for layer in result.layers]  # flat: the inner input type changed
    assert result.get_layer("inner_conv").kernel.shape == (1, 1, 3, 3)
    same = kgraft.delete_channels(model, "inner/inner_conv", [0])  # the channels leave the nested model: flat
    assert same.get_layer("inner_conv").filters == 2


def test_delete_channels_mobilenetv2_residual_blocks_batched(enliven):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)
    enliven(model)
    before = model.count_params()
    result = kgraft.delete_channels(model, {"block_1_project": [0, 1], "block_2_project": [0, 1]})
    assert result.get_layer("block_1_project").filters == 6
    assert result.get_layer("block_3_expand").kernel.shape[2] == 6
    # two 48->8 projections lose 2 kernel columns each (no bias) and their BNs 4 per channel; the
    # channels reach block_2_expand (from block_1, 8->48) and, through the add, block_3_expand (8->48)
    assert before - result.count_params() == 2 * (2 * 48 + 2 * 4) + 2 * 48 + 2 * 48


@pytest.mark.parametrize("build, ref, channels, message", [
    (lambda x: L.Reshape((-1,), name="reshape")(L.Conv2D(2, 1, name="conv")(x)), "conv", [0],
     r"cannot follow the deleted channels through 'reshape' \(Reshape\)"),
    (lambda x: L.DepthwiseConv2D(1, name="dw")(x), "dw", [0], r"the channels of 'dw' come from the model input "
                                                              r"'input_layer.*', which kgraft cannot delete channels from"),
    (lambda x: L.DepthwiseConv2D(1, depth_multiplier=2, name="dw")(L.Conv2D(2, 1, name="conv")(x)), "dw", [1],
     r"only whole groups can go: delete \[0, 1\] \(input channels \[0\]\), not \[1\]"),
    (lambda x: L.DepthwiseConv2D(1, name="dw")(L.Reshape((4, 4, 3), name="reshape")(x)), "dw", [0],
     r"the channels of 'dw' come from 'reshape' \(Reshape\)"),
    (lambda x: L.Conv2D(2, 1, name="conv")(x), "conv", [0, 1], r"would leave none of its 2"),
    (lambda x: L.Conv2D(2, 1, name="conv")(x), "conv", [5], r"'conv' has 2 channels \(0..1\), not 5"),
    (lambda x: L.Softmax(name="sm")(L.Conv2D(3, 1, name="conv")(x)), "conv", [0], r"softmax|mixes the channels"),
])
def test_delete_channels_refuses_by_name(build, ref, channels, message):
    x = keras.Input((4, 4, 3))
    with pytest.raises(kgraft.KgraftError, match=message):
        kgraft.delete_channels(keras.Model(x, build(x)), ref, channels)


def _depthwise_model():
    x = keras.Input((8, 8, 3))
    a, b = L.Conv2D(4, 3, padding="same", name="a")(x), L.Conv2D(4, 1, name="b")(x)
    y = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Add(name="add")([a, b])))
    dw = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(y)
    side = L.Conv2D(2, 1, name="side")(y)  # reads the producer's channels too
    out = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(3, 1, name="pw")(dw))
    return keras.Model(x, [out, L.GlobalAveragePooling2D(name="gap2")(side)])


def test_delete_channels_of_a_depthwise_layer_go_upstream(enliven):
    model = _stats(_depthwise_model(), enliven)
    result = kgraft.delete_channels(model, "dw", [2, 3])  # the group of input channel 1, from a and b (the Add)
    assert (result.get_layer("a").filters, result.get_layer("b").filters) == (3, 3)
    assert result.get_layer("dw").kernel.shape == (3, 3, 3, 2)
    assert result.get_layer("side").kernel.shape == (1, 1, 3, 2)  # every reader of the producers loses it
    # a (27+1), b (3+1), bn (4), dw kernel+bias (9*2+2), side and pw input rows (2, 2*3)
    assert model.count_params() - result.count_params() == 28 + 4 + 4 + 20 + 2 + 6
    np.testing.assert_array_equal(result.get_layer("dw").kernel.numpy(),
                                  model.get_layer("dw").kernel.numpy()[:, :, [0, 2, 3], :])


def test_delete_channels_of_mobilenetv2_depthwise_layers(enliven):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5)
    enliven(model)
    result = kgraft.delete_channels(model, {"block_1_depthwise": [0, 5], "expanded_conv_depthwise": [1]})
    assert result.get_layer("block_1_expand").filters == model.get_layer("block_1_expand").filters - 2
    assert result.get_layer("Conv1").filters == model.get_layer("Conv1").filters - 1
    assert result.get_layer("block_1_depthwise").kernel.shape[2] == model.get_layer("block_1_depthwise").kernel.shape[2] - 2


@pytest.mark.slow
def test_delete_channels_resnet50_ten_layers(enliven):
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    enliven(model)
    for layer in model.layers:  # contractive, as in test_surgery_ops._with_stats: a chaotic random
        if isinstance(layer, keras.layers.BatchNormalization):  # net amplifies float32 rounding past 1e-5
            layer.gamma.assign(layer.gamma.numpy() * 0.8)
    jobs = {f"conv{s}_block{b}_1_conv": [0, 1] for s, b in [(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (3, 4),
                                                             (4, 1), (4, 2), (4, 3)]}
    result = kgraft.delete_channels(model, jobs)
    assert result.count_params() < model.count_params()
