"""``kgraft demo``: the main job on a built-in model, end to end, with no downloads.

Lower ResNet50 (``weights=None``), list its split points, cut at the smallest tensor in the
middle half of the network, check that the partitions compose back to the model, save them.
"""

from __future__ import annotations

import math
import os

import click
import numpy as np

__all__ = ["run_demo", "choose_split_point"]


def choose_split_point(graph) -> str:
    """The split point with the fewest elements per sample in the middle half of the network."""
    from ..passes.cuts import split_points

    points = split_points(graph)
    if not points:
        raise click.ClickException(f"model {graph.name!r} has no single-tensor split point")
    middle = points[len(points) // 4: max(len(points) // 4 + 1, 3 * len(points) // 4)]

    def size(value):
        shape = graph.value_type(value).shape or ()
        return math.prod(d for d in shape[1:] if d)

    return graph.value_name(min(reversed(middle), key=size))  # ties: the later block output


def run_demo(model_name: str, input_shape: tuple[int, ...], out_dir: str, echo=click.echo) -> dict:
    import keras

    from ..backends.keras import build, lower
    from ..passes import run
    from ..passes.cuts import split_points
    from .models import build_application

    echo(f"1. building keras.applications.{model_name}(weights=None, input_shape={input_shape})")
    model = build_application(model_name, input_shape)
    graph = lower(model)
    echo(f"2. lowered to IR: {len(graph)} call sites, {len(graph.layers)} layers")
    points = [graph.value_name(v) for v in split_points(graph)]
    echo(f"3. {len(points)} split points, e.g. {', '.join(points[-6:])}")
    at = choose_split_point(graph)
    head, tail = build(run(graph, f"split{{at={at}}}"))
    echo(f"4. split at {at!r}: head {len(head.layers)} layers -> {tuple(head.outputs[0].shape)} "
         f"-> tail {len(tail.layers)} layers")
    x = np.random.default_rng(0).random((2, *input_shape), dtype=np.float32)
    diff = float(np.max(np.abs(np.asarray(model(x)) - np.asarray(tail(head(x))))))
    verdict = "OK" if diff <= 1e-5 else "MISMATCH"
    echo(f"5. tail(head(x)) vs model(x): max abs diff {diff:.3g} [{verdict}]")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, part in enumerate((head, tail)):
        path = os.path.join(out_dir, f"{model.name}_part{i}.keras")
        part.save(path)
        paths.append(path)
    echo(f"6. wrote {', '.join(paths)}")
    keras.backend.clear_session()
    return {"split_points": points, "at": at, "max_abs_diff": diff, "files": paths}
