"""A small HTTP/1.1 server on asyncio alone, for qpext's one endpoint.

qpext is a sidecar in every model pod. aiohttp, which served it before, costs about 17 MiB of RSS just to
import and most of the per-request CPU at small bodies, where Go's qpext needs 14 MiB in all. Prometheus
needs little of HTTP, so this module implements that part: keep-alive, pipelined requests answered in
order, HEAD, a bound on idle connections and on slow request heads (so idle or stalled clients cannot pile
up), a cap on connections, cancellation of the handler when the client hangs up (its upstream requests stop
with it), flow control for large answers, and a shutdown that finishes the answers in flight while closing
idle connections at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
MAX_REQUEST_BODY_BYTES = 64 * 1024
# A request head must arrive within this time of its first byte; an idle keep-alive connection is closed
# after IDLE_TIMEOUT (longer than any sensible scrape interval, so Prometheus keeps its connection).
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0
MAX_CONNECTIONS = 256
# Answers are written in pieces of about this size, waiting whenever the client is slower than qpext.
WRITE_PIECE = 256 * 1024
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass
class Request:
    method: str
    path: str
    # Lower-case names; a repeated header's values joined with ", ".
    headers: dict[str, str]


@dataclass
class Response:
    status: int = 200
    body: list[bytes] = field(default_factory=list)
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    # Called once the body has been handed to the connection, or the connection is gone.
    on_sent: Callable[[], None] | None = None


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, bool, int]:
    """The request, whether the connection may be kept, and the length of its body; HttpError if bad."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head is not ASCII") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported version {version[:16]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    if "transfer-encoding" in headers:
        raise HttpError(501, "request bodies with a transfer encoding are not accepted")
    length = headers.get("content-length", "0").strip()
    if not length.isdigit():
        raise HttpError(400, "invalid Content-Length")
    if int(length) > MAX_REQUEST_BODY_BYTES:
        raise HttpError(413, "request body too large")
    return Request(method, target.split("?", 1)[0], headers), keep, int(length)


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._skip = 0
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connections.add(self)
        if len(self._server.connections) > MAX_CONNECTIONS:
            log.warning("more than %d connections: refusing one", MAX_CONNECTIONS)
            self._send_error(HttpError(503, "too many connections"))
            return
        self._arm(IDLE_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._transport = None
        self._disarm()
        if self._task is not None:
            self._task.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("client went away"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None:
            self._next()
        elif len(self._buffer) > MAX_HEAD_BYTES and self._transport is not None:
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        # As in Go's server, a client that closes its side has gone: the handler is cancelled.
        return False

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- requests

    @property
    def idle(self) -> bool:
        return self._task is None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self._loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._task is None:
            self.close()

    def _next(self) -> None:
        if self._transport is None:
            return
        if self._skip:
            dropped = min(self._skip, len(self._buffer))
            del self._buffer[:dropped]
            self._skip -= dropped
            if self._skip:
                return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._send_error(HttpError(431, "request head too large"))
            elif self._buffer.strip(b"\r\n") and not self._head_started:
                self._head_started = True
                self._arm(HEAD_TIMEOUT)
            return
        head = bytes(self._buffer[:end]).lstrip(b"\r\n")
        del self._buffer[: end + 4]
        self._head_started = False
        self._disarm()
        try:
            request, keep, length = parse_head(head)
        except HttpError as err:
            self._send_error(err)
            return
        self._skip = length
        self._task = self._loop.create_task(self._respond(request, keep))

    def _send_error(self, err: HttpError) -> None:
        if self._transport is None:
            return
        body = f"{err}\n".encode()
        self._transport.write(self._head(err.status, "text/plain; charset=utf-8", len(body), (), True) + body)
        self._transport.close()

    def _head(
        self, status: int, content_type: str, length: int, extra: tuple[tuple[str, str], ...], close: bool
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            *(f"{name}: {value}" for name, value in extra),
        ]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _respond(self, request: Request, keep: bool) -> None:
        try:
            response = await self._server.dispatch(request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error answering %s %s", request.method, request.path)
            response = Response(500, [b"internal error\n"])
        try:
            written = await self._write_response(request, response, keep)
        finally:
            if response.on_sent is not None:
                response.on_sent()
        if not written:
            return
        self._task = None
        if self._transport is None:
            return
        if not keep or self._server.closing:
            self.close()
            return
        self._transport.resume_reading()
        if self._buffer or self._skip:
            self._next()
        else:
            self._arm(IDLE_TIMEOUT)

    async def _write_response(self, request: Request, response: Response, keep: bool) -> bool:
        """Whether the answer was written (False when the client went away)."""
        transport = self._transport
        if transport is None:
            return False
        close = not keep or self._server.closing
        length = sum(map(len, response.body))
        head = self._head(response.status, response.content_type, length, response.headers, close)
        body = response.body if request.method != "HEAD" else []
        if length <= WRITE_PIECE or not body:
            transport.write(b"".join([head, *body]))
        else:
            transport.write(head)
            try:
                await self._write(body)
            except ConnectionResetError:
                return False
        return True

    async def _write(self, parts: list[bytes]) -> None:
        piece: list[bytes] = []
        size = 0
        for part in parts:
            piece.append(part)
            size += len(part)
            if size >= WRITE_PIECE:
                await self._send(piece)
                piece, size = [], 0
        if piece:
            await self._send(piece)

    async def _send(self, piece: list[bytes]) -> None:
        if self._transport is None:
            raise ConnectionResetError("client went away")
        self._transport.write(piece[0] if len(piece) == 1 else b"".join(piece))
        if self._writable is not None and not self._writable.done():
            await self._writable


class HttpServer:
    """Serves ``routes`` (path -> handler for GET and HEAD) until ``shutdown``."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        self._routes = routes
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._all_closed = asyncio.Event()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=256
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def dispatch(self, request: Request) -> Response:
        handler = self._routes.get(request.path)
        if handler is None:
            return Response(404, [b"404 page not found\n"])
        if request.method not in ("GET", "HEAD"):
            return Response(405, [b"method not allowed\n"], headers=(("Allow", "GET, HEAD"),))
        return await handler(request)

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._all_closed.set()

    async def shutdown(self, grace: float) -> None:
        """Stop listening, close idle connections now, and give answers in flight ``grace`` seconds."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()
        if self.connections:
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                log.warning("%d connections open after %.1fs: closing them", len(self.connections), grace)
        for connection in list(self.connections):
            connection.abort()
        # Let the transports run their close callbacks before the loop goes away.
        await asyncio.sleep(0)
