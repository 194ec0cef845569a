"""The InferenceService and TrainedModel admission webhooks as users meet them: through the API server.

`kubectl apply` (v1.20.2, matching the local control plane) of an invalid InferenceService must fail with
our validator's message, a legacy `sklearn:` predictor must be stored in the `model.modelFormat` form, a
storage URI a ClusterStorageContainer serves must be admitted, and a TrainedModel's memory must not change
on update. The manager and the webhook configurations are set up as
in `test_pod_webhook` (KServe's manifests, loopback URL, per-test names, deleted afterwards).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apis.resources import CLUSTER_STORAGE_CONTAINERS, INFERENCE_SERVICES, TRAINED_MODELS
from e2e.localcluster import binaries
from e2e.localcluster.cluster import LocalCluster
from manager.client import Client, Object
from manager.errors import ApiError
from tests.integration.test_pod_webhook import WebhookEnv, until, webhook_env
from webhooks.setup import ISVC_DEFAULTER_PATH, ISVC_VALIDATOR_PATH, TM_VALIDATOR_PATH

KUBECTL_TIMEOUT = 60.0
PREDICTOR_CHOICES = (
    "sklearn, xgboost, tensorflow, pytorch, triton, onnx, pmml, lightgbm, paddle, model, containers"
)
STORAGE_URI = "gs://kfserving-examples/models/sklearn/1.0/model"


def legacy_isvc(namespace: str, name: str, **predictor: Any) -> Object:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"predictor": predictor or {"sklearn": {"storageUri": STORAGE_URI}}},
    }


async def dry_run_create(client: Client, body: Object) -> Object | ApiError:
    try:
        result: Object = await client.request(
            "POST", INFERENCE_SERVICES.path(body["metadata"]["namespace"]), query={"dryRun": "All"}, body=body
        )
    except ApiError as exc:
        return exc
    return result


async def wait_until_called(client: Client, namespace: str) -> None:
    """Dry-run creates until both the defaulter and the validator are in the API server's path."""
    bad = legacy_isvc(
        namespace, "probe", sklearn={"storageUri": STORAGE_URI}, xgboost={"storageUri": STORAGE_URI}
    )

    async def validated() -> bool:
        result = await dry_run_create(client, bad)
        return isinstance(result, ApiError) and "denied the request" in result.message

    async def defaulted() -> bool:
        result = await dry_run_create(client, legacy_isvc(namespace, "probe"))
        return isinstance(result, dict) and "model" in result["spec"]["predictor"]

    await until(validated, "the API server to call the InferenceService validator")
    await until(defaulted, "the API server to call the InferenceService defaulter")


@pytest.fixture
async def env(local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> AsyncIterator[WebhookEnv]:
    paths = (ISVC_DEFAULTER_PATH, ISVC_VALIDATOR_PATH, TM_VALIDATOR_PATH)
    async with webhook_env(local_cluster, namespace, tmp_path / "certs", paths=paths) as running:
        await wait_until_called(running.client, namespace)
        yield running


async def kubectl_apply(
    local_cluster: LocalCluster, manifest: Object, tmp_path: Path
) -> tuple[int, str, str]:
    path = tmp_path / f"{manifest['metadata']['name']}-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(manifest))
    process = await asyncio.create_subprocess_exec(
        str(binaries.kubectl()),
        "--kubeconfig",
        str(local_cluster.kubeconfig_path),
        "apply",
        "-f",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), KUBECTL_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_kubectl_apply_of_an_invalid_inference_service_fails_with_the_validators_message(
    local_cluster: LocalCluster, namespace: str, env: WebhookEnv, tmp_path: Path
) -> None:
    bad = legacy_isvc(
        namespace, "two-models", sklearn={"storageUri": STORAGE_URI}, xgboost={"storageUri": STORAGE_URI}
    )
    code, _, stderr = await kubectl_apply(local_cluster, bad, tmp_path)
    assert code != 0
    assert (
        'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request: '
        'the InferenceService "two-models" is invalid: '
        f"predictor must have exactly one of {PREDICTOR_CHOICES}; found sklearn and xgboost"
    ) in stderr
    assert stderr.count("\n") == 1  # one line for the user, no stack trace

    bad_uri = legacy_isvc(
        namespace, "ftp-model", model={"modelFormat": {"name": "sklearn"}, "storageUri": "ftp://x/y"}
    )
    code, _, stderr = await kubectl_apply(local_cluster, bad_uri, tmp_path)
    assert code != 0
    assert 'the InferenceService "ftp-model" is invalid: ' in stderr
    assert "ftp://x/y" in stderr
    page = await env.client.list_page(INFERENCE_SERVICES, namespace)
    assert page["items"] == []


async def test_kubectl_apply_of_a_legacy_predictor_stores_the_model_form(
    local_cluster: LocalCluster, namespace: str, env: WebhookEnv, tmp_path: Path
) -> None:
    code, stdout, stderr = await kubectl_apply(local_cluster, legacy_isvc(namespace, "legacy"), tmp_path)
    assert code == 0, stderr
    assert "inferenceservice.serving.kserve.io/legacy created" in stdout
    stored = await env.client.get(INFERENCE_SERVICES, "legacy", namespace)
    predictor = stored["spec"]["predictor"]
    assert "sklearn" not in predictor
    assert predictor["model"]["modelFormat"] == {"name": "sklearn"}
    assert predictor["model"]["storageUri"] == STORAGE_URI
    # As in KServe: a model gets no name and no resources; its runtime's container supplies them.
    assert "name" not in predictor["model"]
    assert "resources" not in predictor["model"]


async def test_a_storage_uri_served_by_a_cluster_storage_container_is_admitted(
    namespace: str, env: WebhookEnv
) -> None:
    name = f"hf-{secrets.token_hex(3)}"
    storage_container: Object = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": name},
        "spec": {
            "container": {"name": "storage-initializer", "image": "example/hf-downloader:1"},
            "supportedUriFormats": [{"prefix": f"{name}://"}],
        },
    }
    body = legacy_isvc(
        namespace, "hf-model", model={"modelFormat": {"name": "x"}, "storageUri": f"{name}://m"}
    )
    refused = await dry_run_create(env.client, body)
    assert isinstance(refused, ApiError)
    assert "a URI a ClusterStorageContainer serves" in refused.message
    await env.client.create(CLUSTER_STORAGE_CONTAINERS, storage_container)
    try:

        async def admitted() -> bool:
            return isinstance(await dry_run_create(env.client, body), dict)

        await until(admitted, "the validator to see the ClusterStorageContainer")
    finally:
        await env.client.delete(CLUSTER_STORAGE_CONTAINERS, name)


async def test_legacy_keys_are_checked_as_kserve_checks_them_in_model_mesh_mode(
    namespace: str, env: WebhookEnv
) -> None:
    body = legacy_isvc(namespace, "pmml", pmml={"storageUri": STORAGE_URI, "args": ["--workers=2"]})
    assert isinstance(await dry_run_create(env.client, body), dict)  # converted to model: not checked
    body["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    refused = await dry_run_create(env.client, body)
    assert isinstance(refused, ApiError)
    assert (
        'spec.predictor.pmml.args[0] "--workers=2": the PMML server runs at most 1 worker' in refused.message
    )


async def test_trained_model_memory_cannot_change(namespace: str, env: WebhookEnv) -> None:
    model: Object = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "iris", "namespace": namespace},
        "spec": {
            "inferenceService": "parent",
            "model": {"storageUri": STORAGE_URI, "framework": "sklearn", "memory": "1Gi"},
        },
    }

    async def admitted() -> Object | None:
        try:
            created: Object = await env.client.create(TRAINED_MODELS, model)
        except ApiError:
            return None
        return created

    created = await until(admitted, "the TrainedModel to be created")
    same = await env.client.patch(
        TRAINED_MODELS, "iris", {"spec": {"model": {"memory": "1024Mi"}}}, namespace
    )
    assert same["spec"]["model"]["memory"] == "1024Mi"  # the same quantity, written differently

    async def rejected() -> ApiError | None:
        try:
            await env.client.patch(TRAINED_MODELS, "iris", {"spec": {"model": {"memory": "2Gi"}}}, namespace)
        except ApiError as exc:
            return exc
        await env.client.patch(TRAINED_MODELS, "iris", {"spec": {"model": {"memory": "1024Mi"}}}, namespace)
        return None

    error = await until(rejected, "the TrainedModel validator to reject the update")
    assert error.status == 403
    assert error.message == (
        'admission webhook "trainedmodel.kserve-webhook-server.validator" denied the request: '
        "the Trained Model \"iris\" is invalid: memory field is immutable (was '1024Mi', now '2Gi'); "
        "delete and recreate the Trained Model to change it"
    )
    stored = await env.client.get(TRAINED_MODELS, "iris", namespace)
    assert stored["spec"]["model"]["memory"] == "1024Mi"
    assert stored["metadata"]["uid"] == created["metadata"]["uid"]
