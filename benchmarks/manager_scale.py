"""The manager at 10,000 InferenceServices: start-up sync, RSS, and an `inferenceservice-config` fan-out.

Why copies: making 10,000 InferenceServices Ready through the manager and the Knative double takes 11 writes
each plus the double's Deployments, and what is measured here is the steady state, not the creation
(issue 3's `isvc_scale` measures that). So the manager and the double first make two real InferenceServices
Ready, one external and one cluster-local (`networking.knative.dev/visibility`); every object the manager
caches for them (the InferenceService with its status, the Knative Service with the double's status, the
VirtualService, the ExternalName Service, the revision's two Services and Deployment, the revision's pod) is
then copied N times with names and uids substituted and written with the manager's field manager. The
Deployments are scaled to 0 and the pods lose their ownerReferences and pod-template-hash, so that
kube-controller-manager neither makes nor deletes pods. The copies carry the templates' desired-hash
annotation (a hash over names too), so a first manager re-applies each child once; every later start must
settle with zero writes, which the benchmark checks. Managers and the double run from a snapshot of the
source tree, so that edits to the checkout during the run do not reach them.

What is measured, with the manager (`--workers` workers) as its own process:

1. start-up: seconds from the process start to `/readyz` (every informer synced), then until it has
   reconciled every InferenceService once and is quiet; its writes; its RSS and CPU;
2. a change the manager's output does not depend on (`storageInitializer.memoryLimit`, read only by the pod
   webhook) and one that changes the VirtualService of the external ones only (`ingress.ingressGateway`):
   time until every InferenceService was reconciled and the manager is quiet, its requests by verb
   (`rest_client_requests_total`), and the API server's request rates (`apiserver_request_total`, sampled
   every second) during the fan-out;
3. the same ingress change back with the fan-out limit off, and start-ups with the cache transforms off and
   with the runtime's store and cache of BEFORE_COMMIT (`benchmarks.manager_variant`); a start-up with
   the informer of WHOLE_LISTS_COMMIT, which decoded each list whole before storing it (with
   `--startup-only`, the start-ups are all that is measured);
4. memory per cached object by kind (tracemalloc, in this process): as decoded dicts, after the
   controller's transform, and in the runtime's `Store`.

    .venv/bin/python -m benchmarks.manager_scale [--count 10000] [--external 1000] [--workers 4]
        [--startup-only]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import controllers.inferenceservice as isvc_controller
from apis import constants as c
from apis.resources import DEPLOYMENTS, INFERENCE_SERVICES, KNATIVE_SERVICES, VIRTUAL_SERVICES
from benchmarks.isvc_scale import (
    CONFIG_NAMESPACE,
    FIELD_MANAGER,
    Process,
    bounded,
    cpu_seconds,
    ensure_namespace,
    http_get,
    is_ready,
    parse_metrics,
    prepare,
    rss_mib,
    settle,
    start_double,
    start_manager,
)
from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, PODS, SERVICES, Client, Object, Resource, load_client
from manager.errors import ApiError
from manager.informer import LABEL_INDEX, OWNER_INDEX, Store, Transform, label_pairs, owner_uids
from tests.integration.isvc_harness import install_crds, sklearn_isvc

NAMESPACE = "scale"
TEMPLATES = {"external": "tmplext", "local": "tmplloc"}
BEFORE_COMMIT = "9d98d1bbc713a58a742f1df4d883e2111043f51d"
"""The last commit whose runtime stored decoded objects and had no cache transforms (the "before")."""
BEFORE_FILES = ("manager/informer.py", "manager/cache.py")
WHOLE_LISTS_COMMIT = "004f802f0346bea5e1d0bc9b29d3c6bda5567a14"
"""The last commit whose informer decoded each list whole before storing it."""
WHOLE_LISTS_FILES = ("manager/informer.py",)
REPO = Path(__file__).resolve().parent.parent
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
QUIET = 2.0
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink")


# -- templates and copies ---------------------------------------------------------------------------------


@dataclass
class Template:
    """Every object the manager caches for one real InferenceService, as JSON text."""

    name: str
    uids: list[str]
    isvc: str
    ksvc: str
    virtual_service: str
    services: list[str]
    pods: list[str]
    deployments: list[str]


async def make_templates(
    client: Client, cluster: LocalCluster, workdir: Path, workers: int, tree: Path
) -> list[Template]:
    manager = await asyncio.to_thread(start_manager, cluster.kubeconfig_path, workers, workdir, cwd=tree)
    double = start_double(cluster.kubeconfig_path, 4, workdir, cwd=tree)
    try:
        external = sklearn_isvc(NAMESPACE, TEMPLATES["external"])
        local = sklearn_isvc(NAMESPACE, TEMPLATES["local"])
        local["metadata"]["labels"] = {c.KNATIVE_VISIBILITY_LABEL: c.CLUSTER_LOCAL_VISIBILITY}
        for obj in (external, local):
            await client.create(INFERENCE_SERVICES, obj)
        deadline = time.monotonic() + 120
        for name in TEMPLATES.values():
            while not is_ready(await client.get(INFERENCE_SERVICES, name, NAMESPACE)):
                manager.check_alive()
                if time.monotonic() > deadline:
                    sys.exit(f"template {name} not Ready within 120 s; see {manager.log}")
                await asyncio.sleep(0.2)
        await settle(manager)
    finally:
        manager.stop()
        double.stop()
    return [await capture(client, name) for name in TEMPLATES.values()]


async def capture(client: Client, name: str) -> Template:
    isvc = await client.get(INFERENCE_SERVICES, name, NAMESPACE)
    ksvc = await client.get(KNATIVE_SERVICES, f"{name}-predictor", NAMESPACE)
    vs = await client.get(VIRTUAL_SERVICES, name, NAMESPACE)
    services = [
        s
        for s in (await client.list_page(SERVICES, NAMESPACE)).get("items") or []
        if s["metadata"]["name"] == name or s["metadata"]["name"].startswith(f"{name}-")
    ]
    pods = (
        await client.list_page(PODS, NAMESPACE, label_selector=f"{c.INFERENCE_SERVICE_LABEL}={name}")
    ).get("items") or []
    deployments = [
        d
        for d in (await client.list_page(DEPLOYMENTS, NAMESPACE)).get("items") or []
        if d["metadata"]["name"].startswith(f"{name}-")
    ]
    if len(services) < 3 or not pods or not deployments:
        sys.exit(f"{name}: expected its Service, the revision's two Services, a Deployment and a pod")
    for deployment in deployments:
        # Scaled to zero so that kube-controller-manager makes no pods for the copies (and no ReplicaSet
        # adopts the copied pods: they lose their pod-template-hash below).
        deployment.update(apiVersion="apps/v1", kind="Deployment")
        deployment["spec"]["replicas"] = 0
    for svc in services:
        svc.update(apiVersion="v1", kind="Service")
        for key in ("clusterIP", "clusterIPs"):
            svc["spec"].pop(key, None)
    for pod in pods:
        pod.update(apiVersion="v1", kind="Pod")
        # Without its ReplicaSet's pod-template-hash no ReplicaSet adopts (and deletes) the copies.
        pod["metadata"].pop("ownerReferences", None)
        (pod["metadata"].get("labels") or {}).pop("pod-template-hash", None)
        pod["metadata"].pop("generateName", None)
    return Template(
        name=name,
        uids=[isvc["metadata"]["uid"], ksvc["metadata"]["uid"]],
        isvc=json.dumps(isvc),
        ksvc=json.dumps(ksvc),
        virtual_service=json.dumps(vs),
        services=[json.dumps(s) for s in services],
        pods=[json.dumps(p) for p in pods],
        deployments=[json.dumps(d) for d in deployments],
    )


def _copy(text: str, template: Template, name: str, uids: list[str]) -> Object:
    text = text.replace(template.name, name)
    for old, new in zip(template.uids, uids, strict=True):
        text = text.replace(old, new)
    obj: Object = json.loads(text)
    for key in _SERVER_FIELDS:
        obj["metadata"].pop(key, None)
    return obj


async def write_copy(client: Client, template: Template, name: str) -> None:
    """The template's objects under a new name, written in dependency order (owners first)."""
    uids = [template.uids[0], template.uids[1]]
    isvc = _copy(template.isvc, template, name, uids)
    status = isvc.pop("status")
    created = await client.create(INFERENCE_SERVICES, isvc)
    uids[0] = created["metadata"]["uid"]
    await client.replace_status(INFERENCE_SERVICES, dict(created, status=status))
    ksvc = _copy(template.ksvc, template, name, uids)
    ksvc_status = ksvc.pop("status")
    applied = await client.apply(KNATIVE_SERVICES, ksvc, field_manager=FIELD_MANAGER, force=True)
    uids[1] = applied["metadata"]["uid"]
    await client.replace_status(KNATIVE_SERVICES, dict(applied, status=ksvc_status))
    vs = _copy(template.virtual_service, template, name, uids)
    vs.pop("status", None)
    await client.apply(VIRTUAL_SERVICES, vs, field_manager=FIELD_MANAGER, force=True)
    for text in template.services:
        svc = _copy(text, template, name, uids)
        svc.pop("status", None)
        if svc["metadata"]["name"] == name:
            await client.apply(SERVICES, svc, field_manager=FIELD_MANAGER, force=True)
        else:
            await client.create(SERVICES, svc)
    for text in template.deployments:
        deployment = _copy(text, template, name, uids)
        deployment.pop("status", None)
        await client.create(DEPLOYMENTS, deployment)
    for text in template.pods:
        pod = _copy(text, template, name, uids)
        pod.pop("status", None)
        await client.create(PODS, pod)


async def write_copies(
    client: Client, templates: list[Template], count: int, external: int, concurrency: int
) -> float:
    by_kind = {t.name: t for t in templates}

    def job(i: int) -> Callable[[], Awaitable[None]]:
        template = by_kind[TEMPLATES["external"] if i < external else TEMPLATES["local"]]

        async def run() -> None:
            await write_copy(client, template, f"{'e' if i < external else 'l'}{i:05d}")

        return run

    started = time.perf_counter()
    await bounded(concurrency, [job(i) for i in range(count)])
    return time.perf_counter() - started


def snapshot(workdir: Path, name: str, *, before: tuple[str, tuple[str, ...]] | None = None) -> Path:
    """A copy of this source tree to run the manager and the double from, so that edits made to the
    checkout while the benchmark runs do not reach them; with `before` (a commit and files), those files
    are the commit's (the rest unchanged)."""
    tree = workdir / name
    for package in (
        "apis",
        "controllers",
        "manager",
        "reconcilers",
        "webhooks",
        "benchmarks",
        "config",
        "e2e",
    ):
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    if before is None:
        return tree
    commit, files = before
    for path in files:
        old = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:{path}"], check=True, capture_output=True
        ).stdout
        (tree / path).write_bytes(old)
    return tree


# -- measuring ------------------------------------------------------------------------------------------


def manager_counters(manager: Process) -> tuple[Counter[str], int]:
    """The manager's requests by method and its InferenceService reconciles so far."""
    assert manager.metrics_url is not None
    _, text = http_get(manager.metrics_url)
    requests: Counter[str] = Counter()
    reconciles = 0
    for name, labels, value in parse_metrics(text):
        if name == "rest_client_requests_total":
            requests[labels.get("method", "")] += int(value)
        elif name == "controller_runtime_reconcile_total" and labels.get("controller") == "inferenceservice":
            reconciles += int(value)
    return requests, reconciles


def apiserver_requests(cluster: LocalCluster) -> tuple[int, int]:
    """All requests and write requests the API server has answered (long-running watches excluded)."""
    _, body = cluster.request("GET", "/metrics", timeout=30)
    total = writes = 0
    for name, labels, value in parse_metrics(body["message"]):
        if name == "apiserver_request_total" and labels.get("verb") != "WATCH":
            total += int(value)
            if labels.get("verb") in WRITE_VERBS:
                writes += int(value)
    return total, writes


@dataclass
class Rates:
    """API-server request rates sampled once a second over an interval."""

    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def per_second(self) -> tuple[float, float, float, float]:
        """(mean all, peak all, mean writes, peak writes) per second."""
        if len(self.samples) < 2:
            return (0.0, 0.0, 0.0, 0.0)
        steps = [
            ((b[1] - a[1]) / (b[0] - a[0]), (b[2] - a[2]) / (b[0] - a[0]))
            for a, b in zip(self.samples, self.samples[1:], strict=False)
        ]
        span = self.samples[-1][0] - self.samples[0][0]
        first, last = self.samples[0], self.samples[-1]
        return (
            (last[1] - first[1]) / span,
            max(s[0] for s in steps),
            (last[2] - first[2]) / span,
            max(s[1] for s in steps),
        )


@dataclass
class Change:
    label: str
    seconds: float = 0.0
    writes: Counter[str] = field(default_factory=Counter)
    reconciles: int = 0
    rates: Rates = field(default_factory=Rates)
    cpu: float = 0.0
    reads: int = 0


async def wait_all_reconciled(
    manager: Process, cluster: LocalCluster, start: int, count: int, rates: Rates | None = None
) -> float:
    """Until `count` more reconciles happened and then nothing (requests, reconciles, queue) changed for
    QUIET seconds; samples the API server's request counters meanwhile. Returns when it was last busy."""
    deadline = time.monotonic() + 1800
    last: tuple[Counter[str], int, float] | None = None
    busy_at = time.monotonic()
    while True:
        manager.check_alive()
        if rates is not None:
            total, writes = await asyncio.to_thread(apiserver_requests, cluster)
            rates.samples.append((time.monotonic(), total, writes))
        requests, reconciles = await asyncio.to_thread(manager_counters, manager)
        depth = await asyncio.to_thread(manager.queue_depth)
        now = (requests, reconciles, depth)
        if now != last or depth:
            last, busy_at = now, time.monotonic()
        elif reconciles - start >= count and time.monotonic() - busy_at >= QUIET:
            return busy_at
        if time.monotonic() > deadline:
            sys.exit(f"{reconciles - start} of {count} reconciled after 1800 s, not quiet")
        await asyncio.sleep(0.5)


async def change_config(
    client: Client,
    cluster: LocalCluster,
    manager: Process,
    label: str,
    key: str,
    edit: Callable[[Object], None],
    count: int,
) -> Change:
    result = Change(label)
    configmap = await client.get(CONFIGMAPS, c.INFERENCE_SERVICE_CONFIGMAP, CONFIG_NAMESPACE)
    value = json.loads(configmap["data"][key])
    edit(value)
    before, reconciles_before = await asyncio.to_thread(manager_counters, manager)
    cpu_before = cpu_seconds(manager.pid)
    started = time.monotonic()
    await client.patch(
        CONFIGMAPS, c.INFERENCE_SERVICE_CONFIGMAP, {"data": {key: json.dumps(value)}}, CONFIG_NAMESPACE
    )
    busy_at = await wait_all_reconciled(manager, cluster, reconciles_before, count, result.rates)
    result.seconds = busy_at - started
    samples = result.rates.samples
    while len(samples) > 2 and samples[-1][0] > busy_at + 1.0:
        samples.pop()  # the quiet tail is not part of the fan-out
    after, reconciles_after = await asyncio.to_thread(manager_counters, manager)
    result.writes = Counter({m: after[m] - before[m] for m in WRITE_VERBS if after[m] - before[m]})
    result.reads = after["GET"] - before["GET"]
    result.reconciles = reconciles_after - reconciles_before
    result.cpu = cpu_seconds(manager.pid) - cpu_before
    return result


@dataclass
class Startup:
    label: str
    to_ready: float = 0.0
    to_settled: float = 0.0
    writes: Counter[str] = field(default_factory=Counter)
    reconciles: int = 0
    rss: float = 0.0
    rss_peak: float = 0.0
    cpu: float = 0.0


async def start_and_settle(
    cluster: LocalCluster,
    workdir: Path,
    workers: int,
    label: str,
    count: int,
    *,
    tree: Path,
    variant: str | None = None,
) -> tuple[Process, Startup]:
    result = Startup(label)
    entry = ("benchmarks.manager_variant", variant) if variant else ("controllers.main",)
    started = time.monotonic()
    manager = await asyncio.to_thread(
        start_manager, cluster.kubeconfig_path, workers, workdir, entry=entry, ready_timeout=600, cwd=tree
    )
    result.to_ready = time.monotonic() - started
    result.to_settled = await wait_all_reconciled(manager, cluster, 0, count) - started
    requests, result.reconciles = await asyncio.to_thread(manager_counters, manager)
    result.writes = Counter({m: requests[m] for m in WRITE_VERBS if requests[m]})
    result.rss = rss_mib(manager.pid)
    result.rss_peak = rss_mib(manager.pid, "VmHWM")
    result.cpu = cpu_seconds(manager.pid)
    return manager, result


def traced(make: Callable[[], object]) -> int:
    """The bytes that what `make()` returns retains (tracemalloc, after a collection)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = make()
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del kept
    return retained


@dataclass
class KindMemory:
    kind: str
    count: int
    as_dicts: float
    """Bytes per object held as decoded dicts (the store before this change), managedFields dropped."""
    as_dicts_transformed: float
    stored: float
    """Bytes per object in the runtime's Store now: the controller's transform, compact JSON, indexes."""


def decoded(obj: Object) -> Object:
    """A fresh decoding, with its own strings, as a watch event delivers an object."""
    fresh: Object = json.loads(json.dumps(obj))
    return fresh


def shrunk_dicts(objects: list[Object], shrink: Transform) -> list[Object]:
    return [shrink(decoded(obj)) for obj in objects]


async def memory_per_kind(client: Client) -> list[KindMemory]:
    """Per kind: the objects as the informer receives them (managedFields dropped), held as decoded dicts,
    as dicts after the controller's transform, and in the runtime's `Store` (transform, compact JSON and
    its owner and label indexes)."""
    kinds: list[tuple[str, Resource, str | None, Transform | None]] = [
        ("InferenceService", INFERENCE_SERVICES, None, None),
        ("Knative Service", KNATIVE_SERVICES, None, None),
        ("VirtualService", VIRTUAL_SERVICES, None, None),
        ("Service", SERVICES, None, isvc_controller._metadata_unless_ours),
        ("Deployment (Knative's)", DEPLOYMENTS, None, isvc_controller._metadata_unless_ours),
        ("Pod (isvc label)", PODS, c.INFERENCE_SERVICE_LABEL, isvc_controller._pod_read_fields),
    ]
    out = []
    for label, resource, selector, transform in kinds:
        objects = (await client.list_collection(resource, NAMESPACE, label_selector=selector)).items
        for obj in objects:
            obj["metadata"].pop("managedFields", None)
        shrink: Transform = transform or (lambda obj: obj)

        def store(objs: list[Object] = objects, shrink: Transform = shrink) -> Store:
            kept = Store({OWNER_INDEX: owner_uids, LABEL_INDEX: label_pairs})
            for obj in objs:
                kept.put(shrink(decoded(obj)))
            return kept

        n = max(1, len(objects))
        out.append(
            KindMemory(
                label,
                len(objects),
                traced(functools.partial(shrunk_dicts, objects, lambda obj: obj)) / n,
                traced(functools.partial(shrunk_dicts, objects, shrink)) / n,
                traced(store) / n,
            )
        )
    return out


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Report:
    count: int
    external: int
    workers: int
    create_seconds: float = 0.0
    startups: list[Startup] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    kinds: list[KindMemory] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)


async def main_async(args: argparse.Namespace, cluster: LocalCluster, workdir: Path) -> Report:
    await asyncio.to_thread(install_crds, cluster.kubeconfig_path)
    client = await load_client(str(cluster.kubeconfig_path), connection_pool=max(64, args.concurrency * 2))
    report = Report(args.count, args.external, args.workers)
    try:
        await prepare(client)
        await ensure_namespace(client, NAMESPACE)
        tree = await asyncio.to_thread(snapshot, workdir, "tree")
        before = await asyncio.to_thread(
            snapshot, workdir, "before-tree", before=(BEFORE_COMMIT, BEFORE_FILES)
        )
        whole_lists = await asyncio.to_thread(
            snapshot, workdir, "whole-lists-tree", before=(WHOLE_LISTS_COMMIT, WHOLE_LISTS_FILES)
        )
        templates = await make_templates(client, cluster, workdir, args.workers, tree)
        progress("templates captured; writing copies")
        report.create_seconds = await write_copies(
            client, templates, args.count, args.external, args.concurrency
        )
        for label, resource in (
            ("isvc", INFERENCE_SERVICES),
            ("ksvc", KNATIVE_SERVICES),
            ("VirtualService", VIRTUAL_SERVICES),
            ("Service", SERVICES),
            ("Deployment", DEPLOYMENTS),
            ("Pod", PODS),
        ):
            report.objects[label] = len((await client.list_page(resource, NAMESPACE)).get("items") or [])
        progress(f"{args.count} copies in {report.create_seconds:.0f} s: {report.objects}")
        total = args.count + len(TEMPLATES)

        # The copies carry the templates' desired-hash annotations (a hash over the desired object, names
        # included), so a first manager re-applies each child once; from then on they are its own.
        manager, startup = await start_and_settle(
            cluster, workdir, args.workers, "first start over the copies", total, tree=tree
        )
        manager.stop()
        report.startups.append(startup)
        progress(f"first start: settled {startup.to_settled:.1f} s, writes {dict(startup.writes)}")
        manager, startup = await start_and_settle(
            cluster, workdir, args.workers, "fan-out limit on", total, tree=tree
        )
        report.startups.append(startup)
        progress(f"start-up: ready {startup.to_ready:.1f} s, settled {startup.to_settled:.1f} s")
        if startup.writes:
            sys.exit(f"the copies are not a steady state: the manager wrote {dict(startup.writes)}")

        async def whole_lists_startup() -> None:
            label = f"informer of {WHOLE_LISTS_COMMIT[:7]} (each list decoded whole)"
            started, result = await start_and_settle(
                cluster, workdir, args.workers, label, total, tree=whole_lists
            )
            started.stop()
            report.startups.append(result)

        if args.startup_only:
            manager.stop()
            await whole_lists_startup()
            return report
        try:

            def memory(value: Object) -> None:
                value["memoryLimit"] = "2Gi" if value.get("memoryLimit") != "2Gi" else "1Gi"

            def gateway(value: Object) -> None:
                old, new = "knative-serving/knative-ingress-gateway", "knative-serving/kserve-ingress-gateway"
                value["ingressGateway"] = new if value.get("ingressGateway") == old else old

            report.changes.append(
                await change_config(
                    client,
                    cluster,
                    manager,
                    "storageInitializer.memoryLimit (affects none)",
                    "storageInitializer",
                    memory,
                    total,
                )
            )
            progress(f"change 1: {report.changes[-1].seconds:.1f} s")
            report.changes.append(
                await change_config(
                    client,
                    cluster,
                    manager,
                    f"ingress.ingressGateway (affects the {args.external + 1}"
                    " external ones), fan-out limit on",
                    "ingress",
                    gateway,
                    total,
                )
            )
            progress(f"change 2: {report.changes[-1].seconds:.1f} s")
        finally:
            manager.stop()
        manager, startup = await start_and_settle(
            cluster, workdir, args.workers, "fan-out limit off", total, tree=tree, variant="no-fanout-limit"
        )
        report.startups.append(startup)
        try:
            report.changes.append(
                await change_config(
                    client,
                    cluster,
                    manager,
                    "ingress.ingressGateway back, fan-out limit off",
                    "ingress",
                    gateway,
                    total,
                )
            )
        finally:
            manager.stop()
        manager, startup = await start_and_settle(
            cluster,
            workdir,
            args.workers,
            "cache transforms off",
            total,
            tree=tree,
            variant="no-cache-transforms",
        )
        manager.stop()
        report.startups.append(startup)
        manager, startup = await start_and_settle(
            cluster,
            workdir,
            args.workers,
            f"before: runtime of {BEFORE_COMMIT[:7]} (decoded dicts, no transforms)",
            total,
            variant="no-cache-transforms",
            tree=before,
        )
        manager.stop()
        report.startups.append(startup)
        await whole_lists_startup()
        report.kinds = await memory_per_kind(client)
        return report
    except ApiError as exc:
        sys.exit(f"API error: {exc}")
    finally:
        await client.close()


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_tables(r: Report, load: str) -> None:
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, {load}")
    print()
    print(
        f"{r.count:,} copies ({r.external:,} external, the rest cluster-local) + 2 templates, written in"
        f" {r.create_seconds:.0f} s; objects in the namespace: "
        + ", ".join(f"{k} {v:,}" for k, v in r.objects.items())
    )
    print()
    print(
        "| manager start | to /readyz (caches synced) | to settled (every isvc reconciled once) | reconciles"
        " | writes | manager CPU | manager RSS | manager peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in r.startups:
        writes = ", ".join(f"{m} {v}" for m, v in sorted(s.writes.items())) or "0"
        print(
            f"| {s.label} | {s.to_ready:.1f} s | {s.to_settled:.1f} s | {s.reconciles:,} | {writes}"
            f" | {s.cpu:.1f} s | {s.rss:.0f} MiB ({s.rss * 1.048576:.0f} MB)"
            f" | {s.rss_peak:.0f} MiB ({s.rss_peak * 1.048576:.0f} MB) |"
        )
    if not r.changes:
        return
    print()
    print(
        "| config change | time until all reconciled | reconciles | manager writes by verb | manager GETs"
        " | API server req/s mean (peak) | of which writes/s mean (peak) | manager CPU |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for ch in r.changes:
        mean, peak, wmean, wpeak = ch.rates.per_second()
        writes = ", ".join(f"{m} {v:,}" for m, v in sorted(ch.writes.items())) or "**0**"
        print(
            f"| {ch.label} | {ch.seconds:.1f} s | {ch.reconciles:,} | {writes} | {ch.reads}"
            f" | {mean:.0f} ({peak:.0f}) | {wmean:.0f} ({wpeak:.0f}) | {ch.cpu:.1f} s |"
        )
    print()
    print(
        "| kind | cached objects | as decoded dicts (before) | dicts after the controller's transform"
        " | stored now (transform, compact JSON, indexes) | total stored now |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for k in r.kinds:
        print(
            f"| {k.kind} | {k.count:,} | {k.as_dicts / 1024:.1f} KiB"
            f" | {k.as_dicts_transformed / 1024:.1f} KiB | {k.stored / 1024:.1f} KiB"
            f" | {k.count * k.stored / 2**20:.0f} MiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="InferenceServices to copy [10000]")
    parser.add_argument("--external", type=int, default=1_000, help="of which external [1000]")
    parser.add_argument("--workers", type=int, default=4, help="manager workers [4, as config/manager]")
    parser.add_argument("--concurrency", type=int, default=48, help="copy writes in flight [48]")
    parser.add_argument(
        "--startup-only",
        action="store_true",
        help="only the start-ups of this tree and of the informer that decoded lists whole",
    )
    args = parser.parse_args()
    # A SIGTERM ends the run like Ctrl-C: the cluster and the processes it started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix="manager-scale-") as tmp,
        LocalCluster(controller_manager=True) as cluster,
    ):
        started = time.perf_counter()
        report = asyncio.run(main_async(args, cluster, Path(tmp)))
        wall = time.perf_counter() - started
        load = f"load average {os.getloadavg()[0]:.1f} at the end, wall time {wall:.0f} s"
        print_tables(report, load)


if __name__ == "__main__":
    main()
