"""Leader election logic against an in-memory Lease store: the expiry rule on our own clock, the records
written for acquire/renew/release, optimistic concurrency, and the renew deadline."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from manager.client import LEASES, Object, Resource
from manager.errors import AlreadyExists, Conflict, NotFound, ServerUnavailable
from manager.leaderelection import (
    LeaderElectionLost,
    LeaderElectionRecord,
    LeaderElector,
    Observation,
    default_identity,
    format_micro_time,
    next_record,
    parse_micro_time,
    released_record,
)

T0 = datetime(2026, 11, 21, 9, 0, 0, 123456, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t - 1000.0)


class FakeStore:
    """Leases keyed by namespace/name with resourceVersion checks; can fail or hang on demand."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Object] = {}
        self.rv = 0
        self.fail = False
        self.hang = False
        self.broken = False
        self.writes = 0

    async def _enter(self) -> None:
        await asyncio.sleep(0)
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise ServerUnavailable(0, "Unreachable", "connection refused")
        if self.broken:
            raise RuntimeError("malformed answer")

    def _stamp(self, obj: Object) -> Object:
        self.rv += 1
        self.writes += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(stored["metadata"]["namespace"], stored["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        await self._enter()
        assert resource == LEASES
        try:
            return copy.deepcopy(self.objects[(namespace or "", name)])
        except KeyError:
            raise NotFound(404, "NotFound", f"leases {name} not found") from None

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        await self._enter()
        if (namespace or "", obj["metadata"]["name"]) in self.objects:
            raise AlreadyExists(409, "AlreadyExists", "already exists")
        return self._stamp({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})

    async def replace(self, resource: Resource, obj: Object, *, subresource: str | None = None) -> Object:
        await self._enter()
        meta = obj["metadata"]
        current = self.objects[(meta["namespace"], meta["name"])]
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified")
        return self._stamp(obj)

    def spec(self) -> dict[str, object]:
        return dict(self.objects[("ns", "lock")]["spec"])

    def set_holder(self, holder: str) -> None:
        obj = self.objects[("ns", "lock")]
        self._stamp({**obj, "spec": {**obj["spec"], "holderIdentity": holder}})


def elector(
    store: FakeStore,
    identity: str,
    clock: FakeClock | None = None,
    *,
    changes: list[bool] | None = None,
    release_on_cancel: bool = True,
) -> LeaderElector:
    """Short durations: lease 1 s, renew deadline 0.3 s (call timeout 0.15 s), retry 0.05 s."""
    return LeaderElector(
        store,
        name="lock",
        namespace="ns",
        identity=identity,
        lease_duration=1,
        renew_deadline=0.3,
        retry_period=0.05,
        release_on_cancel=release_on_cancel,
        on_change=changes.append if changes is not None else None,
        clock=clock,
    )


# --- time format -------------------------------------------------------------------------------------


def test_micro_time_is_utc_with_microseconds_and_z() -> None:
    assert format_micro_time(T0) == "2026-11-21T09:00:00.123456Z"
    plus_two = datetime(2026, 11, 21, 11, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_micro_time(plus_two) == "2026-11-21T09:00:00.000005Z"


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_micro_time(datetime(2026, 11, 21, 9, 0, 0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T09:00:00.123456Z", T0),
        ("2026-11-21T10:00:00.123456+01:00", T0),
        ("2026-11-21T09:00:00Z", T0.replace(microsecond=0)),
        ("2026-11-21T09:00:00.123456", T0),
        ("yesterday", None),
        ("", None),
        (None, None),
        (17, None),
    ],
)
def test_micro_time_parsing(text: object, expected: datetime | None) -> None:
    assert parse_micro_time(text) == expected


# --- records -----------------------------------------------------------------------------------------


def test_record_round_trips_through_a_lease_spec() -> None:
    record = LeaderElectionRecord("a", 15, T0, T0 + timedelta(seconds=2), 3)
    spec = record.to_spec()
    assert spec == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-21T09:00:00.123456Z",
        "renewTime": "2026-11-21T09:00:02.123456Z",
        "leaseTransitions": 3,
    }
    assert LeaderElectionRecord.from_lease({"spec": spec}) == record


def test_record_from_an_empty_or_malformed_lease_is_free() -> None:
    malformed = {"spec": {"leaseDurationSeconds": "15", "leaseTransitions": True}}
    record = LeaderElectionRecord.from_lease(malformed)
    assert record == LeaderElectionRecord("", 0, None, None, 0)
    assert LeaderElectionRecord.from_lease({}) == record


def test_next_record_for_a_new_lease_a_renewal_and_a_takeover() -> None:
    created = next_record(None, "a", 15, T0)
    assert created == LeaderElectionRecord("a", 15, T0, T0, 0)
    later = T0 + timedelta(seconds=2)
    assert next_record(created, "a", 15, later) == LeaderElectionRecord("a", 15, T0, later, 0)
    assert next_record(created, "b", 15, later) == LeaderElectionRecord("b", 15, later, later, 1)


def test_release_clears_the_holder_and_a_released_lease_counts_a_transition_when_taken() -> None:
    held = LeaderElectionRecord("a", 15, T0, T0, 4)
    later = T0 + timedelta(seconds=5)
    released = released_record(held, later)
    assert released == LeaderElectionRecord("", 1, later, later, 4)
    assert next_record(released, "b", 15, later).lease_transitions == 5


# --- expiry on our own clock -------------------------------------------------------------------------


def test_a_held_lease_expires_lease_duration_after_we_first_saw_it_unchanged() -> None:
    seen = Observation()
    ancient = LeaderElectionRecord("a", 15, T0, T0 - timedelta(days=1), 0)
    assert seen.observe(ancient, 100.0)
    assert seen.held_by_other("b", 100.0)
    assert not seen.observe(ancient, 110.0)
    assert seen.held_by_other("b", 114.9)
    assert seen.remaining(110.0) == pytest.approx(5.0)
    assert not seen.held_by_other("b", 115.0)
    assert not seen.held_by_other("a", 100.0)


def test_a_renewal_restarts_the_expiry_countdown() -> None:
    seen = Observation()
    seen.observe(LeaderElectionRecord("a", 15, T0, T0, 0), 100.0)
    renewed = LeaderElectionRecord("a", 15, T0, T0 + timedelta(seconds=2), 0)
    assert seen.observe(renewed, 114.0)
    assert seen.held_by_other("b", 128.0)
    assert not seen.held_by_other("b", 129.0)


def test_a_released_lease_is_free_at_once() -> None:
    seen = Observation()
    seen.observe(LeaderElectionRecord("", 1, T0, T0, 2), 100.0)
    assert not seen.held_by_other("b", 100.0)
    assert seen.remaining(100.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "must be greater than renew deadline"),
        ({"renew_deadline": 2, "retry_period": 2}, "must be greater than retry period"),
        ({"retry_period": 0}, "retry period must be positive"),
        ({"lease_duration": 0.5, "renew_deadline": 0.2, "retry_period": 0.1}, "at least 1 s"),
        ({"identity": ""}, "non-empty identity"),
        ({"name": ""}, "lease name and namespace"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"name": "lock", "namespace": "ns", "identity": "a", **kwargs}
    with pytest.raises(ValueError, match=message):
        LeaderElector(FakeStore(), **args)  # type: ignore[arg-type]


def test_default_identities_are_unique() -> None:
    assert default_identity() != default_identity()


# --- the elector against the in-memory store ---------------------------------------------------------


async def test_first_candidate_creates_the_lease() -> None:
    store, clock, changes = FakeStore(), FakeClock(), list[bool]()
    a = elector(store, "a", clock, changes=changes)
    await a.acquire()
    assert a.is_leader
    assert a.leader == "a"
    assert changes == [True]
    assert store.spec() == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 1,
        "acquireTime": "2026-11-21T09:00:00.123456Z",
        "renewTime": "2026-11-21T09:00:00.123456Z",
        "leaseTransitions": 0,
    }


async def test_a_held_lease_is_taken_only_after_it_stayed_unchanged_for_its_duration_on_our_clock() -> None:
    store, clock = FakeStore(), FakeClock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await a.try_acquire_or_renew()
    clock.t += 3600  # a's renewTime is an hour old, but b has not watched it for a lease duration yet
    assert not await b.try_acquire_or_renew()
    assert b.leader == "a"
    clock.t += 0.9
    assert not await b.try_acquire_or_renew()
    clock.t += 0.1
    assert await b.try_acquire_or_renew()
    spec = store.spec()
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == format_micro_time(clock.now())


async def test_renewals_keep_the_lease_from_expiring_for_others() -> None:
    store, clock = FakeStore(), FakeClock()
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert await a.try_acquire_or_renew()
    for _ in range(5):
        assert not await b.try_acquire_or_renew()
        clock.t += 0.6
        assert await a.try_acquire_or_renew()
    spec = store.spec()
    assert spec["holderIdentity"] == "a"
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == "2026-11-21T09:00:00.123456Z"
    assert spec["renewTime"] == format_micro_time(clock.now())


async def test_racing_candidates_for_a_missing_lease_yield_one_winner() -> None:
    store = FakeStore()
    candidates = [elector(store, name) for name in "abc"]
    won = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
    assert won.count(True) == 1
    assert store.spec()["holderIdentity"] == "abc"[won.index(True)]


async def test_racing_candidates_for_a_released_lease_yield_one_winner() -> None:
    store = FakeStore()
    first = elector(store, "first")
    await first.acquire()
    assert await first.release()
    candidates = [elector(store, name) for name in "abc"]
    won = await asyncio.gather(*(c.try_acquire_or_renew() for c in candidates))
    assert won.count(True) == 1
    assert store.spec()["leaseTransitions"] == 1


async def test_release_frees_the_lease_for_an_immediate_takeover() -> None:
    store, clock, changes = FakeStore(), FakeClock(), list[bool]()
    a, b = elector(store, "a", clock, changes=changes), elector(store, "b", clock)
    await a.acquire()
    a.keep_renewing()
    assert not await b.try_acquire_or_renew()
    assert await a.release()
    assert not a.is_leader
    assert changes == [True, False]
    spec = store.spec()
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert await b.try_acquire_or_renew()  # no waiting: the clock has not moved
    assert store.spec()["leaseTransitions"] == 1


async def test_release_does_nothing_unless_we_lead() -> None:
    store = FakeStore()
    a, b = elector(store, "a"), elector(store, "b")
    await a.acquire()
    assert not await b.release()
    assert store.spec()["holderIdentity"] == "a"


async def test_release_leaves_a_lease_that_changed_hands_alone() -> None:
    store = FakeStore()
    a = elector(store, "a")
    await a.acquire()
    store.set_holder("b")
    assert not await a.release()
    assert store.spec()["holderIdentity"] == "b"


async def test_release_retries_once_when_our_own_lease_moved_on() -> None:
    store = FakeStore()
    a = elector(store, "a")
    await a.acquire()
    store.set_holder("a")  # e.g. a renewal whose answer we never saw
    assert await a.release()
    assert store.spec()["holderIdentity"] == ""


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_release_never_raises_and_is_bounded(mode: str) -> None:
    store, changes = FakeStore(), list[bool]()
    a = elector(store, "a", changes=changes)
    await a.acquire()
    setattr(store, mode, True)
    assert not await asyncio.wait_for(a.release(), timeout=2)
    assert not a.is_leader
    assert changes == [True, False]


async def test_acquire_retries_through_api_errors() -> None:
    store = FakeStore()
    store.fail = True
    a = elector(store, "a")
    acquiring = asyncio.create_task(a.acquire())
    await asyncio.sleep(0.15)
    assert not acquiring.done()
    store.fail = False
    await asyncio.wait_for(acquiring, timeout=2)
    assert a.is_leader


@pytest.mark.parametrize("mode", ["fail", "hang", "broken"])
async def test_lease_is_reported_lost_when_renewals_fail_for_the_renew_deadline(mode: str) -> None:
    store, changes = FakeStore(), list[bool]()
    a = elector(store, "a", changes=changes)
    await a.acquire()
    renewing = a.keep_renewing()
    async with asyncio.timeout(2):
        while store.writes < 3:  # two renewals went through
            await asyncio.sleep(0.01)
    assert not renewing.done()
    setattr(store, mode, True)
    await asyncio.wait_for(a.lost.wait(), timeout=2)
    await asyncio.wait_for(renewing, timeout=1)
    assert not a.is_leader
    assert changes == [True, False]


async def test_lease_is_reported_lost_at_once_when_someone_else_holds_it() -> None:
    store = FakeStore()
    a = elector(store, "a")
    await a.acquire()
    renewing = a.keep_renewing()
    store.set_holder("b")
    await asyncio.wait_for(renewing, timeout=0.2)
    assert a.lost.is_set()
    assert not a.is_leader


async def test_keep_renewing_needs_the_lease() -> None:
    with pytest.raises(RuntimeError, match="call acquire"):
        elector(FakeStore(), "a").keep_renewing()


async def test_run_calls_back_while_leading_and_releases_when_the_callback_returns() -> None:
    store = FakeStore()
    a = elector(store, "a")
    seen: list[bool] = []

    async def lead() -> None:
        seen.append(a.is_leader)

    await a.run(lead)
    assert seen == [True]
    assert store.spec()["holderIdentity"] == ""


async def test_run_cancels_the_callback_and_raises_when_the_lease_is_lost() -> None:
    store = FakeStore()
    a = elector(store, "a")
    cancelled = asyncio.Event()

    async def lead() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    running = asyncio.create_task(a.run(lead))
    await asyncio.sleep(0.1)
    store.fail = True
    with pytest.raises(LeaderElectionLost, match="ns/lock"):
        await asyncio.wait_for(running, timeout=2)
    assert cancelled.is_set()


@pytest.mark.parametrize(("release_on_cancel", "holder"), [(True, ""), (False, "a")])
async def test_cancelling_run_releases_only_with_release_on_cancel(
    release_on_cancel: bool, holder: str
) -> None:
    store = FakeStore()
    a = elector(store, "a", release_on_cancel=release_on_cancel)
    running = asyncio.create_task(a.run())
    await asyncio.sleep(0.1)
    assert a.is_leader
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not a.is_leader
    assert store.spec()["holderIdentity"] == holder
