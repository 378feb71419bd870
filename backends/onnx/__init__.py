"""The ONNX backend: partitions of a split as ONNX files, chained with ONNX Runtime.

* :func:`export` (``kgraft.export_onnx``) — one ``.onnx`` per partition + ``manifest.json``;
  all partitions are cut (with onnx-ir, :mod:`.cut`) out of ONE tf2onnx conversion of the whole
  model, which :mod:`.cache` keeps for later cuts; ONNX input/output names are the refs of the
  tensors they carry.
* :class:`OnnxPipeline`, :func:`load`, :func:`run_onnx` (``kgraft.run_onnx``) — ONNX Runtime
  sessions created once per export and chained by tensor name (a :class:`SessionChain`, through
  IOBinding); any batch size.
* :func:`verify` — Keras model vs ONNX chain, per-output max abs difference.

TensorFlow, tf2onnx and onnxruntime are imported on first use.
"""

from .convert import DEFAULT_OPSET, MIN_OPSET, OpsetError
from .export import FORMAT, MANIFEST, ConversionFallbackWarning, bytes_per_sample, export
from .runtime import OnnxPipeline, SessionChain, clear_cache, load, read_manifest, run_onnx
from .verify import OnnxMismatchError, OutputDiff, VerifyReport, verify

export_onnx = export

__all__ = ["export", "export_onnx", "run_onnx", "OnnxPipeline", "SessionChain", "load", "clear_cache",
           "read_manifest", "verify", "VerifyReport", "OutputDiff", "OnnxMismatchError", "OpsetError", "bytes_per_sample",
           "ConversionFallbackWarning",
           "DEFAULT_OPSET", "MIN_OPSET", "FORMAT", "MANIFEST"]
