"""Admission webhooks under a fixed request rate: latency, CPU per admission, and where the CPU goes.

Every pod of an InferenceService waits on `/mutate-pods` (`failurePolicy: Fail`), so its latency is added to
every scale-up, and a burst of pods (a large scale-out, a cluster restart) is limited by its CPU per
admission. The InferenceService defaulting and validating webhooks are measured the same way.

Method:
- Open loop: requests are sent at their scheduled times whether or not earlier ones have been answered, and
  each latency is measured from its scheduled send time, so a server that falls behind shows it in the tail
  instead of slowing the generator down (no coordinated omission). Each phase has a warm-up, then
  `--seconds` measured. Keep-alive connections, a fresh uid per request.
- The server runs in its own process pinned to CPU 1, the load generator (aiohttp, TLS) in this process
  pinned to CPU 0, so neither starves the other on a 2-core machine; both at nice -10 when run as root, so
  that other jobs on the machine disturb them less. TLS 1.2+ on 127.0.0.1 with a freshly
  generated CA.
- `floor`: an aiohttp TLS endpoint that reads the body and returns a fixed AdmissionReview (HTTP + TLS).
- `webhook`: the production `WebhookServer` with the production handlers: `PodMutatorHandler(PodMutator)`
  with the shipped `inferenceservice-config` data (as the informer cache hands it over) and an in-memory
  credential lookup returning a ServiceAccount with one S3 Secret (the production lookup makes two GETs to
  the API server, which is not what this measures), `InferenceServiceDefaulter`, `InferenceServiceValidator`;
  plus `/noop`, a handler that admits at once, sent the pod review: the server's own cost (TLS, HTTP,
  decoding and encoding the review), so `pods - noop` is the pod handler.
- Requests: the AdmissionReview v1 of a typical Knative revision pod (isvc label, storage URI with S3
  credentials, metric aggregation and scraping annotations, kserve-container, queue-proxy with Knative's 25
  env vars, 4 ports and probe; ~5 KB); a CREATE of an sklearn InferenceService as `kubectl apply` sends it
  (last-applied annotation, managedFields) to the defaulter; the defaulted object to the validator.
- "max": after the fixed rates, a closed loop of 8 connections (each sends its next request when the last is
  answered) measures how many admissions one process serves per second, and its CPU per admission there.
- Server CPU from /proc/<pid>/stat over each measured window; "CPU / admission" is that CPU time divided by
  the requests of the window. The generator's CPU share shows it is not the bottleneck; "others on the
  server's CPU" is the busy time of that core not spent by the server (/proc/stat): other processes that
  shared it, which inflate the tails (the measured phases are only clean when it is near 0).
- Stage breakdown: the handlers' stages timed in this process (CPU time, best of 5 rounds), with the
  previous implementation's stages (`copy.deepcopy`, `jsonpatch.make_patch`) for comparison.
- `--profile`: one more pod phase against a server running under cProfile; prints its top functions.
- `--source DIR` runs the servers from another tree (e.g. `git archive <commit> | tar -x -C DIR`), to
  measure a previous version in the same conditions.

    .venv/bin/python -m benchmarks.webhook_latency [--seconds 10] [--rates 200,1000] [--profile]
        [--source DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import cProfile
import io
import json
import os
import pstats
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
POD_PATH = "/mutate-pods"
NOOP_PATH = "/noop"
ISVC_DEFAULTER_PATH = "/mutate-serving-kserve-io-v1beta1-inferenceservice"
ISVC_VALIDATOR_PATH = "/validate-serving-kserve-io-v1beta1-inferenceservice"
SERVER_CPU = 1
CLIENT_CPU = 0
WARMUP_SECONDS = 2.0
REQUEST_TIMEOUT = 10.0
UID_MARKER = b"00000000-0000-0000-0000-000000000000"
SATURATION_CONNECTIONS = 8
PRIORITY = -10
STAGE_ROUNDS = 5


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


def typical_inference_service() -> dict[str, Any]:
    """An sklearn InferenceService as `kubectl apply` creates it (what the defaulter is sent)."""
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sklearn-iris", "namespace": "models"},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://models/sklearn/iris"}
            }
        },
    }
    last_applied = json.dumps(manifest, separators=(",", ":")) + "\n"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "sklearn-iris",
            "namespace": "models",
            "uid": "3c1c7a4e-2f1e-4d5b-9a0e-6b7d8c9e0f12",
            "generation": 1,
            "creationTimestamp": "2026-11-22T10:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            "managedFields": [
                {
                    "manager": "kubectl-client-side-apply",
                    "operation": "Update",
                    "apiVersion": "serving.kserve.io/v1beta1",
                    "time": "2026-11-22T10:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:annotations": {
                                ".": {},
                                "f:kubectl.kubernetes.io/last-applied-configuration": {},
                            }
                        },
                        "f:spec": {
                            ".": {},
                            "f:predictor": {
                                ".": {},
                                "f:model": {
                                    ".": {},
                                    "f:modelFormat": {".": {}, "f:name": {}},
                                    "f:storageUri": {},
                                },
                            },
                        },
                    },
                }
            ],
        },
        "spec": manifest["spec"],
    }


def review(obj: Mapping[str, Any], group: str, kind: str, resource: str, namespace: str = "models") -> bytes:
    """An AdmissionReview v1 CREATE of `obj` (uid: UID_MARKER, replaced per request)."""
    version = "v1beta1" if group else "v1"
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID_MARKER.decode(),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "namespace": namespace,
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
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }
    return json.dumps(body, separators=(",", ":")).encode()


def review_template() -> bytes:
    """The pod review."""
    return review(typical_revision_pod(), "", "Pod", "pods")


def config_data() -> dict[str, str]:
    """The shipped `inferenceservice-config` data."""
    configmap = yaml.safe_load((ROOT / "config" / "configmap" / "inferenceservice.yaml").read_text())
    return dict(configmap["data"])


def isvc_reviews() -> tuple[bytes, bytes]:
    """(defaulter review, validator review): the validator is sent the defaulted InferenceService."""
    from apis.config import InferenceServicesConfig
    from webhooks.inferenceservice import default_inference_service

    isvc = typical_inference_service()
    defaulted = default_inference_service(isvc, config=InferenceServicesConfig.from_configmap(config_data()))
    args = ("serving.kserve.io", "InferenceService", "inferenceservices")
    return review(isvc, *args), review(defaulted, *args)


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


class NoopHandler:
    """Admits at once: what the server costs without a handler."""

    async def handle(self, request: Any) -> Any:
        from webhooks.admission import allowed

        return allowed()


async def serve_webhook(port: int, cert_dir: Path) -> None:
    from webhooks.inferenceservice import InferenceServiceDefaulter, InferenceServiceValidator
    from webhooks.pod_mutator import PodMutator, PodMutatorHandler
    from webhooks.server import WebhookServer

    data = config_data()
    server = WebhookServer(host="127.0.0.1", port=port, cert_dir=cert_dir)
    server.register(POD_PATH, PodMutatorHandler(PodMutator(lambda: data, MemoryLookup())))
    server.register(ISVC_DEFAULTER_PATH, InferenceServiceDefaulter(lambda: data))
    server.register(ISVC_VALIDATOR_PATH, InferenceServiceValidator(lambda: data))
    server.register(NOOP_PATH, NoopHandler())
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
    app.router.add_post(POD_PATH, handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    await asyncio.Event().wait()


def serve(kind: str, port: int, cert_dir: Path, profile: Path | None) -> None:
    """Run a server until SIGTERM; with `profile`, under cProfile, its stats written there on SIGTERM."""
    profiler = cProfile.Profile() if profile is not None else None

    def stop(signum: int, frame: object) -> None:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    main = serve_webhook if kind == "webhook" else serve_floor
    if profiler is not None:
        profiler.enable()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(port, cert_dir))


# --- load generator ---------------------------------------------------------------------------------


@dataclass
class Phase:
    server: str
    path: str
    rate: int
    """Requests per second sent (open loop), or 0: as many as `SATURATION_CONNECTIONS` connections get."""
    sent: int
    latencies: list[float]
    errors: int
    server_cpu: float
    client_cpu: float
    server_cpu_seconds: float
    others_cpu: float
    wall: float

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    @property
    def rate_label(self) -> str:
        return f"{self.rate}" if self.rate else f"max: {self.sent / self.wall:,.0f}"

    @property
    def cpu_per_request_ms(self) -> float:
        return self.server_cpu_seconds / self.sent * 1000 if self.sent else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy_seconds(cpu: int) -> float:
    """Seconds CPU `cpu` was busy (anything but idle and iowait) since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{cpu}":
            ticks = [int(v) for v in values]
            return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


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
    session: aiohttp.ClientSession, url: str, template: bytes, rate: int, seconds: float, expect: bytes
) -> tuple[int, list[float], int]:
    """Send `rate` requests/s for `seconds` at fixed times; latency from each scheduled time.

    An answer that is not HTTP 200 containing `expect` counts as an error.
    """
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
        if not ok or expect not in payload:
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


async def closed_loop(
    session: aiohttp.ClientSession, url: str, template: bytes, seconds: float, expect: bytes
) -> tuple[int, list[float], int]:
    """`SATURATION_CONNECTIONS` clients each sending the next request when the last is answered."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    deadline = loop.time() + seconds

    async def client(number: int) -> None:
        nonlocal errors
        index = 0
        while loop.time() < deadline:
            index += 1
            uid = f"00000000-0000-0000-{number:04d}-{index:012d}".encode()
            body = template.replace(UID_MARKER, uid)
            sent = loop.time()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    payload = await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok, payload = False, b""
            latencies.append(loop.time() - sent)
            if not ok or expect not in payload:
                errors += 1

    await asyncio.gather(*(client(number) for number in range(SATURATION_CONNECTIONS)))
    return len(latencies), latencies, errors


@dataclass(frozen=True)
class Target:
    """One path of a server, the review sent to it, and what a correct answer contains."""

    label: str
    path: str
    body: bytes
    expect: bytes


async def load(
    session: aiohttp.ClientSession, url: str, target: Target, rate: int, seconds: float
) -> tuple[int, list[float], int]:
    """Open loop at `rate`, or closed loop (saturation) with rate 0."""
    if rate:
        return await open_loop(session, url, target.body, rate, seconds, target.expect)
    return await closed_loop(session, url, target.body, seconds, target.expect)


def spawn_server(
    kind: str, port: int, cert_dir: Path, source: Path, profile: Path | None
) -> subprocess.Popen[bytes]:
    """The server process (code from `source`), pinned to its own CPU."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind]
    command += ["--port", str(port), "--cert-dir", str(cert_dir)]
    if profile is not None:
        command += ["--profile-to", str(profile)]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    )
    process = subprocess.Popen(command, cwd=source, env=env)
    os.sched_setaffinity(process.pid, {SERVER_CPU})
    raise_priority(process.pid)
    return process


def raise_priority(pid: int) -> None:
    """Nice -10 (as root), so that other jobs on the machine disturb the measurement less."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, pid, PRIORITY)


async def measure(
    kind: str,
    targets: list[Target],
    cert_dir: Path,
    ca_pem: bytes,
    rates: list[int],
    seconds: float,
    source: Path,
    profile: Path | None = None,
    saturate: bool = True,
) -> list[Phase]:
    port = free_port()
    process = spawn_server(kind, port, cert_dir, source, profile)
    try:
        await wait_listening(port)
        context = ssl.create_default_context(cadata=ca_pem.decode())
        connector = aiohttp.TCPConnector(ssl=context, limit=512)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        phases = []
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for target in targets:
                url = f"https://127.0.0.1:{port}{target.path}"
                for rate in [*rates, 0] if saturate else rates:
                    await load(session, url, target, rate, WARMUP_SECONDS)
                    server_before, client_before = cpu_seconds(process.pid), time.process_time()
                    core_before = core_busy_seconds(SERVER_CPU)
                    wall = time.monotonic()
                    sent, latencies, errors = await load(session, url, target, rate, seconds)
                    wall = time.monotonic() - wall
                    server_used = cpu_seconds(process.pid) - server_before
                    others = (core_busy_seconds(SERVER_CPU) - core_before - server_used) / wall
                    client_cpu = (time.process_time() - client_before) / wall
                    phases.append(
                        Phase(
                            kind,
                            target.label,
                            rate,
                            sent,
                            latencies,
                            errors,
                            server_used / wall,
                            client_cpu,
                            server_used,
                            others,
                            wall,
                        )
                    )
                    print(
                        f"  {kind} {target.label} {phases[-1].rate_label}/s done", file=sys.stderr, flush=True
                    )
        return phases
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
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
        "| server | path | rate (req/s) | sent | errors | p50 (ms) | p99 (ms) | max (ms) | p99 / floor p99 "
        "| server CPU | CPU / admission (ms) | generator CPU | others on the server's CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        shown_ratio = "-"
        if p.rate and p.rate in floor:
            shown_ratio = f"{p.quantile(0.99) / floor[p.rate].quantile(0.99):.2f}x"
        lines.append(
            f"| {p.server} | {p.path} | {p.rate_label} | {p.sent:,} | {p.errors} | {p.quantile(0.5):.2f} "
            f"| {p.quantile(0.99):.2f} | {max(p.latencies, default=float('nan')) * 1000:.1f} | {shown_ratio} "
            f"| {p.server_cpu:.0%} | {p.cpu_per_request_ms:.3f} | {p.client_cpu:.0%} | {p.others_cpu:.0%} |"
        )
    return "\n".join(lines)


# --- stage breakdown (in this process) ---------------------------------------------------------------


def cpu_time_per_call(function: Callable[[], object], calls: int = 2000) -> float:
    """CPU seconds per call: the best of STAGE_ROUNDS rounds of `calls` calls."""
    for _ in range(100):
        function()
    best = float("inf")
    for _ in range(STAGE_ROUNDS):
        start = time.process_time()
        for _ in range(calls):
            function()
        best = min(best, (time.process_time() - start) / calls)
    return best


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the handlers here await nothing real) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine suspended")


def stage_table() -> str:
    """CPU per admission by stage, in this process (the current tree's code)."""
    import jsonpatch

    from webhooks.admission import decode_review, encode_review
    from webhooks.inferenceservice import InferenceServiceDefaulter, InferenceServiceValidator
    from webhooks.injectors.pod import check_pod
    from webhooks.json_patch import copy_json, make_patch
    from webhooks.pod_mutator import PodMutator, PodMutatorHandler

    data = config_data()
    mutator = PodMutator(lambda: data, MemoryLookup())
    pod_handler = PodMutatorHandler(mutator)
    pod_body = review_template()
    defaulter_body, validator_body = isvc_reviews()
    incoming = decode_review(pod_body)
    pod = incoming.request.object
    mutated = run_sync(mutator.mutate(pod, "models"))

    def encode(handler: Any, body: bytes) -> Callable[[], object]:
        request = decode_review(body)
        response = run_sync(handler.handle(request.request))

        def encoded() -> bytes:
            wire = encode_review(request.api_version, response.complete(request.request.uid))
            return json.dumps(wire, separators=(",", ":")).encode()

        return encoded

    def handle(handler: Any, body: bytes) -> Callable[[], object]:
        request = decode_review(body).request
        return lambda: run_sync(handler.handle(request))

    rows: list[tuple[str, str, float]] = []

    def row(webhook: str, stage: str, function: Callable[[], object]) -> float:
        seconds = cpu_time_per_call(function)
        rows.append((webhook, stage, seconds))
        return seconds

    total = row(
        "pods",
        "decode the review (`admission.decode_review`, no snapshot: the handler copies the pod)",
        lambda: decode_review(pod_body, snapshot=False),
    )
    row("pods", "copy the pod (`copy_json`)", lambda: copy_json(pod))
    checked = row("pods", "copy + `check_pod`", lambda: check_pod(copy_json(pod)))
    mutate = cpu_time_per_call(lambda: run_sync(mutator.mutate(pod, "models")))
    rows.append(("pods", "injectors (mutate - copy - check)", mutate - checked))
    row("pods", "JSON Patch (`json_patch.make_patch`)", lambda: make_patch(pod, mutated))
    handled = row("pods", "handler total (`PodMutatorHandler.handle`)", handle(pod_handler, pod_body))
    encoded = row("pods", "encode the response", encode(pod_handler, pod_body))
    rows.append(("pods", "**decode + handler + encode**", total + handled + encoded))
    row("pods (before)", "copy the pod (`copy.deepcopy`)", lambda: copy.deepcopy(pod))
    row(
        "pods (before)",
        "JSON Patch (`jsonpatch.make_patch`)",
        lambda: jsonpatch.make_patch(pod, mutated).patch,
    )
    for label, handler, body in (
        ("isvc defaulter", InferenceServiceDefaulter(lambda: data), defaulter_body),
        ("isvc validator", InferenceServiceValidator(lambda: data), validator_body),
    ):
        decoded = row(label, "decode the review", lambda body=body: decode_review(body))  # type: ignore[misc]
        handled = row(label, "handler", handle(handler, body))
        encoded = row(label, "encode the response", encode(handler, body))
        rows.append((label, "**decode + handler + encode**", decoded + handled + encoded))
    lines = ["| webhook | stage | CPU (ms) |", "|---|---|---:|"]
    lines += [f"| {webhook} | {stage} | {seconds * 1000:.3f} |" for webhook, stage, seconds in rows]
    return "\n".join(lines)


def profile_summary(path: Path, top: int = 20) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- main ---------------------------------------------------------------------------------------------


async def run(
    rates: list[int], seconds: float, source: Path, profile: bool
) -> tuple[list[Phase], str | None]:
    defaulter_body, validator_body = isvc_reviews()
    pod_body = review_template()
    pods = Target("pods", POD_PATH, pod_body, b'"patch"')
    targets = [
        Target("noop", NOOP_PATH, pod_body, b'"allowed":true'),
        pods,
        Target("isvc defaulter", ISVC_DEFAULTER_PATH, defaulter_body, b'"allowed":true'),
        Target("isvc validator", ISVC_VALIDATOR_PATH, validator_body, b'"allowed":true'),
    ]
    floor = Target("-", POD_PATH, pod_body, b'"allowed"')
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        cert_dir = Path(tmp)
        ca_pem = write_certificates(cert_dir)
        phases = await measure("floor", [floor], cert_dir, ca_pem, rates, seconds, source)
        phases += await measure("webhook", targets, cert_dir, ca_pem, rates, seconds, source)
        summary = None
        if profile:
            stats = cert_dir / "server.prof"
            await measure("webhook", [pods], cert_dir, ca_pem, [max(rates)], seconds, source, stats, False)
            summary = profile_summary(stats)
    return phases, summary


def describe(source: Path) -> str:
    head = subprocess.run(
        ["git", "-C", str(source), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return str(source)
    dirty = subprocess.run(["git", "-C", str(source), "diff", "--quiet", "HEAD"], check=False).returncode != 0
    return f"{source} at {head.stdout.strip()}" + (" with uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase [10]")
    parser.add_argument("--rates", default="200,1000", help="comma-separated request rates [200,1000]")
    parser.add_argument("--profile", action="store_true", help="profile the pod webhook at the highest rate")
    parser.add_argument("--source", type=Path, default=ROOT, help="tree to run the servers from [this one]")
    parser.add_argument("--serve", choices=("webhook", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.cert_dir, args.profile_to)
        return 0
    if (os.cpu_count() or 0) < 2:
        print(
            "this benchmark pins the server and the generator to separate CPUs; it needs 2", file=sys.stderr
        )
        return 1
    # SIGTERM unwinds like Ctrl-C, so that the server processes are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    rates = [int(r) for r in args.rates.split(",")]
    source = args.source.resolve()
    load_before = os.getloadavg()[0]
    os.sched_setaffinity(0, {CLIENT_CPU})
    raise_priority(0)
    stages = stage_table() if source == ROOT else None
    phases, summary = asyncio.run(run(rates, args.seconds, source, args.profile))
    load_after = os.getloadavg()[0]
    print(f"Admission webhooks, open loop, {args.seconds:g} s per phase, TLS on loopback")
    print(f"servers from {describe(source)}; load average {load_before:.1f} before, {load_after:.1f} after\n")
    print(table(phases))
    if stages is not None:
        print("\nCPU per admission by stage (this process, best of 5 rounds)\n")
        print(stages)
    if summary is not None:
        print(f"\ncProfile of the pod webhook server at {max(rates)} req/s (wall-clock timer)\n")
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
