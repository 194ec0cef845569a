"""The qpext process: configuration errors at start, and lifetime tied to the queue-proxy child."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2e.localcluster.cluster import free_port
from qpext.config import ConfigError, load_config

FAKE_QUEUE_PROXY = """\
import signal, sys, time
def stop(signum, frame):
    sys.exit(int(sys.argv[1]))
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def qpext_env(**extra: str) -> dict[str, str]:
    ours = ("KSERVE_", "AGGREGATE_", "SERVING_", "QPEXT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGGREGATE_PROMETHEUS_METRICS_PORT": "http"}, "AGGREGATE_PROMETHEUS_METRICS_PORT must be a port"),
        ({"AGGREGATE_PROMETHEUS_METRICS_PORT": "70000"}, "must be a port number"),
        ({"KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "0"}, "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT must"),
        ({"KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH": "metrics"}, "must be a URL path"),
        (
            {"AGGREGATE_PROMETHEUS_METRICS_PORT": "8080", "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "8080"},
            "collides",
        ),
        ({"QPEXT_QUEUE_PROXY_BINARY": "/nonexistent/queue"}, "does not exist"),
        ({"QPEXT_MAX_BODY_BYTES": "1k"}, "QPEXT_MAX_BODY_BYTES must be a number of bytes"),
        ({"QPEXT_MAX_BODY_BYTES": "100"}, "at least 1024"),
    ],
)
def test_invalid_configuration_is_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)
    proc = subprocess.run(
        [sys.executable, "-m", "qpext"], env=qpext_env(**env), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert message.split()[0] in proc.stderr
    assert "Traceback" not in proc.stderr


def test_configuration_from_upstream_env() -> None:
    config = load_config(
        {
            "AGGREGATE_PROMETHEUS_METRICS_PORT": "9088",
            "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "8080",
            "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH": "/stats",
            "SERVING_SERVICE": "s",
            "SERVING_CONFIGURATION": "c",
            "SERVING_REVISION": "r",
        },
        [sys.executable, "-c", "pass"],
    )
    assert (config.listen_port, config.app_port, config.app_path) == (9088, 8080, "/stats")
    assert (config.queue_proxy_port, config.queue_proxy_path) == (9091, "/metrics")
    assert config.serverless_label_values == ("s", "c", "r")
    assert config.child_command == (sys.executable, "-c", "pass")
    assert load_config({"QPEXT_MAX_BODY_BYTES": "2048"}).max_body_bytes == 2048
    unset = load_config({})
    assert (unset.listen_port, unset.app_port, unset.app_path) == (0, None, "/metrics")
    assert unset.child_command == ()


def _start(tmp_path: Path, child_exit: int) -> subprocess.Popen[str]:
    script = tmp_path / "queue.py"
    script.write_text(FAKE_QUEUE_PROXY)
    return subprocess.Popen(
        [sys.executable, "-m", "qpext", sys.executable, str(script), str(child_exit)],
        env=qpext_env(AGGREGATE_PROMETHEUS_METRICS_PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _child_pid(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def test_sigterm_stops_child_and_qpext_promptly(tmp_path: Path) -> None:
    proc = _start(tmp_path, child_exit=0)
    try:
        child = _child_pid(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2) == 0
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    assert "forwarding SIGTERM to queue-proxy" in proc.stderr.read()


def test_exit_code_is_the_childs(tmp_path: Path) -> None:
    proc = _start(tmp_path, child_exit=3)
    try:
        _child_pid(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2) == 3
    finally:
        proc.kill()
        proc.wait()


class _SlowApp(BaseHTTPRequestHandler):
    """A model server whose metrics take APP_DELAY seconds; ``asked`` is set when a scrape arrives."""

    asked = threading.Event()

    def do_GET(self) -> None:
        _SlowApp.asked.set()
        time.sleep(APP_DELAY)
        body = b"# TYPE slow_metric gauge\nslow_metric 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


APP_DELAY = 3.0


def test_sigterm_answers_the_scrape_in_flight_then_exits(tmp_path: Path) -> None:
    """The queue-proxy child exits at once on SIGTERM; a scrape still waiting for the app is answered,
    with the app's series, before qpext exits (it used to be cut off with no answer)."""
    app = ThreadingHTTPServer(("127.0.0.1", 0), _SlowApp)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    script = tmp_path / "queue.py"
    script.write_text(FAKE_QUEUE_PROXY)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qpext", sys.executable, str(script), "0"],
        env=qpext_env(
            AGGREGATE_PROMETHEUS_METRICS_PORT=str(port),
            KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT=str(app.server_address[1]),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _child_pid(proc)
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        answers: list[tuple[int, str]] = []

        def scrape() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"})
            resp = conn.getresponse()
            answers.append((resp.status, resp.read().decode()))

        _wait_listening(port)
        idle.connect()
        scraper = threading.Thread(target=scrape)
        scraper.start()
        assert _SlowApp.asked.wait(20)
        proc.send_signal(signal.SIGTERM)
        scraper.join(30)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        app.shutdown()
        app.server_close()
    ((status, text),) = answers
    assert status == 200
    assert 'slow_metric{service_name="",configuration_name="",revision_name=""} 1\n' in text
    assert 'qpext_scrape_up{target="app"} 1\n' in text


def _wait_listening(port: int) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"qpext does not listen on {port}")


def test_start_up_imports_no_heavy_library() -> None:
    """qpext is a sidecar in every model pod: aiohttp alone cost 17 MiB of its RSS, prometheus-client 12 MiB
    (it is needed only when an app answers in OpenMetrics, and imported then)."""
    probe = (
        "import sys, qpext.__main__, qpext.server, qpext.supervisor\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'prometheus_client', 'yarl')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
