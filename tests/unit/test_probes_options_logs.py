"""Health probes, flag parsing, address parsing and structured logs."""

from __future__ import annotations

import json
import logging
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from manager.errors import ConfigurationError
from manager.healthz import Checks, ping
from manager.httpserver import HttpServer, parse_address
from manager.logs import ContextFilter, JsonFormatter, TextFormatter, log_context
from manager.options import LEADER_ELECTION_ID, parse_options


async def probe_client(checks: Checks) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    app.add_routes(checks.routes())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_readyz_aggregates_checks_with_verbose_exclude_and_subpaths() -> None:
    ready = {"ok": False}

    def cache_sync() -> None:
        if not ready["ok"]:
            raise RuntimeError("caches not synced")

    async def webhook() -> None:
        return None

    checks = Checks("/readyz")
    checks.add("ping", ping)
    checks.add("cache-sync", cache_sync)
    checks.add("webhook", webhook)
    client = await probe_client(checks)
    try:
        r = await client.get("/readyz")
        assert r.status == 500
        body = await r.text()
        assert "[-]cache-sync failed" in body
        assert "[+]ping ok" in body
        assert (await client.get("/readyz?exclude=cache-sync")).status == 200
        assert (await client.get("/readyz/cache-sync")).status == 500
        assert (await client.get("/readyz/ping")).status == 200
        assert (await client.get("/readyz/nope")).status == 404
        ready["ok"] = True
        r = await client.get("/readyz")
        assert (r.status, await r.text()) == (200, "ok")
        r = await client.get("/readyz?verbose")
        assert "[+]webhook ok" in await r.text()
    finally:
        await client.close()


def test_duplicate_check_names_are_rejected() -> None:
    checks = Checks("/healthz")
    checks.add("ping", ping)
    with pytest.raises(ValueError, match="already registered"):
        checks.add("ping", ping)


def test_flags_default_to_kserve_values() -> None:
    o = parse_options([], environ={})
    assert (o.metrics_addr, o.health_probe_addr, o.webhook_port) == (":8080", ":8081", 9443)
    assert o.leader_elect is False
    assert o.leader_election_id == LEADER_ELECTION_ID == "kserve-controller-manager-leader-lock"
    assert (o.namespace, o.leader_election_namespace) == ("kserve", "kserve")
    assert (o.lease_duration, o.renew_deadline, o.retry_period) == (15.0, 10.0, 2.0)
    assert o.graceful_shutdown_timeout == 30.0


def test_pod_namespace_names_the_manager_namespace() -> None:
    o = parse_options(["--leader-elect", "--max-concurrent-reconciles=4"], environ={"POD_NAMESPACE": "ops"})
    assert (o.namespace, o.leader_election_namespace, o.max_concurrent_reconciles) == ("ops", "ops", 4)


@pytest.mark.parametrize(
    "argv", [["--max-concurrent-reconciles=0"], ["--webhook-port=70000"], ["--log-format=xml"]]
)
def test_bad_flags_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_options(argv, environ={})
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "want"),
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:80", ("::1", 80)), ("0", None)],
)
def test_parse_address(text: str, want: tuple[str, int] | None) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["8080", "host:port", ":99999"])
def test_parse_address_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_address(text)


async def test_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = HttpServer("metrics", web.Application(), ("127.0.0.1", busy.getsockname()[1]))
        with pytest.raises(ConfigurationError, match="address already in use"):
            await server.start()


def _record(msg: str) -> logging.LogRecord:
    record = logging.LogRecord("reconciler", logging.INFO, __file__, 1, msg, None, None)
    ContextFilter().filter(record)
    return record


def test_json_logs_carry_context_fields() -> None:
    with log_context(controller="inferenceservice", namespace="ns", name="isvc", reconcile_id="r-1"):
        line = JsonFormatter().format(_record("hello"))
    entry = json.loads(line)
    assert entry["msg"] == "hello"
    assert entry["level"] == "info"
    assert (entry["controller"], entry["namespace"], entry["name"], entry["reconcile_id"]) == (
        "inferenceservice",
        "ns",
        "isvc",
        "r-1",
    )
    assert "controller" not in json.loads(JsonFormatter().format(_record("outside")))


def test_text_logs_append_context() -> None:
    with log_context(controller="c", name="n"):
        line = TextFormatter().format(_record("hi"))
    assert line.endswith("reconciler: hi controller=c name=n")
