"""The reconciler skeleton every kind shares, as knative.dev/pkg generates one per kind.

A kind's controller has domain logic (what children to make, what its status means) and plumbing that is the
same for every kind: read the object from the cache, keep a finalizer on it, run the domain's step, write the
status back when it changed, retry that write when it races another writer, and tell the user what went
wrong. Four reconcilers used to carry their own copy of the plumbing, each slightly different (one slept
between conflict retries). Here it exists once; a kind implements `Kind` and is wrapped in `KindReconciler`:

* `parse` turns the cached JSON into the domain's model (or raises `UserProblem`: one Warning event);
* the finalizer (if the kind has one) is added before the first `reconcile_kind`, and removed once
  `finalize_kind` has succeeded on a deleted object;
* `reconcile_kind` converges the world and edits the model's status in place. It raises `UserProblem` for
  what only the user can fix (`mark_problem` turns it into a False condition), anything else to retry;
* the status is written when it changed semantically (conditions compared without their transition times or
  order), whether or not the step failed, starting from the cached object's resourceVersion and re-reading
  on each conflict (`manager.retry`), never sleeping. A write that fails otherwise is one `UpdateFailed`
  Warning event.

Events follow what the user needs to act, and no more (KServe v0.11 and knative emit one per failed attempt,
so a few seconds of API-server outage became 9 `InternalError` and 9 `UpdateFailed` counts per object):

* a `UserProblem` with a condition is announced once, by the status write that makes that condition appear;
  reconciles that find it already in the status, or on the conflict re-read of a stale cache, say nothing.
  One without a condition is announced once per distinct message while it persists;
* `InternalError` (for kinds that ask for it) and `UpdateFailed` are emitted at the first failure of a run of
  failed attempts; the retries only log, and a reconcile that ends without an error closes the run.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from manager.cache import Cache
from manager.client import Client, Object, Resource
from manager.errors import ApiError, NotFound
from manager.reconcile import Request, Result
from manager.retry import retry_on_conflict

log = logging.getLogger(__name__)

WARNING: Final = "Warning"
REASON_INTERNAL_ERROR: Final = "InternalError"
REASON_UPDATE_FAILED: Final = "UpdateFailed"

T = TypeVar("T")


class Recorder(Protocol):
    """Where the skeleton sends events (`manager.events.EventRecorder` is one)."""

    def event(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        """Record an event about `obj`; never blocks, never raises."""


class UserProblem(Exception):
    """Something only the user can fix: a False `condition` (when given) and one Warning event, no retry.

    Without a condition the problem is only an event (e.g. an object too broken to hold a status).
    `requeue_after` asks to look again later, for a cause that no watch reports when it is fixed.
    """

    def __init__(
        self, reason: str, message: str, *, condition: str | None = None, requeue_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.condition = condition
        self.requeue_after = requeue_after


class Kind(ABC, Generic[T]):
    """What a domain implements for `KindReconciler`: the model, the step, and how status reads."""

    @abstractmethod
    def parse(self, obj: Object) -> T:
        """The domain's model of the cached JSON (a private copy); `UserProblem` when unreadable."""

    @abstractmethod
    def object_of(self, obj: T) -> Object:
        """The JSON of the model as it stands (its resourceVersion guards the status write)."""

    @abstractmethod
    def status_of(self, obj: T) -> Object:
        """The JSON of the model's status as it stands (a fresh copy)."""

    @abstractmethod
    async def reconcile_kind(self, obj: T) -> Result | None:
        """Converge towards `obj`'s spec and edit its status in place (the skeleton writes it)."""

    async def finalize_kind(self, obj: T) -> None:
        """Clean up what garbage collection does not, for an object being deleted (raise to retry)."""
        return None

    async def observe_deletion(self, request: Request) -> None:
        """The object is gone from the cache: forget what is kept about it."""
        return None

    def mark_problem(self, obj: T, condition: str, problem: UserProblem) -> None:
        """Record `problem` in the status: `condition` False with its reason and message."""
        return None

    def status_updated(self, obj: T, previous: Object, current: Object) -> None:
        """The status write that replaced `previous` with `current` succeeded (e.g. transition events)."""
        return None

    def update_failed_message(self, obj: T, previous: Object, desired: Object, error: ApiError) -> str:
        """The `UpdateFailed` event's message."""
        meta = self.object_of(obj)
        return f'Failed to update status for {meta.get("kind", "object")} "{_name(meta)}": {error}'


class KindReconciler(Generic[T]):
    """Runs a `Kind` as a `manager.reconcile.Reconciler` (see the module docstring)."""

    def __init__(
        self,
        kind: Kind[T],
        *,
        resource: Resource,
        client: Client,
        cache: Cache,
        recorder: Recorder | None = None,
        finalizer: str | None = None,
        internal_error_events: bool = False,
    ) -> None:
        self.kind = kind
        self.resource = resource
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.finalizer = finalizer
        self.internal_error_events = internal_error_events
        self._failing: dict[Request, set[str]] = {}
        """Reasons already announced in the current run of failed attempts, per key."""
        self._announced: dict[Request, tuple[str, str]] = {}
        """The condition-less problem last announced, per key, while it persists."""

    async def reconcile(self, request: Request) -> Result:
        cached = self.cache.get(self.resource, request.name, request.namespace)
        if cached is None:
            self._forget(request)
            await self.kind.observe_deletion(request)
            return Result()
        try:
            obj = self.kind.parse(cached)
        except UserProblem as problem:
            log.warning("cannot read %s: %s", self.resource.kind, problem.message)
            self._announce_once(request, cached, problem)
            return Result()
        meta = cached.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp") is not None:
            await self._finalize(obj, cached, finalizers)
            self._forget(request)
            return Result()
        if self.finalizer is not None and self.finalizer not in finalizers:
            written = await self._set_finalizers(cached, [*finalizers, self.finalizer])
            obj = self.kind.parse(written)
        return await self._reconcile(request, obj)

    async def _reconcile(self, request: Request, obj: T) -> Result:
        before = self.kind.status_of(obj)
        problem: UserProblem | None = None
        error: Exception | None = None
        result = Result()
        try:
            result = await self.kind.reconcile_kind(obj) or Result()
        except UserProblem as exc:
            problem = exc
            if exc.condition is not None:
                self.kind.mark_problem(obj, exc.condition, exc)
            result = Result(requeue_after=exc.requeue_after)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        desired = self.kind.status_of(obj)
        replaced: Object | None = None
        try:
            replaced = await self._update_status(obj, before, desired)
        except ApiError as exc:
            message = self.kind.update_failed_message(obj, before, desired, exc)
            self._announce_failure(request, obj, REASON_UPDATE_FAILED, message)
            if error is None:
                raise
        if error is not None:
            if self.internal_error_events:
                self._announce_failure(request, obj, REASON_INTERNAL_ERROR, str(error))
            raise error
        self._failing.pop(request, None)
        if problem is None:
            self._announced.pop(request, None)
        elif problem.condition is None:
            self._announce_once(request, self.kind.object_of(obj), problem)
        elif replaced is not None and not _has_condition(replaced, problem):
            # Announced by the write that put the condition there: a reconcile that ran on a cache not yet
            # showing that write finds the condition on its conflict re-read and writes nothing.
            self._warn(self.kind.object_of(obj), problem.reason, problem.message)
        return result

    # -- finalizer ----------------------------------------------------------------------------------

    async def _finalize(self, obj: T, cached: Object, finalizers: list[str]) -> None:
        if self.finalizer is None:
            await self.kind.finalize_kind(obj)
            return
        if self.finalizer not in finalizers:
            return
        await self.kind.finalize_kind(obj)
        try:
            await self._set_finalizers(cached, [f for f in finalizers if f != self.finalizer])
        except NotFound:
            return

    async def _set_finalizers(self, obj: Object, finalizers: list[str]) -> Object:
        """Merge-patch the finalizers, guarded by the resourceVersion that was read (409 when stale)."""
        meta = obj.get("metadata") or {}
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}}
        return await self.client.patch(self.resource, _name(obj), patch, meta.get("namespace") or None)

    # -- status -------------------------------------------------------------------------------------

    async def _update_status(self, obj: T, before: Object, desired: Object) -> Object | None:
        """Write `desired` when it differs from `before`; each conflict re-reads and compares again.

        Returns the status the write replaced, or None when nothing was written. A write that finds the
        object gone is not an error (nothing is left to report to).
        """
        if semantic_status(desired) == semantic_status(before):
            return None
        current = self.kind.object_of(obj)
        namespace = current["metadata"].get("namespace") or None

        async def attempt(n: int) -> Object | None:
            nonlocal current
            previous = before
            if n:
                current = await self.client.get(self.resource, _name(current), namespace)
                previous = dict(current.get("status") or {})
                if semantic_status(previous) == semantic_status(desired):
                    return None
            await self.client.replace_status(self.resource, {**current, "status": desired})
            return previous

        try:
            previous = await retry_on_conflict(attempt)
        except NotFound:
            return None
        if previous is not None:
            self.kind.status_updated(obj, previous, desired)
        return previous

    # -- events -------------------------------------------------------------------------------------

    def _warn(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.event(obj, WARNING, reason, message)

    def _announce_failure(self, request: Request, obj: T, reason: str, message: str) -> None:
        reported = self._failing.setdefault(request, set())
        if reason not in reported:
            reported.add(reason)
            self._warn(self.kind.object_of(obj), reason, message)

    def _announce_once(self, request: Request, obj: Mapping[str, Any], problem: UserProblem) -> None:
        if self._announced.get(request) == (problem.reason, problem.message):
            return
        self._announced[request] = (problem.reason, problem.message)
        self._warn(obj, problem.reason, problem.message)

    def _forget(self, request: Request) -> None:
        self._failing.pop(request, None)
        self._announced.pop(request, None)


def semantic_status(status: Mapping[str, Any]) -> Any:
    """`status` as compared for a write: conditions without `lastTransitionTime`, in type order."""
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return dict(status)
    stripped = [
        {k: v for k, v in cond.items() if k != "lastTransitionTime"} if isinstance(cond, Mapping) else cond
        for cond in conditions
    ]
    stripped.sort(key=lambda cond: str(cond.get("type")) if isinstance(cond, Mapping) else "")
    return {**status, "conditions": stripped}


def _has_condition(status: Mapping[str, Any], problem: UserProblem) -> bool:
    """Whether `status` already reports `problem` (its condition False with the same reason and message)."""
    for cond in status.get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == problem.condition:
            return (
                cond.get("status") == "False"
                and cond.get("reason", "") == problem.reason
                and cond.get("message", "") == problem.message
            )
    return False


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
