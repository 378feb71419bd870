# A nested Functional model whose outputs are model outputs. Keras 3's get_config numbers a
# Functional layer's calls from 1 in "output_layers" (it still counts a "pre-existing node";
# functional_from_config subtracts 1 again) but from 0 in "inbound_nodes": lowering must
# shift the former (this once failed with "output 'inner#2' of 'outer' is not defined").
# RUN: %python %s | filecheck %s

from kgraft.frontend import lower_config
from kgraft.ir import verify


def tensor(layer, node, index, shape):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": shape, "dtype": "float32", "keras_history": [layer, node, index]}}


def input_layer(name, shape):
    return {"class_name": "InputLayer", "name": name, "inbound_nodes": [],
            "config": {"batch_shape": shape, "dtype": "float32", "sparse": False, "name": name}}


def dense(name, units, source):
    return {"class_name": "Dense", "name": name,
            "config": {"name": name, "trainable": True, "units": units, "activation": "linear", "use_bias": True,
                       "dtype": {"class_name": "DTypePolicy", "config": {"name": "float32"}}},
            "inbound_nodes": [{"args": [tensor(source, 0, 0, [None, 4])], "kwargs": {}}]}


# keras.Model(i, [u(i), v(i)], name="inner"), called on a and on b; the model returns
# add([inner(a)[0], inner(b)[0]]), inner(a)[1], inner(b)[1]. Trimmed from Keras 3.x get_config().
inner = {
    "class_name": "Functional", "name": "inner",
    "config": {"name": "inner", "trainable": True,
               "layers": [input_layer("i", [None, 4]), dense("u", 3, "i"), dense("v", 2, "i")],
               "input_layers": ["i", 0, 0], "output_layers": [["u", 0, 0], ["v", 0, 0]]},
    "inbound_nodes": [{"args": [tensor("a", 0, 0, [None, 4])], "kwargs": {"mask": None}},
                      {"args": [tensor("b", 0, 0, [None, 4])], "kwargs": {"mask": None}}],
}
config = {
    "class_name": "Functional",
    "config": {
        "name": "outer", "trainable": True,
        "layers": [
            input_layer("a", [None, 4]), input_layer("b", [None, 4]), inner,
            {"class_name": "Add", "name": "add", "config": {"name": "add", "trainable": True},
             "inbound_nodes": [{"args": [[tensor("inner", 0, 0, [None, 3]), tensor("inner", 1, 0, [None, 3])]],
                                "kwargs": {}}]},
        ],
        "input_layers": [["a", 0, 0], ["b", 0, 0]],
        "output_layers": [["add", 0, 0], ["inner", 1, 1], ["inner", 2, 1]],
    },
}
print(verify(lower_config(config)), end="")

# Config lowering knows only the types recorded where a value is used (here: outside the body).
# CHECK-LABEL: kgraft.model @outer(%a: f32[?,4], %b: f32[?,4]) {
# CHECK-NEXT:    %inner@0:0, %inner@0:1 = Functional @inner#0(%a) : f32[?,3], {{[^ ]+}} {
# CHECK-NEXT:      kgraft.model @inner(%i: f32[?,4]) {
# CHECK-NEXT:        %u = Dense @u#0(%i) {activation="linear", units=3, use_bias=true}
# CHECK-NEXT:        %v = Dense @v#0(%i) {activation="linear", units=2, use_bias=true}
# CHECK-NEXT:        return %u, %v
# CHECK-NEXT:      }
# CHECK-NEXT:    }
# CHECK-NEXT:    %inner@1:0, %inner@1:1 = Functional @inner#1(%b) : f32[?,3], {{[^ ]+$}}
# CHECK-NEXT:    %add = Add @add#0([%inner@0:0, %inner@1:0])
# CHECK-NEXT:    return %add, %inner@0:1, %inner@1:1
# CHECK-NEXT:  }
