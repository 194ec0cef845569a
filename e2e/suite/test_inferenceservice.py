"""An sklearn InferenceService end to end: Ready with a URL, events, predictions (node and kind), canary,
cluster-local, and deletion cleaning up every child."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable

import pytest

from apis.resources import INFERENCE_SERVICES, KNATIVE_SERVICES, VIRTUAL_SERVICES
from e2e.suite.env import DeployedEnv, Env, KindEnv
from e2e.suite.support import (
    IRIS_INSTANCES,
    condition,
    get_or_empty,
    isvc_pods,
    isvc_when,
    ready,
    traffic,
    until,
    update_isvc,
)
from manager.client import EVENTS, SERVICES, Client, Object

V2_REQUEST = {
    "inputs": [
        {
            "name": "input-0",
            "shape": [2, 4],
            "datatype": "FP32",
            "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]],
        }
    ]
}


async def test_sklearn_becomes_ready_with_url(env: Env, admin: Client, namespace: str) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "sklearn-iris"))
    isvc = await ready(admin, namespace, "sklearn-iris", env.ready_timeout)
    assert isvc["status"]["url"] == f"http://sklearn-iris.{namespace}.{env.domain}"
    assert isvc["status"]["address"]["url"] == f"http://sklearn-iris.{namespace}.svc.cluster.local"
    for cond in ("PredictorReady", "IngressReady"):
        assert condition(isvc, cond)["status"] == "True", cond
    predictor = isvc["status"]["components"]["predictor"]
    assert predictor["latestReadyRevision"] == "sklearn-iris-predictor-00001"
    assert predictor["url"] == f"http://sklearn-iris-predictor.{namespace}.{env.domain}"


def needs_pods(env: Env) -> None:
    if not isinstance(env, DeployedEnv):
        pytest.skip("local mode runs no containers: predictions are verified on the node and on kind")


async def test_v1_prediction_through_the_revision_service(env: Env, admin: Client, namespace: str) -> None:
    needs_pods(env)
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "sklearn-v1"))
    await ready(admin, namespace, "sklearn-v1", env.ready_timeout)
    status, body = await env.predict(admin, namespace, "sklearn-v1", IRIS_INSTANCES)
    assert (status, body) == (200, {"predictions": [1, 1]})


async def test_v2_prediction_through_the_revision_service(env: Env, admin: Client, namespace: str) -> None:
    needs_pods(env)
    isvc = env.isvc(namespace, "sklearn-v2")
    # As KServe's own test_sklearn_v2: with protocol v2, MLServer (priority 2) would be auto-selected.
    isvc["spec"]["predictor"]["model"]["protocolVersion"] = "v2"
    isvc["spec"]["predictor"]["model"]["runtime"] = "kserve-sklearnserver"
    await admin.create(INFERENCE_SERVICES, isvc)
    await ready(admin, namespace, "sklearn-v2", env.ready_timeout)
    status, body = await env.predict(admin, namespace, "sklearn-v2", V2_REQUEST, protocol="v2")
    assert status == 200, body
    assert body["model_name"] == "sklearn-v2"
    (output,) = body["outputs"]
    assert output["shape"] == [2]
    assert [int(v) for v in output["data"]] == [1, 1]


async def test_prediction_through_the_ingress(env: Env, admin: Client, namespace: str) -> None:
    if not isinstance(env, KindEnv):
        pytest.skip("only kind has an Istio ingress gateway (offline: the revision Service is used instead)")
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "sklearn-iris"))
    await ready(admin, namespace, "sklearn-iris", env.ready_timeout)
    host = f"sklearn-iris.{namespace}.{env.domain}"
    with env.port_forward("istio-system", "svc/istio-ingressgateway", 80) as port:
        status, body = await asyncio.to_thread(predict, port, host, "sklearn-iris")
    assert status == 200
    assert body == {"predictions": [1, 1]}


def predict(port: int, host: str, model: str) -> tuple[int, object]:
    """POST the iris instances to the ingress gateway with the InferenceService's Host header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/{model}:predict",
        data=json.dumps(IRIS_INSTANCES).encode(),
        headers={"Host": host, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return resp.status, json.loads(resp.read())


async def test_events_are_visible_and_described(env: Env, admin: Client, namespace: str) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "evented"))
    await ready(admin, namespace, "evented", env.ready_timeout)

    async def events() -> list[Object]:
        page = await admin.list_page(
            EVENTS,
            namespace,
            field_selector="involvedObject.kind=InferenceService,involvedObject.name=evented",
        )
        return list(page.get("items") or [])

    found = await until(
        events,
        lambda items: any(e.get("reason") == "InferenceServiceReady" for e in items),
        30,
        "Ready event",
    )
    event = next(e for e in found if e["reason"] == "InferenceServiceReady")
    assert event["type"] == "Normal"
    assert event["message"] == "InferenceService [evented] is Ready"
    assert event["source"]["component"] == "v1beta1Controllers"

    described = env.run_kubectl("describe", "inferenceservice", "evented", "-n", namespace)
    assert described.returncode == 0, described.stderr
    section = described.stdout.split("Events:", 1)
    assert len(section) == 2, described.stdout
    rows = [line.split() for line in section[1].splitlines()]
    assert any(
        row[:2] == ["Normal", "InferenceServiceReady"] and "v1beta1Controllers" in row for row in rows
    ), described.stdout


def _set_runtime_version(version: str, canary: int | None) -> Callable[[Object], None]:
    def change(obj: Object) -> None:
        predictor = obj["spec"]["predictor"]
        predictor["model"]["runtimeVersion"] = version
        if canary is None:
            predictor.pop("canaryTrafficPercent", None)
        else:
            predictor["canaryTrafficPercent"] = canary

    return change


async def test_canary_rollout_and_promotion(env: Env, admin: Client, namespace: str) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "canary"))
    first = await ready(admin, namespace, "canary", env.ready_timeout)
    assert first["status"]["components"]["predictor"]["latestRolledoutRevision"] == "canary-predictor-00001"
    stable = first["spec"]["predictor"]["model"].get("runtimeVersion")
    version = "v0.11.1"  # an older sklearnserver release than the runtime default: a real image on kind
    assert version != stable

    await update_isvc(admin, namespace, "canary", _set_runtime_version(version, 10))
    split = [("canary-predictor-00001", 90, False, "prev"), ("canary-predictor-00002", 10, True, None)]
    await isvc_when(
        admin, namespace, "canary", lambda o: traffic(o) == split, env.ready_timeout, "90/10 canary split"
    )
    if isinstance(env, DeployedEnv):
        for revision in ("canary-predictor-00001", "canary-predictor-00002"):
            status, body = await env.predict(admin, namespace, "canary", IRIS_INSTANCES, revision=revision)
            assert (status, body) == (200, {"predictions": [1, 1]}), revision
    ksvc = await admin.get(KNATIVE_SERVICES, "canary-predictor", namespace)
    assert {"latestRevision": True, "percent": 10} in [
        {k: v for k, v in t.items() if k in ("latestRevision", "percent")} for t in ksvc["spec"]["traffic"]
    ]

    await update_isvc(admin, namespace, "canary", _set_runtime_version(version, None))

    def promoted(obj: Object) -> bool:
        predictor = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        return predictor.get("latestRolledoutRevision") == "canary-predictor-00002" and traffic(obj) == [
            ("canary-predictor-00002", 100, True, None)
        ]

    done = await isvc_when(admin, namespace, "canary", promoted, env.ready_timeout, "promoted to 100%")
    assert done["status"]["components"]["predictor"]["previousRolledoutRevision"] == "canary-predictor-00001"
    assert condition(done, "Ready")["status"] == "True"


async def test_cluster_local_isvc_has_only_an_internal_url(env: Env, admin: Client, namespace: str) -> None:
    isvc = env.isvc(namespace, "private", labels={"networking.knative.dev/visibility": "cluster-local"})
    await admin.create(INFERENCE_SERVICES, isvc)
    done = await ready(admin, namespace, "private", env.ready_timeout)
    assert done["status"]["url"] == f"http://private.{namespace}.svc.cluster.local"
    vs = await admin.get(VIRTUAL_SERVICES, "private", namespace)
    assert vs["spec"]["hosts"] == [f"private.{namespace}.svc.cluster.local"]
    assert vs["spec"]["gateways"] == ["knative-serving/knative-local-gateway"]
    ksvc = await admin.get(KNATIVE_SERVICES, "private-predictor", namespace)
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert "networking.knative.dev/visibility" not in (
        ksvc["spec"]["template"]["metadata"].get("labels") or {}
    )
    assert ksvc["status"]["url"].endswith(".svc.cluster.local")


async def test_delete_cleans_up_every_child(env: Env, admin: Client, namespace: str) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "doomed"))
    await ready(admin, namespace, "doomed", env.ready_timeout)
    assert await isvc_pods(admin, namespace, "doomed")
    await admin.delete(INFERENCE_SERVICES, "doomed", namespace)
    gc_timeout = 120.0
    await until(
        lambda: get_or_empty(admin, INFERENCE_SERVICES, "doomed", namespace),
        lambda o: not o,
        gc_timeout,
        "the finalizer ran and the InferenceService is gone",
    )
    for resource, name in (
        (KNATIVE_SERVICES, "doomed-predictor"),
        (VIRTUAL_SERVICES, "doomed"),
        (SERVICES, "doomed"),
    ):
        await until(
            lambda r=resource, n=name: get_or_empty(admin, r, n, namespace),  # type: ignore[misc]
            lambda o: not o,
            gc_timeout,
            f"{resource.kind} {name} garbage-collected",
        )
    await until(lambda: isvc_pods(admin, namespace, "doomed"), lambda pods: not pods, gc_timeout, "pods gone")
