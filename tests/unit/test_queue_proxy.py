"""The queue-proxy stand-in as a real process (stdlib only, `python -I -S`) in front of a real user server.

The user container is an HTTP server in this test process; the stand-in runs exactly as its image runs it.
No cluster is needed. Waits poll with a hang guard; nothing asserts on how long anything took.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.knative_double.queue_proxy import LATENCY_BUCKETS_MS, Breaker, QueueFull, encode_stat
from e2e.localcluster.cluster import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "e2e" / "knative_double" / "queue_proxy.py"
HANG_GUARD = 30.0
KUBELET = {"User-Agent": "kube-probe/1.20", "K-Network-Probe": "queue"}


class App(BaseHTTPRequestHandler):
    """The user container: /hello, /echo (streams the body back), /stream, /slow, /status/<code>."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, code: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        App.seen.append(dict(self.headers.items()))
        if self.path == "/hello":
            self._send(200, b"hi", {"X-App": "yes"})
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/slow"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
            self._send(200, b"late")
        elif self.path.startswith("/status/"):
            self._send(int(self.path.rsplit("/", 1)[1]), b"as asked")
        else:
            self._send(404, b"no")

    def do_POST(self) -> None:
        App.seen.append(dict(self.headers.items()))
        self._send(200, self._body())


@contextlib.contextmanager
def app_server(port: int = 0) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", port), App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(HANG_GUARD)


@dataclass
class QueueProxy:
    proc: subprocess.Popen[bytes]
    port: int
    admin: int
    stats: int
    user_metrics: int
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=HANG_GUARD)
        try:
            conn.request(
                method,
                path,
                body=body,
                headers=dict(headers or {}),
                encode_chunked=not isinstance(body, bytes | None),
            )
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def env_for(port: int, user_port: int, probe: Mapping[str, Any] | None, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SERVING_NAMESPACE": "models",
        "SERVING_SERVICE": "iris-predictor",
        "SERVING_CONFIGURATION": "iris-predictor",
        "SERVING_REVISION": "iris-predictor-00001",
        "SERVING_POD": "iris-predictor-00001-deployment-abc",
        "SERVING_POD_IP": "10.0.0.7",
        "QUEUE_SERVING_PORT": str(port),
        "QUEUE_SERVING_TLS_PORT": "8112",
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "USER_PORT": str(user_port),
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SERVING_REQUEST_METRICS_BACKEND": "prometheus",
        "SERVING_READINESS_PROBE": json.dumps(probe) if probe is not None else "",
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def queue_proxy(
    tmp_path: Path, user_port: int, probe: Mapping[str, Any] | None = None, **extra: str
) -> Iterator[QueueProxy]:
    ports = [free_port() for _ in range(4)]
    env = env_for(ports[0], user_port, probe, **extra)
    env.update(
        QUEUE_PROXY_STANDIN_ADMIN_PORT=str(ports[1]),
        QUEUE_PROXY_STANDIN_METRICS_PORT=str(ports[2]),
        QUEUE_PROXY_STANDIN_USER_METRICS_PORT=str(ports[3]),
    )
    log = tmp_path / f"queue-proxy-{ports[0]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SCRIPT)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    qp = QueueProxy(proc, ports[0], ports[1], ports[2], ports[3], log)
    try:
        until(lambda: _listening(ports[0]) and _listening(ports[2]), "the queue-proxy to listen", qp)
        yield qp
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(HANG_GUARD)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def until(check: Callable[[], Any], what: str, qp: QueueProxy | None = None) -> Any:
    deadline = time.monotonic() + HANG_GUARD
    while True:
        if qp is not None and qp.proc.poll() is not None:
            raise AssertionError(f"queue-proxy exited with {qp.proc.returncode}:\n{qp.output()}")
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


SAMPLE = re.compile(r"^([a-z_]+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def samples(qp: QueueProxy) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition's samples by exact name and labels (prometheus_client's parser would rename
    OpenCensus's `_count` counters), after checking it parses as Prometheus text at all."""
    status, headers, body = qp.request("GET", "/metrics", port=qp.user_metrics)
    assert (status, headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    text = body.decode()
    list(text_string_to_metric_families(text))
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        labels = tuple(sorted(LABEL.findall(match.group(2))))
        out[(match.group(1), labels)] = float(match.group(3))
    return out


def decode_stat(data: bytes) -> dict[int, Any]:
    fields: dict[int, Any] = {}
    i = 0
    while i < len(data):
        key = data[i]
        number, wire = key >> 3, key & 7
        i += 1
        if wire == 1:
            fields[number] = struct.unpack("<d", data[i : i + 8])[0]
            i += 8
        else:
            assert wire == 2
            length = data[i]
            fields[number] = data[i + 1 : i + 1 + length].decode()
            i += 1 + length
    return fields


TCP_PROBE = {"tcpSocket": {"port": 0, "host": "127.0.0.1"}, "successThreshold": 1}


def probe_on(port: int, **timing: int) -> dict[str, Any]:
    return {"tcpSocket": {"port": port, "host": "127.0.0.1"}, "successThreshold": 1, **timing}


def test_requests_are_proxied_with_bodies_streamed_both_ways(tmp_path: Path) -> None:
    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user)) as qp:
        status, headers, body = qp.request("GET", "/hello", headers={"Host": "iris.models.example.com"})
        assert (status, body, headers["X-App"]) == (200, b"hi", "yes")
        assert App.seen[-1]["Host"] == "iris.models.example.com"
        assert App.seen[-1]["X-Forwarded-For"] == "127.0.0.1"

        payload = os.urandom(300_000)
        assert qp.request("POST", "/echo", body=payload)[::2] == (200, payload)
        pieces = iter([b"a" * 70_000, b"b" * 5, b"c" * 100_000])
        status, _, echoed = qp.request("POST", "/echo", body=pieces)
        assert (status, echoed) == (200, b"a" * 70_000 + b"b" * 5 + b"c" * 100_000)
        assert App.seen[-1]["Transfer-Encoding"] == "chunked"

        assert qp.request("GET", "/stream")[::2] == (200, b"one,two,three")
        assert qp.request("GET", "/status/500")[::2] == (500, b"as asked")
        pruned = qp.request(
            "GET", "/hello", headers={"Knative-Serving-Revision": "x", "K-Original-Host": "orig"}
        )
        assert pruned[0] == 200
        assert "Knative-Serving-Revision" not in App.seen[-1]
        assert App.seen[-1]["Host"] == "orig"


def test_an_unreachable_user_container_is_502_and_a_slow_one_504(tmp_path: Path) -> None:
    with queue_proxy(tmp_path, free_port(), None, REVISION_TIMEOUT_SECONDS="1") as qp:
        status, _, body = qp.request("GET", "/hello")
        assert status == 502
        assert body
    with app_server() as user, queue_proxy(tmp_path, user, None, REVISION_TIMEOUT_SECONDS="1") as qp:
        assert qp.request("GET", "/slow/3")[::2] == (504, b"request timeout\n")


def test_the_kubelet_probe_passes_only_once_the_user_container_passes_its_probe(tmp_path: Path) -> None:
    user_port = free_port()
    with queue_proxy(tmp_path, user_port, probe_on(user_port, periodSeconds=1, timeoutSeconds=1)) as qp:
        assert qp.request("GET", "/", headers=KUBELET)[0] == 503
        assert qp.request("GET", "/", headers={"User-Agent": "kube-probe/1.20", "K-Network-Probe": "x"})[
            ::2
        ] == (
            400,
            b"unexpected probe header value: x\n",
        )
        with app_server(user_port):
            assert qp.request("GET", "/", headers=KUBELET)[::2] == (200, b"queue")
            assert (
                qp.request("GET", "/", headers={"K-Kubelet-Probe": "queue", "K-Network-Probe": "queue"})[0]
                == 200
            )
        assert samples(qp) == {}, "probes are not request metrics"


def test_an_aggressive_probe_retries_until_the_user_container_listens(tmp_path: Path) -> None:
    user_port = free_port()
    with queue_proxy(tmp_path, user_port, probe_on(user_port)) as qp:
        results: list[int] = []
        prober = threading.Thread(target=lambda: results.append(qp.request("GET", "/", headers=KUBELET)[0]))
        prober.start()
        with app_server(user_port):
            prober.join(HANG_GUARD)
        assert results == [200]


def test_an_http_readiness_probe_is_sent_to_the_user_container(tmp_path: Path) -> None:
    with app_server() as user:
        probe = {
            "httpGet": {
                "path": "/status/503",
                "port": user,
                "host": "127.0.0.1",
                "scheme": "HTTP",
                "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "queue"}],
            },
            "periodSeconds": 1,
            "timeoutSeconds": 1,
        }
        with queue_proxy(tmp_path, user, probe) as qp:
            assert qp.request("GET", "/", headers=KUBELET)[0] == 503
            assert App.seen[-1]["K-Kubelet-Probe"] == "queue"
        probe["httpGet"]["path"] = "/hello"  # type: ignore[index]
        with queue_proxy(tmp_path, user, probe) as qp:
            assert qp.request("GET", "/", headers=KUBELET)[0] == 200


def test_network_probes_need_a_hash_and_echo_it(tmp_path: Path) -> None:
    with queue_proxy(tmp_path, free_port(), None) as qp:
        status, headers, _ = qp.request(
            "GET", "/", headers={"K-Network-Probe": "probe", "K-Network-Hash": "h1"}
        )
        assert (status, headers["K-Network-Hash"]) == (200, "h1")
        assert qp.request("GET", "/", headers={"K-Network-Probe": "probe"})[0] == 400


def test_request_metrics_count_real_requests_with_knatives_names_and_labels(tmp_path: Path) -> None:
    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user)) as qp:
        for _ in range(3):
            assert qp.request("GET", "/hello")[0] == 200
        assert qp.request("GET", "/status/503", headers={"Knative-Serving-Tag": "prev"})[0] == 503
        qp.request("GET", "/", headers=KUBELET)
        base = {
            "configuration_name": "iris-predictor",
            "container_name": "queue-proxy",
            "namespace_name": "models",
            "pod_name": "iris-predictor-00001-deployment-abc",
            "revision_name": "iris-predictor-00001",
            "service_name": "iris-predictor",
        }

        def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
            return (name, tuple(sorted({**base, **labels}.items())))

        ok = {"response_code": "200", "response_code_class": "2xx"}
        failed = {"response_code": "503", "response_code_class": "5xx"}
        seen = samples(qp)
        assert seen[key("revision_request_count", **ok, route_tag="DISABLED")] == 3
        assert seen[key("revision_request_count", **failed, route_tag="prev")] == 1
        assert seen[key("revision_app_request_count", **ok)] == 3
        assert seen[key("revision_app_request_count", **failed)] == 1
        assert seen[key("revision_request_latencies_count", **ok, route_tag="DISABLED")] == 3
        assert seen[key("revision_request_latencies_bucket", **ok, route_tag="DISABLED", le="+Inf")] == 3
        assert seen[key("revision_app_request_latencies_count", **ok)] == 3
        buckets = {labels for name, labels in seen if name == "revision_app_request_latencies_bucket"}
        assert {dict(b)["le"] for b in buckets} == {str(b) for b in LATENCY_BUCKETS_MS} | {"+Inf"}

        def stat() -> dict[int, Any]:
            status, headers, body = qp.request("GET", "/metrics", port=qp.stats)
            assert (status, headers["Content-Type"]) == (200, "application/protobuf")
            fields = decode_stat(body)
            return fields if fields.get(4) else {}

        qp.request("GET", "/hello")
        fields = until(stat, "a Stat that counts the request", qp)
        assert fields[1] == "iris-predictor-00001-deployment-abc"
        assert fields[4] >= 1
        assert fields[6] > 0


def test_sigterm_finishes_the_request_in_flight_and_exits_zero(tmp_path: Path) -> None:
    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user)) as qp:
        results: list[tuple[int, bytes]] = []
        slow = threading.Thread(target=lambda: results.append(qp.request("GET", "/slow/1")[::2]))
        slow.start()
        until(lambda: any(h.get("Host", "").endswith(str(qp.port)) for h in App.seen[-1:]), "the request", qp)
        qp.proc.send_signal(signal.SIGTERM)
        slow.join(HANG_GUARD)
        assert results == [(200, b"late")]
        assert qp.proc.wait(HANG_GUARD) == 0, qp.output()


def test_only_the_main_thread_takes_the_stop_signals(tmp_path: Path) -> None:
    def blocked(status: str) -> set[int]:
        mask = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1], 16)
        return {signum for signum in (signal.SIGTERM, signal.SIGINT) if mask & (1 << (signum - 1))}

    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user)) as qp:
        assert qp.request("GET", "/", headers=KUBELET)[0] == 200
        tasks = Path(f"/proc/{qp.proc.pid}/task")
        masks = {int(t.name): blocked((t / "status").read_text()) for t in tasks.iterdir()}
        assert len(masks) >= 5, masks  # main, four servers (and the reporter)
        assert masks.pop(qp.proc.pid) == set()
        assert all(m == {signal.SIGTERM, signal.SIGINT} for m in masks.values()), masks
        qp.proc.send_signal(signal.SIGTERM)
        assert qp.proc.wait(HANG_GUARD) == 0, qp.output()


def test_wait_for_drain_without_sigterm_fails_probes_then_resets(tmp_path: Path) -> None:
    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user)) as qp:
        results: list[int] = []
        hook = threading.Thread(
            target=lambda: results.append(qp.request("GET", "/wait-for-drain", port=qp.admin)[0])
        )
        hook.start()
        until(lambda: qp.request("GET", "/", headers=KUBELET)[0] == 503, "draining", qp)
        hook.join(HANG_GUARD)
        assert results == [200]
        assert qp.request("GET", "/", headers=KUBELET)[0] == 200


def test_a_missing_required_variable_exits_one_with_envconfigs_words(tmp_path: Path) -> None:
    env = env_for(free_port(), free_port(), None)
    del env["USER_PORT"]
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT)], env=env, capture_output=True, timeout=HANG_GUARD
    )
    assert done.returncode == 1
    assert b"required key USER_PORT missing value" in done.stderr


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("pod-a", 0.0, 0.0, 0.0, 0.0, 0.0), {1: "pod-a"}),
        (("p", 1.5, 0.0, 2.0, 0.0, 10.0), {1: "p", 2: 1.5, 4: 2.0, 6: 10.0}),
    ],
)
def test_stats_are_encoded_as_the_autoscalers_protobuf(
    values: tuple[Any, ...], expected: dict[int, Any]
) -> None:
    assert decode_stat(encode_stat(*values)) == expected


def test_the_breaker_admits_the_concurrency_queues_ten_times_it_and_refuses_more() -> None:
    breaker = Breaker(1)
    breaker.acquire(timeout=HANG_GUARD)
    waiting = [threading.Thread(target=breaker.acquire, kwargs={"timeout": HANG_GUARD}) for _ in range(10)]
    for thread in waiting:
        thread.start()
    until(lambda: breaker.in_flight == 11, "ten waiting requests")
    with pytest.raises(QueueFull, match="pending request queue full"):
        breaker.acquire(timeout=HANG_GUARD)
    for _ in range(11):
        breaker.release()
        time.sleep(0)
    for thread in waiting:
        thread.join(HANG_GUARD)
    assert breaker.in_flight == 0


def test_with_a_concurrency_limit_the_queue_depth_is_reported(tmp_path: Path) -> None:
    with app_server() as user, queue_proxy(tmp_path, user, probe_on(user), CONTAINER_CONCURRENCY="1") as qp:
        assert qp.request("GET", "/hello")[0] == 200
        depth = [v for (name, _), v in samples(qp).items() if name == "revision_queue_depth"]
        assert depth == [1.0]
