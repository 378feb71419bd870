# Lowering a Keras 3 config dict (inbound_nodes as {"args", "kwargs"} trees of
# __keras_tensor__ leaves) with kgraft.frontend.lower_config, no TensorFlow: dtype policies, argument
# trees (lists, dicts, constants), keyword arguments, and types taken from recorded tensors.
# RUN: %python %s | filecheck %s

import sys

from kgraft.frontend import lower_config
from kgraft.ir import parse, verify


def tensor(layer, node, index, shape, dtype="float32"):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": dtype, "keras_history": [layer, node, index]}}


def policy(name):
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name}, "registered_name": None}


def layer(cls, name, config, *calls, registered_name=None):
    return {"module": "keras.layers", "class_name": cls, "registered_name": registered_name, "name": name,
            "config": {"name": name, "trainable": True, **config}, "inbound_nodes": list(calls)}


config = {
    "class_name": "Functional",
    "config": {
        "name": "k3",
        "trainable": True,
        "layers": [
            layer("InputLayer", "x", {"batch_shape": [None, 8], "dtype": "float32", "sparse": False}),
            layer("InputLayer", "tokens", {"batch_shape": [None, 5], "dtype": "int32", "sparse": False}),
            # Mixed precision: computes in float16, so its output is f16 and dtype is an attribute.
            layer("Dense", "half", {"units": 4, "activation": "relu", "use_bias": True,
                                    "dtype": policy("mixed_float16"),
                                    "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}}},
                  {"args": [tensor("x", 0, 0, [None, 8])], "kwargs": {}}),
            layer("Embedding", "embed", {"input_dim": 100, "output_dim": 4, "dtype": policy("float32")},
                  {"args": [tensor("tokens", 0, 0, [None, 5], "int32")], "kwargs": {}}),
            # A custom layer called with a dict of tensors, a constant and keyword arguments;
            # null keyword arguments are not printed.
            layer("Mix", "mix", {"scale": 0.5, "dtype": policy("float32")},
                  {"args": [{"q": tensor("half", 0, 0, [None, 4], "float16"),
                             "k": tensor("embed", 0, 0, [None, 5, 4])}, 2],
                   "kwargs": {"training": False, "mask": None, "extra": [tensor("x", 0, 0, [None, 8]), 1.5]}},
                  registered_name="MyPkg>Mix"),
            layer("Activation", "act", {"activation": "tanh", "dtype": policy("bfloat16")},
                  {"args": [tensor("mix", 0, 0, [None, 4], "bfloat16")], "kwargs": {}}),
        ],
        "input_layers": [["x", 0, 0], ["tokens", 0, 0]],
        "output_layers": [["act", 0, 0]],
    },
}

graph = verify(lower_config(config))
text = str(graph)
print(text, end="")
print("// round trip:", "identical" if str(parse(text)) == text else "DIFFERENT")
print("// tensorflow imported:", "tensorflow" in sys.modules)

# CHECK-LABEL: kgraft.model @k3(%x: f32[?,8], %tokens: i32[?,5]) {
# CHECK-NEXT:    %half = Dense @half#0(%x) {activation="relu", dtype="mixed_float16", units=4, use_bias=true} : f16[?,4]
# CHECK-NEXT:    %embed = Embedding @embed#0(%tokens) {input_dim=100, output_dim=4} : f32[?,5,4]
# A registered (package>Class) name prints as the class; dict keys are sorted.
# CHECK-NEXT:    %mix = MyPkg>Mix @mix#0({"k": %embed, "q": %half}, 2, training=false, extra=[%x, 1.5]) {scale=0.5} : bf16[?,4]
# CHECK-NEXT:    %act = Activation @act#0(%mix) {activation="tanh", dtype="bfloat16"}
# The type of a model output that no layer consumes is not in the config (a backend fills it in).
# CHECK-SAME:    : ?[*]{{$}}
# CHECK-NEXT:    return %act
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical
# CHECK-NEXT:  // tensorflow imported: False
