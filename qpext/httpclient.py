"""A small HTTP/1.1 client on asyncio alone, for qpext's scrapes of queue-proxy and the app on loopback.

Why not aiohttp: see qpext.httpserver. The body is handed to the caller chunk by chunk as it arrives
(Content-Length, chunked or read-to-close; gzip and deflate undone), so a large exposition is never held
whole. Connections are kept alive and reused; a reused connection that the server had closed meanwhile is
retried once on a new one, as browsers and Go's transport do. Timeouts are the caller's: every call runs
under the scrape's deadline.
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from collections.abc import Awaitable, Callable, Mapping

MAX_HEAD_BYTES = 64 * 1024
READ_SIZE = 256 * 1024
MAX_IDLE_CONNECTIONS = 4

Sink = Callable[[bytes], None]
# Called with the status and the headers (lower-case names) before the body; returns where the body
# goes, or raises FetchError to stop.
HeadHandler = Callable[[int, dict[str, str]], Sink]
# Awaited before each read of the body with the number of bytes received so far: a caller can hold the
# reading back (qpext lets only two large bodies in at once).
Gate = Callable[[int], Awaitable[None]]


async def _open(received: int) -> None:
    del received


class FetchError(Exception):
    """A failed request; ``reason`` is a short label value (``connection``, ``status``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Stale(Exception):
    """A kept-alive connection that the server had closed before our request."""


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


def _decoder(encoding: str, sink: Sink) -> Sink:
    if encoding in ("", "identity"):
        return sink
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise FetchError("invalid_response", f"unsupported Content-Encoding {encoding!r}")
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32)

    def decode(data: bytes) -> None:
        # Bounded pieces, so a small compressed chunk cannot expand all at once.
        while data:
            try:
                sink(decompressor.decompress(data, READ_SIZE))
            except zlib.error as err:
                raise FetchError("invalid_response", f"cannot decompress the body: {err}") from None
            data = decompressor.unconsumed_tail

    return decode


class Upstream:
    """Requests to one ``host:port``, over a few kept-alive connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._addresses: list[str] = []
        self._idle: list[_Connection] = []

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Connection:
        if not self._addresses:
            # Resolved once: "localhost" comes from /etc/hosts, and asyncio would start a thread for it.
            try:
                infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except OSError as err:
                raise FetchError("connection", f"cannot resolve {self.host}: {err}") from None
            self._addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        error: OSError | None = None
        for address in self._addresses:
            try:
                reader, writer = await asyncio.open_connection(address, self.port, limit=MAX_HEAD_BYTES)
            except OSError as err:
                error = err
                continue
            return _Connection(reader, writer)
        raise FetchError("connection", f"cannot connect to {self.host}:{self.port}: {error}")

    async def get(
        self, path: str, headers: Mapping[str, str], on_head: HeadHandler, max_bytes: int, gate: Gate = _open
    ) -> None:
        """GET ``path``, passing the body to the sink ``on_head`` returns; FetchError on failure."""
        request = "".join(
            [f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"]
            + [f"{name}: {value}\r\n" for name, value in headers.items()]
            + ["\r\n"]
        ).encode("latin-1")
        connection = self._idle.pop() if self._idle else None
        try:
            if connection is not None:
                try:
                    keep = await self._exchange(connection, request, on_head, max_bytes, gate, reused=True)
                except _Stale:
                    connection.close()
                    connection = None
            if connection is None:
                connection = await self._connect()
                keep = await self._exchange(connection, request, on_head, max_bytes, gate, reused=False)
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        if keep and len(self._idle) < MAX_IDLE_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.close()

    async def _exchange(
        self,
        connection: _Connection,
        request: bytes,
        on_head: HeadHandler,
        max_bytes: int,
        gate: Gate,
        *,
        reused: bool,
    ) -> bool:
        """One request and its response; whether the connection can be used again."""
        reader = connection.reader
        try:
            connection.writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if reused and not err.partial:
                raise _Stale from None
            raise FetchError("connection", "connection closed before a response") from None
        except asyncio.LimitOverrunError:
            raise FetchError("invalid_response", "response head too large") from None
        except OSError as err:
            if reused:
                raise _Stale from None
            raise FetchError("connection", str(err) or type(err).__name__) from None
        status, version, fields = _parse_head(head)
        sink = _limited(on_head(status, fields), max_bytes)
        body = _Body(reader, gate, _decoder(fields.get("content-encoding", "").lower(), sink))
        connection_header = fields.get("connection", "").lower()
        keep = "close" not in connection_header
        keep = keep and (version == "HTTP/1.1" or "keep-alive" in connection_header)
        try:
            if "chunked" in fields.get("transfer-encoding", "").lower():
                await body.chunked()
            elif "content-length" in fields:
                length = fields["content-length"]
                if not length.isdigit():
                    raise FetchError("invalid_response", f"invalid Content-Length {length[:32]!r}")
                if int(length) > max_bytes:
                    raise FetchError("body_too_large", f"body of {length} bytes exceeds {max_bytes}")
                await body.exactly(int(length))
            else:
                await body.until_closed()
                keep = False
        except asyncio.IncompleteReadError:
            raise FetchError("connection", "connection closed in the middle of the body") from None
        except (asyncio.LimitOverrunError, ValueError):
            raise FetchError("invalid_response", "malformed chunked body") from None
        except OSError as err:
            raise FetchError("connection", str(err) or type(err).__name__) from None
        return keep


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise FetchError("invalid_response", f"malformed status line {lines[0][:64]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            name, value = name.strip().lower(), value.strip()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return int(code), version, fields


def _limited(sink: Sink, max_bytes: int) -> Sink:
    size = 0

    def limited(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > max_bytes:
            raise FetchError("body_too_large", f"body exceeds {max_bytes} bytes")
        sink(data)

    return limited


class _Body:
    """Reads a response body into a sink, asking the gate before every read."""

    def __init__(self, reader: asyncio.StreamReader, gate: Gate, sink: Sink) -> None:
        self._reader = reader
        self._gate = gate
        self._sink = sink
        self._received = 0

    async def _read(self, limit: int) -> bytes:
        await self._gate(self._received)
        chunk = await self._reader.read(limit)
        self._received += len(chunk)
        return chunk

    async def exactly(self, length: int) -> None:
        while length:
            chunk = await self._read(min(length, READ_SIZE))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", length)
            length -= len(chunk)
            self._sink(chunk)

    async def until_closed(self) -> None:
        while chunk := await self._read(READ_SIZE):
            self._sink(chunk)

    async def chunked(self) -> None:
        reader = self._reader
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size < 0:
                raise ValueError("negative chunk size")
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await self.exactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
