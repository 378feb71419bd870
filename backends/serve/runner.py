"""``SplitRunner``: the edge side of split inference.

``runner(x)`` runs partitions ``0..edge-1`` here with ONNX Runtime (sessions opened once) and
sends what crosses to a server speaking the KServe v2 inference protocol (Triton, KServe,
MLServer, ``kgraft serve``) with ``tritonclient`` (HTTP with binary tensor data, or gRPC; one
client, its connection kept), which runs the rest: one request to the chain model
``<model>_from<edge>`` when the server has it (a Triton ensemble, or what ``kgraft serve``
exposes), else one request per partition ``<model>_part<i>`` (see :mod:`.chain`).

The server is asked once, on the first call, whether it is up, which of those models it has and
what they take (model metadata); each mismatch is a :class:`~kgraft.KgraftError` that says what
the export expects and what the server has. ``runner.last_timing`` is a :class:`Timing`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from ...ir import KgraftError
from ..onnx.runtime import OnnxPipeline, compute_clock, read_manifest, session_options
from .chain import chain_io, chain_name, part_name

__all__ = ["SplitRunner", "Timing", "SERVER_NS"]

PROTOCOLS = ("http", "grpc")
SERVER_NS = "kgraft_server_ns"
"""Response parameter in which ``kgraft serve`` reports its compute time, in integer nanoseconds
(the v2 gRPC protocol's parameters have no floats; Triton reports nothing)."""


@dataclass(frozen=True)
class Timing:
    """One call, in seconds and bytes of tensor data (HTTP/gRPC headers not counted).

    ``transfer_s`` is the requests' wall time minus ``server_s``, the time the server says it
    computed (``None`` when it does not say, as Triton; ``transfer_s`` then includes it).
    ``edge_compute_s`` is the edge partitions' compute on this machine: this run's, or with an
    emulated slower edge the steady time it takes ``edge_slowdown`` times (``edge_s``).
    """

    edge_s: float
    transfer_s: float
    server_s: float | None
    bytes_sent: int
    bytes_received: int
    requests: int
    total_s: float
    edge_compute_s: float = 0.0


class SplitRunner:
    """Run the first ``edge`` partitions here and the rest on a KServe v2 server at ``url``.

    ``url`` is ``host:port`` (``http://`` allowed) of the server's HTTP or gRPC endpoint, as
    ``protocol`` says; ``url=None`` runs every partition here. ``threads``: ONNX Runtime intra-op
    threads of the edge partitions (None: its default). ``edge_slowdown`` emulates a slower edge
    device (benchmarks use it; 1 = this machine): the edge partitions take ``edge_slowdown * t``
    seconds, the runner waiting out the rest, where ``t`` is their ONNX Runtime time on this
    machine at its steady speed: in CPU time with ``threads=1`` (then the host's other load does
    not slow the emulated device), else in wall time; the least time of runs made back to back
    for :data:`CALIBRATION_S` on the first call with each input shape, once per export and
    number of edge partitions in a process (that call takes that much longer; later runners of
    the same export emulate the same device), which is what
    :func:`~kgraft.backends.onnx.profile.layer_profile` measures too. An emulated device runs at
    one speed; one run on a shared host does not: MobileNetV2 160x160
    took 2.1 ms back to back, 2.6 ms after a 20 ms pause, 2.9-3.5 ms after 0.2-2.5 s idle, and
    a tiny BERT 0.72 ms running continuously but 0.82-1.08 ms as the least of 20 runs made right
    after a pause (the host's clock still low), which the slowdown multiplied into noise.
    """

    def __init__(self, manifest_or_dir, url: str | None = None, edge: int = 1, protocol: str = "http", *,
                 timeout: float = 60.0, providers=None, edge_slowdown: float = 1.0, threads: int | None = None):
        self.dir, self.manifest = read_manifest(manifest_or_dir)
        n = len(self.manifest["partitions"])
        if isinstance(edge, bool) or not isinstance(edge, int) or not 0 <= edge <= n:
            raise KgraftError(f"SplitRunner: edge={edge!r} must be the number of partitions to run here, "
                              f"0..{n} (this export has {n})")
        if protocol not in PROTOCOLS:
            raise KgraftError(f"SplitRunner: unknown protocol {protocol!r}; use 'http' or 'grpc'")
        if not edge_slowdown >= 1:
            raise KgraftError(f"SplitRunner: edge_slowdown must be >= 1 (1 = this machine), got {edge_slowdown!r}")
        self.url = None if url is None else _host_port(url)
        self.edge = n if url is None else edge
        self.protocol, self.timeout, self.edge_slowdown = protocol, float(timeout), float(edge_slowdown)
        self.local = OnnxPipeline(self.dir, providers=providers, session_options=session_options(threads),
                                  upto=self.edge)
        self._clock = compute_clock(threads)
        self.threads = threads
        self.output_names = [io["name"] for io in self.manifest["outputs"]]
        self.last_timing: Timing | None = None
        self._client = None
        self._steps = None

    def __repr__(self) -> str:
        where = "here" if self.url is None else f"{self.protocol}://{self.url}"
        return (f"<SplitRunner {self.manifest.get('model')!r}: partitions 0..{self.edge - 1} here, "
                f"the rest {where}>")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client, self._steps = None, None

    def __call__(self, inputs) -> list[np.ndarray]:
        return self.run(inputs)

    def run(self, inputs) -> list[np.ndarray]:
        """The model's outputs (in order) for ``inputs`` (an array, a list, or a dict by name)."""
        feeds = self.local.normalize(inputs)
        emulated = self.edge_slowdown > 1 and self.edge > 0
        reference = self._steady_compute_s(feeds) if emulated else None
        started = time.perf_counter()
        env, compute = self._run_edge(feeds)
        if emulated:
            compute = reference
            _wait_until(started + reference * self.edge_slowdown)
        edge_s = time.perf_counter() - started
        request_s, server_s, sent, received = 0.0, 0.0, 0, 0
        steps = self._connect() if self.edge < len(self.manifest["partitions"]) else []
        for model, ins, outs in steps:
            arrays = [env[io["name"]] for io in ins]
            t = time.perf_counter()
            results, reported = self._infer(model, ins, arrays, outs)
            request_s += time.perf_counter() - t
            server_s = None if reported is None or server_s is None else server_s + reported
            sent += sum(a.nbytes for a in arrays)
            received += sum(r.nbytes for r in results)
            env.update(zip((io["name"] for io in outs), results))
        self.last_timing = Timing(edge_s, request_s - (server_s or 0.0), server_s, sent, received,
                                  len(steps), time.perf_counter() - started, compute)
        return [env[name] for name in self.output_names]

    def _steady_compute_s(self, feeds: dict) -> float:
        """The edge partitions' least compute time for inputs of these shapes, from runs made
        back to back for :data:`CALIBRATION_S` the first time in this process (see the class doc)."""
        key = (os.path.realpath(self.dir), self.edge, self.threads,
               tuple((name, a.shape, a.dtype.str) for name, a in feeds.items()))
        with _STEADY_LOCK:
            if key not in _STEADY:
                times, until = [], time.perf_counter() + CALIBRATION_S
                while len(times) < 3 or time.perf_counter() < until:
                    times.append(self._run_edge(feeds)[1])
                _STEADY[key] = min(times)
            return _STEADY[key]

    def _run_edge(self, feeds: dict) -> tuple[dict, float]:
        """Every tensor the edge partitions compute (and the inputs), and their compute time by
        :attr:`_clock`."""
        start = self._clock()
        env = self.local.chain.run(feeds)
        return env, self._clock() - start

    # -------------------------------------------------------------------------- the server
    def _module(self):
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except ImportError as e:
            raise KgraftError(f"SplitRunner needs tritonclient[{self.protocol}] to reach a server: "
                              "pip install 'kgraft[serve]'") from e
        return module

    def _connect(self) -> list[tuple[str, list[dict], list[dict]]]:
        """``[(model, inputs, outputs), ...]`` to send, checked against the server once."""
        if self._steps is not None:
            return self._steps
        module = self._module()
        if self.protocol == "grpc":
            client = module.InferenceServerClient(self.url)
        else:
            client = module.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                  network_timeout=self.timeout)
        try:
            live = client.is_server_live()
        except Exception as e:  # refused, reset, timed out: whatever the transport says
            client.close()
            raise KgraftError(f"SplitRunner: no KServe v2 server answers at {self.protocol}://{self.url} "
                              f"({_reason(e)}); start one with 'kgraft serve {self.dir} --from-partition {self.edge}' "
                              "or give the url of your Triton/KServe server") from e
        if not live:
            client.close()
            raise KgraftError(f"SplitRunner: the server at {self.url} says it is not live")
        n = len(self.manifest["partitions"])
        chain = chain_name(self.manifest, self.edge)
        if _ready(client, chain):
            steps = [(chain, *chain_io(self.manifest, self.edge))]
        else:
            names = [part_name(self.manifest, i) for i in range(self.edge, n)]
            missing = [name for name in names if not _ready(client, name)]
            if missing:
                client.close()
                wanted = f"{chain!r} (partitions {self.edge}..{n - 1} of this export in one model)"
                if missing != [chain]:
                    wanted += f" nor {', '.join(map(repr, missing))} (one per partition)"
                raise KgraftError(f"SplitRunner: the server at {self.url} has no model {wanted}; {_index(client)}. "
                                  f"Serve this export with 'kgraft serve {self.dir} --from-partition {self.edge}', "
                                  "or load the Triton repository that kgraft.export_triton writes")
            steps = [(name, *_step_io(self.manifest, i)) for name, i in zip(names, range(self.edge, n))]
        for model, ins, outs in steps:
            _check_metadata(client, self.url, model, ins, outs, self.protocol)
        self._client, self._steps = client, steps
        return steps

    def _infer(self, model: str, ins: list[dict], arrays: list[np.ndarray], outs: list[dict]):
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        module, http = self._module(), self.protocol == "http"
        inputs = []
        for io, array in zip(ins, arrays):
            tensor = module.InferInput(io["name"], list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, **({"binary_data": True} if http else {}))
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(io["name"], **({"binary_data": True} if http else {})) for io in outs]
        try:
            result = self._client.infer(model, inputs, outputs=outputs,
                                        **({} if http else {"client_timeout": self.timeout}))
        except InferenceServerException as e:
            raise KgraftError(f"SplitRunner: {self.url} refused the request to {model!r}: {e.message()} "
                              f"(sent {_describe(ins, arrays)})") from e
        except Exception as e:
            raise KgraftError(f"SplitRunner: lost the server at {self.url} during a request to {model!r} "
                              f"({_reason(e)})") from e
        results = [result.as_numpy(io["name"]) for io in outs]
        for io, array in zip(outs, results):
            if array is None:
                raise KgraftError(f"SplitRunner: {model!r} on {self.url} returned no tensor {io['name']!r}")
        return results, _server_seconds(result, http)


CALIBRATION_S = 1.0
"""Seconds of back-to-back runs that measure an emulated edge's steady speed (see SplitRunner)."""

_STEADY: dict[tuple, float] = {}  # (export, edge partitions, threads, input shapes) -> seconds
_STEADY_LOCK = threading.Lock()

SPIN_S = 0.005
"""The last seconds of an emulated wait are spun, not slept: on a busy host a sleeping thread
wakes up to a scheduler tick late (3.5 ms measured on a shared 2-core machine)."""


def _wait_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > SPIN_S:
        time.sleep(remaining - SPIN_S)
    while time.perf_counter() < deadline:
        pass


def _step_io(manifest: dict, index: int) -> tuple[list[dict], list[dict]]:
    part = manifest["partitions"][index]
    have = {io["name"] for io in part["inputs"]}
    return part["inputs"], [io for io in part["outputs"] if io["name"] not in have]


def _host_port(url: str) -> str:
    for scheme in ("http://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    if url.startswith("https://"):
        raise KgraftError("SplitRunner: https is not supported yet; put the server behind a local TLS proxy")
    return url.rstrip("/")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _ready(client, model: str) -> bool:
    try:
        return bool(client.is_model_ready(model))
    except Exception:  # gRPC answers a missing model with an error status
        return False


def _index(client) -> str:
    try:
        index = client.get_model_repository_index()
    except Exception:
        return "it does not list its models (no repository extension)"
    if not isinstance(index, list):  # gRPC: a protobuf message
        index = [{"name": m.name} for m in index.models]
    names = sorted({m["name"] for m in index})
    return f"it has {', '.join(map(repr, names))}" if names else "it has no models"


def _shape(io: dict) -> list[int]:
    return [-1 if d is None else int(d) for d in io["shape"]]


def _check_metadata(client, url: str, model: str, ins: list[dict], outs: list[dict], protocol: str) -> None:
    """The server's model takes and returns what the export says, by name, datatype and shape."""
    from tritonclient.utils import np_to_triton_dtype

    try:
        meta = client.get_model_metadata(model, **({"as_json": True} if protocol == "grpc" else {}))
    except Exception as e:
        raise KgraftError(f"SplitRunner: {url} has model {model!r} but gives no metadata for it ({_reason(e)})") from e
    for kind, expected in (("inputs", ins), ("outputs", outs)):
        served = {t["name"]: t for t in meta.get(kind, [])}
        for io in expected:
            want = (np_to_triton_dtype(np.dtype(io["dtype"])), _shape(io))
            got = served.get(io["name"])
            if got is None:
                raise KgraftError(f"SplitRunner: model {model!r} on {url} has no {kind[:-1]} {io['name']!r} "
                                  f"(it has {sorted(served)}); is it this export's model?")
            shape = [int(d) for d in got.get("shape", [])]
            fits = got.get("datatype") == want[0] and len(shape) == len(want[1]) and all(
                a == b or -1 in (a, b) for a, b in zip(shape, want[1]))
            if not fits:
                raise KgraftError(f"SplitRunner: {kind[:-1]} {io['name']!r} of model {model!r} on {url} is "
                                  f"{got.get('datatype')}{shape}; this export has {want[0]}{want[1]} (was the "
                                  "server given another export?)")


def _describe(ins: list[dict], arrays: list[np.ndarray]) -> str:
    return ", ".join(f"{io['name']} {a.dtype}{list(a.shape)}" for io, a in zip(ins, arrays))


def _server_seconds(result, http: bool) -> float | None:
    if http:
        value = (result.get_response().get("parameters") or {}).get(SERVER_NS)
        return None if value is None else int(value) * 1e-9
    params = result.get_response().parameters
    return params[SERVER_NS].int64_param * 1e-9 if SERVER_NS in params else None
