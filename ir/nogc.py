"""Pausing Python's cyclic garbage collector while kgraft builds large graphs.

Lowering, passes and printing allocate a few container objects per call site, none of which form
reference cycles. Python's collector is triggered by allocation counts and, as the heap grows,
traverses all of it again and again (the model's config included): on a 100k-call-site model
that was 40-60% of lowering and of splitting (``benchmarks/bench_scale.py``), the precedent being
Mercurial's ``util.nogc``. Reference counting still frees everything as usual, and the collector
runs again as soon as the outermost pause ends. Not for code that runs Keras: its objects do form
cycles, and its time is what kgraft is compared against.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Context manager (and decorator) that disables the cyclic collector inside, re-entrantly."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
