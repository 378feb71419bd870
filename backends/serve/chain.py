"""What a server exposes for an export: model names and the tensors of each chain of partitions.

One convention for Triton repositories (:mod:`kgraft.backends.triton`), ``kgraft serve`` and
:class:`~kgraft.backends.serve.SplitRunner`, so a runner finds the same models on either:

* ``<model>_part<i>``: partition ``i`` alone;
* ``<model>``: every partition chained (Triton's ensemble), ``<model>_from<k>``: partitions
  ``k..n-1`` chained, so an edge that runs ``0..k-1`` sends one request.

``<model>`` is the manifest's model name with every character outside ``[A-Za-z0-9_-]``
replaced by ``_`` (Triton names a directory after it).
"""

from __future__ import annotations

import re

__all__ = ["model_name", "part_name", "chain_name", "chain_io", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_-]`` replaced by ``_``."""
    return _UNSAFE.sub("_", text) or "_"


def model_name(manifest: dict) -> str:
    return safe_name(manifest.get("model") or "model")


def part_name(manifest: dict, index: int) -> str:
    return f"{model_name(manifest)}_part{index}"


def chain_name(manifest: dict, start: int) -> str:
    """The model that runs partitions ``start..n-1`` in one request."""
    if start == 0:
        return model_name(manifest)
    if start == len(manifest["partitions"]) - 1:
        return part_name(manifest, start)
    return f"{model_name(manifest)}_from{start}"


def chain_io(manifest: dict, start: int) -> tuple[list[dict], list[dict]]:
    """``(inputs, outputs)`` of the chain from partition ``start``: what partition ``start``
    receives, and the model outputs it does not already receive (an output computed before
    ``start`` is passed through to the end; the caller has it)."""
    inputs = manifest["partitions"][start]["inputs"]
    have = {io["name"] for io in inputs}
    return inputs, [io for io in manifest["outputs"] if io["name"] not in have]
