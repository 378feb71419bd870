"""An auxiliary head on an inner layer of an EfficientNetB0 nested inside a Functional model.

Deep supervision / auxiliary losses need a second output on an intermediate tensor, here
``block5a_expand_conv`` inside the nested ``efficientnetb0`` model. ``kgraft.add_head`` inlines
the nested model, attaches the head, and returns a model whose outputs are the original
output(s) followed by the head's: the original outputs keep their numbers exactly.

Run: python examples/04_aux_head_efficientnet.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

import kgraft


def build_model():
    base = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
    inputs = keras.Input((64, 64, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inputs))
    outputs = keras.layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="classifier")


def stand_in_for_training(model, x):
    """BatchNorm statistics from a batch, as training would leave them (a trained model needs none of
    this): with weights=None they stay at 0/1 and EfficientNet's activations shrink to ~1e-16, so
    every input would give the same prediction and the comparison below would prove nothing."""
    norms = [l for l in model.get_layer("efficientnetb0").layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        layer.momentum = 0.99


def main():
    keras.utils.set_random_seed(0)  # reproducible random weights and printed numbers
    model = build_model()
    rng = np.random.default_rng(0)
    stand_in_for_training(model, rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32"))
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")  # EfficientNet rescales pixels itself

    aux_head = [keras.layers.GlobalAveragePooling2D(name="aux_gap"),
                keras.layers.Dense(4, activation="softmax", name="aux_classes")]
    with_aux = kgraft.add_head(model, "efficientnetb0/block5a_expand_conv", aux_head, name="classifier_aux")
    main_out, aux_out = with_aux(x)
    reference = np.asarray(model(x))
    diff = float(np.max(np.abs(np.asarray(main_out) - reference)))
    print(f"{with_aux.name}: {len(model.outputs)} -> {len(with_aux.outputs)} outputs, "
          f"shapes {tuple(main_out.shape)} + aux {tuple(aux_out.shape)}; original output max |diff| {diff:.2e}")
    print(f"trainable weights: {len(model.trainable_weights)} -> {len(with_aux.trainable_weights)} "
          f"(+ the head's kernel and bias)")

    with_aux.compile(optimizer="adam", loss=["sparse_categorical_crossentropy"] * 2, loss_weights=[1.0, 0.3])
    assert diff <= 1e-5 and aux_out.shape == (2, 4)
    return {"diff": diff, "spread": float(np.max(np.abs(reference[0] - reference[1]))), "n_outputs": (len(model.outputs), len(with_aux.outputs)),
            "main_shape": tuple(main_out.shape), "aux_shape": tuple(aux_out.shape),
            "trainable_weights": (len(model.trainable_weights), len(with_aux.trainable_weights))}


if __name__ == "__main__":
    main()
