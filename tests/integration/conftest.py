"""Fixtures giving integration tests a real control plane: one per session, a fresh namespace per test.

Starting the cluster costs seconds, so it is shared by the whole session; isolation comes from namespaces.
A cluster that cannot start fails the tests that need it (never skips them): a silently skipped integration
suite would hide exactly the regressions it exists to catch. Tests using the cluster get the ``cluster``
marker automatically, so ``-m "not cluster"`` deselects them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from e2e.localcluster.cluster import LocalCluster, LocalClusterError
from manager.client import Client, load_client

CLUSTER_FIXTURES = {"local_cluster", "kubeconfig", "namespace", "client", "admin"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        cluster.start()
    except LocalClusterError as exc:
        cluster.stop()
        pytest.fail(f"the local control plane did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster) -> Path:
    return local_cluster.kubeconfig_path


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(local_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node.name)
    status, body = local_cluster.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    if status != 201:
        pytest.fail(f"cannot create namespace {name}: HTTP {status}: {body.get('message')}", pytrace=False)
    try:
        yield name
    finally:
        # Deletion is asynchronous (namespace finalization); nothing waits for it.
        status, body = local_cluster.request("DELETE", f"/api/v1/namespaces/{name}")
        if status not in (200, 202, 404):
            pytest.fail(f"cannot delete namespace {name}: HTTP {status}: {body.get('message')}")


@pytest.fixture
async def client(local_cluster: LocalCluster) -> AsyncIterator[Client]:
    """An API client with the admin credentials, closed after the test."""
    c = await load_client(str(local_cluster.kubeconfig_path))
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def admin(client: Client) -> Client:
    """The admin API client, for tests that also use clients with other credentials."""
    return client
