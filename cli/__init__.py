"""The ``kgraft`` command line: ``show``, ``opt``, ``split``, ``draw``, ``plan``, ``demo``, ``serve``.

One module per command; :mod:`.app` holds the group and the error policy (one line, exit
1 for model errors and 2 for usage errors, tracebacks only with ``--debug``), :mod:`.ui`
the progress display and result printing. TensorFlow is imported only by commands that need
a Keras model.
"""

from __future__ import annotations

from . import demo, draw, opt, plan, serve, show, split  # noqa: F401  (each registers its command)
from .app import main

__all__ = ["main"]
