#!/usr/bin/env python
"""Split inference, served and measured: a Neurosurgeon-style table over an emulated link.

For each model and bandwidth, the planner (``kgraft.plan``'s ``plan_split`` with one ONNX Runtime
layer profile per model) picks a placement; this benchmark then *runs* it end to end and times
``kgraft.SplitRunner`` calls (median of ``--runs``, batch 1), next to all-on-edge, all-on-server
and the same choice with int8 cut tensors (``export_onnx(compress="int8")``, planned with
``compress="int8"``).

How the devices and the link are emulated (everything on this machine, loopback only):

* **edge**: this machine's ONNX Runtime, slowed by ``--edge-slowdown``: ``SplitRunner`` times the
  edge partitions (``t``) and then waits ``(slowdown - 1) * t`` (``edge_slowdown=``);
* **server**: ``kgraft serve`` (KServe's v2 server, ONNX Runtime) in a subprocess on 127.0.0.1;
* **link**: a TCP proxy on 127.0.0.1 between the runner and the server that forwards each
  direction at ``bandwidth`` (a byte is released ``8 / bandwidth`` s after the previous one) and
  ``rtt / 2`` later (one-way delay), as ``tc netem rate ... delay ...`` would.

The planner's prediction uses the same device model (layer times x slowdowns, rtt + bytes /
bandwidth); predicted/measured shows what it leaves out (HTTP, serialisation, Python).

    python benchmarks/bench_split_inference.py                       # MobileNetV2, ResNet50, BERT tiny
    python benchmarks/bench_split_inference.py --models MobileNetV2 --bandwidth 1Mbps 20Mbps --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the link
class Link:
    """A rate-limited, delayed TCP proxy ``127.0.0.1:port -> target`` in a background thread."""

    def __init__(self, target_port: int, bandwidth_bps: float, rtt_s: float):
        self.target, self.rate, self.delay = target_port, bandwidth_bps / 8, rtt_s / 2
        self.writers: list = []
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _client(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader, writer):
        """Chunks leave when the emulated wire has carried them, plus the one-way delay; reading
        and writing are separate tasks, so the delay is paid once, not once per chunk."""
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            while (item := await queue.get()) is not None:
                release, data = item
                await asyncio.sleep(release - time.perf_counter())
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        free = 0.0  # when the wire is free again
        while data := await reader.read(16384):
            free = max(free, time.perf_counter()) + len(data) / self.rate
            queue.put_nowait((free + self.delay, data))
        queue.put_nowait(None)
        await sender

    async def _shutdown(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# ------------------------------------------------------------------------------ the server
class Server:
    """``kgraft serve DIR --from-partition K`` on a free port of 127.0.0.1; ``close()`` stops it."""

    def __init__(self, directory: str, from_partition: int):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from kgraft.cli import main; main()", "serve", directory, "--port",
             str(self.port), "--from-partition", str(from_partition)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()  # "serving ... at URL", or EOF if it failed
        if not line.startswith("serving"):
            self.close()
            raise RuntimeError(f"kgraft serve did not start for {directory}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.stdout.close()


# ------------------------------------------------------------------------------ models
def build(name: str):
    import keras

    if name == "BertTiny":
        import keras_hub

        return keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=64,
                                             intermediate_dim=128, max_sequence_length=64, name="bert_tiny")
    return getattr(keras.applications, name)(weights=None, input_shape=(160, 160, 3))


def sample(model, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for t in model.inputs:
        shape = (1, *t.shape[1:])
        if "int" in str(t.dtype):
            out[t.name] = (rng.integers(1, 999, shape) if "mask" not in t.name else np.ones(shape)).astype(str(t.dtype))
        else:
            out[t.name] = rng.standard_normal(shape).astype(str(t.dtype))
    return out if len(out) > 1 else next(iter(out.values()))


def timed(runner, x, runs: int) -> float:
    runner(x)  # warm-up: sessions, connection
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(kgraft, directory: str, edge: int, x, args, link_args) -> float:
    """Median end-to-end seconds with partitions 0..edge-1 here and the rest behind the link."""
    n = len(kgraft.backends.onnx.read_manifest(directory)[1]["partitions"])
    if edge >= n:
        return timed(kgraft.SplitRunner(directory, edge_slowdown=args.edge_slowdown), x, args.runs)
    server = Server(directory, edge)
    link = Link(server.port, *link_args)
    try:
        with kgraft.SplitRunner(directory, f"127.0.0.1:{link.port}", edge=edge,
                                edge_slowdown=args.edge_slowdown) as runner:
            return timed(runner, x, args.runs)
    finally:
        link.close()
        server.close()


def export(kgraft, model, root: str, row, compress=None, calibration=None) -> tuple[str, int]:
    """The export for ``row``'s placement and how many partitions the edge runs."""
    at = None if row.label in ("all on edge", "all on server") else [list(row.cut)]
    name = f"{row.label.replace(' ', '_').replace('/', '_').replace(',', '')[:60]}_{compress}"
    directory = os.path.join(root, name)
    if not os.path.exists(directory):
        kgraft.export_onnx(model, directory, at=at, compress=compress if at else None,
                           calibration=calibration if at and compress == "int8" else None)
    return directory, {"all on edge": 1, "all on server": 0}.get(row.label, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV2", "ResNet50", "BertTiny"])
    parser.add_argument("--bandwidth", nargs="+", default=["1Mbps", "5Mbps", "20Mbps", "100Mbps"])
    parser.add_argument("--edge-slowdown", type=float, default=8.0)
    parser.add_argument("--rtt", type=float, default=0.01, help="round-trip time in seconds")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)

    import kgraft
    from kgraft.backends.onnx.profile import layer_profile
    from kgraft.passes.plan import parse_bandwidth, plan_split

    lines = ["| model | Mbps | choice | edge only ms | server only ms | choice ms | int8 ms | speedup | "
             "pred/meas | int8 bytes cut |", "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="kgraft-bench-split-") as root:
        for name in args.models:
            model = build(name)
            x = sample(model, 0)
            calibration = sample(model, 1) if not isinstance(x, dict) else x
            graph = kgraft.lower(model)
            log(f"{name}: profiling layers")
            profile = layer_profile(model)
            for text in args.bandwidth:
                bw = parse_bandwidth(text)
                rows = plan_split(graph, bw, args.edge_slowdown, 1.0, args.rtt, profile=profile)
                by_label = {r.label: r for r in rows}
                int8_rows = plan_split(graph, bw, args.edge_slowdown, 1.0, args.rtt, profile=profile, compress="int8")
                choice, int8_choice = rows[0], int8_rows[0]
                link = (bw, args.rtt)
                measured = {}
                for key, row, compress in (("edge", by_label["all on edge"], None),
                                           ("server", by_label["all on server"], None),
                                           ("choice", choice, None), ("int8", int8_choice, "int8")):
                    directory, edge = export(kgraft, model, root, row, compress, calibration)
                    measured[key] = measure(kgraft, directory, edge, x, args, link)
                    log(f"  {text} {key}: {row.label[:40]} {measured[key] * 1e3:.1f} ms (predicted {row.total_s * 1e3:.1f})")
                best_single = min(measured["edge"], measured["server"])
                plain = by_label.get(int8_choice.label)  # the same placement, float32 cut tensors
                shrink = plain.bytes_per_sample / int8_choice.bytes_per_sample if plain and int8_choice.bytes_per_sample \
                    else float("nan")
                lines.append(
                    f"| {name} | {bw / 1e6:g} | {choice.label[:40]} | {measured['edge'] * 1e3:.1f} | "
                    f"{measured['server'] * 1e3:.1f} | {measured['choice'] * 1e3:.1f} | {measured['int8'] * 1e3:.1f} | "
                    f"{best_single / measured['choice']:.2f}x | {choice.total_s / measured['choice']:.2f} | "
                    f"{shrink:.2f}x |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
