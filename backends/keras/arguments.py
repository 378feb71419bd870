"""A call site's arguments as Keras takes them: tensors where the IR has values, and the
serialized constants of a config (``__tuple__``, slices, dtypes...) deserialized, as Keras's
``functional.deserialize_node`` does. The builder calls layers on Keras tensors with them, the
interpreter on concrete ones."""

from __future__ import annotations

from typing import Any, Callable

from ...ir import KgraftError, ValueRef
from ...ir.tree import map_refs
from .internals import deserialize_keras_object

__all__ = ["call_arguments"]

_TOKEN = "\x00kgraft-tensor:"  # stands for a tensor while Keras deserializes a call's other arguments


def call_arguments(node, value: Callable[[ValueRef], Any]) -> tuple[list, dict]:
    """The call's arguments with ``value(ref)`` for the IR's values and Keras objects for the
    serialized constants (tuples, slices, dtypes...), as ``functional.deserialize_node`` makes them."""
    refs: list[ValueRef] = []

    def token(ref: ValueRef) -> str:
        refs.append(ref)
        return f"{_TOKEN}{len(refs) - 1}"

    args, kwargs = map_refs(node.args, token), map_refs(node.kwargs, token)
    args, kwargs = _deserialized(node, args), _deserialized(node, kwargs)

    def tensor(leaf):
        if isinstance(leaf, str) and leaf.startswith(_TOKEN):
            return value(refs[int(leaf[len(_TOKEN):])])
        return leaf

    return _map_leaves(args, tensor), _map_leaves(kwargs, tensor)


def _deserialized(node, tree):
    if not _has_objects(tree):
        return tree
    try:
        return deserialize_keras_object(tree)
    except Exception as e:  # Keras fails on it too, deep inside from_config
        raise KgraftError(f"call {node.id} of layer {node.layer!r}: its arguments in the model config hold a "
                          f"serialized object that Keras cannot rebuild ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else e}); fix or re-save the model") from None


def _has_objects(tree) -> bool:
    if isinstance(tree, dict):
        return "class_name" in tree or any(_has_objects(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(_has_objects(v) for v in tree)
    return False


def _map_leaves(tree, fn):
    if isinstance(tree, list):
        return [_map_leaves(v, fn) for v in tree]
    if isinstance(tree, tuple):
        return tuple(_map_leaves(v, fn) for v in tree)
    if isinstance(tree, dict):
        return {k: _map_leaves(v, fn) for k, v in tree.items()}
    return fn(tree)
