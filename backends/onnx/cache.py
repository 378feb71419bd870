"""The converted model, kept so that a new cut costs no tf2onnx run.

Users try many cuts of one model (the planner ranks them; bandwidth changes). The exporter
converts the whole model once, every tensor a cut may cross exposed as an output, and cuts any
partition out of that graph (:mod:`.cut`). The conversion is kept in memory for the process
(the last :data:`MEMORY_ENTRIES` models) and on disk, one ``.onnx`` file per model under
:func:`cache_dir`, keyed by everything that determines it: the model's IR text (architecture and
layer configs), a digest of its weights, the opset, and the versions of kgraft, TensorFlow, Keras,
tf2onnx and this cache's format.

Where: ``$KGRAFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/kgraft``, else ``~/.cache/kgraft``, in
``onnx/``. Off: ``export_onnx(..., cache=False)`` (neither memory nor disk) or
``KGRAFT_NO_CACHE=1`` (no disk). Clear: :func:`clear` or delete the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Converted", "cache_dir", "clear", "lookup", "store", "model_key", "MEMORY_ENTRIES"]

FORMAT = 1  # bump when what is stored changes
MEMORY_ENTRIES = 4
_NAMES = "kgraft.cache.names"  # metadata key: [ref -> tensor name, ref -> Keras shape]

_MEMORY: OrderedDict[str, "Converted"] = OrderedDict()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Converted:
    """A whole-model conversion: the ONNX model, each ref's tensor name in it and Keras shape
    (tf2onnx leaves some dimensions unknown that Keras knows, e.g. attention lengths)."""

    proto: object  # onnx.ModelProto, never modified
    names: dict[str, str]
    shapes: dict[str, list]


def cache_dir() -> str | None:
    """The disk cache directory, or None when ``KGRAFT_NO_CACHE`` is set."""
    if os.environ.get("KGRAFT_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no"):
        return None
    root = os.environ.get("KGRAFT_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "kgraft")
    return os.path.join(root, "onnx")


def _weights_digest(model) -> str:
    digest = hashlib.sha1()
    for var in model.weights:
        array = var.numpy()
        digest.update(f"{var.path}|{array.dtype}|{array.shape}|".encode())
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


def model_key(model, graph_text: str, opset: int) -> str:
    """The cache key of converting ``model`` (whose IR prints as ``graph_text``) at ``opset``."""
    import keras
    import tensorflow as tf
    import tf2onnx

    from ..._version import __version__

    parts = {"format": FORMAT, "ir": graph_text, "weights": _weights_digest(model), "opset": opset,
             "versions": [__version__, tf.__version__, keras.__version__, tf2onnx.__version__]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def lookup(key: str, disk: bool = True) -> tuple[Converted | None, str]:
    """``(conversion, "memory" | "disk")``, or ``(None, "miss")``."""
    with _LOCK:
        hit = _MEMORY.get(key)
        if hit is not None:
            _MEMORY.move_to_end(key)
            return hit, "memory"
    directory = cache_dir() if disk else None
    path = directory and os.path.join(directory, f"{key}.onnx")
    if not path or not os.path.exists(path):
        return None, "miss"
    import onnx

    try:
        proto = onnx.load(path)
        props = {p.key: p.value for p in proto.metadata_props}
        names, shapes = json.loads(props.pop(_NAMES))
        del proto.metadata_props[:]  # as it was stored: identical partitions from memory or disk
        for k, v in props.items():
            proto.metadata_props.add(key=k, value=v)
    except Exception:  # a damaged entry is a miss; it is replaced by the next store
        return None, "miss"
    entry = Converted(proto, names, shapes)
    _remember(key, entry)
    return entry, "disk"


def store(key: str, entry: Converted, disk: bool = True) -> None:
    """Keep ``entry`` in memory and (``disk``) write it atomically to the cache directory."""
    _remember(key, entry)
    directory = cache_dir() if disk else None
    if not directory:
        return
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(entry.proto)
    copy.metadata_props.add(key=_NAMES, value=json.dumps([entry.names, entry.shapes]))
    try:
        data = copy.SerializeToString()
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{key}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, f"{key}.onnx"))
    except (OSError, ValueError):  # read-only home, a model over protobuf's 2 GiB: memory only
        pass


def _remember(key: str, entry: Converted) -> None:
    with _LOCK:
        _MEMORY[key] = entry
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)


def clear(disk: bool = True) -> None:
    """Forget every kept conversion (in memory, and with ``disk`` the cache directory's files)."""
    with _LOCK:
        _MEMORY.clear()
    directory = cache_dir() if disk else None
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".onnx") or name.endswith(".tmp"):
                try:
                    os.remove(os.path.join(directory, name))
                except OSError:
                    pass
