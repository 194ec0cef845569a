"""Event handlers turn informer notifications into reconcile keys (controller-runtime's `handler` package).

A controller watches its own kind (`EnqueueForObject`), the objects it owns (`EnqueueForOwner`: a change to
a child re-queues the parent named in the child's controller ownerReference), and anything else through a
mapping function (`EnqueueMapped`: e.g. a ConfigMap change re-queues every InferenceService). Predicates
filter notifications before they become keys; the payload itself is never passed on, only the key. A
mapping watch can fan out to every object of a kind, so its keys can be spread over time through a token
bucket (`SpreadThroughBucket`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from manager.client import Object, name_of, namespace_of
from manager.ratelimit import TokenBucket
from manager.reconcile import Request


class Enqueuer(Protocol):
    """Where handlers put keys (the controller's work queue)."""

    def add(self, item: Request) -> None:
        """Queue a key."""


class DelayingQueue(Protocol):
    """A queue that can schedule a key for later (the controller's work queue)."""

    def add_after(self, item: Request, delay: float) -> None:
        """Queue a key after `delay` seconds (at once when 0)."""

    def is_queued(self, item: Request) -> bool:
        """Whether the key will run without another add."""


class SpreadThroughBucket:
    """An `Enqueuer` that spreads keys over time through a token bucket (see `manager.ratelimit`).

    Meant for fan-out watches, where one event maps to many keys: the first `burst` keys are queued at once,
    the rest at the bucket's rate. A key that is already queued to run takes no token; a key that waits
    with a later deadline is moved forward to its slot, since the queue keeps the earliest deadline.
    """

    def __init__(self, queue: DelayingQueue, bucket: TokenBucket) -> None:
        self.queue = queue
        self.bucket = bucket

    def add(self, item: Request) -> None:
        if not self.queue.is_queued(item):
            self.queue.add_after(item, self.bucket.reserve())


class Predicate(Protocol):
    """Decides whether a notification should produce a reconcile."""

    def create(self, obj: Object) -> bool:
        """An object appeared."""

    def update(self, old: Object, new: Object) -> bool:
        """An object changed."""

    def delete(self, obj: Object) -> bool:
        """An object is gone."""


class GenerationChanged:
    """Pass updates only when metadata.generation changed (spec edits, not status writes)."""

    def create(self, obj: Object) -> bool:
        return True

    def update(self, old: Object, new: Object) -> bool:
        if old is new:
            return True
        return bool(old.get("metadata", {}).get("generation") != new.get("metadata", {}).get("generation"))

    def delete(self, obj: Object) -> bool:
        return True


class _Handler:
    """Common plumbing: predicates, then `keys(obj)` into the queue."""

    def __init__(self, queue: Enqueuer, predicates: Sequence[Predicate] = ()) -> None:
        self.queue = queue
        self.predicates = list(predicates)

    def keys(self, obj: Object) -> Iterable[Request]:
        raise NotImplementedError

    def on_add(self, obj: Object) -> None:
        if all(p.create(obj) for p in self.predicates):
            self._enqueue(obj)

    def on_update(self, old: Object, new: Object) -> None:
        if all(p.update(old, new) for p in self.predicates):
            self._enqueue(new)
            if old is not new:
                self._enqueue(old)

    def on_delete(self, obj: Object) -> None:
        if all(p.delete(obj) for p in self.predicates):
            self._enqueue(obj)

    def _enqueue(self, obj: Object) -> None:
        for key in self.keys(obj):
            self.queue.add(key)


class EnqueueForObject(_Handler):
    """Reconcile the object itself."""

    def keys(self, obj: Object) -> Iterable[Request]:
        return (Request(namespace_of(obj), name_of(obj)),)


class EnqueueForOwner(_Handler):
    """Reconcile the controller owner of kind `owner_kind` (API group `owner_group`) named in the object."""

    def __init__(
        self, queue: Enqueuer, owner_group: str, owner_kind: str, predicates: Sequence[Predicate] = ()
    ) -> None:
        super().__init__(queue, predicates)
        self.owner_group = owner_group
        self.owner_kind = owner_kind

    def keys(self, obj: Object) -> Iterable[Request]:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            if ref.get("controller") and ref.get("kind") == self.owner_kind and group == self.owner_group:
                return (Request(namespace_of(obj), str(ref.get("name", ""))),)
        return ()


class EnqueueMapped(_Handler):
    """Reconcile whatever keys a mapping function returns for the object."""

    def __init__(
        self,
        queue: Enqueuer,
        mapper: Callable[[Object], Iterable[Request]],
        predicates: Sequence[Predicate] = (),
    ) -> None:
        super().__init__(queue, predicates)
        self.mapper = mapper

    def keys(self, obj: Object) -> Iterable[Request]:
        return self.mapper(obj)
