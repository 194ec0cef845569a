"""The ``/metrics`` endpoint: both upstreams scraped concurrently, merged, and qpext's own health appended.

The scraper's timeout header bounds the whole response, not each side, so a slow app costs its own series
only: queue-proxy's part still arrives in time, with ``qpext_scrape_up{target="app"} 0``. Bodies are parsed
while they arrive, so the deadline bounds the parsing too. A scraper that hangs up cancels the upstream
requests instead of leaving them (and their bodies) running, which is how Go's qpext kept working after the
client had gone. Small scrapes run side by side (they are latency-bound, and limiting them to two at once
cost throughput); only two at a time may read a large body, the others waiting within their own deadline,
so memory does not grow with the number of concurrent scrapers. On shutdown every scrape in flight gets a
short grace period and is then answered with what has arrived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from qpext.config import SERVERLESS_LABEL_NAMES, Config
from qpext.families import Parser, Relabeller
from qpext.httpclient import Upstream
from qpext.httpserver import HttpServer, Request, Response
from qpext.merge import Drops, render
from qpext.scrape import (
    ERROR_REASONS,
    Deadline,
    LargeBodyGate,
    ScrapeResult,
    forward_headers,
    response_budget,
    scrape,
    scrape_timeout,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scrapes that may read bodies larger than LARGE_BODY_BYTES at once. Parsing is CPU-bound on one event loop
# anyway, so more would only add memory (each holds its relabelled output) without adding throughput.
MAX_LARGE_SCRAPES = 2
LARGE_BODY_BYTES = 1024 * 1024
# How long scrapes in flight may still run once qpext is stopping; then they are answered as they stand.
SHUTDOWN_GRACE = 5.0
QUEUE_PROXY = "queue-proxy"
APP = "app"
DROPPED_HELP = "# HELP qpext_families_dropped_total Families of the target left out of responses, by reason."


class Aggregator:
    """Owns the upstream connections and the cumulative counters behind ``/metrics``."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._relabeller = Relabeller(SERVERLESS_LABEL_NAMES, config.serverless_label_values)
        self._large = asyncio.Semaphore(MAX_LARGE_SCRAPES)
        self._in_flight: set[Deadline] = set()
        self._stop_at: float | None = None
        host = config.upstream_host
        self._targets: list[tuple[str, Upstream, str]] = []
        if config.queue_proxy_port is not None:
            queue_proxy = Upstream(host, config.queue_proxy_port)
            self._targets.append((QUEUE_PROXY, queue_proxy, config.queue_proxy_path))
        if config.app_port is not None:
            self._targets.append((APP, Upstream(host, config.app_port), config.app_path))
        names = [target for target, _, _ in self._targets]
        self._dropped = {target: Drops() for target in names}
        self._errors = {target: dict.fromkeys(ERROR_REASONS, 0) for target in names}
        self._counters: str | None = None

    def close(self) -> None:
        for _, upstream, _ in self._targets:
            upstream.close()

    def stop(self, grace: float) -> None:
        """Bring every scrape's deadline, in flight or still to come, to at most ``grace`` from now."""
        self._stop_at = asyncio.get_running_loop().time() + grace
        for deadline in self._in_flight:
            deadline.bring_forward(self._stop_at, "shutdown")

    async def handle_metrics(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop.time() + response_budget(scrape_timeout(request.headers)))
        if self._stop_at is not None:
            deadline.bring_forward(self._stop_at, "shutdown")
        gate = LargeBodyGate(self._large, LARGE_BODY_BYTES)
        self._in_flight.add(deadline)
        try:
            results = await self._scrape_all(request, deadline, gate)
            by_target = {r.target: r for r in results}
            drops = {target: Drops() for target in self._dropped}
            qp, app = by_target.get(QUEUE_PROXY), by_target.get(APP)
            if app is not None:
                drops[APP].malformed += app.malformed
            parts = render(
                qp.body if qp is not None else None,
                app.body if app is not None else None,
                drops.get(QUEUE_PROXY, Drops()),
                drops.get(APP, Drops()),
            )
        except BaseException:
            gate.release()
            raise
        finally:
            self._in_flight.discard(deadline)
        self._count(results, drops)
        parts.append(self._self_metrics(results))
        # A large answer keeps its slot until it is written: that is when its memory is freed.
        return Response(200, parts, CONTENT_TYPE, on_sent=gate.release)

    async def _scrape_all(
        self, request: Request, deadline: Deadline, gate: LargeBodyGate
    ) -> list[ScrapeResult]:
        headers = forward_headers(request.headers)
        max_bytes = self._config.max_body_bytes
        scrapes = [
            scrape(
                upstream,
                target,
                path,
                headers,
                deadline,
                Parser(self._relabeller if target == APP else None),
                max_bytes,
                gate,
            )
            for target, upstream, path in self._targets
        ]
        if len(scrapes) < 2:
            return [await s for s in scrapes]
        # The first side in a task of its own, the second in this one: both run concurrently.
        first = asyncio.ensure_future(scrapes[0])
        try:
            second = await scrapes[1]
        except BaseException:
            first.cancel()
            raise
        return [await first, second]

    def _count(self, results: Iterable[ScrapeResult], drops: dict[str, Drops]) -> None:
        for result in results:
            if result.error is not None:
                self._errors[result.target][result.error] += 1
                self._counters = None
        for target, dropped in drops.items():
            if dropped:
                self._dropped[target].add(dropped)
                self._counters = None
                log.warning(
                    "dropped %s families: %s", target, ", ".join(f"{k}={n}" for k, n in dropped.items() if n)
                )

    def _self_metrics(self, results: list[ScrapeResult]) -> bytes:
        lines = ["# HELP qpext_scrape_up Whether qpext's scrape of the target succeeded (1) or failed (0)."]
        lines.append("# TYPE qpext_scrape_up gauge")
        lines += [f'qpext_scrape_up{{target="{r.target}"}} {int(r.up)}' for r in results]
        lines.append("# HELP qpext_scrape_duration_seconds How long qpext's scrape of the target took.")
        lines.append("# TYPE qpext_scrape_duration_seconds gauge")
        lines += [f'qpext_scrape_duration_seconds{{target="{r.target}"}} {r.duration:.6f}' for r in results]
        if self._counters is None:
            # The cumulative counters change only when something fails: their text is kept until then.
            self._counters = "\n".join(
                [
                    "# HELP qpext_scrape_errors_total Failed scrapes of the target, by reason.",
                    "# TYPE qpext_scrape_errors_total counter",
                    *(
                        f'qpext_scrape_errors_total{{target="{target}",reason="{reason}"}} {n}'
                        for target, counts in self._errors.items()
                        for reason, n in counts.items()
                    ),
                    DROPPED_HELP,
                    "# TYPE qpext_families_dropped_total counter",
                    *(
                        f'qpext_families_dropped_total{{target="{target}",reason="{reason}"}} {n}'
                        for target, drops in self._dropped.items()
                        for reason, n in drops.items()
                    ),
                ]
            )
        lines.append(self._counters)
        return ("\n".join(lines) + "\n").encode()


class MetricsServer:
    """qpext's HTTP server: ``/metrics`` on the configured address."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self.aggregator = Aggregator(config)
        self._http = HttpServer({"/metrics": self.aggregator.handle_metrics})

    async def start(self) -> int:
        """Start listening; returns the bound port. OSError when the address cannot be bound."""
        port = await self._http.start(self._config.listen_host, self._config.listen_port)
        log.info("qpext listening on %s:%d", self._config.listen_host, port)
        return port

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Answer the scrapes in flight within ``grace`` seconds, close every connection, then return."""
        self.aggregator.stop(grace)
        await self._http.shutdown(grace + 1.0)
        self.aggregator.close()
