"""Admission latency of `/mutate-pods` under a fixed request rate, against a fixed-response TLS floor.

Every pod of an InferenceService waits on this webhook (`failurePolicy: Fail`), so its latency is added to
every scale-up. The load is open-loop: requests are sent at their scheduled times whether or not earlier
ones have been answered, and each latency is measured from its scheduled send time, so a server that falls
behind shows it in the tail instead of slowing the generator down (no coordinated omission).

Setup, per rate (200 and 1,000 requests/s, `--seconds` each after a warm-up):
- server: a separate process pinned to CPU 1 (the generator is pinned to CPU 0, so neither starves the
  other on a 2-core machine), TLS 1.2+ on 127.0.0.1 with a freshly generated CA and serving certificate;
- `webhook`: the production `WebhookServer` with `PodMutatorHandler(PodMutator(...))`, the shipped
  `inferenceservice-config` data from the provider (as the informer cache would hand it over) and an
  in-memory credential lookup returning a ServiceAccount with one S3 Secret (the production lookup does
  two GETs against the API server, which is not what this measures);
- `floor`: an aiohttp TLS endpoint returning a fixed AdmissionReview (the HTTP + TLS + JSON transport cost);
- the request: an AdmissionReview v1 for a typical Knative revision pod (isvc label, storage URI, metric
  aggregation and scraping annotations, kserve-container, queue-proxy with Knative's env and probes),
  keep-alive connections, a fresh uid per request.
The server's CPU use comes from /proc/<pid>/stat over each measured window.

    .venv/bin/python -m benchmarks.webhook_latency [--seconds 10] [--rates 200,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
PATH = "/mutate-pods"
SERVER_CPU = 1
CLIENT_CPU = 0
WARMUP_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0
UID_MARKER = b"00000000-0000-0000-0000-000000000000"


def typical_revision_pod() -> dict[str, Any]:
    """A Knative revision pod of a sklearn predictor, as the API server sends it for admission."""
    knative_env = [
        ("SERVING_NAMESPACE", "models"),
        ("SERVING_SERVICE", "sklearn-iris-predictor"),
        ("SERVING_CONFIGURATION", "sklearn-iris-predictor"),
        ("SERVING_REVISION", "sklearn-iris-predictor-00001"),
        ("QUEUE_SERVING_PORT", "8012"),
        ("QUEUE_SERVING_TLS_PORT", "8112"),
        ("CONTAINER_CONCURRENCY", "0"),
        ("REVISION_TIMEOUT_SECONDS", "300"),
        ("REVISION_RESPONSE_START_TIMEOUT_SECONDS", "0"),
        ("REVISION_IDLE_TIMEOUT_SECONDS", "0"),
        ("SERVING_LOGGING_LEVEL", ""),
        ("SERVING_REQUEST_LOG_TEMPLATE", ""),
        ("SERVING_ENABLE_REQUEST_LOG", "false"),
        ("SERVING_REQUEST_METRICS_BACKEND", "prometheus"),
        ("TRACING_CONFIG_BACKEND", "none"),
        ("USER_PORT", "8080"),
        ("SYSTEM_NAMESPACE", "knative-serving"),
        ("METRICS_DOMAIN", "knative.dev/internal/serving"),
        ("SERVING_READINESS_PROBE", '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'),
        ("ENABLE_PROFILING", "false"),
        ("SERVING_ENABLE_PROBE_REQUEST_LOG", "false"),
        ("METRICS_COLLECTOR_ADDRESS", ""),
        ("HOST_IP", ""),
        ("ENABLE_HTTP2_AUTO_DETECTION", "false"),
        ("ROOT_CA", ""),
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "sklearn-iris-predictor-00001-deployment-7d9f8c6b5d-",
            "namespace": "models",
            "labels": {
                "app": "sklearn-iris-predictor-00001",
                "component": "predictor",
                "serving.kserve.io/inferenceservice": "sklearn-iris",
                "serving.knative.dev/configuration": "sklearn-iris-predictor",
                "serving.knative.dev/configurationGeneration": "1",
                "serving.knative.dev/revision": "sklearn-iris-predictor-00001",
                "serving.knative.dev/revisionUID": "8e9d6f0c-53a4-4c0e-9e1e-2f1b7f9c1a11",
                "serving.knative.dev/service": "sklearn-iris-predictor",
                "pod-template-hash": "7d9f8c6b5d",
            },
            "annotations": {
                "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
                "autoscaling.knative.dev/min-scale": "1",
                "internal.serving.kserve.io/storage-initializer-sourceuri": "s3://models/sklearn/iris",
                "prometheus.kserve.io/port": "8080",
                "prometheus.kserve.io/path": "/metrics",
                "serving.kserve.io/enable-metric-aggregation": "true",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "serving.knative.dev/creator": "system:serviceaccount:kserve:kserve-controller-manager",
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "sklearn-iris-predictor-00001-deployment-7d9f8c6b5d",
                    "uid": "0f5cbb0a-8d7e-4b38-b1de-4f5e2e7d8c21",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "models",
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 300,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/sklearnserver@sha256:" + "a" * 64,
                    "args": ["--model_name=sklearn-iris", "--model_dir=/mnt/models", "--http_port=8080"],
                    "ports": [{"name": "user-port", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "STORAGE_URI", "value": "s3://models/sklearn/iris"},
                        {"name": "PORT", "value": "8080"},
                        {"name": "K_REVISION", "value": "sklearn-iris-predictor-00001"},
                        {"name": "K_CONFIGURATION", "value": "sklearn-iris-predictor"},
                        {"name": "K_SERVICE", "value": "sklearn-iris-predictor"},
                    ],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi"},
                    },
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "lifecycle": {"preStop": {"httpGet": {"path": "/wait-for-drain", "port": 8022}}},
                },
                {
                    "name": "queue-proxy",
                    "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:" + "b" * 64,
                    "ports": [
                        {"name": "http-queueadm", "containerPort": 8022, "protocol": "TCP"},
                        {"name": "http-autometric", "containerPort": 9090, "protocol": "TCP"},
                        {"name": "http-usermetric", "containerPort": 9091, "protocol": "TCP"},
                        {"name": "queue-port", "containerPort": 8012, "protocol": "TCP"},
                    ],
                    "env": [{"name": k, "value": v} for k, v in knative_env],
                    "readinessProbe": {
                        "httpGet": {
                            "path": "/",
                            "port": 8012,
                            "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
                        },
                        "periodSeconds": 10,
                    },
                    "resources": {"requests": {"cpu": "25m"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                },
            ],
        },
    }


def review_template() -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID_MARKER.decode(),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "models",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5e3b3d61-3c1c-4b0e-8d0a-9b8a2b5f6c7d",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:kube-system",
                    "system:authenticated",
                ],
            },
            "object": typical_revision_pod(),
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(review, separators=(",", ":")).encode()


class MemoryLookup:
    """ServiceAccount `models` listing Secret `s3-creds` with an S3 key pair (no API server involved)."""

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {"metadata": {"name": name, "namespace": namespace}, "secrets": [{"name": "s3-creds"}]}

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": {"serving.kserve.io/s3-endpoint": "minio.models:9000"},
            },
            "data": {"AWS_ACCESS_KEY_ID": "QUtJQQ==", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"},
        }


# --- server processes -------------------------------------------------------------------------------


async def serve_webhook(port: int, cert_dir: Path) -> None:
    from webhooks.pod_mutator import PodMutator, PodMutatorHandler
    from webhooks.server import WebhookServer

    configmap = yaml.safe_load((ROOT / "config" / "configmap" / "inferenceservice.yaml").read_text())
    data = dict(configmap["data"])
    server = WebhookServer(host="127.0.0.1", port=port, cert_dir=cert_dir)
    server.register(PATH, PodMutatorHandler(PodMutator(lambda: dict(data), MemoryLookup())))
    await server.start()
    await asyncio.Event().wait()


async def serve_floor(port: int, cert_dir: Path) -> None:
    answer = json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": UID_MARKER.decode(), "allowed": True, "status": {"code": 200}},
        }
    ).encode()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    app = web.Application(client_max_size=7 * 1024 * 1024)
    app.router.add_post(PATH, handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    await asyncio.Event().wait()


# --- load generator ---------------------------------------------------------------------------------


@dataclass
class Phase:
    server: str
    rate: int
    sent: int
    latencies: list[float]
    errors: int
    server_cpu: float
    client_cpu: float

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


async def open_loop(
    session: aiohttp.ClientSession, url: str, template: bytes, rate: int, seconds: float, check: bool
) -> tuple[int, list[float], int]:
    """Send `rate` requests/s for `seconds` at fixed times; latency from each scheduled time."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        body = template.replace(UID_MARKER, f"00000000-0000-0000-0000-{index:012d}".encode())
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                payload = await response.read()
                ok = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok, payload = False, b""
        latencies.append(loop.time() - scheduled)
        if not ok or (check and b'"patch"' not in payload):
            errors += 1

    start = loop.time() + 0.05
    for index in range(total):
        scheduled = start + index * interval
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(index, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    return total, latencies, errors


def spawn_server(kind: str, port: int, cert_dir: Path) -> subprocess.Popen[bytes]:
    """The server process, pinned to its own CPU."""
    command = [sys.executable, "-m", "benchmarks.webhook_latency", "--serve", kind]
    command += ["--port", str(port), "--cert-dir", str(cert_dir)]
    process = subprocess.Popen(command, cwd=ROOT)
    os.sched_setaffinity(process.pid, {SERVER_CPU})
    return process


async def measure(kind: str, cert_dir: Path, ca_pem: bytes, rates: list[int], seconds: float) -> list[Phase]:
    port = free_port()
    process = spawn_server(kind, port, cert_dir)
    try:
        await wait_listening(port)
        context = ssl.create_default_context(cadata=ca_pem.decode())
        connector = aiohttp.TCPConnector(ssl=context, limit=512)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        url = f"https://127.0.0.1:{port}{PATH}"
        template = review_template()
        phases = []
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for rate in rates:
                await open_loop(session, url, template, rate, WARMUP_SECONDS, check=False)
                server_before, client_before = cpu_seconds(process.pid), time.process_time()
                wall = time.monotonic()
                sent, latencies, errors = await open_loop(
                    session, url, template, rate, seconds, kind == "webhook"
                )
                wall = time.monotonic() - wall
                server_cpu = (cpu_seconds(process.pid) - server_before) / wall
                client_cpu = (time.process_time() - client_before) / wall
                phases.append(Phase(kind, rate, sent, latencies, errors, server_cpu, client_cpu))
        return phases
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_certificates(cert_dir: Path) -> bytes:
    from webhooks.certs import generate_ca, issue_serving_cert, write_cert_dir

    ca = generate_ca("webhook-bench-ca")
    serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    write_cert_dir(cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    return ca.cert_pem


def table(phases: list[Phase]) -> str:
    floor = {p.rate: p for p in phases if p.server == "floor"}
    lines = [
        "| server | rate (req/s) | sent | errors | p50 (ms) | p99 (ms) | max (ms) | p99 / floor p99 "
        "| server CPU | generator CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        ratio = p.quantile(0.99) / floor[p.rate].quantile(0.99) if p.rate in floor else float("nan")
        lines.append(
            f"| {p.server} | {p.rate} | {p.sent} | {p.errors} | {p.quantile(0.5):.2f} "
            f"| {p.quantile(0.99):.2f} | {max(p.latencies) * 1000:.1f} | {ratio:.2f}x "
            f"| {p.server_cpu:.0%} | {p.client_cpu:.0%} |"
        )
    return "\n".join(lines)


async def run(rates: list[int], seconds: float) -> list[Phase]:
    os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        cert_dir = Path(tmp)
        ca_pem = write_certificates(cert_dir)
        phases = await measure("floor", cert_dir, ca_pem, rates, seconds)
        phases += await measure("webhook", cert_dir, ca_pem, rates, seconds)
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate [10]")
    parser.add_argument("--rates", default="200,1000", help="comma-separated request rates [200,1000]")
    parser.add_argument("--serve", choices=("webhook", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve = serve_webhook if args.serve == "webhook" else serve_floor
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.cert_dir))
        return 0
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        print(
            "this benchmark pins the server and the generator to separate CPUs; it needs 2", file=sys.stderr
        )
        return 1
    rates = [int(r) for r in args.rates.split(",")]
    phases = asyncio.run(run(rates, args.seconds))
    print(f"/mutate-pods admission latency, open loop, {args.seconds:g} s per rate, TLS on loopback\n")
    print(table(phases))
    webhook = {p.rate: p for p in phases if p.server == "webhook"}
    if 200 in webhook:
        print(f"\nmean latency at 200 req/s: {statistics.fmean(webhook[200].latencies) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
