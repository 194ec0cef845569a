"""The InferenceService reconcile, row by row, over the shared fake cluster.

Each row is the objects that exist (the InferenceService, `inferenceservice-config`, runtimes, children with
their status) and everything one reconcile must produce: the writes in order, the status, the events, the
result or the error. Knative itself is not running: a Knative Service's status is given in the row, as
Knative would have written it. "Converged" objects are what repeated reconciles leave behind, so a row can
start from a steady state without spelling out every field the controller writes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis import constants as c
from apis.inferenceservice import InferenceService
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    INFERENCE_SERVICES,
    INGRESSES,
    KNATIVE_SERVICES,
    SERVING_RUNTIMES,
    TRAINED_MODELS,
    VIRTUAL_SERVICES,
)
from manager.client import CONFIGMAPS, PODS, SERVICES, Object, Resource
from manager.errors import ServerUnavailable
from manager.kindreconciler import KindReconciler
from manager.reconcile import Request
from reconcilers.apply import with_fingerprint
from reconcilers.inferenceservice import inferenceservice_reconciler
from reconcilers.knative_service import desired_knative_service
from tests.support.fakecluster import NOW, FakeCluster, TableRow, run_row

REPO = Path(__file__).resolve().parents[2]
NS = "models"
CONFIG_NS = "kserve"
KEY = f"{NS}/sk"
ISVC = f"inferenceservices.serving.kserve.io {KEY}"
KSVC = "services.serving.knative.dev"
VS = "virtualservices.networking.istio.io"

RUNTIME: Object = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterServingRuntime",
    "metadata": {"name": "kserve-sklearnserver"},
    "spec": {
        "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True, "priority": 1}],
        "protocolVersions": ["v1", "v2"],
        "containers": [
            {
                "name": "kserve-container",
                "image": "kserve/sklearnserver:latest",
                "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"],
            }
        ],
    },
}
CONFIG: Object = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": c.INFERENCE_SERVICE_CONFIGMAP, "namespace": CONFIG_NS},
    "data": yaml.safe_load((REPO / "config" / "configmap" / "inferenceservice.yaml").read_text())["data"],
}
SKLEARN = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://bucket/model"}}
TRANSFORMER = {"containers": [{"name": "kserve-container", "image": "example/transformer:1"}]}


def isvc_obj(
    *,
    predictor: Object | None = None,
    finalizer: bool = False,
    annotations: dict[str, str] | None = None,
    **components: Object,
) -> Object:
    meta: Object = {"name": "sk", "namespace": NS, "uid": "isvc-uid", "generation": 1}
    if finalizer:
        meta["finalizers"] = [c.INFERENCE_SERVICE_FINALIZER]
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": copy.deepcopy(predictor if predictor is not None else SKLEARN), **components},
    }


def ready_ksvc_status(name: str) -> Object:
    """What Knative reports for a Knative Service whose first revision is Ready."""
    revision = f"{name}-00001"
    return {
        "observedGeneration": 1,
        "conditions": [
            {"type": t, "status": "True"} for t in ("ConfigurationsReady", "Ready", "RoutesReady")
        ],
        "url": f"http://{name}.{NS}.example.com",
        "address": {"url": f"http://{name}.{NS}.svc.cluster.local"},
        "latestCreatedRevisionName": revision,
        "latestReadyRevisionName": revision,
        "traffic": [{"revisionName": revision, "latestRevision": True, "percent": 100}],
    }


def applied_ksvc(isvc: Object, component: str = c.PREDICTOR, *, ready: bool = True) -> Object:
    """The Knative Service as this controller applies it, with Knative's status."""
    ksvc = with_fingerprint(
        desired_knative_service(InferenceService.from_object(isvc), component, runtimes=[RUNTIME])
    )
    if ready:
        ksvc["status"] = ready_ksvc_status(ksvc["metadata"]["name"])
    return ksvc


def knative_defaults(resource: Resource, obj: Object) -> None:
    """Knative's webhook fills in what the controller leaves out."""
    if resource == KNATIVE_SERVICES:
        obj["spec"]["template"]["spec"].setdefault("timeoutSeconds", 300)


def new_cluster() -> tuple[FakeCluster, KindReconciler[InferenceService]]:
    cluster = FakeCluster(defaulter=knative_defaults)
    for resource in (
        INFERENCE_SERVICES,
        KNATIVE_SERVICES,
        SERVICES,
        VIRTUAL_SERVICES,
        SERVING_RUNTIMES,
        CLUSTER_SERVING_RUNTIMES,
        CLUSTER_STORAGE_CONTAINERS,
        DEPLOYMENTS,
        HORIZONTAL_POD_AUTOSCALERS,
        INGRESSES,
    ):
        cluster.watch(resource)
    cluster.watch(CONFIGMAPS, CONFIG_NS)
    pods = cluster.watch(PODS, labels=c.INFERENCE_SERVICE_LABEL)
    reconciler = inferenceservice_reconciler(
        cluster.client, cluster.cache, cluster.recorder, config_namespace=CONFIG_NS, pods=pods
    )
    return cluster, reconciler


@dataclass
class Row(TableRow):
    """A row whose cluster may start converged: `converge` is reconciled until it stops changing (in a
    scratch cluster), then the row's own `objects` are added over the result."""

    converge: Sequence[tuple[Resource, Object]] = ()


KINDS = (
    INFERENCE_SERVICES,
    KNATIVE_SERVICES,
    SERVICES,
    VIRTUAL_SERVICES,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    INGRESSES,
    CLUSTER_SERVING_RUNTIMES,
    CONFIGMAPS,
)


async def converged(objects: Sequence[tuple[Resource, Object]]) -> list[tuple[Resource, Object]]:
    cluster, reconciler = new_cluster()
    for resource, obj in objects:
        cluster.add(resource, obj)
    for _ in range(5):
        cluster.sync()
        await reconciler.reconcile(Request(NS, "sk"))
        if not cluster.writes():
            return [(resource, obj) for resource in KINDS for obj in cluster.objects(resource)]
    raise AssertionError("the objects do not converge")


async def run(row: Row) -> FakeCluster:
    cluster, reconciler = new_cluster()
    objects = [*(await converged(row.converge) if row.converge else ()), *row.objects]
    await run_row(replace(row, objects=objects), cluster, reconciler, resource=INFERENCE_SERVICES)
    return cluster


BASE = [(CONFIGMAPS, CONFIG), (CLUSTER_SERVING_RUNTIMES, RUNTIME)]
READY_WORLD = [*BASE, (INFERENCE_SERVICES, isvc_obj()), (KNATIVE_SERVICES, applied_ksvc(isvc_obj()))]
UNKNOWN_RUNTIME = {"model": {**SKLEARN["model"], "runtime": "nope"}}
NO_RUNTIME_MESSAGE = "No ServingRuntimes or ClusterServingRuntimes with the name: nope"
FOREIGN_OWNER = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "name": "other",
    "uid": "other-uid",
    "controller": True,
}
NOT_OWNED = 'already exists and is not controlled by InferenceService "sk"'
UNAVAILABLE = ServerUnavailable(503, "ServiceUnavailable", "etcd is unhappy")


def foreign(resource: Resource, name: str) -> tuple[Resource, Object]:
    meta = {"name": name, "namespace": NS, "ownerReferences": [FOREIGN_OWNER]}
    return resource, {"metadata": meta, "spec": {}}


Check = Callable[[FakeCluster], None]


def child(resource: Resource, name: str, **want: Any) -> Check:
    """A check that the child exists, with the given top-level fields."""

    def check(cluster: FakeCluster) -> None:
        obj = cluster.object(resource, name, NS)
        assert obj is not None, f"{resource} {name} is missing"
        for key, value in want.items():
            assert obj.get(key) == value, key

    return check


def edit_isvc(change: Callable[[Object], None]) -> Check:
    """A row set-up: the user edits the InferenceService (its status stays as the controller left it)."""

    def setup(cluster: FakeCluster) -> None:
        obj = cluster.object(INFERENCE_SERVICES, "sk", NS)
        assert obj is not None
        change(obj)
        cluster.add(INFERENCE_SERVICES, obj)

    return setup


def absent(resource: Resource, name: str) -> Check:
    def check(cluster: FakeCluster) -> None:
        assert cluster.object(resource, name, NS) is None, f"{resource} {name} exists"

    return check


def routes_to(host: str) -> Check:
    """The VirtualService's default route sets the Host header to `host`'s cluster-local name."""

    def check(cluster: FakeCluster) -> None:
        vs = cluster.object(VIRTUAL_SERVICES, "sk", NS)
        assert vs is not None
        assert vs["spec"]["http"][-1]["headers"]["request"]["set"]["Host"] == f"{host}.svc.cluster.local"

    return check


def all_of(*checks: Check) -> Check:
    def check(cluster: FakeCluster) -> None:
        for one in checks:
            one(cluster)

    return check


ROWS = [
    Row(
        "a new InferenceService: the finalizer, its Knative Service, a status waiting for Knative",
        KEY,
        objects=[*BASE, (INFERENCE_SERVICES, isvc_obj())],
        want_writes=[f"patch {ISVC}", f"apply {KSVC} {NS}/sk-predictor", f"update-status {ISVC}"],
        want_status={
            "observedGeneration": 1,
            "conditions": {
                "PredictorReady": ("Unknown",),
                "IngressReady": ("Unknown",),
                "Ready": ("Unknown",),
            },
        },
        check=child(KNATIVE_SERVICES, "sk-predictor"),
    ),
    Row(
        "a Ready Knative Service: the ingress, the URLs, Ready and its event",
        KEY,
        objects=[
            *BASE,
            (INFERENCE_SERVICES, isvc_obj(finalizer=True)),
            (KNATIVE_SERVICES, applied_ksvc(isvc_obj())),
        ],
        want_writes=[f"apply services {KEY}", f"apply {VS} {KEY}", f"update-status {ISVC}"],
        want_status={
            "url": f"http://sk.{NS}.example.com",
            "address": {"url": f"http://sk.{NS}.svc.cluster.local"},
            "conditions": {
                "PredictorReady": ("True",),
                "IngressReady": ("True",),
                "RoutesReady": ("True",),
                "LatestDeploymentReady": ("True",),
                "Ready": ("True",),
            },
        },
        want_events=["Normal InferenceServiceReady InferenceService [sk] is Ready"],
    ),
    Row("a steady InferenceService: no write, no event", KEY, converge=READY_WORLD),
    Row(
        "the predictor's Knative Service fails: Ready says why, and the NotReady event",
        KEY,
        converge=READY_WORLD,
        objects=[
            (
                KNATIVE_SERVICES,
                {
                    **applied_ksvc(isvc_obj()),
                    "status": {
                        **ready_ksvc_status("sk-predictor"),
                        "conditions": [
                            {
                                "type": "ConfigurationsReady",
                                "status": "False",
                                "reason": "RevisionFailed",
                                "message": "boom",
                            },
                            {
                                "type": "Ready",
                                "status": "False",
                                "reason": "RevisionFailed",
                                "message": "boom",
                            },
                            {"type": "RoutesReady", "status": "True"},
                        ],
                    },
                },
            )
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("False", "RevisionFailed"),
                "Ready": ("False", "RevisionFailed", "boom"),
            }
        },
        want_events=["Warning InferenceServiceNotReady InferenceService [sk] is no longer Ready"],
    ),
    Row(
        "an unknown runtime: a condition, the model status and one event",
        KEY,
        objects=[*BASE, (INFERENCE_SERVICES, isvc_obj(predictor=UNKNOWN_RUNTIME))],
        want_writes=[f"patch {ISVC}", f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("False", "RuntimeNotRecognized", NO_RUNTIME_MESSAGE),
                "Ready": ("False", "RuntimeNotRecognized", NO_RUNTIME_MESSAGE),
            },
            "modelStatus": {
                "transitionStatus": "InvalidSpec",
                "states": {"targetModelState": "FailedToLoad"},
                "lastFailureInfo": {
                    "reason": "RuntimeNotRecognized",
                    "message": "Waiting for runtime to become available",
                },
            },
        },
        want_events=[f"Warning RuntimeNotRecognized {NO_RUNTIME_MESSAGE}"],
    ),
    Row(
        "an unknown runtime already reported: no write, no second event",
        KEY,
        converge=[*BASE, (INFERENCE_SERVICES, isvc_obj(predictor=UNKNOWN_RUNTIME))],
    ),
    Row(
        "a Knative Service of that name someone else controls is never overwritten",
        KEY,
        objects=[
            *BASE,
            (INFERENCE_SERVICES, isvc_obj(finalizer=True)),
            foreign(KNATIVE_SERVICES, "sk-predictor"),
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": (
                    "False",
                    "KnativeServiceNotOwned",
                    f'Knative Service "{NS}/sk-predictor" {NOT_OWNED}',
                ),
            }
        },
        want_events=[f'Warning KnativeServiceNotOwned Knative Service "{NS}/sk-predictor" {NOT_OWNED}'],
    ),
    Row(
        "a Service named like the InferenceService, controlled by another object, holds the ingress back",
        KEY,
        objects=[
            *BASE,
            (INFERENCE_SERVICES, isvc_obj(finalizer=True)),
            (KNATIVE_SERVICES, applied_ksvc(isvc_obj())),
            foreign(SERVICES, "sk"),
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("True",),
                "IngressReady": ("False", "ServiceNotOwned", f'Service "{NS}/sk" {NOT_OWNED}'),
                "Ready": ("False", "ServiceNotOwned"),
            }
        },
        want_events=[f'Warning ServiceNotOwned Service "{NS}/sk" {NOT_OWNED}'],
        check=absent(VIRTUAL_SERVICES, "sk"),
    ),
    Row(
        "no inferenceservice-config: a condition and one event",
        KEY,
        objects=[(INFERENCE_SERVICES, isvc_obj(finalizer=True))],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("False", "ConfigMapMissing"),
                "Ready": ("False", "ConfigMapMissing"),
            }
        },
        want_events=[f"Warning ConfigMapMissing ConfigMap {CONFIG_NS}/inferenceservice-config not found"],
    ),
    Row(
        "ModelMesh is not supported",
        KEY,
        objects=[
            *BASE,
            (
                INFERENCE_SERVICES,
                isvc_obj(finalizer=True, annotations={c.DEPLOYMENT_MODE_ANNOTATION: "ModelMesh"}),
            ),
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={"conditions": {"Ready": ("False", "UnsupportedDeploymentMode")}},
        want_events=[
            'Warning UnsupportedDeploymentMode deployment mode "ModelMesh" is not supported by this '
            f'controller; it supports "Serverless", "RawDeployment" (set by annotation '
            f"{c.DEPLOYMENT_MODE_ANNOTATION} or config key deploy)"
        ],
        check=all_of(absent(KNATIVE_SERVICES, "sk-predictor"), absent(DEPLOYMENTS, "sk-predictor")),
    ),
    Row(
        "an API failure: InternalError and UpdateFailed, then a retry",
        KEY,
        objects=[*BASE, (INFERENCE_SERVICES, isvc_obj(finalizer=True))],
        failures=[
            ("apply", KNATIVE_SERVICES, UNAVAILABLE),
            ("update-status", INFERENCE_SERVICES, UNAVAILABLE),
        ],
        want_writes=[f"apply {KSVC} {NS}/sk-predictor", f"update-status {ISVC}"],
        want_events=[
            f'Warning UpdateFailed Failed to update status for InferenceService "sk": {UNAVAILABLE}',
            f"Warning InternalError {UNAVAILABLE}",
        ],
        want_error=ServerUnavailable,
    ),
    Row(
        "a transformer that leaves the spec: its Knative Service goes, the route points at the predictor",
        KEY,
        converge=[
            *BASE,
            (INFERENCE_SERVICES, isvc_obj(transformer=TRANSFORMER)),
            (KNATIVE_SERVICES, applied_ksvc(isvc_obj())),
            (KNATIVE_SERVICES, applied_ksvc(isvc_obj(transformer=TRANSFORMER), c.TRANSFORMER)),
        ],
        setup=edit_isvc(lambda obj: obj["spec"].pop("transformer")),
        want_writes=[f"delete {KSVC} {NS}/sk-transformer", f"apply {VS} {KEY}", f"update-status {ISVC}"],
        want_status={"conditions": {"Ready": ("True",)}},
        check=all_of(absent(KNATIVE_SERVICES, "sk-transformer"), routes_to(f"sk-predictor.{NS}")),
    ),
    Row(
        "a deleted InferenceService: its TrainedModels go, then the finalizer",
        KEY,
        objects=[
            (
                INFERENCE_SERVICES,
                {
                    **isvc_obj(finalizer=True),
                    "metadata": {**isvc_obj(finalizer=True)["metadata"], "deletionTimestamp": NOW},
                },
            ),
            (
                TRAINED_MODELS,
                {"metadata": {"name": "tm", "namespace": NS, "labels": {c.TRAINED_MODEL_ISVC_LABEL: "sk"}}},
            ),
        ],
        want_writes=[f"delete trainedmodels.serving.kserve.io {NS}/tm", f"patch {ISVC}"],
        check=absent(INFERENCE_SERVICES, "sk"),
    ),
    Row(
        "a multi-model predictor gets its model config even when no runtime serves it",
        KEY,
        objects=[
            *BASE,
            (
                INFERENCE_SERVICES,
                isvc_obj(finalizer=True, predictor={"model": {"modelFormat": {"name": "none"}}}),
            ),
        ],
        want_writes=[f"create configmaps {NS}/modelconfig-sk-0", f"update-status {ISVC}"],
        want_status={"conditions": {"PredictorReady": ("False", "NoSupportingRuntime")}},
        want_events=[
            "Warning NoSupportingRuntime no runtime found to support predictor with model type: none"
        ],
        check=child(CONFIGMAPS, "modelconfig-sk-0", data={"models.json": "[]"}),
    ),
    Row(
        "an InferenceService the model cannot read: one event, nothing written",
        KEY,
        objects=[(INFERENCE_SERVICES, {**isvc_obj(), "spec": {"predictor": "not an object"}})],
        want_events=[
            "Warning InvalidSpec InferenceService models/sk: spec.predictor: "
            "Input should be a valid dictionary or instance of PredictorSpec"
        ],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_inferenceservice_reconcile(row: Row) -> None:
    await run(row)


async def test_a_user_problem_is_one_event_however_often_it_is_reconciled() -> None:
    cluster, reconciler = new_cluster()
    for resource, obj in [*BASE, (INFERENCE_SERVICES, isvc_obj(predictor=UNKNOWN_RUNTIME))]:
        cluster.add(resource, obj)
    for _ in range(5):
        cluster.sync()
        await reconciler.reconcile(Request(NS, "sk"))
    assert cluster.recorder.messages() == [f"Warning RuntimeNotRecognized {NO_RUNTIME_MESSAGE}"]


async def test_an_outage_is_one_internal_error_and_one_update_failed() -> None:
    """KServe v0.11 emits both on every failed attempt: 9 each for a few seconds of outage."""
    cluster, reconciler = new_cluster()
    for resource, obj in [*BASE, (INFERENCE_SERVICES, isvc_obj(finalizer=True))]:
        cluster.add(resource, obj)
    cluster.fail("apply", KNATIVE_SERVICES, UNAVAILABLE, times=9)
    cluster.fail("update-status", INFERENCE_SERVICES, UNAVAILABLE, times=9)
    for _ in range(9):
        with pytest.raises(ServerUnavailable):
            await reconciler.reconcile(Request(NS, "sk"))
    await reconciler.reconcile(Request(NS, "sk"))
    assert cluster.recorder.messages() == [
        f'Warning UpdateFailed Failed to update status for InferenceService "sk": {UNAVAILABLE}',
        f"Warning InternalError {UNAVAILABLE}",
    ]
    assert cluster.object(KNATIVE_SERVICES, "sk-predictor", NS) is not None
