"""The shared cache: label and owner lookups, copy-on-read, informers added after start."""

from __future__ import annotations

import asyncio

import pytest

from manager.cache import Cache
from manager.client import CONFIGMAPS, SECRETS, Client, Object


def cm(namespace: str, name: str, labels: dict[str, str], owner: Object | None = None) -> Object:
    meta: dict[str, object] = {"name": name, "namespace": namespace, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


async def test_label_and_owner_lookups_return_isolated_copies(client: Client, namespace: str) -> None:
    parent = await client.create(CONFIGMAPS, cm(namespace, "parent", {"app": "a", "tier": "x"}))
    await client.create(CONFIGMAPS, cm(namespace, "child", {"app": "a", "tier": "y"}, owner=parent))
    await client.create(CONFIGMAPS, cm(namespace, "other", {"app": "b"}))
    cache = Cache(client)
    cache.informer(CONFIGMAPS, namespace)
    assert not cache.has_synced
    cache.start()
    try:
        assert await cache.wait_for_sync(30)
        assert cache.has_synced
        names = sorted(o["metadata"]["name"] for o in cache.list(CONFIGMAPS, namespace, labels={"app": "a"}))
        assert names == ["child", "parent"]
        assert [
            o["metadata"]["name"] for o in cache.list(CONFIGMAPS, namespace, labels={"app": "a", "tier": "y"})
        ] == ["child"]
        assert cache.list(CONFIGMAPS, namespace, labels={"app": "zzz"}) == []
        assert [
            o["metadata"]["name"] for o in cache.by_owner(CONFIGMAPS, parent["metadata"]["uid"], namespace)
        ] == ["child"]
        copy = cache.get(CONFIGMAPS, "parent", namespace)
        assert copy is not None
        copy["data"]["k"] = "mutated"
        copy["metadata"]["labels"]["app"] = "mutated"
        again = cache.get(CONFIGMAPS, "parent", namespace)
        assert again is not None
        assert again["data"]["k"] == "v"
        assert len(cache.list(CONFIGMAPS, namespace, labels={"app": "a"})) == 2
        assert cache.get(CONFIGMAPS, "missing", namespace) is None

        # A relabel moves the object between label index entries.
        await client.patch(CONFIGMAPS, "other", {"metadata": {"labels": {"app": "a"}}}, namespace)
        async with asyncio.timeout(10):
            while len(cache.list(CONFIGMAPS, namespace, labels={"app": "a"})) != 3:
                await asyncio.sleep(0.05)
        assert cache.list(CONFIGMAPS, namespace, labels={"app": "b"}) == []

        # An informer added while the cache runs is started at once.
        late = cache.informer(SECRETS, namespace)
        assert await late.wait_for_sync(30)
    finally:
        await cache.stop()


async def test_reading_an_unwatched_kind_is_a_clear_error(client: Client) -> None:
    cache = Cache(client)
    with pytest.raises(LookupError, match="no informer for configmaps"):
        cache.get(CONFIGMAPS, "x", "default")
