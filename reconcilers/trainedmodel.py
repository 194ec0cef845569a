"""The TrainedModel reconcile: one model loaded into a multi-model InferenceService.

KServe v0.11's order (§6 of the behaviour reference), level-based:

1. read the TrainedModel from the cache (gone: nothing to do);
2. being deleted: remove its entry from `models.json`, then the finalizer `trainedmodel.finalizer`;
3. the parent `spec.inferenceService` no longer exists: delete the TrainedModel;
4. persist the label `inferenceservice=<isvc>` and the finalizer (one metadata patch);
5. conditions InferenceServiceReady, IsMMSPredictor, MemoryResourceAvailable (Ready follows them); when the
   memory fits, label the model `serving.kserve.io/trainedmodel-allocated=<isvc>`;
6. once every condition is True, `status.url` / `status.address.url` = the parent's + the predict path;
7. once every condition is True, upsert the `{modelName, modelSpec}` entry of `models.json`.

Where this differs from KServe, on purpose:

* Status is written once per reconcile and only when it changed; a conflict re-reads the object and
  recomputes, never re-sends a stale copy. Metadata patches carry the resourceVersion and do the same.
* A False condition is not an error: KServe returns one so the key re-queues with backoff until the parent
  is Ready, which is a slow busy loop per model. Here every input of the decision is watched (the parent
  InferenceService re-queues its TrainedModels through the `inferenceservice` label; a TrainedModel change
  re-queues its unallocated siblings, whose memory may now fit), so the reconcile returns and waits.
* Bad input is a False condition with a precise reason plus one Warning event, and no retry until the
  object changes: no parent named (`InferenceServiceNotSpecified`), a memory that is not a quantity
  (`InvalidMemory`, `InvalidPredictorMemoryLimit`), an unreadable parent (`InvalidInferenceService`).
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
from typing import Any

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
from manager.events import WARNING, EventRecorder
from manager.reconcile import Request, Result
from reconcilers.modelconfig import (
    ModelConfigError,
    ModelConfigMissing,
    ModelConfigReconciler,
    is_mms_predictor,
)

log = logging.getLogger(__name__)

WRITE_ATTEMPTS = 5
MODEL_CONFIG_RETRY = 10.0
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

    @classmethod
    def problem(cls, condition: str, reason: str, message: str) -> Assessment:
        """Bad input: one False condition, reported as a Warning event too."""
        mark = Mark(condition, False, reason, message)
        return cls((mark,), problems=(mark,))


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


class TrainedModelReconciler:
    """Converges one TrainedModel: its labels and finalizer, conditions, URLs and `models.json` entry."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
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

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(TRAINED_MODELS, request.name, request.namespace)
        if obj is None:
            return Result()
        try:
            tm = TrainedModel.from_object(obj)
        except InvalidObjectError as exc:
            self.recorder.event(obj, WARNING, REASON_INVALID_SPEC, str(exc))
            return Result()
        if tm.is_deleting:
            await self._finalize(tm)
            return Result()
        parent = tm.spec.inference_service
        if not parent:
            message = "spec.inferenceService is empty: a TrainedModel must name its InferenceService"
            await self._write_status(
                tm, Assessment.problem(tmapi.INFERENCE_SERVICE_READY, REASON_NOT_SPECIFIED, message)
            )
            return Result()
        isvc_obj = await self._parent(tm.namespace, parent)
        if isvc_obj is None:
            await self._delete_orphan(tm)
            return Result()
        try:
            isvc = InferenceService.from_object(isvc_obj)
        except InvalidObjectError as exc:
            problem = Assessment.problem(tmapi.INFERENCE_SERVICE_READY, REASON_INVALID_ISVC, str(exc))
            await self._write_status(tm, problem)
            return Result()
        labelled = await self._converge_metadata(tm, lambda t: _owned_metadata(t, parent))
        if labelled is None:
            return Result()
        tm = labelled
        async with self._lock(tm.namespace, parent):
            allocated = await self._allocated(tm, parent)
            assessment = assess(tm, isvc, allocated)
            if assessment.allocate:
                allocated_tm = await self._converge_metadata(tm, lambda t: _allocation(t, parent))
                if allocated_tm is None:
                    return Result()
                tm = allocated_tm
        await self._write_status(tm, assessment, isvc)
        if not assessment.ready:
            return Result()
        return await self._upsert_model(tm)

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

    async def _converge_metadata(
        self, tm: TrainedModel, wanted: Callable[[TrainedModel], dict[str, Any] | None]
    ) -> TrainedModel | None:
        """Merge-patch the metadata `wanted` asks for, guarded by the resourceVersion; re-read on conflict.

        Returns the object as written (or unchanged), or None when it is gone.
        """
        current = tm
        for attempt in range(WRITE_ATTEMPTS):
            metadata = wanted(current)
            if metadata is None:
                return current
            metadata["resourceVersion"] = current.metadata.get("resourceVersion")
            try:
                written = await self.client.patch(
                    TRAINED_MODELS, current.name, {"metadata": metadata}, current.namespace
                )
            except NotFound:
                return None
            except Conflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                fresh = await self._read_live(current)
                if fresh is None:
                    return None
                current = fresh
                continue
            return TrainedModel.from_object(written)
        return current

    async def _read_live(self, tm: TrainedModel) -> TrainedModel | None:
        try:
            return TrainedModel.from_object(await self.client.get(TRAINED_MODELS, tm.name, tm.namespace))
        except NotFound:
            return None

    async def _write_status(
        self, tm: TrainedModel, assessment: Assessment, isvc: InferenceService | None = None
    ) -> None:
        """Write the status when it differs from the live one; every retry recomputes from a fresh read."""
        current = tm
        for attempt in range(WRITE_ATTEMPTS):
            desired = desired_status(current.status, assessment, isvc, current.name)
            before = current.status.to_object()
            after = desired.to_object()
            if after == before:
                return
            body = current.to_object()
            body["status"] = after
            try:
                await self.client.replace_status(TRAINED_MODELS, body)
            except NotFound:
                return
            except Conflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                fresh = await self._read_live(current)
                if fresh is None:
                    return
                current = fresh
                continue
            except ApiError as exc:
                if before.get("conditions") != after.get("conditions"):
                    message = f"Failed to update conditions for TrainedModel: {exc}"
                else:
                    message = f'Failed to update status for TrainedModel "{current.name}": {exc}'
                self.recorder.event(body, WARNING, c.EVENT_UPDATE_FAILED, message)
                raise
            for mark in assessment.problems:
                self.recorder.event(body, WARNING, mark.reason, mark.message)
            return

    async def _upsert_model(self, tm: TrainedModel) -> Result:
        try:
            await self.model_config.upsert(tm)
        except ModelConfigMissing as exc:
            log.info("%s; retrying in %.0fs", exc, MODEL_CONFIG_RETRY)
            return Result(requeue_after=MODEL_CONFIG_RETRY)
        except ModelConfigError as exc:
            self.recorder.event(tm.to_object(), WARNING, REASON_INVALID_MODEL_CONFIG, str(exc))
            return Result(requeue_after=MODEL_CONFIG_RETRY)
        return Result()

    async def _finalize(self, tm: TrainedModel) -> None:
        """Take the model out of `models.json`, then release the finalizer."""
        if FINALIZER not in tm.finalizers:
            return
        if tm.spec.inference_service:
            try:
                await self.model_config.remove(tm)
            except ModelConfigError as exc:
                # An unreadable file lists nothing to remove; blocking the deletion would not repair it.
                self.recorder.event(tm.to_object(), WARNING, REASON_INVALID_MODEL_CONFIG, str(exc))
        await self._converge_metadata(tm, _without_finalizer)

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


def _owned_metadata(tm: TrainedModel, parent: str) -> dict[str, Any] | None:
    """The parent label and the finalizer, when either is missing."""
    metadata: dict[str, Any] = {}
    if tm.labels.get(ISVC_LABEL) != parent:
        metadata["labels"] = {ISVC_LABEL: parent}
    if FINALIZER not in tm.finalizers:
        metadata["finalizers"] = [*tm.finalizers, FINALIZER]
    return metadata or None


def _allocation(tm: TrainedModel, parent: str) -> dict[str, Any] | None:
    if is_allocated(tm, parent):
        return None
    return {"labels": {ALLOCATED_LABEL: parent}}


def _without_finalizer(tm: TrainedModel) -> dict[str, Any] | None:
    if FINALIZER not in tm.finalizers:
        return None
    return {"finalizers": [f for f in tm.finalizers if f != FINALIZER]}
