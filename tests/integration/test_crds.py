"""The CRDs in config/crd are accepted by the API server and keep what the typed models round-trip."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from apis.inferenceservice import InferenceService
from apis.knative import KnativeServiceStatus
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    INFERENCE_SERVICES,
    SERVING_RUNTIMES,
    TRAINED_MODELS,
)
from apis.servingruntime import ClusterServingRuntime, ServingRuntime, select_runtime
from apis.storagecontainer import ClusterStorageContainer, storage_container_for
from apis.trainedmodel import TrainedModel
from e2e.localcluster.apply import apply_manifests
from e2e.localcluster.cluster import LocalCluster

CRD_DIR = Path(__file__).resolve().parents[2] / "config" / "crd"


@pytest.fixture(scope="module")
def crds(local_cluster: LocalCluster) -> LocalCluster:
    apply_manifests(local_cluster.kubeconfig_path, [CRD_DIR])
    return local_cluster


def ok(result: tuple[int, dict[str, Any]], *expected: int) -> dict[str, Any]:
    status, body = result
    assert status in (expected or (200, 201)), f"HTTP {status}: {body.get('message')}"
    return body


def isvc_body(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sklearn-iris", "namespace": namespace},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "canaryTrafficPercent": 10,
                "futureComponentField": {"nested": [1, 2]},
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model",
                    "futureModelField": True,
                    "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
                },
            }
        },
    }


def test_crds_are_established_with_kserve_names(crds: LocalCluster) -> None:
    plurals = ("inferenceservices", "trainedmodels", "servingruntimes", "clusterservingruntimes")
    for plural in (*plurals, "clusterstoragecontainers"):
        body = ok(
            crds.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.serving.kserve.io"
            )
        )
        conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
        assert conditions.get("Established") == "True"
    isvc = ok(
        crds.request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/inferenceservices.serving.kserve.io",
        )
    )
    assert isvc["spec"]["names"]["shortNames"] == ["isvc"]
    columns = [c["name"] for c in isvc["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == [
        "URL",
        "Ready",
        "Prev",
        "Latest",
        "PrevRolledoutRevision",
        "LatestReadyRevision",
        "Age",
    ]
    tm = ok(
        crds.request(
            "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/trainedmodels.serving.kserve.io"
        )
    )
    assert tm["spec"]["names"]["shortNames"] == ["tm"]


def test_inference_service_round_trips_spec_and_status(crds: LocalCluster, namespace: str) -> None:
    path = INFERENCE_SERVICES.path(namespace)
    created = ok(crds.request("POST", path, isvc_body(namespace)), 201)
    assert created["spec"]["predictor"]["futureComponentField"] == {"nested": [1, 2]}
    assert created["spec"]["predictor"]["model"]["futureModelField"] is True

    isvc = InferenceService.from_object(created)
    assert isvc.to_object() == created
    assert isvc.spec.predictor.implementations() == ["model"]

    isvc.status.initialize_conditions()
    isvc.status.propagate_status(
        "predictor",
        KnativeServiceStatus.from_object(
            {
                "latestCreatedRevisionName": "sklearn-iris-predictor-00001",
                "latestReadyRevisionName": "sklearn-iris-predictor-00001",
                "url": "http://sklearn-iris-predictor.ns.example.com",
                "conditions": [{"type": "Ready", "status": "True"}],
                "traffic": [
                    {"revisionName": "sklearn-iris-predictor-00001", "latestRevision": True, "percent": 100}
                ],
            }
        ),
    )
    isvc.status.url = "http://sklearn-iris.ns.example.com"
    obj = isvc.to_object()
    obj["status"]["futureStatusField"] = {"kept": "yes"}
    item = INFERENCE_SERVICES.path(namespace, "sklearn-iris", "status")
    updated = ok(crds.request("PUT", item, obj), 200)
    assert updated["status"]["futureStatusField"] == {"kept": "yes"}

    fetched = ok(crds.request("GET", INFERENCE_SERVICES.path(namespace, "sklearn-iris")))
    again = InferenceService.from_object(fetched)
    assert again.to_object() == fetched
    assert again.status.components["predictor"].latest_rolledout_revision == "sklearn-iris-predictor-00001"
    assert again.status.get_condition("PredictorReady") is not None
    assert fetched["status"]["url"] == "http://sklearn-iris.ns.example.com"
    assert fetched["spec"] == created["spec"]


def test_status_is_a_subresource(crds: LocalCluster, namespace: str) -> None:
    body = isvc_body(namespace)
    body["status"] = {"url": "http://ignored"}
    created = ok(crds.request("POST", INFERENCE_SERVICES.path(namespace), body), 201)
    assert "url" not in created.get("status", {})


def get_table(cluster: LocalCluster, path: str) -> dict[str, Any]:
    """GET as a meta.k8s.io Table, which is what `kubectl get` renders (printer columns applied)."""
    req = urllib.request.Request(
        cluster.server + path,
        headers={
            "Authorization": f"Bearer {cluster.admin_token}",
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        },
    )
    with urllib.request.urlopen(req, timeout=10, context=cluster.ssl_context()) as resp:
        table: dict[str, Any] = json.loads(resp.read())
    return table


def test_printer_columns_render_canary_status(crds: LocalCluster, namespace: str) -> None:
    created = ok(crds.request("POST", INFERENCE_SERVICES.path(namespace), isvc_body(namespace)), 201)
    created["status"] = {
        "url": "http://sklearn-iris.ns.example.com",
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestReadyRevision": "r2",
                "previousRolledoutRevision": "r0",
                "traffic": [
                    {"revisionName": "r2", "latestRevision": True, "percent": 10},
                    {"revisionName": "r1", "latestRevision": False, "percent": 90, "tag": "prev"},
                ],
            }
        },
    }
    ok(crds.request("PUT", INFERENCE_SERVICES.path(namespace, "sklearn-iris", "status"), created), 200)
    table = get_table(crds, INFERENCE_SERVICES.path(namespace))
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name",
        "URL",
        "Ready",
        "Prev",
        "Latest",
        "PrevRolledoutRevision",
        "LatestReadyRevision",
        "Age",
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:7] == ["sklearn-iris", "http://sklearn-iris.ns.example.com", "True", 90, 10, "r0", "r2"]


def test_schema_rejects_wrongly_typed_known_fields(crds: LocalCluster, namespace: str) -> None:
    body = isvc_body(namespace)
    body["spec"]["predictor"]["minReplicas"] = "one"
    status, answer = crds.request("POST", INFERENCE_SERVICES.path(namespace), body)
    assert status == 422
    assert "minReplicas" in answer["message"]
    body = isvc_body(namespace)
    body["spec"]["predictor"]["logger"] = {"mode": "everything"}
    status, answer = crds.request("POST", INFERENCE_SERVICES.path(namespace), body)
    assert status == 422
    assert "logger.mode" in answer["message"]


def test_trained_model_and_runtimes(crds: LocalCluster, namespace: str) -> None:
    tm = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "m1", "namespace": namespace},
        "spec": {
            "inferenceService": "parent",
            "model": {"storageUri": "gs://b/m", "framework": "sklearn", "memory": "1Gi"},
        },
    }
    created = ok(crds.request("POST", TRAINED_MODELS.path(namespace), tm), 201)
    assert TrainedModel.from_object(created).to_object() == created

    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "local-sklearn", "namespace": namespace},
        "spec": {
            "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True, "priority": 2}],
            "protocolVersions": ["v1", "v2"],
            "annotations": {"prometheus.kserve.io/port": "8080"},
            "containers": [{"name": "kserve-container", "image": "kserve/sklearnserver:latest"}],
        },
    }
    created_rt = ok(crds.request("POST", SERVING_RUNTIMES.path(namespace), runtime), 201)
    cluster_name = f"cluster-sklearn-{namespace}"
    cluster_rt = {**runtime, "kind": "ClusterServingRuntime", "metadata": {"name": cluster_name}}
    created_crt = ok(crds.request("POST", CLUSTER_SERVING_RUNTIMES.path(), cluster_rt), 201)
    try:
        rt = ServingRuntime.from_object(created_rt)
        crt = ClusterServingRuntime.from_object(created_crt)
        assert rt.to_object() == created_rt
        assert crt.to_object() == created_crt
        model = InferenceService.from_object(isvc_body(namespace)).spec.predictor.model_spec()
        assert model is not None
        assert model.model_format is not None
        chosen = select_runtime([rt], [crt], model.model_format, model.protocol_version)
        assert (chosen.name, chosen.cluster) == ("local-sklearn", False)
    finally:
        crds.request("DELETE", CLUSTER_SERVING_RUNTIMES.path(name=cluster_name))


def test_cluster_storage_container_is_cluster_scoped_round_trips_and_needs_its_fields(
    crds: LocalCluster,
) -> None:
    """KServe's Helm default ClusterStorageContainer, stored and read back through the typed model."""
    body = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "crd-test-default"},
        "spec": {
            "container": {
                "name": "storage-initializer",
                "image": "kserve/storage-initializer:latest",
                "resources": {
                    "requests": {"memory": "100Mi", "cpu": "100m"},
                    "limits": {"memory": "1Gi", "cpu": "1"},
                },
                "securityContext": {"runAsNonRoot": True},
            },
            "supportedUriFormats": [
                {"prefix": "gs://"},
                {"prefix": "s3://"},
                {"regex": "https://(.+?).blob.core.windows.net/(.+)"},
            ],
        },
        "disabled": False,
    }
    created = ok(crds.request("POST", CLUSTER_STORAGE_CONTAINERS.path(None), body), 201)
    try:
        assert "namespace" not in created["metadata"]
        assert created["spec"] == body["spec"]
        assert created["disabled"] is False
        parsed = ClusterStorageContainer.from_object(created)
        assert parsed.to_object() == created
        found = storage_container_for([created], "https://acct.blob.core.windows.net/c/m")
        assert found is not None
        assert found.spec.container["image"] == "kserve/storage-initializer:latest"
        for field in ("container", "supportedUriFormats"):
            incomplete = json.loads(json.dumps(body))
            incomplete["metadata"]["name"] = f"crd-test-no-{field.lower()}"
            del incomplete["spec"][field]
            status, answer = crds.request("POST", CLUSTER_STORAGE_CONTAINERS.path(None), incomplete)
            assert status == 422, answer
            assert field in answer["message"]
        nameless = json.loads(json.dumps(body))
        nameless["metadata"]["name"] = "crd-test-nameless"
        del nameless["spec"]["container"]["name"]
        status, answer = crds.request("POST", CLUSTER_STORAGE_CONTAINERS.path(None), nameless)
        assert status == 422, answer
        assert "spec.container.name" in answer["message"]
    finally:
        crds.request("DELETE", CLUSTER_STORAGE_CONTAINERS.path(None, "crd-test-default"))
