"""A rate-limited asyncio work queue with client-go's semantics.

Why not ``asyncio.Queue``: a controller's queue holds *keys*, not events, and must guarantee three things
that a plain FIFO does not (controller-runtime, design anchors §1):

* **De-duplication.** A key that is already waiting is not queued twice; ten events for one object while
  it waits cost one reconcile. This is what makes reconciliation level-based.
* **One worker per key.** A key handed to a worker is "processing". Adding it again only marks it dirty;
  it goes back into the ready line when the worker calls ``done``, so two workers never reconcile the
  same object at once and no change seen mid-reconcile is lost.
* **Per-key backoff.** ``add_rate_limited`` delays a key by an exponential backoff that grows with each
  failure (5 ms doubling up to 1000 s) until ``forget`` resets it.

Delays follow controller-runtime's priority queue rather than client-go's delaying queue: one key has at
most one pending deadline, the earliest one wins, and an immediate ``add`` cancels the wait. A key that is
already ready (or dirty while processing) ignores delayed adds, since it will run sooner anyway.

Delayed keys sit in a heap ordered by deadline (stale entries are skipped lazily). A single timer handle
per queue, armed for the earliest deadline, moves due keys into the ready line; it is created inside the
running loop on first need and cancelled on shutdown, so no background task can leak. ``get`` and ``len``
also promote due keys themselves, which makes an injected fake clock usable in tests.

Shutdown follows the priority queue too: it stops accepting adds, drops keys that are ready or delayed
(the next leader re-lists everything), optionally waits for the keys being processed to be ``done``, then
makes every pending and future ``get`` raise ``QueueShutDown``.

The queue is not thread-safe: all calls must come from the event loop that runs the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, Protocol, TypeVar

from manager.metrics import WorkQueueMetrics

__all__ = ["ItemExponentialBackoff", "QueueShutDown", "RateLimiter", "WorkQueue"]

K = TypeVar("K", bound=Hashable)
K_contra = TypeVar("K_contra", bound=Hashable, contravariant=True)

DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0
# 2**1000 keeps the product finite for any sane base delay; past it the cap always wins.
_MAX_EXPONENT = 1000


class QueueShutDown(Exception):
    """Raised by ``WorkQueue.get`` once the queue has been shut down."""


class RateLimiter(Protocol[K_contra]):
    """Decides how long a key waits before it is retried."""

    def when(self, item: K_contra) -> float:
        """Seconds to wait before retrying ``item``; each call counts one more retry."""
        ...

    def forget(self, item: K_contra) -> None:
        """Stop tracking ``item``: its next ``when`` starts from the base delay again."""
        ...

    def num_requeues(self, item: K_contra) -> int:
        """How many times ``when`` was called for ``item`` since it was last forgotten."""
        ...


class ItemExponentialBackoff(Generic[K]):
    """Per-key exponential backoff: ``base_delay * 2**failures``, capped at ``max_delay``."""

    def __init__(self, base_delay: float = DEFAULT_BASE_DELAY, max_delay: float = DEFAULT_MAX_DELAY) -> None:
        if not base_delay > 0:
            raise ValueError(f"base_delay must be positive, got {base_delay!r}")
        if not max_delay >= base_delay:
            raise ValueError(f"max_delay must be at least base_delay ({base_delay!r}), got {max_delay!r}")
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[K, int] = {}

    def when(self, item: K) -> float:
        exponent = self._failures.get(item, 0)
        self._failures[item] = exponent + 1
        return min(math.ldexp(self._base, min(exponent, _MAX_EXPONENT)), self._max)

    def forget(self, item: K) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: K) -> int:
        return self._failures.get(item, 0)


class WorkQueue(Generic[K]):
    """De-duplicating, per-key exclusive, rate-limited queue of hashable keys."""

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter[K] | None = None,
        metrics: WorkQueueMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` must be monotonic and in seconds; it times delays and the metrics durations."""
        self._limiter: RateLimiter[K] = rate_limiter if rate_limiter is not None else ItemExponentialBackoff()
        self._metrics = metrics
        self._clock = clock

        self._ready: deque[K] = deque()
        # Keys that must be (re)processed: every ready key, plus processing keys re-added meanwhile.
        self._dirty: set[K] = set()
        # Keys handed to a worker and not yet done, with the clock time they were handed out.
        self._processing: dict[K, float] = {}
        # When each dirty key was added, for workqueue_queue_duration_seconds (only with metrics).
        self._added_at: dict[K, float] = {}

        # Delayed keys: the authoritative deadline per key, and a heap that may hold stale entries.
        self._waiting: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = math.inf

        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        self._shut_down = False
        self._drained: asyncio.Event | None = None

        if metrics is not None:
            metrics.track_in_flight(self._in_flight_ages)

    def __len__(self) -> int:
        """Number of keys ready to be handed out, counting delayed keys whose deadline has passed."""
        if self._heap and not self._shutting_down:
            self._promote_due()
        return len(self._ready)

    @property
    def shutting_down(self) -> bool:
        """True once ``shutdown`` was called; adds are ignored from then on."""
        return self._shutting_down

    # ----------------------------------------------------------------------------------- adding

    def add(self, item: K) -> None:
        """Queue ``item`` now, unless it is already queued; if it is being processed, re-queue it on done."""
        if self._shutting_down:
            return
        if self._waiting:
            self._waiting.pop(item, None)  # its heap entry becomes stale
        dirty = self._dirty
        if item in dirty:
            return
        dirty.add(item)
        metrics = self._metrics
        if metrics is not None:
            metrics.add()
            self._added_at[item] = self._clock()
        if item in self._processing:
            return
        self._ready.append(item)
        if metrics is not None:
            metrics.set_depth(len(self._ready))
        if self._getters:
            self._wake_one()

    def add_after(self, item: K, delay: float) -> None:
        """Queue ``item`` after ``delay`` seconds; of several pending deadlines the earliest wins."""
        if self._shutting_down:
            return
        if not delay > 0:  # also sends NaN to add(), never into the heap
            self.add(item)
            return
        if item in self._dirty:
            return
        deadline = self._clock() + delay
        current = self._waiting.get(item)
        if current is not None and current <= deadline:
            return
        self._waiting[item] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), item))
        if len(self._heap) > 2 * len(self._waiting) + 64:
            self._compact_heap()
        if deadline < self._timer_deadline:
            self._arm_timer()

    def is_queued(self, item: K) -> bool:
        """True when ``item`` will run without another add: it is ready, or was re-added while processing."""
        return item in self._dirty

    def add_rate_limited(self, item: K) -> None:
        """Queue ``item`` after the rate limiter's delay for it (the retry path after a failure)."""
        if self._shutting_down:
            return
        if self._metrics is not None:
            self._metrics.retry()
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: K) -> None:
        """Reset ``item``'s backoff (after a success); does not remove it from the queue."""
        self._limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        """How many rate-limited retries ``item`` has had since it was last forgotten."""
        return self._limiter.num_requeues(item)

    # ------------------------------------------------------------------------------- processing

    async def get(self) -> K:
        """Wait for a ready key and mark it as processing; the caller must call ``done`` with it.

        Raises ``QueueShutDown`` once the queue is shut down (after the drain, if one was requested).
        """
        ready = self._ready
        while True:
            if self._shut_down:
                raise QueueShutDown("work queue is shut down")
            if self._heap:
                self._promote_due()
            if ready and not self._shutting_down:
                break
            await self._wait()
        item = ready.popleft()
        now = self._clock()
        self._processing[item] = now
        self._dirty.discard(item)
        metrics = self._metrics
        if metrics is not None:
            metrics.set_depth(len(ready))
            metrics.get(now - self._added_at.pop(item, now))
        return item

    def done(self, item: K) -> None:
        """Finish processing ``item``; if it was re-added meanwhile it becomes ready again."""
        started = self._processing.pop(item, None)
        if started is None:
            return
        if self._metrics is not None:
            self._metrics.done(self._clock() - started)
        if self._shutting_down:
            if not self._processing and self._drained is not None:
                self._drained.set()
            return
        if item in self._dirty:
            self._ready.append(item)
            if self._metrics is not None:
                self._metrics.set_depth(len(self._ready))
            if self._getters:
                self._wake_one()

    async def _wait(self) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._getters.append(future)
        if self._heap and self._timer is None:
            self._arm_timer()
        try:
            await future
        except asyncio.CancelledError:
            future.cancel()
            with contextlib.suppress(ValueError):
                self._getters.remove(future)
            # Woken and cancelled at once: pass the wake-up on so the ready key is not stranded.
            if not future.cancelled() and self._ready:
                self._wake_one()
            raise

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            future = getters.popleft()
            if not future.done():
                future.set_result(None)
                return

    def _in_flight_ages(self) -> Iterator[float]:
        now = self._clock()
        return (now - started for started in list(self._processing.values()))

    # -------------------------------------------------------------------------------- delaying

    def _promote_due(self) -> None:
        """Move every key whose deadline has passed into the ready line, in deadline order."""
        heap, waiting = self._heap, self._waiting
        now = self._clock()
        while heap and heap[0][0] <= now:
            deadline, _, item = heapq.heappop(heap)
            if waiting.get(item) == deadline:
                self.add(item)  # add() also clears the waiting entry

    def _arm_timer(self) -> None:
        """Point the timer at the earliest live deadline (no timer when none, or outside a loop)."""
        heap, waiting = self._heap, self._waiting
        while heap and waiting.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_deadline = math.inf
        if not heap or heap[0][0] == math.inf:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the first get() inside the loop arms it
        deadline = heap[0][0]
        self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)
        self._timer_deadline = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = math.inf
        self._promote_due()
        self._arm_timer()

    def _compact_heap(self) -> None:
        self._heap = [entry for entry in self._heap if self._waiting.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)

    # -------------------------------------------------------------------------------- shutdown

    async def shutdown(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the queue; with ``drain``, first wait (at most ``timeout`` s) for processing keys to be done.

        From the call on, adds are ignored and ready or delayed keys are dropped; getters keep waiting
        during the drain and then all raise ``QueueShutDown``. With ``drain=False`` this returns at once.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        if not self._shutting_down:
            self._shutting_down = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_deadline = math.inf
            self._waiting.clear()
            self._heap.clear()
            self._ready.clear()
            self._dirty.clear()
            self._added_at.clear()
            if self._metrics is not None:
                self._metrics.set_depth(0)
        if drain and self._processing and not self._shut_down:
            if self._drained is None:
                self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        self._shut_down = True
        getters, self._getters = self._getters, deque()
        for future in getters:
            if not future.done():
                future.set_result(None)
