"""`GET /metrics` end to end on loopback: both upstreams, their failures, and every kind of app output."""

from __future__ import annotations

import asyncio
import socket
from typing import Literal

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from qpext.scrape import ACCEPT
from qpext.server import LARGE_BODY_BYTES, MAX_LARGE_SCRAPES, MetricsServer
from tests.qpext.conftest import (
    OPENMETRICS,
    Qpext,
    Upstream,
    assert_valid_exposition,
    samples,
    serverless_config,
    start_qpext,
)

LABELS = 'service_name="something",configuration_name="something",revision_name="something"'


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dropped(text: str, reason: str, target: str = "app") -> int:
    prefix = f'qpext_families_dropped_total{{target="{target}",reason="{reason}"}} '
    return int(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


async def test_both_sides_up(qpext: Qpext, queue_proxy: Upstream) -> None:
    status, content_type, text = await qpext.get()
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert text.startswith(queue_proxy.body.decode() + f"# TYPE my_metric counter\nmy_metric{{{LABELS}}} 0\n")
    assert 'qpext_scrape_up{target="queue-proxy"} 1\n' in text
    assert 'qpext_scrape_up{target="app"} 1\n' in text
    assert 'qpext_scrape_duration_seconds{target="app"} ' in text
    assert_valid_exposition(text)


async def test_app_down(queue_proxy: Upstream) -> None:
    async with start_qpext(serverless_config(queue_proxy_port=queue_proxy.port, app_port=closed_port())) as q:
        status, _, text = await q.get()
    assert status == 200
    assert text.startswith(queue_proxy.body.decode())
    assert 'qpext_scrape_up{target="app"} 0\n' in text
    assert_valid_exposition(text)


async def test_queue_proxy_down(model: Upstream) -> None:
    async with start_qpext(serverless_config(queue_proxy_port=closed_port(), app_port=model.port)) as q:
        status, _, text = await q.get()
    assert status == 200
    assert text.startswith(f"# TYPE my_metric counter\nmy_metric{{{LABELS}}} 0\n")
    assert 'qpext_scrape_up{target="queue-proxy"} 0\n' in text
    assert 'qpext_scrape_up{target="app"} 1\n' in text


async def test_app_slower_than_scrape_timeout(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    model.delay = 30.0
    # The client gives up after the scrape timeout, as Prometheus does: the answer must come before.
    status, _, text = await qpext.get({"X-Prometheus-Scrape-Timeout-Seconds": "1"}, timeout=1.0)
    assert status == 200
    assert text.startswith(queue_proxy.body.decode())
    assert 'qpext_scrape_up{target="app"} 0\n' in text
    assert 'qpext_scrape_up{target="queue-proxy"} 1\n' in text


async def test_unparsable_timeout_header_falls_back(qpext: Qpext, model: Upstream) -> None:
    status, _, text = await qpext.get({"X-Prometheus-Scrape-Timeout-Seconds": "12.wrong"})
    assert status == 200
    assert 'qpext_scrape_up{target="app"} 1\n' in text


async def test_headers_forwarded(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    accept = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;q=0.8,text/plain;q=0.5"
    await qpext.get(
        {"Accept": accept, "User-Agent": "Prometheus/2.42.0", "X-Prometheus-Scrape-Timeout-Seconds": "7.5"}
    )
    for upstream in (queue_proxy, model):
        sent = upstream.requests[-1]
        # Text format is asked for, whatever the scraper accepts: it is the format qpext reads.
        assert sent["Accept"] == ACCEPT
        assert sent["User-Agent"] == "Prometheus/2.42.0"
        assert sent["X-Prometheus-Scrape-Timeout-Seconds"] == "7.5"
        assert sent["Accept-Encoding"] == "identity"


async def test_malformed_app_output(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    model.body = (
        b"# TYPE good gauge\ngood 1\n"
        b'# TYPE broken gauge\nbroken{a="1"} 1\nbroken{a="2" 2\n'
        b"# TYPE bad_value counter\nbad_value_total 1x\n"
        b"<html>not metrics</html>\n"
    )
    status, _, text = await qpext.get()
    assert status == 200
    types = assert_valid_exposition(text)
    assert f"good{{{LABELS}}} 1\n" in text
    assert "broken" not in types
    assert "<html>" not in text
    assert dropped(text, "malformed") >= 2
    assert text.startswith(queue_proxy.body.decode())


async def test_openmetrics_app_output(qpext: Qpext, model: Upstream) -> None:
    registry = CollectorRegistry()
    requests = Counter("requests", "Requests.", ["model"], registry=registry)
    requests.labels("m").inc(2, exemplar={"trace_id": "abc"})
    Histogram("latency_seconds", "Latency.", registry=registry, buckets=(0.1, 1.0)).observe(0.5)
    Info("build", "Build.", registry=registry).info({"version": "1"})
    model.body = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
    assert b"# EOF" in model.body
    assert b"# {trace_id" in model.body
    model.content_type = OPENMETRICS
    status, _, text = await qpext.get()
    assert status == 200
    types = assert_valid_exposition(text)
    assert types["requests_total"] == "counter"
    assert types["requests_created"] == "gauge"
    assert types["latency_seconds"] == "histogram"
    assert types["build_info"] == "gauge"
    assert "# EOF" not in text
    assert "trace_id" not in text
    assert "# UNIT" not in text
    assert f'requests_total{{model="m",{LABELS}}} 2.0\n' in text
    assert f'build_info{{version="1",{LABELS}}} 1.0\n' in text


async def test_duplicate_and_clashing_families(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    queue_proxy.body = b"# TYPE shared counter\nshared 1\n# TYPE clash gauge\nclash 1\n"
    model.body = (
        b'# TYPE twice gauge\ntwice{a="1"} 1\n# TYPE other gauge\nother 1\n'
        b'# TYPE twice gauge\ntwice{a="2"} 2\n'
        b"# TYPE retyped gauge\nretyped 1\n# TYPE retyped counter\nretyped 2\n"
        b"# TYPE shared counter\nshared 5\n# TYPE clash counter\nclash 7\n"
    )
    _status, _, text = await qpext.get()
    types = assert_valid_exposition(text)
    assert types["twice"] == "gauge"
    assert text.index(f'twice{{a="2",{LABELS}}} 2') < text.index("# TYPE other gauge") < text.index("other{")
    assert f"retyped{{{LABELS}}} 1\n" in text
    assert "retyped{" + LABELS + "} 2" not in text
    merged = f"# TYPE shared counter\nshared 1\nshared{{{LABELS}}} 5\n# TYPE clash gauge\nclash 1\n"
    assert text.startswith(merged)
    assert f"clash{{{LABELS}}} 7" not in text
    assert dropped(text, "type_clash") == 2


async def test_untyped_families(qpext: Qpext, model: Upstream) -> None:
    model.body = b'done_total{a="1"} 3\nstart_created 1.7e9\n# HELP temperature Degrees.\ntemperature 21.5\n'
    _, _, text = await qpext.get()
    types = assert_valid_exposition(text)
    assert types == {
        "done_total": "counter",
        "start_created": "counter",
        "temperature": "gauge",
        "qpext_scrape_up": "gauge",
        "qpext_scrape_duration_seconds": "gauge",
        "qpext_scrape_errors_total": "counter",
        "qpext_families_dropped_total": "counter",
        "revision_request_count": "counter",
    }
    assert f"# HELP temperature Degrees.\n# TYPE temperature gauge\ntemperature{{{LABELS}}} 21.5\n" in text


async def test_labels_already_present_on_app_samples(qpext: Qpext, model: Upstream) -> None:
    model.body = (
        b'# TYPE same gauge\nsame{service_name="something",x="1"} 1\n'
        b'# TYPE differs gauge\ndiffers{revision_name="old",x="1"} 1\n'
    )
    _, _, text = await qpext.get()
    assert_valid_exposition(text)
    by_name = {name: labels for name, labels, _ in samples(text)}
    assert by_name["same"] == {
        "x": "1",
        "service_name": "something",
        "configuration_name": "something",
        "revision_name": "something",
    }
    assert by_name["differs"]["exported_revision_name"] == "old"
    assert by_name["differs"]["revision_name"] == "something"


async def test_reserved_names_from_the_app_are_dropped(qpext: Qpext, model: Upstream) -> None:
    model.body = b'# TYPE qpext_scrape_up gauge\nqpext_scrape_up{target="app"} 5\n'
    _, _, text = await qpext.get()
    assert_valid_exposition(text)
    assert 'qpext_scrape_up{target="app"} 1\n' in text
    assert dropped(text, "reserved_name") == 1


async def test_output_is_deterministic(qpext: Qpext, model: Upstream) -> None:
    model.body = b"".join(f"# TYPE f{i} gauge\nf{i} {i}\nu{i}_total 1\n".encode() for i in range(50))
    bodies = [(await qpext.get())[2] for _ in range(2)]
    strip = [[line for line in b.splitlines() if "duration" not in line] for b in bodies]
    assert strip[0] == strip[1]


async def test_unsupported_content_type_is_a_failed_scrape(qpext: Qpext, model: Upstream) -> None:
    model.content_type = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"
    _, _, text = await qpext.get()
    assert 'qpext_scrape_up{target="app"} 0\n' in text


def errors(text: str, reason: str, target: str = "app") -> int:
    prefix = f'qpext_scrape_errors_total{{target="{target}",reason="{reason}"}} '
    return int(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


async def test_oversized_body_fails_the_scrape_with_a_reason(queue_proxy: Upstream, model: Upstream) -> None:
    model.body = b"x 1\n" * 1000
    config = serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port, max_body_bytes=1024)
    async with start_qpext(config) as q:
        _, _, text = await q.get()
        _, _, again = await q.get()
    assert_valid_exposition(text)
    assert text.startswith(queue_proxy.body.decode())
    assert 'qpext_scrape_up{target="app"} 0\n' in text
    assert "x{" not in text
    assert (errors(text, "body_too_large"), errors(again, "body_too_large")) == (1, 2)
    assert errors(again, "timeout") == 0
    assert errors(again, "body_too_large", "queue-proxy") == 0


async def test_openmetrics_bodies_have_a_tighter_limit(queue_proxy: Upstream, model: Upstream) -> None:
    # prometheus-client's parser needs ~20 bytes per byte: OpenMetrics may use 1/16 of the body limit.
    model.content_type = OPENMETRICS
    model.body = b"# TYPE x gauge\n" + b"x 1\n" * 1000 + b"# EOF\n"
    config = serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port, max_body_bytes=32_768)
    async with start_qpext(config) as q:
        _, _, text = await q.get()
    assert 'qpext_scrape_up{target="app"} 0\n' in text
    assert errors(text, "body_too_large") == 1


async def test_client_leaving_stops_the_upstream_scrape(qpext: Qpext, model: Upstream) -> None:
    model.delay = 30.0
    request = asyncio.create_task(qpext.get())
    while not model.requests:
        await asyncio.sleep(0.01)
    request.cancel()
    await asyncio.wait_for(model.cancelled.wait(), 5)
    assert model.cancelled.is_set()


async def test_only_configured_targets_are_reported(queue_proxy: Upstream) -> None:
    async with start_qpext(serverless_config(queue_proxy_port=queue_proxy.port, app_port=None)) as q:
        _, _, text = await q.get()
    assert 'target="app"' not in text
    assert 'qpext_scrape_up{target="queue-proxy"} 1\n' in text


async def test_plain_http_client_sees_valid_body(qpext: Qpext) -> None:
    async with aiohttp.ClientSession() as session, session.get(qpext.url) as resp:
        assert resp.status == 200
        assert_valid_exposition(await resp.text())


async def test_small_scrapes_run_side_by_side(qpext: Qpext, model: Upstream) -> None:
    model.delay = 0.5
    answers = await asyncio.gather(*(qpext.get() for _ in range(4)))
    assert all('qpext_scrape_up{target="app"} 1\n' in text for _, _, text in answers)
    assert model.max_active == 4


class _CountingSemaphore(asyncio.Semaphore):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.held = self.peak = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.held += 1
        self.peak = max(self.peak, self.held)
        return True

    def release(self) -> None:
        self.held -= 1
        super().release()


async def test_large_bodies_are_read_two_at_a_time(queue_proxy: Upstream, model: Upstream) -> None:
    model.body = b"".join(b'big_%d{a="%d"} 1\n' % (i % 50, i) for i in range(120_000))
    assert len(model.body) > LARGE_BODY_BYTES
    server = MetricsServer(serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port))
    slots = _CountingSemaphore(MAX_LARGE_SCRAPES)
    server.aggregator._large = slots
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def get() -> str:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    return await resp.text()

            answers = await asyncio.gather(*(get() for _ in range(5)))
    finally:
        await server.stop()
    assert all('qpext_scrape_up{target="app"} 1\n' in text for text in answers)
    assert slots.peak == MAX_LARGE_SCRAPES
    assert slots.held == 0


# Lines Prometheus rejects a whole scrape for: label values and help that are not UTF-8, a broken label set,
# a line naming no valid metric.
INVALID_LINES = (
    b'# TYPE bad_utf8 gauge\nbad_utf8{pod="\xff\xfe"} 1\n'
    b'# TYPE broken gauge\nbroken{a="1" 2\n'
    b"# HELP bad_help caf\xe9\n# TYPE bad_help gauge\nbad_help 1\n"
    b"garbage\x00 line\n"
)


async def test_invalid_queue_proxy_output_is_dropped_and_counted(
    qpext: Qpext, queue_proxy: Upstream, model: Upstream
) -> None:
    queue_proxy.body = b"# TYPE revision_request_count counter\nrevision_request_count 3\n" + INVALID_LINES
    status, _, text = await qpext.get()
    assert status == 200
    types = assert_valid_exposition(text)
    assert text.startswith("# TYPE revision_request_count counter\nrevision_request_count 3\n")
    assert not {"bad_utf8", "broken", "bad_help"} & set(types)
    assert "garbage" not in text
    assert dropped(text, "malformed", "queue-proxy") == 4
    assert dropped(text, "malformed") == 0
    assert 'qpext_scrape_up{target="queue-proxy"} 1\n' in text
    assert f"my_metric{{{LABELS}}} 0\n" in text


async def test_app_output_that_is_not_utf8_is_dropped(qpext: Qpext, model: Upstream) -> None:
    model.body = b"# TYPE good gauge\ngood 1\n" + INVALID_LINES
    _, _, text = await qpext.get()
    types = assert_valid_exposition(text)
    assert f"good{{{LABELS}}} 1\n" in text
    assert not {"bad_utf8", "broken", "bad_help"} & set(types)
    assert dropped(text, "malformed") == 4


async def test_stopping_answers_a_scrape_in_flight_with_what_has_arrived(
    queue_proxy: Upstream, model: Upstream
) -> None:
    model.delay = 30.0
    server = MetricsServer(serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port))
    port = await server.start()
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/metrics"))
        while not model.requests:
            await asyncio.sleep(0.01)
        await server.stop(grace=0.2)
        async with await request as resp:
            text = await resp.text()
    assert resp.status == 200
    assert_valid_exposition(text)
    assert 'qpext_scrape_up{target="queue-proxy"} 1\n' in text
    assert 'qpext_scrape_up{target="app"} 0\n' in text
    assert errors(text, "shutdown") == 1
    assert errors(text, "timeout") == 0
    # The app's request was given up: its connection closed, which the app sees as a cancellation.
    await asyncio.wait_for(model.cancelled.wait(), 5)
