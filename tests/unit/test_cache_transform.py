"""Tests for what the cache keeps: the informer stores (and hands to handlers) what a transform leaves, on
list and on watch events; the cache applies a resource's transform to every informer of it and refuses one
set too late; the InferenceService controller's choice of fields keeps what its readers use; the store keeps
compact JSON, so every read is an independent copy and indexes follow replacements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

import controllers.inferenceservice as isvc_controller
import controllers.main as controllers_main
from apis.resources import DEPLOYMENTS, INFERENCE_SERVICES
from manager.cache import Cache
from manager.client import CONFIGMAPS, PODS, SERVICES, Client, ListResult, Object, RequestHook, WatchEvent
from manager.informer import LABEL_INDEX, OWNER_INDEX, Informer, Store, label_pairs, owner_uids
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from tests.support.fakecluster import FakeCluster


def configmap(name: str, version: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version, "uid": name},
        "data": {"big": "x" * 100},
    }


def drop_data(obj: Object) -> Object:
    obj.pop("data", None)
    return obj


class Seen:
    def __init__(self) -> None:
        self.objects: list[Object] = []

    def on_add(self, obj: Object) -> None:
        self.objects.append(obj)

    def on_update(self, old: Object, new: Object) -> None:
        self.objects.append(new)

    def on_delete(self, obj: Object) -> None:
        self.objects.append(obj)


class OneList:
    def __init__(self, result: ListResult) -> None:
        self.result = result

    async def list_collection(self, *args: Any, **kwargs: Any) -> ListResult:
        for item in self.result.items:
            kwargs["on_item"](item)
        return ListResult([], self.result.resource_version, self.result.paginated)


async def test_listed_objects_are_stored_and_delivered_transformed() -> None:
    client = cast(Client, OneList(ListResult([configmap("a", "1")], "1", False)))
    informer = Informer(client, CONFIGMAPS, "ns", transform=drop_data)
    seen = Seen()
    informer.add_handler(seen)
    await informer._list_and_replace()
    stored = informer.store.get("ns", "a")
    assert stored is not None
    assert "data" not in stored
    assert stored["metadata"]["resourceVersion"] == "1"
    assert [("data" in o) for o in seen.objects] == [False]


def test_watched_objects_are_stored_and_delivered_transformed() -> None:
    informer = Informer(cast(Client, None), CONFIGMAPS, "ns", transform=drop_data)
    seen = Seen()
    informer.add_handler(seen)
    informer._handle(WatchEvent("ADDED", configmap("a", "1")))
    informer._handle(WatchEvent("MODIFIED", configmap("a", "2")))
    informer._handle(WatchEvent("MODIFIED", configmap("a", "2")))  # same version: no update
    stored = informer.store.get("ns", "a")
    assert stored is not None
    assert "data" not in stored
    assert len(seen.objects) == 2
    assert all("data" not in o for o in seen.objects)


def test_the_cache_gives_every_informer_of_a_resource_its_transform() -> None:
    cache = Cache(FakeCluster().client)
    cache.set_transform(CONFIGMAPS, drop_data)
    assert cache.informer(CONFIGMAPS, "ns").transform is drop_data
    assert cache.informer(CONFIGMAPS).transform is drop_data
    assert cache.informer(PODS).transform is None


def test_a_transform_set_after_the_resource_is_cached_is_refused() -> None:
    cache = Cache(FakeCluster().client)
    cache.informer(CONFIGMAPS, "ns")
    with pytest.raises(ValueError, match="already cached"):
        cache.set_transform(CONFIGMAPS, drop_data)


def _owned_by(kind: str, api_version: str) -> list[Object]:
    return [{"apiVersion": api_version, "kind": kind, "name": "x", "uid": "u", "controller": True}]


def test_pods_lose_their_spec_and_keep_labels_and_container_statuses() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}, "resourceVersion": "3"},
        "spec": {"containers": [{"name": "kserve-container"}]},
        "status": {"containerStatuses": [{"name": "kserve-container", "state": {"running": {}}}]},
    }
    out = isvc_controller._pod_read_fields(pod)
    assert "spec" not in out
    assert out["metadata"]["labels"] == {"a": "b"}
    assert out["status"]["containerStatuses"][0]["name"] == "kserve-container"


def test_services_and_deployments_of_others_keep_only_their_metadata() -> None:
    knative = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "r-private", "ownerReferences": _owned_by("Service", "serving.knative.dev/v1")},
        "spec": {"ports": [{"port": 80}]},
        "status": {},
    }
    assert isvc_controller._metadata_unless_ours(knative) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": knative["metadata"],
    }
    same_kind_other_group = dict(
        knative, metadata={"ownerReferences": _owned_by("InferenceService", "x.io/v1")}
    )
    assert "spec" not in isvc_controller._metadata_unless_ours(same_kind_other_group)


def test_services_and_deployments_of_an_inferenceservice_are_kept_whole() -> None:
    ours = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "isvc",
            "ownerReferences": _owned_by("InferenceService", "serving.kserve.io/v1beta1"),
        },
        "spec": {"type": "ExternalName", "externalName": "gw"},
    }
    assert isvc_controller._metadata_unless_ours(dict(ours)) == ours


class ManagedFakeCluster(FakeCluster):
    host = "https://127.0.0.1:6443"

    def set_request_hook(self, hook: RequestHook | None) -> None:
        pass


def test_the_controller_sets_its_transforms_when_asked_and_the_manager_asks() -> None:
    assert controllers_main.CACHE_TRANSFORMS
    manager = Manager(ManagedFakeCluster().client, ManagerOptions(), metrics=Metrics(CollectorRegistry()))
    isvc_controller.setup_inferenceservice_controller(manager, cache_transforms=True)
    cache = manager.cache
    assert cache.informer(PODS, label_selector="serving.kserve.io/inferenceservice").transform is (
        isvc_controller._pod_read_fields
    )
    assert cache.informer(SERVICES).transform is isvc_controller._metadata_unless_ours
    assert cache.informer(DEPLOYMENTS).transform is isvc_controller._metadata_unless_ours
    assert cache.informer(INFERENCE_SERVICES).transform is None


def _store() -> Store:
    return Store({OWNER_INDEX: owner_uids, LABEL_INDEX: label_pairs})


def _labelled(name: str, version: str, **labels: str) -> Object:
    meta = {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "resourceVersion": version,
        "labels": labels,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": "Running"}}


def test_every_read_of_the_store_is_an_independent_copy() -> None:
    store = _store()
    store.put(_labelled("a", "1", app="x"))
    reads: list[Callable[[], Object | None]] = [
        lambda: store.get("ns", "a"),
        lambda: next(iter(store)),
        lambda: store.by_index(LABEL_INDEX, "app=x")[0],
        lambda: store.in_namespace("ns")[0],
    ]
    for read in reads:
        obj = read()
        assert obj is not None
        obj["status"]["phase"] = "Mangled"
        assert store.get("ns", "a") == _labelled("a", "1", app="x")


def test_a_replaced_object_is_refiled_under_its_new_index_values() -> None:
    store = _store()
    store.put(_labelled("a", "1", app="x"))
    store.put(_labelled("a", "2", app="y"))
    assert store.by_index(LABEL_INDEX, "app=x") == []
    assert [o["metadata"]["resourceVersion"] for o in store.by_index(LABEL_INDEX, "app=y")] == ["2"]
    assert store.identity("ns", "a") == ("uid-a", "2")
    assert store.remove(("ns", "a")) == _labelled("a", "2", app="y")
    assert store.by_index(LABEL_INDEX, "app=y") == []
    assert store.identity("ns", "a") is None


def test_in_namespace_returns_only_that_namespace() -> None:
    store = _store()
    store.put(_labelled("a", "1"))
    other = _labelled("b", "1")
    other["metadata"]["namespace"] = "other"
    store.put(other)
    assert [o["metadata"]["name"] for o in store.in_namespace("other")] == ["b"]


def test_an_unchanged_object_on_a_relist_notifies_nobody() -> None:
    informer = Informer(cast(Client, None), PODS, "ns")
    seen = Seen()
    informer.add_handler(seen)
    informer._apply_upsert(_labelled("a", "1"))
    informer._apply_upsert(_labelled("a", "1"))
    informer._apply_upsert(_labelled("a", "2"))
    assert [o["metadata"]["resourceVersion"] for o in seen.objects] == ["1", "2"]


def test_by_default_the_controller_caches_whole_objects() -> None:
    manager = Manager(ManagedFakeCluster().client, ManagerOptions(), metrics=Metrics(CollectorRegistry()))
    isvc_controller.setup_inferenceservice_controller(manager)
    assert manager.cache.informer(SERVICES).transform is None
    assert manager.cache.informer(PODS, label_selector="serving.kserve.io/inferenceservice").transform is None
