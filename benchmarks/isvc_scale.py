"""InferenceService scale benchmark: N created at once, time until all Ready, writes per object, the floor.

Why a floor: the API server and etcd on this machine bound how fast any controller can go, so a time alone
says little. The floor is the same API writes, per InferenceService and in the same order, replayed by a
bare async client (`manager.client.Client`) at the same concurrency against the same cluster, with no
controller logic, no cache and no watch latency. The ratio real/floor is what the controller's own
overhead costs.

What runs: a local control plane (etcd, kube-apiserver, kube-controller-manager), the manager
(`python -m controllers.main`) and the Knative Serving double (`python -m e2e.knative_double`) as separate
processes, so their RSS and CPU are their own. Per `--max-concurrent-reconciles` value (one round each):

1. start both processes, wait until the manager is ready and idle (a restarted manager re-reads the
   InferenceServices of earlier rounds; that must settle with zero writes first);
2. create N InferenceServices in a fresh namespace with `--concurrency` requests in flight, and time
   until all are Ready (watched through an informer in this process);
3. wait until the manager stops writing; count its writes from its own `/metrics`
   (`rest_client_requests_total` by method) and the write mix by resource from the API server's
   `apiserver_request_total` (the double's writes are told apart by resource: ksvc status, Pods, its
   revision-history ConfigMaps); read both processes' RSS and CPU seconds;
4. stop both processes, then replay the floor for N fresh names: per InferenceService, one chain of the
   same writes in dependency order (create, finalizer PATCH, ksvc apply, the double's Pod, ConfigMap and
   ksvc status, status PUTs, VirtualService and Service apply, events), `--concurrency` chains at once,
   bodies taken from one real InferenceService and its children with names and uids substituted. The
   floor namespace is then deleted so later rounds do not see it.

The floor includes the InferenceService creates and the double's writes because they are on the real
run's critical path too; a second column gives the manager's writes alone.

Rounds run in order, and each keeps its InferenceServices, so round k's manager caches k*N of them: the
RSS "with 1,000 cached" is the round where the cluster holds 1,000.

    .venv/bin/python -m benchmarks.isvc_scale [--count 500] [--concurrency 32] [--workers 1,4,16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from apis.resources import CLUSTER_SERVING_RUNTIMES, INFERENCE_SERVICES, KNATIVE_SERVICES, VIRTUAL_SERVICES
from e2e.localcluster.cluster import LocalCluster, free_port
from manager.client import (
    CONFIGMAPS,
    EVENTS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICES,
    Client,
    Object,
    PatchType,
    load_client,
)
from manager.errors import AlreadyExists, ApiError, NotFound
from manager.informer import Informer
from tests.integration.isvc_harness import SKLEARN_RUNTIME, config_data, install_crds, sklearn_isvc

CONFIG_NAMESPACE = "kserve"
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
FIELD_MANAGER = "kserve-manager"
SETTLE_QUIET = 2.0
READY_TIMEOUT = 600.0

# (verb, group, resource, subresource) of apiserver_request_total -> who makes that write.
Kind = tuple[str, str, str, str]
MANAGER_KINDS: dict[Kind, str] = {
    ("PATCH", "serving.kserve.io", "inferenceservices", ""): "isvc finalizer PATCH",
    ("PUT", "serving.kserve.io", "inferenceservices", "status"): "isvc status PUT",
    ("APPLY", "serving.knative.dev", "services", ""): "ksvc apply",
    ("PATCH", "serving.knative.dev", "services", ""): "ksvc apply",
    ("APPLY", "networking.istio.io", "virtualservices", ""): "VirtualService apply",
    ("PATCH", "networking.istio.io", "virtualservices", ""): "VirtualService apply",
    ("APPLY", "", "services", ""): "Service apply",
    ("PATCH", "", "services", ""): "Service apply",
    ("POST", "", "events", ""): "event POST",
    ("PATCH", "", "events", ""): "event PATCH",
}
DOUBLE_KINDS: dict[Kind, str] = {
    ("POST", "", "pods", ""): "Pod POST",
    ("POST", "", "configmaps", ""): "ConfigMap POST",
    ("PUT", "", "configmaps", ""): "ConfigMap PUT",
    ("PUT", "serving.knative.dev", "services", "status"): "ksvc status PUT",
}
CREATE_KIND = "isvc POST"
# Dependency order of one InferenceService's writes in the real run; the floor replays them in this order.
CHAIN_ORDER = (
    CREATE_KIND,
    "isvc finalizer PATCH",
    "ksvc apply",
    "Pod POST",
    "ConfigMap POST",
    "ConfigMap PUT",
    "ksvc status PUT",
    "VirtualService apply",
    "Service apply",
    "isvc status PUT",
    "event POST",
    "event PATCH",
)
DOUBLE_LABELS = frozenset(DOUBLE_KINDS.values())


# -- measuring processes ----------------------------------------------------------------------------------


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of `pid` now (or its peak, with `field="VmHWM"`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except OSError:
        return 0, ""


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@dataclass
class Process:
    """One of our Python processes (manager or double) with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            sys.exit(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def writes(self) -> Counter[str]:
        """rest_client_requests_total by method, from the process's own /metrics."""
        assert self.metrics_url is not None
        _, text = http_get(self.metrics_url)
        out: Counter[str] = Counter()
        for name, labels, value in parse_metrics(text):
            if name == "rest_client_requests_total":
                out[labels.get("method", "")] += int(value)
        return out

    def queue_depth(self) -> float:
        assert self.metrics_url is not None
        _, text = http_get(self.metrics_url)
        return sum(value for name, _, value in parse_metrics(text) if name == "workqueue_depth")


def spawn(name: str, argv: list[str], workdir: Path, cwd: Path | None = None) -> Process:
    """`python -m <argv>` in `cwd` (the source tree it imports from; default: ours)."""
    log = workdir / f"{name}.log"
    env = dict(os.environ, POD_NAMESPACE=CONFIG_NAMESPACE)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    return Process(name, popen, log)


def start_manager(
    kubeconfig: Path,
    workers: int,
    workdir: Path,
    *,
    entry: tuple[str, ...] = ("controllers.main",),
    ready_timeout: float = 60.0,
    cwd: Path | None = None,
) -> Process:
    """The manager process (`python -m <entry>`), once its /readyz answers 200."""
    metrics, health, webhook = free_port(), free_port(), free_port()
    certs = workdir / "certs"
    certs.mkdir(exist_ok=True)
    proc = spawn(
        f"manager-w{workers}",
        [
            *entry,
            "--kubeconfig", str(kubeconfig),
            f"--metrics-addr=127.0.0.1:{metrics}",
            f"--health-probe-addr=127.0.0.1:{health}",
            f"--webhook-port={webhook}",
            "--webhook-self-signed", "--webhook-cert-ip", "127.0.0.1", "--webhook-host", "127.0.0.1",
            "--webhook-cert-dir", str(certs),
            f"--max-concurrent-reconciles={workers}",
            "--log-level=warning",
        ],
        workdir,
        cwd,
    )  # fmt: skip
    proc.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
    deadline = time.monotonic() + ready_timeout
    while http_get(f"http://127.0.0.1:{health}/readyz", 1.0)[0] != 200:
        proc.check_alive()
        if time.monotonic() > deadline:
            sys.exit(f"manager not ready within {ready_timeout:.0f} s; see {proc.log}")
        time.sleep(0.1)
    return proc


def start_double(kubeconfig: Path, workers: int, workdir: Path, cwd: Path | None = None) -> Process:
    return spawn(
        f"double-w{workers}",
        [
            "e2e.knative_double",
            "--kubeconfig", str(kubeconfig),
            "--revision-readiness=deployment",
            f"--max-concurrent-reconciles={workers}",
            "--log-level=warning",
        ],
        workdir,
        cwd,
    )  # fmt: skip


async def settle(manager: Process, timeout: float = 300.0) -> None:
    """Until the manager's queues are empty and it made no write for SETTLE_QUIET seconds."""
    deadline = time.monotonic() + timeout
    last = await asyncio.to_thread(manager.writes)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        manager.check_alive()
        now, depth = await asyncio.gather(
            asyncio.to_thread(manager.writes), asyncio.to_thread(manager.queue_depth)
        )
        if now != last or depth:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET:
            return
    sys.exit(f"manager did not settle within {timeout}s")


def apiserver_writes(cluster: LocalCluster) -> tuple[Counter[Kind], Counter[Kind]]:
    """Write requests by kind, and of those the ones answered 409 Conflict."""
    _, body = cluster.request("GET", "/metrics", timeout=30)
    out: Counter[Kind] = Counter()
    conflicts: Counter[Kind] = Counter()
    for name, labels, value in parse_metrics(body["message"]):
        if name == "apiserver_request_total" and labels.get("verb") in WRITE_VERBS:
            key = (labels["verb"], labels.get("group", ""), labels["resource"], labels.get("subresource", ""))
            out[key] += int(value)
            if labels.get("code") == "409":
                conflicts[key] += int(value)
    return out, conflicts


# -- the real run -------------------------------------------------------------------------------------


def is_ready(obj: Object) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


async def ensure_namespace(client: Client, name: str) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # The double's Pods need the namespace's service-account token (made by kube-controller-manager).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = await client.list_page(SECRETS, name)
        if any(s.get("type") == "kubernetes.io/service-account-token" for s in page.get("items") or []):
            return
        await asyncio.sleep(0.2)
    sys.exit(f"no service-account token in namespace {name} after 60 s")


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with sem:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def create_and_wait(client: Client, namespace: str, names: list[str], concurrency: int) -> float:
    """Create every InferenceService (bounded concurrency); seconds until the last one is Ready."""
    informer = Informer(client, INFERENCE_SERVICES, namespace)
    informer.start()
    await informer.wait_for_sync(30)

    def create(name: str) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            await client.create(INFERENCE_SERVICES, sklearn_isvc(namespace, name))

        return job

    started = time.perf_counter()
    try:
        await bounded(concurrency, [create(n) for n in names])
        deadline = time.monotonic() + READY_TIMEOUT
        while sum(1 for obj in informer.store if is_ready(obj)) < len(names):
            if time.monotonic() > deadline:
                sys.exit(f"not all InferenceServices Ready within {READY_TIMEOUT}s")
            await asyncio.sleep(0.05)
        return time.perf_counter() - started
    finally:
        await informer.stop()


# -- the floor ------------------------------------------------------------------------------------------


_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink")


def _strip(obj: Object, *, keep_status: bool = False) -> Object:
    out = copy.deepcopy(obj)
    for key in _SERVER_FIELDS:
        out["metadata"].pop(key, None)
    if not keep_status:
        out.pop("status", None)
    return out


@dataclass
class Templates:
    """Bodies of one real InferenceService's writes, as JSON text with its names still in them."""

    namespace: str
    name: str
    isvc_uid: str
    ksvc_uid: str
    isvc_status: str
    ksvc: str
    ksvc_status: str
    virtual_service: str
    service: str
    pod: str
    configmap: str
    event: str


async def capture_templates(client: Client, namespace: str, name: str) -> Templates:
    isvc = await client.get(INFERENCE_SERVICES, name, namespace)
    ksvc = await client.get(KNATIVE_SERVICES, f"{name}-predictor", namespace)
    vs = await client.get(VIRTUAL_SERVICES, name, namespace)
    svc = await client.get(SERVICES, name, namespace)
    pods = await client.list_page(
        PODS, namespace, label_selector=f"serving.knative.dev/service={name}-predictor"
    )
    cm = await client.get(CONFIGMAPS, f"{name}-predictor-knative-double", namespace)
    events = [
        e
        for e in (await client.list_page(EVENTS, namespace)).get("items") or []
        if e["involvedObject"].get("name") == name
    ]
    if not pods.get("items") or not events:
        sys.exit(f"no Pod or no event for {namespace}/{name} to copy")
    pod = _strip(pods["items"][0])
    # The ServiceAccount admission plugin adds the token volume; let it do so again in the floor namespace.
    token = re.compile(r"^default-token-")
    pod["spec"]["volumes"] = [v for v in pod["spec"].get("volumes") or [] if not token.match(v["name"])]
    for container in pod["spec"]["containers"]:
        mounts = container.get("volumeMounts") or []
        container["volumeMounts"] = [m for m in mounts if not token.match(m["name"])]
    pod["spec"].pop("nodeName", None)
    event = _strip(events[0])
    service = _strip(svc)
    for key in ("clusterIP", "clusterIPs"):
        service["spec"].pop(key, None)
    return Templates(
        namespace=namespace,
        name=name,
        isvc_uid=isvc["metadata"]["uid"],
        ksvc_uid=ksvc["metadata"]["uid"],
        isvc_status=json.dumps(isvc["status"]),
        ksvc=json.dumps(_strip(ksvc)),
        ksvc_status=json.dumps(ksvc["status"]),
        virtual_service=json.dumps(_strip(vs)),
        service=json.dumps(service),
        pod=json.dumps(pod),
        configmap=json.dumps(_strip(cm)),
        event=json.dumps(event),
    )


@dataclass
class Chain:
    """One floor InferenceService: its bodies with names substituted, and the objects written so far."""

    namespace: str
    name: str
    bodies: dict[str, str]
    isvc: Object = field(default_factory=dict)
    ksvc: Object = field(default_factory=dict)
    configmap: Object = field(default_factory=dict)
    events: int = 0


def chain_for(templates: Templates, namespace: str, name: str) -> Chain:
    def sub(text: str) -> str:
        return text.replace(templates.namespace, namespace).replace(templates.name, name)

    bodies = {
        "isvc_status": sub(templates.isvc_status),
        "ksvc": sub(templates.ksvc),
        "ksvc_status": sub(templates.ksvc_status),
        "virtual_service": sub(templates.virtual_service),
        "service": sub(templates.service),
        "pod": sub(templates.pod),
        "configmap": sub(templates.configmap),
        "event": sub(templates.event),
    }
    return Chain(namespace, name, bodies)


def _with_uids(chain: Chain, templates: Templates, key: str) -> Object:
    text = chain.bodies[key].replace(templates.isvc_uid, chain.isvc["metadata"]["uid"])
    if chain.ksvc:
        text = text.replace(templates.ksvc_uid, chain.ksvc["metadata"]["uid"])
    body: Object = json.loads(text)
    return body


async def replay(client: Client, templates: Templates, chain: Chain, step: str) -> None:
    """One write of the chain, as the manager, the double or the creating client made it."""
    ns, name = chain.namespace, chain.name
    if step == CREATE_KIND:
        chain.isvc = await client.create(INFERENCE_SERVICES, sklearn_isvc(ns, name))
    elif step == "isvc finalizer PATCH":
        patch = {
            "metadata": {
                "finalizers": ["inferenceservice.finalizers"],
                "resourceVersion": chain.isvc["metadata"]["resourceVersion"],
            }
        }
        chain.isvc = await client.patch(INFERENCE_SERVICES, name, patch, ns)
    elif step == "ksvc apply":
        chain.ksvc = await client.apply(
            KNATIVE_SERVICES, _with_uids(chain, templates, "ksvc"), field_manager=FIELD_MANAGER, force=True
        )
    elif step == "Pod POST":
        # A repeated create (the double retrying) is answered 409 in the real run too.
        with contextlib.suppress(AlreadyExists):
            await client.create(PODS, _with_uids(chain, templates, "pod"), ns)
    elif step == "ConfigMap POST":
        with contextlib.suppress(AlreadyExists):
            chain.configmap = await client.create(CONFIGMAPS, _with_uids(chain, templates, "configmap"), ns)
    elif step == "ConfigMap PUT":
        body = _with_uids(chain, templates, "configmap")
        body["metadata"]["resourceVersion"] = chain.configmap["metadata"]["resourceVersion"]
        chain.configmap = await client.replace(CONFIGMAPS, body)
    elif step == "ksvc status PUT":
        body = dict(chain.ksvc, status=json.loads(chain.bodies["ksvc_status"]))
        chain.ksvc = await client.replace_status(KNATIVE_SERVICES, body)
    elif step == "VirtualService apply":
        await client.apply(
            VIRTUAL_SERVICES,
            _with_uids(chain, templates, "virtual_service"),
            field_manager=FIELD_MANAGER,
            force=True,
        )
    elif step == "Service apply":
        await client.apply(
            SERVICES, _with_uids(chain, templates, "service"), field_manager=FIELD_MANAGER, force=True
        )
    elif step == "isvc status PUT":
        body = dict(chain.isvc, status=json.loads(chain.bodies["isvc_status"]))
        chain.isvc = await client.replace_status(INFERENCE_SERVICES, body)
    elif step == "event POST":
        body = _with_uids(chain, templates, "event")
        chain.events += 1
        body["metadata"]["name"] = f"{name}.floor{chain.events}"
        await client.create(EVENTS, body, ns)
    elif step == "event PATCH":
        await client.patch(
            EVENTS, f"{name}.floor{chain.events}", {"count": 2}, ns, patch_type=PatchType.MERGE
        )
    else:
        raise ValueError(f"no replay for {step}")


def steps_per_chain(mix: Counter[str], chains: int) -> list[list[str]]:
    """Spread the measured totals over the chains (some get one more) in dependency order."""
    plans: list[list[str]] = [[] for _ in range(chains)]
    for step in CHAIN_ORDER:
        total = int(mix.get(step, 0))
        base, extra = divmod(total, chains)
        for i, plan in enumerate(plans):
            plan.extend([step] * (base + (1 if i < extra else 0)))
    return plans


async def run_floor(
    client: Client,
    templates: Templates,
    namespace: str,
    names: list[str],
    mix: Counter[str],
    concurrency: int,
) -> float:
    await ensure_namespace(client, namespace)
    chains = [chain_for(templates, namespace, n) for n in names]
    plans = steps_per_chain(mix, len(chains))

    def job(chain: Chain, plan: list[str]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for step in plan:
                await replay(client, templates, chain, step)

        return run

    started = time.perf_counter()
    await bounded(concurrency, [job(c, p) for c, p in zip(chains, plans, strict=True)])
    return time.perf_counter() - started


async def delete_namespace(client: Client, namespace: str) -> None:
    """Strip the finalizers no manager will remove, delete the namespace and wait until it is gone."""
    page = await client.list_page(INFERENCE_SERVICES, namespace)

    def unfinalize(name: str) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            with contextlib.suppress(NotFound):
                await client.patch(INFERENCE_SERVICES, name, {"metadata": {"finalizers": None}}, namespace)

        return job

    await bounded(32, [unfinalize(o["metadata"]["name"]) for o in page.get("items") or []])
    with contextlib.suppress(NotFound):
        await client.delete(NAMESPACES, namespace)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            await client.get(NAMESPACES, namespace)
        except NotFound:
            return
        await asyncio.sleep(0.5)
    sys.exit(f"namespace {namespace} not gone after 300 s")


# -- rounds ---------------------------------------------------------------------------------------------


@dataclass
class Round:
    workers: int
    count: int
    concurrency: int
    cached_before: int
    seconds: float = 0.0
    floor_all: float = 0.0
    floor_serial: float = 0.0
    serial_writes: int = 0
    manager_writes: Counter[str] = field(default_factory=Counter)
    mix: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    unattributed: Counter[Kind] = field(default_factory=Counter)
    rss_idle: float = 0.0
    rss_after: float = 0.0
    double_rss: float = 0.0
    manager_cpu: float = 0.0
    double_cpu: float = 0.0
    settle_seconds: float = 0.0


async def run_round(
    cluster: LocalCluster, client: Client, workdir: Path, workers: int, args: argparse.Namespace, index: int
) -> Round:
    kubeconfig = cluster.kubeconfig_path
    cached = len((await client.list_page(INFERENCE_SERVICES)).get("items") or [])
    result = Round(workers, args.count, args.concurrency, cached)
    run_ns, floor_ns = f"isvc-run-{index}", f"isvc-floor-{index}"
    await ensure_namespace(client, run_ns)
    entry: tuple[str, ...] = ("controllers.main",)
    if args.profile:
        # cProfile writes its statistics when the manager exits (gracefully, on SIGTERM).
        entry = ("cProfile", "-o", str(args.profile / f"manager-w{workers}.pstats"), "-m", "controllers.main")
    manager = await asyncio.to_thread(start_manager, kubeconfig, workers, workdir, entry=entry)
    double = start_double(kubeconfig, args.double_workers, workdir)
    try:
        t0 = time.perf_counter()
        await settle(manager)
        result.settle_seconds = time.perf_counter() - t0 - SETTLE_QUIET
        result.rss_idle = rss_mib(manager.pid)
        writes_before = await asyncio.to_thread(manager.writes)
        api_before = await asyncio.to_thread(apiserver_writes, cluster)
        cpu_before = cpu_seconds(manager.pid), cpu_seconds(double.pid)
        names = [f"r{index}-{i:05d}" for i in range(args.count)]
        result.seconds = await create_and_wait(client, run_ns, names, args.concurrency)
        await settle(manager)
        result.manager_cpu = cpu_seconds(manager.pid) - cpu_before[0]
        result.double_cpu = cpu_seconds(double.pid) - cpu_before[1]
        result.rss_after = rss_mib(manager.pid)
        result.double_rss = rss_mib(double.pid)
        writes_after = await asyncio.to_thread(manager.writes)
        api_after = await asyncio.to_thread(apiserver_writes, cluster)
        result.manager_writes = Counter(
            {m: writes_after[m] - writes_before[m] for m in WRITE_VERBS if writes_after[m] - writes_before[m]}
        )
        for kind in set(api_after[1]) | set(api_before[1]):
            conflicts = int(api_after[1][kind] - api_before[1][kind])
            label = MANAGER_KINDS.get(kind) or DOUBLE_KINDS.get(kind)
            if conflicts and label is not None:
                result.conflicts[label] += conflicts
        for kind in set(api_after[0]) | set(api_before[0]):
            delta = int(api_after[0][kind] - api_before[0][kind])
            if not delta:
                continue
            label = MANAGER_KINDS.get(kind) or DOUBLE_KINDS.get(kind)
            if kind == ("POST", "serving.kserve.io", "inferenceservices", ""):
                label = CREATE_KIND
            if label is None:
                result.unattributed[kind] += delta
            else:
                result.mix[label] += delta
        templates = await capture_templates(client, run_ns, names[0])
    finally:
        manager.stop()
        double.stop()
    floor_names = [f"f{index}-{i:05d}" for i in range(args.count)]
    result.floor_all = await run_floor(client, templates, floor_ns, floor_names, result.mix, args.concurrency)
    await delete_namespace(client, floor_ns)
    if args.serial_floor:
        # The same chains one at a time: per-write latency without concurrency, the bound of a lone worker.
        serial_ns, serial_names = f"{floor_ns}-serial", [f"s{index}-{i:05d}" for i in range(args.count)]
        result.serial_writes = sum(result.mix.values())
        result.floor_serial = await run_floor(client, templates, serial_ns, serial_names, result.mix, 1)
        await delete_namespace(client, serial_ns)
    return result


async def prepare(client: Client) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONFIG_NAMESPACE}}
        )
    with contextlib.suppress(AlreadyExists):
        await client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "inferenceservice-config", "namespace": CONFIG_NAMESPACE},
                "data": config_data(),
            },
        )
    with contextlib.suppress(AlreadyExists):
        await client.create(CLUSTER_SERVING_RUNTIMES, copy.deepcopy(SKLEARN_RUNTIME))


def print_tables(rounds: list[Round], cluster_load: str) -> None:
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, {cluster_load}")
    print()
    print(
        "| workers | isvcs already cached | created (concurrency) | time to all Ready | floor (all writes)"
        " | ratio | manager writes / isvc | double writes / isvc | manager CPU | double CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        manager_total = sum(r.manager_writes.values())
        double_total = sum(v for k, v in r.mix.items() if k in DOUBLE_LABELS)
        print(
            f"| {r.workers} | {r.cached_before:,} | {r.count} ({r.concurrency}) | {r.seconds:.1f} s"
            f" | {r.floor_all:.1f} s | {r.seconds / r.floor_all:.2f}x | {manager_total / r.count:.2f}"
            f" | {double_total / r.count:.2f} | {r.manager_cpu:.1f} s | {r.double_cpu:.1f} s |"
        )
    print()
    print(
        "Write mix per InferenceService (from apiserver_request_total; manager total from its own /metrics):"
    )
    print()
    labels = [step for step in CHAIN_ORDER if any(r.mix.get(step) for r in rounds)]
    print("| write | by | " + " | ".join(f"workers={r.workers}" for r in rounds) + " |")
    print("|---|---|" + "---:|" * len(rounds))
    for step in labels:
        who = "double" if step in DOUBLE_LABELS else "client" if step == CREATE_KIND else "manager"
        cells = " | ".join(
            f"{r.mix.get(step, 0) / r.count:.2f}"
            + (f" ({r.conflicts[step] / r.count:.2f} were 409)" if r.conflicts.get(step) else "")
            for r in rounds
        )
        print(f"| {step} | {who} | {cells} |")
    cells = " | ".join(
        ", ".join(f"{m} {v / r.count:.2f}" for m, v in sorted(r.manager_writes.items())) for r in rounds
    )
    print(f"| manager's own count by method | manager | {cells} |")
    if any(r.unattributed for r in rounds):
        cells = " | ".join(
            ", ".join(f"{'/'.join(p for p in k if p)} {v}" for k, v in sorted(r.unattributed.items()))
            for r in rounds
        )
        print(f"| other writers (kube-controller-manager, namespaces; not in the floor) | - | {cells} |")
    print()
    print("| workers | manager RSS idle (after start-up sync) | isvcs cached after the round | manager RSS"
          " | double RSS | start-up settle |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        print(
            f"| {r.workers} | {r.rss_idle:.0f} MiB ({r.cached_before:,} cached)"
            f" | {r.cached_before + r.count:,}"
            f" | {r.rss_after:.0f} MiB | {r.double_rss:.0f} MiB | {r.settle_seconds:.1f} s |"
        )


def print_serial(rounds: list[Round]) -> None:
    """What one worker cannot beat: its writes one after another at the measured serial latency."""
    print()
    print("| workers | serial floor (all writes, one chain at a time) | serial latency per write"
          " | manager writes x latency | + manager CPU | time to all Ready |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        if not r.floor_serial:
            continue
        latency = r.floor_serial / r.serial_writes
        manager_total = sum(r.manager_writes.values())
        print(
            f"| {r.workers} | {r.floor_serial:.1f} s | {latency * 1000:.2f} ms"
            f" | {manager_total * latency:.1f} s | {manager_total * latency + r.manager_cpu:.1f} s"
            f" | {r.seconds:.1f} s |"
        )


def print_profiles(directory: Path, top: int = 30) -> None:
    """The functions the manager spent its own time in (tottime), per round."""
    for path in sorted(directory.glob("*.pstats")):
        print()
        print(f"{path.stem}: top {top} by own time (cProfile)")
        print()
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(top)


async def main_async(args: argparse.Namespace, cluster: LocalCluster, workdir: Path) -> list[Round]:
    await asyncio.to_thread(install_crds, cluster.kubeconfig_path)
    client = await load_client(str(cluster.kubeconfig_path), connection_pool=max(64, args.concurrency * 2))
    try:
        await prepare(client)
        rounds = []
        for index, workers in enumerate(args.workers, start=1):
            rounds.append(await run_round(cluster, client, workdir, workers, args, index))
            r = rounds[-1]
            print(
                f"round {index}: workers={workers} ready in {r.seconds:.1f}s, floor {r.floor_all:.1f}s,"
                f" RSS {r.rss_after:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
        return rounds
    except ApiError as exc:
        sys.exit(f"API error: {exc}")
    finally:
        await client.close()


def _workers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"workers must be positive integers: {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=_positive, default=500, help="InferenceServices per round [500]")
    parser.add_argument("--concurrency", type=_positive, default=32, help="client requests in flight [32]")
    parser.add_argument(
        "--workers", type=_workers, default=[1, 4, 16], help="manager workers per round [1,4,16]"
    )
    parser.add_argument("--double-workers", type=_positive, default=16, help="the double's workers [16]")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the manager under cProfile; statistics go to this directory",
    )
    parser.add_argument(
        "--serial-floor",
        action="store_true",
        help="also replay the floor one chain at a time (per-write latency)",
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="isvc-scale-") as tmp,
        LocalCluster(controller_manager=True) as cluster,
    ):
        started = time.perf_counter()
        rounds = asyncio.run(main_async(args, cluster, Path(tmp)))
        wall = time.perf_counter() - started
        load = f"load average {os.getloadavg()[0]:.1f}, benchmark wall time {wall:.0f} s"
        print_tables(rounds, load)
        print_serial(rounds)
        if args.profile:
            print_profiles(args.profile)


if __name__ == "__main__":
    main()
