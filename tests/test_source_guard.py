"""The source guard of ``conftest.py`` really catches kgraft mutating a model it was given.

Each test makes kgraft (or a stand-in wrapped like kgraft's entry points) change its argument
in one way the guard must notice: a weight (found at teardown), a new call site or a trainable
flag (found when the call returns), a returned model sharing a layer, a change made later
through a shared object. The last test runs a whole pytest session (in process) to show that
the autouse fixture fails the test.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import pytest
from keras import layers

import kgraft
import kgraft.api
from kgraft.backends.keras import load


def small_model() -> keras.Model:
    x = keras.Input((4,), name="x")
    inner = keras.Sequential([keras.Input((3,)), layers.Dense(2, name="i")], name="inner")
    h = layers.Dense(3, name="d1")(x)
    return keras.Model(x, layers.Dense(2, name="d2")(inner(h)), name="small")


@pytest.fixture
def guard(kgraft_guard):
    """A fresh guard, not installed: its findings do not fail the test."""
    return type(kgraft_guard)()


def test_public_entry_points_are_guarded():
    for fn in (kgraft.lower, kgraft.build, kgraft.flatten, kgraft.extract, kgraft.split, kgraft.split_points,
               kgraft.add_head, kgraft.downstream, load.load_model, kgraft.api.lower):
        assert getattr(fn, "__kgraft_guarded__", False), fn


def test_clean_calls_raise_nothing(kgraft_guard):
    model = small_model()
    kgraft.flatten(model)
    kgraft.split(model, "d1")
    kgraft.build(kgraft.lower(model))
    assert kgraft_guard.problems == []
    assert id(model) in kgraft_guard.seen


def test_weight_changed_inside_kgraft_is_caught(kgraft_guard, monkeypatch):
    attach = load._attach

    def attach_and_zero(graph, model):
        attach(graph, model)
        if model.name == "small":  # not the nested model, which _attach visits too
            model.get_layer("d1").kernel.assign(np.zeros((4, 3), "float32"))

    monkeypatch.setattr(load, "_attach", attach_and_zero)
    kgraft.flatten(small_model())
    assert kgraft_guard.problems == []  # weights are read once per test, at teardown
    kgraft_guard.teardown()
    found = list(kgraft_guard.problems)
    kgraft_guard.forget()
    assert len(found) == 1
    assert found[0].startswith("the weights of model 'small' changed during the test, after it was handed to "
                               "kgraft.flatten: weight 0 d1/kernel:")


def test_new_call_site_inside_kgraft_is_caught(guard):
    def calls_a_source_layer(model):
        model.get_layer("inner").get_layer("i")(keras.Input((3,)))

    model = small_model()
    guard.wrap(calls_a_source_layer, "kgraft.lower")(model)
    assert len(guard.problems) == 1
    assert "kgraft.lower mutated model 'small': layer inner/i:" in guard.problems[0]


def test_trainable_flag_changed_inside_kgraft_is_caught(guard):
    def freezes(model):
        model.get_layer("d2").trainable = False

    guard.wrap(freezes, "kgraft.build")(small_model())
    assert len(guard.problems) == 1 and "layer d2:" in guard.problems[0]


@pytest.mark.mutates_source  # the installed guard saw kgraft.lower(model); the stand-in changes it
def test_graph_argument_stands_for_its_source(guard):
    model = small_model()
    graph = kgraft.lower(model)

    def builds_and_tampers(g):
        g[0].meta["source"].get_layer("d2").bias.assign(np.ones(2, "float32"))

    guard.wrap(builds_and_tampers, "kgraft.build")([graph])
    guard.teardown()
    assert len(guard.problems) == 1 and "handed to kgraft.build: weight 5 d2/bias" in guard.problems[0]


def test_result_sharing_a_layer_is_caught(guard):
    def reuses(model):
        x = keras.Input((4,))
        return keras.Model(x, model.get_layer("d1")(x))

    guard.wrap(reuses, "kgraft.flatten")(small_model())
    shared = [p for p in guard.problems if "returned a model sharing" in p]
    assert len(shared) == 1 and "layer 'd1'" in shared[0] and "variable" in shared[0]


def test_later_change_through_a_shared_object_is_caught_at_teardown(guard):
    model = small_model()
    guard.wrap(lambda m: None, "kgraft.lower")(model)
    assert guard.problems == []
    model.get_layer("d2")(keras.Input((2,)))  # e.g. a result model reusing d2, built later
    guard.teardown()
    assert len(guard.problems) == 1 and guard.problems[0].startswith("model 'small' changed after kgraft")


@pytest.mark.mutates_source
def test_marker_lets_a_test_change_its_model_after_the_call():
    model = small_model()
    kgraft.flatten(model)
    model.get_layer("d1")(keras.Input((4,)))


def test_the_fixture_fails_a_test(pytester, kgraft_guard):
    """End to end: an in-process pytest run with this conftest, and a kgraft that mutates."""
    with open(os.path.join(os.path.dirname(__file__), "conftest.py")) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_inner="""
        import keras, numpy as np
        import kgraft
        from kgraft.backends.keras import load

        def test_mutating_kgraft(monkeypatch):
            attach = load._attach
            def tamper(graph, model):
                attach(graph, model)
                model.get_layer("d").bias.assign(np.ones(2, "float32"))
            monkeypatch.setattr(load, "_attach", tamper)
            x = keras.Input((3,))
            kgraft.lower(keras.Model(x, keras.layers.Dense(2, name="d")(x), name="victim"))
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--import-mode=importlib")
    kgraft_guard.forget()  # the outer guard saw the same model through the inner one
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the weights of model 'victim' changed during the test, after it was handed "
                                 "to kgraft.lower: weight 1 d/bias*"])
