"""RawDeployment mode on real pods: no Knative, no double, only a Deployment, a Service, an HPA and an Ingress
per InferenceService, as KServe v0.11.2 makes them (names and specs from its `rawkube_controller_test.go`).

What each target can show: `--target local` runs no pods, so it checks what the controller writes before any
pod is ready (the HPA and its spec); the node and kind run the pods, so they also show readiness,
predictions through the component Services, the transformer forwarding to the predictor, the failures a
pod reports, and the steady state. Metrics-server is not available offline, so no HPA here ever scales:
only its spec is checked (README, RawDeployment).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apis.resources import DEPLOYMENTS, HORIZONTAL_POD_AUTOSCALERS, INFERENCE_SERVICES, INGRESSES
from e2e.localcluster.deployment import MODEL_RESOURCES
from e2e.suite.env import DeployedEnv, Env
from e2e.suite.node_env import NodeEnv
from e2e.suite.support import (
    IRIS_INSTANCES,
    condition,
    container,
    get_or_empty,
    isvc_pods,
    isvc_when,
    ready,
    until,
)
from manager.client import EVENTS, NAMESPACES, SERVICES, Client, Object, Resource

RAW = {"serving.kserve.io/deploymentMode": "RawDeployment"}
CHILDREN: tuple[tuple[Resource, str], ...] = (
    (DEPLOYMENTS, "{}-predictor"),
    (SERVICES, "{}-predictor"),
    (HORIZONTAL_POD_AUTOSCALERS, "{}-predictor"),
    (INGRESSES, "{}"),
)
"""What a ready raw predictor-only InferenceService owns, by name pattern (KServe v0.11.2)."""
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff")
STORAGE_FAILURES = ("Error", "CrashLoopBackOff")
"""The kubelet's reasons for a storage initializer that failed (before and after its first restart)."""
SPECIES_TRANSFORMER = """
import argparse
from kserve import Model, ModelServer, model_server

SPECIES = ("setosa", "versicolor", "virginica")


class IrisSpecies(Model):
    def __init__(self, name, predictor_host):
        super().__init__(name)
        self.predictor_host = predictor_host
        self.ready = True

    def postprocess(self, response, headers=None):
        return {"predictions": [SPECIES[int(i)] for i in response["predictions"]]}


parser = argparse.ArgumentParser(parents=[model_server.parser])
parser.add_argument("--model_name", required=True)
parser.add_argument("--predictor_host", required=True)
args, _ = parser.parse_known_args()
ModelServer(http_port=args.http_port).start([IrisSpecies(args.model_name, args.predictor_host)])
"""
"""A transformer on KServe 0.11.2's Python SDK (in the offline sklearn image): it forwards v1 requests to
`--predictor_host`, as the controller sets it, and names the predicted classes, so an answer proves that
both the transformer and the predictor served it."""
SETTLE_READS = 3
"""Consecutive reads of the new leader's metrics that must agree before its resync counts as finished."""
STATUS_WAIT = 200.0
"""How long a pod's state may take to reach the modelStatus: under the suite's 300 s per-test limit, so a
failing wait shows what it last saw."""


def deployed(env: Env) -> DeployedEnv:
    if not isinstance(env, DeployedEnv):
        pytest.skip("local mode runs no containers: raw pods are verified on the node and on kind")
    return env


def node_env(env: Env) -> NodeEnv:
    if not isinstance(env, NodeEnv):
        pytest.skip("needs the node target's S3 store and offline images")
    return env


def raw_isvc(env: Env, namespace: str, name: str, **annotations: str) -> Object:
    """This target's sklearn iris model, in RawDeployment mode."""
    return env.isvc(namespace, name, annotations={**RAW, **annotations})


async def children(admin: Client, namespace: str, name: str) -> dict[str, Object]:
    """The raw children that exist, by kind."""
    found: dict[str, Object] = {}
    for resource, pattern in CHILDREN:
        obj = await get_or_empty(admin, resource, pattern.format(name), namespace)
        if obj:
            found[resource.kind] = obj
    return found


def model_loaded(isvc: Object) -> bool:
    model_status = (isvc.get("status") or {}).get("modelStatus") or {}
    loaded = (model_status.get("states") or {}).get("activeModelState") == "Loaded"
    return loaded and model_status.get("transitionStatus") == "UpToDate"


def controlled_by(obj: Object, isvc: Object) -> bool:
    owners = obj["metadata"].get("ownerReferences") or []
    return any(o.get("uid") == isvc["metadata"]["uid"] and o.get("controller") for o in owners)


async def test_raw_sklearn_goes_ready_predicts_and_deleting_it_removes_its_children(
    env: Env, admin: Client, namespace: str
) -> None:
    running = deployed(env)
    await admin.create(INFERENCE_SERVICES, raw_isvc(running, namespace, "raw-iris"))
    isvc = await ready(admin, namespace, "raw-iris", running.ready_timeout)
    assert condition(isvc, "IngressReady")["status"] == "True"
    # KServe computes the model status before Ready, so the reconcile after the first Ready one says Loaded.
    isvc = await isvc_when(
        admin, namespace, "raw-iris", model_loaded, STATUS_WAIT, "modelStatus Loaded from the pods"
    )
    assert isvc["status"]["url"] == f"http://raw-iris-{namespace}.{running.domain}"
    assert isvc["status"]["address"]["url"] == f"http://raw-iris-predictor.{namespace}.svc.cluster.local"
    owned = await children(admin, namespace, "raw-iris")
    assert sorted(owned) == sorted(r.kind for r, _ in CHILDREN)
    assert all(controlled_by(obj, isvc) for obj in owned.values()), owned
    assert owned["Ingress"]["spec"]["rules"][0]["host"] == f"raw-iris-{namespace}.{running.domain}"

    # The pod went through the pod webhook as a pod without queue-proxy does.
    pods = await isvc_pods(admin, namespace, "raw-iris")
    pod = next(p for p in pods if p["status"].get("phase") == "Running")
    assert pod["metadata"]["labels"]["app"] == "isvc.raw-iris-predictor"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["kserve-container"]
    init = container(pod, "storage-initializer", init=True)
    assert init["args"] == [running.model_uri, "/mnt/models"]
    if isinstance(running, NodeEnv):
        assert "AWS_ACCESS_KEY_ID" in {e["name"] for e in init.get("env") or []}
    annotations = pod["metadata"].get("annotations") or {}
    assert "serving.kserve.io/enable-metric-aggregation" in annotations
    assert "prometheus.io/scrape" not in annotations  # nothing in a raw pod serves queue-proxy's port

    status, body = await asyncio.to_thread(
        running.post_to_service,
        namespace,
        "raw-iris-predictor",
        "/v1/models/raw-iris:predict",
        IRIS_INSTANCES,
    )
    assert (status, body) == (200, {"predictions": [1, 1]})

    await admin.delete(INFERENCE_SERVICES, "raw-iris", namespace)
    await until(
        lambda: children(admin, namespace, "raw-iris"),
        lambda found: not found,
        running.ready_timeout,
        "the Deployment, Service, HPA and Ingress of raw-iris are gone",
    )
    assert not await get_or_empty(admin, INFERENCE_SERVICES, "raw-iris", namespace)


async def test_raw_transformer_serves_a_prediction_through_the_transformer(
    env: Env, admin: Client, namespace: str
) -> None:
    node = node_env(env)
    obj = raw_isvc(node, namespace, "raw-tf")
    obj["spec"]["transformer"] = {
        "containers": [
            {
                "name": "kserve-container",
                "image": node.deployment.images["sklearnserver"].ref,
                "command": ["python", "-c", SPECIES_TRANSFORMER],
                "resources": MODEL_RESOURCES,
            }
        ]
    }
    await admin.create(INFERENCE_SERVICES, obj)
    isvc = await ready(admin, namespace, "raw-tf", node.ready_timeout)
    assert condition(isvc, "TransformerReady")["status"] == "True"
    assert isvc["status"]["address"]["url"] == f"http://raw-tf-transformer.{namespace}.svc.cluster.local"
    transformer = await admin.get(DEPLOYMENTS, "raw-tf-transformer", namespace)
    args = transformer["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--predictor_host") + 1] == f"raw-tf-predictor.{namespace}"
    status, body = await asyncio.to_thread(
        node.post_to_service, namespace, "raw-tf-transformer", "/v1/models/raw-tf:predict", IRIS_INSTANCES
    )
    assert (status, body) == (200, {"predictions": ["versicolor", "versicolor"]})


async def test_raw_storage_initializer_failure_is_not_ready_with_the_pods_reason(
    env: Env, admin: Client, namespace: str
) -> None:
    node = node_env(env)
    obj = raw_isvc(node, namespace, "raw-nomodel")
    missing = "s3://example-models/sklearn/no-such-model"
    obj["spec"]["predictor"]["model"]["storageUri"] = missing

    await admin.create(INFERENCE_SERVICES, obj)

    def failed(o: Object) -> bool:
        info = ((o.get("status") or {}).get("modelStatus") or {}).get("lastFailureInfo") or {}
        reason = condition(o, "PredictorReady").get("reason")
        return info.get("reason") == "ModelLoadFailed" and reason in STORAGE_FAILURES

    isvc = await isvc_when(admin, namespace, "raw-nomodel", failed, STATUS_WAIT, "the download failure")
    model_status = isvc["status"]["modelStatus"]
    # The storage initializer's last words (its termination message), as KServe's storage library says them.
    failure = model_status["lastFailureInfo"]["message"]
    assert "No model found in sklearn/no-such-model" in failure, model_status
    assert model_status["transitionStatus"] == "BlockedByFailedLoad"
    # The pod's reason, not the Deployment's MinimumReplicasUnavailable (a deliberate difference, README).
    predictor = condition(isvc, "PredictorReady")
    assert predictor["status"] == "False", predictor
    assert 'container "storage-initializer" of pod "raw-nomodel-predictor-' in predictor["message"], predictor
    assert "No model found in sklearn/no-such-model" in predictor["message"], predictor
    ready = condition(isvc, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", predictor["reason"]), ready
    assert not await get_or_empty(admin, INGRESSES, "raw-nomodel", namespace), "an Ingress before Ready"


async def test_raw_image_that_cannot_be_pulled_is_not_ready_with_the_pods_reason(
    env: Env, admin: Client, namespace: str
) -> None:
    running = deployed(env)
    obj = raw_isvc(running, namespace, "raw-noimage")
    obj["spec"]["predictor"]["model"]["runtimeVersion"] = "e2e-no-such-tag"
    await admin.create(INFERENCE_SERVICES, obj)

    def pull_failed(pods: list[Object]) -> bool:
        return any(
            ((s.get("state") or {}).get("waiting") or {}).get("reason")
            in ("ErrImagePull", "ImagePullBackOff")
            for p in pods
            for s in p.get("status", {}).get("containerStatuses") or []
        )

    await until(
        lambda: isvc_pods(admin, namespace, "raw-noimage"),
        pull_failed,
        running.ready_timeout,
        "the pull failure",
    )

    def pending(o: Object) -> bool:
        # KServe reads only crash loops and failed downloads from the pod: a pull failure is "Pending" (after
        # the storage initializer's "Loading").
        model_status = (o.get("status") or {}).get("modelStatus") or {}
        target = (model_status.get("states") or {}).get("targetModelState")
        pending = target == "Pending" and model_status.get("transitionStatus") == "InProgress"
        return pending and condition(o, "PredictorReady").get("reason") in PULL_FAILURES

    isvc = await isvc_when(admin, namespace, "raw-noimage", pending, STATUS_WAIT, "the pod's pull failure")
    # The pod's reason, not the Deployment's MinimumReplicasUnavailable (a deliberate difference, README).
    predictor = condition(isvc, "PredictorReady")
    assert predictor["status"] == "False", predictor
    assert 'container "kserve-container" of pod "raw-noimage-predictor-' in predictor["message"], predictor
    assert "e2e-no-such-tag" in predictor["message"], predictor
    ready = condition(isvc, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", predictor["reason"]), ready


@pytest.mark.parametrize(
    ("annotations", "predictor", "expected"),
    [
        ({}, {}, {"minReplicas": 1, "maxReplicas": 1, "targetCPUUtilizationPercentage": 80}),
        (
            {"serving.kserve.io/targetUtilizationPercentage": "75"},
            {"minReplicas": 2, "maxReplicas": 3},
            {"minReplicas": 2, "maxReplicas": 3, "targetCPUUtilizationPercentage": 75},
        ),
        (
            {},
            {"minReplicas": 2, "scaleTarget": 50},
            {"minReplicas": 2, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50},
        ),
    ],
)
async def test_raw_hpa_has_kserves_spec(
    env: Env,
    admin: Client,
    namespace: str,
    annotations: dict[str, str],
    predictor: dict[str, Any],
    expected: dict[str, int],
) -> None:
    """The HPA as KServe's `createHPA` shapes it, read as `autoscaling/v1` (the version both Kubernetes 1.20
    and current releases serve); nothing scales without metrics-server, so only the spec is checked."""
    obj = raw_isvc(env, namespace, "raw-hpa", **annotations)
    obj["spec"]["predictor"].update(predictor)
    await admin.create(INFERENCE_SERVICES, obj)
    hpa: Object = await until(
        lambda: get_or_empty(admin, HORIZONTAL_POD_AUTOSCALERS, "raw-hpa-predictor", namespace),
        bool,
        env.ready_timeout,
        "the HPA raw-hpa-predictor",
    )
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "raw-hpa-predictor",
    }
    assert {k: spec.get(k) for k in expected} == expected
    isvc = await admin.get(INFERENCE_SERVICES, "raw-hpa", namespace)
    assert controlled_by(hpa, isvc)
    # The HPA controller (kube-controller-manager) brings the Deployment to minReplicas without any metric.
    await until(
        lambda: admin.get(DEPLOYMENTS, "raw-hpa-predictor", namespace),
        lambda d: d["spec"].get("replicas") == expected["minReplicas"],
        env.ready_timeout + 60,
        f"raw-hpa-predictor scaled to minReplicas {expected['minReplicas']}",
    )


async def test_raw_external_autoscaler_class_gets_no_hpa(env: Env, admin: Client, namespace: str) -> None:
    obj = raw_isvc(env, namespace, "raw-ext", **{"serving.kserve.io/autoscalerClass": "external"})
    await admin.create(INFERENCE_SERVICES, obj)
    await isvc_when(
        admin,
        namespace,
        "raw-ext",
        lambda o: bool(condition(o, "PredictorReady")),
        env.ready_timeout,
        "the predictor's condition (its children were reconciled)",
    )
    assert await get_or_empty(admin, DEPLOYMENTS, "raw-ext-predictor", namespace)
    assert not await get_or_empty(admin, HORIZONTAL_POD_AUTOSCALERS, "raw-ext-predictor", namespace)


# ----- steady state ----------------------------------------------------------------------------------------

STEADY_COUNT = 100
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
MANAGER_WRITTEN = frozenset(
    {
        ("serving.kserve.io", "inferenceservices", ""),
        ("serving.kserve.io", "inferenceservices", "status"),
        ("apps", "deployments", ""),
        ("", "services", ""),
        ("autoscaling", "horizontalpodautoscalers", ""),
        ("networking.k8s.io", "ingresses", ""),
    }
)
"""(group, resource, subresource) the manager writes for raw InferenceServices and nobody else writes in a
steady cluster (the Deployment controller writes `deployments/status`, the HPA controller
`horizontalpodautoscalers/status`, so those are left out)."""


def light_isvc(env: DeployedEnv, namespace: str, name: str) -> Object:
    """A raw InferenceService whose predictor is a plain HTTP server: it answers the TCP readiness probe the
    raw Deployment gives `kserve-container`, and costs ~15 MB and no CPU once started."""
    image = env.deployment.images["sklearnserver"].ref if isinstance(env, NodeEnv) else "python:3.11-slim"
    model = {
        "name": "kserve-container",
        "image": image,
        "command": ["python", "-m", "http.server", "8080"],
        "resources": {
            "requests": {"cpu": "1m", "memory": "16Mi"},
            "limits": {"cpu": "100m", "memory": "64Mi"},
        },
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "annotations": dict(RAW)},
        "spec": {"predictor": {"containers": [model]}},
    }


def api_server_writes(env: DeployedEnv) -> Counter[tuple[str, str, str, str]]:
    """The API server's own count of write requests by (verb, group, resource, subresource), every client."""
    done = env.run_kubectl("get", "--raw", "/metrics")
    assert done.returncode == 0, done.stderr
    writes: Counter[tuple[str, str, str, str]] = Counter()
    for family in text_string_to_metric_families(done.stdout):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels.get("verb") in WRITE_VERBS:
                key = (
                    labels["verb"],
                    labels.get("group", ""),
                    labels.get("resource", ""),
                    labels.get("subresource", ""),
                )
                writes[key] += int(sample.value)
    return writes


def manager_writes(writes: Counter[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], int]:
    return {k: v for k, v in writes.items() if k[1:] in MANAGER_WRITTEN and v}


def reconcile_progress(env: DeployedEnv) -> tuple[float, float]:
    """(InferenceService reconciles finished, items queued) on the leading replica."""
    done = queued = 0.0
    for family in text_string_to_metric_families(env.manager_metrics()):
        for sample in family.samples:
            if (
                sample.labels.get("controller") == "inferenceservice"
                and sample.name == "controller_runtime_reconcile_total"
            ):
                done += sample.value
            if sample.labels.get("name") == "inferenceservice" and sample.name == "workqueue_depth":
                queued += sample.value
    return done, queued


async def isvc_events(admin: Client, namespace: str) -> Counter[tuple[str, str]]:
    """(reason, object) -> count of the events recorded about InferenceServices in the namespace."""
    page = await admin.list_page(EVENTS, namespace)
    counts: Counter[tuple[str, str]] = Counter()
    for event in page.get("items") or []:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") == "InferenceService":
            counts[(str(event.get("reason")), str(involved.get("name")))] += int(event.get("count") or 1)
    return counts


@pytest.mark.timeout(2400)
async def test_raw_steady_state_resync_of_100_makes_no_writes(
    env: Env, admin: Client, namespace: str
) -> None:
    """100 Ready raw InferenceServices; a leader failover makes the new leader reconcile every one of them
    (its controllers start on an empty queue and enqueue everything in their caches: a full, forced resync
    of a manager running as a Pod); the API server must see no write of what the manager owns.

    Built this way because: the manager runs in the cluster, so the test cannot call its informers' resync as
    the integration test does, and its own write counter also counts its lease renewals, which never stop;
    the API server counts every client's writes by resource, and in a steady cluster nobody but the manager
    writes InferenceServices or the spec of raw children. Real model servers would not fit: 100 sklearn pods
    need more memory and CPU than the 2-core node has, so the predictor is a plain HTTP server (which is all
    the raw Deployment's readiness probe asks for), and the kubelet takes 250 pods (`e2e.localcluster.node`).
    """
    running = deployed(env)
    names = [f"raw-{i:03d}" for i in range(STEADY_COUNT)]
    limit = asyncio.Semaphore(16)

    async def create(name: str) -> None:
        async with limit:
            await admin.create(INFERENCE_SERVICES, light_isvc(running, namespace, name))

    await asyncio.gather(*(create(n) for n in names))

    async def ready_count() -> int:
        page = await admin.list_page(INFERENCE_SERVICES, namespace)
        return sum(condition(i, "Ready").get("status") == "True" for i in page.get("items") or [])

    await until(ready_count, lambda n: n == STEADY_COUNT, 900, f"{STEADY_COUNT} raw InferenceServices Ready")

    async def terminating() -> list[str]:
        page = await admin.list_page(NAMESPACES, None)
        return [
            n["metadata"]["name"] for n in page.get("items") or [] if n["metadata"].get("deletionTimestamp")
        ]

    # Earlier tests' namespaces are deleted in the background: their clean-up writes are not ours to count.
    await until(terminating, lambda items: not items, 600, "no namespace being deleted")
    await settle(running)

    events_before = await isvc_events(admin, namespace)
    writes_before = await asyncio.to_thread(api_server_writes, running)
    old, new = await running.fail_over(admin)
    assert old != new
    done = await settle(running)
    assert done >= STEADY_COUNT, f"the new leader reconciled {done} InferenceServices"
    writes_after = await asyncio.to_thread(api_server_writes, running)

    assert manager_writes(writes_after - writes_before) == {}
    assert await isvc_events(admin, namespace) == events_before
    assert await ready_count() == STEADY_COUNT


async def settle(env: DeployedEnv, timeout: float = 600) -> float:
    """Until the leader's InferenceService queue is empty and its reconcile count stopped moving over
    `SETTLE_READS` reads; the count."""
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while True:
        done, queued = await asyncio.to_thread(reconcile_progress, env)
        seen = [*seen, done][-SETTLE_READS:] if queued == 0 else []
        if len(seen) == SETTLE_READS and len(set(seen)) == 1:
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"the manager did not settle within {timeout:.0f}s (reconciles {seen})")
        await asyncio.sleep(2)
