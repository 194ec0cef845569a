"""The Knative Serving double on a real kube-apiserver and kube-controller-manager (no kubelet, no scheduler).

The double runs in-process on a `Manager` and is checked through what it writes to the API server. Most tests
use node-less readiness (a revision is Ready once its Deployment's pods exist); the pods-mode tests play the
kubelet and the scheduler themselves: they bind the pods kube-controller-manager created to a fake Node and
write the pod statuses a kubelet would, and kube-controller-manager computes Deployment, ReplicaSet and
Endpoints status from them as on a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from e2e.knative_double import FAIL_REVISION_ANNOTATION, KSVC, KnativeServingDouble, history, install
from e2e.knative_double.double import STATE_SUFFIX
from e2e.knative_double.resources import DEPLOYMENTS, ENDPOINTS
from e2e.knative_double.revision import READINESS_DEPLOYMENT, READINESS_PODS, Readiness
from e2e.localcluster.apply import apply_manifests
from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, NAMESPACES, PODS, SERVICES, Client, Object, Resource, load_client
from manager.errors import AlreadyExists, Conflict, NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from tests.support.process import ManagerProcess

REPO = Path(__file__).resolve().parents[2]
CRDS = [REPO / "config/local/knative-serving-crd.yaml", REPO / "config/local/istio-virtualservice-crd.yaml"]
HANG_GUARD = 30.0
ISVC_LABEL = "serving.kserve.io/inferenceservice"
NAME = "sklearn-iris-predictor"
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
LIMIT_RANGES = Resource("", "v1", "limitranges", "LimitRange")
FAKE_NODE = "knative-double-test-node"


@pytest.fixture(scope="module")
def crds(local_cluster: LocalCluster) -> None:
    apply_manifests(local_cluster.kubeconfig_path, CRDS)


@pytest.fixture
async def admin(local_cluster: LocalCluster, crds: None) -> AsyncIterator[Client]:
    client = await load_client(str(local_cluster.kubeconfig_path))
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def running_double(
    kubeconfig: Path, domain: str = "example.com", readiness: Readiness = READINESS_DEPLOYMENT
) -> AsyncIterator[tuple[KnativeServingDouble, Client]]:
    """A manager with only the double on it, running until the block ends."""
    client = await load_client(str(kubeconfig))
    manager = Manager(
        client,
        ManagerOptions(metrics_addr="0", health_probe_addr="0", graceful_shutdown_timeout=10.0),
        metrics=Metrics(CollectorRegistry()),
    )
    double = install(manager, domain=domain, revision_readiness=readiness)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await asyncio.wait_for(manager.wait_leading(), HANG_GUARD)
        yield double, client
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_GUARD)
        await client.close()


@pytest.fixture
async def double(local_cluster: LocalCluster, crds: None) -> AsyncIterator[KnativeServingDouble]:
    async with running_double(local_cluster.kubeconfig_path) as (running, _):
        yield running


@pytest.fixture
async def pods_double(local_cluster: LocalCluster, crds: None) -> AsyncIterator[KnativeServingDouble]:
    async with running_double(local_cluster.kubeconfig_path, readiness=READINESS_PODS) as (running, _):
        yield running


@pytest.fixture(scope="module")
def fake_node(local_cluster: LocalCluster) -> Iterator[str]:
    """A Node object pods can be bound to (kube-controller-manager's pod GC deletes pods of unknown nodes)."""
    status, body = local_cluster.request(
        "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": FAKE_NODE}}
    )
    assert status in (201, 409), body
    try:
        yield FAKE_NODE
    finally:
        local_cluster.request("DELETE", f"/api/v1/nodes/{FAKE_NODE}")


def ksvc_body(namespace: str, name: str = NAME, image: str = "kserve/sklearnserver:v1") -> Object:
    return {
        "apiVersion": KSVC.api_version,
        "kind": KSVC.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {ISVC_LABEL: "sklearn-iris"}},
        "spec": {
            "template": {
                "metadata": {
                    "labels": {ISVC_LABEL: "sklearn-iris", "component": "predictor"},
                    "annotations": {"autoscaling.knative.dev/min-scale": "1"},
                },
                "spec": {
                    "containerConcurrency": 0,
                    "timeoutSeconds": 300,
                    "containers": [
                        {
                            "name": "kserve-container",
                            "image": image,
                            "args": ["--model_name=sklearn-iris"],
                            "ports": [{"containerPort": 8081, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "1000m", "memory": "2Gi"}},
                        }
                    ],
                },
            }
        },
    }


def condition(obj: Object, type_: str) -> Object:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def verdict(obj: Object, type_: str) -> tuple[str, str, str]:
    cond = condition(obj, type_)
    return (cond.get("status", ""), cond.get("reason", ""), cond.get("message", ""))


async def eventually(
    probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str = ""
) -> Any:
    """Poll until `check` holds for what `probe` returns; the deadline only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while True:
        value = await probe()
        if check(value):
            return value
        shown = value.get("status", value) if isinstance(value, dict) else value
        assert loop.time() < deadline, f"{what or 'condition'} not reached; last seen: {shown}"
        await asyncio.sleep(0.05)


async def ksvc_when(client: Client, namespace: str, name: str, check: Callable[[Object], bool]) -> Object:
    result: Object = await eventually(lambda: client.get(KSVC, name, namespace), check, f"ksvc {name}")
    return result


def generation_done(obj: Object) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"].get("generation"))


def ready_with(revision: str) -> Callable[[Object], bool]:
    def check(obj: Object) -> bool:
        status = obj.get("status") or {}
        return (
            generation_done(obj)
            and condition(obj, "Ready").get("status") == "True"
            and status.get("latestReadyRevisionName") == revision
        )

    return check


def failed_with(reason: str) -> Callable[[Object], bool]:
    def check(obj: Object) -> bool:
        return (
            generation_done(obj)
            and condition(obj, "ConfigurationsReady").get("status") == "False"
            and (reason in condition(obj, "ConfigurationsReady").get("message", ""))
        )

    return check


async def deployments_of(client: Client, namespace: str) -> dict[str, Object]:
    items, _ = await client.list_all(DEPLOYMENTS, namespace)
    return {d["metadata"]["labels"]["serving.knative.dev/revision"]: d for d in items}


async def deployments_when(
    client: Client, namespace: str, check: Callable[[dict[str, Object]], bool]
) -> dict[str, Object]:
    result: dict[str, Object] = await eventually(
        lambda: deployments_of(client, namespace), check, "deployments"
    )
    return result


def replicas(deployments: dict[str, Object]) -> dict[str, int]:
    return {name: int(d["spec"]["replicas"]) for name, d in deployments.items()}


async def pod_of(client: Client, namespace: str, revision: str) -> Object:
    async def probe() -> list[Object]:
        items, _ = await client.list_all(
            PODS, namespace, label_selector=f"serving.knative.dev/revision={revision}"
        )
        return items

    pods: list[Object] = await eventually(probe, lambda items: len(items) == 1, f"one pod of {revision}")
    return pods[0]


def failure_reason(double: KnativeServingDouble, namespace: str) -> str:
    failure = double.revisions(namespace, NAME)[0].failure
    assert failure is not None
    return failure.reason


async def update_ksvc(client: Client, namespace: str, name: str, change: Callable[[Object], None]) -> Object:
    obj = await client.get(KSVC, name, namespace)
    change(obj)
    return await client.replace(KSVC, obj)


def set_image(image: str) -> Callable[[Object], None]:
    def change(obj: Object) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = image

    return change


async def bind(client: Client, pod: Object, node: str) -> None:
    """What kube-scheduler does: bind the pod to a node."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    await client.request("POST", PODS.path(meta["namespace"], meta["name"], "binding"), body=body)


async def write_pod_status(client: Client, pod: Object, status: Object) -> None:
    """What a kubelet does: report the pod's status (retried on conflicts with other writers)."""
    meta = pod["metadata"]
    for _ in range(10):
        live = await client.get(PODS, meta["name"], meta["namespace"])
        live["status"] = {**(live.get("status") or {}), **status}
        try:
            await client.replace_status(PODS, live)
            return
        except Conflict:
            continue
    raise AssertionError("could not write the pod status")


def running(ready: bool, ip: str, containers: list[Object]) -> Object:
    state = "True" if ready else "False"
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "10.0.0.1",
        "startTime": "2024-01-01T00:00:00Z",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": state},
            {"type": "Ready", "status": state},
        ],
        "containerStatuses": containers,
    }


def container_status(name: str, *, ready: bool = True, **state: Object) -> Object:
    return {
        "name": name,
        "ready": ready,
        "restartCount": 0,
        "image": "img",
        "imageID": "",
        "state": state.get("state") or {"running": {"startedAt": "2024-01-01T00:00:00Z"}},
        **({"lastState": state["last"]} if "last" in state else {}),
    }


@asynccontextmanager
async def config_deployment(client: Client, data: dict[str, str]) -> AsyncIterator[None]:
    """knative-serving/config-deployment with `data` for the block (the namespace is shared by tests)."""
    with contextlib.suppress(AlreadyExists):
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knative-serving"}}
        )
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "config-deployment", "namespace": "knative-serving"},
        "data": data,
    }
    try:
        await client.create(CONFIGMAPS, body)
        yield
    finally:
        with contextlib.suppress(NotFound):
            await client.delete(CONFIGMAPS, "config-deployment", "knative-serving")


# Node-less readiness: what the API-only tests of the InferenceService controller rely on


async def test_a_new_service_becomes_ready_with_knative_urls_traffic_and_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    status = ksvc["status"]
    assert status["latestCreatedRevisionName"] == f"{NAME}-00001"
    assert status["url"] == f"http://{NAME}.{namespace}.example.com"
    assert status["address"] == {"url": f"http://{NAME}.{namespace}.svc.cluster.local"}
    assert status["traffic"] == [{"revisionName": f"{NAME}-00001", "latestRevision": True, "percent": 100}]
    for type_ in ("Ready", "ConfigurationsReady", "RoutesReady"):
        cond = condition(ksvc, type_)
        assert cond["status"] == "True"
        assert cond["lastTransitionTime"].endswith("Z")
        assert "reason" not in cond
    assert replicas(await deployments_of(admin, namespace)) == {f"{NAME}-00001": 1}


async def test_the_revision_gets_knatives_deployment_and_services(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    created = await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    revision = f"{NAME}-00001"
    deployment = (await deployments_of(admin, namespace))[revision]
    assert deployment["metadata"]["name"] == f"{revision}-deployment"
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Service", created["metadata"]["uid"], True)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[ISVC_LABEL] == "sklearn-iris"
    assert labels["serving.knative.dev/revision"] == revision
    assert deployment["spec"]["progressDeadlineSeconds"] == 600
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert list(containers) == ["kserve-container", "queue-proxy"]
    assert containers["queue-proxy"]["image"] == "gcr.io/knative-releases/knative.dev/serving/cmd/queue"

    pod = await pod_of(admin, namespace, revision)
    assert pod["metadata"]["labels"]["serving.knative.dev/revision"] == revision
    assert pod["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"

    private = await admin.get(SERVICES, f"{revision}-private", namespace)
    public = await admin.get(SERVICES, revision, namespace)
    assert private["spec"]["selector"] == {
        "serving.knative.dev/revisionUID": labels["serving.knative.dev/revisionUID"]
    }
    assert "selector" not in public["spec"]
    assert [p["port"] for p in public["spec"]["ports"]] == [80, 443]
    await eventually(lambda: admin.get(ENDPOINTS, revision, namespace), bool, "the public Endpoints")


async def test_a_template_change_creates_the_next_revision_and_scales_the_old_one_to_zero(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    await update_ksvc(admin, namespace, NAME, set_image("kserve/sklearnserver:v2"))
    ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00002"))
    assert ksvc["status"]["traffic"] == [
        {"revisionName": f"{NAME}-00002", "latestRevision": True, "percent": 100}
    ]
    await deployments_when(
        admin, namespace, lambda d: replicas(d) == {f"{NAME}-00001": 0, f"{NAME}-00002": 1}
    )


async def test_a_traffic_only_change_makes_no_new_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))

    def tagged(obj: Object) -> None:
        obj["spec"]["traffic"] = [{"latestRevision": True, "percent": 100, "tag": "latest"}]

    await update_ksvc(admin, namespace, NAME, tagged)
    ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    assert ksvc["status"]["latestCreatedRevisionName"] == f"{NAME}-00001"
    assert ksvc["status"]["traffic"][0]["url"] == f"http://latest-{NAME}.{namespace}.example.com"


async def test_spec_traffic_resolves_latest_and_pinned_revisions_and_both_keep_pods(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))

    def canary(obj: Object) -> None:
        set_image("kserve/sklearnserver:v2")(obj)
        obj["spec"]["traffic"] = [
            {"latestRevision": True, "percent": 10},
            {"revisionName": f"{NAME}-00001", "latestRevision": False, "percent": 90, "tag": "prev"},
        ]

    await update_ksvc(admin, namespace, NAME, canary)
    ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00002"))
    assert ksvc["status"]["traffic"] == [
        {"revisionName": f"{NAME}-00002", "latestRevision": True, "percent": 10},
        {
            "tag": "prev",
            "revisionName": f"{NAME}-00001",
            "latestRevision": False,
            "percent": 90,
            "url": f"http://prev-{NAME}.{namespace}.example.com",
        },
    ]
    await deployments_when(
        admin, namespace, lambda d: replicas(d) == {f"{NAME}-00001": 1, f"{NAME}-00002": 1}
    )


async def test_traffic_naming_an_unknown_revision_makes_routes_not_ready(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))

    def pin_missing(obj: Object) -> None:
        obj["spec"]["traffic"] = [{"revisionName": f"{NAME}-00042", "percent": 100}]

    await update_ksvc(admin, namespace, NAME, pin_missing)
    ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    message = f'Revision "{NAME}-00042" referenced in traffic not found.'
    assert verdict(ksvc, "RoutesReady") == ("False", "RevisionMissing", message)
    assert verdict(ksvc, "Ready") == ("False", "RevisionMissing", message)
    assert condition(ksvc, "ConfigurationsReady")["status"] == "True"
    assert ksvc["status"]["traffic"][0]["revisionName"] == f"{NAME}-00001"


async def test_the_cluster_local_label_gives_a_cluster_local_url(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["metadata"]["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    body["spec"]["traffic"] = [{"latestRevision": True, "percent": 100, "tag": "latest"}]
    await admin.create(KSVC, body, namespace)
    ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    assert ksvc["status"]["url"] == f"http://{NAME}.{namespace}.svc.cluster.local"
    assert ksvc["status"]["traffic"][0]["url"] == f"http://latest-{NAME}.{namespace}.svc.cluster.local"


async def test_the_domain_is_configurable(local_cluster: LocalCluster, admin: Client, namespace: str) -> None:
    async with running_double(local_cluster.kubeconfig_path, domain="models.local.test"):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    assert ksvc["status"]["url"] == f"http://{NAME}.{namespace}.models.local.test"


async def test_the_fail_annotation_fails_the_new_revision_and_traffic_stays_on_the_last_ready_one(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))

    def broken(obj: Object) -> None:
        set_image("kserve/sklearnserver:broken")(obj)
        obj["metadata"].setdefault("annotations", {})[FAIL_REVISION_ANNOTATION] = (
            "ExitCode1: Container failed with: model not found"
        )

    await update_ksvc(admin, namespace, NAME, broken)
    ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    message = f'Revision "{NAME}-00002" failed with message: Container failed with: model not found.'
    for type_ in ("Ready", "ConfigurationsReady"):
        assert verdict(ksvc, type_) == ("False", "RevisionFailed", message)
    assert condition(ksvc, "RoutesReady")["status"] == "True"
    assert (ksvc["status"]["latestCreatedRevisionName"], ksvc["status"]["latestReadyRevisionName"]) == (
        f"{NAME}-00002",
        f"{NAME}-00001",
    )
    assert ksvc["status"]["traffic"] == [
        {"revisionName": f"{NAME}-00001", "latestRevision": True, "percent": 100}
    ]
    assert replicas(await deployments_of(admin, namespace)) == {f"{NAME}-00001": 1}

    def fixed(obj: Object) -> None:
        set_image("kserve/sklearnserver:v2")(obj)
        del obj["metadata"]["annotations"][FAIL_REVISION_ANNOTATION]

    await update_ksvc(admin, namespace, NAME, fixed)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00003"))


async def test_a_failed_first_revision_shows_knatives_route_words_on_ready(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    double.fail_new_revisions("ImagePullBackOff", "Back-off pulling image")
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    missing = f'Configuration "{NAME}" does not have any ready Revision.'
    assert verdict(ksvc, "ConfigurationsReady") == (
        "False",
        "RevisionFailed",
        f'Revision "{NAME}-00001" failed with message: Back-off pulling image.',
    )
    assert verdict(ksvc, "RoutesReady") == ("False", "RevisionMissing", missing)
    assert verdict(ksvc, "Ready") == ("False", "RevisionMissing", missing)
    assert "latestReadyRevisionName" not in ksvc["status"]
    assert "traffic" not in ksvc["status"]
    assert await deployments_of(admin, namespace) == {}

    double.stop_failing()
    await update_ksvc(admin, namespace, NAME, set_image("kserve/sklearnserver:v2"))
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00002"))


async def test_a_deployment_the_api_server_refuses_is_a_refused_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    await admin.create(KSVC, body, namespace)
    ksvc = await ksvc_when(admin, namespace, NAME, failed_with("Not_A_DNS_Label"))
    status, reason, message = verdict(ksvc, "ConfigurationsReady")
    assert (status, reason) == ("False", "RevisionFailed")
    assert message.startswith("Revision creation failed with message: ")
    assert "latestCreatedRevisionName" not in ksvc["status"]


async def test_pods_the_api_server_rejects_fail_the_revision_with_failed_create(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    limit = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "small", "namespace": namespace},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "100m"}}]},
    }
    await admin.create(LIMIT_RANGES, limit)
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    ksvc = await ksvc_when(admin, namespace, NAME, failed_with("forbidden"))
    _, reason, message = verdict(ksvc, "ConfigurationsReady")
    assert reason == "RevisionFailed"
    assert message.startswith(f'Revision "{NAME}-00001" failed with message: pods "{NAME}-00001-deployment-')
    assert "maximum cpu usage per Container is 100m" in message
    assert failure_reason(double, namespace) == "FailedCreate"


async def test_revisions_beyond_the_history_are_collected_with_their_objects(
    admin: Client, namespace: str, double: KnativeServingDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "MAX_HISTORY", 2)
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    for version in (2, 3):
        await update_ksvc(admin, namespace, NAME, set_image(f"kserve/sklearnserver:v{version}"))
        await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-{version:05d}"))
    await deployments_when(admin, namespace, lambda d: set(d) == {f"{NAME}-00002", f"{NAME}-00003"})

    async def services() -> set[str]:
        items, _ = await admin.list_all(SERVICES, namespace)
        return {s["metadata"]["name"] for s in items}

    await eventually(
        services, lambda names: not names & {f"{NAME}-00001", f"{NAME}-00001-private"}, "collection"
    )
    assert [r.name for r in double.revisions(namespace, NAME)] == [f"{NAME}-00002", f"{NAME}-00003"]


async def test_a_deleted_deployment_comes_back(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    before = (await deployments_of(admin, namespace))[f"{NAME}-00001"]
    await admin.delete(DEPLOYMENTS, before["metadata"]["name"], namespace)
    await deployments_when(
        admin,
        namespace,
        lambda d: f"{NAME}-00001" in d and d[f"{NAME}-00001"]["metadata"]["uid"] != before["metadata"]["uid"],
    )


async def test_a_steady_service_is_not_rewritten_on_a_forced_resync(
    local_cluster: LocalCluster, admin: Client, namespace: str
) -> None:
    writes: list[str] = []
    async with running_double(local_cluster.kubeconfig_path) as (double, client):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        before = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
        await eventually(
            lambda: admin.get(ENDPOINTS, f"{NAME}-00001", namespace), bool, "the public Endpoints"
        )

        async def cached_endpoints() -> Object | None:
            return double.cache.get(ENDPOINTS, f"{NAME}-00001", namespace)

        # The double's own cache must show what it wrote: on a loaded machine its watch may lag the server,
        # and a reconcile on that cache would (rightly) try the create again.
        await eventually(cached_endpoints, bool, "the public Endpoints in the double's cache")
        # Let the reconciles queued by the double's own writes (and kube-controller-manager's) settle.
        settled = -1
        while settled != double.reconciles:
            settled = double.reconciles
            await asyncio.sleep(0.5)
        client.set_request_hook(
            lambda method, code, seconds: writes.append(method) if method != "GET" else None
        )
        status_writes, reconciles = double.status_writes, double.reconciles
        for resource in (KSVC, DEPLOYMENTS, SERVICES, ENDPOINTS, PODS):
            double.cache.informer(resource).resync()

        async def progress() -> int:
            return double.reconciles

        await eventually(progress, lambda seen: seen > reconciles, "reconciles after the resync")
        assert double.status_writes == status_writes
    after = await admin.get(KSVC, NAME, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert writes == []


async def test_a_restarted_double_continues_the_revision_numbering(
    local_cluster: LocalCluster, admin: Client, namespace: str
) -> None:
    async with running_double(local_cluster.kubeconfig_path):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
        await update_ksvc(admin, namespace, NAME, set_image("kserve/sklearnserver:v2"))
        await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00002"))
    state = await admin.get(CONFIGMAPS, NAME + STATE_SUFFIX, namespace)
    assert state["metadata"]["ownerReferences"][0]["name"] == NAME

    async with running_double(local_cluster.kubeconfig_path) as (double, _):
        steady = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00002"))
        await update_ksvc(admin, namespace, NAME, set_image("kserve/sklearnserver:v3"))
        ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00003"))
        assert [r.name for r in double.revisions(namespace, NAME)] == [f"{NAME}-{n:05d}" for n in (1, 2, 3)]
    assert steady["status"]["latestCreatedRevisionName"] == f"{NAME}-00002"
    assert ksvc["status"]["latestCreatedRevisionName"] == f"{NAME}-00003"


async def test_a_template_with_its_own_name_names_the_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["spec"]["template"]["metadata"]["name"] = f"{NAME}-blue"
    await admin.create(KSVC, body, namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-blue"))


async def test_deleting_the_service_forgets_it(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
    await admin.delete(KSVC, NAME, namespace)

    async def remembered() -> bool:
        return bool(double.revisions(namespace, NAME))

    await eventually(remembered, lambda seen: not seen, "the double to forget the Service")
    with pytest.raises(NotFound):
        await admin.get(KSVC, NAME, namespace)


# Pod readiness: the test plays kubelet and scheduler


async def test_pods_mode_waits_for_a_ready_pod_and_mirrors_its_endpoints(
    admin: Client, namespace: str, pods_double: KnativeServingDouble, fake_node: str
) -> None:
    revision = f"{NAME}-00001"
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    pod = await pod_of(admin, namespace, revision)
    ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
    assert verdict(ksvc, "Ready") == (
        "Unknown",
        "RevisionMissing",
        f'Configuration "{NAME}" is waiting for a Revision to become ready.',
    )
    await bind(admin, pod, fake_node)
    await write_pod_status(
        admin,
        pod,
        running(True, "10.244.0.7", [container_status("kserve-container"), container_status("queue-proxy")]),
    )
    await ksvc_when(admin, namespace, NAME, ready_with(revision))

    def served(endpoints: Object) -> bool:
        return bool(endpoints.get("subsets"))

    public = await eventually(lambda: admin.get(ENDPOINTS, revision, namespace), served, "mirrored endpoints")
    (subset,) = public["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.244.0.7"]
    assert sorted(p["port"] for p in subset["ports"]) == [8012, 8012, 8112]


async def test_pods_mode_a_crash_loop_fails_the_revision_at_once(
    admin: Client, namespace: str, pods_double: KnativeServingDouble, fake_node: str
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    pod = await pod_of(admin, namespace, f"{NAME}-00001")
    await bind(admin, pod, fake_node)
    crashing = container_status(
        "kserve-container",
        ready=False,
        state={
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
        },
        last={"terminated": {"exitCode": 1, "reason": "Error", "message": "model not found"}},
    )
    await write_pod_status(
        admin, pod, running(False, "10.244.0.8", [crashing, container_status("queue-proxy", ready=False)])
    )
    ksvc = await ksvc_when(admin, namespace, NAME, failed_with("Container failed with"))
    assert verdict(ksvc, "ConfigurationsReady") == (
        "False",
        "RevisionFailed",
        f'Revision "{NAME}-00001" failed with message: Container failed with: model not found.',
    )
    assert failure_reason(pods_double, namespace) == "ExitCode1"


async def test_pods_mode_an_image_pull_failure_shows_after_config_deployments_progress_deadline(
    admin: Client, namespace: str, pods_double: KnativeServingDouble, fake_node: str
) -> None:
    async with config_deployment(
        admin, {"queue-sidecar-image": "registry.local/queue:test", "progress-deadline": "2s"}
    ):

        async def deadline() -> float:
            return pods_double.deployment_config().progress_deadline

        await eventually(deadline, lambda seconds: seconds == 2, "the double to read config-deployment")
        await admin.create(KSVC, ksvc_body(namespace, image="kserve/sklearnserver:nope"), namespace)
        deployment = (await deployments_when(admin, namespace, bool))[f"{NAME}-00001"]
        assert deployment["spec"]["progressDeadlineSeconds"] == 2
        queue = deployment["spec"]["template"]["spec"]["containers"][1]
        assert queue["image"] == "registry.local/queue:test"
        pod = await pod_of(admin, namespace, f"{NAME}-00001")
        await bind(admin, pod, fake_node)
        pulling = {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "kserve/sklearnserver:nope"',
            }
        }
        status = running(
            False, "10.244.0.9", [container_status("kserve-container", ready=False, state=pulling)]
        )
        status["phase"] = "Pending"
        await write_pod_status(admin, pod, status)
        ksvc = await ksvc_when(admin, namespace, NAME, failed_with("Back-off pulling image"))
        assert verdict(ksvc, "ConfigurationsReady") == (
            "False",
            "RevisionFailed",
            f'Revision "{NAME}-00001" failed with message: '
            'Back-off pulling image "kserve/sklearnserver:nope".',
        )
        assert failure_reason(pods_double, namespace) == "ImagePullBackOff"

        await admin.patch(
            CONFIGMAPS,
            "config-deployment",
            {"data": {"queue-sidecar-image": "registry.local/queue:v2"}},
            "knative-serving",
        )

        def rerolled(deployments: dict[str, Object]) -> bool:
            containers = deployments[f"{NAME}-00001"]["spec"]["template"]["spec"]["containers"]
            return bool(containers[1]["image"] == "registry.local/queue:v2")

        await deployments_when(admin, namespace, rerolled)


async def test_pods_mode_a_failing_storage_initializer_is_pod_initializing(
    admin: Client, namespace: str, pods_double: KnativeServingDouble, fake_node: str
) -> None:
    body = ksvc_body(namespace)
    body["spec"]["template"]["metadata"]["annotations"]["serving.knative.dev/progress-deadline"] = "2s"
    await admin.create(KSVC, body, namespace)
    pod = await pod_of(admin, namespace, f"{NAME}-00001")
    await bind(admin, pod, fake_node)
    status = running(
        False,
        "10.244.0.10",
        [
            container_status(
                "kserve-container", ready=False, state={"waiting": {"reason": "PodInitializing"}}
            ),
            container_status("queue-proxy", ready=False, state={"waiting": {"reason": "PodInitializing"}}),
        ],
    )
    status["phase"] = "Pending"
    status["initContainerStatuses"] = [
        container_status(
            "storage-initializer",
            ready=False,
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
            last={"terminated": {"exitCode": 1, "reason": "Error", "message": "bucket not found"}},
        )
    ]
    await write_pod_status(admin, pod, status)
    ksvc = await ksvc_when(admin, namespace, NAME, failed_with("failed with message: ."))
    assert verdict(ksvc, "ConfigurationsReady")[2] == f'Revision "{NAME}-00001" failed with message: .'
    assert failure_reason(pods_double, namespace) == "PodInitializing"


async def test_pods_mode_an_unschedulable_pod_fails_the_revision(
    admin: Client, namespace: str, pods_double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    pod = await pod_of(admin, namespace, f"{NAME}-00001")
    message = "0/1 nodes are available: 1 Insufficient cpu."
    await write_pod_status(
        admin,
        pod,
        {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ],
        },
    )
    ksvc = await ksvc_when(admin, namespace, NAME, failed_with("Insufficient cpu"))
    assert (
        verdict(ksvc, "ConfigurationsReady")[2] == f'Revision "{NAME}-00001" failed with message: {message}.'
    )


async def test_the_double_runs_as_its_own_process_with_pod_readiness_by_default(
    local_cluster: LocalCluster, admin: Client, namespace: str, tmp_path: Path, fake_node: str
) -> None:
    proc = ManagerProcess(
        local_cluster.kubeconfig_path, tmp_path, module="e2e.knative_double", args=("--domain=proc.test",)
    )
    try:
        await asyncio.to_thread(proc.wait_ready)
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        pod = await pod_of(admin, namespace, f"{NAME}-00001")
        ksvc = await ksvc_when(admin, namespace, NAME, generation_done)
        assert condition(ksvc, "Ready")["status"] == "Unknown", "no ready pod yet"
        await bind(admin, pod, fake_node)
        await write_pod_status(
            admin, pod, running(True, "10.244.0.11", [container_status("kserve-container")])
        )
        ksvc = await ksvc_when(admin, namespace, NAME, ready_with(f"{NAME}-00001"))
        assert ksvc["status"]["url"] == f"http://{NAME}.{namespace}.proc.test"
        workers = proc.sample(
            "controller_runtime_max_concurrent_reconciles", controller="knative-serving-double"
        )
        assert workers == 4.0
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, HANG_GUARD) == 0, proc.output()
    finally:
        proc.close()
