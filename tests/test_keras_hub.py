"""keras_hub backbones and task models — Functional subclasses — carried whole.

Each model is the keras_hub object itself (not a ``keras.Model(bb.input, bb.output)`` view),
built from its constructor with a tiny config (random weights, nothing downloaded). Every result
is fed numpy arrays (padded token ids where a padding mask is an input), compared with the
source, and its variables are counted: a tied embedding (GPT-2's LM head) stays one variable.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import kgraft

keras_hub = pytest.importorskip("keras_hub")
M = keras_hub.models
TINY = dict(num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32)
IMAGE = (16, 16, 3)


def _bert():
    return M.BertBackbone(vocabulary_size=50, max_sequence_length=8, **TINY)


def _gpt2():
    return M.GPT2Backbone(vocabulary_size=50, max_sequence_length=8, **TINY)


# name -> (constructor, a cut in the middle, a ref to extract / to put a head on)
MODELS = {
    "bert": (_bert, [["transformer_layer_0", "padding_mask"]], "transformer_layer_0"),
    "albert": (lambda: M.AlbertBackbone(vocabulary_size=50, num_groups=1, num_inner_repetitions=1, embedding_dim=8,
                                        max_sequence_length=8, **TINY),
               [["embedding_projection", "padding_mask"]], "embedding_projection"),
    "roberta": (lambda: M.RobertaBackbone(vocabulary_size=50, max_sequence_length=8, **TINY),
                [["transformer_layer_0", "padding_mask"]], "transformer_layer_0"),
    "distilbert": (lambda: M.DistilBertBackbone(vocabulary_size=50, max_sequence_length=8, **TINY),
                   [["transformer_layer_0", "padding_mask"]], "transformer_layer_0"),
    "gpt2": (_gpt2, "transformer_layer_1", "transformer_layer_0"),
    "t5": (lambda: M.T5Backbone(vocabulary_size=50, key_value_dim=8, **TINY),
           [["transformer_encoder_layer_1", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"]],
           "transformer_encoder_layer_0:0"),
    "whisper": (lambda: M.WhisperBackbone(vocabulary_size=50, num_mels=8, max_encoder_sequence_length=16,
                                          max_decoder_sequence_length=8, **TINY),
                [["transformer_encoder_layer_1", "decoder_token_ids", "decoder_padding_mask"]],
                "transformer_encoder_layer_0"),
    "clip": (lambda: M.CLIPBackbone(
        M.CLIPVisionEncoder(patch_size=4, image_shape=IMAGE, **TINY),
        M.CLIPTextEncoder(vocabulary_size=50, embedding_dim=16, max_sequence_length=8, **TINY), projection_dim=8),
        [["clip_vision_encoder", "token_ids"]], "clip_vision_encoder/encoder_block_0"),
    "dinov2": (lambda: M.DINOV2Backbone(patch_size=4, image_shape=IMAGE, position_embedding_shape=(16, 16), **TINY),
               "embeddings", "embeddings"),
    "resnet": (lambda: M.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                        stackwise_num_filters=[64, 8], stackwise_num_blocks=[1, 1],
                                        stackwise_num_strides=[1, 2], block_type="basic_block", image_shape=IMAGE),
               "stack0_block0_out", "stack0_block0_out"),
    "efficientnet": (lambda: M.EfficientNetBackbone(
        width_coefficient=0.1, depth_coefficient=0.1, stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 8], stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25], stackwise_strides=[1, 2], stackwise_block_types=["v1", "v1"],
        image_shape=IMAGE), "block1a_add", "block1a_add"),
    "bert_classifier": (lambda: M.BertTextClassifier(_bert(), num_classes=3, preprocessor=None),
                        "pooled_dense", "bert_backbone/transformer_layer_0"),
    "gpt2_causal_lm": (lambda: M.GPT2CausalLM(_gpt2(), preprocessor=None),
                       "transformer_layer_1", "gpt2_backbone/transformer_layer_0"),
}


def _named(model, name: str):
    """The model, with its nested backbone renamed to ``name`` (keras_hub numbers them per process)."""
    for layer in model.layers:
        if isinstance(layer, M.Backbone):
            layer.name = name
    return model


@pytest.fixture(scope="module", params=sorted(MODELS))
def hub(request):
    make, cut, ref = MODELS[request.param]
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make()
    backbone = {"bert_classifier": "bert_backbone", "gpt2_causal_lm": "gpt2_backbone"}.get(request.param)
    if backbone:
        _named(model, backbone)
    return request.param, model, cut, ref


def probe(model, batch: int = 2, seq: int = 8) -> dict:
    """Numpy inputs by name: padded token ids and masks, segment ids in range, images."""
    rng = np.random.default_rng(0)
    out = {}
    for t in model.inputs:
        shape = [batch] + [d if d is not None else seq for d in t.shape[1:]]
        if "padding_mask" in t.name:
            a = np.ones(shape, "int32")
            a[0, -3:] = 0
            out[t.name] = a
        elif "segment" in t.name:
            out[t.name] = rng.integers(0, 2, size=shape).astype(t.dtype)
        elif "int" in t.dtype:
            out[t.name] = rng.integers(1, 40, size=shape).astype(t.dtype)
            if "token_ids" in t.name:
                out[t.name][0, -3:] = 0
        else:
            out[t.name] = rng.normal(size=shape).astype(t.dtype)
    return out


def _feed(model, x: dict):
    if len(x) == 1:  # keras_hub names an image input's tensor unlike its InputLayer
        return model(next(iter(x.values())))
    if isinstance(model.input, dict):
        return model({k: x[t.name] for k, t in model.input.items()})
    names = [t.name for t in model.inputs]
    return model([x[n] for n in names] if len(names) > 1 else x[names[0]])


def _arrays(outputs) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def _diff(a: list, b: list) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


def _trainable(model) -> list:
    return sorted((v.path, tuple(v.shape)) for v in model.trainable_weights)


def _layers_by_name(model, path=(), found=None) -> dict:
    """Every layer of ``model``, nested ones too, by its name (the outermost where names repeat)
    and by its path joined with "_" (flatten's name for an inner layer whose name is taken)."""
    found = {} if found is None else found
    for layer in model.layers:
        found.setdefault(layer.name, layer)
        found["_".join(path + (layer.name,))] = layer
        if isinstance(layer, keras.Model):
            _layers_by_name(layer, path + (layer.name,), found)
    return found


def test_lower_reads_the_graph(hub):
    name, model, _, _ = hub
    graph = kgraft.lower(model)
    assert len(graph) > len(model.inputs)


def test_flatten_is_the_same_model(hub):
    name, model, _, _ = hub
    x = probe(model)
    flat = kgraft.flatten(model)
    assert type(flat) in (keras.Model, keras.Sequential) or type(flat).__name__ == "Functional"
    assert _diff(_arrays(_feed(model, x)), _arrays(_feed(flat, x))) <= 1e-5
    assert len(flat.weights) == len(model.weights)  # tied weights stay tied
    assert len(flat.trainable_weights) == len(model.trainable_weights)
    assert sorted(v.path.split("/")[-1] for v in flat.trainable_weights) == \
        sorted(v.path.split("/")[-1] for v in model.trainable_weights)
    source = _layers_by_name(model)
    for layer in flat.layers:  # the same layers: configs (initializers included) as the source's
        twin = source[layer.name]
        assert {**layer.get_config(), "name": twin.name} == twin.get_config(), layer.name


def test_split_composes_through_numpy(hub):
    name, model, cut, _ = hub
    x = probe(model)
    parts = kgraft.split(model, cut)
    assert len(parts) == 2
    values = {**x}
    out = _arrays(_feed(parts[0], x))
    head_out = [t.name for t in parts[0].outputs]
    tail_in = [t.name for t in parts[1].inputs]
    assert len(out) == len(tail_in), (head_out, tail_in)
    values = [np.asarray(v) for v in out]  # as across a process boundary
    got = _arrays(parts[1](values if len(values) > 1 else values[0]))
    assert _diff(_arrays(_feed(model, x)), got) <= 1e-5
    source_vars = {id(v) for v in model.weights}
    assert not any(id(v) in source_vars for p in parts for v in p.weights)


def test_extract_and_add_head(hub):
    name, model, _, ref = hub
    x = probe(model)
    flat = kgraft.flatten(model)
    inner, _, index = ref.split("/")[-1].partition(":")
    layer = next(l for l in flat.layers if l.name == inner or l.name.endswith("_" + inner))
    output = layer.output if not index else layer.output[int(index)]
    reference = keras.Model(flat.inputs, output)
    expected = _arrays(_feed(reference, x))
    sub = kgraft.extract(model, ref)
    assert _diff(expected, _arrays(_feed(sub, x))) <= 1e-5
    head = keras.layers.Dense(3, name="aux_head")
    aux = kgraft.add_head(model, ref, head)
    got = _arrays(_feed(aux, x))
    source = _arrays(_feed(model, x))
    assert _diff(source, got[:len(source)]) <= 1e-5
    assert _diff([np.asarray(head(expected[0]))], got[len(source):]) <= 1e-5
    assert len(aux.weights) == len(model.weights) + 2
