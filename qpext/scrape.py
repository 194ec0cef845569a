"""Fetching one upstream exposition (queue-proxy or the app) within the caller's deadline.

Failures are values, not exceptions: the handler must always answer, and report a dead or broken side as
``qpext_scrape_up{target=...} 0`` instead of omitting it silently as KServe's Go qpext does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
FORWARDED_HEADERS = ("Accept", "User-Agent", SCRAPE_TIMEOUT_HEADER)
# Prometheus' own default scrape timeout; used when the header is missing or unparsable.
DEFAULT_SCRAPE_TIMEOUT = 10.0
MAX_SCRAPE_TIMEOUT = 300.0
MAX_BODY_BYTES = 256 * 1024 * 1024
TEXT_MEDIA_TYPE = "text/plain"
OPENMETRICS_MEDIA_TYPE = "application/openmetrics-text"


def parse_scrape_timeout(value: str) -> float:
    """Seconds from the scrape-timeout header; ValueError unless it is a positive finite number."""
    try:
        seconds = float(value) if "_" not in value else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"invalid {SCRAPE_TIMEOUT_HEADER} value {value!r}")
    return seconds


def scrape_timeout(headers: Mapping[str, str]) -> float:
    """The whole-response budget the scraper allows, falling back to the default with a log line."""
    raw = headers.get(SCRAPE_TIMEOUT_HEADER)
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
    """The scraper's headers passed upstream. Protocol-buffer media types are removed from ``Accept``
    (qpext reads text formats only) and bodies are asked for uncompressed: it is loopback."""
    out = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
    if "Accept" in out:
        ranges = [r for r in out["Accept"].split(",") if r.strip() and "protobuf" not in r.lower()]
        out["Accept"] = ",".join(ranges) or f"{TEXT_MEDIA_TYPE};version=0.0.4"
    out["Accept-Encoding"] = "identity"
    return out


@dataclass(frozen=True)
class ScrapeResult:
    target: str
    body: bytes | None
    media_type: str
    duration: float
    error: str | None = None

    @property
    def up(self) -> bool:
        return self.body is not None


async def scrape(
    session: aiohttp.ClientSession,
    target: str,
    url: str,
    headers: Mapping[str, str],
    deadline: float,
    max_bytes: int = MAX_BODY_BYTES,
) -> ScrapeResult:
    """GET ``url`` before the loop-time ``deadline``; never raises except on cancellation."""
    start = time.perf_counter()

    def failed(message: str) -> ScrapeResult:
        log.warning("error scraping %s: %s", url, message)
        return ScrapeResult(target, None, "", time.perf_counter() - start, message)

    try:
        async with asyncio.timeout_at(deadline):
            async with session.get(url, headers=headers, allow_redirects=False) as resp:
                if resp.status != 200:
                    return failed(f"status code: {resp.status}")
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if media_type not in ("", TEXT_MEDIA_TYPE, OPENMETRICS_MEDIA_TYPE):
                    return failed(f"unsupported content type {media_type!r}")
                if (resp.content_length or 0) > max_bytes:
                    return failed(f"body of {resp.content_length} bytes exceeds {max_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > max_bytes:
                        return failed(f"body exceeds {max_bytes} bytes")
                    chunks.append(chunk)
    except TimeoutError:
        return failed("timed out")
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return failed(str(err) or type(err).__name__)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return ScrapeResult(target, body, media_type or TEXT_MEDIA_TYPE, time.perf_counter() - start)
