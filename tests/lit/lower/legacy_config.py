# Lowering a legacy tf.keras 2.x config (inbound_nodes as [[layer, node, tensor, kwargs], ...])
# with kgraft.frontend.lower_config: pure Python, no TensorFlow. The legacy format records no tensor
# shapes, so only the inputs have known types.
# RUN: %python %s | filecheck %s

import sys

from kgraft.frontend import lower_config
from kgraft.ir import parse, verify


def dense(name, units, activation, inbound):
    return {
        "class_name": "Dense",
        "name": name,
        "config": {
            "name": name, "trainable": True, "dtype": "float32", "units": units,
            "activation": activation, "use_bias": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None,
        },
        "inbound_nodes": inbound,
    }


def input_layer(name, shape, dtype="float32"):
    return {
        "class_name": "InputLayer",
        "name": name,
        "config": {"batch_input_shape": [None, *shape], "dtype": dtype, "sparse": False,
                   "ragged": False, "name": name},
        "inbound_nodes": [],
    }


config = {
    "class_name": "Functional",
    "config": {
        "name": "legacy",
        "layers": [
            input_layer("in_a", [8]),
            input_layer("in_b", [8]),
            input_layer("ids", [3], dtype="int32"),
            # A shared layer: one inbound node per call, numbered in order.
            dense("shared", 4, "relu", [[["in_a", 0, 0, {}]], [["in_b", 0, 0, {}]]]),
            {"class_name": "Concatenate", "name": "merge",
             "config": {"name": "merge", "trainable": True, "dtype": "float32", "axis": -1},
             "inbound_nodes": [[["shared", 0, 0, {}], ["shared", 1, 0, {}]]]},
            # Call keyword arguments ride along in the 4th slot.
            {"class_name": "Dropout", "name": "drop",
             "config": {"name": "drop", "trainable": True, "dtype": "float32", "rate": 0.5,
                        "noise_shape": None, "seed": None},
             "inbound_nodes": [[["merge", 0, 0, {"training": True}]]]},
            dense("out", 2, "softmax", [[["drop", 0, 0, {}]]]),
            {"class_name": "Embedding", "name": "embed",
             "config": {"name": "embed", "trainable": False, "dtype": "float32", "input_dim": 10,
                        "output_dim": 2, "mask_zero": False, "input_length": None},
             "inbound_nodes": [[["ids", 0, 0, {}]]]},
        ],
        "input_layers": [["in_a", 0, 0], ["in_b", 0, 0], ["ids", 0, 0]],
        "output_layers": [["out", 0, 0], ["embed", 0, 0]],
    },
    "keras_version": "2.15.0",
    "backend": "tensorflow",
}

graph = verify(lower_config(config))
text = str(graph)
print(text, end="")
print("// round trip:", "identical" if str(parse(text)) == text else "DIFFERENT")
# Lowering the IR never needs TensorFlow.
print("// tensorflow imported:", "tensorflow" in sys.modules)

# CHECK-LABEL: kgraft.model @legacy(%in_a: f32[?,8], %in_b: f32[?,8], %ids: i32[?,3]) {
# CHECK-NEXT:    %shared@0 = Dense @shared#0(%in_a) {activation="relu", units=4, use_bias=true} : ?[*]
# CHECK-NEXT:    %shared@1 = Dense @shared#1(%in_b) {activation="relu", units=4, use_bias=true} : ?[*]
# Several inbound tensors become one list argument, as Keras calls the layer.
# CHECK-NEXT:    %merge = Concatenate @merge#0([%shared@0, %shared@1]) {axis=-1} : ?[*]
# CHECK-NEXT:    %drop = Dropout @drop#0(%merge, training=true) {rate=0.5} : ?[*]
# CHECK-NEXT:    %out = Dense @out#0(%drop) {activation="softmax", units=2, use_bias=true} : ?[*]
# A non-default trainable flag is an attribute (the default true is not).
# CHECK-NEXT:    %embed = Embedding @embed#0(%ids) {input_dim=10, mask_zero=false, output_dim=2, trainable=false} : ?[*]
# CHECK-NEXT:    return %out, %embed
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical
# CHECK-NEXT:  // tensorflow imported: False
