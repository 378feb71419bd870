"""``kgraft serve``: the partitions of an export behind KServe's own v2 inference server.

Each served partition is one ONNX Runtime session, opened once. The models (named as
:mod:`.chain` says) are ``kserve.Model`` objects registered with a ``kserve.ModelServer``; its
REST application (KServe's v2 endpoints: ``/v2/health/live``, ``/v2/health/ready``, ``/v2``,
``/v2/models/<m>``, ``/v2/models/<m>/ready``, ``/v2/models/<m>/infer`` with Triton's binary
tensor extension, ``/v2/repository/index``) runs in uvicorn as KServe runs it, except that it
listens on ``host`` (KServe itself always listens on every interface). SIGINT and SIGTERM stop
it gracefully: uvicorn finishes the requests in flight, and :func:`serve` returns.

Each response carries the server's compute time (the partitions' run, not the decoding of the
request's tensors or the encoding of the answer's) as the parameter ``kgraft_server_ns``, which
:class:`~kgraft.backends.serve.SplitRunner` reports as ``server_s``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time

import numpy as np

from ...ir import KgraftError
from ..onnx.runtime import SessionChain, read_manifest, session_options
from .chain import chain_io, chain_name, part_name
from .runner import SERVER_NS

__all__ = ["serve", "served_models"]

FASTAPI_APP = "kserve.model_server:app"  # KServe's v2 REST application (RESTServer serves this one)


def served_models(manifest: dict, start: int) -> dict[str, list[int]]:
    """Model name -> the partitions it runs: each partition from ``start`` on, and their chain."""
    n = len(manifest["partitions"])
    models = {part_name(manifest, i): [i] for i in range(start, n)}
    models.setdefault(chain_name(manifest, start), list(range(start, n)))
    return models


def serve(manifest_or_dir, host: str = "127.0.0.1", port: int = 8000, from_partition: int = 0, *,
          providers=None, on_ready=None, verbose: bool = False, threads: int | None = None,
          grpc_port: int | None = None) -> None:
    """Serve partitions ``from_partition..n-1`` of an export until SIGINT/SIGTERM.

    ``on_ready(url, models)`` is called once the server accepts connections (``url``: the HTTP
    one). ``threads``: ONNX Runtime intra-op threads per session (None: its default, one per
    core). ``grpc_port``: also serve the v2 gRPC protocol there (KServe's servicer), on ``host``.
    """
    import onnxruntime as ort

    directory, manifest = read_manifest(manifest_or_dir)
    n = len(manifest["partitions"])
    if isinstance(from_partition, bool) or not isinstance(from_partition, int) or not 0 <= from_partition < n:
        raise KgraftError(f"serve: from_partition={from_partition!r} must be a partition index, 0..{n - 1} "
                          f"(this export has {n})")
    for p in (port, grpc_port):
        if p is not None:
            _check_port(host, p)
    sessions = {}
    for i in range(from_partition, n):
        path = os.path.join(directory, manifest["partitions"][i]["file"])
        try:
            sessions[i] = ort.InferenceSession(path, session_options(threads),
                                               providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:
            raise KgraftError(f"serve: ONNX Runtime cannot open {path!r}: {e}") from e
    kserve, rest_server = _import_kserve()
    chain_model = _chain_model_class(kserve)
    server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False,
                                grace_period=5)  # (this configures KServe's logging)
    _keep_binary_inputs(server.dataplane)
    if not verbose:
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    models = served_models(manifest, from_partition)
    for name, indices in models.items():
        part = manifest["partitions"][indices[0]]
        ins, outs = (part["inputs"], part["outputs"]) if len(indices) == 1 else chain_io(manifest, indices[0])
        server.register_model(chain_model(name, [sessions[i] for i in indices], ins, outs))
    rest = rest_server.RESTServer(FASTAPI_APP, server.dataplane, server.model_repository_extension, port,
                                  workers=1, grace_period=5)
    rest.create_application()
    rest.config.host = host
    grpc = None if grpc_port is None else (server, f"{host}:{grpc_port}")
    asyncio.run(_run(rest.config, f"http://{host}:{port}", list(models), on_ready, grpc))


def _grpc_server(model_server, address: str):
    """KServe's v2 gRPC servicer and interceptors, as its ``GRPCServer`` starts them, but bound to
    ``address`` (KServe binds every interface) and without gRPC's 4 MiB message limit."""
    from concurrent import futures

    from grpc import aio
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.servicer import InferenceServicer

    grpc_server = aio.server(futures.ThreadPoolExecutor(max_workers=1),
                             interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
                             options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(model_server.dataplane, model_server.model_repository_extension), grpc_server)
    if not grpc_server.add_insecure_port(address):
        raise KgraftError(f"serve: cannot listen for gRPC on {address}; choose another --grpc-port")
    return grpc_server


async def _run(config, url: str, models: list[str], on_ready, grpc=None) -> None:
    import uvicorn

    grpc_server = None if grpc is None else _grpc_server(*grpc)
    if grpc_server is not None:
        await grpc_server.start()
    uvicorn_server = uvicorn.Server(config)
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises the signal after its graceful
        signal.signal(sig, lambda *_: None)      # shutdown: let that end serve() instead of the process
    task = asyncio.ensure_future(uvicorn_server.serve())
    while not uvicorn_server.started:
        if task.done():
            try:
                task.result()
            except SystemExit:  # uvicorn exits when it cannot bind or start
                pass
            raise KgraftError(f"serve: the server could not start on {url} (see the log above)")
        await asyncio.sleep(0.02)
    if on_ready is not None:
        on_ready(url, models)
    try:
        await task
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=1)


def _check_port(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise KgraftError(f"serve: cannot listen on {host}:{port}: {e.strerror or e}; choose another --port "
                          "(or stop what uses this one)") from e


def _import_kserve():
    """``kserve`` and its REST server module. KServe parses ``sys.argv`` when imported, so it sees none."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        from kserve.protocol.rest import server as rest_server
    except ImportError as e:
        raise KgraftError("kgraft serve needs KServe: pip install 'kgraft[serve]'") from e
    finally:
        sys.argv = argv
    return kserve, rest_server


def _keep_binary_inputs(dataplane) -> None:
    """Binary tensors of a REST request stay bytes until the model reads them as an array.

    KServe (0.21) decodes each one into a Python list, value by value, which the model then turns
    back into an array: about 120 ns per byte, 250 ms for a 2 MiB tensor each way, more than a
    100 Mbit/s link takes to carry it. This decoder of ``dataplane`` (this server's only) reads the
    same v2 request (JSON header, then each input's ``binary_data_size`` bytes) and keeps the
    bytes; a request with JSON ``data``, or one it cannot read, goes to KServe's own decoder,
    which answers it or says what is wrong.
    """
    import orjson
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    kserve_decode = dataplane.decode_inference_request

    def decode(body, headers, model_name):
        length = headers.get("inference-header-content-length") if isinstance(body, bytes) else None
        try:
            header = orjson.loads(body[:int(length)])
            inputs, start = [], int(length)
            for io in header["inputs"]:
                size = int(io["parameters"]["binary_data_size"])
                tensor = InferInput(io["name"], io["shape"], io["datatype"], parameters=io["parameters"])
                tensor._raw_data = memoryview(body)[start:start + size]  # what KServe's as_numpy reads
                inputs.append(tensor)
                start += size
            if start != len(body):
                raise ValueError("the binary data does not add up")
            outputs = [RequestedOutput(o["name"], parameters=o.get("parameters")) for o in header.get("outputs") or []]
        except Exception:  # noqa: BLE001 (not a binary v2 request kgraft reads: KServe decides)
            return kserve_decode(body, headers, model_name)
        return InferRequest(model_name=model_name, request_id=header.get("id"), parameters=header.get("parameters"),
                            infer_inputs=inputs, request_outputs=outputs or None)

    dataplane.decode_inference_request = decode


def _v2_type(io: dict) -> dict:
    from kserve.utils.numpy_codec import from_np_dtype

    return {"name": io["name"], "datatype": from_np_dtype(np.dtype(io["dtype"])),
            "shape": [-1 if d is None else int(d) for d in io["shape"]]}


def _chain_model_class(kserve):
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferResponse

    class OnnxChain(kserve.Model):
        """Partitions run in order in ONNX Runtime (a :class:`SessionChain`, as ``OnnxPipeline`` runs them)."""

        def __init__(self, name: str, sessions: list, inputs: list[dict], outputs: list[dict]):
            super().__init__(name)
            self.chain = SessionChain(sessions)
            self.inputs, self.outputs = inputs, outputs
            self.ready = True

        def get_input_types(self) -> list[dict]:
            return [_v2_type(io) for io in self.inputs]

        def get_output_types(self) -> list[dict]:
            return [_v2_type(io) for io in self.outputs]

        def predict(self, payload, headers=None, response_headers=None):
            feeds = self._feeds(payload)
            started = time.perf_counter_ns()  # the compute only: decoding and encoding are the request's
            env = self.chain.run(feeds, [io["name"] for io in self.outputs])
            computed = time.perf_counter_ns() - started
            outputs = []
            for io in self.outputs:
                output = InferOutput(io["name"], list(env[io["name"]].shape), _v2_type(io)["datatype"])
                output.set_data_from_numpy(env[io["name"]])
                outputs.append(output)
            return InferResponse(payload.id, self.name, outputs,
                                 parameters={SERVER_NS: computed},
                                 use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)

        def _feeds(self, payload) -> dict[str, np.ndarray]:
            given = {t.name: t for t in payload.inputs}
            names = [io["name"] for io in self.inputs]
            if set(given) != set(names):
                raise InvalidInput(f"model {self.name!r} takes inputs {names}, the request has {sorted(given)}")
            env = {}
            for io in self.inputs:
                array = given[io["name"]].as_numpy()
                want = [None if d is None else int(d) for d in io["shape"]]
                fits = array.dtype == np.dtype(io["dtype"]) and array.ndim == len(want) and all(
                    w is None or w == a for w, a in zip(want, array.shape))
                if not fits:
                    raise InvalidInput(f"input {io['name']!r} of model {self.name!r} must be {_v2_type(io)['datatype']}"
                                       f"{_v2_type(io)['shape']} (-1: any size), got {array.dtype}{list(array.shape)}")
                env[io["name"]] = np.ascontiguousarray(array)
            return env

    return OnnxChain
