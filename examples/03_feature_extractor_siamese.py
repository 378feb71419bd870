"""Feature extractors from ResNet50: multi-scale features, and a shared triplet encoder.

* ``kgraft.extract`` with several refs gives one model returning intermediate activations of
  three stages (what a feature-pyramid or perceptual loss needs), equal to the source's;
* a single-output feature model is then used as ONE layer called three times in a triplet
  (anchor / positive / negative) model: the three branches share weights.

Run: python examples/03_feature_extractor_siamese.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

import kgraft
from kgraft.numerics import max_abs_diff

STAGES = ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out"]


def main():
    keras.utils.set_random_seed(0)  # reproducible random weights and printed numbers
    res = {}
    resnet = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")

    features = kgraft.extract(resnet, STAGES)
    got = features(x)
    # reference: the same activations read from the source model with plain Keras
    reference = keras.Model(resnet.input, [resnet.get_layer(n).output for n in STAGES])(x)
    res["feature_shapes"] = [tuple(t.shape) for t in got]
    res["feature_diff"] = max_abs_diff(got, reference)
    res["feature_layers"] = (len(features.layers), len(resnet.layers))
    print(f"multi-scale features ({len(features.layers)} of {len(resnet.layers)} layers kept): "
          f"{res['feature_shapes']}; max |diff| {res['feature_diff']:.2e}")

    encoder = kgraft.extract(resnet, "conv3_block4_out")
    embed = keras.Sequential([encoder, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(32)],
                             name="embedding")
    anchor, positive, negative = (keras.Input((64, 64, 3), name=n) for n in ("anchor", "positive", "negative"))
    triplet = keras.Model([anchor, positive, negative], [embed(anchor), embed(positive), embed(negative)],
                          name="triplet")  # train with e.g. a triplet loss on the three embeddings

    rng = np.random.default_rng(1)
    xa, xp, xn = (rng.standard_normal((2, 64, 64, 3)).astype("float32") for _ in range(3))
    ea, ep, en = triplet([xa, xp, xa])  # negative := anchor: equal embeddings iff the weights are shared
    res["triplet_shapes"] = [tuple(t.shape) for t in triplet([xa, xp, xn])]
    res["embed_layers"] = sum(layer is embed for layer in triplet.layers)
    res["embed_calls"] = len(embed._inbound_nodes)
    res["shared_weights"] = len(triplet.weights) == len(embed.weights)
    res["anchor_vs_negative"] = max_abs_diff(ea, en)
    print(f"triplet model: outputs {res['triplet_shapes']}, one embedding layer called {res['embed_calls']} "
          f"times, {len(triplet.weights)} weights (= the embedding's {len(embed.weights)}); "
          f"max |anchor - negative| on equal images {res['anchor_vs_negative']:.1e}")

    assert res["feature_diff"] <= 1e-5 and res["anchor_vs_negative"] <= 1e-5
    assert res["shared_weights"] and res["embed_layers"] == 1 and res["embed_calls"] == 3
    return res


if __name__ == "__main__":
    main()
