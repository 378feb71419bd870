"""Copy a layer's whole state from a source layer to its rebuilt twin, as Keras's saving does.

``get_weights()`` misses state that Keras's own ``.keras`` saving carries: an adapted
``Normalization`` recomputes its mean/variance in ``load_own_variables``; lookup layers
(``StringLookup``, ``IntegerLookup``, ``TextVectorization``) keep their vocabulary as *assets*.
So, like ``keras.src.saving.saving_lib._save_state``/``_load_state``, each layer and each of its
sublayers saves its own variables (into a dict, holding the variables themselves: no numpy
round trip) and its assets (into a temporary directory), and its twin loads them.
"""

from __future__ import annotations

import tempfile

from ...ir import KgraftError
from .internals import sublayers

__all__ = ["copy_state"]


def copy_state(source, target, where: str) -> None:
    """Load ``source``'s variables and assets into ``target`` (same class, same config)."""
    _copy(source, target, where, set())


def _copy(source, target, where: str, visited: set) -> None:
    if id(source) in visited:
        return
    visited.add(id(source))
    store: dict = {}
    source.save_own_variables(store)
    try:
        target.load_own_variables(store)
    except Exception as e:
        raise KgraftError(
            f"cannot copy the state of layer {where!r} ({type(source).__name__}): the rebuilt layer does "
            f"not take the source's variables ({type(e).__name__}: {e}). Its get_config() probably omits a "
            "constructor argument that decides its variables."
        ) from e
    if hasattr(source, "save_assets"):
        with tempfile.TemporaryDirectory(prefix="kgraft-assets-") as assets:
            source.save_assets(assets)
            target.load_assets(assets)
    children, twins = sublayers(source), sublayers(target)
    if len(children) != len(twins):
        raise KgraftError(f"cannot copy the state of layer {where!r}: the source has {len(children)} "
                          f"sublayers, the rebuilt layer {len(twins)}")
    for child, twin in zip(children, twins):
        _copy(child, twin, f"{where}/{child.name}", visited)

