"""A controller: watches feed keys into a work queue; N workers feed keys to a reconciler.

This is controller-runtime's controller, reduced to what matters for correctness:

* `Builder` wires sources the way `builder.ControllerManagedBy(mgr).For().Owns().Watches()` does; keys
  from `Watches` mappers (one event, possibly every object of a kind) can be spread through a token bucket
  shared by the controller's mapping watches (`with_fanout_limit`), so a fan-out cannot flood the API
  server. controller-runtime has no such limit; its client's QPS limit bounds every request instead.
* Each reconcile runs with a fresh reconcile id in its log context.
* The outcome decides what happens to the key, exactly as in controller-runtime's reconcileHandler:
  `Result(requeue_after=d)` resets the backoff and re-queues after d; success resets the backoff;
  `TerminalError` is logged and counted and the key is dropped until the object changes again;
  a 409 Conflict (a stale read) is retried with backoff and logged only at debug level, as knative does;
  another API error is retried with backoff and logged as one line (the server's answer says it all);
  any other exception is logged with its traceback, counted as a panic, and retried with backoff.
* Metrics use controller-runtime's names so existing dashboards work.
* Stopping drains: the queue stops taking keys, in-flight reconciles get the grace period to finish, then
  any still running are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from manager.client import Object, Resource
from manager.errors import ApiError, Conflict, TerminalError
from manager.handlers import (
    EnqueueForObject,
    EnqueueForOwner,
    EnqueueMapped,
    Enqueuer,
    Predicate,
    SpreadThroughBucket,
)
from manager.informer import EventHandler
from manager.logs import log_context
from manager.metrics import ControllerMetrics, Metrics, ReconcileResult
from manager.ratelimit import TokenBucket
from manager.reconcile import Reconciler, Request, Result
from manager.workqueue import QueueShutDown, WorkQueue

if TYPE_CHECKING:
    from manager.cache import Cache

log = logging.getLogger(__name__)


class Controller:
    """Runs a reconciler over the keys its watches produce."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        metrics: Metrics,
        max_concurrent_reconciles: int = 1,
        reconcile_timeout: float | None = None,
    ) -> None:
        if max_concurrent_reconciles < 1:
            raise ValueError("max_concurrent_reconciles must be at least 1")
        self.name = name
        self.reconciler = reconciler
        self.max_concurrent_reconciles = max_concurrent_reconciles
        self.reconcile_timeout = reconcile_timeout
        self.metrics: ControllerMetrics = metrics.init_controller(name, max_concurrent_reconciles)
        self.queue: WorkQueue[Request] = WorkQueue(metrics=metrics.workqueue(name))
        self._workers: list[asyncio.Task[None]] = []
        self._started = False

    def __repr__(self) -> str:
        return f"Controller({self.name})"

    @property
    def started(self) -> bool:
        """True between `start` and `stop`."""
        return self._started

    async def start(self) -> None:
        """Start the workers (the cache must be synced first; the manager sees to that)."""
        if self._started:
            return
        self._started = True
        for i in range(self.max_concurrent_reconciles):
            self._workers.append(asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}"))
        log.info("starting %d workers", self.max_concurrent_reconciles, extra={"controller": self.name})

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking keys, let in-flight reconciles finish within `timeout`, then cancel stragglers."""
        if not self._started:
            return
        self._started = False
        await self.queue.shutdown(drain=True, timeout=timeout)
        for task in self._workers:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def _worker(self) -> None:
        while True:
            try:
                request = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self._process(request)
            finally:
                self.queue.done(request)

    async def _process(self, request: Request) -> None:
        reconcile_id = str(uuid.uuid4())
        with log_context(
            controller=self.name, namespace=request.namespace, name=request.name, reconcile_id=reconcile_id
        ):
            self.metrics.worker_started()
            started = time.monotonic()
            outcome = ReconcileResult.ERROR
            try:
                result = await self._call(request)
            except TerminalError as exc:
                self.metrics.error(terminal=True)
                self.queue.forget(request)
                log.error("reconcile failed permanently, not retrying: %s", exc)
            except Conflict as exc:
                self.metrics.error()
                self.queue.add_rate_limited(request)
                log.debug("conflict, retrying: %s", exc.message)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                # The API server's answer says it all; a traceback would only show our own call stack.
                self.metrics.error()
                self.queue.add_rate_limited(request)
                log.error("reconcile failed, retrying with backoff: %s", exc)
            except TimeoutError:
                self.metrics.error()
                self.metrics.timeout()
                self.queue.add_rate_limited(request)
                log.error("reconcile timed out after %ss, retrying", self.reconcile_timeout)
            except Exception:
                self.metrics.error()
                self.metrics.panic()
                self.queue.add_rate_limited(request)
                log.exception("reconcile failed, retrying with backoff")
            else:
                self.queue.forget(request)
                if result.requeue_after is not None and result.requeue_after > 0:
                    outcome = ReconcileResult.REQUEUE_AFTER
                    self.queue.add_after(request, result.requeue_after)
                else:
                    outcome = ReconcileResult.SUCCESS
            finally:
                self.metrics.worker_finished()
            self.metrics.reconciled(outcome, time.monotonic() - started)

    async def _call(self, request: Request) -> Result:
        if self.reconcile_timeout is None:
            return await self.reconciler.reconcile(request)
        async with asyncio.timeout(self.reconcile_timeout):
            return await self.reconciler.reconcile(request)


class Builder:
    """Fluent wiring of a controller's watches: `For`, `Owns`, `Watches` (controller-runtime's builder)."""

    def __init__(self, cache: Cache, metrics: Metrics, register: Callable[[Controller], None]) -> None:
        self._cache = cache
        self._metrics = metrics
        self._register = register
        self._name: str | None = None
        self._for: tuple[Resource, Sequence[Predicate]] | None = None
        self._owns: list[tuple[Resource, Sequence[Predicate]]] = []
        self._watches: list[
            tuple[Resource, str | None, str | None, Callable[[Object], Iterable[Request]]]
        ] = []
        self._max_concurrent = 1
        self._reconcile_timeout: float | None = None
        self._fanout: tuple[float, int] | None = None

    def named(self, name: str) -> Builder:
        """The controller's name (metrics label, log field, queue name)."""
        self._name = name
        return self

    def for_(self, resource: Resource, *predicates: Predicate) -> Builder:
        """The primary kind: its own changes are reconciled."""
        self._for = (resource, predicates)
        return self

    def owns(self, resource: Resource, *predicates: Predicate) -> Builder:
        """A child kind: changes re-queue the controller owner of the primary kind."""
        self._owns.append((resource, predicates))
        return self

    def watches(
        self,
        resource: Resource,
        mapper: Callable[[Object], Iterable[Request]],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> Builder:
        """Any other kind: `mapper` turns a changed object into keys of the primary kind.

        `namespace` and `label_selector` narrow the informer (and what it caches), shared with any other
        reader of the same resource, namespace and selector."""
        self._watches.append((resource, namespace, label_selector, mapper))
        return self

    def with_max_concurrent_reconciles(self, n: int) -> Builder:
        """How many keys are reconciled at once."""
        self._max_concurrent = n
        return self

    def with_fanout_limit(self, rate: float, burst: int) -> Builder:
        """Spread the keys of every `watches` mapper through one bucket: `burst` at once, then `rate`/s."""
        TokenBucket(rate, burst)  # validates now rather than at complete()
        self._fanout = (rate, burst)
        return self

    def with_reconcile_timeout(self, seconds: float | None) -> Builder:
        """Cancel and retry a reconcile that runs longer than this."""
        self._reconcile_timeout = seconds
        return self

    def complete(self, reconciler: Reconciler) -> Controller:
        """Create the controller, connect its watches, and register it with the manager."""
        if self._for is None:
            raise ValueError("a controller needs for_(resource)")
        primary, predicates = self._for
        name = self._name or primary.kind.lower()
        controller = Controller(
            name,
            reconciler,
            metrics=self._metrics,
            max_concurrent_reconciles=self._max_concurrent,
            reconcile_timeout=self._reconcile_timeout,
        )
        handlers: list[tuple[Resource, str | None, str | None, EventHandler]] = [
            (primary, None, None, EnqueueForObject(controller.queue, predicates))
        ]
        for resource, owned_predicates in self._owns:
            owner_handler = EnqueueForOwner(controller.queue, primary.group, primary.kind, owned_predicates)
            handlers.append((resource, None, None, owner_handler))
        mapped: Enqueuer = controller.queue
        if self._fanout is not None:
            mapped = SpreadThroughBucket(controller.queue, TokenBucket(*self._fanout))
        for resource, namespace, selector, mapper in self._watches:
            handlers.append((resource, namespace, selector, EnqueueMapped(mapped, mapper)))
        for resource, namespace, selector, handler in handlers:
            self._cache.informer(resource, namespace, label_selector=selector).add_handler(handler)
        self._register(controller)
        return controller
