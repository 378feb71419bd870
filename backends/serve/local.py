"""``kgraft serve`` in a subprocess on a free port of 127.0.0.1, for measurements and benchmarks.

``with ServedExport(dir, from_partition=1) as served: SplitRunner(dir, served.url, edge=1)``:
the server runs in its own process (KServe and ``tritonclient.grpc`` cannot share one), is waited
for with a bounded timeout, and is stopped with SIGTERM (then killed) however the block ends.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile

from ...ir import KgraftError

__all__ = ["ServedExport", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedExport:
    """``kgraft serve DIRECTORY --from-partition K [--threads N] [--grpc-port P]``; ``.url``
    (HTTP), ``.grpc_url`` (with ``grpc=True``), ``close()``."""

    def __init__(self, directory, from_partition: int = 0, threads: int | None = None, timeout: float = 120.0,
                 grpc: bool = False):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        command = [sys.executable, "-c", "from kgraft.cli import main; main()", "serve", os.fspath(directory),
                   "--port", str(self.port), "--from-partition", str(from_partition)]
        if threads is not None:
            command += ["--threads", str(threads)]
        if grpc:
            command += ["--grpc-port", str(self.grpc_port)]
        self._log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks on it
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, text=True)
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            line = self.process.stdout.readline() if sel.select(timeout) else ""
        if not line.startswith("serving "):
            self._stop()
            self._log.seek(0)
            error = self._log.read().strip().splitlines()
            self.close()
            raise KgraftError(f"kgraft serve {os.fspath(directory)} did not start within {timeout:g} s"
                              + (f": {error[-1]}" if error else ""))

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str | None:
        return None if self.grpc_port is None else f"127.0.0.1:{self.grpc_port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop()
        self.process.stdout.close()
        self._log.close()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
