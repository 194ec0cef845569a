"""The Knative Serving double on a real kube-apiserver: revisions, URLs, traffic, failures, pods, restarts.

The double runs in-process on a `Manager`, as the InferenceService tests will run it, and is checked only
through what it writes to the API server (plus its write counter for the no-op resync).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from e2e.knative_double import FAIL_REVISION_ANNOTATION, KSVC, KnativeServingDouble, install
from e2e.knative_double.double import (
    MAX_HISTORY,
    STATE_SUFFIX,
    Failure,
    History,
    Revision,
    child_name,
    desired_status,
    template_hash,
)
from e2e.localcluster.apply import apply_manifests
from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, PODS, Client, Object, load_client
from manager.errors import NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from tests.support.process import ManagerProcess

REPO = Path(__file__).resolve().parents[2]
CRDS = [REPO / "config/local/knative-serving-crd.yaml", REPO / "config/local/istio-virtualservice-crd.yaml"]
HANG_GUARD = 30.0
ISVC_LABEL = "serving.kserve.io/inferenceservice"


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
    kubeconfig: Path, domain: str = "example.com"
) -> AsyncIterator[tuple[KnativeServingDouble, Client]]:
    """A manager with only the double on it, running until the block ends."""
    client = await load_client(str(kubeconfig))
    manager = Manager(
        client,
        ManagerOptions(metrics_addr="0", health_probe_addr="0", graceful_shutdown_timeout=10.0),
        metrics=Metrics(CollectorRegistry()),
    )
    double = install(manager, domain=domain)
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


def ksvc_body(
    namespace: str, name: str = "sklearn-iris-predictor", image: str = "kserve/sklearnserver:v1"
) -> Object:
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


async def eventually(probe: Callable[[], Awaitable[Object]], check: Callable[[Object], bool]) -> Object:
    """Poll until `check` holds for what `probe` returns; the deadline only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while True:
        value = await probe()
        if check(value):
            return value
        assert loop.time() < deadline, f"condition not reached; last seen: {value.get('status', value)}"
        await asyncio.sleep(0.05)


async def ksvc_when(client: Client, namespace: str, name: str, check: Callable[[Object], bool]) -> Object:
    return await eventually(lambda: client.get(KSVC, name, namespace), check)


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


async def pods_of(client: Client, namespace: str) -> dict[str, Object]:
    items, _ = await client.list_all(PODS, namespace)
    return {p["metadata"]["labels"]["serving.knative.dev/revision"]: p for p in items}


async def pods_when(client: Client, namespace: str, revisions: set[str]) -> dict[str, Object]:
    async def probe() -> Object:
        return await pods_of(client, namespace)

    return await eventually(probe, lambda pods: set(pods) == revisions)


async def update_ksvc(client: Client, namespace: str, name: str, change: Callable[[Object], None]) -> Object:
    obj = await client.get(KSVC, name, namespace)
    change(obj)
    return await client.replace(KSVC, obj)


def set_image(image: str) -> Callable[[Object], None]:
    def change(obj: Object) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = image

    return change


async def test_a_new_service_becomes_ready_with_knative_urls_traffic_and_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    ksvc = await ksvc_when(
        admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001")
    )
    status = ksvc["status"]
    assert status["observedGeneration"] == ksvc["metadata"]["generation"]
    assert status["latestCreatedRevisionName"] == "sklearn-iris-predictor-00001"
    assert status["url"] == f"http://sklearn-iris-predictor.{namespace}.example.com"
    assert status["address"] == {"url": f"http://sklearn-iris-predictor.{namespace}.svc.cluster.local"}
    assert status["traffic"] == [
        {"revisionName": "sklearn-iris-predictor-00001", "latestRevision": True, "percent": 100}
    ]
    for type_ in ("Ready", "ConfigurationsReady", "RoutesReady"):
        cond = condition(ksvc, type_)
        assert cond["status"] == "True"
        assert cond["lastTransitionTime"].endswith("Z")
        assert "reason" not in cond


async def test_a_template_change_creates_the_next_revision_and_moves_all_traffic(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001"))
    await update_ksvc(admin, namespace, "sklearn-iris-predictor", set_image("kserve/sklearnserver:v2"))
    ksvc = await ksvc_when(
        admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00002")
    )
    assert ksvc["status"]["latestCreatedRevisionName"] == "sklearn-iris-predictor-00002"
    assert ksvc["status"]["traffic"] == [
        {"revisionName": "sklearn-iris-predictor-00002", "latestRevision": True, "percent": 100}
    ]


async def test_a_traffic_only_change_makes_no_new_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001"))

    def tagged(obj: Object) -> None:
        obj["spec"]["traffic"] = [{"latestRevision": True, "percent": 100, "tag": "latest"}]

    await update_ksvc(admin, namespace, "sklearn-iris-predictor", tagged)
    ksvc = await ksvc_when(admin, namespace, "sklearn-iris-predictor", generation_done)
    assert ksvc["status"]["latestCreatedRevisionName"] == "sklearn-iris-predictor-00001"
    assert (
        ksvc["status"]["traffic"][0]["url"] == f"http://latest-sklearn-iris-predictor.{namespace}.example.com"
    )


async def test_spec_traffic_resolves_latest_and_pinned_revisions_with_tag_urls(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))

    def canary(obj: Object) -> None:
        set_image("kserve/sklearnserver:v2")(obj)
        obj["spec"]["traffic"] = [
            {"latestRevision": True, "percent": 10},
            {"revisionName": f"{name}-00001", "latestRevision": False, "percent": 90, "tag": "prev"},
        ]

    await update_ksvc(admin, namespace, name, canary)
    ksvc = await ksvc_when(admin, namespace, name, ready_with(f"{name}-00002"))
    assert ksvc["status"]["traffic"] == [
        {"revisionName": f"{name}-00002", "latestRevision": True, "percent": 10},
        {
            "tag": "prev",
            "revisionName": f"{name}-00001",
            "latestRevision": False,
            "percent": 90,
            "url": f"http://prev-{name}.{namespace}.example.com",
        },
    ]
    # Both revisions serve traffic, so both keep a pod.
    await pods_when(admin, namespace, {f"{name}-00001", f"{name}-00002"})


async def test_traffic_naming_an_unknown_revision_makes_routes_not_ready(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))

    def pin_missing(obj: Object) -> None:
        obj["spec"]["traffic"] = [{"revisionName": f"{name}-00042", "percent": 100}]

    await update_ksvc(admin, namespace, name, pin_missing)
    ksvc = await ksvc_when(admin, namespace, name, generation_done)
    routes = condition(ksvc, "RoutesReady")
    assert (routes["status"], routes["reason"]) == ("False", "RevisionMissing")
    assert routes["message"] == f'Revision "{name}-00042" referenced in traffic not found.'
    assert condition(ksvc, "Ready")["message"] == routes["message"]
    assert condition(ksvc, "ConfigurationsReady")["status"] == "True"
    assert ksvc["status"]["traffic"][0]["revisionName"] == f"{name}-00001"  # the last resolved traffic stays


async def test_the_cluster_local_label_gives_a_cluster_local_url(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["metadata"]["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    body["spec"]["traffic"] = [{"latestRevision": True, "percent": 100, "tag": "latest"}]
    await admin.create(KSVC, body, namespace)
    ksvc = await ksvc_when(
        admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001")
    )
    assert ksvc["status"]["url"] == f"http://sklearn-iris-predictor.{namespace}.svc.cluster.local"
    assert ksvc["status"]["address"]["url"] == ksvc["status"]["url"]
    assert (
        ksvc["status"]["traffic"][0]["url"]
        == f"http://latest-sklearn-iris-predictor.{namespace}.svc.cluster.local"
    )


async def test_the_domain_is_configurable(local_cluster: LocalCluster, admin: Client, namespace: str) -> None:
    async with running_double(local_cluster.kubeconfig_path, domain="models.local.test"):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        ksvc = await ksvc_when(admin, namespace, "sklearn-iris-predictor", generation_done)
    assert ksvc["status"]["url"] == f"http://sklearn-iris-predictor.{namespace}.models.local.test"


async def test_the_fail_annotation_fails_the_new_revision_and_traffic_stays_on_the_last_ready_one(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))

    def broken(obj: Object) -> None:
        set_image("kserve/sklearnserver:broken")(obj)
        obj["metadata"].setdefault("annotations", {})[FAIL_REVISION_ANNOTATION] = (
            "ExitCode1: Container failed with: model not found"
        )

    await update_ksvc(admin, namespace, name, broken)
    ksvc = await ksvc_when(admin, namespace, name, generation_done)
    message = f'Revision "{name}-00002" failed with message: Container failed with: model not found.'
    for type_ in ("Ready", "ConfigurationsReady"):
        cond = condition(ksvc, type_)
        assert (cond["status"], cond["reason"], cond["message"]) == ("False", "RevisionFailed", message)
    assert condition(ksvc, "RoutesReady")["status"] == "True"
    assert ksvc["status"]["latestCreatedRevisionName"] == f"{name}-00002"
    assert ksvc["status"]["latestReadyRevisionName"] == f"{name}-00001"
    assert ksvc["status"]["traffic"] == [
        {"revisionName": f"{name}-00001", "latestRevision": True, "percent": 100}
    ]
    assert double.revisions(namespace, name)[-1].failure == Failure(
        "ExitCode1", "Container failed with: model not found"
    )
    assert set(await pods_of(admin, namespace)) == {f"{name}-00001"}

    def fixed(obj: Object) -> None:
        set_image("kserve/sklearnserver:v2")(obj)
        del obj["metadata"]["annotations"][FAIL_REVISION_ANNOTATION]

    await update_ksvc(admin, namespace, name, fixed)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00003"))


async def test_the_global_switch_fails_a_first_revision_and_explains_the_missing_route(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    double.fail_new_revisions("ImagePullBackOff", "Back-off pulling image")
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    ksvc = await ksvc_when(admin, namespace, name, generation_done)
    ready = condition(ksvc, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert ready["message"] == f'Revision "{name}-00001" failed with message: Back-off pulling image.'
    routes = condition(ksvc, "RoutesReady")
    assert (routes["status"], routes["reason"]) == ("False", "RevisionMissing")
    assert routes["message"] == f'Configuration "{name}" does not have any ready Revision.'
    assert "latestReadyRevisionName" not in ksvc["status"]
    assert "traffic" not in ksvc["status"]
    assert await pods_of(admin, namespace) == {}

    double.stop_failing()
    await update_ksvc(admin, namespace, name, set_image("kserve/sklearnserver:v2"))
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00002"))


async def test_a_pod_the_api_server_rejects_fails_the_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_DNS_Label"
    await admin.create(KSVC, body, namespace)
    ksvc = await ksvc_when(admin, namespace, "sklearn-iris-predictor", generation_done)
    ready = condition(ksvc, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert "Not_A_DNS_Label" in ready["message"]
    assert double.revisions(namespace, "sklearn-iris-predictor")[0].failure is not None


async def test_pods_carry_the_template_knative_labels_and_a_queue_proxy_and_old_ones_go(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    created = await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))
    pod = (await pods_when(admin, namespace, {f"{name}-00001"}))[f"{name}-00001"]

    labels = pod["metadata"]["labels"]
    assert labels[ISVC_LABEL] == "sklearn-iris"
    assert labels["component"] == "predictor"
    assert labels["serving.knative.dev/service"] == name
    assert labels["serving.knative.dev/configuration"] == name
    assert labels["serving.knative.dev/configurationGeneration"] == "1"
    assert labels["serving.knative.dev/revision"] == f"{name}-00001"
    assert labels["serving.knative.dev/revisionUID"]
    assert pod["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Service", created["metadata"]["uid"], True)

    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert list(containers) == ["kserve-container", "queue-proxy"]
    assert containers["kserve-container"]["args"] == ["--model_name=sklearn-iris"]
    user_env = {e["name"]: e.get("value") for e in containers["kserve-container"]["env"]}
    assert user_env["K_REVISION"] == f"{name}-00001"
    assert user_env["PORT"] == "8081"
    queue = containers["queue-proxy"]
    assert queue["image"] == "gcr.io/knative-releases/knative.dev/serving/cmd/queue"
    env = {e["name"]: e.get("value") for e in queue["env"]}
    assert env["SERVING_SERVICE"] == name
    assert env["SERVING_CONFIGURATION"] == name
    assert env["SERVING_REVISION"] == f"{name}-00001"
    assert env["USER_PORT"] == "8081"
    assert env["QUEUE_SERVING_PORT"] == "8012"
    assert "containerConcurrency" not in pod["spec"]

    await update_ksvc(admin, namespace, name, set_image("kserve/sklearnserver:v2"))
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00002"))
    await pods_when(admin, namespace, {f"{name}-00002"})


async def test_a_deleted_pod_of_a_ready_revision_comes_back(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    name = "sklearn-iris-predictor"
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))
    pod = (await pods_when(admin, namespace, {f"{name}-00001"}))[f"{name}-00001"]
    await admin.delete(PODS, pod["metadata"]["name"], namespace)

    async def probe() -> Object:
        return await pods_of(admin, namespace)

    pods = await eventually(
        probe,
        lambda p: f"{name}-00001" in p and p[f"{name}-00001"]["metadata"]["uid"] != pod["metadata"]["uid"],
    )
    assert pods[f"{name}-00001"]["metadata"]["labels"]["serving.knative.dev/revision"] == f"{name}-00001"


async def test_a_steady_service_is_not_rewritten_on_a_forced_resync(
    local_cluster: LocalCluster, admin: Client, namespace: str
) -> None:
    name = "sklearn-iris-predictor"
    writes: list[str] = []
    async with running_double(local_cluster.kubeconfig_path) as (double, client):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        before = await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))
        await pods_when(admin, namespace, {f"{name}-00001"})
        # Let the reconciles queued by the double's own writes settle before counting.
        settled = -1
        while settled != double.reconciles:
            settled = double.reconciles
            await asyncio.sleep(0.3)
        client.set_request_hook(
            lambda method, code, seconds: writes.append(method) if method != "GET" else None
        )
        status_writes, reconciles = double.status_writes, double.reconciles
        double.cache.informer(KSVC).resync()

        async def progress() -> Object:
            return {"reconciles": double.reconciles}

        await eventually(progress, lambda seen: seen["reconciles"] > reconciles)
        assert double.status_writes == status_writes
    after = await admin.get(KSVC, name, namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert writes == []


async def test_a_restarted_double_continues_the_revision_numbering(
    local_cluster: LocalCluster, admin: Client, namespace: str
) -> None:
    name = "sklearn-iris-predictor"
    async with running_double(local_cluster.kubeconfig_path):
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        await ksvc_when(admin, namespace, name, ready_with(f"{name}-00001"))
        await update_ksvc(admin, namespace, name, set_image("kserve/sklearnserver:v2"))
        await ksvc_when(admin, namespace, name, ready_with(f"{name}-00002"))
    state = await admin.get(CONFIGMAPS, name + STATE_SUFFIX, namespace)
    assert state["metadata"]["ownerReferences"][0]["name"] == name

    async with running_double(local_cluster.kubeconfig_path) as (double, _):
        steady = await ksvc_when(admin, namespace, name, ready_with(f"{name}-00002"))
        await update_ksvc(admin, namespace, name, set_image("kserve/sklearnserver:v3"))
        ksvc = await ksvc_when(admin, namespace, name, ready_with(f"{name}-00003"))
        assert [r.name for r in double.revisions(namespace, name)] == [f"{name}-{n:05d}" for n in (1, 2, 3)]
    assert steady["status"]["latestCreatedRevisionName"] == f"{name}-00002"
    assert ksvc["status"]["latestCreatedRevisionName"] == f"{name}-00003"


async def test_a_template_with_its_own_name_names_the_revision(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    body = ksvc_body(namespace)
    body["spec"]["template"]["metadata"]["name"] = "sklearn-iris-predictor-blue"
    await admin.create(KSVC, body, namespace)
    await ksvc_when(admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-blue"))


async def test_deleting_the_service_forgets_it(
    admin: Client, namespace: str, double: KnativeServingDouble
) -> None:
    await admin.create(KSVC, ksvc_body(namespace), namespace)
    await ksvc_when(admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001"))
    await admin.delete(KSVC, "sklearn-iris-predictor", namespace)

    async def gone() -> Object:
        return {"remembered": bool(double.revisions(namespace, "sklearn-iris-predictor"))}

    await eventually(gone, lambda seen: not seen["remembered"])
    with pytest.raises(NotFound):
        await admin.get(KSVC, "sklearn-iris-predictor", namespace)


async def test_the_double_runs_as_its_own_process_and_stops_on_sigterm(
    local_cluster: LocalCluster, admin: Client, namespace: str, tmp_path: Path
) -> None:
    proc = ManagerProcess(
        local_cluster.kubeconfig_path, tmp_path, module="e2e.knative_double", args=("--domain=proc.test",)
    )
    try:
        await asyncio.to_thread(proc.wait_ready)
        await admin.create(KSVC, ksvc_body(namespace), namespace)
        ksvc = await ksvc_when(
            admin, namespace, "sklearn-iris-predictor", ready_with("sklearn-iris-predictor-00001")
        )
        assert ksvc["status"]["url"] == f"http://sklearn-iris-predictor.{namespace}.proc.test"
        workers = proc.sample(
            "controller_runtime_max_concurrent_reconciles", controller="knative-serving-double"
        )
        assert workers == 4.0
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, HANG_GUARD) == 0, proc.output()
    finally:
        proc.close()


def test_child_names_longer_than_63_characters_are_shortened_with_a_hash() -> None:
    assert child_name("sklearn-iris-predictor", "-00001") == "sklearn-iris-predictor-00001"
    long_name = "a" * 60
    shortened = child_name(long_name, "-00001")
    assert len(shortened) == 63
    assert shortened.endswith("-00001")
    assert shortened != child_name("b" * 60, "-00001")
    assert len(child_name("x", "-" + "y" * 70)) == 32


def test_the_fail_switch_text_parses_into_reason_and_message() -> None:
    assert Failure.parse("ExitCode1: boom: really") == Failure("ExitCode1", "boom: really")
    assert Failure.parse("the model did not load") == Failure("RevisionFailed", "the model did not load")
    assert Failure.parse("two words: message") == Failure("RevisionFailed", "two words: message")


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    ksvc: Object = {"metadata": {"name": "s", "namespace": "n", "generation": 1}}
    history = History("uid", [Revision("s-00001", 1, template_hash({}), {})])
    first = desired_status(ksvc, history, "example.com", "2024-01-01T00:00:00Z")
    again = desired_status(dict(ksvc, status=first), history, "example.com", "2024-06-01T00:00:00Z")
    assert again == first
    history.add(Revision("s-00002", 2, "other", {}, Failure("X", "broken")))
    failed = desired_status(dict(ksvc, status=first), history, "example.com", "2024-06-01T00:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in failed["conditions"]}
    assert times == {
        "ConfigurationsReady": "2024-06-01T00:00:00Z",
        "Ready": "2024-06-01T00:00:00Z",
        "RoutesReady": "2024-01-01T00:00:00Z",
    }


def test_history_is_bounded_but_keeps_the_latest_ready_revision() -> None:
    history = History("uid", [Revision("s-00001", 1, "h1", {})])
    for n in range(2, MAX_HISTORY + 5):
        history.add(Revision(f"s-{n:05d}", n, f"h{n}", {}, Failure("X", "broken")))
    assert len(history.revisions) == MAX_HISTORY + 1
    assert history.latest_ready is not None
    assert history.latest_ready.name == "s-00001"
    assert history.next_generation == MAX_HISTORY + 5
    restored = History("uid", History.decode(history.encode()))
    assert restored.revisions == history.revisions


def test_invalid_domains_are_rejected_in_one_line() -> None:
    with pytest.raises(ValueError, match="invalid domain 'Not A Domain'"):
        KnativeServingDouble.validate("Not A Domain", "image")
    with pytest.raises(ValueError, match="queue-proxy image"):
        KnativeServingDouble.validate("example.com", " ")
