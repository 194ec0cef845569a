"""Kubernetes Events for controllers: recorded synchronously, posted in the background, never in the way.

Events are auxiliary. A reconcile must not wait for them, fail because of them, or be slowed down when the
Events API is forbidden, slow or down. So `EventRecorder.event()` only puts the event into a bounded
in-memory table (O(1), no await, never raises) and one background task owned by the `EventBroadcaster`
writes core/v1 Events. Everything the API server answers is logged (rate-limited, one line) and swallowed.

What is posted follows client-go's broadcaster so `kubectl describe` looks familiar, with two deliberate
differences:

* Aggregation. Identical events (same object, type, reason and message) seen within `aggregation_window`
  of each other update one Event object (merge PATCH of `count`, `lastTimestamp`, `message`) instead of
  creating new ones; if that Event is gone (404, expired by the API server's TTL) a new one is created with
  the running count. When an object emits many events that differ only by message (`similar_threshold`
  distinct messages of one type and reason within the window), the later ones are combined into one Event
  whose message is "(combined from similar events): <latest message>", as client-go does.
* Rate limiting without loss. client-go's spam filter (a token bucket per object: burst 25, one token per
  five minutes) silently drops what exceeds it. Here the same bucket bounds API writes, but an event that
  waits for a token stays in the table, and identical events arriving meanwhile are coalesced into it
  (its count grows). A burst of 100 identical events therefore ends as ONE Event with count 100, written
  with at most a few requests. `stop()` flushes what is still waiting without regard to the rate limit.

Storm guards (kopf's list, design pitfall 8): events about Events are skipped, messages are cut to
`max_message` characters with a visible infix, the table is bounded (overflow is dropped and counted), a 403
puts the namespace on a cool-down instead of being retried, and transient failures (5xx, timeouts,
unreachable server) are retried a few times with backoff, then given up.

The module keeps counters as plain attributes (`posted`, `dropped`, `failed`, `skipped`, `writes`) so the
runtime can export them as metrics without this module importing a metrics library. `event()` must be
called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeVar

from manager.client import EVENTS, Object, PatchType, Resource
from manager.errors import AlreadyExists, ApiError, Forbidden, NotFound, ServerUnavailable, Unauthorized

log = logging.getLogger(__name__)

NORMAL: Final = "Normal"
WARNING: Final = "Warning"
COMBINED_PREFIX: Final = "(combined from similar events): "
TRUNCATION_INFIX: Final = " [...] "
DEFAULT_NAMESPACE: Final = "default"
"""Where Events about cluster-scoped objects go (the API server accepts only this or '' for them)."""

_CACHE_SIZE: Final = 4096
_RETRY_DELAYS: Final = (1.0, 4.0, 16.0, 60.0)
_NAME_SUFFIX_LEN: Final = 17
_MAX_NAME_PREFIX: Final = 253 - _NAME_SUFFIX_LEN
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_EVENT_GROUPS: Final = frozenset({"", "events.k8s.io"})

_T = TypeVar("_T")


class EventSink(Protocol):
    """The two API calls the broadcaster needs; `manager.client.Client` satisfies it."""

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        """Create an object."""
        ...

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
    ) -> Object:
        """Patch an object."""
        ...


@dataclass(frozen=True, slots=True)
class _Ref:
    """The identity of the involved object (its resourceVersion is not part of it)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class _Key:
    """What makes two events "identical"; `message` is None for the combined event of similar ones."""

    ref: _Ref
    type: str
    reason: str
    message: str | None


@dataclass(slots=True)
class _Pending:
    """An event waiting to be written, with the identical events coalesced into it."""

    key: _Key
    resource_version: str
    message: str
    count: int
    first: float
    last: float
    not_before: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class _Posted:
    """The Event object last written for a key."""

    name: str
    count: int
    first: float
    seen: float


@dataclass(slots=True)
class _Similar:
    """Distinct messages (as hashes) of one (object, type, reason) within the aggregation window."""

    messages: set[int]
    seen: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class _LogLimiter:
    """At most one WARNING per key per interval; the next line says how many were suppressed."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._last: OrderedDict[str, float] = OrderedDict()
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        self._last.move_to_end(key)
        if len(self._last) > _CACHE_SIZE:
            oldest, _ = self._last.popitem(last=False)
            self._suppressed.pop(oldest, None)
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        log.warning(message, *args)


def truncate_message(message: str, limit: int) -> str:
    """Cut `message` to `limit` characters, keeping its head and tail around a visible ' [...] ' infix."""
    if len(message) <= limit:
        return message
    keep = limit - len(TRUNCATION_INFIX)
    tail = keep // 2
    return message[: keep - tail] + TRUNCATION_INFIX + (message[len(message) - tail :] if tail else "")


def _reference(obj: object) -> tuple[_Ref, str] | None:
    if not isinstance(obj, Mapping):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    kind, name = obj.get("kind"), meta.get("name")
    if not kind or not name:
        return None
    ref = _Ref(
        api_version=str(obj.get("apiVersion") or ""),
        kind=str(kind),
        namespace=str(meta.get("namespace") or ""),
        name=str(name),
        uid=str(meta.get("uid") or ""),
    )
    return ref, str(meta.get("resourceVersion") or "")


def _is_event(ref: _Ref) -> bool:
    return ref.kind == "Event" and ref.api_version.rpartition("/")[0] in _EVENT_GROUPS


def _name_prefix(name: str) -> str:
    candidate = name[:_MAX_NAME_PREFIX].rstrip(".-")
    if not _SUBDOMAIN.fullmatch(candidate):
        candidate = re.sub(r"[^a-z0-9]+", "-", name.lower())[:_MAX_NAME_PREFIX].strip("-")
    return candidate or "event"


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """What a reconciler holds: `event()` queues an Event about an object and returns at once."""

    __slots__ = ("_broadcaster",)

    def __init__(self, broadcaster: EventBroadcaster) -> None:
        self._broadcaster = broadcaster

    def event(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        """Record an event about `obj` (a JSON object with kind and metadata.name).

        `type` is "Normal" or "Warning"; anything else is logged and recorded as "Warning" so the message is
        not lost. Never raises, never blocks.
        """
        self._broadcaster._record(obj, type, reason, message)


class EventBroadcaster:
    """Owns the table of pending events and the one task that writes them as core/v1 Events."""

    def __init__(
        self,
        client: EventSink,
        component: str,
        *,
        host: str | None = None,
        queue_size: int = 1000,
        max_message: int = 1024,
        burst: int = 25,
        qps: float = 1 / 300,
        aggregation_window: float = 600.0,
        similar_threshold: int = 10,
        request_timeout: float = 10.0,
        forbidden_backoff: float = 60.0,
        log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure a broadcaster; nothing is sent before `start()`.

        `burst` and `qps` form the token bucket of API writes per involved object; `aggregation_window`
        (seconds) is how long an Event keeps being updated by identical or similar events;
        `similar_threshold` is the number of distinct messages after which similar events are combined;
        `forbidden_backoff` is how long events for a namespace are discarded after a 403/401;
        `clock` (monotonic seconds) exists for tests.
        """
        checks = (
            (bool(component), "component must not be empty"),
            (queue_size >= 1, f"queue_size must be >= 1, got {queue_size}"),
            (max_message >= 32, f"max_message must be >= 32, got {max_message}"),
            (burst >= 1, f"burst must be >= 1, got {burst}"),
            (qps > 0, f"qps must be > 0, got {qps}"),
            (aggregation_window > 0, f"aggregation_window must be > 0, got {aggregation_window}"),
            (similar_threshold >= 2, f"similar_threshold must be >= 2, got {similar_threshold}"),
            (request_timeout > 0, f"request_timeout must be > 0, got {request_timeout}"),
            (forbidden_backoff >= 0, f"forbidden_backoff must be >= 0, got {forbidden_backoff}"),
        )
        for ok, problem in checks:
            if not ok:
                raise ValueError(f"EventBroadcaster: {problem}")
        self.component = component
        self.host = host
        self._sink = client
        self._instance = host or component
        self._queue_size = queue_size
        self._max_message = max_message
        self._burst = float(burst)
        self._qps = qps
        self._window = aggregation_window
        self._similar_threshold = similar_threshold
        self._request_timeout = request_timeout
        self._forbidden_backoff = forbidden_backoff
        self._clock = clock
        self._logs = _LogLimiter(log_interval, clock)

        self._pending: dict[_Key, _Pending] = {}
        self._posted: OrderedDict[_Key, _Posted] = OrderedDict()
        self._similar: OrderedDict[tuple[_Ref, str, str], _Similar] = OrderedDict()
        self._buckets: OrderedDict[_Ref, _Bucket] = OrderedDict()
        self._forbidden_until: dict[str, float] = {}
        self._last_stamp = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: _Pending | None = None
        self._stopping = False
        self._closed = False

        self.posted = 0
        """Recorded events that are now counted in an Event object."""
        self.dropped = 0
        """Recorded events lost because the table was full or the broadcaster had stopped."""
        self.failed = 0
        """Recorded events lost because the API server refused or failed the write."""
        self.skipped = 0
        """Calls ignored: events about Events, or objects without kind or name."""
        self.writes = 0
        """API write attempts (creates and patches)."""

    @property
    def pending(self) -> int:
        """Distinct events waiting to be written."""
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing waits to be written and nothing is being written."""
        return not self._pending and self._inflight is None

    def recorder(self) -> EventRecorder:
        """A recorder feeding this broadcaster (cheap; controllers may share one)."""
        return EventRecorder(self)

    async def start(self) -> None:
        """Start the background poster; a second call is a no-op. Events recorded earlier are kept."""
        if self._stopping:
            raise RuntimeError(f"event broadcaster {self.component!r} was stopped and cannot be restarted")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"event-poster:{self.component}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is pending (ignoring the rate limit) for up to `timeout` seconds, then cancel.

        Idempotent. Events still pending afterwards, and events recorded afterwards, count as dropped.
        """
        if self._stopping:
            if self._task is not None and not self._task.done():
                await asyncio.wait({self._task}, timeout=timeout)
            return
        self._stopping = True
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"event-poster:{self.component}")
        self._wake.set()
        task = self._task
        try:
            await asyncio.wait({task}, timeout=timeout)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._closed = True
            left = sum(entry.count for entry in self._pending.values())
            if self._inflight is not None:
                left += self._inflight.count
                self._inflight = None
            self._pending.clear()
            if left:
                self.dropped += left
                log.warning(
                    "event broadcaster %s stopped with %d event(s) not written within %.1fs",
                    self.component,
                    left,
                    timeout,
                )

    # ---- recording (synchronous, O(1)) ----

    def _record(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        try:
            self._record_unguarded(obj, event_type, reason, message)
        except Exception as exc:  # the contract is "never raises": a bug here must not fail a reconcile
            self.skipped += 1
            self._logs.warning("record-error", "event not recorded: %s: %s", exc.__class__.__name__, exc)

    def _record_unguarded(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        if self._closed:
            self.dropped += 1
            self._logs.warning(
                "closed", "event %s not recorded: broadcaster %s is stopped", reason, self.component
            )
            return
        found = _reference(obj)
        if found is None:
            self.skipped += 1
            self._logs.warning(
                "no-ref", "event %s not recorded: the object has no kind or metadata.name", reason
            )
            return
        ref, resource_version = found
        if _is_event(ref):
            self.skipped += 1
            return
        if event_type not in (NORMAL, WARNING):
            self._logs.warning(
                "bad-type", "event type %r is neither Normal nor Warning; recorded as Warning", event_type
            )
            event_type = WARNING
        reason, message = str(reason), str(message)
        wall = time.time()
        key, text = self._aggregate(ref, event_type, reason, message)
        entry = self._pending.get(key)
        if entry is not None:
            entry.count += 1
            entry.last = wall
            entry.message = text
            entry.resource_version = resource_version or entry.resource_version
            return
        if len(self._pending) >= self._queue_size:
            self.dropped += 1
            self._logs.warning(
                "full",
                "event queue of %s full (%d pending): dropped %s event %s about %s %s (%d dropped so far)",
                self.component,
                len(self._pending),
                event_type,
                reason,
                ref.kind,
                f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name,
                self.dropped,
            )
            return
        self._pending[key] = _Pending(key, resource_version, text, 1, wall, wall)
        self._wake.set()

    def _aggregate(self, ref: _Ref, event_type: str, reason: str, message: str) -> tuple[_Key, str]:
        """The key the event is counted under and the text to post (client-go's similar-event combining)."""
        now = self._clock()
        group = (ref, event_type, reason)
        similar = self._similar.get(group)
        if similar is None or now - similar.seen > self._window:
            similar = _Similar(set(), now)
            self._similar[group] = similar
            if len(self._similar) > _CACHE_SIZE:
                self._similar.popitem(last=False)
        self._similar.move_to_end(group)
        similar.seen = now
        text = truncate_message(message, self._max_message)
        digest = hash(text)
        if digest in similar.messages or len(similar.messages) < self._similar_threshold - 1:
            similar.messages.add(digest)
            return _Key(ref, event_type, reason, text), text
        return _Key(ref, event_type, reason, None), truncate_message(
            COMBINED_PREFIX + message, self._max_message
        )

    # ---- posting (the background task) ----

    async def _run(self) -> None:
        while True:
            entry, wait = self._next()
            if entry is not None:
                await self._post(entry)
                continue
            if self._stopping and not self._pending:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _next(self) -> tuple[_Pending | None, float | None]:
        """Take the first event that may be written now, or say how long until one may."""
        now = self._clock()
        wait: float | None = None
        picked: _Pending | None = None
        refused: list[_Pending] = []
        for entry in self._pending.values():
            namespace = entry.key.ref.namespace or DEFAULT_NAMESPACE
            until = self._forbidden_until.get(namespace)
            if until is not None:
                if now < until:
                    refused.append(entry)
                    continue
                del self._forbidden_until[namespace]
            if self._stopping:
                picked = entry
                break
            delay = max(entry.not_before - now, self._bucket_delay(entry.key.ref, now))
            if delay <= 0:
                picked = entry
                break
            wait = delay if wait is None else min(wait, delay)
        for entry in refused:
            del self._pending[entry.key]
            self.failed += entry.count
        if picked is not None:
            del self._pending[picked.key]
            if not self._stopping:
                self._take_token(picked.key.ref, now)
        return picked, wait

    def _tokens(self, ref: _Ref, now: float) -> float:
        bucket = self._buckets.get(ref)
        if bucket is None:
            return self._burst
        return min(self._burst, bucket.tokens + (now - bucket.stamp) * self._qps)

    def _bucket_delay(self, ref: _Ref, now: float) -> float:
        tokens = self._tokens(ref, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._qps

    def _take_token(self, ref: _Ref, now: float) -> None:
        self._buckets[ref] = _Bucket(self._tokens(ref, now) - 1, now)
        self._buckets.move_to_end(ref)
        if len(self._buckets) > _CACHE_SIZE:
            self._buckets.popitem(last=False)

    async def _call(self, call: Awaitable[_T]) -> _T:
        self.writes += 1
        async with asyncio.timeout(self._request_timeout):
            return await call

    async def _post(self, entry: _Pending) -> None:
        namespace = entry.key.ref.namespace or DEFAULT_NAMESPACE
        self._inflight = entry
        try:
            await self._write(entry, namespace)
        except (Forbidden, Unauthorized) as exc:
            self.failed += entry.count
            self._forbidden_until[namespace] = self._clock() + self._forbidden_backoff
            self._logs.warning(
                f"refused:{namespace}",
                "cannot write Events in namespace %s (%s); events there are discarded for %.0fs",
                namespace,
                exc,
                self._forbidden_backoff,
            )
        except (ServerUnavailable, AlreadyExists, TimeoutError) as exc:
            self._retry(entry, exc)
        except ApiError as exc:
            self.failed += entry.count
            self._logs.warning(
                f"error:{namespace}", "cannot write an Event in namespace %s: %s", namespace, exc
            )
        except Exception as exc:  # a sink bug must not end the poster
            self.failed += entry.count
            self._logs.warning("sink-bug", "event write failed unexpectedly: %s: %s", type(exc).__name__, exc)
        else:
            self.posted += entry.count
        self._inflight = None

    async def _write(self, entry: _Pending, namespace: str) -> None:
        now = self._clock()
        prior = self._posted.get(entry.key)
        if prior is not None and now - prior.seen > self._window:
            prior = None
        if prior is not None:
            count = prior.count + entry.count
            patch = {"count": count, "lastTimestamp": _timestamp(entry.last), "message": entry.message}
            try:
                await self._call(
                    self._sink.patch(EVENTS, prior.name, patch, namespace, patch_type=PatchType.MERGE)
                )
            except NotFound:
                await self._create(entry, namespace, count, prior.first)
                return
            prior.count, prior.seen = count, now
            self._posted.move_to_end(entry.key)
            return
        await self._create(entry, namespace, entry.count, entry.first)

    async def _create(self, entry: _Pending, namespace: str, count: int, first: float) -> None:
        ref = entry.key.ref
        stamp = max(time.time_ns(), self._last_stamp + 1)
        self._last_stamp = stamp
        name = f"{_name_prefix(ref.name)}.{stamp:016x}"
        involved = {
            "kind": ref.kind,
            "apiVersion": ref.api_version,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
            "resourceVersion": entry.resource_version,
        }
        source = {"component": self.component}
        if self.host:
            source["host"] = self.host
        event: Object = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "reason": entry.key.reason,
            "message": entry.message,
            "type": entry.key.type,
            "source": source,
            "reportingComponent": self.component,
            "reportingInstance": self._instance,
            "firstTimestamp": _timestamp(first),
            "lastTimestamp": _timestamp(entry.last),
            "count": count,
        }
        await self._call(self._sink.create(EVENTS, event, namespace))
        self._posted[entry.key] = _Posted(name, count, first, self._clock())
        self._posted.move_to_end(entry.key)
        if len(self._posted) > _CACHE_SIZE:
            self._posted.popitem(last=False)

    def _retry(self, entry: _Pending, exc: Exception) -> None:
        """Put a transiently failed event back with backoff (merging into a newer identical one)."""
        what = str(exc) or type(exc).__name__
        if self._stopping or entry.attempts >= len(_RETRY_DELAYS):
            self.failed += entry.count
            self._logs.warning(
                "gave-up",
                "giving up on an Event (%s) after %d attempt(s): %s",
                entry.key.reason,
                entry.attempts + 1,
                what,
            )
            return
        entry.not_before = self._clock() + _RETRY_DELAYS[entry.attempts]
        entry.attempts += 1
        newer = self._pending.get(entry.key)
        if newer is not None:
            newer.count += entry.count
            newer.first = min(newer.first, entry.first)
            newer.not_before = max(newer.not_before, entry.not_before)
            newer.attempts = max(newer.attempts, entry.attempts)
        elif len(self._pending) >= self._queue_size:
            self.dropped += entry.count
        else:
            self._pending[entry.key] = entry
        self._logs.warning("transient", "writing an Event failed (%s); retrying", what)
