# Lowering Functional models: branches, a shared layer (one Layer, call sites #0/#1), several
# model outputs, layers with several outputs, call keyword arguments; the printed IR parses
# back to the same text.
# RUN: %python %s > %t
# RUN: filecheck %s --input-file %t
# RUN: filecheck %s --input-file %t --check-prefix=ATTRS

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras

import kgraft
from kgraft.ir import parse, verify


def show(model):
    graph = verify(kgraft.lower(model))
    text = str(graph)
    print(text, end="")
    print("// round trip:", "identical" if str(parse(text)) == text else "DIFFERENT\n" + str(parse(text)))


# A shared (Siamese) layer, two branches that merge, and two model outputs.
a = keras.Input((8,), name="a")
b = keras.Input((8,), name="b")
tower = keras.layers.Dense(4, activation="relu", name="tower")
ta, tb = tower(a), tower(b)
diff = keras.layers.Subtract(name="diff")([ta, tb])
cat = keras.layers.Concatenate(axis=-1, name="cat")([ta, tb])
head = keras.layers.Dense(1, activation="sigmoid", name="head")(cat)
show(keras.Model([a, b], [head, diff], name="siamese"))

# CHECK-LABEL: kgraft.model @siamese(%a: f32[?,8], %b: f32[?,8]) {
# CHECK-NEXT:    %tower@0 = Dense @tower#0(%a) {activation="relu", units=4, use_bias=true} : f32[?,4]
# CHECK-NEXT:    %tower@1 = Dense @tower#1(%b)
# CHECK-SAME:        {activation="relu", units=4, use_bias=true} : f32[?,4]
# CHECK-NEXT:    %cat = Concatenate @cat#0([%tower@0, %tower@1]) {axis=-1} : f32[?,8]
# CHECK-NEXT:    %head = Dense @head#0(%cat) {activation="sigmoid", units=1, use_bias=true} : f32[?,1]
# CHECK-NEXT:    %diff = Subtract @diff#0([%tower@0, %tower@1]) : f32[?,4]
# CHECK-NEXT:    return %head, %diff
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# A layer called on its own output: call site #1 consumes call site #0.
x = keras.Input((8,), name="x")
block = keras.layers.Dense(8, name="block")
show(keras.Model(x, block(block(x)), name="chain"))

# CHECK-LABEL: kgraft.model @chain(%x: f32[?,8]) {
# CHECK-NEXT:    %block@0 = Dense @block#0(%x) {{.*}} : f32[?,8]
# CHECK-NEXT:    %block@1 = Dense @block#1(%block@0) {{.*}} : f32[?,8]
# CHECK-NEXT:    return %block@1
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# Nowhere in the whole output: initializers, names, nulls, the default dtype and trainable flag.
# ATTRS-NOT: initializer
# ATTRS-NOT: name=
# ATTRS-NOT: null
# ATTRS-NOT: dtype=
# ATTRS-NOT: trainable=

# Several outputs per call site (%lstm:i), keyword arguments (training=, initial_state=, key=).
seq_in = keras.Input((5, 3), name="seq_in")
query = keras.Input((5, 4), name="query")
states = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(seq_in)
drop = keras.layers.Dropout(0.25, name="drop")(states[0], training=True)
last = keras.layers.LSTM(4, name="lstm2")(drop, initial_state=[states[1], states[2]])
att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")(query, drop, key=states[0])
show(keras.Model([seq_in, query], [last, att], name="rnn"))

# CHECK-LABEL: kgraft.model @rnn(%seq_in: f32[?,5,3], %query: f32[?,5,4]) {
# CHECK-NEXT:    %lstm:0, %lstm:1, %lstm:2 = LSTM @lstm#0(%seq_in, training=false)
# CHECK-SAME:        return_sequences=true, return_state=true
# CHECK-SAME:        units=4
# CHECK-SAME:        : f32[?,5,4], f32[?,4], f32[?,4]
# CHECK-NEXT:    %drop = Dropout @drop#0(%lstm:0, training=true) {rate=0.25} : f32[?,5,4]
# CHECK-NEXT:    %lstm2 = LSTM @lstm2#0(%drop, initial_state=[%lstm:1, %lstm:2])
# CHECK-SAME:        return_state=false
# CHECK-SAME:        : f32[?,4]{{$}}
# CHECK-NEXT:    %mha = MultiHeadAttention @mha#0(%query, %drop, key=%lstm:0)
# CHECK-SAME:        {attention_axes=[1], dropout=0.0, key_dim=2, num_heads=2, use_bias=true, use_gate=false, value_dim=2}
# CHECK-SAME:        : f32[?,5,4]
# CHECK-NEXT:    return %lstm2, %mha
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical
