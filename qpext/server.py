"""The ``/metrics`` endpoint: both upstreams scraped concurrently, merged, and qpext's own health appended.

The scraper's timeout header bounds the whole response, not each side, so a slow app costs its own series
only: queue-proxy's part still arrives in time, with ``qpext_scrape_up{target="app"} 0``. The server runs
with handler cancellation, so a scraper that hangs up cancels the upstream requests instead of leaving
them (and their bodies) running, which is how Go's qpext kept working after the client had gone. At most
two scrapes run at once; others wait within their own deadline, so memory does not grow with the number
of concurrent scrapers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aiohttp
from aiohttp import web

from qpext.config import SERVERLESS_LABEL_NAMES, Config
from qpext.families import ParsedBody, Relabeller, parse_text
from qpext.merge import Drops, render
from qpext.openmetrics import openmetrics_to_text
from qpext.scrape import (
    OPENMETRICS_MEDIA_TYPE,
    ScrapeResult,
    forward_headers,
    response_budget,
    scrape,
    scrape_timeout,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Scrapes holding bodies at once. Merging is CPU-bound on one event loop anyway, so more would only add
# memory (each holds the app's body and the merged one) without adding throughput.
MAX_CONCURRENT_SCRAPES = 2
QUEUE_PROXY = "queue-proxy"
APP = "app"


def app_families(result: ScrapeResult, drops: Drops) -> ParsedBody | None:
    """The app's body as families, converting OpenMetrics first."""
    if result.body is None:
        return None
    body = result.body
    if result.media_type == OPENMETRICS_MEDIA_TYPE:
        converted = openmetrics_to_text(body)
        drops.malformed += converted.malformed
        body = converted.text
    return parse_text(body)


def queue_proxy_text(result: ScrapeResult) -> bytes | None:
    """queue-proxy's body, unchanged when it is text format (the Knative default)."""
    if result.body is None or result.media_type != OPENMETRICS_MEDIA_TYPE:
        return result.body
    return openmetrics_to_text(result.body).text


class Aggregator:
    """Owns the scrape session and the cumulative drop counters behind ``/metrics``."""

    def __init__(self, config: Config, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._relabeller = Relabeller(SERVERLESS_LABEL_NAMES, config.serverless_label_values)
        self._dropped = Drops()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
        host = config.upstream_host
        self._targets: list[tuple[str, str]] = []
        if config.queue_proxy_port is not None:
            self._targets.append(
                (QUEUE_PROXY, f"http://{host}:{config.queue_proxy_port}{config.queue_proxy_path}")
            )
        if config.app_port is not None:
            self._targets.append((APP, f"http://{host}:{config.app_port}{config.app_path}"))

    async def handle_metrics(self, request: web.Request) -> web.Response:
        timeout = scrape_timeout(request.headers)
        deadline = asyncio.get_running_loop().time() + response_budget(timeout)
        headers = forward_headers(request.headers)
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            busy = [ScrapeResult(target, None, "", 0.0, "busy") for target, _ in self._targets]
            log.warning("scrape not started: %d others ran until its deadline", MAX_CONCURRENT_SCRAPES)
            return web.Response(body=self._self_metrics(busy), headers={"Content-Type": CONTENT_TYPE})
        try:
            results = {
                r.target: r
                for r in await asyncio.gather(
                    *(scrape(self._session, target, url, headers, deadline) for target, url in self._targets)
                )
            }
            drops = Drops()
            qp_result, app_result = results.get(QUEUE_PROXY), results.get(APP)
            qp = queue_proxy_text(qp_result) if qp_result is not None else None
            app = app_families(app_result, drops) if app_result is not None else None
            # A cancellation point between the CPU-bound steps: a scraper that left stops the work here.
            await asyncio.sleep(0)
            parts = render(qp, app, self._relabeller, drops)
            self._count(drops)
            parts.append(self._self_metrics(results.values()))
            body = b"".join(parts)
        finally:
            self._slots.release()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def _count(self, drops: Drops) -> None:
        self._dropped.add(drops)
        if any(n for _, n in drops.items()):
            log.warning("dropped app families: %s", ", ".join(f"{k}={n}" for k, n in drops.items() if n))

    def _self_metrics(self, results: Iterable[ScrapeResult]) -> bytes:
        scraped = list(results)
        lines = [
            "# HELP qpext_scrape_up Whether qpext's scrape of the target succeeded (1) or failed (0).",
            "# TYPE qpext_scrape_up gauge",
            *(f'qpext_scrape_up{{target="{r.target}"}} {int(r.up)}' for r in scraped),
            "# HELP qpext_scrape_duration_seconds How long qpext's scrape of the target took.",
            "# TYPE qpext_scrape_duration_seconds gauge",
            *(f'qpext_scrape_duration_seconds{{target="{r.target}"}} {r.duration:.6f}' for r in scraped),
            "# HELP qpext_app_families_dropped_total App metric families left out of responses, by reason.",
            "# TYPE qpext_app_families_dropped_total counter",
            *(f'qpext_app_families_dropped_total{{reason="{k}"}} {n}' for k, n in self._dropped.items()),
        ]
        return ("\n".join(lines) + "\n").encode()


def make_app(aggregator: Aggregator) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", aggregator.handle_metrics)
    return app


def make_session() -> aiohttp.ClientSession:
    """One pooled session for all scrapes; every request still carries its own deadline."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=32, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=None),
        auto_decompress=True,
    )


async def start_server(config: Config, session: aiohttp.ClientSession) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (for cleanup) and the bound port."""
    runner = web.AppRunner(
        make_app(Aggregator(config, session)),
        handler_cancellation=True,
        shutdown_timeout=1.0,
        access_log=None,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    log.info("qpext listening on %s:%d", config.listen_host, port)
    return runner, port
