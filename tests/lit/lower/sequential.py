# Lowering Sequential models: kgraft.sequential at the top level (all types known), and nested
# models (Sequential and Functional, also as model outputs) inside a Functional model as regions,
# printed once at their first call site.
# RUN: %python %s | filecheck %s

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


L = keras.layers

mlp = keras.Sequential(
    [keras.Input((3,), name="features"), L.Dense(5, activation="relu", name="hidden"),
     L.Dense(2, activation="softmax", name="probs")],
    name="mlp",
)
show(mlp)

# CHECK-LABEL: kgraft.sequential @mlp(%features: f32[?,3]) {
# CHECK-NEXT:    %hidden = Dense @hidden#0(%features) {activation="relu", units=5, use_bias=true} : f32[?,5]
# CHECK-NEXT:    %probs = Dense @probs#0(%hidden) {activation="softmax", units=2, use_bias=true} : f32[?,2]
# CHECK-NEXT:    return %probs
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# A Sequential without keras.Input, built from a shape: Keras adds an input (auto-named).
lazy = keras.Sequential([L.Dense(3, name="only")], name="lazy")
lazy.build((None, 6))
show(lazy)

# CHECK-LABEL: kgraft.sequential @lazy(
# CHECK-SAME:    %[[IN:[a-z_0-9]+]]: f32[?,6]) {
# CHECK-NEXT:    %only = Dense @only#0(%[[IN]]) {{.*}} : f32[?,3]
# CHECK-NEXT:    return %only
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# A nested Sequential called twice (one Layer, two call sites, one body) and a nested
# Functional called once, inside a Functional model.
encoder = keras.Sequential(
    [keras.Input((8,), name="enc_in"), L.Dense(6, name="enc1"), L.Dense(4, name="enc2")], name="encoder"
)
p_in = keras.Input((4,), name="p_in")
proj = keras.Model(p_in, L.Dense(2, name="p_dense")(p_in), name="proj")
left = keras.Input((8,), name="left")
right = keras.Input((8,), name="right")
both = L.Concatenate(name="both")([encoder(left), encoder(right)])
score = L.Dense(1, name="score")(proj(L.Dense(4, name="mix")(both)))
show(keras.Model([left, right], score, name="outer"))

# CHECK-LABEL: kgraft.model @outer(%left: f32[?,8], %right: f32[?,8]) {
# CHECK-NEXT:    %encoder@0 = Sequential @encoder#0(%left) : f32[?,4] {
# CHECK-NEXT:      kgraft.sequential @encoder(%enc_in: f32[?,8]) {
# CHECK-NEXT:        %enc1 = Dense @enc1#0(%enc_in) {{.*}} : f32[?,6]
# CHECK-NEXT:        %enc2 = Dense @enc2#0(%enc1) {{.*}} : f32[?,4]
# CHECK-NEXT:        return %enc2
# CHECK-NEXT:      }
# CHECK-NEXT:    }
# The second call site refers to the same body and does not print it again.
# CHECK-NEXT:    %encoder@1 = Sequential @encoder#1(%right) : f32[?,4]{{$}}
# CHECK-NOT:     kgraft.sequential
# CHECK-NEXT:    %both = Concatenate @both#0([%encoder@0, %encoder@1]) {axis=-1} : f32[?,8]
# CHECK-NEXT:    %mix = Dense @mix#0(%both) {{.*}} : f32[?,4]
# CHECK-NEXT:    %proj = Functional @proj#0(%mix) : f32[?,2] {
# CHECK-NEXT:      kgraft.model @proj(%p_in: f32[?,4]) {
# CHECK-NEXT:        %p_dense = Dense @p_dense#0(%p_in) {{.*}} : f32[?,2]
# CHECK-NEXT:        return %p_dense
# CHECK-NEXT:      }
# CHECK-NEXT:    }
# CHECK-NEXT:    %score = Dense @score#0(%proj) {{.*}} : f32[?,1]
# CHECK-NEXT:    return %score
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# Inside a Sequential, every value has a known type, also before layers without weights
# (MaxPooling2D, Dropout: no build_config to read the shape from).
cnn = keras.Sequential(
    [keras.Input((8, 8, 1), name="image"), L.Conv2D(4, 3, name="conv"), L.MaxPooling2D(name="pool"),
     L.Flatten(name="flat"), L.Dropout(0.5, name="drop"), L.Dense(2, name="logits")],
    name="cnn",
)
show(cnn)

# CHECK-LABEL: kgraft.sequential @cnn(%image: f32[?,8,8,1]) {
# CHECK-NEXT:    %conv = Conv2D @conv#0(%image) {{.*}}filters=4{{.*}} : f32[?,6,6,4]
# CHECK-NEXT:    %pool = MaxPooling2D @pool#0(%conv) {{.*}} : f32[?,3,3,4]
# CHECK-NEXT:    %flat = Flatten @flat#0(%pool) {{.*}} : f32[?,36]
# CHECK-NEXT:    %drop = Dropout @drop#0(%flat) {rate=0.5} : f32[?,36]
# CHECK-NEXT:    %logits = Dense @logits#0(%drop) {{.*}} : f32[?,2]
# CHECK-NEXT:    return %logits
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical

# A nested Functional model with two outputs whose results are the model's outputs
# (Keras numbers such calls from 1 in output_layers); all types known from the live model.
t_in = keras.Input((4,), name="t_in")
twin = keras.Model(t_in, [L.Dense(3, name="t_a")(t_in), L.Dense(2, name="t_b")(t_in)], name="twin")
src = keras.Input((4,), name="src")
show(keras.Model(src, twin(src), name="passthrough"))

# CHECK-LABEL: kgraft.model @passthrough(%src: f32[?,4]) {
# CHECK-NEXT:    %twin:0, %twin:1 = Functional @twin#0(%src) : f32[?,3], f32[?,2] {
# CHECK-NEXT:      kgraft.model @twin(%t_in: f32[?,4]) {
# CHECK-NEXT:        %t_a = Dense @t_a#0(%t_in) {{.*}} : f32[?,3]
# CHECK-NEXT:        %t_b = Dense @t_b#0(%t_in) {{.*}} : f32[?,2]
# CHECK-NEXT:        return %t_a, %t_b
# CHECK-NEXT:      }
# CHECK-NEXT:    }
# CHECK-NEXT:    return %twin:0, %twin:1
# CHECK-NEXT:  }
# CHECK-NEXT:  // round trip: identical
