"""A loopback TCP forwarder that stands in for the webhook Service in local mode.

On a real cluster the API server calls the webhooks through a Service whose endpoints are the ready manager
pods, so a replica that dies simply drops out. Offline there is no Service network; the webhook
configurations use `clientConfig.url` instead, and this forwarder is the fixed address behind that URL:
each connection goes to the first backend port that accepts it. The bytes are passed through untouched, so
TLS (and the caBundle check) stays end to end between the API server and the manager.

It runs its own event loop in a daemon thread so it outlives the per-test loops of pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

CONNECT_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 120.0
CHUNK = 65536


class TcpForwarder:
    """Listen on 127.0.0.1 and forward each connection to the first reachable backend port."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._backends: list[int] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @property
    def backends(self) -> list[int]:
        with self._lock:
            return list(self._backends)

    def set_backends(self, ports: Sequence[int]) -> None:
        with self._lock:
            self._backends = list(ports)

    def start(self, timeout: float = 10.0) -> int:
        """Start listening; returns the port."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, 0, reuse_address=True)
                )
                self.port = int(self._server.sockets[0].getsockname()[1])
            except OSError as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="e2e-webhook-forwarder", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("the webhook forwarder did not start")
        if failure:
            raise RuntimeError(f"the webhook forwarder cannot listen: {failure[0]}")
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for port in self.backends:
            try:
                return await asyncio.wait_for(asyncio.open_connection(self.host, port), CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                continue
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        pipes = [asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))]
        try:
            # Either side closing (or a backend dying) ends the connection, as a Service would.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT_S)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (OSError, TimeoutError):
        return
