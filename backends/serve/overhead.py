"""What the serving stack costs per request, measured, for the planner (:class:`~kgraft.analysis.placement.Overhead`).

The planner's link model (rtt + bytes / bandwidth) leaves out what the software adds: the client
encoding the request, HTTP, KServe decoding it and encoding the answer. :func:`measure_overhead`
starts ``kgraft serve`` on loopback with a *probe* export (one ``Identity``: no compute), sends
tensors of several sizes through :class:`~kgraft.SplitRunner` and an unlimited
:class:`~.link.EmulatedLink` (which counts the bytes on the wire), and fits

* ``request_s`` + ``per_byte_s`` * tensor bytes (both ways) to each request's time minus the
  server's reported compute time (medians per size, least squares on relative errors: with
  plain least squares the 4 MiB requests' noise moved the fixed cost 1.0-1.9 ms between runs);
* ``request_bytes``: the wire bytes per request beyond the tensors' own (HTTP and v2 headers).

Everything in the path is what a split deployment runs (tritonclient, KServe, uvicorn), plus the
loopback proxy, which a benchmark that emulates its link with it pays too; ``rtt_s`` runs the
probe through the proxy at that round trip (subtracted from each request), so that what a
delayed link adds beyond its delay is counted as well.
"""

from __future__ import annotations

import os
import statistics
import tempfile

import numpy as np

from ...analysis.placement import Overhead

__all__ = ["measure_overhead", "probe_export"]

SIZES = (1, 1 << 14, 1 << 16, 1 << 18, 1 << 19)  # float32 values each way: 4 B .. 2 MiB


def probe_export(directory) -> str:
    """An ONNX export of ``Identity`` on float32 ``[batch, n]`` (any n): a request with no compute."""
    import keras

    from ..onnx.export import export

    x = keras.Input((None,), name="tensor")
    export(keras.Model(x, keras.layers.Identity(name="same")(x), name="kgraft_probe"), directory, cache=False)
    return os.fspath(directory)


def measure_overhead(runs: int = 15, sizes=SIZES, protocol: str = "http", threads: int | None = 1,
                     rtt_s: float = 0.0) -> Overhead:
    """The fixed and per-byte cost of a request to ``kgraft serve`` on 127.0.0.1 (see the module doc)."""
    from .link import EmulatedLink
    from .local import ServedExport
    from .runner import SplitRunner

    with tempfile.TemporaryDirectory(prefix="kgraft-overhead-") as tmp:
        directory = probe_export(os.path.join(tmp, "probe"))
        with ServedExport(directory, threads=threads) as served, EmulatedLink(served.port, rtt_s=rtt_s) as link, \
                SplitRunner(directory, link.url, edge=0, protocol=protocol) as runner:
            points, extra = [], []
            for n in sizes:
                x = np.zeros((1, n), np.float32)
                runner(x)  # warm-up: connection, buffers of this size
                seconds = []
                for _ in range(runs):
                    before = link.bytes_up + link.bytes_down
                    runner(x)
                    timing = runner.last_timing
                    seconds.append(timing.transfer_s - rtt_s)
                    tensors = timing.bytes_sent + timing.bytes_received
                    extra.append(link.bytes_up + link.bytes_down - before - tensors)
                points.append((tensors, statistics.median(seconds)))
    nbytes, seconds = np.array(points, dtype=np.float64).T
    per_byte, fixed = np.polyfit(nbytes, seconds, 1, w=1 / np.maximum(seconds, 1e-6))
    return Overhead(request_s=max(float(fixed), 0.0), per_byte_s=max(float(per_byte), 0.0),
                    request_bytes=int(statistics.median(extra)))
