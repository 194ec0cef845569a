"""The event broadcaster against a real kube-apiserver: aggregation, expiry, validation, and RBAC denial."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, EVENTS, Client, Object, Resource, load_client
from manager.errors import Forbidden, NotFound
from manager.events import COMBINED_PREFIX, TRUNCATION_INFIX, EventBroadcaster

ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLEBINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
COMPONENT = "events-it"
HANG_GUARD = 30.0


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait for a condition the poster establishes; the deadline only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def our_events(client: Client, namespace: str) -> list[Object]:
    items, _ = await client.list_all(EVENTS, namespace)
    return [e for e in items if (e.get("source") or {}).get("component") == COMPONENT]


async def make_configmap(client: Client, namespace: str, name: str = "app") -> Object:
    body: Object = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
    }
    created = await client.create(CONFIGMAPS, body, namespace)
    created.setdefault("apiVersion", "v1")
    created.setdefault("kind", "ConfigMap")
    return created


async def test_100_identical_events_end_as_one_event_with_count_100(admin: Client, namespace: str) -> None:
    cm = await make_configmap(admin, namespace)
    broadcaster = EventBroadcaster(admin, COMPONENT)
    recorder = broadcaster.recorder()
    await broadcaster.start()
    try:
        recorder.event(cm, "Normal", "Synced", "configmap is in sync")
        await eventually(lambda: broadcaster.posted == 1)  # the rest goes through PATCHes of that Event
        for _ in range(99):
            recorder.event(cm, "Normal", "Synced", "configmap is in sync")
            await asyncio.sleep(0)
    finally:
        await asyncio.wait_for(broadcaster.stop(), HANG_GUARD)
    assert (broadcaster.posted, broadcaster.failed, broadcaster.dropped) == (100, 0, 0)
    events = await our_events(admin, namespace)
    assert len(events) == 1
    event = events[0]
    assert event["count"] == 100
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Synced", "configmap is in sync")
    assert event["involvedObject"]["uid"] == cm["metadata"]["uid"]
    assert event["involvedObject"]["kind"] == "ConfigMap"
    assert event["reportingComponent"] == COMPONENT
    assert broadcaster.writes < 100


async def test_an_expired_event_is_recreated_with_the_running_count(admin: Client, namespace: str) -> None:
    cm = await make_configmap(admin, namespace)
    broadcaster = EventBroadcaster(admin, COMPONENT)
    recorder = broadcaster.recorder()
    await broadcaster.start()
    try:
        recorder.event(cm, "Warning", "Failed", "could not sync")
        await eventually(lambda: broadcaster.posted == 1)
        (first,) = await our_events(admin, namespace)
        await admin.delete(EVENTS, first["metadata"]["name"], namespace)
        recorder.event(cm, "Warning", "Failed", "could not sync")
    finally:
        await asyncio.wait_for(broadcaster.stop(), HANG_GUARD)
    events = await our_events(admin, namespace)
    assert len(events) == 1
    assert events[0]["metadata"]["name"] != first["metadata"]["name"]
    assert events[0]["count"] == 2
    assert broadcaster.failed == 0


async def test_the_server_accepts_similar_truncated_and_cluster_scoped_events(
    admin: Client, namespace: str
) -> None:
    cm = await make_configmap(admin, namespace)
    ns_object = await admin.get(Resource("", "v1", "namespaces", "Namespace", namespaced=False), namespace)
    ns_object.update(apiVersion="v1", kind="Namespace")
    broadcaster = EventBroadcaster(admin, COMPONENT, host="it-host")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    try:
        recorder.event(cm, "Warning", "TooLong", "start " + "y" * 5000 + " end")
        for i in range(12):
            recorder.event(cm, "Warning", "BackOff", f"attempt {i} failed")
        recorder.event(ns_object, "Normal", "Seen", f"namespace {namespace} is here")
    finally:
        await asyncio.wait_for(broadcaster.stop(), HANG_GUARD)
    assert (broadcaster.posted, broadcaster.failed) == (14, 0)
    events = await our_events(admin, namespace)
    (long,) = [e for e in events if e["reason"] == "TooLong"]
    assert len(long["message"]) == 1024
    assert TRUNCATION_INFIX in long["message"]
    assert long["source"] == {"component": COMPONENT, "host": "it-host"}
    backoff = [e for e in events if e["reason"] == "BackOff"]
    assert len(backoff) == 10
    (combined,) = [e for e in backoff if e["message"].startswith(COMBINED_PREFIX)]
    assert combined["count"] == 3
    cluster_scoped = [
        e for e in await our_events(admin, "default") if e["involvedObject"].get("name") == namespace
    ]
    try:
        assert len(cluster_scoped) == 1
        assert cluster_scoped[0]["involvedObject"]["kind"] == "Namespace"
        assert "namespace" not in cluster_scoped[0]["involvedObject"]
    finally:
        for event in cluster_scoped:
            await admin.delete(EVENTS, event["metadata"]["name"], "default")


async def grant_configmaps_only(admin: Client, namespace: str, user: str) -> None:
    role: Object = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "configmaps-only", "namespace": namespace},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create", "update"]}
        ],
    }
    binding: Object = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "configmaps-only", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps-only"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    await admin.create(ROLES, role, namespace)
    await admin.create(ROLEBINDINGS, binding, namespace)


async def test_reconciles_succeed_when_the_events_api_is_forbidden(
    local_cluster: LocalCluster, admin: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    await grant_configmaps_only(admin, namespace, "alice")
    alice = await load_client(str(local_cluster.kubeconfig_for("alice")))
    broadcaster = EventBroadcaster(alice, COMPONENT)
    recorder = broadcaster.recorder()

    async def reconcile(generation: int) -> None:
        try:
            current = await alice.get(CONFIGMAPS, "app", namespace)
        except NotFound:
            current = await alice.create(
                CONFIGMAPS,
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "app", "namespace": namespace},
                    "data": {"generation": str(generation)},
                },
                namespace,
            )
        else:
            current["data"] = {"generation": str(generation)}
            current = await alice.replace(CONFIGMAPS, current)
        current.update(apiVersion="v1", kind="ConfigMap")
        recorder.event(current, "Normal", "Reconciled", f"generation {generation} applied")

    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while True:  # RBAC caches take a moment to see the new binding
            try:
                await alice.list_page(CONFIGMAPS, namespace, limit=1)
                break
            except Forbidden:
                assert loop.time() < deadline, "the RoleBinding never took effect"
                await asyncio.sleep(0.1)
        await broadcaster.start()
        with caplog.at_level(logging.WARNING, logger="manager.events"):
            for generation in range(20):
                await reconcile(generation)
                await asyncio.sleep(0)
            await eventually(lambda: broadcaster.failed >= 1)
            await asyncio.wait_for(broadcaster.stop(timeout=5.0), HANG_GUARD)
    finally:
        await alice.close()

    final = await admin.get(CONFIGMAPS, "app", namespace)
    assert final["data"] == {"generation": "19"}
    refused = [r for r in caplog.records if r.name == "manager.events" and r.levelno == logging.WARNING]
    assert refused
    assert "forbidden" in refused[0].getMessage()
    assert all("\n" not in r.getMessage() for r in refused)
    assert broadcaster.failed == 20
    assert broadcaster.posted == 0
    assert broadcaster.writes < 20  # a 403 puts the namespace on a cool-down instead of a retry loop
    assert await our_events(admin, namespace) == []
