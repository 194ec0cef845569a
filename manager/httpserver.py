"""The manager's plain HTTP listeners (metrics, health probes) as start/stop runnables.

aiohttp's `web.run_app` owns the event loop and allows one app per process; the manager needs several
listeners with their own lifecycles, so each is an `AppRunner` + `TCPSite` started and stopped by the
manager in controller-runtime's order (HTTP servers first up, last down). Addresses use the Go flag format
(`:8080`, `127.0.0.1:8080`; `0` disables the listener). A port already in use is a `ConfigurationError`
with a one-line message, not a traceback.
"""

from __future__ import annotations

import errno
import logging
import ssl

from aiohttp import web

from manager.errors import ConfigurationError

log = logging.getLogger(__name__)


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
    ) -> None:
        self.name = name
        self.app = app
        self.host, self.port = address
        self.ssl_context = ssl_context
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

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

    async def start(self) -> None:
        """Bind and serve; raises `ConfigurationError` when the address cannot be bound."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True)
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
        """Stop accepting, finish in-flight requests (bounded), close."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
