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

from apis.config import SHIPPED_DEFAULTS
from manager.client import SECRETS, SERVICEACCOUNTS, Client, Resource
from manager.errors import NotFound, ServerUnavailable
from webhooks.admission import AdmissionRequest
from webhooks.injectors.credentials import ClientCredentialLookup
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
    expected["metadata"]["annotations"] = {AGG: "false", PROM: "false"}
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
        # KServe's scenarios (config values "" in its test: annotations absent behave as "not true").
        ("EnableMetricAggTrue", {AGG: "true"}, None, AGG_ENV, {AGG: "true", PROM: "false"}),
        ("EnableMetricAggNotSet", {}, None, None, {AGG: "false", PROM: "false"}),
        ("EnableMetricAggFalse", {AGG: "false"}, None, None, {AGG: "false", PROM: "false"}),
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


async def test_aggregation_without_queue_proxy_only_sets_annotations() -> None:
    mutated = await mutate(make_pod({AGG: "true", PROM: "true"}, queue_proxy=False))
    assert mutated["spec"]["containers"] == make_pod(queue_proxy=False)["spec"]["containers"]
    assert annotations_of(mutated) == {AGG: "true", PROM: "true"} | SCRAPE_9088


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
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
        {"name": "S3_VERIFY_SSL", "value": "0"},
        {"name": "S3_USER_VIRTUAL_BUCKET", "value": "false"},
        {"name": "awsAnonymousCredential", "value": "false"},
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


async def test_storage_spec_credentials() -> None:
    storage = {
        "metadata": {"name": "storage-config"},
        "data": {"default_s3": b64(json.dumps({"type": "s3", "bucket": "models"}))},
    }
    pod = make_pod(
        {
            SOURCE_URI: "<scheme-placeholder>://sklearn/iris",
            "internal.serving.kserve.io/storage-spec": "true",
            "internal.serving.kserve.io/storage-spec-param": '{"type": "s3"}',
        }
    )
    lookup = FakeLookup(secrets={"storage-config": storage})
    mutated = await mutate(pod, None, lookup)
    init = mutated["spec"]["initContainers"][0]
    assert init["args"] == ["s3://models/sklearn/iris", "/mnt/models"]
    assert init["env"] == [
        {"name": "STORAGE_CONFIG", "valueFrom": secret_ref("storage-config", "default_s3")},
        {"name": "STORAGE_OVERRIDE_CONFIG", "value": '{"type":"s3"}'},
    ]
    assert lookup.reads == [("Secret", "models", "storage-config")]


@pytest.mark.parametrize(
    ("annotations", "secrets", "message"),
    [
        ({}, {}, "storage spec Secret models/storage-config does not exist"),
        (
            {"internal.serving.kserve.io/storage-spec-key": "k"},
            {"storage-config": {"data": {}}},
            "storage key 'k' not found",
        ),
        ({}, {"storage-config": {"data": {}}}, "default storage key 'default' not found"),
        ({}, {"storage-config": {"data": {"default": "!!"}}}, "is not base64-encoded JSON"),
        ({"internal.serving.kserve.io/storage-spec-param": "{"}, {}, 'storage-spec-param" is not valid JSON'),
        (
            {},
            {"storage-config": {"data": {"default": b64('{"type": "ftp"}')}}},
            "unsupported storage type 'ftp'",
        ),
    ],
)
async def test_storage_spec_errors(
    annotations: dict[str, str], secrets: dict[str, Any], message: str
) -> None:
    pod = make_pod(
        {
            SOURCE_URI: "<scheme-placeholder>://m",
            "internal.serving.kserve.io/storage-spec": "true",
            **annotations,
        }
    )
    with pytest.raises(MutationError, match=message):
        await mutate(pod, None, FakeLookup(secrets=secrets))


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


async def test_existing_agent_is_left_alone() -> None:
    pod = make_pod({LOGGER: "true"})
    pod["spec"]["containers"].append({"name": "agent", "image": "mine"})
    mutated = await mutate(pod)
    assert container(mutated, "agent") == {"name": "agent", "image": "mine"}
    assert env_of(container(mutated, "queue-proxy"))["USER_PORT"] == "8080"


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
