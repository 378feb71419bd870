"""Property: a random small model, a random legal surgery, and the surgery's own check passes
where equality is promised (and the numbers agree with the source when we compare them here).

The model is a random chain of Conv2D (with and without bias) / BatchNormalization / ReLU /
Dropout / MaxPooling2D blocks with an optional residual Add, ending in GlobalAveragePooling2D and
a Dense. The surgery is one of: delete a Dropout, insert an Identity, replace a ReLU by
Activation("relu"), rename with a prefix, fold BatchNorm, delete random channels of a random
Conv2D (then compared with the zeroed reference by ``check=True``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kgraft

keras = pytest.importorskip("keras")
L = keras.layers

FAST = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

BLOCKS = st.lists(st.tuples(st.sampled_from([4, 6]), st.booleans(), st.sampled_from(["bn", "relu", "drop", "pool"]),
                            st.booleans()), min_size=1, max_size=4)
SURGERY = st.sampled_from(["delete", "insert", "replace", "rename", "fold", "channels"])


def _model(blocks, seed):
    rng = np.random.default_rng(seed)
    x = keras.Input((8, 8, 3), name="image")
    y = x
    for i, (filters, bias, extra, residual) in enumerate(blocks):
        conv = L.Conv2D(filters, 3, padding="same", use_bias=bias, name=f"conv{i}")(y)
        out = {"bn": lambda t: L.BatchNormalization(name=f"bn{i}")(t), "relu": lambda t: L.ReLU(name=f"relu{i}")(t),
               "drop": lambda t: L.Dropout(0.5, name=f"drop{i}")(t),
               "pool": lambda t: L.MaxPooling2D(1, name=f"pool{i}")(t)}[extra](conv)
        if residual:
            out = L.Add(name=f"add{i}")([out, L.Conv2D(filters, 1, name=f"skip{i}")(y)])
        y = out
    model = keras.Model(x, L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(y)))
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


@FAST
@given(blocks=BLOCKS, surgery=SURGERY, pick=st.integers(0, 100), seed=st.integers(0, 3))
def test_random_legal_surgery_passes_its_check(blocks, surgery, pick, seed, run_model):
    model = _model(blocks, seed)
    names = [l.name for l in model.layers]
    of = lambda prefix: [n for n in names if n.startswith(prefix)]  # noqa: E731
    xs = np.random.default_rng(seed).standard_normal((2, 8, 8, 3)).astype("float32")
    if surgery == "delete" and of("drop"):
        result = kgraft.delete_layer(model, of("drop")[pick % len(of("drop"))])
    elif surgery == "insert":
        result = kgraft.insert_layer(model, names[1 + pick % (len(names) - 1)], L.Identity())
    elif surgery == "replace" and of("relu"):
        result = kgraft.replace_layer(model, of("relu")[pick % len(of("relu"))], L.Activation("relu"))
    elif surgery == "rename":
        result = kgraft.rename(model, "p_")
    elif surgery == "fold":
        result = kgraft.fold_batchnorm(model)
        want = run_model(model, xs)
        assert np.max(np.abs(run_model(result, xs) - want)) <= 1e-4 * max(1.0, np.max(np.abs(want)))
        return
    elif surgery == "channels":
        convs = [n for n in of("conv") if not any(n == f"conv{i}" and r for i, (_, _, _, r) in enumerate(blocks))]
        if not convs:
            return
        conv = convs[pick % len(convs)]
        result = kgraft.delete_channels(model, conv, [pick % 3])  # check=True: the zeroed reference
        assert result.get_layer(conv).filters == model.get_layer(conv).filters - 1
        return
    else:
        return
    np.testing.assert_allclose(run_model(result, xs), run_model(model, xs), atol=1e-5)
