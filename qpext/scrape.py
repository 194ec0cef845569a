"""Fetching one upstream exposition (queue-proxy or the app) within the scrape's deadline, parsing it as it
arrives.

Failures are values, not exceptions: the handler must always answer, and report a dead or broken side as
``qpext_scrape_up{target=...} 0`` with the reason counted, instead of omitting it silently as KServe's Go
qpext does. Both sides are asked for text format 0.0.4, the format qpext (like Go's qpext) reads: a
prometheus-client app that is asked for OpenMetrics, as Prometheus' own Accept header does, would answer in
a format that needs a full parser (kept as a fallback for apps that ignore Accept, with a tighter limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from qpext.families import ParsedBody, Parser
from qpext.httpclient import FetchError, Sink, Upstream

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
FORWARDED_HEADERS = ("User-Agent", SCRAPE_TIMEOUT_HEADER)
ACCEPT = "text/plain;version=0.0.4,*/*;q=0.1"
# Prometheus' own default scrape timeout; used when the header is missing or unparsable.
DEFAULT_SCRAPE_TIMEOUT = 10.0
MAX_SCRAPE_TIMEOUT = 300.0
TEXT_MEDIA_TYPE = "text/plain"
OPENMETRICS_MEDIA_TYPE = "application/openmetrics-text"
# OpenMetrics goes through prometheus-client's parser, which needs about 20 bytes per byte of input.
OPENMETRICS_LIMIT_DIVISOR = 16
# Label values of qpext_scrape_errors_total{reason}.
ERROR_REASONS = (
    "timeout",
    "connection",
    "status",
    "content_type",
    "body_too_large",
    "invalid_response",
    "busy",
    "shutdown",
)


def parse_scrape_timeout(value: str) -> float:
    """Seconds from the scrape-timeout header; ValueError unless it is a positive finite number."""
    try:
        seconds = float(value) if "_" not in value else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid {SCRAPE_TIMEOUT_HEADER} value {value!r}")
    return seconds


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lower = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lower), None)


def scrape_timeout(headers: Mapping[str, str]) -> float:
    """The whole-response budget the scraper allows, falling back to the default with a log line."""
    raw = _header(headers, SCRAPE_TIMEOUT_HEADER)
    if raw is None:
        return DEFAULT_SCRAPE_TIMEOUT
    try:
        return min(parse_scrape_timeout(raw), MAX_SCRAPE_TIMEOUT)
    except ValueError as err:
        log.warning("%s; using %.0fs", err, DEFAULT_SCRAPE_TIMEOUT)
        return DEFAULT_SCRAPE_TIMEOUT


def response_budget(timeout: float) -> float:
    """Time left for the upstream fetches: the rest is kept for merging and sending the answer."""
    return timeout - min(1.0, 0.15 * timeout)


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers sent upstream: the scraper's User-Agent and timeout, a text-format Accept, and no
    compression (it is loopback)."""
    out = {"Accept": ACCEPT, "Accept-Encoding": "identity"}
    for name in FORWARDED_HEADERS:
        value = _header(headers, name)
        if value:
            out[name] = value
    return out


class Deadline:
    """A scrape's deadline, which shutdown can bring forward for every fetch running under it."""

    def __init__(self, when: float) -> None:
        self.when = when
        self.reason = "timeout"
        self.timeouts: set[asyncio.Timeout] = set()

    def bring_forward(self, when: float, reason: str) -> None:
        if when < self.when:
            self.when = when
            self.reason = reason
            for timeout in self.timeouts:
                timeout.reschedule(when)


class LargeBodyGate:
    """Lets the bodies of one scrape past ``threshold`` bytes only while it holds one of ``slots``.

    Small scrapes run side by side without limit (they cost little memory and are latency-bound); a scrape
    holds its relabelled output until answered, so only a few large ones may be read at once.
    """

    def __init__(self, slots: asyncio.Semaphore, threshold: int) -> None:
        self._slots = slots
        self._threshold = threshold
        self._lock: asyncio.Lock | None = None
        self.held = False
        self.waiting = False

    async def __call__(self, received: int) -> None:
        if self.held or received < self._threshold:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.held:
                return
            self.waiting = True
            try:
                await self._slots.acquire()
            finally:
                self.waiting = False
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


@dataclass
class ScrapeResult:
    target: str
    body: ParsedBody | None
    duration: float
    error: str | None = None
    # Families lost converting OpenMetrics.
    malformed: int = 0

    @property
    def up(self) -> bool:
        return self.body is not None


@dataclass
class _Receiver:
    """Chooses the body's route from the response head: the line parser, or OpenMetrics conversion."""

    parser: Parser
    max_bytes: int
    openmetrics: list[bytes] | None = None
    size: int = 0

    def on_head(self, status: int, headers: dict[str, str]) -> Sink:
        if status != 200:
            raise FetchError("status", f"status code: {status}")
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type in ("", TEXT_MEDIA_TYPE):
            return self.parser.feed
        if media_type == OPENMETRICS_MEDIA_TYPE:
            self.openmetrics = []
            return self._collect
        raise FetchError("content_type", f"unsupported content type {media_type!r}")

    def _collect(self, data: bytes) -> None:
        assert self.openmetrics is not None
        self.size += len(data)
        limit = self.max_bytes // OPENMETRICS_LIMIT_DIVISOR
        if self.size > limit:
            raise FetchError("body_too_large", f"OpenMetrics body exceeds {limit} bytes")
        self.openmetrics.append(data)


async def scrape(
    upstream: Upstream,
    target: str,
    path: str,
    headers: Mapping[str, str],
    deadline: Deadline,
    parser: Parser,
    max_bytes: int,
    gate: LargeBodyGate,
) -> ScrapeResult:
    """GET ``path`` before the deadline, feeding ``parser``; never raises except on cancellation."""
    start = time.perf_counter()

    def failed(reason: str, message: str) -> ScrapeResult:
        log.warning("error scraping %s at %s:%d%s: %s", target, upstream.host, upstream.port, path, message)
        return ScrapeResult(target, None, time.perf_counter() - start, reason)

    receiver = _Receiver(parser, max_bytes)
    try:
        async with asyncio.timeout_at(deadline.when) as timeout:
            deadline.timeouts.add(timeout)
            try:
                await upstream.get(path, headers, receiver.on_head, max_bytes, gate)
            finally:
                deadline.timeouts.discard(timeout)
    except TimeoutError:
        if gate.waiting and deadline.reason == "timeout":
            return failed("busy", "timed out waiting while other scrapes read large bodies")
        return failed(deadline.reason, "timed out" if deadline.reason == "timeout" else "qpext is stopping")
    except FetchError as err:
        return failed(err.reason, str(err))
    malformed = 0
    if receiver.openmetrics is not None:
        from qpext.openmetrics import openmetrics_to_text

        converted = openmetrics_to_text(b"".join(receiver.openmetrics))
        parser.feed(converted.text)
        malformed = converted.malformed
    return ScrapeResult(target, parser.close(), time.perf_counter() - start, None, malformed)
