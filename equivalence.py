"""The equivalence check behind ``check=True``: does a result compute what its source computes?

Every Keras-level function that returns models calls :func:`check_model` or :func:`check_split`
before returning. They run the source and the result on :func:`kgraft.numerics.probe_inputs`
(integer ids inside each Embedding's range, padded sequences where a mask is produced, strings
from a lookup's vocabulary), in inference mode, the parts of a split composed through numpy
arrays (as across a process boundary: nothing rides along on an eager tensor, a Keras mask
included), and compare NaN-strictly (:func:`kgraft.numerics.max_abs_diff`). That is the whole
cost when they agree: one forward pass of each, on one row unless a padded sequence needs two.

When they do not, :class:`EquivalenceError` names the first tensor that differs: the refs the
source and the result share (by name, in the result's topological order) are bisected, each
probe reading both sides' values with the :class:`~kgraft.backends.keras.interpret.Interpreter`
(which reaches tensors inside nested models, where ``keras.Model(...)`` says "Graph
disconnected"), so a model of ``n`` layers costs ``O(log n)`` forward passes to diagnose.

Training mode is not run: it would update BatchNormalization statistics and advance the random
state of the user's model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .ir import EquivalenceError, Graph, KgraftError, RefError, ValueRef, mask_layers
from .ir.refs import resolve
from .numerics import max_abs_diff, probe_inputs, rows_needed, scale, tolerance

__all__ = ["check_model", "check_split"]


def check_model(source, result, *, inputs: list[str] | None = None, outputs: list[str | None] | None = None,
                graph: Graph | None = None, what: str = "result", batch: int | None = None, seed: int = 0,
                rtol: float | None = None) -> None:
    """Raise :class:`EquivalenceError` unless ``result`` computes what ``source`` computes.

    ``inputs``: refs of the source tensors the result's inputs take (default: the source's
    inputs); ``outputs``: refs of the source tensors the result's outputs must equal, ``None``
    for an output with no counterpart (a new head); default: the source's outputs. ``graph`` is
    ``kgraft.lower(source)`` when the caller has it already. ``batch``: probe rows (default: the
    fewest that exercise every input, :func:`kgraft.numerics.rows_needed`). ``rtol``: the relative
    tolerance where an operation promises less than :func:`kgraft.numerics.tolerance`'s default
    (``fold_batchnorm``: 1e-4).
    """
    _Check(source, graph, what, batch, seed, rtol).run([result], inputs, outputs)


def check_split(source, parts: list, *, graph: Graph | None = None, what: str = "split",
                batch: int | None = None, seed: int = 0) -> None:
    """Raise :class:`EquivalenceError` unless feeding each part's outputs, as numpy arrays, to the
    next one reproduces ``source``'s outputs."""
    _Check(source, graph, what, batch, seed).run(list(parts), None, None)


@dataclass
class _Diff:
    name: str
    diff: float
    tol: float
    finite: bool = True  # the source's own value is finite
    scale: float = 0.0  # of the source's value

    @property
    def ok(self) -> bool:
        return self.diff <= self.tol

    def __str__(self) -> str:
        return f"{self.name!r} (max abs diff {self.diff:.3g}, tolerance {self.tol:.1g})"


def _numpy(outputs) -> list[np.ndarray]:
    import keras

    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(outputs)]


def _call(model, arrays: list) -> list[np.ndarray]:
    """``model``'s outputs on ``arrays``, passed in the structure its inputs were declared in.

    An eager call: for one call it is the cheapest path (ResNet152, one row: about 0.5 s of CPU,
    nearly all Keras's and TensorFlow's per-op dispatch; ``predict_on_batch`` or a ``tf.function``
    costs 3-5 s of tracing and graph optimization first), and it is the path a user's own call
    takes, masks riding on the tensors."""
    import keras

    struct = getattr(model, "_inputs_struct", None)  # Keras 3 Functional; tf.keras 2 has none
    feed = keras.tree.pack_sequence_as(struct, list(arrays)) if struct is not None else (
        arrays[0] if len(arrays) == 1 else list(arrays))
    return _numpy(model(feed, training=False))


def _gist(error: Exception) -> str:
    """The message of an error raised inside Keras, without its ANSI markup, the "Exception
    encountered when calling..." preamble or the argument dump."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered")]
    kept = lines[:next((i for i, line in enumerate(lines) if line.startswith("Arguments received")), len(lines))]
    return " ".join(kept)[:300].rstrip(".")


def _compare(name: str, got: np.ndarray, expected: np.ndarray, rtol: float | None = None) -> _Diff:
    finite = not (np.issubdtype(expected.dtype, np.floating) and not np.isfinite(expected).all())
    return _Diff(name, max_abs_diff(got, expected), tolerance(expected, rtol), finite, scale(expected))


class _Check:
    def __init__(self, source, graph: Graph | None, what: str, batch: int | None, seed: int,
                 rtol: float | None = None):
        from .backends.keras import load_model, lower

        self.source = load_model(source) if graph is None else graph.meta["source"]
        self.graph = lower(self.source) if graph is None else graph
        self.what, self.seed, self.rtol = what, seed, rtol
        self.batch = rows_needed(self.graph) if batch is None else batch  # 1 row halves the cost
        self.x = probe_inputs(self.graph, self.batch, seed)
        self._flat: Graph | None = None

    @property
    def flat(self) -> Graph:
        """The source with nested models inlined: every inner tensor is a value of it."""
        if self._flat is None:
            from .passes import inline_nested

            self._flat = inline_nested(self.graph)
        return self._flat

    def source_values(self, refs: list[ValueRef], masks: list[ValueRef] = ()) -> list[np.ndarray]:
        from .backends.keras.interpret import Interpreter

        return Interpreter(self.flat, self.source).run(self.x, refs, masks)

    def run(self, models: list, inputs: list[str] | None, outputs: list[str | None] | None) -> None:
        in_refs = None if inputs is None else list(dict.fromkeys(self._resolve(r, "input") for r in inputs))
        out_refs = None if outputs is None else [None if r is None else self._resolve(r, "output") for r in outputs]
        if in_refs is not None or out_refs is not None:
            in_refs = in_refs if in_refs is not None else self.flat.input_refs()
            out_refs = out_refs if out_refs is not None else list(self.flat.outputs)
        feeds, expected = self._reference(in_refs, out_refs)
        try:
            got = self.chain(models, feeds)
        except Exception as e:  # a result that cannot run where the source runs
            self._fail_to_run(e, models, feeds)
        if len(got) != len(expected):
            raise EquivalenceError(f"{self.what}: the result has {len(got)} outputs, the source model "
                                   f"{len(expected)} where {len(got)} were expected; {self._advice()}")
        names = self._output_names(out_refs, len(expected))
        diffs = [_compare(n, g, e, self.rtol) for n, g, e in zip(names, got, expected) if e is not None]
        bad = [d for d in diffs if not d.ok]
        if bad:
            if all(d.finite for d in bad):  # a NaN source is reported as such by _fail
                self._require_deterministic_source(in_refs, out_refs, expected, names)
            self._fail(bad, models, feeds)

    def _reference(self, in_refs, out_refs) -> tuple[list, list]:
        """What the result is fed and what it must return: the source's own inputs and outputs,
        or (for a sub-model) the source's values at ``in_refs`` and ``out_refs``."""
        try:
            if in_refs is None and out_refs is None:
                return self.x, _call(self.source, self.x)
            wanted = [r for r in out_refs if r is not None]
            # a result takes an input that carries a Keras mask with the mask right after it
            masked = [r for r in in_refs if r.node not in self.flat.inputs
                      and mask_layers.carried(self.flat, r) is not None]
            values = self.source_values(in_refs + wanted, masked)
            mask_of = dict(zip(masked, values[len(in_refs) + len(wanted):]))
            feeds = [a for r, v in zip(in_refs, values) for a in ([v, mask_of[r]] if r in mask_of else [v])]
            found = iter(values[len(in_refs):len(in_refs) + len(wanted)])
            return feeds, [None if r is None else next(found) for r in out_refs]
        except Exception as e:  # probes outside an input's domain (labels a CTC loss reads, ...)
            if isinstance(e, KgraftError) and not hasattr(e, "layer"):  # the interpreter names the layer
                raise
            self._source_fails(e)

    def _require_deterministic_source(self, in_refs, out_refs, expected: list, names: list[str]) -> None:
        """A source that computes something else on a second call with the same input in inference
        mode (a tf.keras 2 ``Dropout()(x, training=True)``: Monte Carlo dropout) cannot be compared
        with anything: say so, rather than blame the result."""
        _, again = self._reference(in_refs, out_refs)
        moved = [n for n, e, a in zip(names, expected, again) if e is not None and not _compare(n, a, e, self.rtol).ok]
        if moved:
            raise EquivalenceError(
                f"{self.what}: cannot check the result: the source model itself computes different "
                f"{', '.join(map(repr, moved))} on two calls with the same probe inputs in inference mode (a "
                "layer that stays random there, e.g. a Dropout or GaussianNoise called with training=True, "
                "Monte Carlo dropout). Pass check=False, and compare the result with the source with "
                "their random generators seeded alike.")

    def chain(self, models: list, feeds: list) -> list[np.ndarray]:
        """Each model's outputs, as numpy arrays, are the next one's inputs."""
        values = list(feeds)
        for model in models:
            values = _call(model, values)
        return values

    def _resolve(self, ref: str, role: str) -> ValueRef:
        try:
            return resolve(self.flat, ref)
        except RefError as e:
            raise KgraftError(f"{self.what}: cannot check the result: its {role} {ref!r} names no tensor "
                              f"of the source model ({e})") from e

    def _output_names(self, out_refs, n: int) -> list[str]:
        if out_refs is None:
            refs = self.graph.outputs
            return [self.graph.value_name(v) for v in refs] if len(refs) == n else [f"output {i}" for i in range(n)]
        return [self.flat.value_name(r) if r is not None else "" for r in out_refs]

    def _advice(self) -> str:
        return ("kgraft refuses to return a model that computes something else: this is a kgraft bug, or a "
                "layer whose get_config() does not describe it fully (a constructor argument it omits, state "
                "outside its weights). Pass check=False to get the result unchecked.")

    def _source_fails(self, error: Exception) -> None:
        layer = getattr(error, "layer", None)
        where = "" if layer is None else f" in layer {layer.qualified_name!r} ({layer.class_name})"
        cause = error.__cause__ if layer is not None and error.__cause__ is not None else error
        inputs = ", ".join(f"{self.graph.value_name(ValueRef(i))}: {self.graph.value_type(ValueRef(i))}"
                           for i in self.graph.inputs)
        raise EquivalenceError(
            f"{self.what}: cannot check the result: the source model itself fails{where} on kgraft's probe "
            f"inputs (random values of each input's type, batch {self.batch}, seed {self.seed}; inputs {inputs}): "
            f"{type(cause).__name__}: {_gist(cause)}. An input whose values must lie in a narrower domain "
            "(e.g. labels a loss layer reads) cannot be probed: pass check=False and compare the result "
            "with the source on your own data.") from error

    def _fail_to_run(self, error: Exception, models: list, feeds: list) -> None:
        layer = _Bisect(self, models, feeds).failing_layer()
        where = "" if layer is None else f" in layer {layer[0]!r} ({layer[1]}{self._in_part(layer[2], models)})"
        e = EquivalenceError(f"{self.what}: the result fails{where} on probe inputs (batch {self.batch}, seed "
                             f"{self.seed}) on which the source model runs: {type(error).__name__}: "
                             f"{_gist(error)}. {self._advice()}")
        e.ref, e.layer_class, e.part = layer if layer is not None else (None, None, None)
        e.max_abs_diff = math.inf
        raise e from error

    @staticmethod
    def _in_part(part: int, models: list) -> str:
        return f", in part {part}" if len(models) > 1 else ""

    def _fail(self, bad: list[_Diff], models: list, feeds: list) -> None:
        """Raise the EquivalenceError for outputs ``bad``, naming the first differing tensor
        (also as the error's ``ref``, ``layer_class``, ``max_abs_diff`` and ``part``)."""
        probe = f"on probe inputs (batch {self.batch}, seed {self.seed}, inference mode)"
        outs = ", ".join(str(d) for d in bad)
        if not all(d.finite for d in bad):
            raise EquivalenceError(
                f"{self.what}: cannot check the result: the source model itself computes NaN or inf at "
                f"{', '.join(repr(d.name) for d in bad if not d.finite)} {probe}. Pass check=False.")
        first = _Bisect(self, models, feeds).first_difference()
        if first is None:
            where = "no tensor the source and the result share differs, only the output(s)"
        else:
            d, layer_class, part = first
            where = (f"the first differing tensor is {d.name!r} ({layer_class}{self._in_part(part, models)}): max abs diff "
                     f"{d.diff:.3g}, tolerance {d.tol:.1g} (scale {d.scale:.3g})")
        error = EquivalenceError(f"{self.what}: the result does not compute what the source model computes "
                                 f"{probe}: {where}; differing output(s): {outs}. {self._advice()}")
        error.ref, error.layer_class, error.max_abs_diff, error.part = (
            (first[0].name, first[1], first[0].diff, first[2]) if first else (None, None, bad[0].diff, None))
        raise error


class _Bisect:
    """Finds the first tensor, in the result's topological order, whose value differs from the
    source's tensor of the same name (assuming, as a wrong weight or a lost mask makes it, that
    what follows a difference differs too)."""

    def __init__(self, check: _Check, models: list, feeds: list):
        from .backends.keras import lower
        from .passes import inline_nested

        self.check, self.models, self.feeds = check, models, feeds
        self.graphs = [inline_nested(lower(m)) for m in models]
        self._inputs: dict[int, list] = {0: list(feeds)}
        self.candidates: list[tuple[int, ValueRef, ValueRef]] = []  # (part, result value, source value)
        for part, g in enumerate(self.graphs):
            for node in g.nodes():
                if node.id in g.inputs:
                    continue
                for i in range(len(node.outputs)):
                    source_value = self._counterpart(g, ValueRef(node.id, i))
                    if source_value is not None:
                        self.candidates.append((part, ValueRef(node.id, i), source_value))

    def _counterpart(self, g: Graph, value: ValueRef) -> ValueRef | None:
        flat = self.check.flat
        try:
            source_value = resolve(flat, g.value_name(value))
        except RefError:
            return None
        same_type = flat.value_type(source_value).compatible(g.value_type(value))
        return source_value if same_type and source_value.node not in flat.inputs else None

    def part_inputs(self, part: int) -> list:
        if part not in self._inputs:
            self._inputs[part] = _call(self.models[part - 1], self.part_inputs(part - 1))
        return self._inputs[part]

    def diff(self, k: int) -> _Diff:
        from .backends.keras.interpret import Interpreter

        part, value, source_value = self.candidates[k]
        got = Interpreter(self.graphs[part], self.models[part]).run(self.part_inputs(part), [value])[0]
        expected = self.check.source_values([source_value])[0]
        return _compare(self.graphs[part].value_name(value), got, expected, self.check.rtol)

    def failing_layer(self) -> tuple[str, str, int] | None:
        """The first layer whose call fails (name, class, part), each part run in the interpreter."""
        from .backends.keras.interpret import Interpreter

        for part, (g, model) in enumerate(zip(self.graphs, self.models)):
            try:
                Interpreter(g, model).run(self.part_inputs(part))
            except KgraftError as e:
                layer = getattr(e, "layer", None)
                return None if layer is None else (layer.name, layer.class_name, part)
        return None

    def first_difference(self) -> tuple[_Diff, str, int] | None:
        """The first differing tensor's comparison, its layer class and its part, or None."""
        if not self.candidates:
            return None
        hi = len(self.candidates) - 1
        worst = self.diff(hi)
        if worst.ok:
            return None
        lo = 0  # invariant: candidate hi differs; every candidate before lo agrees
        while lo < hi:
            mid = (lo + hi) // 2
            d = self.diff(mid)
            if d.ok:
                lo = mid + 1
            else:
                hi, worst = mid, d
        part, value, _ = self.candidates[hi]
        return worst, self.graphs[part].layer_of(value.node).class_name, part
