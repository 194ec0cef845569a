"""What the pod webhook does to an InferenceService's revision pod, checked on the admitted Pod object.

In local mode the Knative Serving double creates the revision pod; on kind it is Knative's Deployment. Either
way the Pod goes through the API server's admission chain, so the manager's `/mutate-pods` webhook (reached
through the shipped MutatingWebhookConfiguration) is what put these fields there.
"""

from __future__ import annotations

import asyncio

import pytest

from apis.resources import INFERENCE_SERVICES
from e2e.suite.env import DeployedEnv, Env
from e2e.suite.support import IRIS_INSTANCES, container, env_of, isvc_pods, ready, until
from manager.client import Client, Object

METRICS = {
    "serving.kserve.io/enable-metric-aggregation": "true",
    "serving.kserve.io/enable-prometheus-scraping": "true",
}
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


async def revision_pod(env: Env, admin: Client, namespace: str, name: str) -> Object:
    """The first revision pod of `name` as admitted (whether or not it can run here)."""
    pods: list[Object] = await until(
        lambda: isvc_pods(admin, namespace, name), bool, env.ready_timeout, f"a revision pod of {name}"
    )
    return pods[0]


async def test_revision_pod_gets_storage_initializer_qpext_env_and_prometheus_annotations(
    env: Env, admin: Client, namespace: str
) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "mutated", annotations=METRICS))
    pod = await revision_pod(env, admin, namespace, "mutated")

    init = container(pod, "storage-initializer", init=True)
    assert init["args"] == [env.model_uri, "/mnt/models"]
    assert {"name": "kserve-provision-location", "mountPath": "/mnt/models"}.items() <= next(
        m for m in init["volumeMounts"] if m["name"] == "kserve-provision-location"
    ).items()
    model = container(pod, "kserve-container")
    mount = next(m for m in model["volumeMounts"] if m["name"] == "kserve-provision-location")
    assert (mount["mountPath"], mount.get("readOnly")) == ("/mnt/models", True)
    assert any(v["name"] == "kserve-provision-location" and "emptyDir" in v for v in pod["spec"]["volumes"])

    queue = env_of(container(pod, "queue-proxy"))
    assert queue["KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT"] == "8080"
    assert queue["KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH"] == "/metrics"
    assert queue["AGGREGATE_PROMETHEUS_METRICS_PORT"] == "9088"

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9088"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/scrape"] == "true"


LOGGER = {"mode": "all", "url": "http://logs.example.com"}


def custom_predictor(namespace: str, name: str, storage_uri: str) -> Object:
    """A custom model container (no runtime) with its model in STORAGE_URI: no securityContext anywhere."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "predictor": {
                "logger": LOGGER,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "kserve/sklearnserver:v0.11.2",
                        "args": [f"--model_name={name}", "--model_dir=/mnt/models", "--http_port=8080"],
                        "env": [{"name": "STORAGE_URI", "value": storage_uri}],
                    }
                ],
            }
        },
    }


@pytest.mark.parametrize("source", ["sklearn-runtime", "custom-container"])
async def test_injected_containers_meet_the_restricted_pod_security_standard(
    env: Env, admin: Client, namespace: str, source: str
) -> None:
    if source == "sklearn-runtime":
        isvc = env.isvc(namespace, "logged", logger=LOGGER)
    else:
        isvc = custom_predictor(namespace, "logged", env.model_uri)
    await admin.create(INFERENCE_SERVICES, isvc)
    pod = await revision_pod(env, admin, namespace, "logged")
    pod_seccomp = (pod["spec"].get("securityContext") or {}).get("seccompProfile")
    injected = [container(pod, "storage-initializer", init=True), container(pod, "agent")]
    for c in injected:
        context = c.get("securityContext") or {}
        assert RESTRICTED.items() <= context.items(), (c["name"], context)
        assert (context.get("seccompProfile") or pod_seccomp) == {"type": "RuntimeDefault"}, (
            c["name"],
            context,
        )
        assert not context.get("privileged"), c["name"]


async def test_user_security_context_is_kept_for_injected_containers(
    env: Env, admin: Client, namespace: str
) -> None:
    own = {"runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False}
    isvc = env.isvc(namespace, "own-context")
    isvc["spec"]["predictor"]["model"]["securityContext"] = own
    await admin.create(INFERENCE_SERVICES, isvc)
    pod = await revision_pod(env, admin, namespace, "own-context")
    model_context = container(pod, "kserve-container")["securityContext"]
    assert own.items() <= model_context.items()
    # The user's choice (merged over the runtime's) is copied verbatim, not replaced by our profile.
    assert container(pod, "storage-initializer", init=True)["securityContext"] == model_context


async def test_qpext_endpoint_serves_both_sides_metrics(env: Env, admin: Client, namespace: str) -> None:
    """Read from inside the running pod: qpext on :9088 merges queue-proxy's and the model server's series."""
    if not isinstance(env, DeployedEnv):
        pytest.skip("local mode runs no containers: the qpext endpoint is verified on the node and on kind")
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "aggregated", annotations=METRICS))
    await ready(admin, namespace, "aggregated", env.ready_timeout)
    pod = await revision_pod(env, admin, namespace, "aggregated")
    # One prediction, so the request counters of both sides have samples.
    status, _ = await env.predict(admin, namespace, "aggregated", IRIS_INSTANCES)
    assert status == 200
    fetch = (
        "import urllib.request\n"
        "print(urllib.request.urlopen('http://127.0.0.1:9088/metrics', timeout=20).read().decode())"
    )
    text = await asyncio.to_thread(
        env.pod_exec, namespace, pod["metadata"]["name"], "kserve-container", "python3", "-c", fetch
    )
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }
    assert any(n.startswith("revision_") for n in names), "queue-proxy's own metrics are missing"
    assert any(n.startswith("python_") for n in names), "the model server's metrics are missing"
    assert "qpext_scrape_up" in names, "qpext's own scrape series are missing"
