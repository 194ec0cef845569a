"""`/mutate-pods` called by the real kube-apiserver over TLS, from the manager that serves it in production.

Each test hosts a Manager in-process with `setup_webhooks` (so the handlers read `inferenceservice-config`
from the manager's informer cache, and credentials through live ServiceAccount/Secret GETs) and registers
KServe's webhook configurations from `config/webhook/manifests.yaml`, rewritten only where a loopback test
must differ: a unique name, `clientConfig.url` to `https://127.0.0.1:<port>` with our generated CA, and a
namespaceSelector that additionally requires the test namespace's own label. Configurations are
cluster-scoped and use `failurePolicy: Fail`, so a leftover one would break every later test: they are
deleted in a `finally` before the server stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry

from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    INFERENCE_SERVICES,
    SERVING_RUNTIMES,
)
from controllers.inferenceservice import setup_inferenceservice_controller
from e2e.knative_double import install as install_double
from e2e.localcluster.cluster import LocalCluster
from manager.client import (
    CONFIGMAPS,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    Client,
    Object,
    PatchType,
    Resource,
    load_client,
)
from manager.errors import AlreadyExists, NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from tests.integration.isvc_harness import SKLEARN_RUNTIME, Harness, config_data, install_crds
from webhooks.admission import AdmissionRequest, AdmissionResponse, allowed, patch_response_from_raw
from webhooks.certs import (
    MUTATING_WEBHOOK_CONFIGURATIONS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    KeyPair,
    generate_ca,
    issue_serving_cert,
    write_cert_dir,
)
from webhooks.injectors.credentials import ClientCredentialLookup
from webhooks.pod_mutator import PodMutator, PodMutatorHandler
from webhooks.server import WebhookServer
from webhooks.setup import POD_MUTATOR_PATH, setup_webhooks

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "config" / "webhook" / "manifests.yaml"
SCOPE_LABEL = "webhook-it.kserve.io/scope"
WAIT = 30.0

ISVC_LABEL = "serving.kserve.io/inferenceservice"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"
UID = "serving.kserve.io/storage-initializer-uid"
AGG = "serving.kserve.io/enable-metric-aggregation"
PROM = "serving.kserve.io/enable-prometheus-scraping"
PROM_PORT = "prometheus.kserve.io/port"
PROM_PATH = "prometheus.kserve.io/path"
LOGGER = "internal.serving.kserve.io/logger"
LOGGER_URL = "internal.serving.kserve.io/logger-sink-url"
LOGGER_MODE = "internal.serving.kserve.io/logger-mode"
QPEXT_ENV = (
    "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT",
    "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH",
    "AGGREGATE_PROMETHEUS_METRICS_PORT",
)


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def serving_certificates(cert_dir: Path) -> KeyPair:
    """A fresh CA and a serving cert for 127.0.0.1 in `cert_dir`; returns the CA."""
    ca = generate_ca("webhook-it-ca")
    serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    write_cert_dir(cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    return ca


def configurations(
    port: int, ca_pem: bytes, token: str, paths: Iterable[str]
) -> list[tuple[Resource, Object]]:
    """KServe's shipped configurations, keeping the webhooks serving `paths`, pointed at loopback.

    Returns (resource, body) pairs; names get `-<token>` and every webhook is confined to namespaces
    labelled `SCOPE_LABEL=<token>` on top of its own selectors.
    """
    wanted = set(paths)
    resources: dict[str, Resource] = {
        "MutatingWebhookConfiguration": MUTATING_WEBHOOK_CONFIGURATIONS,
        "ValidatingWebhookConfiguration": VALIDATING_WEBHOOK_CONFIGURATIONS,
    }
    result: list[tuple[Resource, Object]] = []
    for document in yaml.safe_load_all(MANIFESTS.read_text()):
        if not document:
            continue
        webhooks = []
        for webhook in document["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            if path not in wanted:
                continue
            webhook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_pem).decode(),
            }
            selector = webhook.setdefault("namespaceSelector", {})
            selector.setdefault("matchExpressions", []).append(
                {"key": SCOPE_LABEL, "operator": "In", "values": [token]}
            )
            webhooks.append(webhook)
        if webhooks:
            document["metadata"]["name"] = f"{document['metadata']['name']}-{token}"
            document["webhooks"] = webhooks
            result.append((resources[document["kind"]], document))
    return result


@dataclass
class WebhookEnv:
    """The running manager, its webhook server, and helpers to create and inspect objects."""

    client: Client
    namespace: str
    manager: Manager
    server: WebhookServer
    ca: KeyPair
    token: str
    harness: Harness | None

    async def set_config(self, key: str, value: str | None) -> None:
        """Change (or remove) one ConfigMap key and wait until the manager's cache has it."""
        patch: Object = {"data": {key: value}}
        await self.client.patch(CONFIGMAPS, "inferenceservice-config", patch, self.namespace)

        async def seen() -> bool:
            cm = self.manager.cache.get(CONFIGMAPS, "inferenceservice-config", self.namespace)
            return cm is not None and (cm.get("data") or {}).get(key) == value

        await until(seen, f"the cache to see ConfigMap key {key}")

    async def create_pod(self, pod: Object) -> Object:
        """Create and read back the stored pod."""
        created = await self.client.create(PODS, pod, self.namespace)
        return await self.client.get(PODS, created["metadata"]["name"], self.namespace)


async def wait_for_service_account(client: Client, namespace: str, name: str = "default") -> None:
    """k8s 1.20's ServiceAccount admission rejects pods until the account and its token exist."""

    async def ready() -> bool:
        try:
            account = await client.get(SERVICEACCOUNTS, name, namespace)
        except NotFound:
            return False
        refs = account.get("secrets") or []
        return any(str(ref.get("name", "")).startswith(f"{name}-token-") for ref in refs)

    # kube-controller-manager's token controller works through every namespace the session made; under
    # load it can take longer than the usual wait (a hang guard, not a timing requirement).
    await until(ready, f"ServiceAccount {namespace}/{name} and its token", timeout=3 * WAIT)


def probe_pod(name: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {ISVC_LABEL: "probe"}},
        "spec": {"containers": [{"name": "kserve-container", "image": "probe"}]},
    }


async def wait_until_called(client: Client, namespace: str) -> None:
    """The API server picks up new configurations asynchronously: dry-run a labelled pod until mutated."""

    async def mutated() -> bool:
        body = probe_pod(f"probe-{secrets.token_hex(3)}")
        result = await client.request("POST", PODS.path(namespace), query={"dryRun": "All"}, body=body)
        return AGG in (result["metadata"].get("annotations") or {})

    await until(mutated, "the API server to call /mutate-pods")


@contextlib.asynccontextmanager
async def webhook_env(
    local_cluster: LocalCluster,
    namespace: str,
    cert_dir: Path,
    *,
    paths: Iterable[str] = (POD_MUTATOR_PATH,),
    config: Mapping[str, str] | None = None,
    isvc: bool = False,
) -> AsyncIterator[WebhookEnv]:
    """A manager serving KServe's webhooks (plus, with `isvc`, the controller and the Knative double).

    Our CRDs are installed first: the webhooks read ClusterStorageContainers from the manager's cache, which
    cannot sync without their CRD.
    """
    kubeconfig = local_cluster.kubeconfig_path
    await asyncio.to_thread(install_crds, kubeconfig)
    client = await load_client(str(kubeconfig))
    token = secrets.token_hex(4)
    registered: list[tuple[Resource, str]] = []
    try:
        await client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "inferenceservice-config", "namespace": namespace},
                "data": dict(config_data() if config is None else config),
            },
        )
        if isvc:
            with contextlib.suppress(AlreadyExists):
                await client.create(CLUSTER_SERVING_RUNTIMES, copy.deepcopy(SKLEARN_RUNTIME))
        ca = serving_certificates(cert_dir)
        options = ManagerOptions(
            metrics_addr="0",
            health_probe_addr="0",
            namespace=namespace,
            webhook_host="127.0.0.1",
            webhook_port=0,
            webhook_cert_dir=str(cert_dir),
        )
        manager = Manager(client, options, metrics=Metrics(CollectorRegistry()))
        harness: Harness | None = None
        if isvc:
            setup_inferenceservice_controller(manager, max_concurrent_reconciles=2)
            harness = Harness(client, namespace, manager, install_double(manager))
        server = setup_webhooks(manager)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop))
        try:
            await asyncio.wait_for(manager.wait_leading(), 60)
            await client.patch(
                NAMESPACES,
                namespace,
                {"metadata": {"labels": {SCOPE_LABEL: token}}},
                patch_type=PatchType.MERGE,
            )
            await wait_for_service_account(client, namespace)
            env = WebhookEnv(client, namespace, manager, server, ca, token, harness)
            try:
                for resource, body in configurations(server.bound_port, ca.cert_pem, token, paths):
                    await client.create(resource, body)
                    registered.append((resource, body["metadata"]["name"]))
                if POD_MUTATOR_PATH in paths:
                    await wait_until_called(client, namespace)
                yield env
            finally:
                for resource, name in registered:
                    with contextlib.suppress(NotFound):
                        await client.delete(resource, name)
                registered.clear()
                if harness is not None and not task.done():
                    await harness.delete_all()
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    finally:
        for resource, name in registered:  # only when setup failed between create and the inner finally
            with contextlib.suppress(NotFound):
                await client.delete(resource, name)
        await client.close()


def revision_pod(name: str, annotations: Mapping[str, str], **spec: Any) -> Object:
    """A pod shaped like a Knative revision pod of an InferenceService predictor."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {ISVC_LABEL: "sklearn", "component": "predictor"},
            "annotations": dict(annotations),
        },
        "spec": {
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/sklearnserver:v0.11.0",
                    "ports": [{"name": "user-port", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "STORAGE_URI", "value": "s3://models/sklearn/iris"}],
                },
                {
                    "name": "queue-proxy",
                    "image": "knative/queue",
                    "ports": [{"name": "http-usermetric", "containerPort": 9091, "protocol": "TCP"}],
                    "env": [
                        {"name": "SERVING_SERVICE", "value": "sklearn-predictor"},
                        {"name": "USER_PORT", "value": "8080"},
                    ],
                },
            ],
            **spec,
        },
    }


def container(pod: Mapping[str, Any], name: str, init: bool = False) -> Object:
    key = "initContainers" if init else "containers"
    matches = [c for c in pod["spec"].get(key) or [] if c["name"] == name]
    assert len(matches) == 1, (
        f"expected exactly one {key} entry {name}: {[c['name'] for c in pod['spec'][key]]}"
    )
    found: Object = matches[0]
    return found


def env_of(c: Mapping[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in c.get("env") or []]
    assert len(names) == len(set(names)), f"duplicate env vars in {c['name']}: {names}"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


@pytest.fixture
def revision_annotations() -> dict[str, str]:
    return {
        SOURCE_URI: "s3://models/sklearn/iris",
        AGG: "true",
        PROM: "true",
        PROM_PORT: "8081",
        PROM_PATH: "/stats",
        LOGGER: "true",
        LOGGER_URL: "http://logger.example",
        LOGGER_MODE: "request",
    }


async def s3_service_account(client: Client, namespace: str) -> str:
    """A ServiceAccount listing an S3 credentials Secret; returns its name."""
    await client.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s3-creds",
                "namespace": namespace,
                "annotations": {"serving.kserve.io/s3-endpoint": "minio.example:9000"},
            },
            "stringData": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret"},
        },
    )
    await client.create(
        SERVICEACCOUNTS,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "models", "namespace": namespace},
            "secrets": [{"name": "s3-creds"}],
        },
    )
    await wait_for_service_account(client, namespace, "models")
    return "models"


async def test_the_api_server_stores_a_fully_mutated_pod_and_leaves_others_alone(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path, revision_annotations: dict[str, str]
) -> None:
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        account = await s3_service_account(env.client, namespace)
        pod = await env.create_pod(revision_pod("mutated", revision_annotations, serviceAccountName=account))

        init = container(pod, "storage-initializer", init=True)
        assert init["args"] == ["s3://models/sklearn/iris", "/mnt/models"]
        assert init["volumeMounts"][0] == {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
        init_env = env_of(init)
        assert init_env["AWS_ACCESS_KEY_ID"] == {
            "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}
        }
        assert init_env["S3_ENDPOINT"] == "minio.example:9000"
        assert {"name": "kserve-provision-location", "emptyDir": {}} in pod["spec"]["volumes"]

        model = container(pod, "kserve-container")
        assert env_of(model)["STORAGE_URI"] == "/mnt/models"
        assert {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True} in model[
            "volumeMounts"
        ]

        queue = container(pod, "queue-proxy")
        queue_env = env_of(queue)
        assert queue_env["USER_PORT"] == "9081"  # traffic goes through the logger agent
        assert {k: queue_env[k] for k in QPEXT_ENV} == dict(
            zip(QPEXT_ENV, ("8081", "/stats", "9088"), strict=True)
        )
        assert {"name": "aggr-metric", "containerPort": 9088, "protocol": "TCP"} in queue["ports"]

        agent = container(pod, "agent")
        assert agent["args"][:2] == ["--log-url", "http://logger.example"]
        assert "--log-mode" in agent["args"]
        assert "request" in agent["args"]
        assert agent["ports"] == [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}]

        stored = pod["metadata"]["annotations"]
        assert {
            k: stored[k] for k in ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
        } == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9088",
            "prometheus.io/path": "/metrics",
        }

        plain = revision_pod("not-ours", revision_annotations)
        del plain["metadata"]["labels"][ISVC_LABEL]
        untouched = await env.create_pod(plain)
        assert untouched["metadata"]["annotations"] == revision_annotations
        assert "initContainers" not in untouched["spec"]
        assert [c["name"] for c in untouched["spec"]["containers"]] == ["kserve-container", "queue-proxy"]
        for got, sent in zip(untouched["spec"]["containers"], plain["spec"]["containers"], strict=True):
            assert got["env"] == sent["env"]
            assert got["ports"] == sent["ports"]

        # The same mutation applied to the stored, API-defaulted pod changes nothing.
        handler = PodMutatorHandler(PodMutator(lambda: config_data(), ClientCredentialLookup(env.client)))
        again = await handler.handle(admission_request(pod, namespace))
        assert again.allowed
        assert again.patch is None


def admission_request(pod: Object, namespace: str) -> AdmissionRequest:
    return AdmissionRequest.model_validate(
        {
            "uid": "again",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        }
    )


class SidecarInjector:
    """Plays Istio's injector, ordered after ours: its change makes the API server re-invoke /mutate-pods."""

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        assert request.object is not None
        assert request.raw_object is not None
        pod = copy.deepcopy(request.object)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if "istio-proxy" in names:
            return allowed()
        pod["spec"]["containers"].append({"name": "istio-proxy", "image": "istio/proxyv2"})
        return patch_response_from_raw(request.raw_object, pod)


async def test_reinvocation_after_another_webhook_is_stable(
    local_cluster: LocalCluster,
    namespace: str,
    tmp_path: Path,
    revision_annotations: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    original = PodMutator.mutate

    async def counting(self: PodMutator, pod: Any, ns: str) -> Any:
        calls.append(str((pod.get("metadata") or {}).get("name")))
        return await original(self, pod, ns)

    monkeypatch.setattr(PodMutator, "mutate", counting)
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        env.server.register("/test-sidecar", SidecarInjector())
        sidecar: Object = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            # Configurations are called in name order: "zz-" runs after "inferenceservice.serving...".
            "metadata": {"name": f"zz-sidecar-{env.token}"},
            "webhooks": [
                {
                    "name": "sidecar.webhook-it.kserve.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{env.server.bound_port}/test-sidecar",
                        "caBundle": base64.b64encode(env.ca.cert_pem).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["pods"],
                        }
                    ],
                    "objectSelector": {"matchLabels": {"sidecar": env.token}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 10,
                }
            ],
        }
        await env.client.create(MUTATING_WEBHOOK_CONFIGURATIONS, sidecar)
        try:
            probe = probe_pod("sidecar-probe")
            probe["metadata"]["labels"]["sidecar"] = env.token

            async def injected() -> bool:
                result = await env.client.request(
                    "POST", PODS.path(namespace), query={"dryRun": "All"}, body=probe
                )
                return "istio-proxy" in [c["name"] for c in result["spec"]["containers"]]

            await until(injected, "the sidecar webhook to be called")
            body = revision_pod("reinvoked", revision_annotations)
            body["metadata"]["labels"]["sidecar"] = env.token
            pod = await env.create_pod(body)
        finally:
            with contextlib.suppress(NotFound):
                await env.client.delete(MUTATING_WEBHOOK_CONFIGURATIONS, sidecar["metadata"]["name"])

    assert calls.count("reinvoked") == 2  # once, then again after the sidecar injector changed the pod
    assert [c["name"] for c in pod["spec"]["containers"]] == [
        "kserve-container",
        "queue-proxy",
        "agent",
        "istio-proxy",
    ]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["storage-initializer"]
    assert [v["name"] for v in pod["spec"]["volumes"]].count("kserve-provision-location") == 1
    queue = env_of(container(pod, "queue-proxy"))  # env_of asserts there are no duplicates
    assert queue["AGGREGATE_PROMETHEUS_METRICS_PORT"] == "9088"
    assert [p["name"] for p in container(pod, "queue-proxy")["ports"]].count("aggr-metric") == 1


# (ConfigMap metricsAggregator, pod annotations) -> (qpext env injected, prometheus.io/port or None).
METRICS_MATRIX: list[tuple[str | None, dict[str, str], bool, str | None]] = [
    ('{"enableMetricAggregation": "true", "enablePrometheusScraping": "false"}', {}, True, None),
    (
        '{"enableMetricAggregation": "true", "enablePrometheusScraping": "true"}',
        {AGG: "false"},
        False,
        "9091",
    ),
    ('{"enableMetricAggregation": "false", "enablePrometheusScraping": "true"}', {AGG: "true"}, True, "9088"),
    ('{"enableMetricAggregation": "true", "enablePrometheusScraping": "true"}', {PROM: "false"}, True, None),
    ('{"enableMetricAggregation": "false", "enablePrometheusScraping": "false"}', {}, False, None),
    (None, {PROM: "true"}, False, "9091"),  # key absent: both default to "" (KServe's empty config)
]


async def test_metrics_aggregation_defaults_from_the_configmap_end_to_end(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        for row, (setting, pod_annotations, injected, prometheus_port) in enumerate(METRICS_MATRIX):
            await env.set_config("metricsAggregator", setting)
            pod = await env.create_pod(revision_pod(f"metrics-{row}", pod_annotations))
            queue = container(pod, "queue-proxy")
            queue_env = env_of(queue)
            where = f"row {row}: {setting} {pod_annotations}"
            assert all((name in queue_env) is injected for name in QPEXT_ENV), where
            assert any(p["name"] == "aggr-metric" for p in queue["ports"]) is injected, where
            stored = pod["metadata"]["annotations"]
            default = "true" if '"enableMetricAggregation": "true"' in (setting or "") else "false"
            assert stored[AGG] == pod_annotations.get(AGG, "" if setting is None else default), where
            if prometheus_port is None:
                assert "prometheus.io/port" not in stored, where
            else:
                assert stored["prometheus.io/scrape"] == "true", where
                assert stored["prometheus.io/port"] == prometheus_port, where
                assert stored["prometheus.io/path"] == "/metrics", where


async def test_storage_initializer_uid_without_a_model_security_context(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        body = revision_pod("uid", {SOURCE_URI: "gs://bucket/model", UID: "1337"})
        assert "securityContext" not in body["spec"]["containers"][0]
        pod = await env.create_pod(body)
    init = container(pod, "storage-initializer", init=True)
    assert init["securityContext"]["runAsUser"] == 1337
    assert "securityContext" not in container(pod, "kserve-container")


async def test_a_revision_pod_of_an_aggregating_inference_service_gets_the_qpext_env(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    runtime = copy.deepcopy(SKLEARN_RUNTIME)
    runtime["kind"] = "ServingRuntime"
    runtime["metadata"] = {"name": "sklearn-stats", "namespace": namespace}
    runtime["spec"]["annotations"] = {PROM_PORT: "8082", PROM_PATH: "/stats"}
    async with webhook_env(local_cluster, namespace, tmp_path, isvc=True) as env:
        assert env.harness is not None
        await env.client.create(SERVING_RUNTIMES, runtime)
        isvc = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "agg", "namespace": namespace, "annotations": {AGG: "true"}},
            "spec": {
                "predictor": {
                    "model": {
                        "modelFormat": {"name": "sklearn"},
                        "runtime": "sklearn-stats",
                        "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model",
                    }
                }
            },
        }
        await env.client.create(INFERENCE_SERVICES, isvc)

        async def revision_pod_created() -> list[Object]:
            page = await env.client.list_page(PODS, namespace, label_selector=f"{ISVC_LABEL}=agg")
            return list(page.get("items") or [])

        (pod,) = await until(revision_pod_created, "the Knative double to create the revision pod")
        await env.harness.ready("agg")
    queue_env = env_of(container(pod, "queue-proxy"))
    assert {k: queue_env[k] for k in QPEXT_ENV} == dict(
        zip(QPEXT_ENV, ("8082", "/stats", "9088"), strict=True)
    )
    assert container(pod, "storage-initializer", init=True)["args"][0] == (
        "gs://kfserving-examples/models/sklearn/1.0/model"
    )


async def create_secret(client: Client, namespace: str, name: str, data: Mapping[str, str]) -> None:
    await client.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": data,
        },
    )


async def test_every_kind_of_credential_and_a_cluster_storage_container_end_to_end(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """KServe's Azure, HTTPS and HDFS Secrets as the API server stores them, and a ClusterStorageContainer."""
    csc_name = f"blob-{secrets.token_hex(3)}"
    storage_container: Object = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": csc_name},
        "spec": {
            "container": {
                "name": "storage-initializer",
                "image": "example/blob-downloader:1",
                "resources": {"limits": {"memory": "500Mi"}},
                "env": [{"name": "DOWNLOADER", "value": "blob"}],
            },
            "supportedUriFormats": [{"regex": f"^https://{csc_name}[.]"}],
        },
    }
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        client = env.client
        await create_secret(client, namespace, "azure", {"AZ_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"})
        await create_secret(client, namespace, "web", {"https-host": "example.com", "headers": "a: b"})
        await create_secret(client, namespace, "hdfs", {"HDFS_NAMENODE": "https://nn:9870"})
        await client.create(
            SERVICEACCOUNTS,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "storage", "namespace": namespace},
                "secrets": [{"name": "azure"}, {"name": "web"}, {"name": "hdfs"}],
            },
        )
        await wait_for_service_account(client, namespace, "storage")
        await client.create(CLUSTER_STORAGE_CONTAINERS, storage_container)
        try:

            async def cached() -> bool:
                return env.manager.cache.get(CLUSTER_STORAGE_CONTAINERS, csc_name) is not None

            await until(cached, "the manager's cache to see the ClusterStorageContainer")
            uri = f"https://{csc_name}.blob.core.windows.net/models/iris"
            pod = await env.create_pod(revision_pod("creds", {SOURCE_URI: uri}, serviceAccountName="storage"))
        finally:
            await client.delete(CLUSTER_STORAGE_CONTAINERS, csc_name)
    init = container(pod, "storage-initializer", init=True)
    assert init["image"] == "example/blob-downloader:1"
    assert init["resources"]["limits"]["memory"] == "500Mi"
    assert init["resources"]["requests"]["memory"] == "100Mi"  # the ConfigMap's, not overridden
    assert env_of(init) == {
        "AZURE_SUBSCRIPTION_ID": {"secretKeyRef": {"name": "azure", "key": "AZURE_SUBSCRIPTION_ID"}},
        "AZURE_TENANT_ID": {"secretKeyRef": {"name": "azure", "key": "AZURE_TENANT_ID"}},
        "AZURE_CLIENT_ID": {"secretKeyRef": {"name": "azure", "key": "AZ_CLIENT_ID"}},
        "AZURE_CLIENT_SECRET": {"secretKeyRef": {"name": "azure", "key": "AZURE_CLIENT_SECRET"}},
        "example.com-headers": "a: b",
        "DOWNLOADER": "blob",
    }
    assert {"name": "hdfs-secrets", "mountPath": "/var/secrets/kserve-hdfscreds", "readOnly": True} in init[
        "volumeMounts"
    ]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "hdfs-secrets")
    assert volume["secret"]["secretName"] == "hdfs"


async def test_service_account_or_namespace_that_is_no_name_is_a_bad_request(
    local_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    """The API server's ServiceAccount admission refuses such a pod before calling webhooks, so the review is
    sent to the manager's webhook server directly, over TLS, as a misbehaving client would send it."""
    async with webhook_env(local_cluster, namespace, tmp_path) as env:
        context = ssl.create_default_context(cadata=env.ca.cert_pem.decode())
        url = f"https://127.0.0.1:{env.server.bound_port}{POD_MUTATOR_PATH}"
        cases = [
            (namespace, {"serviceAccountName": "../kube-system/default"}, "spec.serviceAccountName"),
            ("a/b", {}, "namespace 'a/b'"),
            ("..", {}, "namespace '..'"),
        ]
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for request_namespace, spec, what in cases:
                pod = revision_pod("bad-name", {SOURCE_URI: "s3://b/m"}, **spec)
                review = {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "uid": "bad-name",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": request_namespace,
                        "operation": "CREATE",
                        "object": pod,
                    },
                }
                async with session.post(url, json=review, ssl=context) as response:
                    assert response.status == 200
                    answer = (await response.json())["response"]
                assert answer["allowed"] is False, what
                assert answer["status"]["code"] == 400, what
                assert answer["status"]["message"].startswith("invalid pod: "), what
                assert what in answer["status"]["message"]
