"""Comparing built results with their source, per output (the CLI's ``--verify`` and ``kgraft demo``).

The results (one model, or the partitions of a split, chained in order: each one's outputs
are the next one's inputs) are run on probe inputs (:func:`kgraft.numerics.probe_inputs`) and
their final outputs compared NaN-strictly (:func:`kgraft.numerics.max_abs_diff`) with the same
tensors of the source model. Tensors are matched by ref: the source model itself gives its own
outputs; any other tensor (an extracted feature map, a partition's input in the middle of the
network) comes from a probe, the source cut at those tensors. Outputs that have
no counterpart in the source (a new head) are reported, not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, KgraftError, RefError, ValueRef
from .ir.refs import resolve
from .numerics import max_abs_diff, probe_inputs

__all__ = ["Check", "check_results"]

ATOL = 1e-5


@dataclass
class Check:
    """Per-output max abs differences of a verification."""

    compared: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    atol: float = ATOL
    what: str = ""

    @property
    def max_abs_diff(self) -> float:
        return max((d for _, d in self.compared), default=0.0)

    @property
    def ok(self) -> bool:
        return all(d <= self.atol for _, d in self.compared)

    def summary(self) -> str:
        verdict = "OK" if self.ok else "MISMATCH"
        extra = f"; not in the source, not compared: {', '.join(self.skipped)}" if self.skipped else ""
        return (f"{self.what}: max abs diff {self.max_abs_diff:.3g} over {len(self.compared)} output(s) "
                f"(tolerance {self.atol:g}) [{verdict}]{extra}")

    def as_dict(self) -> dict:
        return {"what": self.what, "max_abs_diff": self.max_abs_diff, "ok": self.ok, "atol": self.atol,
                "outputs": {name: d for name, d in self.compared}, "not_compared": self.skipped}


def _run(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    import keras

    out = model(arrays[0] if len(arrays) == 1 else list(arrays), training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(out)]


def _counterpart(graph: Graph, flat: Graph, name: str) -> str | None:
    """``name`` if it names a tensor of the source (before or after inlining), else None."""
    for g in (graph, flat):
        try:
            resolve(g, name)
            return name
        except RefError:
            continue
    return None


def check_results(graph: Graph, results: list[Graph], models: list, what: str, atol: float = ATOL) -> Check:
    """Chain ``models`` (built from ``results``) and compare with the source of ``graph``."""
    from .backends.keras import build
    from .passes import extract, inline_nested

    source = graph.meta["source"]
    flat = inline_nested(graph)
    source_inputs = [graph.value_name(v) for v in graph.input_refs()]
    source_outputs = [graph.value_name(v) for v in graph.outputs]
    first, last = results[0], results[-1]
    in_names = [first.value_name(ValueRef(i)) for i in first.inputs]
    out_names = [last.value_name(v) for v in last.outputs]
    check = Check(atol=atol, what=what)
    x = probe_inputs(graph)
    feeds = dict(zip(source_inputs, x))

    inner_inputs = [n for n in in_names if n not in feeds]
    missing = [n for n in inner_inputs if _counterpart(graph, flat, n) is None]
    if missing:
        raise KgraftError(f"verify: input(s) {', '.join(missing)} of the result have no counterpart in the "
                          "source model, so there is nothing to feed them")
    wanted = [n for n in out_names if _counterpart(graph, flat, n) is not None]
    check.skipped = [n for n in out_names if n not in wanted]
    if not wanted:
        raise KgraftError(f"verify: none of the outputs ({', '.join(out_names)}) is a tensor of the source "
                          "model, so there is nothing to compare")
    if out_names == source_outputs and not inner_inputs:  # the source model itself is the reference
        reference = dict(zip(source_outputs, _run(source, x)))
    else:
        probe_refs = list(dict.fromkeys(inner_inputs + wanted))
        probe = build(extract(graph, outputs=probe_refs))
        reference = dict(zip(probe_refs, _run(probe, x)))

    values = [feeds[n] if n in feeds else reference[n] for n in in_names]
    for model in models:
        values = _run(model, values)
    for name, value in zip(out_names, values):
        if name in reference:
            check.compared.append((name, max_abs_diff(value, reference[name])))
    return check
