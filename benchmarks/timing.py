"""The timing every kgraft-vs-Keras benchmark shares: Keras's own rebuild and interleaved rounds.

A ratio measured on a loaded machine is only fair when both sides see the same load, so the
runs alternate in one process (the order rotating each round, after a warm-up round) and the
medians of wall and process CPU time are compared. ``bench_check.py``, ``bench_compile.py`` and
``bench_hub.py`` time through :func:`interleaved`; :func:`keras_rebuild` is their baseline.
"""

from __future__ import annotations

import copy
import gc
import statistics
import time
from typing import Callable


def keras_rebuild(model):
    """What a Keras user does to copy a model with its weights: ``from_config`` on a deep copy of
    its config (Keras 3.15's ``from_config`` consumes its argument, and parts of a config can be
    the model's own objects), then ``set_weights``."""
    rebuilt = type(model).from_config(copy.deepcopy(model.get_config()))
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def interleaved(runs: dict[str, Callable[[], object]], repeats: int,
                progress: Callable[[int, dict], None] | None = None) -> dict[str, dict[str, list[float]]]:
    """``{name: {"wall": [s, ...], "cpu": [s, ...]}}``: each run timed ``repeats`` times.

    Round 0 is a warm-up; round ``i`` starts at run ``i`` (mod the number of runs) so none always
    goes first. A full collection precedes each run and its result is dropped after the clock
    stops: neither is timed. ``progress(i, samples)`` is called after each timed round.
    """
    names = list(runs)
    samples = {name: {"wall": [], "cpu": []} for name in names}
    for i in range(repeats + 1):
        for name in names[i % len(names):] + names[:i % len(names)]:
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            result = runs[name]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            del result
            if i:
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
        if i and progress is not None:
            progress(i, samples)
    return samples


def medians(samples: dict[str, dict[str, list[float]]]) -> dict[str, tuple[float, float]]:
    """``{name: (median wall s, median CPU s)}`` of :func:`interleaved`'s samples."""
    return {name: (statistics.median(s["wall"]), statistics.median(s["cpu"])) for name, s in samples.items()}
