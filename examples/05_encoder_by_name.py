"""Take the encoder (and the decoder) out of an autoencoder by layer NAME, not by index.

The usual recipe, ``keras.Model(model.input, model.layers[7].output)`` and rebuilding the
decoder by re-applying ``model.layers[8:]`` to a new Input, breaks as soon as a layer is
added. With kgraft the encoder is ``extract(model, "bottleneck")`` and the decoder is the
second partition of ``split(model, "bottleneck")``, a model that takes the code as input.

Run: python examples/05_encoder_by_name.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
from keras import layers

import kgraft
from kgraft.numerics import max_abs_diff


def build_autoencoder():
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="enc_conv1")(inputs)
    x = layers.MaxPooling2D(name="enc_pool1")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="enc_conv2")(x)
    x = layers.MaxPooling2D(name="enc_pool2")(x)
    code = layers.Conv2D(8, 1, activation="relu", name="bottleneck")(x)
    x = layers.UpSampling2D(name="dec_up1")(code)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="dec_conv1")(x)
    x = layers.UpSampling2D(name="dec_up2")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="dec_conv2")(x)
    outputs = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, outputs, name="autoencoder")


def main():
    keras.utils.set_random_seed(0)  # reproducible random weights and printed numbers
    model = build_autoencoder()
    x = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")

    encoder = kgraft.extract(model, "bottleneck")
    _, decoder = kgraft.split(model, "bottleneck")
    code = encoder(x)
    reference_code = keras.Model(model.input, model.get_layer("bottleneck").output)(x)
    enc_diff = max_abs_diff(code, reference_code)
    dec_diff = max_abs_diff(decoder(code), model(x))
    print(f"encoder: {[l.name for l in encoder.layers]} -> {tuple(code.shape)}; max |diff| {enc_diff:.2e}")
    print(f"decoder: input {tuple(decoder.inputs[0].shape)} -> {tuple(decoder.outputs[0].shape)}, "
          f"layers {[l.name for l in decoder.layers]}; decoder(encoder(x)) vs model(x) max |diff| {dec_diff:.2e}")

    assert enc_diff <= 1e-5 and dec_diff <= 1e-5
    return {"enc_diff": enc_diff, "dec_diff": dec_diff, "code_shape": tuple(code.shape),
            "encoder_layers": [l.name for l in encoder.layers], "decoder_layers": [l.name for l in decoder.layers],
            "decoder_input_shape": tuple(decoder.inputs[0].shape)}


if __name__ == "__main__":
    main()
