"""An emulated network link on loopback: a rate-limited, delayed TCP proxy, counting bytes.

``EmulatedLink(port, bandwidth_bps, rtt_s)`` listens on a free port of 127.0.0.1 and forwards
every connection to ``127.0.0.1:port``, each direction at ``bandwidth_bps`` (a chunk leaves when
the emulated wire has carried it: ``8 * bytes / bandwidth_bps`` after the wire was last free)
and ``rtt_s / 2`` later (the one-way delay), as ``tc netem rate ... delay ...`` would, without
root or a network namespace. It counts what crosses each way (``bytes_up``: towards the server),
headers included, which is how :mod:`.overhead` measures a protocol's own bytes per request.
A benchmark puts it between a :class:`~kgraft.SplitRunner` and ``kgraft serve``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

__all__ = ["EmulatedLink"]

CHUNK = 16384
COARSE_S = 0.002
"""An event loop's sleep wakes up to a millisecond late (epoll counts whole milliseconds): the
last ``COARSE_S`` before a chunk's release are waited out yielding to the loop, so the link adds
its bandwidth and delay and not 1 ms more per direction (2 ms a request, measured)."""


async def _until(release: float) -> None:
    if release - time.perf_counter() > COARSE_S:
        await asyncio.sleep(release - time.perf_counter() - COARSE_S)
    while time.perf_counter() < release:
        await asyncio.sleep(0)


class EmulatedLink:
    """``127.0.0.1:self.port -> 127.0.0.1:target_port``, served by an event loop in a thread."""

    def __init__(self, target_port: int, bandwidth_bps: float = math.inf, rtt_s: float = 0.0):
        self.target, self.rate, self.delay = target_port, bandwidth_bps / 8, rtt_s / 2
        self.bytes_up = self.bytes_down = 0
        self._writers: list = []
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="kgraft-link")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def _client(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            self._writers += [writer, up_writer]
            await asyncio.gather(self._pipe(reader, up_writer, "bytes_up"),
                                 self._pipe(up_reader, writer, "bytes_down"), return_exceptions=True)
        except asyncio.CancelledError:
            return  # closed with the connection open: ends quietly (asyncio 3.11 prints a
            # cancelled connection handler's CancelledError as an unhandled exception)

    async def _pipe(self, reader, writer, counter: str):
        """Chunks leave when the emulated wire has carried them, plus the one-way delay; reading
        and writing are separate tasks, so the delay is paid once, not once per chunk."""
        queue: asyncio.Queue = asyncio.Queue()

        async def send():
            while (item := await queue.get()) is not None:
                release, data = item
                await _until(release)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        free = 0.0  # when the wire is free again
        while data := await reader.read(CHUNK):
            setattr(self, counter, getattr(self, counter) + len(data))
            free = max(free, time.perf_counter()) + len(data) / self.rate
            queue.put_nowait((free + self.delay, data))
        queue.put_nowait(None)
        await sender

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
