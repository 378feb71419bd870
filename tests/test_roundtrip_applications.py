"""kgraft.lower -> kgraft.build on every keras.applications architecture (weights=None).

Each model is built at a small input size (32x32, or each family's minimum: 75 for
Inception*, 71 for Xception), with ``classifier_activation=None`` so the outputs are logits
(a softmax over 1000 classes would hide differences), kernels re-drawn and BatchNormalization
statistics set from a batch so that activations do not vanish (``enliven``; every output is
checked to depend on the input). Weights that a fresh model initializes
to constants (biases, BatchNormalization/Normalization statistics, LayerScale gammas...) are
perturbed first, so a weight that is not copied changes the outputs.

One cheap model per family runs by default; the rest are ``@pytest.mark.slow``
(``pytest -m slow``). Keras 3 ships no RegNet models in ``keras.applications``, so there is
none here. Times measured on 2 CPU cores (construct + lower + build + run, seconds):

    VGG16 1.3  VGG19 1.5  MobileNet 1.3  MobileNetV2 3.1  MobileNetV3Small 3.6
    MobileNetV3Large 2.8  ResNet50 3.5  ResNet101 5.6  ResNet152 10.2  ResNet50V2 2.7
    ResNet101V2 6.4  ResNet152V2 12.5  InceptionV3 4.8  InceptionResNetV2 20.6  Xception 2.8
    DenseNet121 7.2  DenseNet169 13.5  DenseNet201 11.9  NASNetMobile 18.7  NASNetLarge 31.6
    EfficientNetB0 6.8  B1 7.2  B2 4.9  B3 9.7  B4 10.7  B5 17.4  B6 23.9  B7 32.9
    EfficientNetV2B0 8.2  V2B1 6.9  V2B2 13.4  V2B3 7.2  V2S 15.7  V2M 59.5  V2L 102.8
    ConvNeXtTiny 12.0  ConvNeXtSmall 28.3  ConvNeXtBase 21.1  ConvNeXtLarge 31.9  XLarge 47.6

All 40 reproduce the source's outputs exactly (max abs diff 0.0).
"""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest

import kgraft
from kgraft.ir import parse, verify

FAST = [
    ("VGG16", 32),
    ("MobileNet", 32),
    ("MobileNetV2", 32),
    ("MobileNetV3Small", 32),
    ("ResNet50", 32),
    ("ResNet50V2", 32),
    ("InceptionV3", 75),
    ("Xception", 71),
    ("EfficientNetB0", 32),
    ("ConvNeXtTiny", 32),  # LayerScale: an unregistered class of keras.src.applications
]

SLOW = [
    ("VGG19", 32),
    ("MobileNetV3Large", 32),
    ("ResNet101", 32),
    ("ResNet152", 32),
    ("ResNet101V2", 32),
    ("ResNet152V2", 32),
    ("InceptionResNetV2", 75),  # CustomScaleLayer: an unregistered class of keras.src.applications
    ("DenseNet121", 32),
    ("DenseNet169", 32),
    ("DenseNet201", 32),
    ("NASNetMobile", 32),
    ("NASNetLarge", 32),
    *[(f"EfficientNetB{i}", 32) for i in range(1, 8)],
    ("EfficientNetV2B0", 32),
    ("EfficientNetV2B1", 32),
    ("EfficientNetV2B2", 32),
    ("EfficientNetV2B3", 32),
    ("EfficientNetV2S", 32),
    ("EfficientNetV2M", 32),
    ("EfficientNetV2L", 32),
    ("ConvNeXtSmall", 32),
    ("ConvNeXtBase", 32),
    ("ConvNeXtLarge", 32),
    ("ConvNeXtXLarge", 32),
]

CASES = [pytest.param(n, s, id=n) for n, s in FAST] + [pytest.param(n, s, id=n, marks=pytest.mark.slow)
                                                       for n, s in SLOW]


def test_every_application_is_covered():
    names = {n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n))}
    assert names == {n for n, _ in FAST + SLOW}


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    keras.backend.clear_session()
    gc.collect()


def make_application(name: str, size: int, enliven):
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    enliven(model)
    perturb_constant_weights(model)
    return model


def _is_constant_float(value: np.ndarray) -> bool:
    return np.issubdtype(value.dtype, np.floating) and value.size > 1 and np.ptp(value) == 0


def perturb_constant_weights(model, seed: int = 0) -> None:
    """Give every weight that a fresh model would initialize to a constant a random value."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        value = np.asarray(var.numpy())
        if _is_constant_float(value):  # zeros, ones...: an initializer that a rebuild repeats
            scale = rng.uniform(0.5, 1.5, value.shape) if "variance" in var.path else None
            new = value * scale if scale is not None else value + 0.1 * rng.standard_normal(value.shape)
            var.assign(new.astype(value.dtype))
    for layer in model.layers:  # as adapt() does: a Normalization computes with what it finalized
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    constant = [v.path for v in model.weights if _is_constant_float(np.asarray(v.numpy()))]
    assert constant == [], f"weights still constant: {constant}"


@pytest.mark.parametrize("name, size", CASES)
def test_application_round_trip(name, size, fingerprint, random_inputs, assert_same_outputs, enliven,
                                assert_input_sensitive, run_model):
    model = make_application(name, size, enliven)
    before = fingerprint(model)
    graph = verify(kgraft.lower(model))
    rebuilt = kgraft.build(graph)
    assert fingerprint(model) == before, "kgraft.lower/build mutated the source model"
    assert rebuilt is not model
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert [type(layer).__name__ for layer in rebuilt.layers] == [type(layer).__name__ for layer in model.layers]
    assert len(rebuilt.weights) == len(model.weights)
    assert len(graph) == len(model._nodes)  # one IR call site per Keras node of the model
    assert [layer.name for layer in rebuilt.operations] == [layer.name for layer in model.operations]
    x = random_inputs(model)
    assert_input_sensitive(run_model(model, x))
    assert_same_outputs(model, rebuilt, x, atol=1e-5)
    assert fingerprint(model) == before
    text = str(graph)
    assert str(parse(text)) == text


def test_weights_matter_for_the_check(random_inputs, run_model, max_abs_diff, enliven):
    """The round-trip check can fail: a rebuild without copied weights differs."""
    model = make_application("MobileNet", 32, enliven)
    graph = kgraft.lower(model)
    fresh = kgraft.build(graph, weights=False)
    x = random_inputs(model)
    assert max_abs_diff(run_model(model, x), run_model(fresh, x)) > 1e-3
    # copying the weights afterwards makes them agree
    kgraft.backends.keras.copy_weights(graph, fresh)
    assert max_abs_diff(run_model(model, x), run_model(fresh, x)) <= 1e-5

