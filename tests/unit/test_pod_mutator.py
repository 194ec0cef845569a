"""The pod mutator: KServe's injectors in order, each idempotent, every bad input a one-line MutationError."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
from collections.abc import Mapping
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apis.config import SHIPPED_DEFAULTS, S3Config
from apis.storagecontainer import StorageContainerError, storage_container_for
from manager.client import SECRETS, SERVICEACCOUNTS, Client, Resource
from manager.errors import NotFound, ServerUnavailable
from webhooks.admission import AdmissionRequest
from webhooks.injectors.credentials import ClientCredentialLookup, s3_setting_envs
from webhooks.injectors.security import RESTRICTED_SECURITY_CONTEXT
from webhooks.pod_mutator import MutationError, PodMutator, PodMutatorHandler

ISVC_LABEL = "serving.kserve.io/inferenceservice"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
UID = "serving.kserve.io/storage-initializer-uid"
AGG = "serving.kserve.io/enable-metric-aggregation"
PROM = "serving.kserve.io/enable-prometheus-scraping"
LOGGER = "internal.serving.kserve.io/logger"
BATCHER = "internal.serving.kserve.io/batcher"
PULLER = "internal.serving.kserve.io/agent"
GKE = "serving.kserve.io/gke-accelerator"

RESTRICTED = RESTRICTED_SECURITY_CONTEXT
SI_RESOURCES = {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "100Mi"}}
AGENT_PROBE = {
    "httpGet": {
        "path": "/",
        "port": 9081,
        "scheme": "HTTP",
        "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
    },
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}
QP_ENV = [
    {"name": "SERVING_SERVICE", "value": "sklearn-predictor"},
    {"name": "USER_PORT", "value": "8080"},
    {"name": "SERVING_READINESS_PROBE", "value": '{"tcpSocket":{"port":8080}}'},
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeLookup:
    """In-memory ServiceAccounts and Secrets; records what was read."""

    def __init__(
        self,
        service_accounts: Mapping[str, dict[str, Any]] | None = None,
        secrets: Mapping[str, dict[str, Any]] | None = None,
        fail: BaseException | None = None,
    ) -> None:
        self.service_accounts = dict(service_accounts or {})
        self.secrets = dict(secrets or {})
        self.fail = fail
        self.reads: list[tuple[str, str, str]] = []

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append(("ServiceAccount", namespace, name))
        if self.fail is not None:
            raise self.fail
        return self.service_accounts.get(name)

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        self.reads.append(("Secret", namespace, name))
        return self.secrets.get(name)


def make_pod(
    annotations: Mapping[str, str] | None = None,
    *,
    containers: list[dict[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    queue_proxy: bool = True,
    **spec: Any,
) -> dict[str, Any]:
    if containers is None:
        containers = [
            {
                "name": "kserve-container",
                "image": "kserve/sklearnserver:v0.11.0",
                "env": [{"name": "STORAGE_URI", "value": "gs://bucket/model"}],
            }
        ]
        if queue_proxy:
            containers.append({"name": "queue-proxy", "image": "qp", "env": copy.deepcopy(QP_ENV)})
    metadata: dict[str, Any] = {
        "generateName": "sklearn-predictor-00001-deployment-",
        "labels": {ISVC_LABEL: "sklearn", **(labels or {})},
    }
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers, **spec},
    }


def configmap(**keys: Any) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in keys.items()}


async def mutate(
    pod: dict[str, Any],
    data: Mapping[str, str] | None = None,
    lookup: FakeLookup | None = None,
    namespace: str = "models",
) -> dict[str, Any]:
    mutator = PodMutator(lambda: {} if data is None else data, lookup or FakeLookup())
    return await mutator.mutate(pod, namespace)


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for item in pod["spec"]["containers"]:
        if item["name"] == name:
            result: dict[str, Any] = item
            return result
    raise AssertionError(f"no container {name}")


def env_of(item: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in item.get("env", [])}


def annotations_of(pod: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = pod["metadata"].get("annotations", {})
    return result


# --- selection -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod",
    [
        {"metadata": {"name": "x", "annotations": {AGG: "true", SOURCE_URI: "s3://b/m"}}, "spec": "anything"},
        {"metadata": {"labels": {"app": "x"}, "annotations": {AGG: True}}},
        {"metadata": "x"},
        {},
    ],
)
async def test_pod_without_the_isvc_label_is_returned_unchanged(pod: dict[str, Any]) -> None:
    before = copy.deepcopy(pod)
    assert await mutate(pod) is pod
    assert pod == before


async def test_labelled_pod_is_mutated_on_a_copy() -> None:
    pod = make_pod({SOURCE_URI: "s3://b/m"})
    before = copy.deepcopy(pod)
    mutated = await mutate(pod)
    assert pod == before
    assert mutated != pod


async def test_plain_labelled_pod_gets_only_the_metric_defaults_recorded() -> None:
    pod = make_pod()
    mutated = await mutate(pod)
    expected = copy.deepcopy(pod)
    expected["metadata"]["annotations"] = {AGG: "", PROM: ""}  # no metricsAggregator key, as KServe
    assert mutated == expected


# --- metrics aggregation: KServe's TestInjectMetricsAggregator, its unasserted cases, ConfigMap defaults ---

AGG_ENV = [
    {"name": "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT", "value": "8080"},
    {"name": "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH", "value": "/metrics"},
    {"name": "AGGREGATE_PROMETHEUS_METRICS_PORT", "value": "9088"},
]
AGGR_PORT = {"name": "aggr-metric", "containerPort": 9088, "protocol": "TCP"}
SCRAPE_9088 = {"prometheus.io/scrape": "true", "prometheus.io/port": "9088", "prometheus.io/path": "/metrics"}
SCRAPE_9091 = {"prometheus.io/scrape": "true", "prometheus.io/port": "9091", "prometheus.io/path": "/metrics"}


@pytest.mark.parametrize(
    ("case", "annotations", "defaults", "expect_env", "expect_annotations"),
    [
        # KServe's scenarios: its ConfigMap has no metricsAggregator key, so an absent annotation is
        # written as "" (which, like any value but "true", leaves the feature off).
        ("EnableMetricAggTrue", {AGG: "true"}, None, AGG_ENV, {AGG: "true", PROM: ""}),
        ("EnableMetricAggNotSet", {}, None, None, {AGG: "", PROM: ""}),
        ("EnableMetricAggFalse", {AGG: "false"}, None, None, {AGG: "false", PROM: ""}),
        (
            "setPromAnnotationTrueWithAggTrue",
            {AGG: "true", PROM: "true"},
            None,
            AGG_ENV,
            {AGG: "true", PROM: "true"} | SCRAPE_9088,
        ),
        (
            "setPromAnnotationTrueWithAggFalse",
            {AGG: "false", PROM: "true"},
            None,
            None,
            {AGG: "false", PROM: "true"} | SCRAPE_9091,
        ),
        ("SetPromAnnotationFalse", {AGG: "true", PROM: "false"}, None, AGG_ENV, {AGG: "true", PROM: "false"}),
        # ConfigMap defaults (key metricsAggregator).
        ("default agg true, no annotation", {}, ("true", "false"), AGG_ENV, {AGG: "true", PROM: "false"}),
        (
            "default agg true, annotation false",
            {AGG: "false"},
            ("true", "false"),
            None,
            {AGG: "false", PROM: "false"},
        ),
        (
            "default prom true, no annotations",
            {},
            ("false", "true"),
            None,
            {AGG: "false", PROM: "true"} | SCRAPE_9091,
        ),
        ("default both true", {}, ("true", "true"), AGG_ENV, {AGG: "true", PROM: "true"} | SCRAPE_9088),
        (
            "default both true, prom annotation false",
            {PROM: "false"},
            ("true", "true"),
            AGG_ENV,
            {AGG: "true", PROM: "false"},
        ),
        (
            "default both true, both annotations false",
            {AGG: "false", PROM: "false"},
            ("true", "true"),
            None,
            {AGG: "false", PROM: "false"},
        ),
        (
            "default both false, annotations true",
            {AGG: "true", PROM: "true"},
            ("false", "false"),
            AGG_ENV,
            {AGG: "true", PROM: "true"} | SCRAPE_9088,
        ),
        (
            "default prom true, agg annotation true",
            {AGG: "true"},
            ("false", "true"),
            AGG_ENV,
            {AGG: "true", PROM: "true"} | SCRAPE_9088,
        ),
        # Only the exact string "true" enables a feature.
        ("annotation True (capitalised)", {AGG: "True", PROM: "yes"}, None, None, {AGG: "True", PROM: "yes"}),
    ],
)
async def test_metrics_aggregation_matrix(
    case: str,
    annotations: dict[str, str],
    defaults: tuple[str, str] | None,
    expect_env: list[dict[str, str]] | None,
    expect_annotations: dict[str, str],
) -> None:
    data = None
    if defaults is not None:
        data = configmap(
            metricsAggregator={
                "enableMetricAggregation": defaults[0],
                "enablePrometheusScraping": defaults[1],
            }
        )
    mutated = await mutate(make_pod(annotations), data)
    queue_proxy = container(mutated, "queue-proxy")
    if expect_env is None:
        assert queue_proxy["env"] == QP_ENV, case
        assert "ports" not in queue_proxy, case
    else:
        assert queue_proxy["env"] == QP_ENV + expect_env, case
        assert queue_proxy["ports"] == [AGGR_PORT], case
    assert annotations_of(mutated) == expect_annotations, case
    assert container(mutated, "kserve-container") == make_pod()["spec"]["containers"][0], case


async def test_metrics_port_and_path_come_from_the_runtime_annotations() -> None:
    pod = make_pod({AGG: "true", "prometheus.kserve.io/port": "8082", "prometheus.kserve.io/path": "/m"})
    mutated = await mutate(pod)
    assert env_of(container(mutated, "queue-proxy")) | {} == {
        **env_of(make_pod()["spec"]["containers"][1]),
        "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "8082",
        "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH": "/m",
        "AGGREGATE_PROMETHEUS_METRICS_PORT": "9088",
    }


async def test_existing_metrics_env_and_port_are_merged_not_duplicated() -> None:
    pod = make_pod({AGG: "true"})
    qp = container(pod, "queue-proxy")
    qp["env"].append({"name": "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT", "value": "1234"})
    qp["ports"] = [{"name": "aggr-metric", "containerPort": 9088, "protocol": "TCP"}]
    mutated = await mutate(pod)
    env = container(mutated, "queue-proxy")["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert env_of(container(mutated, "queue-proxy"))["KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT"] == "8080"
    assert container(mutated, "queue-proxy")["ports"] == [AGGR_PORT]


PORT_9088 = {"prometheus.io/port": "9088", "prometheus.io/path": "/metrics"}
PORT_9091 = {"prometheus.io/port": "9091", "prometheus.io/path": "/metrics"}


@pytest.mark.parametrize(
    ("case", "annotations", "defaults", "expect_annotations"),
    [
        # KServe's TestMutator_Handle "should mutate isvc pods": a pod with only kserve-container.
        ("no metricsAggregator key", {}, None, {AGG: "", PROM: ""}),
        ("both annotations true", {AGG: "true", PROM: "true"}, None, {AGG: "true", PROM: "true"} | PORT_9088),
        ("scraping only", {PROM: "true"}, None, {AGG: "", PROM: "true"} | PORT_9091),
        ("defaults both true", {}, ("true", "true"), {AGG: "true", PROM: "true"} | PORT_9088),
        (
            "default scraping, aggregation off",
            {AGG: "false"},
            ("true", "true"),
            {AGG: "false", PROM: "true"} | PORT_9091,
        ),
        ("scraping annotation false", {PROM: "false"}, ("true", "true"), {AGG: "true", PROM: "false"}),
    ],
)
async def test_raw_pod_metrics_annotations_as_in_kserve(
    case: str,
    annotations: dict[str, str],
    defaults: tuple[str, str] | None,
    expect_annotations: dict[str, str],
) -> None:
    """A RawDeployment pod (no queue-proxy): v0.11's annotations, no env var or port, and no
    `prometheus.io/scrape`, since nothing in the pod serves the port v0.11 names (README)."""
    data = None
    if defaults is not None:
        data = configmap(
            metricsAggregator={
                "enableMetricAggregation": defaults[0],
                "enablePrometheusScraping": defaults[1],
            }
        )
    mutated = await mutate(make_pod(annotations, queue_proxy=False), data)
    assert mutated["spec"] == make_pod(queue_proxy=False)["spec"], case
    assert annotations_of(mutated) == expect_annotations, case


# --- storage initializer -------------------------------------------------------------------------------


def expected_init_container(source: str, mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "storage-initializer",
        "image": "kserve/storage-initializer:latest",
        "args": [source, "/mnt/models"],
        "resources": SI_RESOURCES,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*(mounts or []), {"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
        "securityContext": RESTRICTED,
    }


@pytest.mark.parametrize(
    "uri", ["s3://bucket/model", "gs://bucket/model", "https://example.com/model.joblib"]
)
async def test_storage_initializer_for_remote_uris(uri: str) -> None:
    mutated = await mutate(make_pod({SOURCE_URI: uri}))
    assert mutated["spec"]["initContainers"] == [expected_init_container(uri)]
    assert mutated["spec"]["volumes"] == [{"name": "kserve-provision-location", "emptyDir": {}}]
    model = container(mutated, "kserve-container")
    assert model["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
    ]
    assert model["env"] == [{"name": "STORAGE_URI", "value": "/mnt/models"}]


async def test_storage_initializer_image_and_resources_from_config() -> None:
    data = configmap(
        storageInitializer={
            "image": "my/si:2",
            "cpuRequest": "50m",
            "cpuLimit": "2",
            "memoryRequest": "64Mi",
            "memoryLimit": "2Gi",
        }
    )
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m"}), data)
    init = mutated["spec"]["initContainers"][0]
    assert init["image"] == "my/si:2"
    assert init["resources"] == {
        "limits": {"cpu": "2", "memory": "2Gi"},
        "requests": {"cpu": "50m", "memory": "64Mi"},
    }


async def test_pvc_source_is_copied_by_the_init_container() -> None:
    pod = make_pod(
        {SOURCE_URI: "pvc://models-claim/sklearn/iris"},
        containers=[
            {"name": "kserve-container", "image": "x"},
            {"name": "transformer-container", "image": "t"},
        ],
    )
    mutated = await mutate(pod)
    pvc_mount = {"name": "kserve-pvc-source", "mountPath": "/mnt/pvc", "readOnly": True}
    read_mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
    assert mutated["spec"]["initContainers"] == [
        expected_init_container("/mnt/pvc/sklearn/iris", [pvc_mount])
    ]
    assert mutated["spec"]["volumes"] == [
        {"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": "models-claim"}},
        {"name": "kserve-provision-location", "emptyDir": {}},
    ]
    assert container(mutated, "kserve-container")["volumeMounts"] == [pvc_mount, read_mount]
    assert container(mutated, "transformer-container")["volumeMounts"] == [pvc_mount, read_mount]


@pytest.mark.parametrize(
    ("uri", "mount"),
    [
        ("pvc://models-claim/sklearn/iris", {"subPath": "sklearn/iris"}),
        ("pvc://models-claim", {}),
    ],
)
async def test_pvc_source_mounted_directly(uri: str, mount: dict[str, str]) -> None:
    data = configmap(storageInitializer={"enableDirectPvcVolumeMount": True})
    mutated = await mutate(make_pod({SOURCE_URI: uri}), data)
    assert "initContainers" not in mutated["spec"]
    assert mutated["spec"]["volumes"] == [
        {"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": "models-claim"}}
    ]
    model = container(mutated, "kserve-container")
    assert model["volumeMounts"] == [
        {"name": "kserve-pvc-source", "mountPath": "/mnt/models", "readOnly": True, **mount}
    ]
    assert model["env"] == [{"name": "STORAGE_URI", "value": "/mnt/models"}]


async def test_transformer_gets_the_model_mount() -> None:
    pod = make_pod(
        {SOURCE_URI: "s3://b/m"},
        containers=[
            {"name": "kserve-container", "image": "x"},
            {"name": "transformer-container", "image": "t"},
        ],
    )
    mutated = await mutate(pod)
    mount = {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
    assert container(mutated, "transformer-container")["volumeMounts"] == [mount]


PVC_URI = "pvc://mypvcname/some/path/on/pvc"
PVC_SOURCE = {"name": "kserve-pvc-source", "persistentVolumeClaim": {"claimName": "mypvcname"}}
PROVISION = {"name": "kserve-provision-location", "emptyDir": {}}
PVC_READ = {"name": "kserve-pvc-source", "mountPath": "/mnt/pvc", "readOnly": True}
MODEL_READ = {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
PVC_DIRECT = {
    "name": "kserve-pvc-source",
    "mountPath": "/mnt/models",
    "subPath": "some/path/on/pvc",
    "readOnly": True,
}
LOCAL_URI_ENV = [{"name": "STORAGE_URI", "value": "/mnt/models"}]


def collocated(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "env": [{"name": "STORAGE_URI", "value": PVC_URI}]} for name in names]


@pytest.mark.parametrize(
    ("direct", "names", "mounts", "volumes", "init"),
    [
        # storage_initializer_injector_test.go TestTransformerCollocation
        pytest.param(
            False,
            ("kserve-container", "transformer-container"),
            [PVC_READ, MODEL_READ],
            [PVC_SOURCE, PROVISION],
            True,
            id="Transformer collocation with pvc",
        ),
        pytest.param(
            True,
            ("kserve-container", "transformer-container"),
            [PVC_DIRECT],
            [PVC_SOURCE],
            False,
            id="Transformer collocation with pvc direct mount",
        ),
        pytest.param(
            False,
            ("kserve-container",),
            [PVC_READ, MODEL_READ],
            [PVC_SOURCE, PROVISION],
            True,
            id="No collocation",
        ),
    ],
)
async def test_transformer_collocation_as_in_kserve(
    direct: bool,
    names: tuple[str, ...],
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    init: bool,
) -> None:
    data = configmap(storageInitializer={"enableDirectPvcVolumeMount": direct})
    mutated = await mutate(make_pod({SOURCE_URI: PVC_URI}, containers=collocated(*names)), data)
    assert mutated["spec"]["containers"] == [
        {"name": name, "env": LOCAL_URI_ENV, "volumeMounts": mounts} for name in names
    ]
    assert mutated["spec"]["volumes"] == volumes
    if init:
        assert mutated["spec"]["initContainers"] == [
            expected_init_container("/mnt/pvc/some/path/on/pvc", [PVC_READ])
        ]
    else:
        assert "initContainers" not in mutated["spec"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # storage_initializer_injector_test.go TestCustomSpecStorageUriInjection
        pytest.param(
            [{"name": "STORAGE_URI", "value": PVC_URI}], LOCAL_URI_ENV, id="CustomSpecStorageUriSet"
        ),
        pytest.param(
            [{"name": "STORAGE_URI", "value": ""}],
            [{"name": "STORAGE_URI", "value": ""}],
            id="CustomSpecStorageUriEmpty",
        ),
        pytest.param(
            [{"name": "TestRandom", "value": "val"}],
            [{"name": "TestRandom", "value": "val"}],
            id="CustomSpecStorageUriNotSet",
        ),
    ],
)
@pytest.mark.parametrize("model_or_transformer", ["kserve-container", "transformer-container"])
async def test_storage_uri_env_is_rewritten_as_in_kserve(
    env: list[dict[str, str]], expected: list[dict[str, str]], model_or_transformer: str
) -> None:
    containers: list[dict[str, Any]] = [{"name": "kserve-container"}, {"name": "transformer-container"}]
    next(c for c in containers if c["name"] == model_or_transformer)["env"] = env
    mutated = await mutate(make_pod({SOURCE_URI: PVC_URI}, containers=containers))
    assert container(mutated, model_or_transformer)["env"] == expected


async def test_empty_storage_uri_env_is_not_rewritten() -> None:
    pod = make_pod(
        {SOURCE_URI: "s3://b/m"},
        containers=[{"name": "kserve-container", "env": [{"name": "STORAGE_URI", "value": ""}]}],
    )
    mutated = await mutate(pod)
    assert container(mutated, "kserve-container")["env"] == [{"name": "STORAGE_URI", "value": ""}]


async def test_uid_annotation_without_any_security_context() -> None:
    """KServe v0.11 panics here (nil securityContext); the init container must run as the UID."""
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m", UID: "1337"}))
    init = mutated["spec"]["initContainers"][0]
    assert init["securityContext"] == {**RESTRICTED, "runAsUser": 1337}
    assert "securityContext" not in container(mutated, "kserve-container")


async def test_uid_annotation_with_the_model_containers_security_context() -> None:
    user_context = {"runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": True}
    pod = make_pod(
        {SOURCE_URI: "s3://b/m", UID: "1337"},
        containers=[{"name": "kserve-container", "image": "x", "securityContext": user_context}],
    )
    mutated = await mutate(pod)
    assert mutated["spec"]["initContainers"][0]["securityContext"] == {**user_context, "runAsUser": 1337}
    assert container(mutated, "kserve-container")["securityContext"] == user_context


async def test_model_security_context_is_copied_without_uid_annotation() -> None:
    user_context = {"runAsUser": 1000}
    pod = make_pod(
        {SOURCE_URI: "s3://b/m"}, containers=[{"name": "kserve-container", "securityContext": user_context}]
    )
    mutated = await mutate(pod)
    assert mutated["spec"]["initContainers"][0]["securityContext"] == user_context


async def test_uid_zero_drops_our_run_as_non_root() -> None:
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m", UID: "0"}))
    context = mutated["spec"]["initContainers"][0]["securityContext"]
    assert context["runAsUser"] == 0
    assert "runAsNonRoot" not in context


@pytest.mark.parametrize(
    ("pod_context", "expected"),
    [
        ({"runAsNonRoot": False}, {k: v for k, v in RESTRICTED.items() if k != "runAsNonRoot"}),
        ({"runAsUser": 0}, {k: v for k, v in RESTRICTED.items() if k != "runAsNonRoot"}),
        (
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            {k: v for k, v in RESTRICTED.items() if k != "seccompProfile"},
        ),
        ({"runAsUser": 1000}, RESTRICTED),
    ],
)
async def test_injected_defaults_defer_to_the_pod_security_context(
    pod_context: dict[str, Any], expected: dict[str, Any]
) -> None:
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m"}, securityContext=pod_context))
    assert mutated["spec"]["initContainers"][0]["securityContext"] == expected


async def test_storage_initializer_skipped_for_the_model_puller_and_when_present() -> None:
    puller = make_pod(
        {SOURCE_URI: "s3://b/m", PULLER: "true", "internal.serving.kserve.io/configVolumeName": "c"}
    )
    assert "initContainers" not in (await mutate(puller))["spec"]
    existing = make_pod(
        {SOURCE_URI: "s3://b/m"}, initContainers=[{"name": "storage-initializer", "image": "mine"}]
    )
    mutated = await mutate(existing)
    assert mutated["spec"]["initContainers"] == [{"name": "storage-initializer", "image": "mine"}]
    assert "volumes" not in mutated["spec"]


# --- credentials ---------------------------------------------------------------------------------------

S3_SECRET = {
    "metadata": {
        "name": "s3creds",
        "annotations": {
            "serving.kserve.io/s3-endpoint": "minio.minio:9000",
            "serving.kserve.io/s3-usehttps": "0",
            "serving.kserve.io/s3-region": "us-east-2",
            "serving.kserve.io/s3-verifyssl": "0",
            "serving.kserve.io/s3-usevirtualbucket": "false",
            "serving.kserve.io/s3-useanoncredential": "false",
            "serving.kserve.io/s3-cabundle": "/etc/ssl/ca.crt",
        },
    },
    "data": {"AWS_ACCESS_KEY_ID": b64("id"), "AWS_SECRET_ACCESS_KEY": b64("key")},
}
GCS_SECRET = {"metadata": {"name": "gcscreds"}, "data": {"gcloud-application-credentials.json": b64("{}")}}


def account(name: str, *secrets: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "secrets": [{"name": s} for s in secrets],
    }


def secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


async def test_s3_secret_of_the_service_account_with_annotations() -> None:
    lookup = FakeLookup({"default": account("default", "s3creds")}, {"s3creds": S3_SECRET})
    mutated = await mutate(
        make_pod({SOURCE_URI: "s3://b/m"}),
        configmap(credentials=json.loads(SHIPPED_DEFAULTS["credentials"])),
        lookup,
    )
    assert mutated["spec"]["initContainers"][0]["env"] == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_ref("s3creds", "AWS_ACCESS_KEY_ID")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret_ref("s3creds", "AWS_SECRET_ACCESS_KEY")},
        {"name": "S3_USE_HTTPS", "value": "0"},
        {"name": "S3_ENDPOINT", "value": "minio.minio:9000"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio:9000"},
        {"name": "S3_VERIFY_SSL", "value": "0"},
        {"name": "awsAnonymousCredential", "value": "false"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
        {"name": "S3_USER_VIRTUAL_BUCKET", "value": "false"},
        {"name": "AWS_CA_BUNDLE", "value": "/etc/ssl/ca.crt"},
    ]
    assert lookup.reads == [("ServiceAccount", "models", "default"), ("Secret", "models", "s3creds")]


async def test_s3_settings_fall_back_to_the_config() -> None:
    secret = {
        "metadata": {"name": "s3"},
        "data": {"awsAccessKeyID": b64("i"), "awsSecretAccessKey": b64("k")},
    }
    lookup = FakeLookup({"sa": account("sa", "s3")}, {"s3": secret})
    data = configmap(credentials={"s3": {"s3Endpoint": "s3.example.com", "s3Region": "eu-west-1"}})
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m"}, serviceAccountName="sa"), data, lookup)
    assert env_of(mutated["spec"]["initContainers"][0]) == {
        "AWS_ACCESS_KEY_ID": secret_ref("s3", "awsAccessKeyID"),
        "AWS_SECRET_ACCESS_KEY": secret_ref("s3", "awsSecretAccessKey"),
        "S3_ENDPOINT": "s3.example.com",
        "AWS_ENDPOINT_URL": "https://s3.example.com",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert lookup.reads[0] == ("ServiceAccount", "models", "sa")


async def test_gcs_secret_of_the_service_account() -> None:
    lookup = FakeLookup({"default": account("default", "gcscreds")}, {"gcscreds": GCS_SECRET})
    mutated = await mutate(make_pod({SOURCE_URI: "gs://b/m"}), None, lookup)
    init = mutated["spec"]["initContainers"][0]
    assert init["env"] == [
        {
            "name": "GOOGLE_APPLICATION_CREDENTIALS",
            "value": "/var/secrets/gcloud-application-credentials.json",
        }
    ]
    assert init["volumeMounts"][-1] == {"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True}
    assert mutated["spec"]["volumes"][-1] == {"name": "user-gcp-sa", "secret": {"secretName": "gcscreds"}}


async def test_missing_service_account_injects_nothing_and_is_not_an_error() -> None:
    lookup = FakeLookup()
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m"}), None, lookup)
    assert "env" not in mutated["spec"]["initContainers"][0]
    assert lookup.reads == [("ServiceAccount", "models", "default")]


async def test_stale_and_unrecognised_secrets_are_skipped() -> None:
    other = {"metadata": {"name": "docker"}, "data": {".dockerconfigjson": b64("{}")}}
    lookup = FakeLookup(
        {"default": account("default", "gone", "docker", "gcscreds")},
        {"docker": other, "gcscreds": GCS_SECRET},
    )
    mutated = await mutate(make_pod({SOURCE_URI: "gs://b/m"}), None, lookup)
    assert env_of(mutated["spec"]["initContainers"][0]) == {
        "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcloud-application-credentials.json"
    }


async def test_two_secrets_of_a_kind_give_one_mount_and_one_env_var() -> None:
    """KServe appends both: two GOOGLE_APPLICATION_CREDENTIALS and two mounts at /var/secrets/ (rejected)."""
    other = {**GCS_SECRET, "metadata": {"name": "gcs2"}}
    lookup = FakeLookup(
        {"default": account("default", "gcscreds", "gcs2")}, {"gcscreds": GCS_SECRET, "gcs2": other}
    )
    init = (await mutate(make_pod({SOURCE_URI: "gs://b/m"}), None, lookup))["spec"]["initContainers"][0]
    assert [e["name"] for e in init["env"]] == ["GOOGLE_APPLICATION_CREDENTIALS"]
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/mnt/models", "/var/secrets/"]


async def test_secret_named_by_pod_annotation_replaces_the_service_account_secrets() -> None:
    lookup = FakeLookup(
        {"default": account("default", "gcscreds")}, {"gcscreds": GCS_SECRET, "s3creds": S3_SECRET}
    )
    pod = make_pod({SOURCE_URI: "s3://b/m", "serving.kserve.io/storageSecretName": "s3creds"})
    mutated = await mutate(pod, configmap(credentials=json.loads(SHIPPED_DEFAULTS["credentials"])), lookup)
    env = env_of(mutated["spec"]["initContainers"][0])
    assert env["AWS_ACCESS_KEY_ID"] == secret_ref("s3creds", "AWS_ACCESS_KEY_ID")
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    assert ("Secret", "models", "gcscreds") not in lookup.reads


async def test_secret_named_by_pod_annotation_must_exist() -> None:
    lookup = FakeLookup({"default": account("default")})
    pod = make_pod({SOURCE_URI: "s3://b/m", "serving.kserve.io/storageSecretName": "nope"})
    with pytest.raises(
        MutationError,
        match=re.escape(
            'Secret models/nope named by annotation "serving.kserve.io/storageSecretName" does not exist'
        ),
    ):
        await mutate(pod, None, lookup)


async def test_irsa_service_account_gets_s3_settings_without_keys() -> None:
    sa = account(
        "default",
        annotations={
            "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r",
            "serving.kserve.io/s3-region": "us-west-2",
        },
    )
    mutated = await mutate(make_pod({SOURCE_URI: "s3://b/m"}), None, FakeLookup({"default": sa}))
    assert mutated["spec"]["initContainers"][0]["env"] == [
        {"name": "AWS_DEFAULT_REGION", "value": "us-west-2"}
    ]


async def test_lookup_failure_is_a_mutation_error() -> None:
    lookup = FakeLookup(fail=TimeoutError("API server did not answer within 30s"))
    with pytest.raises(
        MutationError, match="cannot read ServiceAccount models/default: API server did not answer"
    ):
        await mutate(make_pod({SOURCE_URI: "s3://b/m"}), None, lookup)


# KServe's service_account_credentials_test.go configuration.
KSERVE_CREDENTIALS = {
    "storageSecretNameAnnotation": "serving.kserve.io/storageSecretName",
    "storageSpecSecretName": "storage-secret",
    "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
    "s3": {
        "s3AccessKeyIDName": "awsAccessKeyID",
        "s3SecretAccessKeyName": "awsSecretAccessKey",
        "s3Endpoint": "s3.amazonaws.com",
        "s3UseHttps": "1",
        "s3Region": "us-east-2",
        "s3VerifySSL": "1",
        "s3UseVirtualBucket": "",
        "s3UseAnonymousCredential": "false",
        "s3CABundle": "",
    },
}
KSERVE_S3_SECRET = {
    "metadata": {"name": "s3-secret", "annotations": {"serving.kserve.io/s3-endpoint": "s3.aws.com"}},
    "data": {"awsAccessKeyID": "", "awsSecretAccessKey": ""},
}
KSERVE_S3_ENV = [
    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_ref("s3-secret", "awsAccessKeyID")},
    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret_ref("s3-secret", "awsSecretAccessKey")},
    {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
    {"name": "AWS_ENDPOINT_URL", "value": "https://s3.aws.com"},
    {"name": "S3_VERIFY_SSL", "value": "1"},
    {"name": "awsAnonymousCredential", "value": "false"},
    {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
]
AZURE_ENV_NAMES = ("AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
HTTPS_HEADERS = "{\nusername: someUsername\npassword: somePassword\n}"


def azure_env(*keys: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "valueFrom": secret_ref("az-custom-secret", key)}
        for name, key in zip(AZURE_ENV_NAMES, keys, strict=True)
    ]


def data_secret(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {k.replace("__", "-"): b64(v) for k, v in data.items()}}


SECRET_KINDS = [
    # service_account_credentials_test.go: TestS3CredentialBuilder
    pytest.param({}, KSERVE_S3_SECRET, KSERVE_S3_ENV, [], [], id="s3"),
    # TestS3CredentialBuilderWithStorageSecret: the annotation names the Secret, the account lists none
    pytest.param(
        {"serving.kserve.io/storageSecretName": "s3-secret"},
        KSERVE_S3_SECRET,
        KSERVE_S3_ENV,
        [],
        [],
        id="s3-annotation",
    ),
    # TestGCSCredentialBuilder
    pytest.param(
        {},
        data_secret("user-gcp-sa", **{"gcloud-application-credentials.json": "{}"}),
        [
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": "/var/secrets/gcloud-application-credentials.json",
            }
        ],
        [{"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True}],
        [{"name": "user-gcp-sa", "secret": {"secretName": "user-gcp-sa"}}],
        id="gcs",
    ),
    # TestLegacyAzureCredentialBuilder
    pytest.param(
        {},
        data_secret(
            "az-custom-secret", AZ_SUBSCRIPTION_ID="", AZ_TENANT_ID="", AZ_CLIENT_ID="", AZ_CLIENT_SECRET=""
        ),
        azure_env("AZ_SUBSCRIPTION_ID", "AZ_TENANT_ID", "AZ_CLIENT_ID", "AZ_CLIENT_SECRET"),
        [],
        [],
        id="azure-legacy",
    ),
    # TestAzureCredentialBuilder
    pytest.param(
        {},
        data_secret(
            "az-custom-secret",
            AZURE_SUBSCRIPTION_ID="",
            AZURE_TENANT_ID="",
            AZURE_CLIENT_ID="",
            AZURE_CLIENT_SECRET="",
        ),
        azure_env(*AZURE_ENV_NAMES),
        [],
        [],
        id="azure",
    ),
    # KServe's mapping per key: a legacy key wins where present, the new name is used elsewhere
    pytest.param(
        {},
        data_secret("az-custom-secret", AZ_CLIENT_ID="", AZURE_TENANT_ID="", AZURE_STORAGE_ACCESS_KEY=""),
        azure_env("AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZ_CLIENT_ID", "AZURE_CLIENT_SECRET"),
        [],
        [],
        id="azure-mixed-keys-service-principal-first",
    ),
    # TestAzureStorageAccessKeyCredentialBuilder
    pytest.param(
        {},
        data_secret("az-custom-secret", AZURE_STORAGE_ACCESS_KEY=""),
        [
            {
                "name": "AZURE_STORAGE_ACCESS_KEY",
                "valueFrom": secret_ref("az-custom-secret", "AZURE_STORAGE_ACCESS_KEY"),
            }
        ],
        [],
        [],
        id="azure-storage-access-key",
    ),
    # TestHdfsCredentialBuilder
    pytest.param(
        {},
        data_secret(
            "hdfs-custom-secret",
            HDFS_NAMENODE="https://testdomain:port",
            HDFS_ROOTPATH="/",
            KERBEROS_PRINCIPAL="account@REALM",
            KERBEROS_KEYTAB="AAA=",
        ),
        [],
        [{"name": "hdfs-secrets", "mountPath": "/var/secrets/kserve-hdfscreds", "readOnly": True}],
        [{"name": "hdfs-secrets", "secret": {"secretName": "hdfs-custom-secret"}}],
        id="hdfs",
    ),
    # https_secret_test.go TestHTTPSSecret
    pytest.param(
        {},
        data_secret("https-secret", https__host="example.com", headers=HTTPS_HEADERS),
        [{"name": "example.com-headers", "value": HTTPS_HEADERS}],
        [],
        [],
        id="https-secretEnvs",
    ),
    pytest.param(
        {}, data_secret("https-secret", https__host="example.com"), [], [], [], id="https-noHeaders"
    ),
    pytest.param(
        {},
        data_secret("https-secret", username="someUsername", password="somePassword"),
        [],
        [],
        [],
        id="https-noUriHost",
    ),
]


@pytest.mark.parametrize(("annotations", "secret", "env", "mounts", "volumes"), SECRET_KINDS)
async def test_service_account_secret_kinds_as_in_kserve(
    annotations: dict[str, str],
    secret: dict[str, Any],
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
) -> None:
    name = secret["metadata"]["name"]
    listed = () if annotations else (name,)
    lookup = FakeLookup({"default": account("default", *listed)}, {name: secret})
    pod = make_pod({SOURCE_URI: "gs://foo", **annotations})
    mutated = await mutate(pod, configmap(credentials=KSERVE_CREDENTIALS), lookup)
    init = mutated["spec"]["initContainers"][0]
    assert init.get("env", []) == env
    assert init["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models"},
        *mounts,
    ]
    assert mutated["spec"]["volumes"] == [{"name": "kserve-provision-location", "emptyDir": {}}, *volumes]


async def test_irsa_service_account_as_in_kserve() -> None:
    """KServe TestS3ServiceAccountCredentialBuilder."""
    sa = account(
        "default",
        annotations={
            "serving.kserve.io/s3-endpoint": "s3.aws.com",
            "serving.kserve.io/s3-useanoncredential": "true",
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/s3access",
        },
    )
    mutated = await mutate(
        make_pod({SOURCE_URI: "s3://b/m"}),
        configmap(credentials=KSERVE_CREDENTIALS),
        FakeLookup({"default": sa}),
    )
    assert mutated["spec"]["initContainers"][0]["env"] == [
        {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
        {"name": "AWS_ENDPOINT_URL", "value": "https://s3.aws.com"},
        {"name": "S3_VERIFY_SSL", "value": "1"},
        {"name": "awsAnonymousCredential", "value": "true"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
    ]


def s3_config(**fields: str) -> S3Config:
    return S3Config.model_validate(fields)


@pytest.mark.parametrize(
    ("annotations", "config", "expected"),
    [
        # s3/utils_test.go TestBuildS3EnvVars
        pytest.param(
            {"serving.kserve.io/s3-endpoint": "s3.aws.com"},
            {},
            [
                {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
                {"name": "AWS_ENDPOINT_URL", "value": "https://s3.aws.com"},
            ],
            id="S3Endpoint",
        ),
        pytest.param(
            {
                "serving.kserve.io/s3-endpoint": "s3.aws.com",
                "serving.kserve.io/s3-region": "us-east-2",
                "serving.kserve.io/s3-verifyssl": "0",
                "serving.kserve.io/s3-usehttps": "0",
                "serving.kserve.io/s3-usevirtualbucket": "true",
                "serving.kserve.io/s3-useanoncredential": "true",
                "serving.kserve.io/s3-cabundle": "value",
            },
            {},
            [
                {"name": "S3_USE_HTTPS", "value": "0"},
                {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
                {"name": "AWS_ENDPOINT_URL", "value": "http://s3.aws.com"},
                {"name": "S3_VERIFY_SSL", "value": "0"},
                {"name": "awsAnonymousCredential", "value": "true"},
                {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
                {"name": "S3_USER_VIRTUAL_BUCKET", "value": "true"},
                {"name": "AWS_CA_BUNDLE", "value": "value"},
            ],
            id="AllAnnotations",
        ),
        # The config's endpoint: S3_USE_HTTPS only when it is "0"
        pytest.param(
            {},
            {"s3Endpoint": "minio:9000", "s3UseHttps": "0"},
            [
                {"name": "S3_USE_HTTPS", "value": "0"},
                {"name": "S3_ENDPOINT", "value": "minio:9000"},
                {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"},
            ],
            id="config-endpoint-http",
        ),
        pytest.param(
            {},
            {"s3Endpoint": "s3.example.com", "s3UseHttps": "1"},
            [
                {"name": "S3_ENDPOINT", "value": "s3.example.com"},
                {"name": "AWS_ENDPOINT_URL", "value": "https://s3.example.com"},
            ],
            id="config-endpoint-https",
        ),
        # An annotation present but empty wins over the config (and sets nothing)
        pytest.param(
            {"serving.kserve.io/s3-verifyssl": "", "serving.kserve.io/s3-region": ""},
            {"s3VerifySSL": "1", "s3Region": "eu-west-1", "s3CABundle": "/ca"},
            [{"name": "AWS_CA_BUNDLE", "value": "/ca"}],
            id="empty-annotation-suppresses-config",
        ),
    ],
)
def test_s3_env_vars_as_in_kserve(
    annotations: dict[str, str], config: dict[str, str], expected: list[dict[str, str]]
) -> None:
    assert s3_setting_envs(annotations, s3_config(**config)) == expected


# --- storage spec: KServe's TestCredentialBuilder_CreateStorageSpecSecretEnvs and the injector's tests ---

MINIO = json.dumps(
    {
        "type": "s3",
        "access_key_id": "minio",
        "secret_access_key": "minio123",
        "endpoint_url": "http://minio-service.kubeflow:9000",
        "bucket": "test-bucket",
        "region": "us-south",
    }
)
SPEC = "internal.serving.kserve.io/storage-spec"
SPEC_PARAM = "internal.serving.kserve.io/storage-spec-param"
SPEC_KEY = "internal.serving.kserve.io/storage-spec-key"


def storage_secret(name: str = "storage-secret", **entries: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {k: b64(v) for k, v in entries.items()}}


def spec_pod(
    source: str, params: dict[str, str] | None = None, key: str | None = None, **extra: str
) -> dict[str, Any]:
    annotations = {SOURCE_URI: source, SPEC: "true", **extra}
    if params is not None:
        annotations[SPEC_PARAM] = json.dumps(params)
    if key is not None:
        annotations[SPEC_KEY] = key
    return make_pod(annotations)


def storage_config_env(secret: str, key: str) -> dict[str, Any]:
    return {"name": "STORAGE_CONFIG", "valueFrom": secret_ref(secret, key)}


def override_env(value: str) -> dict[str, str]:
    return {"name": "STORAGE_OVERRIDE_CONFIG", "value": value}


PLACEHOLDER = "<scheme-placeholder>://models/example-model/"
STORAGE_SPEC_CASES = [
    pytest.param(
        spec_pod("s3://test-bucket/models/", {"type": "", "bucket": ""}, "minio"),
        storage_secret(minio=MINIO),
        "s3://test-bucket/models/",
        [storage_config_env("storage-secret", "minio"), override_env('{"bucket":"","type":""}')],
        id="storage spec with empty override params",
    ),
    pytest.param(
        spec_pod("s3://test-bucket/models/", {"type": "s3", "bucket": "test-bucket"}, "minio"),
        storage_secret(minio=MINIO),
        "s3://test-bucket/models/",
        [storage_config_env("storage-secret", "minio"), override_env('{"bucket":"test-bucket","type":"s3"}')],
        id="simple storage spec",
    ),
    pytest.param(
        spec_pod("s3://test-bucket/models/", {"type": "s3", "bucket": "test-bucket"}),
        storage_secret(default_s3=MINIO),
        "s3://test-bucket/models/",
        [
            storage_config_env("storage-secret", "default_s3"),
            override_env('{"bucket":"test-bucket","type":"s3"}'),
        ],
        id="default storage key",
    ),
    pytest.param(
        spec_pod("s3://test-bucket/models/", {"type": "", "bucket": "test-bucket"}),
        storage_secret(default=MINIO),
        "s3://test-bucket/models/",
        [storage_config_env("storage-secret", "default"), override_env('{"bucket":"test-bucket","type":""}')],
        id="default storage key with empty storage type",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, {"type": "s3", "bucket": "test-bucket"}, "minio"),
        storage_secret(minio=MINIO),
        "s3://test-bucket/models/example-model/",
        [storage_config_env("storage-secret", "minio"), override_env('{"bucket":"test-bucket","type":"s3"}')],
        id="storage spec with uri scheme placeholder",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, {"type": "hdfs", "bucket": ""}, "hdfs"),
        storage_secret(
            hdfs='{"type": "hdfs", "access_key_id": "hdfs34", "endpoint_url": "http://hdfs-service"}'
        ),
        "hdfs://models/example-model/",
        [storage_config_env("storage-secret", "hdfs"), override_env('{"bucket":"","type":"hdfs"}')],
        id="hdfs with uri scheme placeholder",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, None, "minio"),
        storage_secret(minio=MINIO),
        "s3://test-bucket/models/example-model/",
        [storage_config_env("storage-secret", "minio")],
        id="type and bucket from the entry, no parameters",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, {"type": "webhdfs"}),
        storage_secret(other="{}"),
        "webhdfs://models/example-model/",
        [override_env('{"type":"webhdfs"}')],
        id="no default entry is fine when the type is known",
    ),
    # storage_initializer_injector_test.go StorageSpecInjected: no storage Secret at all
    pytest.param(
        spec_pod("<scheme-placeholder>://foo/bar", {"type": "s3", "bucket": "my-bucket"}),
        None,
        "s3://my-bucket/foo/bar",
        [override_env('{"bucket":"my-bucket","type":"s3"}')],
        id="StorageSpecInjected",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, {"type": "s3", "bucket": "b", "note": "<a&b>"}),
        None,
        "s3://b/models/example-model/",
        [override_env('{"bucket":"b","note":"\\u003ca\\u0026b\\u003e","type":"s3"}')],
        id="override encoded as Go encodes it",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, None, "mine", **{"serving.kserve.io/storageSecretName": "my-secret"}),
        storage_secret("my-secret", mine=MINIO),
        "s3://test-bucket/models/example-model/",
        [storage_config_env("my-secret", "mine")],
        id="secret named by the storageSecretName annotation",
    ),
]


@pytest.mark.parametrize(("pod", "secret", "uri", "env"), STORAGE_SPEC_CASES)
async def test_storage_spec_as_in_kserve(
    pod: dict[str, Any], secret: dict[str, Any] | None, uri: str, env: list[dict[str, Any]]
) -> None:
    secrets = {secret["metadata"]["name"]: secret} if secret is not None else {}
    lookup = FakeLookup({"default": account("default", "ignored")}, secrets)
    mutated = await mutate(pod, configmap(credentials=KSERVE_CREDENTIALS), lookup)
    init = mutated["spec"]["initContainers"][0]
    assert init["args"] == [uri, "/mnt/models"]
    assert init.get("env", []) == env
    assert ("ServiceAccount", "models", "default") not in lookup.reads


async def test_storage_spec_with_the_shipped_config_as_in_kserve() -> None:
    """KServe TestStorageSpecSecretInjection / TestStorageSpecDefaultSecretInjection: `storage-config`."""
    entry = '{"type": "s3", "bucket": "my-bucket", "region": "na"}'
    for key, secret_key in (("my-storage", "my-storage"), (None, "default")):
        secret = storage_secret("storage-config", **{secret_key: entry})
        pod = spec_pod("<scheme-placeholder>://foo/bar", {"some-param": "some-val"}, key)
        mutated = await mutate(pod, None, FakeLookup(secrets={"storage-config": secret}))
        init = mutated["spec"]["initContainers"][0]
        assert init["args"] == ["s3://my-bucket/foo/bar", "/mnt/models"]
        assert init["env"] == [
            storage_config_env("storage-config", secret_key),
            override_env('{"some-param":"some-val"}'),
        ]


STORAGE_SPEC_ERRORS = [
    pytest.param(
        spec_pod("s3://b/m", {}),
        storage_secret("test-secret"),
        "unable to determine the storage type of the storage spec",
        id="fail on storage secret name is empty",
    ),
    pytest.param(
        spec_pod("s3://b/m", {"type": "s3", "bucket": "test-bucket"}, "wrong-key"),
        storage_secret(minio=MINIO),
        "storage key 'wrong-key' not found in storage Secret models/storage-secret",
        id="wrong storage key",
    ),
    pytest.param(
        spec_pod("s3://b/m", None, "minio"),
        None,
        "storage Secret models/storage-secret does not exist (the storage spec names its key 'minio')",
        id="named key without the secret",
    ),
    pytest.param(
        spec_pod("gs://test-bucket/models/", {"type": "", "bucket": "test-bucket"}, "minio"),
        storage_secret(minio=MINIO.replace('"s3"', '"gs"')),
        "storage Secret models/storage-secret key 'minio': storage type 'gs' is not supported; use one of "
        "s3, hdfs, webhdfs",
        id="unsupported storage type",
    ),
    pytest.param(
        spec_pod("s3://b/m", {"type": "", "bucket": "test-bucket"}, "minio"),
        storage_secret(minio="{\n   {" + MINIO),
        "storage Secret models/storage-secret key 'minio' is not valid JSON",
        id="secret data with syntax error",
    ),
    pytest.param(
        spec_pod("s3://b/m", {"type": "", "bucket": "test-bucket"}, "minio"),
        storage_secret(minio=MINIO.replace('"s3"', '""')),
        "storage Secret models/storage-secret key 'minio': storage type '' is not supported",
        id="fail on storage type is empty",
    ),
    pytest.param(
        spec_pod(PLACEHOLDER, {"type": "s3", "bucket": ""}, "minio"),
        storage_secret(minio=MINIO.replace('"test-bucket"', '""')),
        "storage type 's3' requires a bucket, but neither the storage spec's parameters nor the storage "
        "Secret entry has one",
        id="fail on bucket is empty on s3 storage",
    ),
    pytest.param(
        spec_pod("s3://b/m", None, "minio"),
        storage_secret(minio='{"type": "s3", "bucket": 3}'),
        "storage Secret models/storage-secret key 'minio' must hold a JSON object of strings",
        id="entry values must be strings as Go decodes them",
    ),
    pytest.param(
        make_pod({SOURCE_URI: "<scheme-placeholder>://m", SPEC: "true", SPEC_PARAM: "{"}),
        None,
        'storage-spec-param" is not valid JSON',
        id="parameters annotation not JSON",
    ),
    pytest.param(
        spec_pod("s3://b/m", {"type": "s3"}, None, **{"serving.kserve.io/storageSecretName": ""}),
        None,
        'annotation "serving.kserve.io/storageSecretName" names no storage Secret (it is empty)',
        id="empty secret name annotation",
    ),
    pytest.param(
        spec_pod("s3://b/m", None, "k"),
        {"metadata": {"name": "storage-secret"}, "data": {"k": "!!"}},
        "storage Secret models/storage-secret key 'k' is not base64-encoded",
        id="entry not base64",
    ),
]


@pytest.mark.parametrize(("pod", "secret", "message"), STORAGE_SPEC_ERRORS)
async def test_storage_spec_errors_as_in_kserve(
    pod: dict[str, Any], secret: dict[str, Any] | None, message: str
) -> None:
    secrets = {secret["metadata"]["name"]: secret} if secret is not None else {}
    with pytest.raises(MutationError) as info:
        await mutate(pod, configmap(credentials=KSERVE_CREDENTIALS), FakeLookup(secrets=secrets))
    assert message in info.value.message
    assert info.value.code == 500


async def test_storage_spec_secret_read_failure_is_an_error_even_without_a_key() -> None:
    class Failing(FakeLookup):
        async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
            raise ServerUnavailable(0, "", "connection refused")

    with pytest.raises(MutationError, match="cannot read Secret models/storage-config: connection refused"):
        await mutate(spec_pod("<scheme-placeholder>://m", {"type": "s3", "bucket": "b"}), None, Failing())


class StubClient:
    def __init__(self) -> None:
        self.calls: list[tuple[Resource, str, str | None]] = []

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        self.calls.append((resource, name, namespace))
        if name == "missing":
            raise NotFound(404, "NotFound", f"{name} not found")
        if name == "down":
            raise ServerUnavailable(0, "", "connection refused")
        return {"metadata": {"name": name}}


async def test_client_lookup_maps_not_found_to_none_and_reads_only_by_name() -> None:
    client = StubClient()
    lookup = ClientCredentialLookup(cast(Client, client))
    assert await lookup.get_service_account("ns", "sa") == {"metadata": {"name": "sa"}}
    assert await lookup.get_secret("ns", "missing") is None
    with pytest.raises(ServerUnavailable):
        await lookup.get_secret("ns", "down")
    assert client.calls == [
        (SERVICEACCOUNTS, "sa", "ns"),
        (SECRETS, "missing", "ns"),
        (SECRETS, "down", "ns"),
    ]


# --- ClusterStorageContainer: KServe's TestGetStorageContainerSpec, TestStorageContainerCRDInjection ------


def storage_container(
    object_name: str, /, *formats: dict[str, str], disabled: bool | None = None, **container: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": object_name},
        "spec": {"container": container, "supportedUriFormats": list(formats)},
    }
    if disabled is not None:
        obj["disabled"] = disabled
    return obj


CUSTOM_CSC = storage_container(
    "custom",
    {"prefix": "custom://"},
    name="storage-initializer",
    image="kserve/storage-initializer:latest",
    resources={"limits": {"memory": "200Mi"}},
)
S3_AZURE_CSC = storage_container(
    "s3Azure",
    {"prefix": "s3://"},
    {"regex": "https://(.+?).blob.core.windows.net/(.+)"},
    name="storage-initializer",
    image="kserve/storage-initializer:latest",
    resources={"limits": {"memory": "500Mi"}},
    env=[{"name": "name", "value": "value"}],
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://foo", "s3Azure"),
        ("custom://foo", "custom"),
        ("abc://", None),
        # storage_container_types_test.go TestStorageContainerSpec_IsStorageUriSupported
        ("custom://abc.com/model.pt", "custom"),
        ("https://account.blob.core.windows.net/myblob", "s3Azure"),
        ("https://account.blob.core.windoes.net/myblob", None),
        ("s3://mybucket/mykey", "s3Azure"),
    ],
)
def test_storage_container_for_uri_as_in_kserve(uri: str, expected: str | None) -> None:
    found = storage_container_for([S3_AZURE_CSC, CUSTOM_CSC], uri)
    assert (found.name if found is not None else None) == expected


def test_first_enabled_storage_container_by_name_wins() -> None:
    first = storage_container("a-first", {"prefix": "s3://"}, disabled=True)
    second = storage_container("b-second", {"regex": "^s3://"})
    third = storage_container("c-third", {"prefix": "s3://"})
    found = storage_container_for([third, first, second], "s3://b/m")
    assert found is not None
    assert found.name == "b-second"


def test_prefix_wins_over_regex_in_one_format() -> None:
    csc = storage_container("x", {"prefix": "gs://", "regex": "^s3://"})
    assert storage_container_for([csc], "s3://b/m") is None


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (storage_container("bad", {"regex": "(["}), "error checking storage container bad: "),
        (
            {"metadata": {"name": "odd"}, "spec": {"supportedUriFormats": "s3://"}},
            "ClusterStorageContainer odd",
        ),
    ],
)
def test_unusable_storage_container_is_an_error_naming_it(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(StorageContainerError, match=re.escape(message)):
        storage_container_for([obj], "s3://b/m")


async def mutate_with(
    pod: dict[str, Any], containers: list[dict[str, Any]], lookup: FakeLookup | None = None
) -> dict[str, Any]:
    mutator = PodMutator(dict, lookup or FakeLookup(), lambda: containers)
    return await mutator.mutate(pod, "models")


async def test_storage_container_is_merged_over_the_init_container_as_in_kserve() -> None:
    """KServe TestStorageContainerCRDInjection "s3": the CR's resources and env merged in."""
    mutated = await mutate_with(make_pod({SOURCE_URI: "s3://foo"}), [CUSTOM_CSC, S3_AZURE_CSC])
    expected = expected_init_container("s3://foo")
    expected["resources"] = {
        "limits": {"cpu": "1", "memory": "500Mi"},
        "requests": {"cpu": "100m", "memory": "100Mi"},
    }
    expected["env"] = [{"name": "name", "value": "value"}]
    assert mutated["spec"]["initContainers"] == [expected]


async def test_config_container_when_no_storage_container_serves_the_uri_as_in_kserve() -> None:
    """KServe TestStorageContainerCRDInjection "Default config if storage uri not matched in CRs"."""
    mutated = await mutate_with(make_pod({SOURCE_URI: "https://foo"}), [CUSTOM_CSC, S3_AZURE_CSC])
    assert mutated["spec"]["initContainers"] == [expected_init_container("https://foo")]


async def test_storage_container_merge_follows_strategic_merge_rules() -> None:
    csc = storage_container(
        "s3",
        {"prefix": "s3://"},
        name="my-downloader",
        image="me/downloader:1",
        args=["--from", "s3"],
        env=[{"name": "AWS_ACCESS_KEY_ID", "value": "override"}, {"name": "LOG", "value": "debug"}],
        volumeMounts=[{"name": "cache", "mountPath": "/cache"}],
        securityContext={"runAsUser": 5, "capabilities": None},
        workingDir=None,
    )
    lookup = FakeLookup({"default": account("default", "s3creds")}, {"s3creds": S3_SECRET})
    mutated = await mutate_with(make_pod({SOURCE_URI: "s3://b/m", UID: "1337"}), [csc], lookup)
    init = mutated["spec"]["initContainers"][0]
    assert init["name"] == "storage-initializer"  # kept (KServe renames it to the CR's)
    assert init["image"] == "me/downloader:1"
    assert init["args"] == ["--from", "s3"]  # a list without a merge key is replaced
    env = env_of(init)
    assert env["AWS_ACCESS_KEY_ID"] == "override"  # merged by name
    assert env["LOG"] == "debug"
    assert env["AWS_SECRET_ACCESS_KEY"] == secret_ref("s3creds", "AWS_SECRET_ACCESS_KEY")
    # Kubernetes' merge order: the patch's items first, then the others in their original order.
    assert [e["name"] for e in init["env"]][:3] == ["AWS_ACCESS_KEY_ID", "LOG", "AWS_SECRET_ACCESS_KEY"]
    assert [m["mountPath"] for m in init["volumeMounts"]] == ["/cache", "/mnt/models"]
    # The UID annotation applies after the merge; the CR's null members are ignored, not deletions.
    assert init["securityContext"] == {**RESTRICTED, "runAsUser": 1337}
    assert "workingDir" not in init


async def test_storage_container_security_context_is_merged_over_the_restricted_profile() -> None:
    root = storage_container(
        "root", {"prefix": "s3://"}, securityContext={"runAsNonRoot": False, "runAsUser": 0}
    )
    init = (await mutate_with(make_pod({SOURCE_URI: "s3://b/m"}), [root]))["spec"]["initContainers"][0]
    assert init["securityContext"] == {**RESTRICTED, "runAsNonRoot": False, "runAsUser": 0}


async def test_storage_spec_matches_the_rewritten_uri_and_pvc_the_local_path() -> None:
    csc = storage_container("s3", {"prefix": "s3://my-bucket/"}, image="me/s3")
    pvc = storage_container("pvc", {"prefix": "pvc://"}, image="me/pvc")
    pod = make_pod(
        {
            SOURCE_URI: "<scheme-placeholder>://foo/bar",
            "internal.serving.kserve.io/storage-spec": "true",
            "internal.serving.kserve.io/storage-spec-param": '{"type": "s3", "bucket": "my-bucket"}',
        }
    )
    assert (await mutate_with(pod, [csc, pvc]))["spec"]["initContainers"][0]["image"] == "me/s3"
    on_pvc = await mutate_with(make_pod({SOURCE_URI: "pvc://claim/m"}), [csc, pvc])
    assert on_pvc["spec"]["initContainers"][0]["image"] == "kserve/storage-initializer:latest"


async def test_unusable_storage_container_is_an_admission_error() -> None:
    with pytest.raises(MutationError, match="error checking storage container bad: "):
        await mutate_with(make_pod({SOURCE_URI: "s3://b/m"}), [storage_container("bad", {"regex": "(["})])


async def test_storage_containers_are_not_read_for_pods_without_a_storage_uri() -> None:
    def unreadable() -> list[dict[str, Any]]:
        raise AssertionError("read")

    mutator = PodMutator(dict, FakeLookup(), unreadable)
    await mutator.mutate(make_pod({LOGGER: "true"}), "models")


# --- agent ---------------------------------------------------------------------------------------------

AGENT_RESOURCES = SI_RESOURCES


async def test_logger_agent_sidecar() -> None:
    pod = make_pod(
        {
            LOGGER: "true",
            "internal.serving.kserve.io/logger-sink-url": "http://sink",
            "internal.serving.kserve.io/logger-mode": "request",
        },
        labels={"component": "predictor", "endpoint": "default"},
    )
    pod["metadata"]["name"] = "sklearn-pod"
    mutated = await mutate(pod)
    assert container(mutated, "agent") == {
        "name": "agent",
        "image": "kserve/agent:latest",
        "args": [
            "--log-url",
            "http://sink",
            "--source-uri",
            "sklearn-pod",
            "--log-mode",
            "request",
            "--inference-service",
            "sklearn",
            "--namespace",
            "models",
            "--endpoint",
            "default",
            "--component",
            "predictor",
            "--component-port",
            "8080",
        ],
        "ports": [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}],
        "env": QP_ENV,
        "resources": AGENT_RESOURCES,
        "securityContext": RESTRICTED,
        "readinessProbe": AGENT_PROBE,
    }
    assert env_of(container(mutated, "queue-proxy"))["USER_PORT"] == "9081"
    assert [c["name"] for c in mutated["spec"]["containers"]] == ["kserve-container", "queue-proxy", "agent"]


async def test_logger_defaults_from_config() -> None:
    data = configmap(
        logger={"defaultUrl": "http://broker.example"}, agent={"image": "my/agent:1", "cpuLimit": "2"}
    )
    mutated = await mutate(make_pod({LOGGER: "true"}), data)
    agent = container(mutated, "agent")
    assert agent["args"][:6] == [
        "--log-url",
        "http://broker.example",
        "--source-uri",
        "",
        "--log-mode",
        "all",
    ]
    assert agent["image"] == "my/agent:1"
    assert agent["resources"]["limits"]["cpu"] == "2"


@pytest.mark.parametrize(
    ("annotations", "batcher_config", "args"),
    [
        ({}, {}, ["--enable-batcher"]),
        (
            {
                "internal.serving.kserve.io/batcher-max-batchsize": "32",
                "internal.serving.kserve.io/batcher-max-latency": "500",
            },
            {},
            ["--enable-batcher", "--max-batchsize", "32", "--max-latency", "500"],
        ),
        (
            {},
            {"maxBatchSize": "16", "maxLatency": "100"},
            ["--enable-batcher", "--max-batchsize", "16", "--max-latency", "100"],
        ),
        (
            {"internal.serving.kserve.io/batcher-max-batchsize": "8"},
            {"maxBatchSize": "16"},
            ["--enable-batcher", "--max-batchsize", "8"],
        ),
    ],
)
async def test_batcher_args(
    annotations: dict[str, str], batcher_config: dict[str, str], args: list[str]
) -> None:
    mutated = await mutate(make_pod({BATCHER: "true", **annotations}), configmap(batcher=batcher_config))
    assert container(mutated, "agent")["args"] == [*args, "--component-port", "8080"]


async def test_model_puller() -> None:
    pod = make_pod(
        {
            PULLER: "true",
            "internal.serving.kserve.io/configVolumeName": "modelconfig-sklearn-0",
            "internal.serving.kserve.io/configMountPath": "/mnt/configs",
            "internal.serving.kserve.io/modelDir": "/mnt/models",
            SOURCE_URI: "s3://b/m",
        },
        containers=[{"name": "kserve-container", "image": "x", "ports": [{"containerPort": 8081}]}],
    )
    mutated = await mutate(pod)
    agent = container(mutated, "agent")
    assert agent["args"] == [
        "--enable-puller",
        "--config-dir",
        "/mnt/configs",
        "--model-dir",
        "/mnt/models",
        "--component-port",
        "8081",
    ]
    assert agent["volumeMounts"] == [
        {"name": "model-dir", "mountPath": "/mnt/models"},
        {"name": "model-config", "mountPath": "/mnt/configs"},
    ]
    assert mutated["spec"]["volumes"] == [
        {"name": "model-dir", "emptyDir": {}},
        {"name": "model-config", "configMap": {"name": "modelconfig-sklearn-0"}},
    ]
    assert container(mutated, "kserve-container")["volumeMounts"] == [
        {"name": "model-dir", "mountPath": "/mnt/models"}
    ]
    assert "initContainers" not in mutated["spec"]


async def test_model_puller_needs_the_config_volume_annotation() -> None:
    with pytest.raises(
        MutationError,
        match=re.escape('requires the annotation "internal.serving.kserve.io/configVolumeName"'),
    ):
        await mutate(make_pod({PULLER: "true"}))


async def test_agent_args_order_puller_batcher_logger() -> None:
    pod = make_pod(
        {PULLER: "true", "internal.serving.kserve.io/configVolumeName": "c", BATCHER: "true", LOGGER: "true"}
    )
    args = container(await mutate(pod), "agent")["args"]
    flags = [a for a in args if a in ("--enable-puller", "--enable-batcher", "--log-url", "--component-port")]
    assert flags == ["--enable-puller", "--enable-batcher", "--log-url", "--component-port"]


async def test_agent_without_queue_proxy_gets_the_readiness_probe() -> None:
    probe = {"httpGet": {"path": "/v1/models/sklearn", "port": 8080}}
    pod = make_pod(
        {LOGGER: "true"}, containers=[{"name": "kserve-container", "image": "x", "readinessProbe": probe}]
    )
    agent = container(await mutate(pod), "agent")
    assert agent["env"] == [
        {"name": "SERVING_READINESS_PROBE", "value": json.dumps(probe, separators=(",", ":"))}
    ]


async def test_agent_copies_the_first_containers_security_context_and_gets_credentials() -> None:
    context = {"runAsUser": 1000}
    pod = make_pod(
        {LOGGER: "true"},
        containers=[
            {"name": "kserve-container", "securityContext": context},
            {"name": "queue-proxy", "env": []},
        ],
    )
    lookup = FakeLookup({"default": account("default", "gcscreds")}, {"gcscreds": GCS_SECRET})
    agent = container(await mutate(pod, None, lookup), "agent")
    assert agent["securityContext"] == context
    assert (
        env_of(agent)["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/gcloud-application-credentials.json"
    )


async def test_agent_component_port_only_with_a_kserve_container_as_in_kserve() -> None:
    transformer = make_pod({LOGGER: "true"}, containers=[{"name": "transformer-container", "image": "t"}])
    assert "--component-port" not in container(await mutate(transformer), "agent")["args"]
    ported = make_pod(
        {LOGGER: "true"}, containers=[{"name": "kserve-container", "ports": [{"containerPort": 8085}]}]
    )
    assert container(await mutate(ported), "agent")["args"][-2:] == ["--component-port", "8085"]


async def test_existing_agent_is_left_alone() -> None:
    pod = make_pod({LOGGER: "true"})
    pod["spec"]["containers"].append({"name": "agent", "image": "mine"})
    mutated = await mutate(pod)
    assert container(mutated, "agent") == {"name": "agent", "image": "mine"}
    assert env_of(container(mutated, "queue-proxy"))["USER_PORT"] == "8080"


# --- RawDeployment pods, without queue-proxy: KServe's TestAgentInjector rows that have none, a whole pod ---

RAW_PROBE = {
    "tcpSocket": {"port": 8080},
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}
"""The probe the raw Deployment gives kserve-container, as the API server hands it to the webhook."""
RAW_PROBE_ENV = {
    "name": "SERVING_READINESS_PROBE",
    # The exact string KServe's tests expect (Go's json.Marshal of the probe).
    "value": '{"tcpSocket":{"port":8080},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,'
    '"failureThreshold":3}',
}
PULLER_ANNOTATIONS = {
    PULLER: "true",
    "internal.serving.kserve.io/configVolumeName": "modelconfig-deployment-0",
    "internal.serving.kserve.io/modelDir": "/mnt/models",
    "internal.serving.kserve.io/configMountPath": "/mnt/configs",
}
PULLER_ARGS = ["--enable-puller", "--config-dir", "/mnt/configs", "--model-dir", "/mnt/models"]
PULLER_MOUNTS = [
    {"name": "model-dir", "mountPath": "/mnt/models"},
    {"name": "model-config", "mountPath": "/mnt/configs"},
]
PULLER_VOLUMES = [
    {"name": "model-dir", "emptyDir": {}},
    {"name": "model-config", "configMap": {"name": "modelconfig-deployment-0"}},
]
LOGGER_ARGS = [
    "--log-url",
    "http://httpbin.org/",
    "--source-uri",
    "deployment",
    "--log-mode",
    "all",
    "--inference-service",
    "sklearn",
    "--namespace",
    "models",
    "--endpoint",
    "",
    "--component",
    "predictor",
]


def raw_pod(annotations: Mapping[str, str], model: dict[str, Any]) -> dict[str, Any]:
    """A pod of a raw Deployment: the component's labels, one model container, no queue-proxy."""
    pod = make_pod(
        annotations,
        containers=[{"readinessProbe": copy.deepcopy(RAW_PROBE), **model}],
        labels={"app": "isvc.sklearn-predictor", "component": "predictor"},
    )
    pod["metadata"]["name"] = "deployment"
    return pod


@pytest.mark.parametrize(
    ("case", "annotations", "model", "args", "agent_mounts", "model_mounts", "volumes"),
    [
        (
            "AddAgent",
            PULLER_ANNOTATIONS,
            {"name": "sklearn"},
            PULLER_ARGS,
            PULLER_MOUNTS,
            None,
            PULLER_VOLUMES,
        ),
        (
            "KserveContainer has port",
            PULLER_ANNOTATIONS,
            {"name": "kserve-container", "ports": [{"name": "serving-port", "containerPort": 80}]},
            [*PULLER_ARGS, "--component-port", "80"],
            PULLER_MOUNTS,
            [{"name": "model-dir", "mountPath": "/mnt/models"}],
            PULLER_VOLUMES,
        ),
        (
            "logger, raw",
            {
                LOGGER: "true",
                "internal.serving.kserve.io/logger-sink-url": "http://httpbin.org/",
                "internal.serving.kserve.io/logger-mode": "all",
            },
            {"name": "kserve-container"},
            [*LOGGER_ARGS, "--component-port", "8080"],
            None,
            None,
            None,
        ),
        (
            "batcher, raw",
            {
                BATCHER: "true",
                "internal.serving.kserve.io/batcher-max-batchsize": "30",
                "internal.serving.kserve.io/batcher-max-latency": "100",
            },
            {"name": "kserve-container"},
            ["--enable-batcher", "--max-batchsize", "30", "--max-latency", "100", "--component-port", "8080"],
            None,
            None,
            None,
        ),
    ],
)
async def test_raw_pod_agent_as_in_kserve(
    case: str,
    annotations: dict[str, str],
    model: dict[str, Any],
    args: list[str],
    agent_mounts: list[dict[str, str]] | None,
    model_mounts: list[dict[str, str]] | None,
    volumes: list[dict[str, Any]] | None,
) -> None:
    """Without queue-proxy the agent gets the model container's probe as `SERVING_READINESS_PROBE` and no
    `USER_PORT` is rewritten (KServe's rows use `sklearn` as the first container's name)."""
    mutated = await mutate(raw_pod(annotations, model))
    expected_agent: dict[str, Any] = {
        "name": "agent",
        "image": "kserve/agent:latest",
        "args": args,
        "ports": [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}],
        "env": [RAW_PROBE_ENV],
        "resources": AGENT_RESOURCES,
        "securityContext": RESTRICTED,
        "readinessProbe": AGENT_PROBE,
    }
    if agent_mounts is not None:
        expected_agent["volumeMounts"] = agent_mounts
    assert [c["name"] for c in mutated["spec"]["containers"]] == [model["name"], "agent"], case
    assert container(mutated, "agent") == expected_agent, case
    assert container(mutated, model["name"]).get("volumeMounts") == model_mounts, case
    assert mutated["spec"].get("volumes") == volumes, case


async def test_raw_pod_agent_without_a_probe_gets_null_as_in_kserve() -> None:
    pod = make_pod({LOGGER: "true"}, containers=[{"name": "kserve-container", "image": "x"}])
    assert container(await mutate(pod), "agent")["env"] == [
        {"name": "SERVING_READINESS_PROBE", "value": "null"}
    ]


async def test_raw_pod_gets_storage_initializer_credentials_and_agent() -> None:
    """A whole raw predictor pod: S3 model, the ServiceAccount's Secret, the logger, scraping on."""
    lookup = FakeLookup({"models-sa": account("models-sa", "s3creds")}, {"s3creds": S3_SECRET})
    annotations = {SOURCE_URI: "s3://models/iris", LOGGER: "true"}
    model = {
        "name": "kserve-container",
        "image": "kserve/sklearnserver:v0.11.2",
        "args": ["--model_name=sklearn", "--model_dir=/mnt/models", "--http_port=8080"],
    }
    pod = raw_pod(annotations, model)
    pod["spec"]["serviceAccountName"] = "models-sa"
    data = configmap(
        credentials=json.loads(SHIPPED_DEFAULTS["credentials"]),
        metricsAggregator={"enableMetricAggregation": "false", "enablePrometheusScraping": "true"},
    )
    mutated = await mutate(pod, data, lookup)
    s3_env = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_ref("s3creds", "AWS_ACCESS_KEY_ID")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret_ref("s3creds", "AWS_SECRET_ACCESS_KEY")},
        {"name": "S3_USE_HTTPS", "value": "0"},
        {"name": "S3_ENDPOINT", "value": "minio.minio:9000"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio:9000"},
        {"name": "S3_VERIFY_SSL", "value": "0"},
        {"name": "awsAnonymousCredential", "value": "false"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
        {"name": "S3_USER_VIRTUAL_BUCKET", "value": "false"},
        {"name": "AWS_CA_BUNDLE", "value": "/etc/ssl/ca.crt"},
    ]
    assert mutated["spec"]["initContainers"] == [
        {**expected_init_container("s3://models/iris"), "env": s3_env}
    ]
    assert mutated["spec"]["volumes"] == [{"name": "kserve-provision-location", "emptyDir": {}}]
    assert container(mutated, "kserve-container") == {
        **model,
        "readinessProbe": RAW_PROBE,
        "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}],
    }
    agent = container(mutated, "agent")
    assert agent["env"] == [RAW_PROBE_ENV, *s3_env]
    assert agent["args"][-2:] == ["--component-port", "8080"]
    assert annotations_of(mutated) == annotations | {AGG: "false", PROM: "true"} | PORT_9091
    assert [c["name"] for c in mutated["spec"]["containers"]] == ["kserve-container", "agent"]


# --- accelerator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "limits", "node_selector", "expected"),
    [
        (
            {GKE: "nvidia-tesla-t4"},
            {"nvidia.com/gpu": "1"},
            None,
            {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        ),
        (
            {GKE: "nvidia-tesla-t4"},
            {"nvidia.com/gpu": "1"},
            {"pool": "a"},
            {"pool": "a", "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
        ),
        ({GKE: "nvidia-tesla-t4"}, {"cpu": "1"}, None, None),
        ({}, {"nvidia.com/gpu": "1"}, None, None),
    ],
)
async def test_gke_accelerator_selector(
    annotations: dict[str, str],
    limits: dict[str, str],
    node_selector: dict[str, str] | None,
    expected: dict[str, str] | None,
) -> None:
    spec: dict[str, Any] = {} if node_selector is None else {"nodeSelector": node_selector}
    pod = make_pod(
        annotations, containers=[{"name": "kserve-container", "resources": {"limits": limits}}], **spec
    )
    assert (await mutate(pod))["spec"].get("nodeSelector") == expected


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (["not", "a", "pod"], "invalid pod: the object must be a Pod (a JSON object), got list"),
        (
            {"metadata": {"labels": {ISVC_LABEL: 1}}},
            'invalid pod: metadata.labels["serving.kserve.io/inferenceservice"] must be a string, got int',
        ),
        ({"metadata": {"labels": {ISVC_LABEL: "x"}}}, "invalid pod: spec is missing"),
        (
            {"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": []},
            "invalid pod: spec must be an object, got list",
        ),
        ({"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": {}}, "invalid pod: spec.containers is missing"),
        (
            {"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": {"containers": []}},
            "invalid pod: spec.containers is empty",
        ),
        (
            {"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": {"containers": [{}]}},
            "spec.containers[0].name must be a string, got NoneType",
        ),
        (
            {"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": {"containers": ["c"]}},
            "spec.containers[0] must be an object, got str",
        ),
        (
            {
                "metadata": {"labels": {ISVC_LABEL: "x"}, "annotations": {AGG: True}},
                "spec": {"containers": [{"name": "c"}]},
            },
            'metadata.annotations["serving.kserve.io/enable-metric-aggregation"] must be a string, got bool',
        ),
        (
            {"metadata": {"labels": {ISVC_LABEL: "x"}}, "spec": {"containers": [{"name": "c", "env": {}}]}},
            "spec.containers[0].env must be a list, got dict",
        ),
        (
            {
                "metadata": {"labels": {ISVC_LABEL: "x"}},
                "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "80"}]}]},
            },
            "spec.containers[0].ports[0].containerPort must be an integer, got str",
        ),
        (
            {
                "metadata": {"labels": {ISVC_LABEL: "x"}},
                "spec": {"containers": [{"name": "c"}], "volumes": [{"name": 3}]},
            },
            "spec.volumes[0].name must be a string, got int",
        ),
        (
            {
                "metadata": {"labels": {ISVC_LABEL: "x"}},
                "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": 1}]}]},
            },
            "spec.containers[0].env[0].value must be a string, got int",
        ),
    ],
)
async def test_malformed_pod(pod: Any, message: str) -> None:
    with pytest.raises(MutationError) as info:
        await mutate(pod)
    assert info.value.message.startswith("invalid pod: ")
    assert info.value.message.endswith(message)
    assert info.value.code == 400


@pytest.mark.parametrize("account_name", ["a/b", "..", ".", "../kube-system", "Default", "a%2Fb", "x" * 254])
async def test_service_account_name_that_is_no_name_is_a_bad_request(account_name: str) -> None:
    lookup = FakeLookup()
    with pytest.raises(MutationError) as info:
        await mutate(make_pod({SOURCE_URI: "s3://b/m"}, serviceAccountName=account_name), None, lookup)
    assert info.value.code == 400
    assert info.value.message.startswith(
        f"invalid pod: spec.serviceAccountName {account_name!r} is not a valid ServiceAccount name"
    )
    assert lookup.reads == []


@pytest.mark.parametrize("namespace", ["a/b", "..", "x.y", "UPPER"])
async def test_namespace_that_is_no_name_is_a_bad_request(namespace: str) -> None:
    lookup = FakeLookup()
    with pytest.raises(MutationError) as info:
        await mutate(make_pod({SOURCE_URI: "s3://b/m"}), None, lookup, namespace=namespace)
    assert info.value.code == 400
    assert info.value.message.startswith(
        f"invalid pod: namespace {namespace!r} is not a valid namespace name"
    )
    assert lookup.reads == []


async def test_valid_dotted_service_account_name_is_looked_up() -> None:
    lookup = FakeLookup()
    await mutate(make_pod({SOURCE_URI: "s3://b/m"}, serviceAccountName="team.models-1"), None, lookup)
    assert lookup.reads == [("ServiceAccount", "models", "team.models-1")]


@pytest.mark.parametrize(
    ("key", "annotations"),
    [
        ("storageInitializer", {SOURCE_URI: "s3://b/m"}),
        ("credentials", {SOURCE_URI: "s3://b/m"}),
        ("logger", {LOGGER: "true"}),
        ("batcher", {BATCHER: "true"}),
        ("agent", {LOGGER: "true"}),
        ("metricsAggregator", {}),
    ],
)
async def test_malformed_config_key_is_named(key: str, annotations: dict[str, str]) -> None:
    lookup = FakeLookup({"default": account("default")})
    with pytest.raises(MutationError) as info:
        await mutate(make_pod(annotations), {key: "{not json"}, lookup)
    assert (
        info.value.message == f'inferenceservice-config key "{key}": invalid JSON at line 1 column 2: '
        "Expecting property name enclosed in double quotes"
    )
    assert info.value.code == 500


async def test_unparsable_quantity_in_config() -> None:
    with pytest.raises(
        MutationError, match="key \"storageInitializer\": cpuLimit: 'lots' is not a Kubernetes quantity"
    ):
        await mutate(make_pod({SOURCE_URI: "s3://b/m"}), configmap(storageInitializer={"cpuLimit": "lots"}))


async def test_broken_key_only_affects_pods_that_need_it() -> None:
    mutated = await mutate(
        make_pod({SOURCE_URI: "s3://b/m"}), {"logger": "{", "batcher": "[", "ingress": "x"}
    )
    assert mutated["spec"]["initContainers"][0]["name"] == "storage-initializer"


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {SOURCE_URI: "s3://b/m", UID: "istio"},
            'annotation "serving.kserve.io/storage-initializer-uid" must be a non-negative integer user ID, '
            "got 'istio'",
        ),
        ({SOURCE_URI: "s3://b/m", UID: "-1"}, "must be a non-negative integer user ID, got '-1'"),
        ({SOURCE_URI: "pvc://"}, "invalid storage URI 'pvc://': expected pvc://<claim-name>/[path]"),
    ],
)
async def test_bad_annotations(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(MutationError, match=re.escape(message)):
        await mutate(make_pod(annotations))


async def test_storage_initializer_needs_kserve_container() -> None:
    pod = make_pod({SOURCE_URI: "s3://b/m"}, containers=[{"name": "other", "image": "x"}])
    with pytest.raises(
        MutationError,
        match="cannot inject the storage initializer: the pod has no container named kserve-container",
    ):
        await mutate(pod)


async def test_missing_or_unreadable_configmap() -> None:
    missing = PodMutator(lambda: None, FakeLookup())
    with pytest.raises(MutationError, match="ConfigMap inferenceservice-config not found"):
        await missing.mutate(make_pod(), "ns")

    def broken() -> Mapping[str, str]:
        raise RuntimeError("cache not synced")

    with pytest.raises(
        MutationError, match="cannot read ConfigMap inferenceservice-config: cache not synced"
    ):
        await PodMutator(broken, FakeLookup()).mutate(make_pod(), "ns")


async def test_config_is_reparsed_only_when_the_data_changes() -> None:
    data = {"metricsAggregator": '{"enableMetricAggregation": "true"}'}
    mutator = PodMutator(lambda: data, FakeLookup())
    assert annotations_of(await mutator.mutate(make_pod(), "ns"))[AGG] == "true"
    data["metricsAggregator"] = '{"enableMetricAggregation": "false"}'
    assert annotations_of(await mutator.mutate(make_pod(), "ns"))[AGG] == "false"


# --- idempotency and robustness (hypothesis) -----------------------------------------------------------

OPTIONAL = st.none() | st.sampled_from(["true", "false"])


@st.composite
def pod_scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    annotations: dict[str, str] = {}
    for key in (AGG, PROM):
        value = draw(OPTIONAL)
        if value is not None:
            annotations[key] = value
    source = draw(st.sampled_from([None, "s3://b/m", "gs://b/m", "pvc://claim/path", "pvc://claim"]))
    if source is not None:
        annotations[SOURCE_URI] = source
    if draw(st.booleans()):
        annotations[UID] = str(draw(st.integers(0, 65535)))
    for key in (LOGGER, BATCHER):
        if draw(st.booleans()):
            annotations[key] = "true"
    if draw(st.booleans()):
        annotations[PULLER] = "true"
        annotations["internal.serving.kserve.io/configVolumeName"] = "cfg"
    if draw(st.booleans()):
        annotations["prometheus.kserve.io/port"] = str(draw(st.integers(1, 65535)))
    if draw(st.booleans()):
        annotations[GKE] = "nvidia-tesla-t4"
    pod = make_pod(annotations, queue_proxy=draw(st.booleans()))
    if draw(st.booleans()):
        pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    if draw(st.booleans()):
        pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1000}
    if draw(st.booleans()):
        pod["spec"]["containers"].append({"name": "transformer-container", "image": "t"})
    if draw(st.booleans()):
        pod["spec"]["serviceAccountName"] = "sa"
    data = configmap(
        metricsAggregator={
            "enableMetricAggregation": draw(st.sampled_from(["true", "false"])),
            "enablePrometheusScraping": draw(st.sampled_from(["true", "false"])),
        },
        storageInitializer={"enableDirectPvcVolumeMount": draw(st.booleans())},
    )
    return pod, data


IDEMPOTENCY_LOOKUP = FakeLookup(
    {"default": account("default", "s3creds", "gcscreds"), "sa": account("sa", "gcscreds")},
    {"s3creds": S3_SECRET, "gcscreds": GCS_SECRET},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod_scenarios())
def test_mutating_twice_equals_mutating_once(scenario: tuple[dict[str, Any], dict[str, str]]) -> None:
    pod, data = scenario
    original = copy.deepcopy(pod)
    once = asyncio.run(mutate(pod, data, IDEMPOTENCY_LOOKUP))
    twice = asyncio.run(mutate(once, data, IDEMPOTENCY_LOOKUP))
    assert twice == once
    assert pod == original


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
FIELD_VALUES = JSON | st.sampled_from(["kserve-container", "queue-proxy", "storage-initializer", "agent"])


@st.composite
def malformed_pods(draw: st.DrawFn) -> Any:
    """Pods that look like ours with any field replaced by arbitrary JSON."""
    pod, _ = draw(pod_scenarios())
    targets = [pod["metadata"], pod["spec"], *pod["spec"]["containers"]]
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(targets))
        key = draw(
            st.sampled_from(
                [
                    "annotations",
                    "containers",
                    "initContainers",
                    "env",
                    "ports",
                    "volumeMounts",
                    "volumes",
                    "resources",
                    "securityContext",
                    "name",
                    "nodeSelector",
                    "serviceAccountName",
                    "readinessProbe",
                ]
            )
        )
        target[key] = draw(FIELD_VALUES)
    return pod


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_pods())
def test_arbitrary_field_values_give_a_mutation_error_or_a_pod(pod: Any) -> None:
    result = asyncio.run(outcome(pod))
    if isinstance(result, MutationError):
        assert result.message
        assert "\n" not in result.message
        assert "internal error" not in result.message
    else:
        json.dumps(result)


async def outcome(pod: Any) -> dict[str, Any] | MutationError:
    try:
        return await mutate(pod, None, IDEMPOTENCY_LOOKUP)
    except MutationError as exc:
        return exc


# --- the admission handler -----------------------------------------------------------------------------


def admission_request(obj: Any, kind: str = "Pod") -> AdmissionRequest:
    return AdmissionRequest.model_validate(
        {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "models",
            "operation": "CREATE",
            "object": obj,
        }
    )


async def test_handler_patches_our_pods() -> None:
    handler = PodMutatorHandler(PodMutator(lambda: {}, FakeLookup()))
    response = await handler.handle(admission_request(make_pod({SOURCE_URI: "s3://b/m"})))
    assert response.allowed
    ops = response.json_patch()
    paths = {op["path"] for op in ops}
    assert "/spec/initContainers" in paths
    assert "/metadata/annotations/serving.kserve.io~1enable-metric-aggregation" in paths


async def test_handler_allows_other_pods_without_a_patch() -> None:
    handler = PodMutatorHandler(PodMutator(lambda: {}, FakeLookup()))
    response = await handler.handle(
        admission_request({"metadata": {"name": "x"}, "spec": {"containers": []}})
    )
    assert response.allowed
    assert response.patch is None


@pytest.mark.parametrize(
    ("obj", "kind", "code", "message"),
    [
        (make_pod({UID: "x", SOURCE_URI: "s3://b/m"}), "Pod", 500, "storage-initializer-uid"),
        ({"metadata": {"labels": {ISVC_LABEL: "x"}}}, "Pod", 400, "invalid pod: spec is missing"),
        (None, "Pod", 400, "the admission request carries no pod"),
        ({"metadata": {}}, "Deployment", 400, "expected a core/v1 Pod, got Deployment"),
    ],
)
async def test_handler_errors(obj: Any, kind: str, code: int, message: str) -> None:
    handler = PodMutatorHandler(PodMutator(lambda: {}, FakeLookup()))
    response = await handler.handle(admission_request(obj, kind))
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == code
    assert message in (response.status.message or "")
