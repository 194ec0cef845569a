"""Fixtures for qpext: scriptable upstream servers and a qpext server in front of them, all on loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from qpext.config import Config
from qpext.server import MetricsServer

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass
class Upstream:
    """A fake metrics endpoint; tests set what it answers and read what it was sent."""

    body: bytes = b""
    status: int = 200
    content_type: str = TEXT
    delay: float = 0.0
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    active: int = 0
    max_active: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.active -= 1
        return web.Response(body=self.body, status=self.status, headers={"Content-Type": self.content_type})


async def _serve(upstream: Upstream) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/metrics", upstream.handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream.port = int(runner.addresses[0][1])
    return runner


@pytest.fixture
async def queue_proxy() -> AsyncIterator[Upstream]:
    upstream = Upstream(body=b"# TYPE revision_request_count counter\nrevision_request_count 3\n")
    runner = await _serve(upstream)
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def model() -> AsyncIterator[Upstream]:
    upstream = Upstream(body=b"# TYPE my_metric counter\nmy_metric 0\n")
    runner = await _serve(upstream)
    yield upstream
    await runner.cleanup()


@dataclass
class Qpext:
    url: str
    session: aiohttp.ClientSession

    async def get(self, headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, str, str]:
        async with self.session.get(
            self.url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            return resp.status, resp.headers["Content-Type"], await resp.text()


def serverless_config(**overrides: object) -> Config:
    values: dict[str, object] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "upstream_host": "127.0.0.1",
        "serverless_label_values": ("something", "something", "something"),
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@pytest.fixture
async def qpext(queue_proxy: Upstream, model: Upstream) -> AsyncIterator[Qpext]:
    """qpext scraping both fakes."""
    async with _qpext(serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port)) as q:
        yield q


class _qpext:
    def __init__(self, config: Config) -> None:
        self.config = config

    async def __aenter__(self) -> Qpext:
        self.server = MetricsServer(self.config)
        port = await self.server.start()
        self.client = aiohttp.ClientSession()
        return Qpext(f"http://127.0.0.1:{port}/metrics", self.client)

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await self.server.stop()


def start_qpext(config: Config) -> _qpext:
    return _qpext(config)


_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)


def assert_valid_exposition(text: str) -> dict[str, str]:
    """Parse with prometheus-client and check there is one TYPE line per family; returns name -> type
    as declared in the text (prometheus-client renames counters, so its family names are not used)."""
    list(text_string_to_metric_families(text))
    names = [name for name, _ in _TYPE_LINE.findall(text)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"duplicate TYPE lines: {duplicates}"
    assert text.endswith("\n")
    return dict(_TYPE_LINE.findall(text))


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]
