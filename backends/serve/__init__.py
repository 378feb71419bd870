"""Split inference, served: the edge side (:class:`SplitRunner`) and the server side (:func:`serve`).

:class:`SplitRunner` runs the first partitions of an export with ONNX Runtime and sends what
crosses to any server speaking the KServe v2 inference protocol (Triton, KServe, MLServer);
:func:`serve` (``kgraft serve``) serves the other partitions through KServe's own server. Both
name the models as :mod:`.chain` says. ``tritonclient`` and ``kserve`` are imported on first use
(``pip install 'kgraft[serve]'``).
"""

from .chain import chain_io, chain_name, model_name, part_name
from .runner import SplitRunner, Timing
from .server import serve

__all__ = ["SplitRunner", "Timing", "serve", "chain_io", "chain_name", "model_name", "part_name"]
