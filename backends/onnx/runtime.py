"""Run exported partitions as a chain of ONNX Runtime sessions.

:class:`SessionChain` runs sessions in order, each fed by name from the tensors computed so far
(model inputs, then every partition's outputs), so pass-through tensors need no special
handling; :class:`OnnxPipeline` is the chain of one export's partitions (sessions opened once,
any batch size), and ``kgraft serve`` runs its chains with the same class. :func:`load` caches
pipelines per directory (invalidated when ``manifest.json`` changes); :func:`run_onnx` is
``load(...).run(inputs)``.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from ...ir import KgraftError
from .export import FORMAT, MANIFEST

__all__ = ["OnnxPipeline", "SessionChain", "load", "run_onnx", "read_manifest", "clear_cache", "session_options",
           "compute_clock"]


def session_options(threads: int | None = None):
    """ONNX Runtime session options with ``threads`` intra-op threads (None: ONNX Runtime's default,
    one per core), which do not spin once a run ends. ``threads=1`` runs every kernel on the
    calling thread, so :func:`compute_clock` can time it in CPU time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # a session's idle intra-op threads would spin after each run, taking the cores from the next
    # partition's session (a chain runs several one after the other; a small host has 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise KgraftError(f"threads={threads!r} must be a positive number of ONNX Runtime threads (or None)")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


_default_options = session_options  # (OnnxPipeline's argument session_options= hides the name there)


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


class SessionChain:
    """ONNX Runtime sessions run in order, each fed by name from the tensors computed so far.

    Runs go through IOBinding, prepared once per set of input shapes: every session output is
    written into memory bound to it once (kept warm from run to run, not allocated again), and
    the next session reads it there, so nothing crossing a cut is allocated, copied or turned into
    numpy. A chain of 4 ResNet50 partitions cost 1.065x the unsplit model without this, 1.02-1.03x
    with it (benchmarks/bench_onnx.py). When an output's shape follows the values (the bound
    memory no longer fits it), that run is repeated unbound, and so is every later one. One run
    at a time (a lock): the bound memory is shared.
    """

    def __init__(self, sessions: list):
        self.sessions = list(sessions)
        self.feeds = [[i.name for i in s.get_inputs()] for s in self.sessions]
        self.fetches = [[o.name for o in s.get_outputs()] for s in self.sessions]
        self._bound = None  # (input shapes, [(binding, names of the inputs given to the chain)], outputs)
        self._bindable = True  # False once an output's shape changed with the values
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray], fetch: list[str] | None = None) -> dict[str, np.ndarray]:
        """``fetch`` (None: every tensor given or computed) by name, as numpy arrays of their own."""
        key = tuple((name, a.shape, a.dtype.str) for name, a in feeds.items())
        with self._lock:
            computed = None
            if self._bound is not None and self._bound[0] == key:
                computed = self._run_bound(feeds)
            if computed is None:
                computed = self._bind(feeds, key)
            names = fetch if fetch is not None else list(dict.fromkeys([*feeds, *computed]))
            return {n: feeds[n] if n in feeds else np.array(computed[n].numpy()) for n in names}

    def _run_bound(self, feeds: dict):
        _, steps, outputs = self._bound
        try:
            for session, (binding, given) in zip(self.sessions, steps):
                for name in given:
                    binding.bind_cpu_input(name, feeds[name])
                session.run_with_iobinding(binding)
        except Exception:  # noqa: BLE001 (an output shape changed with the values: run unbound)
            self._bound, self._bindable = None, False
            return None
        return outputs

    def _bind(self, feeds: dict, key: tuple) -> dict:
        """One run without bindings, whose outputs become the memory bound for the next runs."""
        import onnxruntime as ort

        env = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in feeds.items()}
        steps, outputs = [], {}
        for session, names, fetches in zip(self.sessions, self.feeds, self.fetches):
            results = session.run_with_ort_values(fetches, {n: env[n] for n in names})
            binding = session.io_binding()
            for name in names:
                if name in outputs:
                    binding.bind_ortvalue_input(name, outputs[name])
            steps.append((binding, [n for n in names if n not in outputs]))
            for name, value in zip(fetches, results):
                if name not in names:  # (one passed through under its name is the input itself)
                    binding.bind_ortvalue_output(name, value)
                    outputs[name] = env[name] = value
        self._bound = (key, steps, outputs) if self._bindable else None
        return outputs


class OnnxPipeline:
    """The partitions of one export as a :class:`SessionChain`, fed the model's inputs.

    ``upto=k`` opens only partitions ``0..k-1`` (an edge device that runs the first ones).
    ``session_options`` default to :func:`session_options` ``()``.
    """

    def __init__(self, manifest_or_dir, providers=None, session_options=None, upto: int | None = None):
        import onnxruntime as ort

        self.dir, self.manifest = read_manifest(manifest_or_dir)
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.inputs = self.manifest["inputs"]
        self.outputs = self.manifest["outputs"]
        self.input_names = [io["name"] for io in self.inputs]
        self.output_names = [io["name"] for io in self.outputs]
        options = session_options if session_options is not None else _default_options()
        sessions = []
        for part in self.manifest["partitions"][:upto]:
            path = os.path.join(self.dir, part["file"])
            try:
                session = ort.InferenceSession(path, sess_options=options, providers=self.providers)
            except Exception as e:
                raise KgraftError(f"ONNX Runtime cannot open {path!r}: {e}") from e
            sessions.append(session)
        self.chain = SessionChain(sessions)
        self.sessions = self.chain.sessions

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
        """The model's outputs (in order) for ``inputs``."""
        values = self.chain.run(self.normalize(inputs), self.output_names)
        return [values[n] for n in self.output_names]

    def run_all(self, inputs) -> dict[str, np.ndarray]:
        """Every tensor of the chain by name: model inputs, what crosses each cut, model outputs."""
        return self.chain.run(self.normalize(inputs))

    __call__ = run

    def run_partition(self, index: int, feeds: dict) -> dict[str, np.ndarray]:
        """One partition on its own: ``{input name: array}`` -> ``{output name: array}``."""
        session = self.sessions[index]
        results = session.run(self.chain.fetches[index], {n: np.asarray(feeds[n]) for n in self.chain.feeds[index]})
        return dict(zip(self.chain.fetches[index], results))


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
