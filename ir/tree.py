"""Tensor references and the call-argument trees that hold them.

A call site's ``args``/``kwargs`` are the Keras call arguments as nested lists/dicts whose
tensor leaves are :class:`ValueRef` s and whose other leaves are constants. A *path* locates a
leaf: ``("args", 0, 1)`` is the second item of the first argument.

``ValueRef`` lives here rather than in :mod:`~kgraft.ir.graph` (which re-exports it) so that the
walkers below can test leaves against it without importing the graph module on every call.
Walking is recursive over the nesting of one call's arguments (a few levels), never over the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ValueRef", "iter_refs", "map_refs"]


@dataclass(frozen=True, slots=True)
class ValueRef:
    """One tensor: output ``index`` of call site ``node``."""

    node: str
    index: int = 0


def iter_refs(tree: Any, path: tuple = ()) -> list[tuple[tuple, ValueRef]]:
    """``(path, ref)`` for every ValueRef leaf, depth first, in argument order."""
    found: list[tuple[tuple, ValueRef]] = []
    _collect(tree, path, found)
    return found


def _collect(tree: Any, path: tuple, found: list) -> None:
    if isinstance(tree, ValueRef):
        found.append((path, tree))
        return
    if isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    elif isinstance(tree, dict):
        items = tree.items()
    else:
        return
    for key, item in items:
        if isinstance(item, ValueRef):  # the common leaf, without a call
            found.append((path + (key,), item))
        elif isinstance(item, (list, tuple, dict)):
            _collect(item, path + (key,), found)


def map_refs(tree: Any, fn: Callable[[ValueRef], Any]) -> Any:
    """A copy of ``tree`` with every ValueRef leaf replaced by ``fn(leaf)``."""
    if isinstance(tree, ValueRef):
        return fn(tree)
    if isinstance(tree, list):
        return [fn(item) if isinstance(item, ValueRef) else map_refs(item, fn) for item in tree]
    if isinstance(tree, tuple):
        return tuple(map_refs(item, fn) for item in tree)
    if isinstance(tree, dict):
        return {key: map_refs(item, fn) for key, item in tree.items()}
    return tree
