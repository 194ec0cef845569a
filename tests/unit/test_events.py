"""Unit tests of the event broadcaster against an in-memory Events API."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from manager.client import EVENTS, Object, PatchType, Resource
from manager.errors import Forbidden, NotFound, ServerUnavailable
from manager.events import COMBINED_PREFIX, TRUNCATION_INFIX, EventBroadcaster, truncate_message

CM: Object = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "cm", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
}


class FakeSink:
    """Stores Events like the API server would; `failures` are raised (in order) by the next calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Any]] = []
        self.events: dict[tuple[str | None, str], Object] = {}
        self.failures: list[BaseException] = []
        self.hang = False

    async def _enter(self, verb: str, namespace: str | None, body: Any) -> None:
        self.calls.append((verb, namespace, copy.deepcopy(body)))
        if self.hang:
            await asyncio.Event().wait()
        if self.failures:
            raise self.failures.pop(0)

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        assert resource == EVENTS
        await self._enter("create", namespace, obj)
        self.events[(namespace, obj["metadata"]["name"])] = copy.deepcopy(obj)
        return obj

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
    ) -> Object:
        assert resource == EVENTS
        assert patch_type is PatchType.MERGE
        await self._enter("patch", namespace, patch)
        if (namespace, name) not in self.events:
            raise NotFound(404, "NotFound", f'events "{name}" not found')
        self.events[(namespace, name)].update(patch)
        return self.events[(namespace, name)]

    def verbs(self) -> list[str]:
        return [verb for verb, _, _ in self.calls]

    def only_event(self) -> Object:
        assert len(self.events) == 1, self.events
        return next(iter(self.events.values()))

    def by_reason(self, reason: str) -> list[Object]:
        return [e for e in self.events.values() if e["reason"] == reason]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle(condition: Callable[[], bool]) -> None:
    """Let the poster run until `condition` holds (bounded number of loop turns, no wall-clock waits)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def cm(name: str = "cm", namespace: str = "ns") -> Object:
    obj = copy.deepcopy(CM)
    obj["metadata"].update(name=name, namespace=namespace, uid=f"uid-{name}")
    return obj


async def test_100_identical_events_in_a_burst_become_one_create_with_count_100() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "test-controller")
    await broadcaster.start()
    recorder = broadcaster.recorder()
    for _ in range(100):
        recorder.event(CM, "Normal", "Synced", "all good")
    await broadcaster.stop()
    assert sink.verbs() == ["create"]
    assert sink.only_event()["count"] == 100
    assert broadcaster.posted == 100


async def test_identical_events_interleaved_with_posting_end_as_one_event_and_writes_are_bounded() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "test-controller", burst=3)
    await broadcaster.start()
    recorder = broadcaster.recorder()
    for _ in range(100):
        recorder.event(CM, "Normal", "Synced", "all good")
        await asyncio.sleep(0)
    await broadcaster.stop()
    event = sink.only_event()
    assert event["count"] == 100
    assert sink.verbs()[0] == "create"
    assert set(sink.verbs()[1:]) <= {"patch"}
    assert len(sink.calls) <= 3 + 1  # the burst, plus one flush at stop
    assert broadcaster.posted == 100


async def test_event_object_has_the_client_go_shape() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "v1beta1Controllers", host="node-1")
    await broadcaster.start()
    broadcaster.recorder().event(CM, "Warning", "Failed", "boom")
    await broadcaster.stop()
    verb, namespace, event = sink.calls[0]
    assert (verb, namespace) == ("create", "ns")
    assert re.fullmatch(r"cm\.[0-9a-f]{16}", event["metadata"]["name"])
    assert event["metadata"]["namespace"] == "ns"
    assert event["involvedObject"] == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "name": "cm",
        "namespace": "ns",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (event["type"], event["reason"], event["message"], event["count"]) == (
        "Warning",
        "Failed",
        "boom",
        1,
    )
    assert event["source"] == {"component": "v1beta1Controllers", "host": "node-1"}
    assert event["reportingComponent"] == "v1beta1Controllers"
    assert event["reportingInstance"] == "node-1"
    for field in ("firstTimestamp", "lastTimestamp"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event[field])
    assert "eventTime" not in event


async def test_without_host_reporting_instance_is_the_component() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    broadcaster.recorder().event(CM, "Normal", "R", "m")
    await broadcaster.stop()
    event = sink.only_event()
    assert event["source"] == {"component": "comp"}
    assert event["reportingInstance"] == "comp"


async def test_names_that_are_not_dns_subdomains_are_sanitised() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:controller:Foo"},
    }
    broadcaster.recorder().event(role, "Normal", "R", "m")
    broadcaster.recorder().event(cm("x" * 253), "Normal", "R", "m")
    await broadcaster.stop()
    names = sorted(e["metadata"]["name"] for e in sink.events.values())
    assert re.fullmatch(r"system-controller-foo\.[0-9a-f]{16}", names[0])
    assert re.fullmatch(r"x{236}\.[0-9a-f]{16}", names[1])


async def test_distinct_reasons_and_objects_get_distinct_events() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "Created", "m")
    recorder.event(CM, "Normal", "Updated", "m")
    recorder.event(CM, "Warning", "Updated", "m")
    recorder.event(cm("other"), "Normal", "Created", "m")
    await broadcaster.stop()
    assert len(sink.events) == 4
    assert sorted((e["involvedObject"]["name"], e["type"], e["reason"]) for e in sink.events.values()) == [
        ("cm", "Normal", "Created"),
        ("cm", "Normal", "Updated"),
        ("cm", "Warning", "Updated"),
        ("other", "Normal", "Created"),
    ]
    assert all(e["count"] == 1 for e in sink.events.values())
    assert len({e["metadata"]["name"] for e in sink.events.values()}) == 4


async def test_similar_events_beyond_the_threshold_are_combined() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    for i in range(15):
        recorder.event(CM, "Warning", "BackOff", f"attempt {i} failed")
    recorder.event(CM, "Warning", "BackOff", "attempt 3 failed")  # already has its own Event
    await broadcaster.stop()
    events = sink.by_reason("BackOff")
    assert len(events) == 10
    combined = [e for e in events if e["message"].startswith(COMBINED_PREFIX)]
    assert len(combined) == 1
    assert combined[0]["count"] == 6
    assert combined[0]["message"] == COMBINED_PREFIX + "attempt 14 failed"
    individual = {e["message"]: e["count"] for e in events if e not in combined}
    assert individual == {f"attempt {i} failed": 2 if i == 3 else 1 for i in range(9)}


async def test_identical_event_within_the_window_patches_and_after_it_creates() -> None:
    clock = Clock()
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp", clock=clock, aggregation_window=600)
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "Synced", "ok")
    await settle(lambda: broadcaster.posted == 1)
    clock.now += 300
    recorder.event(CM, "Normal", "Synced", "ok")
    await settle(lambda: broadcaster.posted == 2)
    assert sink.verbs() == ["create", "patch"]
    assert set(sink.calls[1][2]) == {"count", "lastTimestamp", "message"}
    assert sink.only_event()["count"] == 2
    clock.now += 601
    recorder.event(CM, "Normal", "Synced", "ok")
    await broadcaster.stop()
    assert sink.verbs() == ["create", "patch", "create"]
    assert sorted(e["count"] for e in sink.events.values()) == [1, 2]


async def test_patch_of_an_expired_event_creates_a_new_one_with_the_running_count() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "Synced", "ok")
    await settle(lambda: broadcaster.posted == 1)
    sink.events.clear()  # the API server's TTL removed it
    recorder.event(CM, "Normal", "Synced", "ok")
    await broadcaster.stop()
    assert sink.verbs() == ["create", "patch", "create"]
    assert sink.only_event()["count"] == 2
    assert broadcaster.failed == 0


async def test_long_messages_are_truncated_with_a_visible_infix() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp", max_message=100)
    message = "head-" + "x" * 5000 + "-tail"
    broadcaster.recorder().event(CM, "Warning", "Failed", message)
    await broadcaster.stop()
    posted = sink.only_event()["message"]
    assert len(posted) == 100
    assert TRUNCATION_INFIX in posted
    assert posted.startswith("head-")
    assert posted.endswith("-tail")


def test_truncate_message_keeps_short_messages_and_hits_the_limit_exactly() -> None:
    assert truncate_message("short", 32) == "short"
    assert truncate_message("a" * 32, 32) == "a" * 32
    for size in (33, 34, 1000):
        for limit in (32, 33, 100):
            if size > limit:
                assert len(truncate_message("b" * size, limit)) == limit


async def test_full_queue_drops_and_counts_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp", queue_size=3)
    recorder = broadcaster.recorder()
    with caplog.at_level(logging.WARNING, logger="manager.events"):
        for i in range(10):
            recorder.event(CM, "Normal", f"Reason{i}", "m")
        recorder.event(CM, "Normal", "Reason0", "m")  # coalesced into a pending one, not dropped
    assert broadcaster.dropped == 7
    assert broadcaster.pending == 3
    assert len([r for r in caplog.records if "full" in r.getMessage()]) == 1
    await broadcaster.start()
    await broadcaster.stop()
    assert sorted(e["reason"] for e in sink.events.values()) == ["Reason0", "Reason1", "Reason2"]
    assert sink.by_reason("Reason0")[0]["count"] == 2


async def test_events_about_events_are_skipped() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    for api_version in ("v1", "events.k8s.io/v1", ""):
        recorder.event(
            {"apiVersion": api_version, "kind": "Event", "metadata": {"name": "e", "namespace": "ns"}},
            "Normal",
            "R",
            "m",
        )
    recorder.event(
        {"apiVersion": "example.com/v1", "kind": "Event", "metadata": {"name": "e"}}, "Normal", "R", "m"
    )
    await broadcaster.stop()
    assert broadcaster.skipped == 3
    assert [e["involvedObject"]["apiVersion"] for e in sink.events.values()] == ["example.com/v1"]


async def test_cluster_scoped_objects_get_events_in_the_default_namespace() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    node = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "uid": "u"}}
    broadcaster.recorder().event(node, "Normal", "R", "m")
    await broadcaster.stop()
    verb, namespace, event = sink.calls[0]
    assert (verb, namespace) == ("create", "default")
    assert event["metadata"]["namespace"] == "default"
    assert "namespace" not in event["involvedObject"]


async def test_invalid_type_is_recorded_as_warning(caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    with caplog.at_level(logging.WARNING, logger="manager.events"):
        broadcaster.recorder().event(CM, "Oops", "R", "m")
    await broadcaster.stop()
    assert sink.only_event()["type"] == "Warning"
    assert "'Oops'" in caplog.text


async def test_unusable_objects_are_skipped_without_raising() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    bad: list[Any] = [
        None,
        {},
        {"kind": "ConfigMap"},
        {"kind": "ConfigMap", "metadata": "x"},
        {"metadata": {"name": "n"}},
    ]
    for obj in bad:
        recorder.event(obj, "Normal", "R", "m")
    await broadcaster.stop()
    assert broadcaster.skipped == len(bad)
    assert sink.calls == []


async def test_forbidden_is_swallowed_not_retried_and_later_events_still_post(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink = FakeSink()
    sink.failures.append(Forbidden(403, "Forbidden", 'events is forbidden: User "alice" cannot create'))
    broadcaster = EventBroadcaster(sink, "comp", clock=clock, forbidden_backoff=60)
    recorder = broadcaster.recorder()
    await broadcaster.start()
    with caplog.at_level(logging.WARNING, logger="manager.events"):
        recorder.event(CM, "Normal", "First", "m")
        await settle(lambda: broadcaster.failed == 1)
        for i in range(20):
            recorder.event(CM, "Normal", f"During{i}", "m")
            await asyncio.sleep(0)
        recorder.event(cm(namespace="elsewhere"), "Normal", "Elsewhere", "m")
        await settle(lambda: broadcaster.failed == 21 and broadcaster.posted == 1)
    assert sink.verbs() == ["create", "create"]  # no call for the 20 refused ones
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "cannot write Events in namespace ns (403 Forbidden: events is forbidden: "
        'User "alice" cannot create); events there are discarded for 60s'
    ]
    clock.now += 61
    recorder.event(CM, "Normal", "Later", "m")
    await broadcaster.stop()
    assert {e["reason"] for e in sink.events.values()} == {"Elsewhere", "Later"}


async def test_a_sink_bug_does_not_kill_the_poster() -> None:
    sink = FakeSink()
    sink.failures.append(RuntimeError("bug"))
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "A", "m")
    await settle(lambda: broadcaster.failed == 1)
    recorder.event(CM, "Normal", "B", "m")
    await broadcaster.stop()
    assert [e["reason"] for e in sink.events.values()] == ["B"]


async def test_transient_failure_is_retried_and_merged_with_newer_identical_events() -> None:
    sink = FakeSink()
    sink.failures.append(ServerUnavailable(503, "ServiceUnavailable", "etcd is down"))
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "Synced", "ok")
    await settle(lambda: len(sink.calls) == 1 and broadcaster.pending == 1)
    recorder.event(CM, "Normal", "Synced", "ok")
    assert broadcaster.pending == 1
    await broadcaster.stop()
    assert sink.verbs() == ["create", "create"]
    assert sink.only_event()["count"] == 2
    assert (broadcaster.posted, broadcaster.failed) == (2, 0)


async def test_rate_limited_events_wait_and_stop_flushes_them() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp", burst=2)
    recorder = broadcaster.recorder()
    await broadcaster.start()
    for i in range(5):
        recorder.event(CM, "Normal", f"R{i}", "m")
    recorder.event(cm("other"), "Normal", "R", "m")  # another object has its own bucket
    await settle(lambda: broadcaster.posted == 3)
    for _ in range(50):
        await asyncio.sleep(0)
    assert broadcaster.posted == 3
    assert broadcaster.pending == 3
    await broadcaster.stop()
    assert broadcaster.posted == 6
    assert len(sink.events) == 6


async def test_stop_gives_up_after_its_timeout_and_counts_what_was_lost() -> None:
    sink = FakeSink()
    sink.hang = True
    broadcaster = EventBroadcaster(sink, "comp")
    recorder = broadcaster.recorder()
    await broadcaster.start()
    recorder.event(CM, "Normal", "A", "m")
    recorder.event(CM, "Normal", "B", "m")
    await settle(lambda: len(sink.calls) == 1)
    await asyncio.wait_for(broadcaster.stop(timeout=0.05), 10)
    assert broadcaster.dropped == 2
    assert broadcaster.pending == 0


async def test_stop_is_idempotent_and_the_broadcaster_cannot_restart() -> None:
    sink = FakeSink()
    broadcaster = EventBroadcaster(sink, "comp")
    await broadcaster.start()
    await broadcaster.start()
    await broadcaster.stop()
    await broadcaster.stop()
    broadcaster.recorder().event(CM, "Normal", "Late", "m")
    assert broadcaster.dropped == 1
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        await broadcaster.start()


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"component": ""}, "component"),
        ({"queue_size": 0}, "queue_size"),
        ({"max_message": 10}, "max_message"),
        ({"burst": 0}, "burst"),
        ({"qps": 0}, "qps"),
        ({"similar_threshold": 1}, "similar_threshold"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs: dict[str, Any], problem: str) -> None:
    args: dict[str, Any] = {"component": "comp", **kwargs}
    with pytest.raises(ValueError, match=f"^EventBroadcaster: {problem} must"):
        EventBroadcaster(FakeSink(), **args)
