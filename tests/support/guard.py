"""The source guard: kgraft must never mutate a model it is given (see ``kgraft_guard`` in conftest)."""

from __future__ import annotations

import functools
import sys

from .models import _UNGUARDED, diff_parts, iter_layers, model_parts

# kgraft's entry points that take a model (or a graph whose source is one) as first argument.
GUARDED = {
    "kgraft.backends.keras.load": ("lower", "load_model"),
    "kgraft.backends.keras.build": ("build",),
    "kgraft.backends.keras": ("lower", "load_model", "build"),
}


def _is_model(obj) -> bool:
    keras = sys.modules.get("keras")
    tf_keras = sys.modules.get("tf_keras")
    return (keras is not None and isinstance(obj, keras.Model)) or (
        tf_keras is not None and isinstance(obj, tf_keras.Model))


def _sources(arg) -> list:
    """The models an entry point's first argument stands for (a graph stands for its source)."""
    if isinstance(arg, (list, tuple)):
        return [m for a in arg for m in _sources(a)]
    if _is_model(arg):
        return [arg]
    source = getattr(arg, "meta", {}).get("source") if hasattr(arg, "meta") else None
    return [source] if _is_model(source) else []


def _structure(parts: dict) -> dict:
    """The parts of :func:`model_parts` a test rarely changes itself: layers, call sites, variables."""
    return {k: v[0:1] + v[2:] if k.startswith("layer ") else v for k, v in parts.items() if not k.startswith("weight ")}


class SourceGuard:
    """Fails a test in which kgraft mutated a model it was given.

    ``wrap(fn)`` records the structure of the models of ``fn``'s first argument (layers, call
    sites, trainable flags, variable objects) on entry to the outermost wrapped call and checks
    it on exit, and checks that the models returned share no layer or variable with them; it
    digests a model's weights when it first sees it. ``teardown()`` re-checks the structure
    (catching changes made later through shared objects) and the weights. Structure is cheap to
    check per call; reading the weights of a big model is not, so they are checked once per test.
    Problems are collected in ``problems``; the ``kgraft_guard`` fixture fails on them.
    """

    def __init__(self):
        self.problems: list[str] = []
        self.seen: dict[int, tuple] = {}  # id -> (model, structure after the last call)
        self.first: dict[int, tuple] = {}  # id -> (model, parts with weights, first call)
        self._depth = 0
        self._entered: dict[int, tuple] = {}  # id -> (model, structure) of the current outermost call

    def wrap(self, fn, where: str):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            if _UNGUARDED[0]:
                return fn(*args, **kwargs)
            first = args[0] if args else next(iter(kwargs.values()), None)
            for model in _sources(first):
                if id(model) not in self._entered:
                    if id(model) not in self.first:
                        self.first[id(model)] = (model, model_parts(model), where)
                    self._entered[id(model)] = (model, model_parts(model, weights=False))
            self._depth += 1
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._after_call(where, result)

        guarded.__kgraft_guarded__ = True
        return guarded

    def _after_call(self, where: str, result) -> None:
        entered, self._entered = self._entered, {}
        for model, before in entered.values():
            after = model_parts(model, weights=False)
            changed = diff_parts(before, after)
            if changed:
                self.problems.append(f"{where} mutated model {model.name!r}: " + "; ".join(changed))
            self.seen[id(model)] = (model, _structure(after))
            shared = _shared_objects(model, result)
            if shared:
                self.problems.append(f"{where} returned a model sharing {', '.join(shared[:3])} with "
                                     f"its argument {model.name!r}")

    def forget(self) -> None:
        """Drop what was recorded (for tests of the guard itself)."""
        self.problems.clear(), self.seen.clear(), self.first.clear()

    def teardown(self) -> None:
        for model, structure in self.seen.values():
            changed = diff_parts(structure, _structure(model_parts(model, weights=False)))
            if changed:
                self.problems.append(f"model {model.name!r} changed after kgraft returned it: "
                                     + "; ".join(changed))
        for model, parts, where in self.first.values():
            weights = {k: v for k, v in parts.items() if k.startswith("weight ")}
            now = {k: v for k, v in model_parts(model).items() if k.startswith("weight ")}
            changed = diff_parts(weights, now)
            if changed:
                self.problems.append(f"the weights of model {model.name!r} changed during the test, "
                                     f"after it was handed to {where}: " + "; ".join(changed))


def _shared_objects(model, result) -> list[str]:
    """Layers and variables of ``model`` that the model(s) in ``result`` also hold."""
    # load_model hands a model argument back as it is (it loads files): that is not a copy sharing parts
    results = [r for r in (result if isinstance(result, (list, tuple)) else [result]) if _is_model(r) and r is not model]
    if not results:
        return []
    mine = {id(l): f"layer {l.name!r}" for l in iter_layers(model)}
    mine.update({id(v): f"variable {getattr(v, 'path', None) or v.name!r}" for v in model.weights})
    theirs = {id(o) for r in results for o in [*iter_layers(r), *r.weights]}
    return [mine[i] for i in mine if i in theirs]


def install_guard(guard: SourceGuard, monkeypatch) -> None:
    """Wrap kgraft's entry points (the public Keras-level functions included) for this test."""
    import kgraft.api
    import kgraft.surgery

    targets = {**GUARDED, "kgraft.api": (*kgraft.api.__all__, "lower", "build"),
               "kgraft.surgery": (*kgraft.surgery.__all__, "lower", "build")}
    wrapped = {}
    for module_name, names in targets.items():
        module = sys.modules[module_name]
        for name in names:
            fn = getattr(module, name)
            if fn not in wrapped:
                wrapped[fn] = guard.wrap(fn, f"kgraft.{name}")
            monkeypatch.setattr(module, name, wrapped[fn])
