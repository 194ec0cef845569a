"""InferenceServices end to end on the real API server, with the Knative Serving double playing Knative."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from apis.constants import INFERENCE_SERVICE_LABEL
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    DEPLOYMENTS,
    INFERENCE_SERVICES,
    INGRESSES,
    KNATIVE_SERVICES,
    TRAINED_MODELS,
    VIRTUAL_SERVICES,
)
from e2e.knative_double import FAIL_REVISION_ANNOTATION
from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, PODS, SERVICES, Object, Resource
from manager.errors import NotFound
from manager.reconcile import Request
from tests.integration.isvc_harness import (
    SKLEARN_RUNTIME,
    Harness,
    condition,
    running_harness,
    sklearn_isvc,
)


@pytest.fixture
async def h(kubeconfig: Path, namespace: str) -> AsyncIterator[Harness]:
    async with running_harness(kubeconfig, namespace) as harness:
        yield harness


def has_url(url: str, obj: Object) -> bool:
    return bool(obj.get("status", {}).get("url") == url)


def ksvc_ready(obj: Object) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def get_or_empty(h: Harness, resource: Any, name: str) -> Object:
    try:
        return await h.client.get(resource, name, h.namespace)
    except NotFound:
        return {}


async def test_sklearn_predictor_becomes_ready_with_urls_routes_and_event(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "sk"))
    isvc = await h.ready("sk")
    assert isvc["status"]["url"] == f"http://sk.{ns}.example.com"
    assert isvc["status"]["address"]["url"] == f"http://sk.{ns}.svc.cluster.local"
    assert "inferenceservice.finalizers" in isvc["metadata"]["finalizers"]
    assert isvc["status"]["observedGeneration"] == isvc["metadata"]["generation"]
    for cond in ("PredictorReady", "IngressReady", "RoutesReady", "LatestDeploymentReady"):
        assert condition(isvc, cond)["status"] == "True", cond
    predictor = isvc["status"]["components"]["predictor"]
    assert predictor["url"] == f"http://sk-predictor.{ns}.example.com"
    assert predictor["latestReadyRevision"] == "sk-predictor-00001"

    ksvc = await h.client.get(KNATIVE_SERVICES, "sk-predictor", ns)
    template = ksvc["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["image"] == "kserve/sklearnserver:latest"
    assert "--model_name=sk" in container["args"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    assert (
        template["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    )
    assert (
        template["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"]
        == "gs://kfserving-examples/models/sklearn/1.0/model"
    )
    assert template["metadata"]["annotations"]["prometheus.kserve.io/port"] == "8080"
    assert template["metadata"]["labels"]["serving.kserve.io/inferenceservice"] == "sk"
    assert template["metadata"]["labels"]["component"] == "predictor"
    owner = ksvc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("InferenceService", "sk", True)

    vs = await h.client.get(VIRTUAL_SERVICES, "sk", ns)
    assert vs["spec"]["hosts"] == [f"sk.{ns}.svc.cluster.local", f"sk.{ns}.example.com"]
    assert vs["spec"]["gateways"] == [
        "knative-serving/knative-local-gateway",
        "knative-serving/knative-ingress-gateway",
    ]
    route = vs["spec"]["http"][0]
    assert route["headers"]["request"]["set"]["Host"] == f"sk-predictor.{ns}.svc.cluster.local"
    assert route["route"][0]["destination"]["host"] == "knative-local-gateway.istio-system.svc.cluster.local"
    svc = await h.client.get(SERVICES, "sk", ns)
    assert svc["spec"]["type"] == "ExternalName"
    assert svc["spec"]["externalName"] == "knative-local-gateway.istio-system.svc.cluster.local"

    event = await h.wait_event("InferenceServiceReady", "sk")
    assert event["type"] == "Normal"
    assert event["message"] == "InferenceService [sk] is Ready"
    assert event["source"]["component"] == "v1beta1Controllers"


async def test_transformer_and_explainer_routes_and_host_rewrites(h: Harness) -> None:
    ns = h.namespace
    isvc = sklearn_isvc(
        ns,
        "full",
        transformer={"containers": [{"name": "kserve-container", "image": "example/transformer:1"}]},
        explainer={"alibi": {"type": "AnchorTabular", "storageUri": "gs://bucket/explainer"}},
    )
    await h.create(isvc)
    ready = await h.ready("full")
    assert ready["status"]["url"] == f"http://full.{ns}.example.com"
    for cond in ("TransformerReady", "ExplainerReady"):
        assert condition(ready, cond)["status"] == "True"

    transformer = await h.client.get(KNATIVE_SERVICES, "full-transformer", ns)
    args = transformer["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--predictor_host" in args
    assert args[args.index("--predictor_host") + 1] == f"full-predictor.{ns}"

    vs = await h.client.get(VIRTUAL_SERVICES, "full", ns)
    explain, predict = vs["spec"]["http"][0], vs["spec"]["http"][1]
    assert explain["match"][0]["uri"]["regex"] == r"^/v1/models/[\w-]+:explain$"
    assert explain["headers"]["request"]["set"]["Host"] == f"full-explainer.{ns}.svc.cluster.local"
    assert predict["headers"]["request"]["set"]["Host"] == f"full-transformer.{ns}.svc.cluster.local"

    # Removing the transformer deletes its Knative Service and routes predict traffic to the predictor.
    def drop_transformer(obj: Object) -> None:
        del obj["spec"]["transformer"]

    await h.update_spec("full", drop_transformer)
    await h.until(lambda: get_or_empty(h, KNATIVE_SERVICES, "full-transformer"), lambda o: not o)

    def rewritten(vs: Object) -> bool:
        return (
            bool(vs)
            and vs["spec"]["http"][1]["headers"]["request"]["set"]["Host"]
            == f"full-predictor.{ns}.svc.cluster.local"
        )

    await h.until(lambda: get_or_empty(h, VIRTUAL_SERVICES, "full"), rewritten)
    final = await h.ready("full")
    assert "transformer" not in final["status"]["components"]
    assert not condition(final, "TransformerReady")


async def test_cluster_local_label_gives_an_internal_only_service(h: Harness) -> None:
    ns = h.namespace
    isvc = sklearn_isvc(ns, "local")
    isvc["metadata"]["labels"] = {"networking.knative.dev/visibility": "cluster-local"}
    await h.create(isvc)
    ready = await h.ready("local")
    assert ready["status"]["url"] == f"http://local.{ns}.svc.cluster.local"
    assert ready["status"]["address"]["url"] == f"http://local.{ns}.svc.cluster.local"
    vs = await h.client.get(VIRTUAL_SERVICES, "local", ns)
    assert vs["spec"]["hosts"] == [f"local.{ns}.svc.cluster.local"]
    assert vs["spec"]["gateways"] == ["knative-serving/knative-local-gateway"]
    ksvc = await h.client.get(KNATIVE_SERVICES, "local-predictor", ns)
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert "networking.knative.dev/visibility" not in ksvc["spec"]["template"]["metadata"]["labels"]


def traffic(obj: Object) -> list[tuple[str | None, int, bool, str | None]]:
    entries = obj["status"]["components"]["predictor"].get("traffic") or []
    return sorted(
        (t.get("revisionName"), t.get("percent"), bool(t.get("latestRevision")), t.get("tag"))
        for t in entries
    )


def set_image(image: str, canary: int | None) -> Any:
    def change(obj: Object) -> None:
        predictor = obj["spec"]["predictor"]
        predictor["model"]["runtimeVersion"] = image
        if canary is None:
            predictor.pop("canaryTrafficPercent", None)
        else:
            predictor["canaryTrafficPercent"] = canary

    return change


async def test_canary_rollout_promotion_and_rollback(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "can"))
    first = await h.ready("can")
    assert first["status"]["components"]["predictor"]["latestRolledoutRevision"] == "can-predictor-00001"

    # Canary 10%: the new revision gets 10, the last rolled-out one 90 with tag prev.
    await h.update_spec("can", set_image("v2", 10))

    def split(obj: Object) -> bool:
        return bool(obj) and traffic(obj) == [
            ("can-predictor-00001", 90, False, "prev"),
            ("can-predictor-00002", 10, True, None),
        ]

    canary = await h.isvc_when("can", split)
    ksvc = await h.client.get(KNATIVE_SERVICES, "can-predictor", ns)
    assert {"latestRevision": True, "percent": 10} in ksvc["spec"]["traffic"]
    assert canary["status"]["components"]["predictor"]["latestRolledoutRevision"] == "can-predictor-00001"

    # Promotion: no canary percent -> 100% latest; the previous rollout is remembered.
    await h.update_spec("can", set_image("v2", None))

    def promoted(obj: Object) -> bool:
        comp = obj.get("status", {}).get("components", {}).get("predictor", {})
        return comp.get("latestRolledoutRevision") == "can-predictor-00002" and traffic(obj) == [
            ("can-predictor-00002", 100, True, None)
        ]

    done = await h.isvc_when("can", promoted)
    assert done["status"]["components"]["predictor"]["previousRolledoutRevision"] == "can-predictor-00001"

    # Rollback: canary 0% on the same template sends everything back to the previous rollout.
    await h.update_spec("can", set_image("v2", 0))

    def rolled_back(obj: Object) -> bool:
        return traffic(obj) == [
            ("can-predictor-00001", 100, False, "prev"),
            ("can-predictor-00002", 0, True, None),
        ]

    await h.isvc_when("can", rolled_back)


async def test_failing_revision_makes_ready_false_with_knatives_reason(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "bad"))
    await h.ready("bad")

    def break_it(obj: Object) -> None:
        obj["spec"]["predictor"]["annotations"] = {
            FAIL_REVISION_ANNOTATION: "ImagePullBackOff: image not found"
        }

    await h.update_spec("bad", break_it)

    def failed(obj: Object) -> bool:
        return condition(obj, "Ready").get("status") == "False"

    isvc = await h.isvc_when("bad", failed)
    ready = condition(isvc, "Ready")
    assert ready["reason"] == "RevisionFailed"
    assert ready["message"] == 'Revision "bad-predictor-00002" failed with message: image not found.'
    assert condition(isvc, "PredictorReady")["reason"] == "RevisionFailed"
    event = await h.wait_event("InferenceServiceNotReady", "bad")
    assert event["type"] == "Warning"
    assert event["message"] == "InferenceService [bad] is no longer Ready"


async def test_a_revision_pods_failing_storage_initializer_reaches_the_model_status(h: Harness) -> None:
    """A pod change alone re-queues its InferenceService, so the model status follows the pod.

    The revision fails without a Deployment (the double's switch), so nothing but the pod written here
    changes after the Knative Service's status settles; KServe v0.11 would keep the model status `Pending`."""
    ns = h.namespace
    failing = {"predictor": {"annotations": {FAIL_REVISION_ANNOTATION: "ExitCode1: container exited"}}}
    isvc = sklearn_isvc(ns, "cl")
    isvc["spec"]["predictor"]["annotations"] = failing["predictor"]["annotations"]
    await h.create(isvc)
    await h.isvc_when(
        "cl", lambda o: condition(o, "PredictorConfigurationReady").get("reason") == "RevisionFailed"
    )
    await h.settle(quiet=1.0)
    assert (await h.get("cl"))["status"]["modelStatus"]["transitionStatus"] == "InProgress"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "cl-predictor-00001-deployment-0",
            "namespace": ns,
            "labels": {INFERENCE_SERVICE_LABEL: "cl", "serving.knative.dev/revision": "cl-predictor-00001"},
        },
        "spec": {"containers": [{"name": "kserve-container", "image": "kserve/sklearnserver:v0.11.2"}]},
    }
    pod = await h.client.create(PODS, pod)
    terminated = {"exitCode": 1, "reason": "Error", "message": "403 InvalidAccessKeyId"}
    pod["status"] = {
        "phase": "Pending",
        "initContainerStatuses": [
            {
                "name": "storage-initializer",
                "ready": False,
                "restartCount": 2,
                "image": "kserve/storage-initializer:v0.11.2",
                "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                "lastState": {"terminated": terminated},
            }
        ],
    }
    await h.client.replace_status(PODS, pod)
    failed = await h.isvc_when(
        "cl", lambda o: o["status"]["modelStatus"].get("transitionStatus") == "BlockedByFailedLoad"
    )
    assert failed["status"]["modelStatus"]["lastFailureInfo"] == {
        "reason": "ModelLoadFailed",
        "message": "403 InvalidAccessKeyId",
        "exitCode": 1,
    }
    assert failed["status"]["modelStatus"]["states"] == {"targetModelState": "FailedToLoad"}


async def test_deleting_runs_the_finalizer_and_children_are_collected(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "gone"))
    await h.ready("gone")
    tm = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "tm1", "namespace": ns, "labels": {"inferenceservice": "gone"}},
        "spec": {
            "inferenceService": "gone",
            "model": {"storageUri": "gs://b/m", "framework": "sklearn", "memory": "1Gi"},
        },
    }
    await h.client.create(TRAINED_MODELS, tm)
    await h.client.delete(INFERENCE_SERVICES, "gone", ns)
    await h.until(lambda: get_or_empty(h, INFERENCE_SERVICES, "gone"), lambda o: not o)
    await h.until(lambda: get_or_empty(h, TRAINED_MODELS, "tm1"), lambda o: not o)
    # kube-controller-manager's garbage collector removes what the owner references point to.
    for resource, name in (
        (KNATIVE_SERVICES, "gone-predictor"),
        (VIRTUAL_SERVICES, "gone"),
        (SERVICES, "gone"),
    ):
        await h.until(partial(get_or_empty, h, resource, name), lambda o: not o, timeout=60)


async def test_ingress_domain_change_moves_every_url(h: Harness) -> None:
    ns = h.namespace
    for name in ("d1", "d2"):
        await h.create(sklearn_isvc(ns, name))
    for name in ("d1", "d2"):
        await h.ready(name)
    ingress = json.loads((await h.client.get(CONFIGMAPS, "inferenceservice-config", ns))["data"]["ingress"])
    ingress["ingressDomain"] = "models.example.org"
    ingress["pathTemplate"] = "/serving/{{ .Namespace }}/{{ .Name }}"
    await h.set_config("ingress", json.dumps(ingress))
    for name in ("d1", "d2"):
        url = f"http://models.example.org/serving/{ns}/{name}"
        moved = await h.isvc_when(name, partial(has_url, url))
        assert condition(moved, "Ready")["status"] == "True"
    vs = await h.client.get(VIRTUAL_SERVICES, "d1", ns)
    assert "models.example.org" in vs["spec"]["hosts"]


@pytest.mark.parametrize(
    ("name", "predictor", "condition_type", "reason", "fragment"),
    [
        ("no-impl", {"minReplicas": 1}, "PredictorReady", None, "exactly one"),
        (
            "two-impls",
            {"sklearn": {"storageUri": "gs://a/b"}, "xgboost": {"storageUri": "gs://a/b"}},
            "PredictorReady",
            None,
            "exactly one",
        ),
        (
            "bad-uri",
            {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "ftp://x/y"}},
            "PredictorReady",
            None,
            "ftp://x/y",
        ),
        (
            "no-runtime",
            {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "runtime": "does-not-exist",
                    "storageUri": "gs://a/b",
                }
            },
            "PredictorReady",
            "RuntimeNotRecognized",
            "does-not-exist",
        ),
    ],
)
async def test_bad_specs_say_why_without_retrying(
    h: Harness, name: str, predictor: dict[str, Any], condition_type: str, reason: str | None, fragment: str
) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "healthy"))
    obj = sklearn_isvc(ns, name)
    obj["spec"]["predictor"] = predictor
    await h.create(obj)
    bad = await h.isvc_when(name, lambda o: condition(o, "Ready").get("status") == "False")
    cond = condition(bad, condition_type)
    assert cond["status"] == "False"
    if reason:
        assert cond["reason"] == reason
    assert fragment in cond["message"]
    assert condition(bad, "Ready")["message"] == cond["message"]
    if reason == "RuntimeNotRecognized":
        model_status = bad["status"]["modelStatus"]
        assert model_status["transitionStatus"] == "InvalidSpec"
        assert model_status["states"]["targetModelState"] == "FailedToLoad"
        assert model_status["lastFailureInfo"]["reason"] == "RuntimeNotRecognized"
        assert model_status["lastFailureInfo"]["message"]
    event = await h.wait_event(cond["reason"], name)
    assert event["type"] == "Warning"
    # The others keep working, and the broken one is not retried in a loop.
    await h.ready("healthy")
    await h.settle()
    before = h.manager.metrics.registry.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "inferenceservice", "result": "error"}
    )
    await asyncio.sleep(2)
    after = h.manager.metrics.registry.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "inferenceservice", "result": "error"}
    )
    assert before == after == 0


async def test_broken_config_json_and_missing_configmap(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "cfg"))
    await h.ready("cfg")
    await h.set_config("ingress", "{not json")
    broken = await h.isvc_when("cfg", lambda o: condition(o, "IngressReady").get("status") == "False")
    assert condition(broken, "IngressReady")["reason"] == "InvalidConfiguration"
    assert 'key "ingress"' in condition(broken, "IngressReady")["message"]
    await h.wait_event("InvalidConfiguration", "cfg")

    await h.client.delete(CONFIGMAPS, "inferenceservice-config", ns)
    missing = await h.isvc_when(
        "cfg", lambda o: condition(o, "PredictorReady").get("reason") == "ConfigMapMissing"
    )
    assert "inferenceservice-config not found" in condition(missing, "Ready")["message"]


async def test_model_mesh_is_refused_clearly(h: Harness) -> None:
    ns = h.namespace
    obj = sklearn_isvc(ns, "mm")
    obj["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    await h.create(obj)
    isvc = await h.isvc_when("mm", lambda o: condition(o, "Ready").get("status") == "False")
    assert condition(isvc, "Ready")["reason"] == "UnsupportedDeploymentMode"
    assert "ModelMesh" in condition(isvc, "Ready")["message"]
    assert not await get_or_empty(h, KNATIVE_SERVICES, "mm-predictor")
    assert not await get_or_empty(h, DEPLOYMENTS, "mm-predictor")


# --- RawDeployment ------------------------------------------------------------------------------------

RAW = {"serving.kserve.io/deploymentMode": "RawDeployment"}
HPA_V2BETA2 = Resource("autoscaling", "v2beta2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")


def raw_isvc(ns: str, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> Object:
    obj = sklearn_isvc(ns, name, **spec)
    obj["metadata"]["annotations"] = {**RAW, **(annotations or {})}
    return obj


async def resync_writes(h: Harness) -> float:
    """Writes made by a forced resync of every informer once the controllers are idle."""
    await h.settle(quiet=1.0)
    before = h.writes()
    await h.resync_all(quiet=1.0)
    return h.writes() - before


async def test_raw_children_are_kserves_and_steady_state_writes_nothing(h: Harness) -> None:
    ns = h.namespace
    await h.create(raw_isvc(ns, "raw", minReplicas=1, predictor={"maxReplicas": 3}))
    # No node runs the pod: the real Deployment controller reports it unavailable, with its reason.
    isvc = await h.isvc_when(
        "raw", lambda o: condition(o, "PredictorReady").get("reason") == "MinimumReplicasUnavailable"
    )
    assert condition(isvc, "Ready")["reason"] == "MinimumReplicasUnavailable"
    assert condition(isvc, "IngressReady")["reason"] == "Predictor ingress not created"

    deployment = await h.client.get(DEPLOYMENTS, "raw-predictor", ns)
    app = {"app": "isvc.raw-predictor"}
    assert deployment["metadata"]["labels"] == {
        "serving.kserve.io/inferenceservice": "raw",
        "component": "predictor",
        **app,
    }
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == isvc["metadata"]["uid"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": app}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    pod = spec["template"]
    assert pod["metadata"]["labels"]["app"] == "isvc.raw-predictor"
    assert pod["metadata"]["annotations"]["internal.serving.kserve.io/storage-initializer-sourceuri"]
    container = pod["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["readinessProbe"]["tcpSocket"] == {"port": 8080}

    service = await h.client.get(SERVICES, "raw-predictor", ns)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == app
    assert service["spec"]["ports"] == [
        {"name": "raw-predictor", "protocol": "TCP", "port": 80, "targetPort": 8080}
    ]

    hpa = await h.client.get(HPA_V2BETA2, "raw-predictor", ns)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "raw-predictor",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
        }
    ]
    assert not await get_or_empty(h, INGRESSES, "raw")
    assert await resync_writes(h) == 0


async def test_raw_pod_failure_reaches_the_inferenceservice_with_the_pods_reason(h: Harness) -> None:
    """A raw pod's status change re-queues its InferenceService, whose Ready then names the pod's reason.

    No node runs the pod here, so the test writes the status a kubelet writes for an image it cannot pull;
    the Deployment's own status does not change with it. Autoscaler class `external`: no HPA, whose status
    updates (no metrics offline) would re-queue the InferenceService every 15 s anyway."""
    ns = h.namespace
    await h.create(raw_isvc(ns, "pf", {"serving.kserve.io/autoscalerClass": "external"}))
    await h.isvc_when(
        "pf", lambda o: condition(o, "PredictorReady").get("reason") == "MinimumReplicasUnavailable"
    )

    async def the_pod() -> Object:
        page = await h.client.list_page(PODS, ns, label_selector="app=isvc.pf-predictor")
        items = page.get("items") or []
        return items[0] if items else {}

    pod = await h.until(the_pod, bool)
    waiting = {"reason": "ErrImagePull", "message": 'failed to pull image "kserve/sklearnserver:nope"'}
    pod["status"]["containerStatuses"] = [
        {
            "name": "kserve-container",
            "ready": False,
            "restartCount": 0,
            "image": "kserve/sklearnserver:nope",
            "imageID": "",
            "state": {"waiting": waiting},
        }
    ]
    await h.client.replace_status(PODS, pod)
    isvc = await h.isvc_when("pf", lambda o: condition(o, "PredictorReady").get("reason") == "ErrImagePull")
    message = f'container "kserve-container" of pod "{pod["metadata"]["name"]}": {waiting["message"]}'
    assert condition(isvc, "PredictorReady")["message"] == message
    assert (condition(isvc, "Ready")["status"], condition(isvc, "Ready")["reason"]) == (
        "False",
        "ErrImagePull",
    )


async def test_raw_memory_metric_reaches_the_hpa_through_autoscaling_v1(h: Harness) -> None:
    ns = h.namespace
    await h.create(raw_isvc(ns, "mem", predictor={"scaleMetric": "memory", "scaleTarget": 70}))
    hpa = await h.until(lambda: h.client.get(HPA_V2BETA2, "mem-predictor", ns), bool)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ]
    await h.settle(quiet=1.0)
    assert await resync_writes(h) == 0


async def test_raw_ready_ingress_then_external_class_cluster_local_and_deletion(h: Harness) -> None:
    ns = h.namespace
    await h.create(raw_isvc(ns, "ext", annotations={"serving.kserve.io/autoscalerClass": "external"}))
    await h.until(lambda: h.client.get(DEPLOYMENTS, "ext-predictor", ns), bool)
    assert not await get_or_empty(h, HPA_V2BETA2, "ext-predictor")
    # Without an HPA the Deployment's replicas are someone else's: scaled to 0, it is Available.
    await h.client.patch(DEPLOYMENTS, "ext-predictor", {"spec": {"replicas": 0}}, ns)
    isvc = await h.ready("ext")
    assert isvc["status"]["url"] == f"http://ext-{ns}.example.com"
    assert isvc["status"]["address"]["url"] == f"http://ext-predictor.{ns}.svc.cluster.local"
    assert isvc["status"]["components"]["predictor"]["url"] == f"http://ext-predictor-{ns}.example.com"
    ingress = await h.client.get(INGRESSES, "ext", ns)
    hosts = [
        (r["host"], r["http"]["paths"][0]["backend"]["service"]["name"]) for r in ingress["spec"]["rules"]
    ]
    assert hosts == [
        (f"ext-{ns}.example.com", "ext-predictor"),
        (f"ext-predictor-{ns}.example.com", "ext-predictor"),
    ]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Prefix"
    assert ingress["spec"]["ingressClassName"] == "istio"
    assert await resync_writes(h) == 0
    assert (await h.client.get(DEPLOYMENTS, "ext-predictor", ns))["spec"]["replicas"] == 0

    await h.update_spec(
        "ext",
        lambda o: (
            o["metadata"]
            .setdefault("labels", {})
            .update({"networking.kserve.io/visibility": "cluster-local"})
        ),
    )
    await h.until(lambda: get_or_empty(h, INGRESSES, "ext"), lambda o: not o)
    assert condition(await h.ready("ext"), "IngressReady")["status"] == "True"

    await h.client.delete(INFERENCE_SERVICES, "ext", ns)
    for resource in (DEPLOYMENTS, SERVICES):
        await h.until(partial(get_or_empty, h, resource, "ext-predictor"), lambda o: not o, timeout=60)


async def test_steady_state_resync_of_200_makes_no_writes(kubeconfig: Path, namespace: str) -> None:
    async with running_harness(kubeconfig, namespace, max_concurrent=8) as h:
        names = [f"s{i:03d}" for i in range(200)]
        sem = asyncio.Semaphore(32)

        async def create(name: str) -> None:
            async with sem:
                await h.create(sklearn_isvc(namespace, name))

        await asyncio.gather(*(create(n) for n in names))

        async def all_ready() -> Object:
            page = await h.client.list_page(INFERENCE_SERVICES, namespace)
            ready = [i for i in page.get("items") or [] if condition(i, "Ready").get("status") == "True"]
            return {"ready": len(ready)}

        await h.until(all_ready, lambda o: o.get("ready") == 200, timeout=180)
        await h.settle(quiet=2.0)
        before = h.writes()
        await h.resync_all(quiet=2.0)
        reconciles = h.manager.metrics.registry.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "inferenceservice", "result": "success"}
        )
        assert reconciles is not None
        assert reconciles >= 200
        assert h.writes() - before == 0


def error_reconciles(h: Harness) -> float:
    value = h.manager.metrics.registry.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "inferenceservice", "result": "error"}
    )
    return value or 0.0


async def assert_no_retry_loop(h: Harness) -> None:
    """Settled, and no reconcile fails over the next two seconds (a user error is not retried)."""
    await h.settle()
    before = error_reconciles(h)
    await asyncio.sleep(2)
    assert error_reconciles(h) == before == 0


async def test_broken_deploy_key_is_a_condition_and_an_event_not_a_loop(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "dep"))
    annotated = sklearn_isvc(ns, "annotated")
    annotated["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    await h.create(annotated)
    await h.ready("dep")
    await h.ready("annotated")
    await h.set_config("deploy", '{"defaultDeploymentMode": ')
    broken = await h.isvc_when("dep", lambda o: condition(o, "Ready").get("status") == "False")
    cond = condition(broken, "PredictorReady")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidConfiguration")
    assert 'key "deploy": invalid JSON' in cond["message"]
    assert condition(broken, "Ready")["message"] == cond["message"], "no stale Ready=True"
    event = await h.wait_event("InvalidConfiguration", "dep")
    assert event["type"] == "Warning"
    await assert_no_retry_loop(h)
    # The deploy key is not needed by an InferenceService that names its mode.
    assert condition(await h.get("annotated"), "Ready")["status"] == "True"


async def test_broken_explainers_key_only_concerns_inferenceservices_with_an_explainer(h: Harness) -> None:
    ns = h.namespace
    await h.create(sklearn_isvc(ns, "plain"))
    explained = sklearn_isvc(ns, "explained", explainer={"alibi": {"type": "AnchorTabular"}})
    await h.create(explained)
    await h.ready("plain")
    await h.ready("explained")
    await h.set_config("explainers", "{not json")
    broken = await h.isvc_when("explained", lambda o: condition(o, "Ready").get("status") == "False")
    cond = condition(broken, "ExplainerReady")
    assert (cond["status"], cond["reason"]) == ("False", "InvalidConfiguration")
    assert 'key "explainers"' in cond["message"]
    assert condition(broken, "IngressReady")["reason"] == "Explainer ingress not created"
    assert condition(broken, "Ready")["message"] == cond["message"]
    await h.wait_event("InvalidConfiguration", "explained")

    # The InferenceService without an explainer stays Ready and keeps following its spec.
    def two_replicas(obj: Object) -> None:
        obj["spec"]["predictor"]["minReplicas"] = 2

    await h.update_spec("plain", two_replicas)

    def min_scale_two(ksvc: Object) -> bool:
        annotations = ksvc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        return bool(annotations.get("autoscaling.knative.dev/min-scale") == "2")

    await h.until(lambda: get_or_empty(h, KNATIVE_SERVICES, "plain-predictor"), min_scale_two)
    # The new revision rolls out (Ready is Unknown meanwhile), then the object is Ready again.
    plain = await h.ready("plain")
    assert condition(plain, "PredictorReady")["status"] == "True"
    assert not [e for e in await h.events("InvalidConfiguration") if e["involvedObject"]["name"] == "plain"]
    await assert_no_retry_loop(h)


async def test_a_malformed_runtime_is_named_to_the_inferenceservice_that_uses_it(h: Harness) -> None:
    """A runtime that passes the CRD schema but not our model: its user learns what is wrong with it."""
    ns = h.namespace
    runtime_name = f"broken-{ns}"
    broken = copy.deepcopy(SKLEARN_RUNTIME)
    broken["metadata"] = {"name": runtime_name}
    broken["spec"]["containers"][0]["env"] = [{"name": "A", "valueFrom": "not-an-object"}]
    await h.client.create(CLUSTER_SERVING_RUNTIMES, broken)
    try:
        await h.create(sklearn_isvc(ns, "healthy"))
        user = sklearn_isvc(ns, "user")
        user["spec"]["predictor"]["model"]["runtime"] = runtime_name
        await h.create(user)
        bad = await h.isvc_when("user", lambda o: condition(o, "Ready").get("status") == "False")
        cond = condition(bad, "PredictorReady")
        assert cond["reason"] == "RuntimeNotRecognized"
        assert cond["message"].startswith(f'ClusterServingRuntime "{runtime_name}" cannot be used: ')
        assert "valueFrom" in cond["message"]
        assert "No ServingRuntimes" not in cond["message"]
        assert bad["status"]["modelStatus"]["lastFailureInfo"]["reason"] == "RuntimeNotRecognized"
        await h.wait_event("RuntimeNotRecognized", "user")
        await h.ready("healthy")
        await assert_no_retry_loop(h)
    finally:
        await h.client.delete(CLUSTER_SERVING_RUNTIMES, runtime_name)


async def test_model_config_exists_even_when_no_runtime_serves_the_predictor(h: Harness) -> None:
    ns = h.namespace
    obj = sklearn_isvc(ns, "mms")
    obj["spec"]["predictor"] = {"model": {"modelFormat": {"name": "no-such-format"}}}
    await h.create(obj)
    bad = await h.isvc_when("mms", lambda o: condition(o, "Ready").get("status") == "False")
    assert condition(bad, "PredictorReady")["reason"] == "NoSupportingRuntime"
    configmap = await h.client.get(CONFIGMAPS, "modelconfig-mms-0", ns)
    assert configmap["data"] == {"models.json": "[]"}


async def test_missing_ingress_key_uses_kserve_defaults(h: Harness) -> None:
    """KServe reads a missing `ingress` key as an empty one: no gateway, so no ExternalName to point at."""
    ns = h.namespace
    await h.client.patch(CONFIGMAPS, "inferenceservice-config", {"data": {"ingress": None}}, ns)
    await h.create(sklearn_isvc(ns, "noingress"))
    isvc = await h.isvc_when("noingress", lambda o: condition(o, "IngressReady").get("status") == "False")
    cond = condition(isvc, "IngressReady")
    assert cond["reason"] == "InvalidConfiguration"
    assert "externalName" in cond["message"]
    assert 'key "ingress"' in cond["message"]
    assert condition(isvc, "PredictorReady")["status"] == "True", "the components do not need the key"
    await assert_no_retry_loop(h)


def event_counts(events: list[Object], name: str) -> dict[str, int]:
    """Event reason -> its count, for the Events about the InferenceService `name`."""
    counts: dict[str, int] = {}
    for event in events:
        if event["involvedObject"]["name"] == name and event["involvedObject"]["kind"] == "InferenceService":
            counts[event["reason"]] = counts.get(event["reason"], 0) + int(event.get("count") or 1)
    return counts


async def test_a_user_problem_is_one_event_however_often_it_is_reconciled(h: Harness) -> None:
    ns = h.namespace
    obj = sklearn_isvc(ns, "norun")
    obj["spec"]["predictor"]["model"]["runtime"] = "does-not-exist"
    await h.create(obj)
    await h.wait_event("RuntimeNotRecognized", "norun")
    for value in ("1", "2", "3"):
        # Each change of the ConfigMap re-queues every InferenceService.
        await h.client.patch(
            CONFIGMAPS, "inferenceservice-config", {"metadata": {"labels": {"v": value}}}, ns
        )
        await h.settle()
    for informer in h.manager.cache.informers:
        informer.resync()
    await h.settle()
    await h.events_written()
    assert event_counts(await h.events(), "norun") == {"RuntimeNotRecognized": 1}


async def test_an_api_server_outage_is_one_internal_error_and_one_update_failed(
    kubeconfig: Path, namespace: str, local_cluster: LocalCluster
) -> None:
    """KServe v0.11 emits both on every failed attempt: 9 of each for a 7-second outage."""
    async with running_harness(kubeconfig, namespace) as h:
        await h.create(sklearn_isvc(namespace, "flight"))
        await h.ready("flight")
        await h.settle()
        errors = error_reconciles(h)
        # In flight when the API server goes: a spec change whose children and status are not written yet.
        cached = await h.get("flight")
        cached["spec"]["predictor"]["minReplicas"] = 2
        cached["metadata"]["resourceVersion"] = "1"  # older than the server's: the re-list replaces it
        cached.pop("status")
        await asyncio.to_thread(local_cluster.stop_apiserver, True)
        try:
            h.manager.cache.informer(INFERENCE_SERVICES).store.put(cached)
            (controller,) = (c for c in h.manager.controllers if c.name == "inferenceservice")
            controller.queue.add(Request(namespace, "flight"))
            await asyncio.sleep(7)
        finally:
            await asyncio.to_thread(local_cluster.start_apiserver)
        await h.ready("flight")
        await h.settle()
        await h.events_written()
        assert error_reconciles(h) - errors >= 5, "the reconcile failed again and again during the outage"
        counts = event_counts(await h.events(), "flight")
        assert (counts.get("InternalError"), counts.get("UpdateFailed")) == (1, 1), counts
