"""Tensor references and the call-argument trees that hold them.

A call site's ``args``/``kwargs`` are the Keras call arguments as nested tuples and
:class:`FrozenDict` s whose tensor leaves are :class:`ValueRef` s and whose other leaves are
constants. A *path* locates a leaf: ``("args", 0, 1)`` is the second item of the first argument.
The trees are frozen (:func:`freeze`) when a node is made, so that a node's cached operands can
never go stale; code that hands them to Keras, which expects lists and dicts, :func:`thaw` s them.
Lowering turns the tuples of a config into lists (a serialized tuple is a ``__tuple__`` dict), so
freezing every list into a tuple loses nothing.

``ValueRef`` lives here rather than in :mod:`~kgraft.ir.graph` (which re-exports it) so that the
walkers below can test leaves against it without importing the graph module on every call.
Walking is recursive over the nesting of one call's arguments (a few levels), never over the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ValueRef", "FrozenDict", "freeze", "freeze_refs", "thaw", "iter_refs", "map_refs"]


@dataclass(frozen=True, slots=True)
class ValueRef:
    """One tensor: output ``index`` of call site ``node``."""

    node: str
    index: int = 0


def _read_only(self, *args, **kwargs):
    raise TypeError(f"a {type(self).__name__} is read-only: build a new one ({{**old, key: value}})")


class FrozenDict(dict):
    """A dict that cannot be changed, and so can be hashed (when its values can).

    A ``dict`` subclass rather than a ``types.MappingProxyType``: argument trees and pass options
    are compared, hashed, printed as JSON, pickled and tested with ``isinstance(x, dict)``, which a
    proxy does not all allow."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


_ATOMS = frozenset({str, int, float, bool, type(None), ValueRef})  # leaves that are frozen already


def freeze_refs(tree: Any, path: tuple, found: list) -> Any:
    """``tree`` frozen (lists and tuples as tuples, dicts as :class:`FrozenDict` s), appending
    ``(path, ref)`` to ``found`` for every ValueRef leaf as :func:`iter_refs` lists them: one walk
    for what a new node needs."""
    kind = type(tree)
    if kind is ValueRef:
        found.append((path, tree))
        return tree
    if kind is list or kind is tuple or (kind is not FrozenDict and isinstance(tree, (list, tuple))):
        items, out = enumerate(tree), []
    elif isinstance(tree, dict):
        items, out = tree.items(), {}
    else:
        return tree
    add, atoms = out.append if type(out) is list else None, _ATOMS
    for key, item in items:
        kind = type(item)
        if kind is ValueRef:
            found.append((path + (key,), item))
        elif kind not in atoms:
            item = freeze_refs(item, path + (key,), found)
        if add is None:
            out[key] = item
        else:
            add(item)
    return tuple(out) if add is not None else FrozenDict(out)


def freeze(tree: Any) -> Any:
    """``tree`` with every list (and tuple) a tuple and every dict a :class:`FrozenDict`."""
    return freeze_refs(tree, (), [])


def thaw(tree: Any) -> Any:
    """A frozen tree as Keras takes it: tuples as lists and frozen dicts as dicts (recursively)."""
    if isinstance(tree, (list, tuple)):
        return [thaw(item) for item in tree]
    if isinstance(tree, dict):
        return {k: thaw(v) for k, v in tree.items()}
    return tree


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
    """A frozen copy of ``tree`` with every ValueRef leaf replaced by ``fn(leaf)``."""
    if isinstance(tree, ValueRef):
        return fn(tree)
    if isinstance(tree, (list, tuple)):
        return tuple([fn(item) if isinstance(item, ValueRef) else map_refs(item, fn) for item in tree])
    if isinstance(tree, dict):
        return FrozenDict({key: map_refs(item, fn) for key, item in tree.items()}) if tree else _EMPTY
    return tree


_EMPTY = FrozenDict()
