"""TrainedModel controller: models.json editing, memory accounting, conditions, URLs, and the reconcile
against an in-memory API (conflicts re-read, steady state writes nothing, bad input reported once)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any, cast

import pytest

from apis import constants as c
from apis import trainedmodel as tmapi
from apis.inferenceservice import InferenceService, PredictorSpec
from apis.quantity import QuantityError
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from apis.trainedmodel import TrainedModel, TrainedModelStatus
from controllers.trainedmodel import trained_models_of, waiting_siblings
from manager.cache import Cache
from manager.client import CONFIGMAPS, Client, Object, Resource
from manager.errors import ApiError, Conflict, NotFound, ServerUnavailable
from manager.events import EventRecorder
from manager.reconcile import Request, Result
from reconcilers import modelconfig as mc
from reconcilers import trainedmodel as rtm

NS = "models"
NOW = "2024-01-01T00:00:00Z"


def tm_obj(
    name: str = "tm1",
    *,
    isvc: str = "mms",
    memory: Any = "256Mi",
    labels: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    status: Object | None = None,
) -> Object:
    metadata: Object = {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"}
    if labels:
        metadata["labels"] = labels
    if finalizers:
        metadata["finalizers"] = finalizers
    obj: Object = {
        "apiVersion": tmapi.API_VERSION,
        "kind": tmapi.KIND,
        "metadata": metadata,
        "spec": {
            "inferenceService": isvc,
            "model": {"storageUri": f"gs://bucket/{name}", "framework": "sklearn", "memory": memory},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def allocated_labels(isvc: str = "mms") -> dict[str, str]:
    return {c.TRAINED_MODEL_ISVC_LABEL: isvc, c.TRAINED_MODEL_ALLOCATED_LABEL: isvc}


def isvc_obj(
    name: str = "mms",
    *,
    ready: bool = True,
    limit: Any = "1Gi",
    predictor: Object | None = None,
    protocol: str | None = None,
) -> Object:
    sklearn: Object = {"resources": {"limits": {"memory": limit}}} if limit is not None else {}
    if protocol:
        sklearn["protocolVersion"] = protocol
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": {"team": "a"}},
        "spec": {"predictor": predictor if predictor is not None else {"sklearn": sklearn}},
        "status": {
            "url": f"http://{name}.{NS}.example.com",
            "address": {"url": f"http://{name}.{NS}.svc.cluster.local"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def tm(obj: Object) -> TrainedModel:
    return TrainedModel.from_object(obj)


def isvc(obj: Object) -> InferenceService:
    return InferenceService.from_object(obj)


# --- models.json -----------------------------------------------------------------------------------


def entry(name: str, memory: str = "1Gi") -> dict[str, Any]:
    return {
        "modelName": name,
        "modelSpec": {"storageUri": f"gs://b/{name}", "framework": "sklearn", "memory": memory},
    }


def test_model_entry_has_kserve_shape() -> None:
    assert mc.model_entry(tm(tm_obj(memory=1024))) == {
        "modelName": "tm1",
        "modelSpec": {"storageUri": "gs://bucket/tm1", "framework": "sklearn", "memory": "1024"},
    }


def test_upsert_appends_to_an_empty_array_in_compact_json() -> None:
    assert mc.upsert_model("[]", entry("a")) == json.dumps([entry("a")], separators=(",", ":"))


def test_upsert_keeps_order_and_replaces_in_place() -> None:
    text = mc.encode_models([entry("b"), entry("a"), entry("c")])
    updated = mc.upsert_model(text, entry("a", "2Gi"))
    assert updated is not None
    assert [e["modelName"] for e in json.loads(updated)] == ["b", "a", "c"]
    assert json.loads(updated)[1]["modelSpec"]["memory"] == "2Gi"
    appended = mc.upsert_model(updated, entry("d"))
    assert appended is not None
    assert [e["modelName"] for e in json.loads(appended)] == ["b", "a", "c", "d"]


def test_upsert_of_an_identical_entry_writes_nothing() -> None:
    assert mc.upsert_model(mc.encode_models([entry("a"), entry("b")]), entry("b")) is None


def test_upsert_keeps_foreign_entries_verbatim() -> None:
    text = json.dumps([{"modelName": "x", "modelSpec": {"memory": "1G"}, "extra": 1}, "junk"])
    updated = mc.upsert_model(text, entry("a"))
    assert updated is not None
    assert json.loads(updated)[:2] == [{"modelName": "x", "modelSpec": {"memory": "1G"}, "extra": 1}, "junk"]


def test_remove_drops_only_the_named_entry() -> None:
    updated = mc.remove_model(mc.encode_models([entry("a"), entry("b"), entry("c")]), "b")
    assert updated is not None
    assert [e["modelName"] for e in json.loads(updated)] == ["a", "c"]


@pytest.mark.parametrize("text", [None, "", "[]", json.dumps([entry("a")])])
def test_remove_of_an_absent_entry_writes_nothing(text: str | None) -> None:
    assert mc.remove_model(text, "zz") is None


def test_absent_or_empty_models_json_is_an_empty_list() -> None:
    assert mc.parse_models(None) == []
    assert mc.parse_models("  ") == []
    assert mc.upsert_model(None, entry("a")) == mc.encode_models([entry("a")])


@pytest.mark.parametrize(
    ("text", "problem"), [("{not json", "is not valid JSON"), ('{"a": 1}', "must be a JSON array, got dict")]
)
def test_broken_models_json_is_one_line_naming_the_configmap(text: str, problem: str) -> None:
    with pytest.raises(mc.ModelConfigError) as info:
        mc.upsert_model(text, entry("a"), where="ConfigMap ns/modelconfig-mms-0")
    message = str(info.value)
    assert message.startswith("ConfigMap ns/modelconfig-mms-0: models.json ")
    assert problem in message
    assert "\n" not in message


def test_empty_model_config_is_owned_by_the_isvc_and_carries_its_labels() -> None:
    cm = mc.empty_model_config(isvc(isvc_obj()))
    assert cm["metadata"]["name"] == "modelconfig-mms-0"
    assert cm["metadata"]["namespace"] == NS
    assert cm["metadata"]["labels"] == {"team": "a"}
    assert cm["data"] == {"models.json": "[]"}
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "name": "mms",
            "uid": "uid-mms",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# --- multi-model predictor and memory --------------------------------------------------------------


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ({"sklearn": {}}, True),
        ({"model": {"modelFormat": {"name": "sklearn"}}}, True),
        ({"sklearn": {"storageUri": "gs://b/m"}}, False),
        ({"model": {"modelFormat": {"name": "sklearn"}, "storage": {"key": "k", "path": "p"}}}, False),
        ({"containers": [{"image": "i", "env": [{"name": "MULTI_MODEL_SERVER", "value": "true"}]}]}, True),
        ({"containers": [{"image": "i", "env": [{"name": "MULTI_MODEL_SERVER", "value": "false"}]}]}, False),
        ({"containers": [{"image": "i"}]}, False),
        ({}, False),
    ],
)
def test_is_mms_predictor(predictor: Object, expected: bool) -> None:
    assert mc.is_mms_predictor(PredictorSpec.model_validate(predictor)) is expected


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ({"sklearn": {"resources": {"limits": {"memory": "1Gi"}}}}, Decimal(1024**3)),
        (
            {"model": {"modelFormat": {"name": "x"}, "resources": {"limits": {"memory": "1G"}}}},
            Decimal(10**9),
        ),
        ({"containers": [{"image": "i", "resources": {"limits": {"memory": 2048}}}]}, Decimal(2048)),
        ({"sklearn": {"resources": {"requests": {"memory": "1Gi"}}}}, Decimal(0)),
        ({}, Decimal(0)),
    ],
)
def test_predictor_memory_limit(predictor: Object, expected: Decimal) -> None:
    assert rtm.predictor_memory_limit(PredictorSpec.model_validate(predictor)) == expected


def test_unparsable_predictor_limit_raises() -> None:
    predictor = PredictorSpec.model_validate({"sklearn": {"resources": {"limits": {"memory": "lots"}}}})
    with pytest.raises(QuantityError):
        rtm.predictor_memory_limit(predictor)


def test_requested_memory_counts_self_once_and_skips_broken_siblings() -> None:
    me = tm(tm_obj("me", memory="512Mi", labels=allocated_labels()))
    others = [me, tm(tm_obj("a", memory="256Mi")), tm(tm_obj("b", memory="garbage"))]
    assert rtm.requested_memory(me, others) == Decimal(768 * 1024**2)


def test_requested_memory_of_an_unparsable_model_raises() -> None:
    with pytest.raises(QuantityError):
        rtm.requested_memory(tm(tm_obj(memory="1 GB")), [])


# --- conditions ------------------------------------------------------------------------------------


def marks(assessment: rtm.Assessment) -> dict[str, tuple[bool, str]]:
    return {m.type: (m.ok, m.reason) for m in assessment.marks}


def test_all_conditions_true_and_a_new_model_is_allocated() -> None:
    result = rtm.assess(tm(tm_obj(memory="512Mi")), isvc(isvc_obj()), [tm(tm_obj("a", memory="512Mi"))])
    assert [m.type for m in result.marks] == [
        tmapi.INFERENCE_SERVICE_READY,
        tmapi.IS_MMS_PREDICTOR,
        tmapi.MEMORY_RESOURCE_AVAILABLE,
    ]
    assert result.ready
    assert result.allocate
    assert result.problems == ()


def test_an_allocated_model_is_not_allocated_again() -> None:
    me = tm(tm_obj(labels=allocated_labels()))
    assert not rtm.assess(me, isvc(isvc_obj()), [me]).allocate


def test_memory_over_the_predictor_limit() -> None:
    result = rtm.assess(tm(tm_obj(memory="600Mi")), isvc(isvc_obj()), [tm(tm_obj("a", memory="500Mi"))])
    assert marks(result)[tmapi.MEMORY_RESOURCE_AVAILABLE] == (False, tmapi.MEMORY_RESOURCE_NOT_AVAILABLE)
    assert not result.allocate
    assert not result.ready
    assert result.problems == ()


def test_parent_not_ready_and_not_multi_model() -> None:
    parent = isvc(isvc_obj(ready=False, predictor={"sklearn": {"storageUri": "gs://b/m"}}))
    result = rtm.assess(tm(tm_obj()), parent, [])
    assert marks(result)[tmapi.INFERENCE_SERVICE_READY] == (False, tmapi.INFERENCE_SERVICE_NOT_READY)
    assert marks(result)[tmapi.IS_MMS_PREDICTOR] == (False, tmapi.IS_NOT_MMS_PREDICTOR)
    assert not result.ready


def test_a_predictor_without_implementation_has_no_memory() -> None:
    result = rtm.assess(tm(tm_obj(memory=0)), isvc(isvc_obj(predictor={})), [])
    assert marks(result)[tmapi.MEMORY_RESOURCE_AVAILABLE] == (False, tmapi.MEMORY_RESOURCE_NOT_AVAILABLE)


def test_unparsable_model_memory_is_a_reported_problem() -> None:
    result = rtm.assess(tm(tm_obj(memory="lots")), isvc(isvc_obj()), [])
    assert marks(result)[tmapi.MEMORY_RESOURCE_AVAILABLE] == (False, rtm.REASON_INVALID_MEMORY)
    (problem,) = result.problems
    assert problem.message.startswith("spec.model.memory: 'lots' is not a Kubernetes quantity")


def test_unparsable_predictor_limit_is_a_reported_problem() -> None:
    result = rtm.assess(tm(tm_obj()), isvc(isvc_obj(limit="1 gig")), [])
    (problem,) = result.problems
    assert problem.reason == rtm.REASON_INVALID_PREDICTOR_MEMORY
    assert "InferenceService mms predictor resources.limits.memory" in problem.message


# --- status ----------------------------------------------------------------------------------------


def conds(status: TrainedModelStatus) -> list[tuple[str, str, str]]:
    return [(x.type, x.status, x.reason) for x in status.conditions]


@pytest.mark.parametrize(
    ("protocol", "path"),
    [(None, "/v1/models/tm1:predict"), ("v1", "/v1/models/tm1:predict"), ("v2", "/v2/models/tm1/infer")],
)
def test_ready_status_has_urls_by_protocol(protocol: str | None, path: str) -> None:
    parent = isvc(isvc_obj(protocol=protocol))
    assessment = rtm.assess(tm(tm_obj()), parent, [])
    status = rtm.desired_status(TrainedModelStatus(), assessment, parent, "tm1", now=lambda: NOW)
    assert status.url == f"http://mms.{NS}.example.com{path}"
    assert status.address is not None
    assert status.address.url == f"http://mms.{NS}.svc.cluster.local{path}"
    assert conds(status) == [
        ("InferenceServiceReady", "True", ""),
        ("IsMMSPredictor", "True", ""),
        ("MemoryResourceAvailable", "True", ""),
        ("Ready", "True", ""),
    ]


def test_grpc_protocol_url_is_the_parents() -> None:
    assert rtm.model_url("http://x", "tm1", c.PROTOCOL_GRPC_V2) == "http://x"
    assert rtm.model_url(None, "tm1", c.PROTOCOL_V1) is None


def test_ready_condition_carries_the_last_failed_reason_and_url_is_kept() -> None:
    parent = isvc(isvc_obj(ready=False))
    current = TrainedModelStatus(url="http://old/v1/models/tm1:predict")
    assessment = rtm.assess(tm(tm_obj(memory="2Gi")), parent, [])
    status = rtm.desired_status(current, assessment, parent, "tm1", now=lambda: NOW)
    ready = status.conditions_manager().happy()
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", tmapi.MEMORY_RESOURCE_NOT_AVAILABLE)
    assert ready.message == rtm.MESSAGE_NO_MEMORY
    assert status.url == "http://old/v1/models/tm1:predict"
    assert current.conditions == []


def test_recomputing_a_ready_status_changes_nothing() -> None:
    parent = isvc(isvc_obj())
    assessment = rtm.assess(tm(tm_obj()), parent, [])
    first = rtm.desired_status(TrainedModelStatus(), assessment, parent, "tm1", now=lambda: NOW)
    again = rtm.desired_status(first, assessment, parent, "tm1", now=lambda: "2030-01-01T00:00:00Z")
    assert again.to_object() == first.to_object()


# --- watches ---------------------------------------------------------------------------------------


def cache_with(*objects: tuple[Resource, Object]) -> Cache:
    cache = Cache(cast(Client, None))
    for resource, obj in objects:
        cache.informer(resource).store.put(obj)
    return cache


def test_an_isvc_change_maps_to_its_labelled_models() -> None:
    cache = cache_with(
        (TRAINED_MODELS, tm_obj("a", labels={c.TRAINED_MODEL_ISVC_LABEL: "mms"})),
        (TRAINED_MODELS, tm_obj("b", labels={c.TRAINED_MODEL_ISVC_LABEL: "other"})),
        (TRAINED_MODELS, tm_obj("c", labels=allocated_labels())),
    )
    assert sorted(trained_models_of(cache, isvc_obj())) == [Request(NS, "a"), Request(NS, "c")]


def test_a_model_change_maps_to_siblings_waiting_for_memory() -> None:
    cache = cache_with(
        (TRAINED_MODELS, tm_obj("waiting", labels={c.TRAINED_MODEL_ISVC_LABEL: "mms"})),
        (TRAINED_MODELS, tm_obj("holding", labels=allocated_labels())),
        (TRAINED_MODELS, tm_obj("elsewhere", labels={c.TRAINED_MODEL_ISVC_LABEL: "other"})),
    )
    gone = tm_obj("holding", labels=allocated_labels())
    assert waiting_siblings(cache, gone) == [Request(NS, "waiting")]
    assert waiting_siblings(cache, tm_obj("unlabelled")) == []


# --- the reconcile against an in-memory API ---------------------------------------------------------


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class FakeApi:
    """Just enough of `manager.client.Client`: optimistic concurrency, merge patch, label selectors."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Object] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str, str]] = []
        self.fail: dict[tuple[str, str], list[ApiError]] = {}
        self._rv = 100

    def put(self, resource: Resource, obj: Object) -> Object:
        self._rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[(resource.plural, stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def _failure(self, verb: str, resource: Resource) -> None:
        queue = self.fail.get((verb, resource.plural))
        if queue:
            raise queue.pop(0)

    def _live(self, resource: Resource, namespace: str, name: str) -> Object:
        obj = self.objects.get((resource.plural, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f"{resource.plural} {name} not found")
        return obj

    def _check_rv(self, live: Object, rv: Any) -> None:
        if rv is not None and rv != live["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        self.reads.append(("GET", resource.plural, name))
        self._failure("GET", resource)
        return copy.deepcopy(self._live(resource, namespace or "", name))

    async def list_all(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> tuple[list[Object], str]:
        self.reads.append(("LIST", resource.plural, label_selector or ""))
        wanted = dict(p.split("=", 1) for p in (label_selector or "").split(",") if p)
        items = [
            copy.deepcopy(o)
            for (plural, ns, _), o in self.objects.items()
            if plural == resource.plural
            and ns == namespace
            and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]
        return items, str(self._rv)

    async def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None) -> Object:
        self.writes.append(("PATCH", resource.plural, name))
        self._failure("PATCH", resource)
        live = self._live(resource, namespace or "", name)
        self._check_rv(live, patch.get("metadata", {}).get("resourceVersion"))
        patch = copy.deepcopy(patch)
        patch["metadata"].pop("resourceVersion", None)
        return self.put(resource, merge(live, patch))

    async def replace(self, resource: Resource, obj: Object) -> Object:
        self.writes.append(("PUT", resource.plural, obj["metadata"]["name"]))
        self._failure("PUT", resource)
        live = self._live(resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._check_rv(live, obj["metadata"].get("resourceVersion"))
        return self.put(resource, obj)

    async def replace_status(self, resource: Resource, obj: Object) -> Object:
        self.writes.append(("PUT status", resource.plural, obj["metadata"]["name"]))
        self._failure("PUT status", resource)
        live = self._live(resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._check_rv(live, obj["metadata"].get("resourceVersion"))
        return self.put(resource, {**live, "status": obj["status"]})

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        self.writes.append(("POST", resource.plural, obj["metadata"]["name"]))
        return self.put(resource, obj)

    async def delete(
        self, resource: Resource, name: str, namespace: str | None = None, *, uid: str | None = None
    ) -> None:
        self.writes.append(("DELETE", resource.plural, name))
        live = self._live(resource, namespace or "", name)
        if uid and live["metadata"].get("uid") != uid:
            raise Conflict(409, "Conflict", "uid precondition failed")
        del self.objects[(resource.plural, namespace or "", name)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: Object, type: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type, reason, message))


class World:
    """A fake API plus a cache that mirrors it on demand (as the informers would)."""

    def __init__(self) -> None:
        self.api = FakeApi()
        self.cache = Cache(cast(Client, self.api))
        for resource in (TRAINED_MODELS, INFERENCE_SERVICES):
            self.cache.informer(resource)
        self.recorder = Recorder()
        self.reconciler = rtm.TrainedModelReconciler(
            cast(Client, self.api), self.cache, cast(EventRecorder, self.recorder)
        )

    def add(self, resource: Resource, obj: Object) -> None:
        self.api.put(resource, obj)

    def sync(self) -> None:
        for resource in (TRAINED_MODELS, INFERENCE_SERVICES):
            store = self.cache.informer(resource).store
            for key in store.all_keys():
                store.remove(key)
            for (plural, _, _), obj in self.api.objects.items():
                if plural == resource.plural:
                    store.put(copy.deepcopy(obj))

    async def reconcile(self, name: str = "tm1") -> Result:
        self.sync()
        return await self.reconciler.reconcile(Request(NS, name))

    def get(self, resource: Resource, name: str) -> Object:
        return self.api.objects[(resource.plural, NS, name)]

    def models(self) -> list[str]:
        cm = self.get(CONFIGMAPS, "modelconfig-mms-0")
        return [e["modelName"] for e in json.loads(cm["data"]["models.json"])]


@pytest.fixture
def world() -> World:
    w = World()
    w.add(INFERENCE_SERVICES, isvc_obj())
    w.add(CONFIGMAPS, mc.empty_model_config(isvc(isvc_obj())))
    return w


async def test_first_reconcile_labels_allocates_writes_status_and_models_json(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    assert await world.reconcile() == Result()
    live = world.get(TRAINED_MODELS, "tm1")
    assert live["metadata"]["labels"] == allocated_labels()
    assert live["metadata"]["finalizers"] == [c.TRAINED_MODEL_FINALIZER]
    assert live["status"]["url"] == f"http://mms.{NS}.example.com/v1/models/tm1:predict"
    assert world.models() == ["tm1"]
    assert world.recorder.events == []


async def test_steady_state_makes_no_writes(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    await world.reconcile()
    world.api.writes.clear()
    await world.reconcile()
    assert world.api.writes == []


async def test_status_conflict_rereads_and_recomputes(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj(labels=allocated_labels(), finalizers=[c.TRAINED_MODEL_FINALIZER]))
    world.sync()
    # Someone else writes the object after our cache read: our first status PUT is stale.
    world.add(TRAINED_MODELS, {**world.get(TRAINED_MODELS, "tm1")})
    await world.reconciler.reconcile(Request(NS, "tm1"))
    status_writes = [w for w in world.api.writes if w[0] == "PUT status"]
    assert len(status_writes) == 2
    assert ("GET", "trainedmodels", "tm1") in world.api.reads
    assert world.get(TRAINED_MODELS, "tm1")["status"]["conditions"][-1]["status"] == "True"


async def test_models_json_conflict_rereads_the_configmap(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    world.api.fail[("PUT", "configmaps")] = [Conflict(409, "Conflict", "modified")]
    await world.reconcile()
    assert world.models() == ["tm1"]
    assert [r for r in world.api.reads if r[1] == "configmaps"] == [
        ("GET", "configmaps", "modelconfig-mms-0")
    ] * 2


async def test_a_failed_status_write_emits_update_failed_and_retries(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    world.api.fail[("PUT status", "trainedmodels")] = [ServerUnavailable(503, "ServiceUnavailable", "down")]
    with pytest.raises(ServerUnavailable):
        await world.reconcile()
    (event,) = world.recorder.events
    assert event[:3] == ("tm1", "Warning", "UpdateFailed")
    assert event[3].startswith("Failed to update conditions for TrainedModel: 503 ServiceUnavailable")


async def test_parent_not_ready_waits_without_error_and_without_models_json(world: World) -> None:
    world.add(INFERENCE_SERVICES, isvc_obj(ready=False))
    world.add(TRAINED_MODELS, tm_obj())
    assert await world.reconcile() == Result()
    assert world.models() == []
    live = world.get(TRAINED_MODELS, "tm1")
    assert "url" not in live["status"]
    assert live["metadata"]["labels"][c.TRAINED_MODEL_ISVC_LABEL] == "mms"


async def test_parent_missing_from_cache_but_live_is_not_deleted(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    world.sync()
    world.cache.informer(INFERENCE_SERVICES).store.remove((NS, "mms"))
    await world.reconciler.reconcile(Request(NS, "tm1"))
    assert ("DELETE", "trainedmodels", "tm1") not in world.api.writes
    assert world.models() == ["tm1"]


async def test_orphan_is_deleted_and_its_finalizer_released(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj(isvc="gone"))
    await world.reconcile()
    assert ("DELETE", "trainedmodels", "tm1") in world.api.writes
    assert (TRAINED_MODELS.plural, NS, "tm1") not in world.api.objects
    # Already Terminating when the parent went away: the finalizer is still released.
    terminating = tm_obj("tm2", isvc="gone", finalizers=[c.TRAINED_MODEL_FINALIZER])
    terminating["metadata"]["deletionTimestamp"] = NOW
    world.add(TRAINED_MODELS, terminating)
    await world.reconcile("tm2")
    assert world.get(TRAINED_MODELS, "tm2")["metadata"]["finalizers"] == []


async def test_deletion_removes_the_entry_then_the_finalizer(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj())
    await world.reconcile()
    live = world.get(TRAINED_MODELS, "tm1")
    live["metadata"]["deletionTimestamp"] = NOW
    world.api.writes.clear()
    await world.reconcile()
    assert world.models() == []
    assert [w[0] for w in world.api.writes] == ["PUT", "PATCH"]
    assert world.get(TRAINED_MODELS, "tm1")["metadata"]["finalizers"] == []


async def test_missing_parent_name_is_reported_once(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj(isvc=""))
    assert await world.reconcile() == Result()
    live = world.get(TRAINED_MODELS, "tm1")
    ready = next(x for x in live["status"]["conditions"] if x["type"] == "InferenceServiceReady")
    assert (ready["status"], ready["reason"]) == ("False", rtm.REASON_NOT_SPECIFIED)
    assert [e[1:3] for e in world.recorder.events] == [("Warning", rtm.REASON_NOT_SPECIFIED)]
    await world.reconcile()
    assert len(world.recorder.events) == 1


async def test_invalid_memory_is_reported_and_not_served(world: World) -> None:
    world.add(TRAINED_MODELS, tm_obj(memory="lots"))
    assert await world.reconcile() == Result()
    assert world.models() == []
    assert [e[2] for e in world.recorder.events] == [rtm.REASON_INVALID_MEMORY]
    assert c.TRAINED_MODEL_ALLOCATED_LABEL not in world.get(TRAINED_MODELS, "tm1")["metadata"]["labels"]


async def test_missing_model_config_retries_later(world: World) -> None:
    del world.api.objects[(CONFIGMAPS.plural, NS, "modelconfig-mms-0")]
    world.add(TRAINED_MODELS, tm_obj())
    assert await world.reconcile() == Result(requeue_after=rtm.MODEL_CONFIG_RETRY)


async def test_broken_models_json_is_reported_and_retried_later(world: World) -> None:
    world.get(CONFIGMAPS, "modelconfig-mms-0")["data"]["models.json"] = "{"
    world.add(TRAINED_MODELS, tm_obj())
    assert await world.reconcile() == Result(requeue_after=rtm.MODEL_CONFIG_RETRY)
    assert [e[2] for e in world.recorder.events] == [rtm.REASON_INVALID_MODEL_CONFIG]


async def test_allocation_is_decided_from_a_live_list(world: World) -> None:
    # The cache has not seen "a" allocated yet; the live list has: "b" must not over-commit.
    world.add(TRAINED_MODELS, tm_obj("a", memory="768Mi"))
    world.add(TRAINED_MODELS, tm_obj("b", memory="512Mi"))
    world.sync()
    await world.reconciler.reconcile(Request(NS, "a"))
    await world.reconciler.reconcile(Request(NS, "b"))
    labels_b = world.get(TRAINED_MODELS, "b")["metadata"]["labels"]
    assert c.TRAINED_MODEL_ALLOCATED_LABEL not in labels_b
    assert world.models() == ["a"]


async def test_ensure_model_config_creates_once_and_only_for_multi_model() -> None:
    api = FakeApi()
    cache = Cache(cast(Client, api))
    client = cast(Client, api)
    await mc.ensure_model_config(client, cache, isvc(isvc_obj()))
    await mc.ensure_model_config(client, cache, isvc(isvc_obj()))
    assert api.writes == [("POST", "configmaps", "modelconfig-mms-0")]
    await mc.ensure_model_config(
        client, cache, isvc(isvc_obj("single", predictor={"sklearn": {"storageUri": "s3://b"}}))
    )
    assert len(api.writes) == 1
