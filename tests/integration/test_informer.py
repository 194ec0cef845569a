"""The informer against a real kube-apiserver: events, watch expiry, restarts, the inactivity watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable

from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, NAMESPACES, Client, Object
from manager.errors import AlreadyExists, ApiError, NotFound
from manager.informer import OWNER_INDEX, Informer, WatchSettings, key_of


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
        # kube-controller-manager may already have published kube-root-ca.crt into the namespace.
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


async def test_inactivity_watchdog_reopens_a_silent_watch_without_relisting(
    client: Client, namespace: str
) -> None:
    informer = Informer(client, CONFIGMAPS, namespace, settings=WatchSettings(inactivity_timeout=0.5))
    async with running(informer):
        await eventually(lambda: informer.watches >= 3, timeout=20, what="watch reopened")
        assert informer.relists == 1
        await client.create(CONFIGMAPS, configmap(namespace, "after-silence"))
        await eventually(lambda: informer.store.get(namespace, "after-silence") is not None)


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
