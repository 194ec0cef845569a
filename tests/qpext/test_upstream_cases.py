"""KServe's Go qpext unit tests (qpext/cmd/qpext/main_test.go), ported case by case.

Where this project deliberately differs (README "qpext"), the case asserts the better behaviour and says
so: untyped families are converted instead of dropped, values are kept verbatim instead of re-encoded,
and a family exposed by both sides is merged instead of producing an unparsable body.
"""

from __future__ import annotations

import asyncio

import pytest

from qpext.config import SERVERLESS_LABEL_NAMES, serverless_label_values
from qpext.families import COUNTER, GAUGE, Parser, Relabeller, parse_text
from qpext.httpclient import Upstream as UpstreamClient
from qpext.merge import Drops, merge_text
from qpext.scrape import (
    Deadline,
    LargeBodyGate,
    forward_headers,
    parse_scrape_timeout,
    scrape,
    scrape_timeout,
)
from tests.qpext.conftest import Qpext, Upstream, assert_valid_exposition, samples

SOMETHING = ("something", "something", "something")


def open_gate() -> LargeBodyGate:
    return LargeBodyGate(asyncio.Semaphore(1), 1 << 30)


LABELLED = 'service_name="something",configuration_name="something",revision_name="something"'
HISTOGRAM = (
    "# HELP request_predict_seconds Predict latency.\n"
    "# TYPE request_predict_seconds histogram\n"
    'request_predict_seconds_bucket{model_name="sklearn",le="0.005"} 3.0\n'
    'request_predict_seconds_bucket{model_name="sklearn",le="0.01"} 3.0\n'
    'request_predict_seconds_bucket{model_name="sklearn",le="+Inf"} 3.0\n'
    'request_predict_seconds_sum{model_name="sklearn"} 0.0021\n'
    'request_predict_seconds_count{model_name="sklearn"} 3.0\n'
)


def test_get_serverless_label_vals() -> None:
    env = {"SERVING_SERVICE": "svc", "SERVING_CONFIGURATION": "cfg", "SERVING_REVISION": "rev"}
    assert serverless_label_values(env) == ("svc", "cfg", "rev")
    assert serverless_label_values(dict.fromkeys(env, "something")) == SOMETHING


def test_add_serverless_labels() -> None:
    relabeller = Relabeller(SERVERLESS_LABEL_NAMES, ("a", "b", "c"))
    out = relabeller.add(b'test{test_name="test_value"} 1')
    assert out == b'test{test_name="test_value",service_name="a",configuration_name="b",revision_name="c"} 1'


@pytest.mark.parametrize(
    ("value", "valid"), [("1.23", True), ("100", True), ("notvalid", False), ("12.wrong", False)]
)
def test_get_header_timeout(value: str, valid: bool) -> None:
    if valid:
        assert parse_scrape_timeout(value) == float(value)
    else:
        with pytest.raises(ValueError, match="X-Prometheus-Scrape-Timeout-Seconds"):
            parse_scrape_timeout(value)


@pytest.mark.parametrize(
    ("header", "expected_timeout"),
    [("10", 10.0), ("invalid", 10.0)],
    ids=["timeout header parses", "timeout header invalid"],
)
async def test_scrape_headers(model: Upstream, header: str, expected_timeout: float) -> None:
    # Go returned a nil cancel func for an invalid header (no timeout at all); here the default applies.
    assert scrape_timeout({"X-Prometheus-Scrape-Timeout-Seconds": header}) == expected_timeout
    client = UpstreamClient("127.0.0.1", model.port)
    deadline = Deadline(asyncio.get_running_loop().time() + 5)
    headers = forward_headers({"X-Prometheus-Scrape-Timeout-Seconds": header})
    result = await scrape(client, "app", "/metrics", headers, deadline, Parser(), 1 << 20, open_gate())
    client.close()
    assert result.error is None
    assert result.body is not None
    assert [f.runs for f in result.body.families.values()] == [[b"my_metric 0\n"]]
    assert model.requests[0]["X-Prometheus-Scrape-Timeout-Seconds"] == header


async def test_scrape_err() -> None:
    client = UpstreamClient("not-a-real-host.invalid", 80)
    deadline = Deadline(asyncio.get_running_loop().time() + 5)
    result = await scrape(client, "app", "/metrics", {}, deadline, Parser(), 1 << 20, open_gate())
    assert result.body is None
    assert result.error == "connection"
    assert not result.up


@pytest.mark.parametrize(
    ("name", "upstream_type", "ours"),
    [
        ("testing_created", COUNTER, COUNTER),
        ("testing_total", GAUGE, COUNTER),
        ("random_metric", None, GAUGE),
    ],
    ids=["test sanitize counter", "test sanitize gauge", "test not able to convert"],
)
def test_sanitize_metrics(name: str, upstream_type: bytes | None, ours: bytes) -> None:
    # Go made `_total` a gauge (sic) and dropped other untyped families; a `_total` is a counter and
    # dropping data is what section 10 of the reference says not to do.
    del upstream_type
    family = parse_text(f"{name} 4.5\n".encode()).families[name.encode()]
    assert family.kind == ours
    body = f"# TYPE {name} untyped\n{name} 4.5\n".encode()
    out = merge_text(None, body, Relabeller(("a",), ("b",)), Drops())
    assert out == f'# TYPE {name} {ours.decode()}\n{name}{{a="b"}} 4.5\n'.encode()


def test_app_metrics_histogram() -> None:
    """`TestAppMetrics` ("queueproxy metric only", which is really an app-only histogram)."""
    relabeller = Relabeller(SERVERLESS_LABEL_NAMES, SOMETHING)
    out = merge_text(None, HISTOGRAM.encode(), relabeller, Drops()).decode()
    types = assert_valid_exposition(out)
    assert types == {"request_predict_seconds": "histogram"}
    buckets = [labels for name, labels, _ in samples(out) if name == "request_predict_seconds_bucket"]
    assert len(buckets) == 3
    for labels in buckets:
        assert set(labels) == {"model_name", "service_name", "configuration_name", "revision_name", "le"}
    # Values are passed through as the app wrote them (Go re-encoded 3.0 as 3).
    assert f'request_predict_seconds_count{{model_name="sklearn",{LABELLED}}} 3.0\n' in out


async def test_handle_stats_queueproxy_metric_only(
    qpext: Qpext, queue_proxy: Upstream, model: Upstream
) -> None:
    queue_proxy.body = b'# HELP qp_metric A queue-proxy metric.\n# TYPE qp_metric gauge\nqp_metric{a="b"} 1\n'
    model.status = 404
    status, _, text = await qpext.get()
    assert status == 200
    assert text.startswith(queue_proxy.body.decode())


async def test_handle_stats_app_metric_only(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    queue_proxy.status = 500
    status, _, text = await qpext.get()
    assert status == 200
    assert f"my_metric{{{LABELLED}}} 0\n" in text


async def test_handle_stats_app_metric_histogram(qpext: Qpext, model: Upstream) -> None:
    model.body = HISTOGRAM.encode()
    status, _, text = await qpext.get()
    assert status == 200
    assert f'request_predict_seconds_bucket{{model_name="sklearn",le="+Inf",{LABELLED}}} 3.0\n' in text
    assert_valid_exposition(text)


async def test_handle_stats_multiple_metric(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    queue_proxy.body = b"# TYPE my_other_metric counter\nmy_other_metric 0\n"
    status, _, text = await qpext.get()
    assert status == 200
    expected = (
        "# TYPE my_other_metric counter\nmy_other_metric 0\n"
        f"# TYPE my_metric counter\nmy_metric{{{LABELLED}}} 0\n"
    )
    assert text.startswith(expected)
    assert_valid_exposition(text)


async def test_handle_stats_conflict_metric(qpext: Qpext, queue_proxy: Upstream, model: Upstream) -> None:
    # Go emitted the family twice and the body did not parse (expectParseError); here it is merged.
    queue_proxy.body = b"# TYPE my_metric counter\nmy_metric 0\n"
    status, _, text = await qpext.get()
    assert status == 200
    assert text.startswith(f"# TYPE my_metric counter\nmy_metric 0\nmy_metric{{{LABELLED}}} 0\n")
    assert assert_valid_exposition(text)["my_metric"] == "counter"


@pytest.mark.parametrize(
    ("qp_status", "app_status"),
    [(200, 200), (200, 500), (500, 200), (500, 500)],
    ids=["both pass", "queue proxy pass", "app pass", "both fail"],
)
async def test_handle_stats_err(
    qpext: Qpext, queue_proxy: Upstream, model: Upstream, qp_status: int, app_status: int
) -> None:
    queue_proxy.status, model.status = qp_status, app_status
    status, _, text = await qpext.get()
    assert status == 200
    assert ("revision_request_count 3\n" in text) == (qp_status == 200)
    assert (f"my_metric{{{LABELLED}}} 0\n" in text) == (app_status == 200)
    assert f'qpext_scrape_up{{target="queue-proxy"}} {int(qp_status == 200)}\n' in text
    assert f'qpext_scrape_up{{target="app"}} {int(app_status == 200)}\n' in text
