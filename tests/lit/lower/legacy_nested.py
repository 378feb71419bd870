# Nested models in a legacy tf.keras 2.x config: tf.keras counts a nested Functional (or
# Sequential with an input) model's "pre-existing node" (node_conversion_map,
# _should_skip_first_node), so its first call is referenced as node 1 everywhere:
# [["head", 1, 0, {}]], as in h5 files of transfer-learning models ([["vgg16", 1, 0, {}]]).
# Lowering must shift these (this once failed with "uses 'head#1', which the config does not define").
# RUN: %python %s | filecheck %s

from kgraft.frontend import lower_config
from kgraft.ir import verify


def dense(name, units, inbound=None):
    entry = {"class_name": "Dense",
             "config": {"name": name, "trainable": True, "dtype": "float32", "units": units,
                        "activation": "linear", "use_bias": True}}
    if inbound is not None:
        entry.update(name=name, inbound_nodes=inbound)
    return entry


def input_layer(name, shape):
    return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
            "config": {"batch_input_shape": [None, *shape], "dtype": "float32", "sparse": False,
                       "ragged": False, "name": name}}


head = {
    "class_name": "Sequential", "name": "head",
    "config": {"name": "head", "layers": [
        {"class_name": "InputLayer",
         "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False,
                    "name": "head_in"}},
        dense("h1", 2),
    ]},
    "inbound_nodes": [[["x", 0, 0, {}]], [["y", 0, 0, {}]]],
}
config = {
    "class_name": "Functional",
    "config": {
        "name": "legacy_nested",
        "layers": [
            input_layer("x", [4]),
            input_layer("y", [4]),
            head,
            {"class_name": "Add", "name": "add", "config": {"name": "add", "trainable": True, "dtype": "float32"},
             "inbound_nodes": [[["head", 1, 0, {}], ["head", 2, 0, {}]]]},
            dense("final", 1, [[["add", 0, 0, {}]]]),
        ],
        "input_layers": [["x", 0, 0], ["y", 0, 0]],
        "output_layers": [["final", 0, 0], ["head", 2, 0]],
    },
    "keras_version": "2.15.0",
}
print(verify(lower_config(config)), end="")

# CHECK-LABEL: kgraft.model @legacy_nested(%x: f32[?,4], %y: f32[?,4]) {
# CHECK-NEXT:    %head@0 = Sequential @head#0(%x) : {{.*}} {
# CHECK-NEXT:      kgraft.sequential @head(%head_in: f32[?,4]) {
# CHECK-NEXT:        %h1 = Dense @h1#0(%head_in) {activation="linear", units=2, use_bias=true}
# CHECK-NEXT:        return %h1
# CHECK-NEXT:      }
# CHECK-NEXT:    }
# CHECK-NEXT:    %head@1 = Sequential @head#1(%y) : {{[^{]*$}}
# CHECK-NEXT:    %add = Add @add#0([%head@0, %head@1])
# CHECK-NEXT:    %final = Dense @final#0(%add) {activation="linear", units=1, use_bias=true}
# CHECK-NEXT:    return %final, %head@1
# CHECK-NEXT:  }
