"""The manager's HTTP listeners (metrics, health probes, webhooks) as start/stop runnables.

aiohttp's `web.run_app` owns the event loop and allows one app per process; the manager needs several
listeners with their own lifecycles, so each is an `AppRunner` started and stopped by the manager in
controller-runtime's order (HTTP servers first up, last down). Addresses use the Go flag format (`:8080`,
`127.0.0.1:8080`; `0` disables the listener). A port already in use is a `ConfigurationError` with a
one-line message, not a traceback.

Every listener keeps the connection discipline of controller-runtime's servers (Go's `net/http` with
`ReadHeaderTimeout` 32 s and `IdleTimeout` 90 s), because aiohttp alone keeps a connection that never sends
a request for an hour, and with TLS each one holds about 280 KiB (asyncio reads TLS into a 256 KiB buffer per
connection): a few hundred silent connections were enough to get the manager OOM-killed, and with
`failurePolicy: Fail` that blocks every pod create. So each connection sits behind a small protocol of ours
(`_Connection`) that:

- gives the TLS handshake, and then the first request's headers, `read_header_timeout` each (net/http uses
  the header timeout as its handshake timeout); after a response, waits `idle_timeout` for the next
  request's first byte and then `read_header_timeout` for its headers; a connection past its deadline is
  aborted at once (no TLS close_notify exchange that a silent peer could hold open);
- counts toward `max_connections`. Go has no such bound; we need one to bound memory. At the bound a new
  connection replaces the connection that has been idle the longest (the API server re-dials a closed
  keep-alive connection), and is refused only when every open connection is serving a request. What was
  closed or refused is logged as one WARNING line per 10 s;
- reads TLS records through a 16 KiB buffer (one TLS record is at most 16 KiB) instead of asyncio's 256 KiB.

After a burst of closed connections, freed heap memory is handed back to the OS (`malloc_trim`, glibc only):
otherwise the process keeps its peak size after the connections are gone.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import math
import ssl
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from manager.errors import ConfigurationError

log = logging.getLogger(__name__)

TLS_READ_BUFFER = 16 * 1024
"""Bytes a TLS connection reads from its socket at once (asyncio's default is 256 KiB per connection)."""

DROP_LOG_INTERVAL = 10.0
"""At most one WARNING line per this many seconds about closed or refused connections."""

TRIM_AFTER_CLOSES = 64
"""Hand freed memory back to the OS once this many connections closed since the last time."""

TRIM_DELAY = 1.0
"""Seconds between the trigger and the trim, so that a burst of closes is released once."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long a connection may stay silent, and how many may be open (controller-runtime's defaults)."""

    read_header_timeout: float = 32.0
    """TLS handshake, then the request line and headers, each within this many seconds."""
    idle_timeout: float = 90.0
    """After a response, the next request must start within this many seconds."""
    max_connections: int = 1000
    """Open connections (handshakes included) at most; ours, Go has no bound."""


def parse_address(address: str) -> tuple[str, int] | None:
    """`:8080` -> ('0.0.0.0', 8080); `host:port` -> (host, port); `0` or '' -> None (disabled)."""
    if address in ("", "0"):
        return None
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ConfigurationError(f"invalid address {address!r}: expected [host]:port")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ConfigurationError(f"invalid port in address {address!r}") from exc
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"invalid port in address {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def release_memory() -> None:
    """Return the heap's free pages to the OS (a no-op without glibc)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class HttpServer:
    """One aiohttp application bound to one address."""

    def __init__(
        self,
        name: str,
        app: web.Application,
        address: tuple[str, int],
        *,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 5.0,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.name = name
        self.app = app
        self.host, self.port = address
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self.limits = limits or ConnectionLimits()
        self._runner: web.AppRunner | None = None
        self._connections = _Connections(name, self.limits)
        app.middlewares.append(self._connections.track_requests)

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        if self._runner is not None:
            for site in self._runner.sites:
                server = getattr(site, "_server", None)
                sockets = getattr(server, "sockets", None) or []
                for sock in sockets:
                    return int(sock.getsockname()[1])
        return self.port

    @property
    def open_connections(self) -> int:
        """Connections open now, handshakes included."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and serve; raises `ConfigurationError` when the address cannot be bound."""
        # aiohttp's own keep-alive timer is a backstop behind ours (it would allow an hour by default).
        keepalive = self.limits.idle_timeout + self.limits.read_header_timeout
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=self.shutdown_timeout, keepalive_timeout=keepalive
        )
        await runner.setup()
        site = _Site(runner, self.host, self.port, self._connections, self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ConfigurationError(
                f"{self.name}: cannot listen on {self.host}:{self.port}: {reason}"
            ) from exc
        self._runner = runner
        log.info("%s server listening on %s:%d", self.name, self.host, self.bound_port)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (bounded), close every connection."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        self._connections.close_all()


class _Site(web.BaseSite):
    """A TCP listener whose connections go through `_Connection` (and `_TLSServerProtocol` with TLS)."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        connections: _Connections,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host, self._port, self._connections = host, port, connections

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._host, self._port, reuse_address=True)

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        connection = _Connection(self._connections, server(), tls=self._ssl_context is not None)
        if self._ssl_context is None:
            return connection
        return _TLSServerProtocol(connection, self._ssl_context, self._connections.limits.read_header_timeout)


class _TLSServerProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS with a small read buffer, reporting the raw connection to `_Connection`."""

    max_size: ClassVar[int] = TLS_READ_BUFFER

    def __init__(self, connection: _Connection, context: ssl.SSLContext, handshake_timeout: float) -> None:
        super().__init__(
            asyncio.get_running_loop(),
            connection,
            context,
            None,  # type: ignore[arg-type]  # no one waits for the handshake: `connection` is told
            server_side=True,
            # A backstop: `_Connection` enforces the handshake deadline itself, to the sub-second.
            ssl_handshake_timeout=math.ceil(handshake_timeout),
        )
        self._connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._connection.opened(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._connection.closed()
        super().connection_lost(exc)


class _Connection(asyncio.Protocol):
    """Between the transport and aiohttp's `RequestHandler`: deadlines, request accounting, dropping."""

    def __init__(self, connections: _Connections, handler: RequestHandler, *, tls: bool) -> None:
        self._connections = connections
        self.handler = handler
        self._tls = tls
        self._raw: asyncio.Transport | None = None
        self._handler_started = False
        self._open = False
        self._in_flight = 0
        self._awaiting_request = False
        self._timer: asyncio.TimerHandle | None = None

    # --- the raw connection (called by the listener's protocol) ---------------------------------------

    def opened(self, raw: asyncio.BaseTransport) -> None:
        """A TCP connection was accepted: count it (or refuse it) and start the first deadline."""
        self._raw = cast(asyncio.Transport, raw)
        if not self._connections.admit(self):
            self._raw.abort()
            return
        self._open = True
        self._arm(self._connections.limits.read_header_timeout)

    def closed(self) -> None:
        """The TCP connection is gone (idempotent)."""
        self._cancel_timer()
        if self._open:
            self._open = False
            self._connections.release(self)

    def drop(self) -> None:
        """Abort the connection now."""
        self._cancel_timer()
        if self._raw is not None:
            self._raw.abort()

    @property
    def busy(self) -> bool:
        """True while a request is being handled."""
        return self._in_flight > 0

    # --- requests (called by the middleware) -----------------------------------------------------------

    def request_started(self) -> None:
        self._in_flight += 1
        self._awaiting_request = False
        self._cancel_timer()
        self._connections.mark_busy(self)

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._open:
            self._awaiting_request = True
            self._arm(self._connections.limits.idle_timeout)
            self._connections.mark_idle(self)

    # --- asyncio.Protocol, delegated to aiohttp ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._tls:
            self.opened(transport)
            if not self._open:
                return
        else:
            # The handshake is done; the request's headers get their own deadline, as in net/http.
            self._arm(self._connections.limits.read_header_timeout)
        self._handler_started = True
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_request:
            self._awaiting_request = False
            self._arm(self._connections.limits.read_header_timeout)
        self.handler.data_received(data)

    def eof_received(self) -> None:
        self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._tls:
            self.closed()
        if self._handler_started:
            self._handler_started = False
            self.handler.connection_lost(exc)

    # --- deadlines -------------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._connections.loop.call_later(seconds, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._open and not self.busy:
            log.debug("%s server: closing a silent connection from %s", self._connections.name, self._peer())
            self.drop()

    def _peer(self) -> str:
        peer = self._raw.get_extra_info("peername") if self._raw is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown"


class _Connections:
    """The open connections of one listener: the bound, idle order, dropped-connection log, memory trim."""

    def __init__(self, name: str, limits: ConnectionLimits) -> None:
        self.name = name
        self.limits = limits
        self._all: set[_Connection] = set()
        self._by_handler: dict[RequestHandler, _Connection] = {}
        self._idle: OrderedDict[_Connection, None] = OrderedDict()
        self._evicted = 0
        self._refused = 0
        self._last_report = -DROP_LOG_INTERVAL
        self._report_handle: asyncio.TimerHandle | None = None
        self._closed_since_trim = 0
        self._trim_handle: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._all)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (every caller runs on it: protocol callbacks, the middleware, `stop`)."""
        return asyncio.get_running_loop()

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection, making room by closing the longest-idle one; False when all are busy."""
        if len(self._all) >= self.limits.max_connections:
            if not self._idle:
                self._refused += 1
                self._report()
                return False
            oldest = next(iter(self._idle))
            self.release(oldest)
            oldest.drop()
            self._evicted += 1
            self._report()
        self._all.add(connection)
        self._by_handler[connection.handler] = connection
        self._idle[connection] = None
        return True

    def release(self, connection: _Connection) -> None:
        """Forget a connection that closed (or is being closed)."""
        if connection not in self._all:
            return
        self._all.discard(connection)
        self._by_handler.pop(connection.handler, None)
        self._idle.pop(connection, None)
        self._closed_since_trim += 1
        if self._closed_since_trim >= TRIM_AFTER_CLOSES and self._trim_handle is None:
            self._trim_handle = self.loop.call_later(TRIM_DELAY, self._trim)

    def mark_busy(self, connection: _Connection) -> None:
        self._idle.pop(connection, None)

    def mark_idle(self, connection: _Connection) -> None:
        if connection in self._all:
            self._idle[connection] = None
            self._idle.move_to_end(connection)

    @web.middleware
    async def track_requests(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the request's connection busy while the application handles it."""
        connection = self._by_handler.get(request.protocol)
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_finished()

    def close_all(self) -> None:
        """Abort every connection still open and flush the log (on stop)."""
        for connection in list(self._all):
            self.release(connection)
            connection.drop()
        if self._report_handle is not None:
            self._report_handle.cancel()
            self._report_handle = None
            self._flush_report()
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None

    def _report(self) -> None:
        if self._report_handle is not None:
            return
        due = self._last_report + DROP_LOG_INTERVAL
        if self.loop.time() >= due:
            self._flush_report()
        else:
            self._report_handle = self.loop.call_at(due, self._flush_report)

    def _flush_report(self) -> None:
        self._report_handle = None
        self._last_report = self.loop.time()
        if not (self._evicted or self._refused):
            return
        log.warning(
            "%s server: at its limit of %d open connections: closed %d idle connection(s) to admit new "
            "ones and refused %d new connection(s) while all were busy",
            self.name,
            self.limits.max_connections,
            self._evicted,
            self._refused,
        )
        self._evicted = self._refused = 0

    def _trim(self) -> None:
        self._trim_handle = None
        self._closed_since_trim = 0
        release_memory()
