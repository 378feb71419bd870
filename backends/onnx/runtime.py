"""Run exported partitions as a chain of ONNX Runtime sessions.

:class:`OnnxPipeline` opens one ``InferenceSession`` per partition, once, and feeds each
partition by name from the tensors computed so far (model inputs, then every partition's
outputs), so pass-through tensors need no special handling. Sessions are reused across calls
and the batch dimension is free. :func:`load` caches pipelines per directory (invalidated when
``manifest.json`` changes); :func:`run_onnx` is ``load(...).run(inputs)``.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from ...ir import KgraftError
from .export import FORMAT, MANIFEST

__all__ = ["OnnxPipeline", "load", "run_onnx", "read_manifest", "clear_cache", "session_options", "compute_clock"]


def session_options(threads: int | None = None):
    """ONNX Runtime session options with ``threads`` intra-op threads (None: ONNX Runtime's default,
    one per core). ``threads=1`` runs every kernel on the calling thread, so :func:`compute_clock`
    can time it in CPU time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise KgraftError(f"threads={threads!r} must be a positive number of ONNX Runtime threads (or None)")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def compute_clock(threads: int | None):
    """The clock that times ONNX Runtime work with ``threads``: with one thread, the calling
    thread's CPU time (what the work costs, whatever else the host runs: on a busy 2-core host
    the wall time of one inference moved 2x, its CPU time 10%); else wall time."""
    import time

    return time.thread_time if threads == 1 else time.perf_counter


def read_manifest(manifest_or_dir) -> tuple[str, dict]:
    """``(directory, manifest)`` from a directory, a ``manifest.json`` path or a manifest dict."""
    if isinstance(manifest_or_dir, dict):
        directory = manifest_or_dir.get("dir")
        if not directory:
            raise KgraftError("this manifest dict has no 'dir' (where its .onnx files are): pass the "
                              "directory export_onnx wrote, or the dict export_onnx returned")
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            raise KgraftError(f"no {MANIFEST} in {directory!r}: was the export moved or deleted?")
        return _read(path)
    if not isinstance(manifest_or_dir, (str, os.PathLike)):
        raise KgraftError(f"expected an export directory, a {MANIFEST} path or a manifest dict, "
                          f"got {type(manifest_or_dir).__name__}")
    path = os.path.abspath(os.fspath(manifest_or_dir))
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST)
    if not os.path.exists(path):
        raise KgraftError(f"no ONNX export at {os.fspath(manifest_or_dir)!r}: {path!r} does not exist "
                          "(write one with kgraft.export_onnx(model, out_dir, at=...))")
    return _read(path)


def _read(path: str) -> tuple[str, dict]:
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise KgraftError(f"cannot read {path!r}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KgraftError(f"{path!r} is not a kgraft ONNX manifest (expected format {FORMAT!r})")
    return os.path.dirname(path), manifest


class OnnxPipeline:
    """The partitions of one export as ONNX Runtime sessions, chained by tensor name.

    ``upto=k`` opens only partitions ``0..k-1`` (an edge device that runs the first ones).
    """

    def __init__(self, manifest_or_dir, providers=None, session_options=None, upto: int | None = None):
        import onnxruntime as ort

        self.dir, self.manifest = read_manifest(manifest_or_dir)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.inputs = self.manifest["inputs"]
        self.outputs = self.manifest["outputs"]
        self.input_names = [io["name"] for io in self.inputs]
        self.output_names = [io["name"] for io in self.outputs]
        self.sessions = []
        for part in self.manifest["partitions"][:upto]:
            path = os.path.join(self.dir, part["file"])
            try:
                session = ort.InferenceSession(path, sess_options=session_options, providers=self.providers)
            except Exception as e:
                raise KgraftError(f"ONNX Runtime cannot open {path!r}: {e}") from e
            self.sessions.append(session)
        self._feeds = [[i.name for i in s.get_inputs()] for s in self.sessions]
        self._fetches = [[o.name for o in s.get_outputs()] for s in self.sessions]

    def __len__(self) -> int:
        return len(self.sessions)

    def __repr__(self) -> str:
        return f"<OnnxPipeline {self.manifest.get('model')!r}: {len(self)} partition(s) in {self.dir!r}>"

    def normalize(self, inputs) -> dict[str, np.ndarray]:
        """Model inputs by name, from an array, a list (model input order) or a dict by name."""
        names = self.input_names
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(names))
            missing = [n for n in names if n not in inputs]
            if unknown or missing:
                raise KgraftError(f"inputs by name: expected {names}, got {sorted(inputs)}"
                                  + (f" (missing {missing})" if missing else "")
                                  + (f" (unknown {unknown})" if unknown else ""))
            arrays = [inputs[n] for n in names]
        elif isinstance(inputs, (list, tuple)) and (len(names) > 1 or _is_array_list(inputs)):
            if len(inputs) != len(names):
                raise KgraftError(f"the model has {len(names)} input(s) {names}, got a list of {len(inputs)}")
            arrays = list(inputs)
        else:
            if len(names) != 1:
                raise KgraftError(f"the model has {len(names)} inputs {names}: pass a list in that order "
                                  "or a dict by name")
            arrays = [inputs]
        return {io["name"]: _as_input(a, io) for a, io in zip(arrays, self.inputs)}

    def run(self, inputs) -> list[np.ndarray]:
        """The model's outputs (in order) for ``inputs``.

        Tensors stay ONNX Runtime ``OrtValue``s from one partition to the next
        (``run_with_ort_values``), so what crosses a cut is not copied into numpy and back.
        """
        import onnxruntime as ort

        env = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in self.normalize(inputs).items()}
        for i, session in enumerate(self.sessions):
            results = session.run_with_ort_values(self._fetches[i], {n: env[n] for n in self._feeds[i]})
            env.update(zip(self._fetches[i], results))
        return [env[n].numpy() for n in self.output_names]

    def run_all(self, inputs) -> dict[str, np.ndarray]:
        """Every tensor of the chain by name: model inputs, what crosses each cut, model outputs."""
        env = self.normalize(inputs)
        for i, session in enumerate(self.sessions):
            results = session.run(self._fetches[i], {n: env[n] for n in self._feeds[i]})
            env.update(zip(self._fetches[i], results))
        return env

    __call__ = run

    def run_partition(self, index: int, feeds: dict) -> dict[str, np.ndarray]:
        """One partition on its own: ``{input name: array}`` -> ``{output name: array}``."""
        session = self.sessions[index]
        results = session.run(self._fetches[index], {n: np.asarray(feeds[n]) for n in self._feeds[index]})
        return dict(zip(self._fetches[index], results))


def _is_array_list(items) -> bool:
    return len(items) > 0 and all(isinstance(x, np.ndarray) or hasattr(x, "__array__") and
                                  getattr(x, "ndim", 0) > 0 for x in items)


def _as_input(value, io: dict) -> np.ndarray:
    array = np.asarray(value)
    dtype = np.dtype(io["dtype"])
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise KgraftError(f"input {io['name']!r}: dtype {array.dtype} cannot be cast to {dtype}")
        array = array.astype(dtype)
    shape = io["shape"]
    if shape is not None:
        ok = array.ndim == len(shape) and all(d is None or d == a for d, a in zip(shape[1:], array.shape[1:]))
        if not ok:
            expected = "(" + ", ".join("batch" if i == 0 else ("?" if d is None else str(d))
                                       for i, d in enumerate(shape)) + ")"
            raise KgraftError(f"input {io['name']!r} has shape {tuple(array.shape)}, the model expects "
                              f"{expected}")
    return np.ascontiguousarray(array)


# ------------------------------------------------------------------------------ cache
_CACHE: dict[tuple, OnnxPipeline] = {}
_LOCK = threading.Lock()


def _key(manifest_or_dir, providers) -> tuple:
    directory, _ = read_manifest(manifest_or_dir)
    path = os.path.realpath(os.path.join(directory, MANIFEST))
    st = os.stat(path)
    return path, st.st_mtime_ns, st.st_size, st.st_ino, tuple(providers or ())


def load(manifest_or_dir, providers=None) -> OnnxPipeline:
    """The (cached) :class:`OnnxPipeline` for an export: sessions are created once per export."""
    if isinstance(manifest_or_dir, OnnxPipeline):
        return manifest_or_dir
    key = _key(manifest_or_dir, providers)
    with _LOCK:
        pipeline = _CACHE.get(key)
        if pipeline is None:
            for stale in [k for k in _CACHE if k[0] == key[0]]:
                del _CACHE[stale]
            pipeline = _CACHE[key] = OnnxPipeline(manifest_or_dir, providers=providers)
        return pipeline


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def run_onnx(manifest_or_dir, inputs, providers=None) -> list[np.ndarray]:
    """Run the exported partitions in order with ONNX Runtime; returns the model's outputs."""
    return load(manifest_or_dir, providers).run(inputs)
