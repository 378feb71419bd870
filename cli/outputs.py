"""Turning IR results into files: Keras models (weights copied) and checked ONNX exports.

Every output is written atomically (:mod:`kgraft.backends.atomic`): into a temporary sibling
that replaces the target only once everything in it is written and, for ONNX, checked
against the Keras model. A failure halfway leaves nothing that looks complete.
"""

from __future__ import annotations

import os

from ..backends.atomic import replacing
from ..ir import Graph, KgraftError
from .ui import UI

__all__ = ["build_models", "save_keras", "export_onnx_checked", "partition_files"]


def build_models(graphs: list[Graph], ui: UI) -> list:
    """Keras models for IR graphs, weights copied from the source layers."""
    from ..backends.keras import build

    what = "the model" if len(graphs) == 1 else f"{len(graphs)} partitions"
    with ui.step(f"building {what} in Keras (copying weights)"):
        return [build(g) for g in graphs]


def partition_files(count: int, path: str) -> list[str]:
    """Where :func:`save_keras` puts ``count`` models: ``path`` itself for one model named
    ``*.keras``, else ``path/part0.keras, ...`` (``path/model.keras`` for a single model)."""
    if count == 1 and path.endswith(".keras"):
        return [path]
    names = ["model.keras"] if count == 1 else [f"part{i}.keras" for i in range(count)]
    return [os.path.join(path, n) for n in names]


def save_keras(models: list, path: str, force: bool, ui: UI) -> list[str]:
    """Save ``models`` (see :func:`partition_files`) atomically; returns the file paths."""
    files = partition_files(len(models), path)
    single_file = files == [path]
    with ui.step(f"saving {len(models)} .keras file(s) to {path}"), \
            replacing(path, overwrite=force, directory=not single_file, what="-o", flag="--force") as tmp:
        for model, file in zip(models, files):
            model.save(tmp if single_file else os.path.join(tmp, os.path.basename(file)))
    return files


def export_onnx_checked(source, out_dir: str, cuts, force: bool, ui: UI, opset: int | None = None):
    """``kgraft.export_onnx`` + the ONNX chain checked against ``source``; the directory appears
    only if the check passes. Returns ``(manifest, report)``."""
    from ..backends.onnx import export, verify

    with replacing(out_dir, overwrite=force, what="--onnx", flag="--force") as tmp:
        with ui.step(f"converting to ONNX (tf2onnx), {len(cuts) + 1} partition(s)"):
            manifest = export(source, tmp, at=cuts or None, opset=opset, overwrite=True)
        with ui.step("checking the ONNX chain (onnxruntime) against Keras"):
            report = verify(source, tmp, strict=False)
        if not report.ok:
            raise KgraftError(f"the ONNX export does not match the Keras model, so {out_dir!r} was not "
                              f"written:\n{report}")
    manifest["dir"] = os.path.abspath(out_dir)
    return manifest, report
