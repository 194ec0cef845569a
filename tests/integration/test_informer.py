"""The informer against a real kube-apiserver: events, watch expiry, restarts, compaction, quiet watches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, NAMESPACES, Client, Object, Resource
from manager.errors import AlreadyExists, ApiError, Gone, NotFound
from manager.informer import OWNER_INDEX, Informer, WatchSettings, key_of

PODTEMPLATES = Resource("", "v1", "podtemplates", "PodTemplate")


class Recorder:
    """An event handler that remembers what it saw."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.last: dict[tuple[str, str], Object | None] = {}

    def on_add(self, obj: Object) -> None:
        self.events.append(("add", obj["metadata"]["name"]))
        self.last[key_of(obj)] = obj

    def on_update(self, old: Object, new: Object) -> None:
        self.events.append(("update", new["metadata"]["name"]))
        self.last[key_of(new)] = new

    def on_delete(self, obj: Object) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))
        self.last[key_of(obj)] = None


def configmap(namespace: str, name: str, **data: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def podtemplate(namespace: str, name: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    }


async def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
    assert check(), what


async def server_state(client: Client, namespace: str) -> dict[str, str]:
    items, _ = await client.list_all(CONFIGMAPS, namespace)
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in items}


def store_state(informer: Informer) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.store}


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    informer.start()
    try:
        assert await informer.wait_for_sync(30), "informer did not sync"
        yield informer
    finally:
        await informer.stop()


async def test_adds_updates_deletes_are_seen(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, configmap(namespace, "before", a="1"))
    informer = Informer(client, CONFIGMAPS, namespace)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert ("add", "before") in recorder.events
        await client.create(CONFIGMAPS, configmap(namespace, "new", a="1"))
        await client.patch(CONFIGMAPS, "before", {"data": {"a": "2"}}, namespace)
        await client.delete(CONFIGMAPS, "new", namespace)
        await eventually(lambda: ("delete", "new") in recorder.events)
        assert ("add", "new") in recorder.events
        assert ("update", "before") in recorder.events
        assert informer.store.get(namespace, "before")["data"] == {"a": "2"}  # type: ignore[index]
        assert informer.store.get(namespace, "new") is None
        assert store_state(informer) == await server_state(client, namespace)


async def test_handler_added_after_sync_gets_the_current_objects(client: Client, namespace: str) -> None:
    await client.create(CONFIGMAPS, configmap(namespace, "one"))
    informer = Informer(client, CONFIGMAPS, namespace)
    async with running(informer):
        late = Recorder()
        informer.add_handler(late)
        # The first list is served from the API server's watch cache (resourceVersion 0, as client-go asks),
        # which may not show the create yet; then the watch delivers it. Either way: one add, nothing else.
        # kube-controller-manager may already have published kube-root-ca.crt into the namespace.
        await eventually(lambda: ("add", "one") in late.events)
        assert [e for e in late.events if e[1] != "kube-root-ca.crt"] == [("add", "one")]


async def test_owner_index(client: Client, namespace: str) -> None:
    parent = await client.create(CONFIGMAPS, configmap(namespace, "parent"))
    child = configmap(namespace, "child")
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "parent", "uid": parent["metadata"]["uid"]}
    ]
    await client.create(CONFIGMAPS, child)
    informer = Informer(client, CONFIGMAPS, namespace)
    async with running(informer):
        owned = informer.store.by_index(OWNER_INDEX, parent["metadata"]["uid"])
        assert [o["metadata"]["name"] for o in owned] == ["child"]


async def churn_elsewhere(client: Client, namespace: str, n: int) -> None:
    """Advance etcd's revision with writes the informer does not watch."""
    for i in range(n):
        await client.create(CONFIGMAPS, configmap(namespace, f"noise-{i}-{random.randrange(10**6)}"))


async def test_relists_after_apiserver_restart_expires_the_watch(
    client: Client, namespace: str, local_cluster: LocalCluster
) -> None:
    elsewhere = f"{namespace}-x"
    await client.create(
        NAMESPACES,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}},
    )
    for i in range(3):
        await client.create(CONFIGMAPS, configmap(namespace, f"cm-{i}"))
    informer = Informer(
        client, CONFIGMAPS, namespace, settings=WatchSettings(backoff_initial=0.2, backoff_max=1)
    )
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        # Our resourceVersion now lags etcd's, so after a restart (empty watch cache) it is "too old".
        await churn_elsewhere(client, elsewhere, 20)
        await asyncio.to_thread(local_cluster.restart_apiserver, True)
        await client.delete(CONFIGMAPS, "cm-0", namespace)
        await client.patch(CONFIGMAPS, "cm-1", {"data": {"k": "v"}}, namespace)
        await client.create(CONFIGMAPS, configmap(namespace, "cm-new"))
        want = await server_state(client, namespace)
        await eventually(lambda: store_state(informer) == want, what="cache converged")
        assert informer.relists >= 2, "the informer should have listed again after 410 Gone"
        assert recorder.last[(namespace, "cm-0")] is None
        assert recorder.last[(namespace, "cm-new")] is not None


async def writer(client: Client, namespace: str, stop: asyncio.Event, log: list[str]) -> None:
    """Create, update and delete ConfigMaps until stopped, riding out API server outages."""
    i = 0
    while not stop.is_set():
        i += 1
        name = f"w-{i % 15}"
        try:
            try:
                await client.create(CONFIGMAPS, configmap(namespace, name, n=str(i)))
            except AlreadyExists:
                if i % 3 == 0:
                    await client.delete(CONFIGMAPS, name, namespace)
                else:
                    await client.patch(CONFIGMAPS, name, {"data": {"n": str(i)}}, namespace)
            log.append(name)
        except (ApiError, NotFound):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.01)


async def test_cache_converges_when_apiserver_is_killed_while_objects_change(
    client: Client, namespace: str, local_cluster: LocalCluster
) -> None:
    informer = Informer(
        client, CONFIGMAPS, namespace, settings=WatchSettings(backoff_initial=0.2, backoff_max=1)
    )
    recorder = Recorder()
    informer.add_handler(recorder)
    stop = asyncio.Event()
    writes: list[str] = []
    async with running(informer):
        task = asyncio.create_task(writer(client, namespace, stop, writes))
        try:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(local_cluster.stop_apiserver, True)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(local_cluster.start_apiserver)
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            await task
        assert len(writes) > 20, "the writer should have made progress around the outage"
        want = await server_state(client, namespace)
        await eventually(lambda: store_state(informer) == want, what="cache converged")
        # What handlers last saw per key is the server's final state: no change was lost.
        seen = {k[1]: v["metadata"]["resourceVersion"] for k, v in recorder.last.items() if v is not None}
        assert seen == want


async def test_a_quiet_watch_is_ended_by_the_server_without_a_warning(
    client: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing in the cluster writes PodTemplates, so the API server (1.20) never sends a bookmark on this
    # watch: the stream is silent until the server ends it. That is a healthy watch, not a broken one.
    informer = Informer(
        client, PODTEMPLATES, namespace, settings=WatchSettings(watch_timeout=2, inactivity_timeout=1)
    )
    with caplog.at_level(logging.INFO, logger="manager"):
        async with running(informer):
            await eventually(lambda: informer.watches >= 4, timeout=30, what="watches ended by the server")
            await client.create(PODTEMPLATES, podtemplate(namespace, "after-silence"))
            await eventually(lambda: informer.store.get(namespace, "after-silence") is not None)
    assert informer.relists == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_server_side_watch_timeout_resumes_from_last_version(client: Client, namespace: str) -> None:
    informer = Informer(client, CONFIGMAPS, namespace, settings=WatchSettings(watch_timeout=1))
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        for i in range(5):
            await client.create(CONFIGMAPS, configmap(namespace, f"t-{i}"))
            await asyncio.sleep(0.6)
        want = await server_state(client, namespace)
        await eventually(lambda: store_state(informer) == want)
        assert informer.watches >= 2
        assert informer.relists == 1
        adds = [e for e in recorder.events if e[0] == "add" and e[1].startswith("t-")]
        assert adds == [("add", f"t-{i}") for i in range(5)]


class CompactingClient(Client):
    """Compacts etcd past every paged list's revision before its next page is read, and counts list requests.

    This is the worst case of continuous compaction: every continue token has expired by the time it is
    used. One write first moves etcd's revision past the list's, so that the compaction removes it.
    """

    def __init__(self, client: Client, cluster: LocalCluster, scratch: str) -> None:
        super().__init__(client.api_client, request_timeout=client.request_timeout)
        self.cluster = cluster
        self.scratch = scratch
        self.requests: list[dict[str, Any]] = []

    async def list_page(self, *args: Any, **kwargs: Any) -> Object:
        self.requests.append(kwargs)
        page = await super().list_page(*args, **kwargs)
        if page.get("metadata", {}).get("continue"):
            await self.create(CONFIGMAPS, configmap(self.scratch, f"bump-{random.randrange(10**9)}"))
            await asyncio.to_thread(self.cluster.compact_etcd)
        return page


async def test_an_expired_continue_token_falls_back_to_one_unpaged_list(
    client: Client, namespace: str, local_cluster: LocalCluster
) -> None:
    for i in range(5):
        await client.create(CONFIGMAPS, configmap(namespace, f"cm-{i}"))
    compacting = CompactingClient(client, local_cluster, namespace)
    result = await compacting.list_collection(CONFIGMAPS, namespace, page_size=2, resource_version="")
    names = {o["metadata"]["name"] for o in result.items}
    assert {f"cm-{i}" for i in range(5)} <= names
    # Page one, its expired continuation (410), then the whole collection in one request.
    assert [r.get("limit") for r in compacting.requests] == [2, 2, None]
    assert compacting.requests[1]["continue_token"]
    with pytest.raises(Gone):
        await compacting.list_page(
            CONFIGMAPS, namespace, continue_token=compacting.requests[1]["continue_token"]
        )


async def test_relists_under_continuous_compaction_converge_with_few_lists(
    client: Client, namespace: str, local_cluster: LocalCluster
) -> None:
    elsewhere = f"{namespace}-x"
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}}
    )
    for i in range(6):
        await client.create(CONFIGMAPS, configmap(namespace, f"cm-{i}"))
    compacting = CompactingClient(client, local_cluster, elsewhere)
    settings = WatchSettings(page_size=2, backoff_initial=0.2, backoff_max=1)
    informer = Informer(compacting, CONFIGMAPS, namespace, settings=settings)
    async with running(informer):
        # Make the watch expire (a restarted API server's watch cache no longer covers our version) while
        # every paged list's continue token expires too.
        await churn_elsewhere(client, elsewhere, 20)
        await asyncio.to_thread(local_cluster.restart_apiserver, True)
        await client.delete(CONFIGMAPS, "cm-0", namespace)
        await client.create(CONFIGMAPS, configmap(namespace, "cm-new"))
        want = await server_state(client, namespace)
        await eventually(lambda: store_state(informer) == want, what="cache converged")
    assert informer.relists >= 2, "the watch should have expired"
    assert len(compacting.requests) <= 4, compacting.requests
