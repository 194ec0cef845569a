"""Tests for manager.workqueue: de-duplication, per-key exclusivity, delays, backoff, shutdown, metrics."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from manager.metrics import Metrics
from manager.workqueue import ItemExponentialBackoff, QueueShutDown, WorkQueue


class FakeClock:
    """A manually advanced clock; ``get`` promotes due delayed keys itself, so no real waiting is needed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FixedDelay:
    """A rate limiter that always asks for the same delay and counts calls."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: dict[str, int] = {}

    def when(self, item: str) -> float:
        self.calls[item] = self.calls.get(item, 0) + 1
        return self.delay

    def forget(self, item: str) -> None:
        self.calls.pop(item, None)

    def num_requeues(self, item: str) -> int:
        return self.calls.get(item, 0)


async def settle(rounds: int = 5) -> None:
    """Let every runnable task run until it blocks."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def drain_ready(queue: WorkQueue[str]) -> list[str]:
    """Take and finish every ready key, in order."""
    taken = []
    while len(queue):
        item = await queue.get()
        queue.done(item)
        taken.append(item)
    return taken


# ------------------------------------------------------------------------------------ adding


async def test_add_deduplicates_queued_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "b", "c"):
        queue.add(key)
    assert len(queue) == 3
    assert await drain_ready(queue) == ["a", "b", "c"]


async def test_key_readded_while_processing_waits_for_done_then_runs_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0

    second_worker = asyncio.create_task(queue.get())
    await settle()
    assert not second_worker.done()

    queue.done("a")
    assert await asyncio.wait_for(second_worker, timeout=1.0) == "a"
    assert len(queue) == 0  # the two re-adds produced one run

    third_worker = asyncio.create_task(queue.get())
    await settle()
    assert not third_worker.done()
    queue.done("a")
    await settle()
    assert not third_worker.done()  # nothing was re-added during the second run
    third_worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third_worker


async def test_other_keys_are_served_while_one_is_in_flight() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "b"
    queue.done("a")
    assert await queue.get() == "a"


async def test_done_of_unknown_key_is_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.done("never-taken")
    queue.add("a")
    assert await queue.get() == "a"


async def test_getter_waits_for_an_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await settle()
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, timeout=1.0) == "a"


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await settle()
    queue.add("a")  # wakes `first`
    first.cancel()  # ... which is cancelled before it can take the key
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, timeout=1.0) == "a"


# ----------------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_5ms_and_caps_at_1000s() -> None:
    backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    assert [backoff.when("a") for _ in range(5)] == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert backoff.num_requeues("a") == 5
    assert backoff.when("b") == 0.005  # per key
    delays = [backoff.when("a") for _ in range(3000)]  # far past the cap, and past float overflow
    assert max(delays) == 1000.0
    assert delays[-1] == 1000.0
    assert 0.005 * 2**17 < 1000.0 < 0.005 * 2**18
    assert delays[12] == 0.005 * 2**17  # 18th call overall
    assert delays[13] == 1000.0


def test_forget_resets_backoff() -> None:
    backoff: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    for _ in range(4):
        backoff.when("a")
    backoff.forget("a")
    assert backoff.num_requeues("a") == 0
    assert backoff.when("a") == 0.005
    backoff.forget("unknown")  # harmless


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="base_delay must be positive"):
        ItemExponentialBackoff(base_delay=0)
    with pytest.raises(ValueError, match="max_delay must be at least base_delay"):
        ItemExponentialBackoff(base_delay=1.0, max_delay=0.5)


async def test_add_rate_limited_uses_backoff_and_forget_resets_it() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_rate_limited("a")
    queue.add_rate_limited("b")
    queue.add_rate_limited("b")
    assert queue.num_requeues("a") == 1
    assert queue.num_requeues("b") == 2
    assert len(queue) == 0

    clock.advance(0.005)  # a is due (5 ms); b's earliest deadline is also 5 ms
    assert await drain_ready(queue) == ["a", "b"]

    queue.add_rate_limited("b")  # third failure: 20 ms
    clock.advance(0.019)
    assert len(queue) == 0
    clock.advance(0.001)
    assert await drain_ready(queue) == ["b"]

    queue.forget("b")
    assert queue.num_requeues("b") == 0


async def test_rate_limiter_is_injectable() -> None:
    clock = FakeClock()
    limiter = FixedDelay(7.0)
    queue: WorkQueue[str] = WorkQueue(rate_limiter=limiter, clock=clock)
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 1
    clock.advance(6.9)
    assert len(queue) == 0
    clock.advance(0.1)
    assert await drain_ready(queue) == ["a"]
    queue.forget("a")
    assert limiter.calls == {}


# ------------------------------------------------------------------------------------ delays


async def test_delayed_keys_become_ready_in_deadline_order() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 3.0)
    queue.add_after("b", 1.0)
    queue.add_after("c", 2.0)
    assert len(queue) == 0
    clock.advance(5.0)
    assert await drain_ready(queue) == ["b", "c", "a"]


async def test_delayed_key_is_not_ready_early() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 2.0)
    clock.advance(1.999)
    assert len(queue) == 0
    clock.advance(0.001)
    assert await drain_ready(queue) == ["a"]


@pytest.mark.parametrize("delays", [(5.0, 1.0), (1.0, 5.0)])
async def test_earliest_deadline_wins(delays: tuple[float, float]) -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for delay in delays:
        queue.add_after("a", delay)
    clock.advance(1.0)
    assert await drain_ready(queue) == ["a"]
    clock.advance(10.0)  # the later deadline must not bring the key back
    assert len(queue) == 0


async def test_immediate_add_overrides_a_delay() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 100.0)
    queue.add("a")
    assert len(queue) == 1
    assert await drain_ready(queue) == ["a"]
    clock.advance(200.0)  # the cancelled delay must not bring the key back
    assert len(queue) == 0


async def test_delayed_add_of_a_ready_key_is_ignored() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("a")
    queue.add_after("a", 1.0)
    assert await drain_ready(queue) == ["a"]
    clock.advance(2.0)
    assert len(queue) == 0


async def test_delayed_add_of_a_processing_key_runs_after_done() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("a")
    assert await queue.get() == "a"
    queue.add_after("a", 1.0)
    clock.advance(1.0)
    assert len(queue) == 0  # "a" is due, but held while in flight
    queue.done("a")
    assert len(queue) == 1
    assert await queue.get() == "a"


@pytest.mark.parametrize("delay", [0.0, -1.0, float("nan")])
async def test_non_positive_delay_adds_now(delay: float) -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", delay)
    assert len(queue) == 1


async def test_timer_wakes_a_blocked_getter() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await settle()
    queue.add_after("later", 0.05)
    queue.add_after("sooner", 0.01)
    assert await asyncio.wait_for(getter, timeout=1.0) == "sooner"
    assert await asyncio.wait_for(queue.get(), timeout=1.0) == "later"
    await queue.shutdown(drain=False)


def test_add_after_outside_a_running_loop_is_armed_by_get() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.01)

    async def take() -> str:
        return await asyncio.wait_for(queue.get(), timeout=1.0)

    assert asyncio.run(take()) == "a"


async def test_many_superseded_deadlines_keep_order() -> None:
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for step in range(500, 0, -1):  # each call lowers the deadline, leaving a stale heap entry
        queue.add_after("a", float(step))
        queue.add_after("b", float(step) + 0.5)
    clock.advance(1.0)
    assert await drain_ready(queue) == ["a"]
    clock.advance(0.5)
    assert await drain_ready(queue) == ["b"]
    clock.advance(1000.0)
    assert len(queue) == 0


# ---------------------------------------------------------------------------------- shutdown


async def test_shutdown_wakes_all_getters() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await settle()
    await asyncio.wait_for(queue.shutdown(), timeout=1.0)
    results = await asyncio.wait_for(asyncio.gather(*getters, return_exceptions=True), timeout=1.0)
    assert all(isinstance(result, QueueShutDown) for result in results)
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_drain_waits_for_in_flight_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.add("queued")
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    getter = asyncio.create_task(queue.get())
    await settle()
    assert getter.done()  # "queued" was handed out before shutdown
    queue.done(getter.result())

    waiting_getter = asyncio.create_task(queue.get())
    shutdown = asyncio.create_task(queue.shutdown(drain=True))
    await settle()
    assert not shutdown.done()
    assert not waiting_getter.done()
    queue.done("a")
    await settle()
    assert not shutdown.done()
    queue.done("b")
    await asyncio.wait_for(shutdown, timeout=1.0)
    with pytest.raises(QueueShutDown):
        await waiting_getter


async def test_drain_drops_ready_keys_and_does_not_requeue_dirty_ones() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")  # dirty while in flight
    queue.add("b")  # ready
    shutdown = asyncio.create_task(queue.shutdown(drain=True))
    await settle()
    assert len(queue) == 0
    queue.done("a")
    await asyncio.wait_for(shutdown, timeout=1.0)
    assert len(queue) == 0
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_drain_is_bounded_by_timeout() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("stuck")
    assert await queue.get() == "stuck"
    await asyncio.wait_for(queue.shutdown(drain=True, timeout=0.02), timeout=1.0)
    with pytest.raises(QueueShutDown):
        await queue.get()
    queue.done("stuck")  # a late done is harmless


async def test_shutdown_without_drain_returns_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await queue.get() == "a"
    await queue.shutdown(drain=False)
    assert queue.shutting_down
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_adds_after_shutdown_are_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue()
    await queue.shutdown()
    queue.add("a")
    queue.add_after("b", 0.01)
    queue.add_rate_limited("c")
    assert len(queue) == 0
    assert queue.num_requeues("c") == 0
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_drops_delayed_keys_and_cancels_the_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await settle()
    queue.add_after("a", 0.02)
    timer = queue._timer
    assert timer is not None
    await queue.shutdown()
    assert timer.cancelled()
    with pytest.raises(QueueShutDown):
        await getter
    await asyncio.sleep(0.05)
    assert len(queue) == 0


async def test_shutdown_twice_is_harmless() -> None:
    queue: WorkQueue[str] = WorkQueue()
    await queue.shutdown()
    await queue.shutdown(drain=False)
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_shutdown_rejects_a_negative_timeout() -> None:
    queue: WorkQueue[str] = WorkQueue()
    with pytest.raises(ValueError, match="timeout must be a non-negative"):
        await queue.shutdown(timeout=-1.0)


# ----------------------------------------------------------------------------------- metrics


def sample(registry: CollectorRegistry, name: str, queue: str = "q", **labels: str) -> float | None:
    return registry.get_sample_value(name, {"name": queue, "controller": queue, **labels})


async def test_metrics_follow_a_known_sequence() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(metrics=Metrics(registry).workqueue("q"), clock=clock)

    queue.add("a")
    queue.add("a")  # de-duplicated: not counted
    queue.add("b")
    assert sample(registry, "workqueue_adds_total") == 2
    assert sample(registry, "workqueue_depth") == 2

    clock.advance(0.5)
    assert await queue.get() == "a"  # waited 0.5 s
    assert sample(registry, "workqueue_depth") == 1
    clock.advance(2.0)
    assert await queue.get() == "b"  # waited 2.5 s
    clock.advance(1.0)
    # in flight: a for 3.0 s, b for 1.0 s
    assert sample(registry, "workqueue_unfinished_work_seconds") == 4.0
    assert sample(registry, "workqueue_longest_running_processor_seconds") == 3.0

    queue.done("a")  # worked 3.0 s
    queue.add_rate_limited("a")
    queue.add_rate_limited("a")
    assert sample(registry, "workqueue_retries_total") == 2
    assert sample(registry, "workqueue_adds_total") == 2  # still delayed

    assert sample(registry, "workqueue_queue_duration_seconds_count") == 2
    assert sample(registry, "workqueue_queue_duration_seconds_sum") == 3.0
    assert sample(registry, "workqueue_queue_duration_seconds_bucket", le="0.1") == 0
    assert sample(registry, "workqueue_queue_duration_seconds_bucket", le="1.0") == 1
    assert sample(registry, "workqueue_queue_duration_seconds_bucket", le="10.0") == 2
    assert sample(registry, "workqueue_work_duration_seconds_count") == 1
    assert sample(registry, "workqueue_work_duration_seconds_sum") == 3.0
    assert sample(registry, "workqueue_unfinished_work_seconds") == 1.0

    clock.advance(0.005)
    queue.done("b")
    assert await queue.get() == "a"
    assert sample(registry, "workqueue_adds_total") == 3
    assert sample(registry, "workqueue_unfinished_work_seconds") == 0.0
    queue.done("a")
    assert sample(registry, "workqueue_longest_running_processor_seconds") == 0.0
    assert sample(registry, "workqueue_work_duration_seconds_count") == 3


async def test_metrics_depth_resets_on_shutdown() -> None:
    registry = CollectorRegistry()
    queue: WorkQueue[str] = WorkQueue(metrics=Metrics(registry).workqueue("q"))
    queue.add("a")
    queue.add("b")
    await queue.shutdown()
    assert sample(registry, "workqueue_depth") == 0


async def test_metrics_count_readds_of_in_flight_keys_once() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    queue: WorkQueue[str] = WorkQueue(metrics=Metrics(registry).workqueue("q"), clock=clock)
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert sample(registry, "workqueue_adds_total") == 2
    assert sample(registry, "workqueue_depth") == 0
    clock.advance(4.0)
    queue.done("a")
    assert sample(registry, "workqueue_depth") == 1
    assert await queue.get() == "a"
    assert sample(registry, "workqueue_queue_duration_seconds_sum") == 4.0  # from the re-add to the get


# ------------------------------------------------------------------------------ model check

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 3)),
        st.tuples(st.just("get"), st.just(0)),
        st.tuples(st.just("done"), st.integers(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_matches_a_reference_model(ops: list[tuple[str, int]]) -> None:
    """Random add/get/done sequences behave like the dirty/processing model of client-go."""

    async def run() -> None:
        queue: WorkQueue[int] = WorkQueue()
        ready: list[int] = []
        dirty: set[int] = set()
        processing: set[int] = set()
        for op, key in ops:
            if op == "add":
                queue.add(key)
                if key not in dirty:
                    dirty.add(key)
                    if key not in processing:
                        ready.append(key)
            elif op == "get" and ready:
                expected = ready.pop(0)
                assert await queue.get() == expected
                assert expected not in processing
                processing.add(expected)
                dirty.discard(expected)
            elif op == "done":
                queue.done(key)
                if key in processing:
                    processing.discard(key)
                    if key in dirty:
                        ready.append(key)
            assert len(queue) == len(ready)

    asyncio.run(run())
