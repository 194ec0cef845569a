"""TrainedModel controller: models.json editing, memory accounting, conditions, URLs, and the reconcile as
row tables over the shared fake cluster (conflicts re-read, steady state writes nothing, bad input reported
once)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apis import constants as c
from apis import trainedmodel as tmapi
from apis.inferenceservice import InferenceService, PredictorSpec
from apis.quantity import QuantityError
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from apis.trainedmodel import TrainedModel, TrainedModelStatus
from controllers.trainedmodel import trained_models_of, waiting_siblings
from manager.cache import Cache
from manager.client import CONFIGMAPS, Object, Resource
from manager.errors import Conflict, ServerUnavailable
from manager.kindreconciler import KindReconciler
from manager.reconcile import Request, Result
from reconcilers import modelconfig as mc
from reconcilers import trainedmodel as rtm
from tests.support.fakecluster import FakeCluster, TableRow, run_row

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


@pytest.mark.parametrize("text", ["[]", json.dumps([entry("a")])])
def test_remove_of_an_absent_entry_writes_nothing(text: str) -> None:
    assert mc.remove_model(text, "zz") is None


@pytest.mark.parametrize("text", [None, "", "  "])
def test_remove_from_an_empty_or_absent_models_json_writes_an_empty_list(text: str | None) -> None:
    """KServe's ConfigsDelta re-encodes the file on a removal: an empty or absent one becomes `[]`."""
    assert mc.remove_model(text, "zz") == "[]"
    assert mc.remove_model("[]", "zz") is None, "and then it is steady"


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
    cluster = FakeCluster()
    cluster.watch(TRAINED_MODELS)
    for resource, obj in objects:
        cluster.add(resource, obj)
    return cluster.cache


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


# --- the reconcile, as row tables over the shared fake cluster ----------------------------------------

TM1 = f"{NS}/tm1"
MODEL_CONFIG = mc.empty_model_config(isvc(isvc_obj()))
PATCH_TM1 = f"patch trainedmodels.serving.kserve.io {TM1}"
STATUS_TM1 = f"update-status trainedmodels.serving.kserve.io {TM1}"
UPDATE_MODELS_JSON = f"update configmaps {NS}/modelconfig-mms-0"
READY_STATUS: Object = {
    "conditions": [
        {"type": "InferenceServiceReady", "status": "True"},
        {"type": "IsMMSPredictor", "status": "True"},
        {"type": "MemoryResourceAvailable", "status": "True"},
        {"type": "Ready", "status": "True"},
    ],
    "url": f"http://mms.{NS}.example.com/v1/models/tm1:predict",
    "address": {"url": f"http://mms.{NS}.svc.cluster.local/v1/models/tm1:predict"},
}
ALL_TRUE = {
    t: ("True",) for t in ("InferenceServiceReady", "IsMMSPredictor", "MemoryResourceAvailable", "Ready")
}
NOT_SPECIFIED = "spec.inferenceService is empty: a TrainedModel must name its InferenceService"


def models_json(*names: str) -> Object:
    """The parent's model config listing `names`."""
    configmap = copy.deepcopy(MODEL_CONFIG)
    configmap["data"]["models.json"] = json.dumps(
        [mc.model_entry(tm(tm_obj(n))) for n in names], separators=(",", ":")
    )
    return configmap


def deleting(obj: Object) -> Object:
    obj["metadata"]["deletionTimestamp"] = NOW
    return obj


def models(cluster: FakeCluster, name: str = "modelconfig-mms-0") -> list[str]:
    configmap = cluster.object(CONFIGMAPS, name, NS)
    assert configmap is not None
    return [e["modelName"] for e in json.loads(configmap["data"]["models.json"])]


def tm_cluster() -> tuple[FakeCluster, KindReconciler[TrainedModel]]:
    cluster = FakeCluster()
    for resource in (TRAINED_MODELS, INFERENCE_SERVICES):
        cluster.watch(resource)
    return cluster, rtm.trainedmodel_reconciler(cluster.client, cluster.cache, cluster.recorder)


def expect_models(*names: str) -> Callable[[FakeCluster], None]:
    def check(cluster: FakeCluster) -> None:
        assert models(cluster) == list(names)

    return check


def expect_tm(**metadata: Any) -> Callable[[FakeCluster], None]:
    def check(cluster: FakeCluster) -> None:
        live = cluster.object(TRAINED_MODELS, "tm1", NS)
        assert live is not None
        for key, value in metadata.items():
            assert live["metadata"].get(key) == value, key

    return check


def all_of(*checks: Callable[[FakeCluster], None]) -> Callable[[FakeCluster], None]:
    def check(cluster: FakeCluster) -> None:
        for one in checks:
            one(cluster)

    return check


def gone(resource: Resource, name: str) -> Callable[[FakeCluster], None]:
    def check(cluster: FakeCluster) -> None:
        assert cluster.object(resource, name, NS) is None

    return check


def hide_from_cache(resource: Resource, name: str) -> Callable[[FakeCluster], None]:
    def setup(cluster: FakeCluster) -> None:
        cluster.cache.informer(resource).store.remove((NS, name))

    return setup


STEADY = tm_obj(labels=allocated_labels(), finalizers=[c.TRAINED_MODEL_FINALIZER], status=READY_STATUS)
STEADY_WORLD = [(INFERENCE_SERVICES, isvc_obj()), (CONFIGMAPS, models_json("tm1")), (TRAINED_MODELS, STEADY)]

TM_ROWS = [
    TableRow(
        "a new model gets the finalizer, its labels, models.json and a Ready status",
        TM1,
        objects=[(INFERENCE_SERVICES, isvc_obj()), (CONFIGMAPS, MODEL_CONFIG), (TRAINED_MODELS, tm_obj())],
        want_writes=[PATCH_TM1, PATCH_TM1, PATCH_TM1, UPDATE_MODELS_JSON, STATUS_TM1],
        want_status={"conditions": ALL_TRUE, "url": READY_STATUS["url"], "address": READY_STATUS["address"]},
        check=all_of(
            expect_models("tm1"),
            expect_tm(labels=allocated_labels(), finalizers=[c.TRAINED_MODEL_FINALIZER]),
        ),
    ),
    TableRow(
        "a steady model makes no write",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, models_json("tm1")),
            (TRAINED_MODELS, STEADY),
        ],
    ),
    TableRow(
        "a status conflict re-reads the object and writes again",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, models_json("tm1")),
            (TRAINED_MODELS, tm_obj(labels=allocated_labels(), finalizers=[c.TRAINED_MODEL_FINALIZER])),
        ],
        failures=[("update-status", TRAINED_MODELS, Conflict(409, "Conflict", "modified"))],
        want_writes=[STATUS_TM1, STATUS_TM1],
        want_status={"conditions": ALL_TRUE},
    ),
    TableRow(
        "a models.json conflict re-reads the ConfigMap",
        TM1,
        objects=[(INFERENCE_SERVICES, isvc_obj()), (CONFIGMAPS, MODEL_CONFIG), (TRAINED_MODELS, STEADY)],
        failures=[("update", CONFIGMAPS, Conflict(409, "Conflict", "modified"))],
        want_writes=[UPDATE_MODELS_JSON, UPDATE_MODELS_JSON],
        check=expect_models("tm1"),
    ),
    TableRow(
        "a failed status write is one UpdateFailed event and a retry",
        TM1,
        objects=[(INFERENCE_SERVICES, isvc_obj()), (CONFIGMAPS, MODEL_CONFIG), (TRAINED_MODELS, tm_obj())],
        failures=[("update-status", TRAINED_MODELS, ServerUnavailable(503, "ServiceUnavailable", "down"))],
        want_writes=[PATCH_TM1, PATCH_TM1, PATCH_TM1, UPDATE_MODELS_JSON, STATUS_TM1],
        want_events=[
            "Warning UpdateFailed Failed to update conditions for TrainedModel: 503 ServiceUnavailable: down"
        ],
        want_error=ServerUnavailable,
    ),
    TableRow(
        "a parent that is not Ready: conditions, no error, no models.json",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj(ready=False)),
            (CONFIGMAPS, MODEL_CONFIG),
            (TRAINED_MODELS, tm_obj(finalizers=[c.TRAINED_MODEL_FINALIZER])),
        ],
        want_writes=[PATCH_TM1, PATCH_TM1, STATUS_TM1],
        want_status={
            "conditions": {
                "InferenceServiceReady": ("False", "InferenceServiceNotReady"),
                "Ready": ("False",),
            }
        },
        check=all_of(expect_models(), expect_tm(labels=allocated_labels())),
    ),
    TableRow(
        "a parent missing from the cache but live is not an orphan",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, models_json("tm1")),
            (TRAINED_MODELS, STEADY),
        ],
        setup=hide_from_cache(INFERENCE_SERVICES, "mms"),
    ),
    TableRow(
        "an orphan is deleted",
        TM1,
        objects=[(TRAINED_MODELS, tm_obj(isvc="gone", finalizers=[c.TRAINED_MODEL_FINALIZER]))],
        want_writes=[f"delete trainedmodels.serving.kserve.io {TM1}"],
        check=expect_tm(deletionTimestamp=NOW),
    ),
    TableRow(
        "an orphan already being deleted loses its finalizer",
        TM1,
        objects=[(TRAINED_MODELS, deleting(tm_obj(isvc="gone", finalizers=[c.TRAINED_MODEL_FINALIZER])))],
        want_writes=[PATCH_TM1],
        check=gone(TRAINED_MODELS, "tm1"),
    ),
    TableRow(
        "a deleted model leaves models.json, then its finalizer goes",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, models_json("tm1", "tm2")),
            (TRAINED_MODELS, deleting(copy.deepcopy(STEADY))),
        ],
        want_writes=[UPDATE_MODELS_JSON, PATCH_TM1],
        check=all_of(expect_models("tm2"), gone(TRAINED_MODELS, "tm1")),
    ),
    TableRow(
        "no parent named: a condition and one event",
        TM1,
        objects=[(TRAINED_MODELS, tm_obj(isvc="", finalizers=[c.TRAINED_MODEL_FINALIZER]))],
        want_writes=[STATUS_TM1],
        want_status={
            "conditions": {"InferenceServiceReady": ("False", rtm.REASON_NOT_SPECIFIED, NOT_SPECIFIED)}
        },
        want_events=[f"Warning {rtm.REASON_NOT_SPECIFIED} {NOT_SPECIFIED}"],
    ),
    TableRow(
        "no parent named, already reported: no write, no event",
        TM1,
        objects=[
            (
                TRAINED_MODELS,
                tm_obj(
                    isvc="",
                    finalizers=[c.TRAINED_MODEL_FINALIZER],
                    status={
                        "conditions": [
                            {
                                "type": "InferenceServiceReady",
                                "status": "False",
                                "reason": rtm.REASON_NOT_SPECIFIED,
                                "message": NOT_SPECIFIED,
                            },
                            {
                                "type": "Ready",
                                "status": "False",
                                "reason": rtm.REASON_NOT_SPECIFIED,
                                "message": NOT_SPECIFIED,
                            },
                        ]
                    },
                ),
            )
        ],
    ),
    TableRow(
        "an invalid memory is reported and not served",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, MODEL_CONFIG),
            (TRAINED_MODELS, tm_obj(memory="lots", finalizers=[c.TRAINED_MODEL_FINALIZER])),
        ],
        want_writes=[PATCH_TM1, STATUS_TM1],
        want_status={"conditions": {"MemoryResourceAvailable": ("False", rtm.REASON_INVALID_MEMORY)}},
        want_events=[
            f"Warning {rtm.REASON_INVALID_MEMORY} spec.model.memory: "
            '\'lots\' is not a Kubernetes quantity (expected e.g. "100m", "1", "100Mi", "1Gi")'
        ],
        check=all_of(expect_models(), expect_tm(labels={c.TRAINED_MODEL_ISVC_LABEL: "mms"})),
    ),
    TableRow(
        "a missing model config is looked at again later",
        TM1,
        objects=[(INFERENCE_SERVICES, isvc_obj()), (TRAINED_MODELS, STEADY)],
        want_result=Result(requeue_after=rtm.MODEL_CONFIG_RETRY),
    ),
    TableRow(
        "a broken models.json is one event, and looked at again later",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, {**MODEL_CONFIG, "data": {"models.json": "{"}}),
            (TRAINED_MODELS, STEADY),
        ],
        want_events=[
            f"Warning {rtm.REASON_INVALID_MODEL_CONFIG} ConfigMap {NS}/modelconfig-mms-0: models.json is not "
            "valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        ],
        want_result=Result(requeue_after=rtm.MODEL_CONFIG_RETRY),
    ),
]


@pytest.mark.parametrize("row", TM_ROWS, ids=str)
async def test_trainedmodel_reconcile(row: TableRow) -> None:
    cluster, reconciler = tm_cluster()
    await run_row(row, cluster, reconciler, resource=TRAINED_MODELS)


@pytest.mark.parametrize("data", [{}, {"models.json": ""}])
async def test_deleting_from_an_empty_or_absent_models_json_writes_an_empty_list(
    data: dict[str, str],
) -> None:
    cluster, reconciler = tm_cluster()
    row = TableRow(
        "deleting",
        TM1,
        objects=[
            (INFERENCE_SERVICES, isvc_obj()),
            (CONFIGMAPS, {**MODEL_CONFIG, "data": data}),
            (TRAINED_MODELS, deleting(copy.deepcopy(STEADY))),
        ],
        want_writes=[UPDATE_MODELS_JSON, PATCH_TM1],
        check=all_of(expect_models(), gone(TRAINED_MODELS, "tm1")),
    )
    await run_row(row, cluster, reconciler, resource=TRAINED_MODELS)


async def test_a_broken_models_json_is_announced_once_while_it_lasts() -> None:
    cluster, reconciler = tm_cluster()
    cluster.add(INFERENCE_SERVICES, isvc_obj())
    cluster.add(CONFIGMAPS, {**MODEL_CONFIG, "data": {"models.json": "{"}})
    cluster.add(TRAINED_MODELS, STEADY)
    for _ in range(3):
        assert await reconciler.reconcile(Request(NS, "tm1")) == Result(requeue_after=rtm.MODEL_CONFIG_RETRY)
    assert len(cluster.recorder.events) == 1
    cluster.add(CONFIGMAPS, {**MODEL_CONFIG, "data": {"models.json": "[1"}})
    await reconciler.reconcile(Request(NS, "tm1"))
    assert len(cluster.recorder.events) == 2, "a different problem is announced"


async def test_allocation_is_decided_from_a_live_list() -> None:
    cluster, reconciler = tm_cluster()
    cluster.add(INFERENCE_SERVICES, isvc_obj())
    cluster.add(CONFIGMAPS, MODEL_CONFIG)
    cluster.add(TRAINED_MODELS, tm_obj("a", memory="768Mi"))
    cluster.add(TRAINED_MODELS, tm_obj("b", memory="512Mi"))
    await reconciler.reconcile(Request(NS, "a"))
    # The cache has not seen "a" allocated yet; the live list has: "b" must not over-commit.
    await reconciler.reconcile(Request(NS, "b"))
    labels_b = (cluster.object(TRAINED_MODELS, "b", NS) or {})["metadata"]["labels"]
    assert c.TRAINED_MODEL_ALLOCATED_LABEL not in labels_b
    assert models(cluster) == ["a"]


async def test_ensure_model_config_creates_once_and_only_for_multi_model() -> None:
    cluster = FakeCluster()
    await mc.ensure_model_config(cluster.client, cluster.cache, isvc(isvc_obj()))
    await mc.ensure_model_config(cluster.client, cluster.cache, isvc(isvc_obj()))
    assert cluster.writes() == [f"create configmaps {NS}/modelconfig-mms-0"]
    single = isvc(isvc_obj("single", predictor={"sklearn": {"storageUri": "s3://b"}}))
    await mc.ensure_model_config(cluster.client, cluster.cache, single)
    assert cluster.writes() == []
