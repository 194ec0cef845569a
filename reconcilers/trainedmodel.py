"""The TrainedModel reconcile: one model loaded into a multi-model InferenceService.

`TrainedModelKind` is the domain half of a `manager.kindreconciler.KindReconciler`, which reads the
object from the cache, keeps the finalizer `trainedmodel.finalizer`, writes the status once per reconcile
when it changed, and reports problems. KServe v0.11's order (§6 of the behaviour reference), level-based:

1. being deleted: remove its entry from `models.json` (then the skeleton removes the finalizer);
2. the parent `spec.inferenceService` no longer exists: delete the TrainedModel;
3. persist the label `inferenceservice=<isvc>`;
4. conditions InferenceServiceReady, IsMMSPredictor, MemoryResourceAvailable (Ready follows them); when the
   memory fits, label the model `serving.kserve.io/trainedmodel-allocated=<isvc>`;
5. once every condition is True, `status.url` / `status.address.url` = the parent's + the predict path;
6. once every condition is True, upsert the `{modelName, modelSpec}` entry of `models.json`.

Where this differs from KServe, on purpose:

* Status is written once per reconcile and only when it changed; a conflict re-reads the object, never
  re-sends a stale copy. Metadata patches carry the resourceVersion and do the same.
* A False condition is not an error: KServe returns one so the key re-queues with backoff until the parent
  is Ready, which is a slow busy loop per model. Here every input of the decision is watched (the parent
  InferenceService re-queues its TrainedModels through the `inferenceservice` label; a TrainedModel change
  re-queues its unallocated siblings, whose memory may now fit), so the reconcile returns and waits.
* Bad input is a False condition with a precise reason plus one Warning event, and no retry until the
  object changes: no parent named (`InferenceServiceNotSpecified`), a memory that is not a quantity
  (`InvalidMemory`, `InvalidPredictorMemoryLimit`), an unreadable parent (`InvalidInferenceService`). A
  `models.json` that is not a JSON array is one Warning event while it lasts, and looked at again every
  `MODEL_CONFIG_RETRY` seconds (ConfigMaps are not watched).
* A parent missing from the cache is confirmed with a GET before its TrainedModel is deleted (a lagging
  cache must not delete a user's object), and a TrainedModel whose parent is already gone still loses its
  finalizer (KServe leaves it stuck in Terminating).
* Memory allocation is decided under a per-InferenceService lock from a live list of allocated siblings,
  so two models reconciled at once cannot both claim the last free memory.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from apis import constants as c
from apis import trainedmodel as tmapi
from apis.base import InvalidObjectError
from apis.inferenceservice import CUSTOM, InferenceService, PredictorSpec
from apis.knative import Addressable
from apis.quantity import QuantityError, parse_quantity
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from apis.trainedmodel import TrainedModel, TrainedModelStatus, predict_path
from manager.cache import Cache
from manager.client import Client, Object
from manager.errors import ApiError, Conflict, NotFound
from manager.events import WARNING
from manager.kindreconciler import Kind, KindReconciler, Recorder, UserProblem
from manager.reconcile import Result
from manager.retry import retry_on_conflict
from reconcilers.modelconfig import (
    ModelConfigError,
    ModelConfigMissing,
    ModelConfigReconciler,
    is_mms_predictor,
)

log = logging.getLogger(__name__)

MODEL_CONFIG_RETRY: Final = 10.0
"""Seconds before retrying when the model ConfigMap is missing or unreadable (ConfigMaps are not watched)."""

# KServe's condition messages (kept verbatim: users search for them).
MESSAGE_ISVC_NOT_READY = "Inference Service needs to be ready before Trained Model can be ready"
MESSAGE_NOT_MMS = "Inference Service predictor is not configured for multi-model serving"
MESSAGE_NO_MEMORY = "Inference Service does not have enough memory resources for Trained Model"

# Reasons of our own, for bad input KServe does not report.
REASON_NOT_SPECIFIED = "InferenceServiceNotSpecified"
REASON_INVALID_ISVC = "InvalidInferenceService"
REASON_INVALID_MEMORY = "InvalidMemory"
REASON_INVALID_PREDICTOR_MEMORY = "InvalidPredictorMemoryLimit"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_MODEL_CONFIG = "InvalidModelConfig"

ISVC_LABEL = c.TRAINED_MODEL_ISVC_LABEL
ALLOCATED_LABEL = c.TRAINED_MODEL_ALLOCATED_LABEL
FINALIZER = c.TRAINED_MODEL_FINALIZER


# --- Pure decisions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """One condition to set (KServe `SetCondition`: True without reason, False with reason and message)."""

    type: str
    ok: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Assessment:
    """What a reconcile decided: the conditions in KServe's order, whether to allocate, what was bad input."""

    marks: tuple[Mark, ...]
    allocate: bool = False
    problems: tuple[Mark, ...] = ()

    @property
    def ready(self) -> bool:
        """Every one of the three conditions is True (the model may be served)."""
        types = {m.type for m in self.marks if m.ok}
        return types >= set(tmapi.TRAINED_MODEL_CONDITIONS.dependents)


def memory_bytes(value: str | int | float | None) -> Decimal:
    """A memory quantity in bytes; absent is zero (Go's zero Quantity). Raises `QuantityError`."""
    if value is None:
        return Decimal(0)
    if isinstance(value, bool):
        raise QuantityError(f'quantity must be a string such as "1Gi", got {value!r}')
    return parse_quantity(str(value).strip())


def predictor_memory_limit(predictor: PredictorSpec) -> Decimal:
    """`resources.limits.memory` of the predictor's implementation container, zero when unset."""
    name = predictor.implementation()
    if name is None:
        return Decimal(0)
    container = predictor.custom_container() if name == CUSTOM else getattr(predictor, name)
    resources = container.resources if container is not None else None
    limits = (resources.limits if resources is not None else None) or {}
    return memory_bytes(limits.get("memory"))


def is_allocated(tm: TrainedModel, isvc_name: str) -> bool:
    """Whether the model already holds memory of `isvc_name` (its allocated label names that parent)."""
    return tm.labels.get(ALLOCATED_LABEL) == isvc_name


def requested_memory(tm: TrainedModel, allocated: Iterable[TrainedModel]) -> Decimal:
    """This model's memory plus that of the other allocated models (KServe `TotalRequestedMemory`).

    An unparsable sibling counts as zero (its own reconcile reports it); this model's raises `QuantityError`.
    """
    total = memory_bytes(tm.spec.model.memory)
    for other in allocated:
        if other.name == tm.name:
            continue
        try:
            total += memory_bytes(other.spec.model.memory)
        except QuantityError:
            continue
    return total


def assess(tm: TrainedModel, isvc: InferenceService, allocated: Iterable[TrainedModel]) -> Assessment:
    """The three conditions of `tm` against its parent and the models already allocated to it."""
    marks: list[Mark] = []
    problems: list[Mark] = []
    if isvc.status.is_ready():
        marks.append(Mark(tmapi.INFERENCE_SERVICE_READY, True))
    else:
        marks.append(
            Mark(
                tmapi.INFERENCE_SERVICE_READY,
                False,
                tmapi.INFERENCE_SERVICE_NOT_READY,
                MESSAGE_ISVC_NOT_READY,
            )
        )
    predictor = isvc.spec.predictor
    has_implementation = bool(predictor.implementations())
    if has_implementation and is_mms_predictor(predictor):
        marks.append(Mark(tmapi.IS_MMS_PREDICTOR, True))
    else:
        marks.append(Mark(tmapi.IS_MMS_PREDICTOR, False, tmapi.IS_NOT_MMS_PREDICTOR, MESSAGE_NOT_MMS))
    allocate = False
    memory: Mark
    try:
        limit = predictor_memory_limit(predictor)
    except QuantityError as exc:
        memory = Mark(
            tmapi.MEMORY_RESOURCE_AVAILABLE,
            False,
            REASON_INVALID_PREDICTOR_MEMORY,
            f"InferenceService {isvc.name} predictor resources.limits.memory: {exc}",
        )
        problems.append(memory)
    else:
        try:
            total = requested_memory(tm, allocated)
        except QuantityError as exc:
            memory = Mark(
                tmapi.MEMORY_RESOURCE_AVAILABLE, False, REASON_INVALID_MEMORY, f"spec.model.memory: {exc}"
            )
            problems.append(memory)
        else:
            if has_implementation and limit >= total:
                memory = Mark(tmapi.MEMORY_RESOURCE_AVAILABLE, True)
                allocate = not is_allocated(tm, isvc.name)
            else:
                memory = Mark(
                    tmapi.MEMORY_RESOURCE_AVAILABLE,
                    False,
                    tmapi.MEMORY_RESOURCE_NOT_AVAILABLE,
                    MESSAGE_NO_MEMORY,
                )
    marks.append(memory)
    return Assessment(tuple(marks), allocate=allocate, problems=tuple(problems))


def model_url(base: str | None, tm_name: str, protocol: str) -> str | None:
    """The parent's URL plus the predict path (`/v1/models/<tm>:predict` or `/v2/models/<tm>/infer`)."""
    if not base:
        return None
    return base + predict_path(tm_name, protocol)


def desired_status(
    current: TrainedModelStatus,
    assessment: Assessment,
    isvc: InferenceService | None,
    tm_name: str,
    *,
    now: Callable[[], str] | None = None,
) -> TrainedModelStatus:
    """`current` with the assessment's conditions and, once ready, the URLs; `current` is not modified."""
    status = current.model_copy(deep=True)
    manager = status.conditions_manager(now=now)
    for mark in assessment.marks:
        if mark.ok:
            manager.mark_true(mark.type)
        else:
            manager.mark_false(mark.type, mark.reason, mark.message)
    if assessment.ready and isvc is not None:
        protocol = isvc.spec.predictor.protocol()
        url = model_url(isvc.status.url, tm_name, protocol)
        if url is not None:
            status.url = url
        address = isvc.status.address.url if isvc.status.address is not None else None
        address_url = model_url(address, tm_name, protocol)
        if address_url is not None:
            status.address = Addressable(url=address_url)
    return status


# --- The reconciler -------------------------------------------------------------------------------


class TrainedModelKind(Kind[TrainedModel]):
    """Converges one TrainedModel: its labels, conditions, URLs and `models.json` entry."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: Recorder,
        *,
        model_config: ModelConfigReconciler | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.model_config = model_config or ModelConfigReconciler(client)
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def parse(self, obj: Object) -> TrainedModel:
        try:
            return TrainedModel.from_object(obj)
        except InvalidObjectError as exc:
            raise UserProblem(REASON_INVALID_SPEC, str(exc)) from None

    def object_of(self, obj: TrainedModel) -> Object:
        return obj.to_object()

    def status_of(self, obj: TrainedModel) -> Object:
        return obj.status.to_object()

    async def reconcile_kind(self, obj: TrainedModel) -> Result | None:
        tm = obj
        parent = tm.spec.inference_service
        if not parent:
            message = "spec.inferenceService is empty: a TrainedModel must name its InferenceService"
            raise UserProblem(REASON_NOT_SPECIFIED, message, condition=tmapi.INFERENCE_SERVICE_READY)
        isvc_obj = await self._parent(tm.namespace, parent)
        if isvc_obj is None:
            await self._delete_orphan(tm)
            return None
        try:
            isvc = InferenceService.from_object(isvc_obj)
        except InvalidObjectError as exc:
            raise UserProblem(
                REASON_INVALID_ISVC, str(exc), condition=tmapi.INFERENCE_SERVICE_READY
            ) from None
        if not await self._patch_metadata(tm, lambda t: _parent_label(t, parent)):
            return None
        async with self._lock(tm.namespace, parent):
            allocated = await self._allocated(tm, parent)
            assessment = assess(tm, isvc, allocated)
            if assessment.allocate and not await self._patch_metadata(tm, lambda t: _allocation(t, parent)):
                return None
        tm.status = desired_status(tm.status, assessment, isvc, tm.name)
        if assessment.problems:
            mark = assessment.problems[0]
            raise UserProblem(mark.reason, mark.message, condition=mark.type)
        if not assessment.ready:
            return None
        return await self._upsert_model(tm)

    def mark_problem(self, obj: TrainedModel, condition: str, problem: UserProblem) -> None:
        obj.status.conditions_manager().mark_false(condition, problem.reason, problem.message)

    def update_failed_message(
        self, obj: TrainedModel, previous: Object, desired: Object, error: ApiError
    ) -> str:
        if previous.get("conditions") != desired.get("conditions"):
            return f"Failed to update conditions for TrainedModel: {error}"
        return f'Failed to update status for TrainedModel "{obj.name}": {error}'

    async def finalize_kind(self, obj: TrainedModel) -> None:
        """Take the model out of `models.json` (then the skeleton releases the finalizer)."""
        if not obj.spec.inference_service:
            return
        try:
            await self.model_config.remove(obj)
        except ModelConfigError as exc:
            # An unreadable file lists nothing to remove; blocking the deletion would not repair it.
            self.recorder.event(obj.to_object(), WARNING, REASON_INVALID_MODEL_CONFIG, str(exc))

    # -- reads --------------------------------------------------------------------------------------

    async def _parent(self, namespace: str, name: str) -> Object | None:
        """The parent from the cache, confirmed with a GET when the cache does not have it."""
        try:
            cached = self.cache.get(INFERENCE_SERVICES, name, namespace)
        except LookupError:
            cached = None
        if cached is not None:
            return cached
        try:
            return await self.client.get(INFERENCE_SERVICES, name, namespace)
        except NotFound:
            return None

    async def _allocated(self, tm: TrainedModel, parent: str) -> list[TrainedModel]:
        """The models holding memory of `parent`: from the cache once `tm` is one of them, else listed live.

        Deciding a new allocation from the API server (under the per-parent lock) means an allocation made
        a moment ago by this process is always counted, however far the cache lags.
        """
        labels = {ISVC_LABEL: parent, ALLOCATED_LABEL: parent}
        if is_allocated(tm, parent):
            try:
                objects = self.cache.list(TRAINED_MODELS, tm.namespace, labels=labels)
            except LookupError:
                objects = await self._list_live(tm.namespace, labels)
        else:
            objects = await self._list_live(tm.namespace, labels)
        models = []
        for obj in objects:
            try:
                models.append(TrainedModel.from_object(obj))
            except InvalidObjectError:
                continue
        return models

    async def _list_live(self, namespace: str, labels: dict[str, str]) -> list[Object]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        items, _ = await self.client.list_all(TRAINED_MODELS, namespace, label_selector=selector)
        return items

    def _lock(self, namespace: str, parent: str) -> asyncio.Lock:
        key = (namespace, parent)
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    # -- writes -------------------------------------------------------------------------------------

    async def _patch_metadata(
        self, tm: TrainedModel, wanted: Callable[[TrainedModel], dict[str, Any] | None]
    ) -> bool:
        """Merge-patch the metadata `wanted` asks for, guarded by the resourceVersion; re-read on conflict.

        `tm.metadata` becomes what was written; False when the TrainedModel is gone.
        """

        async def attempt(n: int) -> None:
            if n:
                tm.metadata = (await self.client.get(TRAINED_MODELS, tm.name, tm.namespace))["metadata"]
            metadata = wanted(tm)
            if metadata is None:
                return
            metadata["resourceVersion"] = tm.metadata.get("resourceVersion")
            written = await self.client.patch(TRAINED_MODELS, tm.name, {"metadata": metadata}, tm.namespace)
            tm.metadata = written["metadata"]

        try:
            await retry_on_conflict(attempt)
        except NotFound:
            return False
        return True

    async def _upsert_model(self, tm: TrainedModel) -> Result:
        try:
            await self.model_config.upsert(tm)
        except ModelConfigMissing as exc:
            log.info("%s; retrying in %.0fs", exc, MODEL_CONFIG_RETRY)
            return Result(requeue_after=MODEL_CONFIG_RETRY)
        except ModelConfigError as exc:
            raise UserProblem(
                REASON_INVALID_MODEL_CONFIG, str(exc), requeue_after=MODEL_CONFIG_RETRY
            ) from None
        return Result()

    async def _delete_orphan(self, tm: TrainedModel) -> None:
        log.info(
            "parent InferenceService %s does not exist, deleting TrainedModel %s",
            tm.spec.inference_service,
            tm.name,
        )
        uid = tm.metadata.get("uid")
        try:
            await self.client.delete(TRAINED_MODELS, tm.name, tm.namespace, uid=str(uid) if uid else None)
        except (NotFound, Conflict):
            return


def trainedmodel_reconciler(client: Client, cache: Cache, recorder: Recorder) -> KindReconciler[TrainedModel]:
    """The TrainedModel reconciler: the skeleton around `TrainedModelKind`."""
    return KindReconciler(
        TrainedModelKind(client, cache, recorder),
        resource=TRAINED_MODELS,
        client=client,
        cache=cache,
        recorder=recorder,
        finalizer=FINALIZER,
    )


def _parent_label(tm: TrainedModel, parent: str) -> dict[str, Any] | None:
    """The parent label, when it is missing or names another InferenceService."""
    if tm.labels.get(ISVC_LABEL) == parent:
        return None
    return {"labels": {ISVC_LABEL: parent}}


def _allocation(tm: TrainedModel, parent: str) -> dict[str, Any] | None:
    if is_allocated(tm, parent):
        return None
    return {"labels": {ALLOCATED_LABEL: parent}}
