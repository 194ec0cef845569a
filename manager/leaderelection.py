"""Leader election on a coordination.k8s.io/v1 Lease (client-go's LeaseLock semantics, ReleaseOnCancel).

Only one manager replica may run controllers at a time, so replicas compete for one Lease object. The rules
are client-go's, because every Kubernetes controller (and `kubectl`) reads Leases that way:

- A candidate takes a Lease held by someone else only after the record has stayed unchanged for the
  holder's `leaseDurationSeconds` *as measured on the candidate's own monotonic clock*, counted from the
  moment the candidate first saw that record. The holder's `renewTime` is never compared with our clock:
  the two machines' wall clocks may disagree by more than the lease duration.
- The holder renews every `retry_period`. If no renewal has succeeded for `renew_deadline`, it declares the
  lease lost and must stop acting as leader. Because `renew_deadline < lease_duration`, the old leader gives
  up before anyone else may take over, as long as neither clock runs fast by the difference.
- Writes are PUTs carrying the resourceVersion that was read, so two candidates racing for a free Lease
  cannot both win: the loser gets a 409 and tries again next period.
- On shutdown the holder releases the lease (empty holder, `leaseDurationSeconds: 1`), so a standby takes
  over within one retry period instead of waiting for expiry.

Why not `kubernetes_asyncio.leaderelection`: it cannot release the lease on shutdown (a SIGTERM'd leader
leaves its standby waiting a full lease duration), its API calls have no per-call timeouts (one hung request
stalls renewal past the deadline without noticing), and it writes naive local timestamps with a 'Z' suffix
(wrong on any host whose zone is not UTC) and measures its deadlines on the wall clock. This module bounds
every call, reports loss at the renew deadline measured on the monotonic clock, writes RFC 3339 MicroTime in
UTC (`2026-11-21T09:00:00.123456Z`) and releases on shutdown.

Usage by the manager::

    elector = LeaderElector(client, name=..., namespace=..., identity=default_identity(), on_change=gauge)
    await elector.acquire()          # blocks until we lead
    renewing = elector.keep_renewing()  # owned task; ends (and sets `elector.lost`) if the lease is lost
    ...                              # run controllers until shutdown or `elector.lost`
    await elector.release()          # on shutdown: stop renewing, give the lease up; never raises

or `await elector.run(start_controllers)`, which does the same and raises `LeaderElectionLost` on loss.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from manager.client import LEASES, Object, Resource
from manager.errors import AlreadyExists, ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

JITTER = 0.2
"""Acquire attempts are spaced `retry_period * (1 + JITTER * random())` apart, so candidates desynchronise."""

MAX_CALL_TIMEOUT = 5.0
"""Upper bound on one API call; the actual bound is `min(renew_deadline / 2, MAX_CALL_TIMEOUT)`."""


class LeaderElectionLost(Exception):
    """Raised by `LeaderElector.run` when the lease could not be renewed within the renew deadline."""


class Clock(Protocol):
    """Time sources: `monotonic` for every expiry decision, `now` only for the timestamps written."""

    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class LeaseClient(Protocol):
    """The three calls the elector needs; `manager.client.Client` provides them."""

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object: ...

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object: ...

    async def replace(self, resource: Resource, obj: Object, *, subresource: str | None = None) -> Object: ...


def format_micro_time(moment: datetime) -> str:
    """RFC 3339 with microseconds in UTC, as the API server's MicroTime: `2026-11-21T09:00:00.123456Z`.

    A naive datetime is rejected rather than guessed to be UTC.
    """
    if moment.tzinfo is None:
        raise ValueError("lease timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: Any) -> datetime | None:
    """Parse an RFC 3339 (Micro)Time from a Lease; None when absent or unreadable (the field is advisory)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LeaderElectionRecord:
    """The election-relevant part of a Lease's spec. An empty `holder_identity` means nobody holds it."""

    holder_identity: str
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    lease_transitions: int

    @classmethod
    def from_lease(cls, lease: Object) -> LeaderElectionRecord:
        """Read the record from a Lease object; missing or malformed fields read as empty/zero."""
        spec = lease.get("spec") or {}
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=_as_int(spec.get("leaseDurationSeconds")),
            acquire_time=parse_micro_time(spec.get("acquireTime")),
            renew_time=parse_micro_time(spec.get("renewTime")),
            lease_transitions=_as_int(spec.get("leaseTransitions")),
        )

    def to_spec(self) -> dict[str, Any]:
        """The Lease spec fields for this record (times as MicroTime strings)."""
        spec: dict[str, Any] = {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.lease_transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_micro_time(self.renew_time)
        return spec


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def next_record(
    current: LeaderElectionRecord | None, identity: str, lease_duration_seconds: int, now: datetime
) -> LeaderElectionRecord:
    """The record `identity` writes to acquire or renew: a renewal keeps acquireTime and the transition count,
    a change of holder (including taking a released lease) stamps a new acquireTime and counts a transition.
    """
    if current is not None and current.holder_identity == identity:
        return LeaderElectionRecord(
            identity, lease_duration_seconds, current.acquire_time or now, now, current.lease_transitions
        )
    transitions = current.lease_transitions + 1 if current is not None else 0
    return LeaderElectionRecord(identity, lease_duration_seconds, now, now, transitions)


def released_record(current: LeaderElectionRecord, now: datetime) -> LeaderElectionRecord:
    """The record a holder writes to give the lease up (client-go: empty holder, one-second duration)."""
    return LeaderElectionRecord("", 1, now, now, current.lease_transitions)


class Observation:
    """When we last saw the Lease record change, on our own monotonic clock (client-go's observedTime)."""

    def __init__(self) -> None:
        self.record: LeaderElectionRecord | None = None
        self.observed_at = 0.0

    def observe(self, record: LeaderElectionRecord, now: float) -> bool:
        """Note `record` as read at `now`; returns True when it differs from the previous one."""
        if record == self.record:
            return False
        self.record = record
        self.observed_at = now
        return True

    def remaining(self, now: float) -> float:
        """Seconds until the observed holder's lease expires by our clock (0 when free or expired)."""
        if self.record is None or not self.record.holder_identity:
            return 0.0
        return max(0.0, self.observed_at + self.record.lease_duration_seconds - now)

    def held_by_other(self, identity: str, now: float) -> bool:
        """Whether someone other than `identity` holds an unexpired lease, so we must not take it."""
        record = self.record
        if record is None or not record.holder_identity or record.holder_identity == identity:
            return False
        return self.remaining(now) > 0


def default_identity() -> str:
    """A unique candidate identity: the host name plus a random suffix, as controller-runtime does."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


class _Outcome(Enum):
    LEADING = "leading"
    HELD = "held by another candidate"
    FAILED = "failed"


class LeaderElector:
    """Competes for one Lease on behalf of `identity`; see the module docstring for the protocol.

    State visible to the manager: `is_leader`; `leader` (the last observed holder, '' when none); `lost`
    (an `asyncio.Event` set when a held lease could not be renewed); and `on_change(is_leader)`, called on
    every change of our own leadership (for the `leader_election_master_status` gauge; exceptions it raises
    are logged and ignored).
    """

    def __init__(
        self,
        client: LeaseClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        release_on_cancel: bool = True,
        on_change: Callable[[bool], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not name or not namespace:
            raise ValueError("leader election needs a lease name and namespace")
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if retry_period <= 0:
            raise ValueError(f"retry period must be positive, got {retry_period}")
        if lease_duration < 1:
            raise ValueError(f"lease duration must be at least 1 s, got {lease_duration}")
        if not lease_duration > renew_deadline:
            raise ValueError(
                f"lease duration ({lease_duration} s) must be greater than "
                f"renew deadline ({renew_deadline} s)"
            )
        if not renew_deadline > retry_period * (1 + JITTER):
            raise ValueError(
                f"renew deadline ({renew_deadline} s) must be greater than retry period * {1 + JITTER} "
                f"({retry_period * (1 + JITTER):g} s)"
            )
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        self.call_timeout = min(renew_deadline / 2, MAX_CALL_TIMEOUT)
        self.lost = asyncio.Event()
        self._client = client
        self._on_change = on_change
        self._clock: Clock = clock or SystemClock()
        self._duration_seconds = math.ceil(lease_duration)
        self._observation = Observation()
        self._lease: Object | None = None
        self._is_leader = False
        self._renewed_at = 0.0
        self._renew_task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        """`namespace/name` of the Lease."""
        return f"{self.namespace}/{self.name}"

    @property
    def is_leader(self) -> bool:
        """True from a successful `acquire` until the lease is lost (see `keep_renewing`), released or
        stopped."""
        return self._is_leader

    @property
    def leader(self) -> str:
        """The holder identity last seen on the Lease ('' when nobody holds it or it was not read yet)."""
        record = self._observation.record
        return record.holder_identity if record is not None else ""

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the lease; True when we hold it afterwards. Never raises ApiError.

        The building block of `acquire` and the renew loop; on its own it neither changes `is_leader` nor
        starts renewing.
        """
        return await self._attempt() is _Outcome.LEADING

    async def acquire(self) -> None:
        """Block until we hold the lease, trying every retry period (with jitter) and right at expiry."""
        if self._is_leader:
            return
        log.info("attempting to acquire leader lease %s", self.key)
        while True:
            started = self._clock.monotonic()
            if await self._attempt() is _Outcome.LEADING:
                self._renewed_at = started
                self.lost.clear()
                self._set_leader(True)
                log.info("successfully acquired lease %s as %s", self.key, self.identity)
                return
            delay = self.retry_period * (1 + JITTER * random.random())
            remaining = self._observation.remaining(self._clock.monotonic())
            if 0 < remaining < delay:
                delay = remaining
            await asyncio.sleep(delay)

    def keep_renewing(self) -> asyncio.Task[None]:
        """Start (or return) the owned renewal task. It ends only when the lease is lost, after setting
        `lost` and clearing `is_leader`; `release()` and `stop()` cancel it.
        """
        if self._renew_task is not None and not self._renew_task.done():
            return self._renew_task
        if not self._is_leader:
            raise RuntimeError(f"cannot renew lease {self.key}: not the leader (call acquire() first)")
        self._renew_task = asyncio.create_task(self._renew_loop(), name=f"leader-renew {self.key}")
        return self._renew_task

    async def stop(self) -> None:
        """Stop renewing without touching the Lease (it expires after its duration); we stop leading."""
        await self._stop_renewing()
        if self._is_leader:
            self._set_leader(False)
            log.info("stopped renewing lease %s without releasing it", self.key)

    async def release(self) -> bool:
        """Stop renewing and give the lease up if we still hold it; True when it was released.

        Bounded by the per-call timeout; failures are logged, never raised (the lease then simply expires).
        """
        await self._stop_renewing()
        lease = self._lease if self._is_leader else None
        self._set_leader(False)
        if lease is None:
            return False
        try:
            async with asyncio.timeout(self.call_timeout):
                return await self._write_release(lease)
        except (ApiError, TimeoutError) as exc:
            log.info("failed to release lease %s: %s", self.key, _describe(exc))
            return False

    async def run(self, on_started_leading: Callable[[], Awaitable[None]] | None = None) -> None:
        """Acquire, keep renewing, and run `on_started_leading` while leading.

        Returns when the callback returns (or, without one, never returns on its own); raises
        `LeaderElectionLost` after cancelling the callback if the lease is lost. However it ends, including
        by cancellation, renewal stops and, with `release_on_cancel`, the lease is released.
        """
        try:
            await self.acquire()
            waiters: set[asyncio.Task[None]] = {self.keep_renewing()}
            work: asyncio.Task[None] | None = None
            if on_started_leading is not None:
                work = asyncio.create_task(_call(on_started_leading), name=f"leading {self.key}")
                waiters.add(work)
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if work is not None and not work.done():
                    work.cancel()
                    await asyncio.wait({work})
            if self.lost.is_set():
                raise LeaderElectionLost(f"lost leader lease {self.key}")
            if work is not None:
                work.result()
        finally:
            if self.release_on_cancel:
                await self.release()
            else:
                await self.stop()

    async def _renew_loop(self) -> None:
        delay = self._renewed_at + self.retry_period - self._clock.monotonic()
        while True:
            await asyncio.sleep(max(0.0, delay))
            now = self._clock.monotonic()
            deadline = self._renewed_at + self.renew_deadline
            if now >= deadline:
                self._lose(f"not renewed for {self.renew_deadline:g} s")
                return
            try:
                async with asyncio.timeout(deadline - now):
                    outcome = await self._attempt()
            except TimeoutError:
                outcome = _Outcome.FAILED
            if outcome is _Outcome.HELD:
                self._lose(f"now held by {self.leader}")
                return
            if outcome is _Outcome.LEADING:
                self._renewed_at = now
                delay = self.retry_period
            else:
                delay = min(self.retry_period, deadline - self._clock.monotonic())

    async def _attempt(self) -> _Outcome:
        try:
            return await self._attempt_once()
        except (Conflict, TimeoutError) as exc:
            log.debug("lease %s not acquired this round: %s", self.key, _describe(exc))
        except ApiError as exc:
            log.info("error acquiring or renewing lease %s: %s", self.key, _describe(exc))
        except Exception:
            # A bug or a malformed answer counts as a failed attempt: the renew deadline still applies.
            log.exception("unexpected error acquiring or renewing lease %s", self.key)
        return _Outcome.FAILED

    async def _attempt_once(self) -> _Outcome:
        try:
            async with asyncio.timeout(self.call_timeout):
                lease = await self._client.get(LEASES, self.name, self.namespace)
        except NotFound:
            return await self._create()
        current = LeaderElectionRecord.from_lease(lease)
        self._observe(current)
        if self._observation.held_by_other(self.identity, self._clock.monotonic()):
            return _Outcome.HELD
        record = next_record(current, self.identity, self._duration_seconds, self._clock.now())
        async with asyncio.timeout(self.call_timeout):
            written = await self._client.replace(LEASES, _with_record(lease, record))
        self._accept(written)
        return _Outcome.LEADING

    async def _create(self) -> _Outcome:
        record = next_record(None, self.identity, self._duration_seconds, self._clock.now())
        body: Object = {
            "apiVersion": LEASES.api_version,
            "kind": LEASES.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.to_spec(),
        }
        try:
            async with asyncio.timeout(self.call_timeout):
                created = await self._client.create(LEASES, body, self.namespace)
        except AlreadyExists:
            log.debug("lease %s was created by another candidate first", self.key)
            return _Outcome.FAILED
        self._accept(created)
        return _Outcome.LEADING

    async def _write_release(self, lease: Object) -> bool:
        for _ in range(2):
            record = released_record(LeaderElectionRecord.from_lease(lease), self._clock.now())
            try:
                written = await self._client.replace(LEASES, _with_record(lease, record))
            except Conflict:
                lease = await self._client.get(LEASES, self.name, self.namespace)
                if LeaderElectionRecord.from_lease(lease).holder_identity != self.identity:
                    log.info("lease %s changed hands before release; nothing to release", self.key)
                    return False
                continue
            self._accept(written)
            log.info("released lease %s", self.key)
            return True
        log.info("lease %s kept changing during release; leaving it to expire", self.key)
        return False

    def _accept(self, lease: Object) -> None:
        self._lease = lease
        self._observe(LeaderElectionRecord.from_lease(lease))

    def _observe(self, record: LeaderElectionRecord) -> None:
        previous = self.leader
        self._observation.observe(record, self._clock.monotonic())
        holder = record.holder_identity
        if holder and holder != previous and holder != self.identity:
            log.info("lease %s is held by %s", self.key, holder)

    def _lose(self, why: str) -> None:
        log.info("lost lease %s: %s", self.key, why)
        self._set_leader(False)
        self.lost.set()

    def _set_leader(self, leading: bool) -> None:
        if leading == self._is_leader:
            return
        self._is_leader = leading
        if self._on_change is not None:
            try:
                self._on_change(leading)
            except Exception:
                log.exception("leader election on_change callback failed")

    async def _stop_renewing(self) -> None:
        task, self._renew_task = self._renew_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})


def _with_record(lease: Object, record: LeaderElectionRecord) -> Object:
    """A copy of `lease` (keeping its resourceVersion for the PUT) with the record's spec fields."""
    return {**lease, "spec": {**(lease.get("spec") or {}), **record.to_spec()}}


async def _call(callback: Callable[[], Awaitable[None]]) -> None:
    await callback()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
