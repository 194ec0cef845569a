"""Least privilege: what the manager's ServiceAccount may and may not do under the shipped config/rbac.

The managers run with this ServiceAccount (local mode: its token; node and kind: as pods), so every other
test passing is the proof that the granted permissions suffice. These tests show the other half: it cannot
list or watch Secrets anywhere (only `get` one by name, which the pod webhook's credential injector does
for the Secrets a ServiceAccount or the storage spec names, in the pod's namespace), and cannot write what
it does not own.

Every target asks the API server with the ServiceAccount's own token (SelfSubjectAccessReview; on node and
kind a token from the TokenRequest API) and also makes real requests with it.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apis.resources import DEPLOYMENTS
from e2e.suite.env import MANAGER_USER, Env
from e2e.suite.manifests import MANAGER_NAMESPACE
from manager.client import CONFIGMAPS, SECRETS, Client, load_client
from manager.errors import Forbidden

SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
TEST_NS = "<test>"


@contextlib.asynccontextmanager
async def manager_client(env: Env) -> AsyncIterator[Client]:
    client = await load_client(str(env.manager_kubeconfig()))
    try:
        yield client
    finally:
        await client.close()


async def manager_may(env: Env, admin: Client, attributes: dict[str, Any]) -> bool:
    async with manager_client(env) as own:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview"}
        answer = await own.request("POST", SSAR, body={**review, "spec": {"resourceAttributes": attributes}})
    return bool(answer["status"].get("allowed"))


def attrs(
    verb: str, resource: str, group: str = "", namespace: str | None = TEST_NS, **extra: str
) -> dict[str, Any]:
    return {"verb": verb, "resource": resource, "group": group, "namespace": namespace, **extra}


ALLOWED = [
    pytest.param(attrs("get", "secrets"), id="get-secret-by-name-in-any-namespace"),
    pytest.param(attrs("get", "serviceaccounts"), id="get-serviceaccount"),
    pytest.param(attrs("patch", "inferenceservices", "serving.kserve.io"), id="patch-isvc"),
    pytest.param(
        attrs("update", "inferenceservices", "serving.kserve.io", subresource="status"), id="isvc-status"
    ),
    pytest.param(attrs("create", "services", "serving.knative.dev"), id="create-ksvc"),
    pytest.param(attrs("patch", "virtualservices", "networking.istio.io"), id="patch-virtualservice"),
    pytest.param(attrs("watch", "pods", namespace=None), id="watch-pods-cluster-wide"),
    pytest.param(
        attrs("watch", "clusterstoragecontainers", "serving.kserve.io", namespace=None),
        id="watch-cluster-storage-containers",
    ),
    pytest.param(attrs("create", "events"), id="create-event"),
    pytest.param(attrs("create", "deployments", "apps"), id="create-raw-deployment"),
    pytest.param(attrs("delete", "services"), id="delete-raw-service"),
    pytest.param(attrs("patch", "horizontalpodautoscalers", "autoscaling"), id="patch-raw-hpa"),
    pytest.param(attrs("watch", "ingresses", "networking.k8s.io", namespace=None), id="watch-raw-ingresses"),
    pytest.param(attrs("update", "configmaps"), id="update-modelconfig-configmap"),
    pytest.param(
        attrs("watch", "configmaps", namespace=MANAGER_NAMESPACE), id="watch-configmaps-own-namespace"
    ),
    pytest.param(
        attrs("update", "leases", "coordination.k8s.io", namespace=MANAGER_NAMESPACE), id="own-lease"
    ),
    pytest.param(
        attrs(
            "patch",
            "mutatingwebhookconfigurations",
            "admissionregistration.k8s.io",
            namespace=None,
            name="inferenceservice.serving.kserve.io",
        ),
        id="patch-own-webhook-cabundle",
    ),
]

FORBIDDEN = [
    pytest.param(attrs("list", "secrets"), id="list-secrets-in-a-namespace"),
    pytest.param(attrs("list", "secrets", namespace=None), id="list-secrets-cluster-wide"),
    pytest.param(attrs("list", "secrets", namespace=MANAGER_NAMESPACE), id="list-secrets-own-namespace"),
    pytest.param(attrs("watch", "secrets", namespace=None), id="watch-secrets"),
    pytest.param(attrs("create", "secrets"), id="create-secret"),
    pytest.param(attrs("update", "secrets"), id="update-secret"),
    pytest.param(attrs("delete", "secrets"), id="delete-secret"),
    pytest.param(attrs("update", "deployments", "apps"), id="update-deployment"),
    pytest.param(attrs("get", "deployments", "apps"), id="get-deployment"),
    pytest.param(attrs("create", "statefulsets", "apps"), id="create-statefulset"),
    pytest.param(attrs("patch", "deployments", "apps", subresource="scale"), id="scale-deployment"),
    pytest.param(attrs("update", "ingresses", "networking.k8s.io"), id="update-ingress"),
    pytest.param(attrs("delete", "endpoints"), id="delete-endpoints"),
    pytest.param(attrs("update", "namespaces", namespace=None, name="default"), id="update-namespace"),
    pytest.param(attrs("delete", "namespaces", namespace=None, name="default"), id="delete-namespace"),
    pytest.param(attrs("delete", "configmaps"), id="delete-configmap"),
    pytest.param(
        attrs("delete", "configmaps", namespace=MANAGER_NAMESPACE), id="delete-configmap-own-namespace"
    ),
    pytest.param(attrs("list", "configmaps", namespace=None), id="list-configmaps-cluster-wide"),
    pytest.param(attrs("create", "pods"), id="create-pod"),
    pytest.param(attrs("delete", "pods"), id="delete-pod"),
    pytest.param(attrs("delete", "inferenceservices", "serving.kserve.io"), id="delete-isvc"),
    pytest.param(
        attrs("create", "clusterstoragecontainers", "serving.kserve.io", namespace=None),
        id="create-cluster-storage-container",
    ),
    pytest.param(
        attrs("update", "leases", "coordination.k8s.io", namespace="kube-system"), id="foreign-lease"
    ),
    pytest.param(
        attrs(
            "patch",
            "mutatingwebhookconfigurations",
            "admissionregistration.k8s.io",
            namespace=None,
            name="someone-elses-webhook",
        ),
        id="patch-foreign-webhook",
    ),
    pytest.param(
        attrs("create", "clusterrolebindings", "rbac.authorization.k8s.io", namespace=None), id="bind-roles"
    ),
    pytest.param(attrs("impersonate", "users", namespace=None), id="impersonate"),
    pytest.param(attrs("create", "serviceaccounts", subresource="token"), id="mint-tokens"),
]


def resolve(attributes: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The attributes with the test's namespace filled in and unset fields left out."""
    result = dict(attributes)
    if result["namespace"] == TEST_NS:
        result["namespace"] = namespace
    return {k: v for k, v in result.items() if v is not None}


@pytest.mark.parametrize("attributes", ALLOWED)
async def test_manager_may(env: Env, admin: Client, namespace: str, attributes: dict[str, Any]) -> None:
    assert await manager_may(env, admin, resolve(attributes, namespace))


@pytest.mark.parametrize("attributes", FORBIDDEN)
async def test_manager_may_not(env: Env, admin: Client, namespace: str, attributes: dict[str, Any]) -> None:
    assert not await manager_may(env, admin, resolve(attributes, namespace))


async def test_real_requests_with_the_service_account_token(env: Env, admin: Client, namespace: str) -> None:
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "storage-config", "namespace": namespace},
        "data": {"key": base64.b64encode(b"value").decode()},
    }
    await admin.create(SECRETS, secret)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "intruder", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "x", "image": "x"}]},
            },
        },
    }
    created = await admin.create(DEPLOYMENTS, deployment)
    async with manager_client(env) as own:
        fetched = await own.get(SECRETS, "storage-config", namespace)
        assert fetched["data"]["key"] == secret["data"]["key"]
        with pytest.raises(Forbidden):
            await own.list_page(SECRETS, namespace)
        with pytest.raises(Forbidden):
            await own.list_page(SECRETS)
        with pytest.raises(Forbidden):
            # RawDeployment mode creates, patches and deletes Deployments; it never replaces one.
            await own.replace(DEPLOYMENTS, {**created, "spec": {**created["spec"], "paused": True}})
        with pytest.raises(Forbidden):
            await own.delete(CONFIGMAPS, "inferenceservice-config", MANAGER_NAMESPACE)
        with pytest.raises(Forbidden):
            await own.patch(SECRETS, "storage-config", {"data": {"key": ""}}, namespace)


def test_managers_were_never_refused(env: Env) -> None:
    """Runs last (file order): no manager replica was denied a request by RBAC while the suite ran.

    (A 403 for writing into a namespace being deleted is not an authorization failure and is ignored.)"""
    denial = f'"{MANAGER_USER}" cannot'
    logs = env.manager_logs()
    assert logs, "no manager log to check"
    for name, log in logs.items():
        denied = [line for line in log.splitlines() if denial in line]
        assert not denied, f"{name} was denied by RBAC:\n" + "\n".join(denied[:5])
