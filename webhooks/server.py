"""The admission webhook HTTPS server: TLS with certificate hot-reload, a hardened AdmissionReview endpoint.

With `failurePolicy: Fail` every pod and InferenceService create in the cluster waits on this server
(kserve/kserve#985, #3102), so it must answer every call, quickly, with something the API server can act on:

- Bodies over 7 MiB get 413, a Content-Type other than `application/json` gets 415 (controller-runtime's
  limits); other methods get 405 and unregistered paths 404.
- A body that is not an AdmissionReview we could answer (not JSON, not an object, wrong `kind` or
  `apiVersion`, no `request` or no `request.uid`) gets HTTP 400 with a one-line text reason: without a uid
  and a version there is no AdmissionReview the caller could match to its request. Once the uid and version
  are known, every answer is an AdmissionReview in that version: a request whose other fields are malformed
  is `errored(400, reason)`.
- A handler that raises is logged with its traceback and answered `errored(500, ...)`; one that runs past
  its deadline is cancelled and answered `errored(504, ...)` naming the path and the deadline. The deadline
  is the configured timeout, shortened to stay inside the `?timeout=` the API server sends, so the user sees
  our message rather than "context deadline exceeded". Cancellation needs the handler to await; CPU-bound
  code cannot be interrupted. The body must arrive within the same deadline (408 otherwise).
- A body that did not arrive, or is not an AdmissionReview we could answer, is one WARNING line. JSON nested
  deeper than `admission.MAX_NESTING` is refused before any handler sees it (400), and a handler that still
  hits Python's recursion limit is answered `errored(400, ...)` with one line instead of a traceback of a
  thousand frames.
- Connections follow controller-runtime's webhook server (TLS handshake and request headers within 32 s,
  keep-alive connections idle at most 90 s) and their number is bounded: see `manager/httpserver.py`.

Certificates come from a directory (cert-manager's Secret mount, or `webhooks/certs.py`). A background task
polls the files' identity (inode, size, mtime) every `reload_interval` seconds; on a change it loads the pair
into a new `SSLContext`, and an SNI callback (OpenSSL calls it on every handshake, with or without SNI) hands
new connections the newest context. A pair that fails to load (for example key and certificate from two
different generations mid-update) keeps the previous context and is retried on the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from pathlib import Path

from aiohttp import web
from cryptography import x509

from manager.errors import ConfigurationError
from manager.httpserver import ConnectionLimits, HttpServer
from webhooks.admission import (
    AdmissionHandler,
    AdmissionRequest,
    AdmissionResponse,
    AdmissionVersion,
    InvalidReview,
    decode_review,
    encode_review,
    errored,
    reads_raw_object,
)
from webhooks.certs import CERT_FILE, DEFAULT_CERT_DIR, KEY_FILE, utcnow

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 7 * 1024 * 1024
DEFAULT_PORT = 9443
DEFAULT_HANDLER_TIMEOUT = 9.0
DEFAULT_RELOAD_INTERVAL = 3.0
DEADLINE_MARGIN = 0.5
MIN_DEADLINE = 0.1
MAX_ERROR_MESSAGE = 1000

FileIdentity = tuple[tuple[int, int, int, int], ...]

_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go duration (`10s`, `1m30s`, `500ms`); None when it is not one."""
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


class WebhookServer:
    """Serves registered admission handlers over TLS 1.2+ on `host:port` (a manager Runnable)."""

    def __init__(
        self,
        *,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        cert_dir: str | Path = DEFAULT_CERT_DIR,
        cert_name: str = CERT_FILE,
        key_name: str = KEY_FILE,
        handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        shutdown_timeout: float = 5.0,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.cert_path = Path(cert_dir) / cert_name
        self.key_path = Path(cert_dir) / key_name
        self.handler_timeout = handler_timeout
        self.max_body_bytes = max_body_bytes
        self.reload_interval = reload_interval
        self.shutdown_timeout = shutdown_timeout
        self.limits = limits or ConnectionLimits()
        self._handlers: dict[str, AdmissionHandler] = {}
        self._context: ssl.SSLContext | None = None
        self._certificate: x509.Certificate | None = None
        self._identity: FileIdentity | None = None
        self._http: HttpServer | None = None
        self._reloader: asyncio.Task[None] | None = None

    def register(self, path: str, handler: AdmissionHandler) -> None:
        """Serve `handler` at `path` (may be called before or after `start`)."""
        if not path.startswith("/"):
            raise ValueError(f"webhook path must start with '/': {path!r}")
        if path in self._handlers:
            raise ValueError(f"a webhook is already registered at {path}")
        self._handlers[path] = handler

    @property
    def paths(self) -> list[str]:
        """The registered paths."""
        return sorted(self._handlers)

    @property
    def bound_port(self) -> int:
        """The port listened on (the real one when `port` was 0)."""
        return self._http.bound_port if self._http is not None else self.port

    @property
    def open_connections(self) -> int:
        """Connections open now (TLS handshakes included)."""
        return self._http.open_connections if self._http is not None else 0

    @property
    def certificate(self) -> x509.Certificate | None:
        """The certificate new connections are served with."""
        return self._certificate

    async def start(self) -> None:
        """Load the certificate, listen, and start watching the certificate files."""
        if self._http is not None:
            return
        try:
            context, certificate, identity = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"webhook server: cannot load {self.cert_path} and {self.key_path}: {_one_line(exc)}"
            ) from exc
        self._context, self._certificate, self._identity = context, certificate, identity
        # New connections start on this context; the SNI callback moves them to the newest one.
        context.sni_callback = self._select_context
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{path:.*}", self._serve)
        http = HttpServer(
            "webhook",
            app,
            (self.host, self.port),
            ssl_context=context,
            shutdown_timeout=self.shutdown_timeout,
            limits=self.limits,
        )
        await http.start()
        self._http = http
        self._reloader = asyncio.create_task(self._watch_certificates(), name="webhook-cert-reloader")

    async def stop(self) -> None:
        """Stop watching and stop serving (in-flight requests get `shutdown_timeout` to finish)."""
        if self._reloader is not None:
            task, self._reloader = self._reloader, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()

    async def check(self) -> None:
        """Readiness: raises unless the server listens with a loaded, unexpired certificate."""
        if self._http is None:
            raise RuntimeError("webhook server is not listening")
        if self._certificate is None:
            raise RuntimeError("webhook server has no certificate")
        if self._certificate.not_valid_after_utc <= utcnow():
            raise RuntimeError(f"webhook certificate {self.cert_path} has expired")

    def reload_if_changed(self) -> bool:
        """Reload the certificate when its files changed; True when new connections now get a new one."""
        try:
            identity = self._file_identity()
        except OSError as exc:
            log.warning("webhook certificate files unreadable, keeping the current one: %s", _one_line(exc))
            return False
        if identity == self._identity:
            return False
        try:
            context, certificate, identity = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("webhook certificate not reloaded yet, keeping the current one: %s", _one_line(exc))
            return False
        self._context, self._certificate, self._identity = context, certificate, identity
        log.info("reloaded the webhook certificate (serial %x)", certificate.serial_number)
        return True

    def _file_identity(self) -> FileIdentity:
        stats = (os.stat(self.cert_path), os.stat(self.key_path))
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_dev) for s in stats)

    def _load(self) -> tuple[ssl.SSLContext, x509.Certificate, FileIdentity]:
        before = self._file_identity()
        context = _server_context(str(self.cert_path), str(self.key_path))
        certificate = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        if self._file_identity() != before:
            raise ValueError("certificate files changed while loading")
        return context, certificate, before

    def _select_context(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._context is not None:
            connection.context = self._context

    async def _watch_certificates(self) -> None:
        while True:
            await asyncio.sleep(self.reload_interval)
            self.reload_if_changed()

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        handler = self._handlers.get(request.path)
        if handler is None:
            return _plain(404, f"no webhook is registered at {request.path}")
        if request.method != "POST":
            return _plain(405, f"{request.method} is not allowed; the API server POSTs AdmissionReviews")
        if request.content_type != "application/json":
            shown = request.headers.get("Content-Type") or "none"
            return _plain(415, f"Content-Type must be application/json, got {shown[:100]}")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return _too_large(f"request body of {request.content_length} bytes exceeds {self.max_body_bytes}")
        deadline = self._deadline(request)
        try:
            async with asyncio.timeout(deadline):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(f"request body exceeds {self.max_body_bytes} bytes")
        except TimeoutError:
            log.warning(
                "webhook %s: refused a request from %s: body not received", request.path, _peer(request)
            )
            timed_out = _plain(408, f"request body not received within {deadline:g}s")
            timed_out.force_close()
            return timed_out
        if not body:
            return _plain(400, "request body is empty; expected an AdmissionReview")
        try:
            incoming = decode_review(body, snapshot=reads_raw_object(handler))
        except InvalidReview as exc:
            log.warning(
                "webhook %s: refused a request from %s (uid %s): %s",
                request.path,
                _peer(request),
                exc.uid or "unknown",
                exc.message[:MAX_ERROR_MESSAGE],
            )
            if exc.api_version is not None and exc.uid is not None:
                return _review(exc.api_version, errored(400, exc.message).complete(exc.uid))
            return _plain(400, exc.message)
        response = await self._call(handler, incoming.request, request.path, deadline)
        return _review(incoming.api_version, response.complete(incoming.request.uid))

    def _deadline(self, request: web.Request) -> float:
        asked = parse_go_duration(request.query.get("timeout", ""))
        if asked is None:
            return self.handler_timeout
        return max(MIN_DEADLINE, min(self.handler_timeout, asked - DEADLINE_MARGIN))

    async def _call(
        self, handler: AdmissionHandler, request: AdmissionRequest, path: str, deadline: float
    ) -> AdmissionResponse:
        what = f"{request.operation} {request.kind.kind} {_object_key(request)}"
        try:
            async with asyncio.timeout(deadline):  # no task per request, unlike `wait_for`
                response = await handler.handle(request)
        except TimeoutError:
            log.error("webhook %s timed out after %.1fs on %s (uid %s)", path, deadline, what, request.uid)
            return errored(504, f"webhook {path} did not answer within {deadline:g}s")
        except RecursionError:
            log.warning("webhook %s: %s is nested too deeply to process (uid %s)", path, what, request.uid)
            return errored(400, f"the {request.kind.kind or 'object'} is nested too deeply to process")
        except Exception as exc:
            log.exception("webhook %s failed on %s (uid %s)", path, what, request.uid)
            return errored(500, f"webhook {path} failed: {_one_line(exc)}"[:MAX_ERROR_MESSAGE])
        if not isinstance(response, AdmissionResponse):
            log.error("webhook %s returned %s instead of an AdmissionResponse", path, type(response).__name__)
            return errored(500, f"webhook {path} failed: handler returned no AdmissionResponse")
        status = response.status
        if status is not None and status.message and not status.message.isprintable():
            # Messages quote user input (names, annotation values): keep them one line for kubectl.
            printable = status.model_copy(update={"message": _printable(status.message)})
            return response.model_copy(update={"status": printable})
        return response


def _server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context


def _plain(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def _too_large(message: str) -> web.Response:
    # The rest of the body is not read: close the connection rather than drain megabytes.
    response = _plain(413, message)
    response.force_close()
    return response


def _review(api_version: AdmissionVersion, response: AdmissionResponse) -> web.Response:
    return web.Response(
        body=json.dumps(encode_review(api_version, response), separators=(",", ":")).encode("utf-8"),
        content_type="application/json",
    )


def _peer(request: web.Request) -> str:
    return request.remote or "unknown"


def _object_key(request: AdmissionRequest) -> str:
    name = request.name or "(unnamed)"
    return f"{request.namespace}/{name}" if request.namespace else name


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
