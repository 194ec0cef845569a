#!/usr/bin/env python3
"""A stand-in for Knative Serving v1.10.2's queue-proxy (`/ko-app/queue`), for offline clusters.

THIS IS NOT KNATIVE'S QUEUE-PROXY. Knative's binary is a Go program built from knative/serving with ko and
pulled from gcr.io; neither exists offline, so the Knative Serving double's pods run this single stdlib-only
file instead (packed into an image as `/ko-app/queue`, the path KServe's qpext starts). It reads the same
environment the double's (and Knative's) `makeQueueContainer` sets and behaves the same on the wire where
tests and KServe look, following knative/serving tag knative-v1.10.2 (commit 500756c):

* `pkg/queue/sharedmain`: the environment (`QUEUE_SERVING_PORT`, `USER_PORT`, `CONTAINER_CONCURRENCY`,
  `REVISION_TIMEOUT_SECONDS`, `REVISION_RESPONSE_START_TIMEOUT_SECONDS`, `REVISION_IDLE_TIMEOUT_SECONDS`,
  `SERVING_READINESS_PROBE`, `SERVING_NAMESPACE`/`SERVICE`/`CONFIGURATION`/`REVISION`/`POD`/`POD_IP`,
  `SERVING_REQUEST_METRICS_BACKEND`; a missing required variable is `required key <NAME> missing value` and
  exit code 1); HTTP on the queue port proxied to `127.0.0.1:$USER_PORT`, bodies streamed both ways; the
  revision timeout (504 `request timeout` before the response starts); 502 when the user container cannot
  be reached; the admin port 8022 with `/wait-for-drain`.
* knative.dev/pkg `network/handlers/drain.go` and `pkg/queue/health`: kubelet probes (User-Agent
  `kube-probe/...` or header `K-Kubelet-Probe`) must carry `K-Network-Probe: queue` (else 400
  `unexpected probe header value: ...`) and answer 200 `queue` only when the user container passes the
  readiness probe of `SERVING_READINESS_PROBE` (TCP or HTTP against 127.0.0.1, retried every 50 ms for up
  to 10 s when its periodSeconds is 0, once with its timeout otherwise; exec is unsupported, as in Knative),
  else 503; `K-Network-Probe: probe` needs `K-Network-Hash` and echoes it; while draining both get 503
  `shutting down`.
* `pkg/queue/breaker.go`: with `CONTAINER_CONCURRENCY` > 0 at most that many requests reach the user
  container and ten times as many wait; more get 503 `pending request queue full`.
* `pkg/queue/request_metric.go`: on port 9091 (when the backend is `prometheus`) the OpenCensus Prometheus
  exposition of `revision_request_count`, `revision_request_latencies` (ms histogram, Knative's buckets),
  `revision_app_request_count`, `revision_app_request_latencies` and, with a concurrency limit,
  `revision_queue_depth`, labelled `configuration_name`, `container_name="queue-proxy"`, `namespace_name`,
  `pod_name`, `response_code`, `response_code_class`, `revision_name`, `service_name` (`unknown` when
  empty) and, on the first two, `route_tag`; probes are not counted.
* `pkg/queue/protobuf_stats_reporter.go`: port 9090 `/metrics` serves the autoscaler's protobuf `Stat`
  (pod name, average and proxied concurrency, requests per second, uptime), refreshed every second. v1.10
  serves no Prometheus text there (removed in knative/serving#12961).

What it does not do: TLS (`QUEUE_SERVING_TLS_PORT` is not served; Knative serves it only with internal
encryption certificates), HTTP/2 and h2c, tracing, request logs, profiling, the Go runtime metrics Knative
also exports on 9091, the `Forwarded` header shim, and Knative's 30 s quiet period when draining: on
SIGTERM it fails probes, waits until no request has arrived for one second and in-flight requests are done
(at most the revision timeout), then exits 0, so pods terminate promptly in tests. Only the main thread
takes SIGTERM (the others block it) and it waits in bounded steps: in one e2e run a SIGTERM that never
reached the handler kept a deleted pod for its whole grace period, the revision timeout of 300 s.

Test hooks that Knative's binary does not read: QUEUE_PROXY_STANDIN_ADMIN_PORT,
QUEUE_PROXY_STANDIN_METRICS_PORT and QUEUE_PROXY_STANDIN_USER_METRICS_PORT move the fixed ports 8022, 9090
and 9091, so tests on a shared host can run several instances.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ADMIN_PORT = 8022
AUTOSCALING_METRICS_PORT = 9090
USER_METRICS_PORT = 9091
DRAIN_PATH = "/wait-for-drain"
QUEUE_NAME = "queue"
PROBE_HEADER = "K-Network-Probe"
HASH_HEADER = "K-Network-Hash"
KUBELET_PROBE_HEADER = "K-Kubelet-Probe"
PROXY_HEADER = "K-Proxy-Request"
ORIGINAL_HOST_HEADER = "K-Original-Host"
ROUTE_TAG_HEADER = "Knative-Serving-Tag"
DEFAULT_ROUTE_HEADER = "Knative-Serving-Default-Route"
PRUNED_HEADERS = ("knative-serving-revision", "knative-serving-namespace")
HEALTH_CHECK_AGENTS = ("kube-probe/", "Knative-Activator-Probe", "Knative-Autoscaling-Probe")
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Proxy-Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
LATENCY_BUCKETS_MS = (
    5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600,
    700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000,
)  # fmt: skip
AGGRESSIVE_PROBE_TIMEOUT = 0.1
AGGRESSIVE_PROBE_INTERVAL = 0.05
AGGRESSIVE_PROBE_WINDOW = 10.0
REPORTING_PERIOD = 1.0
DRAIN_QUIET_SECONDS = 1.0
DRAIN_RESET_SECONDS = 1.0
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
STOP_POLL_SECONDS = 0.5
CHUNK = 64 * 1024
REQUIRED = (
    "CONTAINER_CONCURRENCY",
    "QUEUE_SERVING_PORT",
    "QUEUE_SERVING_TLS_PORT",
    "USER_PORT",
    "REVISION_TIMEOUT_SECONDS",
    "SERVING_LOGGING_CONFIG",
    "SERVING_LOGGING_LEVEL",
    "SERVING_NAMESPACE",
    "SERVING_CONFIGURATION",
    "SERVING_REVISION",
    "SERVING_POD",
    "SERVING_POD_IP",
)


class ConfigError(Exception):
    """The environment cannot start a queue-proxy."""


def log(message: str) -> None:
    sys.stderr.write(f"queue-proxy: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Settings:
    """The environment, as Knative's queue-proxy reads it."""

    serving_port: int
    user_port: int
    container_concurrency: int
    revision_timeout: float
    response_start_timeout: float
    idle_timeout: float
    readiness_probe: dict[str, Any] | None
    namespace: str
    service: str
    configuration: str
    revision: str
    pod: str
    metrics_backend: str
    admin_port: int = ADMIN_PORT
    metrics_port: int = AUTOSCALING_METRICS_PORT
    user_metrics_port: int = USER_METRICS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        for key in REQUIRED:
            if key not in env:
                raise ConfigError(f"required key {key} missing value")

        def integer(key: str, default: int | None = None) -> int:
            raw = env.get(key, "")
            if raw == "" and default is not None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{key}: {raw!r} is not an integer") from None

        probe: dict[str, Any] | None = None
        if env.get("SERVING_READINESS_PROBE"):
            try:
                probe = json.loads(env["SERVING_READINESS_PROBE"])
            except ValueError as exc:
                raise ConfigError(f"SERVING_READINESS_PROBE: {exc}") from None
            if not isinstance(probe, dict):
                raise ConfigError("SERVING_READINESS_PROBE: not a JSON object")
        return cls(
            serving_port=integer("QUEUE_SERVING_PORT"),
            user_port=integer("USER_PORT"),
            container_concurrency=integer("CONTAINER_CONCURRENCY"),
            revision_timeout=float(integer("REVISION_TIMEOUT_SECONDS")),
            response_start_timeout=float(integer("REVISION_RESPONSE_START_TIMEOUT_SECONDS", 0)),
            idle_timeout=float(integer("REVISION_IDLE_TIMEOUT_SECONDS", 0)),
            readiness_probe=probe,
            namespace=env["SERVING_NAMESPACE"],
            service=env.get("SERVING_SERVICE", ""),
            configuration=env["SERVING_CONFIGURATION"],
            revision=env["SERVING_REVISION"],
            pod=env["SERVING_POD"],
            metrics_backend=env.get("SERVING_REQUEST_METRICS_BACKEND", ""),
            admin_port=integer("QUEUE_PROXY_STANDIN_ADMIN_PORT", ADMIN_PORT),
            metrics_port=integer("QUEUE_PROXY_STANDIN_METRICS_PORT", AUTOSCALING_METRICS_PORT),
            user_metrics_port=integer("QUEUE_PROXY_STANDIN_USER_METRICS_PORT", USER_METRICS_PORT),
        )


# Readiness of the user container


class Prober:
    """The user container's readiness probe; concurrent callers share one probe run."""

    def __init__(self, probe: Mapping[str, Any] | None) -> None:
        self.probe = dict(probe) if probe is not None else None
        self._lock = threading.Lock()
        self._running: threading.Event | None = None
        self._result = False
        self._successes = 0

    def __call__(self) -> bool:
        if self.probe is None:
            return True
        with self._lock:
            running = self._running
            owner = running is None
            if owner:
                running = self._running = threading.Event()
        assert running is not None
        if not owner:
            running.wait()
            return self._result
        try:
            self._result = self._run(self.probe)
        finally:
            with self._lock:
                self._running = None
            running.set()
        return self._result

    def _run(self, probe: Mapping[str, Any]) -> bool:
        if "exec" in probe:
            log("exec probe not supported")
            return False
        if "httpGet" not in probe and "tcpSocket" not in probe:
            log("no probe found")
            return False
        if int(probe.get("periodSeconds") or 0) > 0:
            try:
                self._attempt(probe, float(probe.get("timeoutSeconds") or 1))
            except (OSError, ProbeFailed) as exc:
                log(f"probe failed: {exc}")
                return False
            return True
        threshold = max(int(probe.get("successThreshold") or 1), 1)
        deadline = time.monotonic() + AGGRESSIVE_PROBE_WINDOW
        last: Exception | None = None
        while True:
            try:
                self._attempt(probe, AGGRESSIVE_PROBE_TIMEOUT)
            except (OSError, ProbeFailed) as exc:
                self._successes, last = 0, exc
            else:
                self._successes += 1
                if self._successes >= threshold:
                    return True
            if time.monotonic() + AGGRESSIVE_PROBE_INTERVAL > deadline:
                if last is not None:
                    log(f"aggressive probe error: {last}")
                return False
            time.sleep(AGGRESSIVE_PROBE_INTERVAL)

    @staticmethod
    def _attempt(probe: Mapping[str, Any], timeout: float) -> None:
        if "tcpSocket" in probe:
            tcp = probe["tcpSocket"]
            address = (str(tcp.get("host") or "127.0.0.1"), int(tcp.get("port") or 0))
            with socket.create_connection(address, timeout=timeout):
                return
        get = probe["httpGet"]
        host, port = str(get.get("host") or "127.0.0.1"), int(get.get("port") or 0)
        conn: http.client.HTTPConnection
        if str(get.get("scheme", "HTTP")).upper() == "HTTPS":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.putrequest("GET", str(get.get("path") or "/"))
            conn.putheader("User-Agent", "kube-probe//")
            for header in get.get("httpHeaders") or []:
                conn.putheader(str(header.get("name")), str(header.get("value", "")))
            conn.endheaders()
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 400:
                raise ProbeFailed(f"HTTP probe did not respond Ready, got status code: {response.status}")
        finally:
            conn.close()


class ProbeFailed(Exception):
    """The user container answered, but not ready."""


# Request statistics for the autoscaler (port 9090)


class RequestStats:
    """Time-weighted concurrency and request counts over each reporting period (networking's
    RequestStats)."""

    def __init__(self, now: float) -> None:
        self._lock = threading.Lock()
        self._last = now
        self._concurrency = self._proxied_concurrency = 0.0
        self._requests = self._proxied = 0.0
        self._area = self._proxied_area = self._seconds = 0.0

    def _advance(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._seconds += elapsed
            self._area += self._concurrency * elapsed
            self._proxied_area += self._proxied_concurrency * elapsed
            self._last = now

    def enter(self, now: float, proxied: bool) -> None:
        with self._lock:
            self._advance(now)
            self._requests += 1
            self._concurrency += 1
            if proxied:
                self._proxied += 1
                self._proxied_concurrency += 1

    def leave(self, now: float, proxied: bool) -> None:
        with self._lock:
            self._advance(now)
            self._concurrency -= 1
            if proxied:
                self._proxied_concurrency -= 1

    def report(self, now: float) -> tuple[float, float, float, float]:
        """(average concurrency, average proxied concurrency, requests, proxied requests) since the last
        report."""
        with self._lock:
            self._advance(now)
            seconds = self._seconds
            out = (
                self._area / seconds if seconds > 0 else 0.0,
                self._proxied_area / seconds if seconds > 0 else 0.0,
                self._requests,
                self._proxied,
            )
            self._area = self._proxied_area = self._seconds = 0.0
            self._requests = self._proxied = 0.0
            return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_stat(pod: str, concurrency: float, proxied_concurrency: float, rps: float, proxied_rps: float,
                uptime: float) -> bytes:  # fmt: skip
    """The autoscaler's `metrics.Stat` protobuf (proto3: zero fields are left out)."""
    out = bytearray()
    if pod:
        raw = pod.encode()
        out += b"\x0a" + _varint(len(raw)) + raw
    for number, value in (
        (2, concurrency),
        (3, proxied_concurrency),
        (4, rps),
        (5, proxied_rps),
        (6, uptime),
    ):
        if value:
            out += bytes([(number << 3) | 1]) + struct.pack("<d", value)
    return bytes(out)


# Request metrics for users (port 9091)


def _go_float(value: float) -> str:
    """A float as Go's Prometheus text writer prints it (`%g` shortest, no exponent below 1e21)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    count: int = 0
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if value < bound:
                self.buckets[i] += 1


class RequestMetrics:
    """queue-proxy's OpenCensus views as its Prometheus exporter shows them."""

    FAMILIES = (
        ("revision_app_request_count", "counter", "The number of requests that are routed to user-container"),
        ("revision_app_request_latencies", "histogram", "The response time in millisecond"),
        ("revision_queue_depth", "gauge", "The number of items queued at this queue proxy."),
        ("revision_request_count", "counter", "The number of requests that are routed to queue-proxy"),
        ("revision_request_latencies", "histogram", "The response time in millisecond"),
    )

    def __init__(self, settings: Settings) -> None:
        self._lock = threading.Lock()
        self._base = {
            "configuration_name": settings.configuration,
            "container_name": "queue-proxy",
            "namespace_name": settings.namespace,
            "pod_name": settings.pod,
            "revision_name": settings.revision,
            "service_name": settings.service or "unknown",
        }
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], _Histogram]] = {}
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def _labels(self, extra: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({**self._base, **extra}.items()))

    def record(self, prefix: str, code: int, latency_ms: float, route_tag: str | None = None) -> None:
        extra = {"response_code": str(code), "response_code_class": f"{code // 100}xx"}
        if route_tag is not None:
            extra["route_tag"] = route_tag
        labels = self._labels(extra)
        with self._lock:
            counts = self._counters.setdefault(f"{prefix}_count", {})
            counts[labels] = counts.get(labels, 0) + 1
            self._histograms.setdefault(f"{prefix}_latencies", {}).setdefault(labels, _Histogram()).observe(
                float(int(latency_ms))
            )

    def queue_depth(self, depth: int) -> None:
        labels = self._labels({"response_code": "", "response_code_class": ""})
        with self._lock:
            self._gauges.setdefault("revision_queue_depth", {})[labels] = float(depth)

    def render(self) -> bytes:
        lines: list[str] = []
        with self._lock:
            for name, kind, help_text in self.FAMILIES:
                series: Mapping[tuple[tuple[str, str], ...], Any] = (
                    self._counters.get(name) or self._histograms.get(name) or self._gauges.get(name) or {}
                )
                if not series:
                    continue
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                for labels in sorted(series):
                    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    value = series[labels]
                    if isinstance(value, _Histogram):
                        for bound, count in zip(LATENCY_BUCKETS_MS, value.buckets, strict=True):
                            lines.append(f'{name}_bucket{{{text},le="{bound}"}} {count}')
                        lines.append(f'{name}_bucket{{{text},le="+Inf"}} {value.count}')
                        lines.append(f"{name}_sum{{{text}}} {_go_float(value.total)}")
                        lines.append(f"{name}_count{{{text}}} {value.count}")
                    else:
                        lines.append(f"{name}{{{text}}} {_go_float(float(value))}")
        return ("\n".join(lines) + "\n").encode() if lines else b""


# Draining and the concurrency breaker


class Drainer:
    """Health checks fail once draining starts; `drain` returns when requests have gone quiet."""

    def __init__(self, limit: float) -> None:
        self._cond = threading.Condition()
        self._draining = False
        self._in_flight = 0
        self._last_request = time.monotonic()
        self.limit = limit

    @property
    def draining(self) -> bool:
        with self._cond:
            return self._draining

    def begin(self) -> None:
        with self._cond:
            self._in_flight += 1
            self._last_request = time.monotonic()

    def end(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._last_request = time.monotonic()
            self._cond.notify_all()

    def start(self) -> None:
        with self._cond:
            self._draining = True

    def reset(self) -> None:
        with self._cond:
            self._draining = False
            self._cond.notify_all()

    def drain(self) -> None:
        """Drain until quiet (no request for DRAIN_QUIET_SECONDS and none in flight, at most `limit`
        seconds) or until `reset`."""
        deadline = time.monotonic() + self.limit
        with self._cond:
            self._draining = True
            while self._draining:
                now = time.monotonic()
                quiet_at = self._last_request + DRAIN_QUIET_SECONDS
                if (self._in_flight == 0 and now >= quiet_at) or now >= deadline:
                    return
                self._cond.wait(timeout=max(min(quiet_at, deadline) - now, 0.05))


class QueueFull(Exception):
    """More requests than the concurrency limit and its queue can hold."""


class Breaker:
    """`CONTAINER_CONCURRENCY` requests at a time, ten times as many waiting."""

    def __init__(self, concurrency: int) -> None:
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._pending = 0
        self.capacity = concurrency * 11

    def acquire(self, timeout: float) -> None:
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull("pending request queue full")
            self._pending += 1
        if not self._slots.acquire(timeout=timeout):
            with self._lock:
                self._pending -= 1
            raise TimeoutError("context deadline exceeded")

    def release(self) -> None:
        self._slots.release()
        with self._lock:
            self._pending -= 1

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._pending


# The servers


@dataclass
class QueueProxy:
    """Everything the request handlers share."""

    settings: Settings
    prober: Prober
    stats: RequestStats
    metrics: RequestMetrics | None
    drainer: Drainer
    breaker: Breaker | None
    stopping: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    stat: bytes = b""


def _is_kubelet_probe(headers: Message[str, str]) -> bool:
    return str(headers.get("User-Agent", "")).startswith("kube-probe/") or bool(
        headers.get(KUBELET_PROBE_HEADER)
    )


def _is_health_check(headers: Message[str, str]) -> bool:
    agent = str(headers.get("User-Agent", ""))
    return _is_kubelet_probe(headers) or any(agent.startswith(a) for a in HEALTH_CHECK_AGENTS[1:])


def _route_tag(headers: Message[str, str]) -> str:
    name, default = headers.get(ROUTE_TAG_HEADER, ""), headers.get(DEFAULT_ROUTE_HEADER, "")
    if not name:
        return "DEFAULT" if default else "DISABLED"
    return "UNDEFINED" if default == "true" else str(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, handler: type[_Handler], qp: QueueProxy, idle: float) -> None:
        self.qp = qp
        self.idle = idle
        super().__init__(("", port), handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "queue-proxy-standin"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle)

    @property
    def qp(self) -> QueueProxy:
        return self.server.qp

    def log_message(self, format: str, *args: Any) -> None:
        """Request logs are off, as Knative's default `SERVING_ENABLE_REQUEST_LOG=false`."""

    def send_text(self, code: int, text: str, extra: Mapping[str, str] | None = None) -> None:
        body = (text + "\n").encode() if text else b""
        self.send_response(code)
        if text:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def skip_body(self) -> None:
        for _ in self.request_body():
            pass

    def request_body(self) -> Iterator[bytes]:
        """The request body as it arrives (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, CHUNK))
                    if not data:
                        raise ConnectionError("client closed the request body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            data = self.rfile.read(min(length, CHUNK))
            if not data:
                raise ConnectionError("client closed the request body")
            length -= len(data)
            yield data


class MainHandler(_Handler):
    def handle_one(self) -> None:
        try:
            self.route()
        except ConnectionError:
            self.close_connection = True  # the client went away (a kubelet probe that timed out, ...)

    def route(self) -> None:
        qp = self.qp
        headers = self.headers
        if _is_health_check(headers):
            self.skip_body()
            if qp.drainer.draining:
                self.send_text(503, "shutting down")
                return
            value = headers.get(PROBE_HEADER, "")
            if value != QUEUE_NAME:
                self.send_text(400, f"unexpected probe header value: {value}")
            elif qp.prober():
                self.send_response(200)
                self.send_header("Content-Length", str(len(QUEUE_NAME)))
                self.end_headers()
                self.wfile.write(QUEUE_NAME.encode())
            else:
                self.send_text(503, "")
            return
        if headers.get(PROBE_HEADER) == "probe":
            self.skip_body()
            if qp.drainer.draining:
                self.send_text(503, "shutting down")
            elif not headers.get(HASH_HEADER):
                self.send_text(400, f'a probe request must contain a non-empty "{HASH_HEADER}" header')
            else:
                self.send_text(200, "", {HASH_HEADER: str(headers[HASH_HEADER])})
            return
        qp.drainer.begin()
        try:
            self.serve_proxied()
        finally:
            qp.drainer.end()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one

    def serve_proxied(self) -> None:
        qp = self.qp
        probe = bool(self.headers.get(PROBE_HEADER)) or _is_kubelet_probe(self.headers)
        proxied = self.headers.get(PROXY_HEADER) == "activator"
        start = time.monotonic()
        qp.stats.enter(time.time(), proxied)
        code = 500
        try:
            code = self.through_breaker(start)
        finally:
            qp.stats.leave(time.time(), proxied)
            if qp.metrics is not None and not probe:
                qp.metrics.record(
                    "revision_request", code, (time.monotonic() - start) * 1000, _route_tag(self.headers)
                )

    def through_breaker(self, start: float) -> int:
        qp = self.qp
        breaker = qp.breaker
        if breaker is None:
            return self.forward(start)
        try:
            breaker.acquire(timeout=qp.settings.revision_timeout)
        except (QueueFull, TimeoutError) as exc:
            self.skip_body()
            self.send_text(503, str(exc))
            return 503
        try:
            if qp.metrics is not None:
                qp.metrics.queue_depth(breaker.in_flight)  # this request included, as Knative records it
            return self.forward(start)
        finally:
            breaker.release()

    def forward(self, start: float) -> int:
        """Proxy to the user container; the status code the client got."""
        qp = self.qp
        settings = qp.settings
        deadline = start + settings.revision_timeout
        app_start = time.monotonic()
        first_byte = settings.response_start_timeout or settings.revision_timeout
        conn = http.client.HTTPConnection(
            "127.0.0.1", settings.user_port, timeout=max(min(first_byte, deadline - time.monotonic()), 0.001)
        )
        code = 502
        try:
            try:
                response = self.send_upstream(conn)
            except TimeoutError:
                code = 504
                self.send_text(504, "request timeout")
                return code
            except (OSError, http.client.HTTPException) as exc:
                self.send_text(502, str(exc) or type(exc).__name__)
                return code
            code = response.status
            self.relay(response, conn, deadline)
            return code
        finally:
            conn.close()
            if qp.metrics is not None and not bool(self.headers.get(PROBE_HEADER)):
                qp.metrics.record("revision_app_request", code, (time.monotonic() - app_start) * 1000)

    def send_upstream(self, conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        connection_tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        host = self.headers.get(ORIGINAL_HOST_HEADER) or self.headers.get("Host")
        for key, value in self.headers.items():
            low = key.lower()
            if low in HOP_BY_HOP or low in connection_tokens or low in PRUNED_HEADERS:
                continue
            if low in ("host", ORIGINAL_HOST_HEADER.lower(), "x-forwarded-for"):
                continue
            conn.putheader(key, value)
        if host:
            conn.putheader("Host", host)
        client = self.client_address[0]
        prior = self.headers.get("X-Forwarded-For")
        conn.putheader("X-Forwarded-For", f"{prior}, {client}" if prior else client)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for data in self.request_body():
            conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            conn.send(b"0\r\n\r\n")
        return conn.getresponse()

    def relay(
        self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection, deadline: float
    ) -> None:
        settings = self.qp.settings
        self.send_response_only(response.status, response.reason)
        connection_tokens = {t.strip().lower() for t in (response.getheader("Connection") or "").split(",")}
        length = response.getheader("Content-Length")
        for key, value in response.getheaders():
            low = key.lower()
            if low in HOP_BY_HOP or low in connection_tokens:
                continue
            self.send_header(key, value)
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        chunked = not no_body and length is None and self.request_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif not no_body and length is None:
            self.close_connection = True
        self.end_headers()
        if no_body:
            return
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close_connection = True  # the revision timeout cuts a response already started
                return
            if conn.sock is not None:
                conn.sock.settimeout(min(settings.idle_timeout or remaining, remaining))
            data = response.read1(CHUNK)
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class AdminHandler(_Handler):
    def do_GET(self) -> None:
        qp = self.qp
        if self.path.split("?", 1)[0] != DRAIN_PATH:
            self.send_text(404, "404 page not found")
            return
        qp.drainer.start()
        if qp.stopping.wait(DRAIN_RESET_SECONDS):
            qp.drainer.drain()
        else:
            qp.drainer.reset()
        self.send_text(200, "")

    do_POST = do_GET


class AutoscalerMetricsHandler(_Handler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_text(404, "404 page not found")
            return
        body = self.qp.stat
        self.send_response(200)
        self.send_header("Content-Type", "application/protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class UserMetricsHandler(_Handler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_text(404, "404 page not found")
            return
        metrics = self.qp.metrics
        body = metrics.render() if metrics is not None else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _report(qp: QueueProxy) -> None:
    while not qp.stopping.wait(REPORTING_PERIOD):
        concurrency, proxied_concurrency, requests, proxied = qp.stats.report(time.time())
        qp.stat = encode_stat(
            qp.settings.pod,
            concurrency,
            proxied_concurrency,
            requests / REPORTING_PERIOD,
            proxied / REPORTING_PERIOD,
            time.monotonic() - qp.started,
        )


def run(settings: Settings, stop: threading.Event) -> None:
    """Serve until `stop` is set, then drain and shut every server down."""
    metrics = RequestMetrics(settings) if settings.metrics_backend == "prometheus" else None
    if settings.metrics_backend not in ("", "prometheus"):
        log(f"request metrics backend {settings.metrics_backend!r} is not supported; request metrics are off")
    qp = QueueProxy(
        settings=settings,
        prober=Prober(settings.readiness_probe),
        stats=RequestStats(time.time()),
        metrics=metrics,
        drainer=Drainer(limit=settings.revision_timeout),
        breaker=Breaker(settings.container_concurrency) if settings.container_concurrency > 0 else None,
    )
    qp.stat = encode_stat(settings.pod, 0, 0, 0, 0, 0)
    idle = max(settings.revision_timeout, 60.0)
    plan: list[tuple[int, type[_Handler]]] = [
        (settings.serving_port, MainHandler),
        (settings.admin_port, AdminHandler),
        (settings.metrics_port, AutoscalerMetricsHandler),
    ]
    if metrics is not None:
        plan.append((settings.user_metrics_port, UserMetricsHandler))
    servers: list[_Server] = []
    threads: list[threading.Thread] = []
    try:
        for port, handler in plan:
            servers.append(_Server(port, handler, qp, idle))
    except OSError:
        for server in servers:
            server.server_close()
        raise
    # Every thread started here (and every request thread they start) inherits a mask that blocks the stop
    # signals, so the kernel delivers them to this thread, the only one that runs Python's handlers.
    unmasked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for server in servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
            thread.start()
            threads.append(thread)
        reporter = threading.Thread(target=_report, args=(qp,), daemon=True)
        reporter.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unmasked)
    log(f"serving {settings.revision} on :{settings.serving_port} -> 127.0.0.1:{settings.user_port}")
    # A bounded wait: handlers run between waits even if a signal's wake-up were missed.
    while not stop.wait(STOP_POLL_SECONDS):
        pass
    log("received TERM signal, draining")
    qp.stopping.set()
    qp.drainer.drain()
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in [*threads, reporter]:
        thread.join(timeout=5)
    log("shutdown complete")


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        settings = Settings.from_env(os.environ if env is None else env)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    try:
        run(settings, stop)
    except OSError as exc:
        log(f"failed to bring up queue-proxy: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
