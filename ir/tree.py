"""Walking and rewriting call-argument trees.

A call site's ``args``/``kwargs`` are the Keras call arguments as nested lists/dicts whose
tensor leaves are :class:`~kgraft.ir.graph.ValueRef` and whose other leaves are constants.
A *path* locates a leaf: ``("args", 0, 1)`` is the second item of the first argument.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

__all__ = ["iter_refs", "map_refs"]


def iter_refs(tree: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(path, ref)`` for every ValueRef leaf, depth first, in argument order."""
    from .graph import ValueRef

    if isinstance(tree, ValueRef):
        yield path, tree
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from iter_refs(item, path + (i,))
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from iter_refs(item, path + (key,))


def map_refs(tree: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of ``tree`` with every ValueRef leaf replaced by ``fn(leaf)``."""
    from .graph import ValueRef

    if isinstance(tree, ValueRef):
        return fn(tree)
    if isinstance(tree, list):
        return [map_refs(item, fn) for item in tree]
    if isinstance(tree, tuple):
        return tuple(map_refs(item, fn) for item in tree)
    if isinstance(tree, dict):
        return {key: map_refs(item, fn) for key, item in tree.items()}
    return tree
