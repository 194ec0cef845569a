"""qpext checked by the real thing: Debian's Prometheus scrapes it, promtool parses its output.

The "model server" is a real prometheus-client exposition (qpext asks it for text format whatever the
scraper accepts); queue-proxy is a small stand-in serving Knative's request counter, which it increments
for every request it forwards to the model. The prometheus-adapter rule from config/ is rendered as the
adapter renders it and run against this Prometheus.

These tests fail, never skip, when the binaries are missing: run hack/provision-prometheus.sh.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from e2e.localcluster.cluster import free_port
from tests.qpext.conftest import Upstream, serverless_config, start_qpext
from tests.qpext.test_handler import INVALID_LINES

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, POD = "default", "sklearn-iris-predictor-00001-deployment-7d9f8-abcde"
SERVING = ("sklearn-iris-predictor", "sklearn-iris-predictor", "sklearn-iris-predictor-00001")
REQUESTS = 30


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run hack/provision-prometheus.sh")
    return path


@dataclass
class ModelServer:
    port: int
    predictions: Any


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    registry = CollectorRegistry()
    predictions = Counter("request_predict", "Predictions served.", ["model_name"], registry=registry)
    Histogram("request_latency_seconds", "Predict latency.", ["model_name"], registry=registry).labels(
        "sklearn-iris"
    ).observe(0.02)
    Gauge("model_loaded", "Whether the model is loaded.", registry=registry).set(1)
    predictions.labels("sklearn-iris")
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield ModelServer(port, predictions)
    server.shutdown()
    server.server_close()
    thread.join(5)


KNATIVE_LABELS = (
    f'configuration_name="{SERVING[1]}",container_name="queue-proxy",namespace_name="{NAMESPACE}",'
    f'pod_name="{POD}",response_code="200",response_code_class="2xx",revision_name="{SERVING[2]}",'
    f'service_name="{SERVING[0]}"'
)


@dataclass
class QueueProxy:
    port: int
    count: int = 0

    async def metrics(self, request: web.Request) -> web.Response:
        body = (
            "# HELP revision_request_count The number of requests that are routed to queue-proxy\n"
            "# TYPE revision_request_count counter\n"
            f"revision_request_count{{{KNATIVE_LABELS}}} {self.count}\n"
        )
        return web.Response(text=body, content_type="text/plain", charset="utf-8")


@pytest.fixture
async def queue_proxy_double(model_server: ModelServer) -> AsyncIterator[QueueProxy]:
    qp = QueueProxy(port=0)

    async def predict(request: web.Request) -> web.Response:
        qp.count += 1
        model_server.predictions.labels("sklearn-iris").inc()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", qp.metrics)
    app.router.add_post("/predict", predict)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    qp.port = int(runner.addresses[0][1])
    yield qp
    await runner.cleanup()


class Prometheus:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def api(self, path: str, **params: str) -> Any:
        async with self.session.get(
            f"{self.url}/api/v1/{path}", params=params, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            payload = await resp.json()
        assert payload["status"] == "success", payload
        return payload["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=promql)
        return list(data["result"])

    async def wait_for(self, promql: str, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                result = await self.query(promql)
                if result and predicate(result):
                    return result
                await asyncio.sleep(0.5)


@pytest.fixture
async def prometheus(
    tmp_path: Path, queue_proxy_double: QueueProxy, model_server: ModelServer
) -> AsyncIterator[Prometheus]:
    exe = binary("prometheus")
    async with start_qpext(
        serverless_config(
            queue_proxy_port=queue_proxy_double.port,
            app_port=model_server.port,
            serverless_label_values=SERVING,
        )
    ) as qpext:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "qpext",
                    "static_configs": [
                        {
                            "targets": [qpext.url.split("/")[2]],
                            "labels": {"namespace": NAMESPACE, "pod": POD},
                        }
                    ],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        proc = await asyncio.create_subprocess_exec(
            exe,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(30):
                    while True:
                        assert proc.returncode is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                        try:
                            async with session.get(f"http://127.0.0.1:{port}/-/ready") as resp:
                                if resp.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        await asyncio.sleep(0.2)
                yield Prometheus(f"http://127.0.0.1:{port}", session)
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            log.close()


def render_adapter_query(template: str, series: str, matchers: dict[str, str], group_by: str) -> str:
    """Render a metricsQuery the way prometheus-adapter does for one object."""
    label_matchers = ",".join(f'{k}="{v}"' for k, v in matchers.items())
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", label_matchers)
        .replace("<<.GroupBy>>", group_by)
    )


def adapter_rule() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "config/prometheus-adapter/adapter-rules.yaml").read_text()))
    config = yaml.safe_load(docs[0]["data"]["config.yaml"])
    (rule,) = config["rules"]
    return dict(rule)


async def test_prometheus_scrapes_both_sides_and_adapter_rule_yields_request_rate(
    prometheus: Prometheus, queue_proxy_double: QueueProxy
) -> None:
    # Series from both sides, with the serverless labels on the app's, after a clean scrape.
    await prometheus.wait_for('up{job="qpext"}', lambda r: r[0]["value"][1] == "1")
    app = await prometheus.wait_for("request_predict_total", lambda r: True)
    assert app[0]["metric"]["service_name"] == SERVING[0]
    assert app[0]["metric"]["configuration_name"] == SERVING[1]
    assert app[0]["metric"]["revision_name"] == SERVING[2]
    assert app[0]["metric"]["model_name"] == "sklearn-iris"
    await prometheus.wait_for("revision_request_count", lambda r: r[0]["value"][1] == "0")
    for target in ("queue-proxy", "app"):
        await prometheus.wait_for(f'qpext_scrape_up{{target="{target}"}}', lambda r: r[0]["value"][1] == "1")
    metadata = await prometheus.api("metadata")
    types = {name: entries[0]["type"] for name, entries in metadata.items()}
    assert types["revision_request_count"] == "counter"
    assert types["request_predict_total"] == "counter"
    assert types["request_predict_created"] == "gauge"
    assert types["request_latency_seconds"] == "histogram"
    assert types["model_loaded"] == "gauge"
    assert types["qpext_scrape_up"] == "gauge"
    # Let a few zero-valued samples in, then a known number of requests.
    await asyncio.sleep(3)
    async with aiohttp.ClientSession() as session:
        for _ in range(REQUESTS):
            async with session.post(f"http://127.0.0.1:{queue_proxy_double.port}/predict") as resp:
                assert resp.status == 200
    await prometheus.wait_for("revision_request_count", lambda r: r[0]["value"][1] == str(REQUESTS))
    await prometheus.wait_for(
        'request_predict_total{model_name="sklearn-iris"}', lambda r: float(r[0]["value"][1]) == REQUESTS
    )
    await asyncio.sleep(2)

    rule = adapter_rule()
    series = await prometheus.api("series", **{"match[]": rule["seriesQuery"]})
    assert {s["pod"] for s in series} == {POD}
    window = int(re.search(r"\[(\d+)m\]", rule["metricsQuery"]).group(1)) * 60  # type: ignore[union-attr]
    expected = REQUESTS / window
    per_pod = render_adapter_query(
        rule["metricsQuery"], "revision_request_count", {"namespace": NAMESPACE, "pod": POD}, "pod"
    )
    per_namespace = render_adapter_query(
        rule["metricsQuery"], "revision_request_count", {"namespace": NAMESPACE}, "namespace"
    )
    assert per_pod == (
        f'sum(rate(revision_request_count{{namespace="{NAMESPACE}",pod="{POD}"}}[1m])) by (pod)'
    )
    for promql, key, value in ((per_pod, "pod", POD), (per_namespace, "namespace", NAMESPACE)):
        (result,) = await prometheus.query(promql)
        assert result["metric"] == {key: value}
        # rate() extrapolates to the end of the window by at most one scrape interval.
        assert expected * 0.95 <= float(result["value"][1]) <= expected * 1.25, (promql, result)


def promtool_problems(text: str) -> list[str]:
    proc = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_promtool_tells_parse_errors_from_lint_remarks() -> None:
    duplicate = promtool_problems("# TYPE a counter\n# TYPE a counter\na 1\n")
    assert any("error while linting" in p for p in duplicate)
    remarks = promtool_problems("# HELP bad_name x\n# TYPE bad_name counter\nbad_name 1\n")
    assert remarks
    assert not any("error while linting" in p for p in remarks)


async def test_promtool_finds_no_parse_error_in_qpext_output(
    tmp_path: Path, queue_proxy_double: QueueProxy, model_server: ModelServer
) -> None:
    async with start_qpext(
        serverless_config(
            queue_proxy_port=queue_proxy_double.port,
            app_port=model_server.port,
            serverless_label_values=SERVING,
        )
    ) as qpext:
        openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        for accept in (openmetrics, "text/plain;version=0.0.4"):
            status, _, text = await qpext.get({"Accept": accept})
            assert status == 200
            problems = promtool_problems(text)
            assert not [p for p in problems if "error while linting" in p], problems
            # Whatever remains is a lint remark about an upstream metric name, never about qpext's own.
            assert all(not p.startswith("qpext_") for p in problems), problems
            assert "request_predict_total{" in text


async def test_promtool_accepts_qpext_output_when_both_sides_send_invalid_bytes(
    queue_proxy: Upstream, model: Upstream
) -> None:
    """queue-proxy's body used to be passed through unchecked: one bad byte there made the whole scrape
    invalid while qpext_scrape_up said 1."""
    queue_proxy.body = b"# TYPE revision_request_count counter\nrevision_request_count 3\n" + INVALID_LINES
    model.body = b"# TYPE model_loaded gauge\nmodel_loaded 1\n" + INVALID_LINES
    config = serverless_config(queue_proxy_port=queue_proxy.port, app_port=model.port)
    async with start_qpext(config) as q, q.session.get(q.url) as resp:
        raw = await resp.read()
    text = raw.decode("utf-8")
    problems = promtool_problems(text)
    assert not [p for p in problems if "error while linting" in p], problems
    assert "revision_request_count 3\n" in text
    assert "model_loaded{" in text
    assert 'qpext_families_dropped_total{target="queue-proxy",reason="malformed"} 4\n' in text
