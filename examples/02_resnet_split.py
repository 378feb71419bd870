"""Split a ResNet50 into head and tail; bad cuts, multi-tensor cuts, custom layers, freezing.

* a single-tensor cut at a block output composes back to the source model;
* a cut inside a residual branch is rejected with a CutError that names the bypassing path
  (the skip connection) and the nearest valid split points;
* cutting both branches of that residual block at once is a valid (multi-tensor) cut;
* a model with a custom layer is split straight from its .keras file (custom_objects);
* kgraft.downstream names the layers after an InceptionV3 block, to train only those.

Run: python examples/02_resnet_split.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tempfile

import keras
import numpy as np

import kgraft
from kgraft.numerics import max_abs_diff


class Scale(keras.layers.Layer):
    """A custom layer: multiplies by one trainable scalar."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(), initializer="ones")

    def call(self, x):
        return x * self.scale


def compose(parts, x):
    """Feed each partition's outputs to the next one."""
    for part in parts:
        x = part(x)
    return x


def main():
    keras.utils.set_random_seed(0)  # reproducible random weights and printed numbers
    res = {}
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    expected = resnet(x)

    head, tail = kgraft.split(resnet, "conv4_block6_out")
    res["split_diff"] = max_abs_diff(compose([head, tail], x), expected)
    print(f"split at conv4_block6_out: head -> {head.outputs[0].shape}, tail -> {tail.outputs[0].shape}; "
          f"max |diff| {res['split_diff']:.2e}")

    try:  # a layer inside a residual branch: the skip connection goes around it
        kgraft.split(resnet, "conv3_block1_2_conv")
    except kgraft.CutError as e:
        res["cut_error"] = str(e)
        print("CutError:", str(e).split("\n(in pass")[0])

    cut = ["conv3_block1_2_conv", "conv3_block1_0_bn"]  # both branches of conv3_block1
    head, tail = kgraft.split(resnet, [cut])
    res["multi_cut_shapes"] = [tuple(t.shape) for t in head.outputs]
    res["multi_cut_diff"] = max_abs_diff(compose([head, tail], x), expected)
    print(f"multi-tensor cut {cut}: head outputs {res['multi_cut_shapes']}; max |diff| {res['multi_cut_diff']:.2e}")

    inp = keras.Input((16,))
    small = keras.Model(inp, keras.layers.Dense(3, name="out")(Scale(name="scale")(keras.layers.Dense(8, name="d1")(inp))))
    small.get_layer("scale").scale.assign(2.5)
    path = os.path.join(tempfile.mkdtemp(), "scaled.keras")
    small.save(path)
    parts = kgraft.split(path, "scale", custom_objects={"Scale": Scale})
    xs = np.random.default_rng(1).standard_normal((4, 16)).astype("float32")
    res["custom_diff"] = max_abs_diff(compose(parts, xs), small(xs))
    print(f"custom Scale layer, split from {os.path.basename(path)}: {len(parts)} parts; "
          f"max |diff| {res['custom_diff']:.2e}")

    inception = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=10)
    trainable = set(kgraft.downstream(inception, "mixed5"))
    for layer in inception.layers:
        layer.trainable = layer.name in trainable
    res["n_trainable_layers"], res["n_layers"] = len(trainable), len(inception.layers)
    res["n_trainable_weights"] = len(inception.trainable_weights)
    print(f"InceptionV3: {len(trainable)} of {len(inception.layers)} layers after mixed5 set trainable "
          f"({len(inception.trainable_weights)} trainable weights, {len(inception.non_trainable_weights)} frozen)")

    for key in ("split_diff", "multi_cut_diff", "custom_diff"):
        assert res[key] <= 1e-5, (key, res[key])
    return res


if __name__ == "__main__":
    main()
