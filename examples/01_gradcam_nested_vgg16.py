"""Grad-CAM on a VGG16 nested inside a Sequential classifier.

The classic Keras problem: the conv base is a nested model, so
``keras.Model(model.inputs, model.get_layer("vgg16").get_layer("block5_conv3").output)``
fails (that tensor lives in the inner model's own graph). kgraft inlines the nested model
and extracts a new model with the inner feature map and the final prediction as outputs:
same weights, same numbers, no retraining, no architecture change.

Run: python examples/01_gradcam_nested_vgg16.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

import kgraft


def build_classifier():
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    return keras.Sequential([keras.Input((64, 64, 3)), base, keras.layers.GlobalAveragePooling2D(name="gap"),
                             keras.layers.Dense(5, activation="softmax", name="predictions")], name="classifier")


def main():
    keras.utils.set_random_seed(0)  # reproducible random weights and printed numbers
    model = build_classifier()
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")

    try:  # the naive approach: a tensor of the inner graph is not connected to model.inputs
        keras.Model(model.inputs, model.get_layer("vgg16").get_layer("block5_conv3").output)
        naive_error = None
    except ValueError as e:
        naive_error = str(e).splitlines()[0]
    print("naive keras.Model(...) fails:", (naive_error or "it did not fail")[:160])

    grad_model = kgraft.extract(model, ["vgg16/block5_conv3", "predictions"])
    conv, preds = grad_model(x)
    vgg = model.get_layer("vgg16")  # reference features: the inner model, run on its own
    inner = keras.Model(vgg.input, vgg.get_layer("block5_conv3").output)(x)
    diff = max(float(np.max(np.abs(preds.numpy() - model(x).numpy()))),
               float(np.max(np.abs(conv.numpy() - inner.numpy()))))
    print(f"grad model outputs: conv {tuple(conv.shape)}, predictions {tuple(preds.shape)}; "
          f"max |diff| vs source: {diff:.2e}")
    assert diff <= 1e-5

    with tf.GradientTape() as tape:  # Grad-CAM: d(class score)/d(feature map), pooled per channel
        conv, preds = grad_model(x)
        score = tf.gather(preds, tf.argmax(preds, axis=1), axis=1, batch_dims=1)
    grads = tape.gradient(score, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    heatmap = tf.nn.relu(tf.reduce_sum(weights * conv, axis=-1)).numpy()
    heatmap /= heatmap.max(axis=(1, 2), keepdims=True) + 1e-8
    grad_norm = float(tf.norm(grads))
    print(f"Grad-CAM heatmap {heatmap.shape}, |grad| = {grad_norm:.3e}, heatmap range "
          f"[{heatmap.min():.2f}, {heatmap.max():.2f}]")
    assert np.isfinite(grad_norm) and grad_norm > 0
    return {"naive_error": naive_error, "diff": diff, "conv_shape": tuple(conv.shape),
            "pred_shape": tuple(preds.shape), "heatmap_shape": heatmap.shape, "grad_norm": grad_norm}


if __name__ == "__main__":
    main()
