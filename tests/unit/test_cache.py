"""Which informer the cache reads when a kind is watched both cluster-wide and in one namespace."""

from __future__ import annotations

from typing import cast

from manager.cache import Cache
from manager.client import CONFIGMAPS, Client


def configmap(version: str) -> dict[str, object]:
    return {
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve", "resourceVersion": version},
        "data": {"v": version},
    }


def test_reads_come_from_the_namespaced_informer_that_delivered_the_event() -> None:
    cache = Cache(cast(Client, object()))
    cluster_wide = cache.informer(CONFIGMAPS)
    namespaced = cache.informer(CONFIGMAPS, "kserve")
    # The namespaced watch has seen the update; the cluster-wide one is a little behind.
    cluster_wide.store.put(configmap("1"))
    namespaced.store.put(configmap("2"))
    seen = cache.get(CONFIGMAPS, "inferenceservice-config", "kserve")
    assert seen is not None
    assert seen["data"] == {"v": "2"}
    # Other namespaces are served by the cluster-wide informer.
    other = configmap("3")
    other["metadata"]["namespace"] = "elsewhere"  # type: ignore[index]
    cluster_wide.store.put(other)
    assert cache.get(CONFIGMAPS, "inferenceservice-config", "elsewhere") is not None
