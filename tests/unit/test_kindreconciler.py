"""The kind-reconciler skeleton, on a toy kind over the shared fake cluster.

The toy `Widget` copies `spec.size` into `status.size` and is Ready; `spec.problem` makes it raise a user
problem with a condition, `spec.note` one without, `spec.broken` an API failure. Each row is one reconcile.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from manager.client import Object, Resource
from manager.errors import Conflict, ServerUnavailable
from manager.kindreconciler import Kind, KindReconciler, UserProblem, semantic_status
from manager.reconcile import Request, Result
from manager.retry import retry_on_conflict
from tests.support.fakecluster import NOW, FakeCluster, TableRow, run_row

WIDGETS = Resource("example.com", "v1", "widgets", "Widget")
FINALIZER = "widgets.example.com/finalizer"
KEY = "ns/w"
W = f"widgets.example.com {KEY}"
UNAVAILABLE = ServerUnavailable(503, "ServiceUnavailable", "etcd is unhappy")


class Widgets(Kind[Object]):
    def __init__(self) -> None:
        self.finalized: list[str] = []
        self.forgotten: list[Request] = []
        self.transitions: list[tuple[Any, Any]] = []

    def parse(self, obj: Object) -> Object:
        if not isinstance(obj.get("spec"), dict):
            raise UserProblem("InvalidSpec", "spec must be an object")
        return obj

    def object_of(self, obj: Object) -> Object:
        return obj

    def status_of(self, obj: Object) -> Object:
        return copy.deepcopy(obj.get("status") or {})

    async def reconcile_kind(self, obj: Object) -> Result | None:
        spec = obj["spec"]
        if spec.get("broken"):
            raise UNAVAILABLE
        obj["status"] = {"size": spec.get("size"), "conditions": [{"type": "Ready", "status": "True"}]}
        if spec.get("problem"):
            raise UserProblem("TooBig", f"size {spec.get('size')} is too big", condition="Ready")
        if spec.get("note"):
            raise UserProblem("Odd", str(spec["note"]), requeue_after=10.0)
        return None

    async def finalize_kind(self, obj: Object) -> None:
        self.finalized.append(obj["metadata"]["name"])

    async def observe_deletion(self, request: Request) -> None:
        self.forgotten.append(request)

    def mark_problem(self, obj: Object, condition: str, problem: UserProblem) -> None:
        marked = {"type": condition, "status": "False", "reason": problem.reason, "message": problem.message}
        obj["status"]["conditions"] = [marked]

    def status_updated(self, obj: Object, previous: Object, current: Object) -> None:
        self.transitions.append((previous.get("size"), current.get("size")))


def widget(*, finalizers: bool = True, status: Object | None = None, **spec: Any) -> Object:
    meta: Object = {"name": "w", "namespace": "ns"}
    if finalizers:
        meta["finalizers"] = [FINALIZER]
    obj: Object = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def deleting(obj: Object, finalizers: list[str] | None = None) -> Object:
    meta = {**obj["metadata"], "deletionTimestamp": NOW}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    return {**obj, "metadata": meta}


def ready(size: int) -> Object:
    return {"size": size, "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": NOW}]}


def setup(*, internal_error_events: bool = True) -> tuple[FakeCluster, Widgets, KindReconciler[Object]]:
    cluster = FakeCluster()
    cluster.watch(WIDGETS)
    kind = Widgets()
    reconciler = KindReconciler(
        kind,
        resource=WIDGETS,
        client=cluster.client,
        cache=cluster.cache,
        recorder=cluster.recorder,
        finalizer=FINALIZER,
        internal_error_events=internal_error_events,
    )
    return cluster, kind, reconciler


TOO_BIG = {"type": "Ready", "status": "False", "reason": "TooBig", "message": "size 9 is too big"}

ROWS = [
    TableRow(
        "a new object gets the finalizer (guarded by its resourceVersion), then its status",
        KEY,
        objects=[(WIDGETS, widget(finalizers=False, size=1))],
        want_writes=[f"patch {W}", f"update-status {W}"],
        want_status={"size": 1, "conditions": {"Ready": ("True",)}},
    ),
    TableRow("an unchanged status is not written", KEY, objects=[(WIDGETS, widget(size=1, status=ready(1)))]),
    TableRow(
        "a changed status is written",
        KEY,
        objects=[(WIDGETS, widget(size=2, status=ready(1)))],
        want_writes=[f"update-status {W}"],
        want_status={"size": 2},
    ),
    TableRow(
        "a conflict re-reads the object and writes again at once",
        KEY,
        objects=[(WIDGETS, widget(size=2, status=ready(1)))],
        failures=[("update-status", WIDGETS, Conflict(409, "Conflict", "modified"))],
        want_writes=[f"update-status {W}", f"update-status {W}"],
        want_status={"size": 2},
    ),
    TableRow(
        "a status that keeps conflicting is retried by the queue",
        KEY,
        objects=[(WIDGETS, widget(size=2, status=ready(1)))],
        failures=[("update-status", WIDGETS, Conflict(409, "Conflict", "modified"))] * 5,
        want_writes=[f"update-status {W}"] * 5,
        want_events=['Warning UpdateFailed Failed to update status for Widget "w": 409 Conflict: modified'],
        want_error=Conflict,
    ),
    TableRow(
        "a failed status write is UpdateFailed",
        KEY,
        objects=[(WIDGETS, widget(size=2, status=ready(1)))],
        failures=[("update-status", WIDGETS, UNAVAILABLE)],
        want_writes=[f"update-status {W}"],
        want_events=[f'Warning UpdateFailed Failed to update status for Widget "w": {UNAVAILABLE}'],
        want_error=ServerUnavailable,
    ),
    TableRow(
        "a failed reconcile is InternalError, and what status it set is still written",
        KEY,
        objects=[(WIDGETS, widget(broken=True, status=ready(1)))],
        want_events=[f"Warning InternalError {UNAVAILABLE}"],
        want_error=ServerUnavailable,
    ),
    TableRow(
        "a user problem is its condition and one Warning event, not an error",
        KEY,
        objects=[(WIDGETS, widget(size=9, problem=True, status=ready(1)))],
        want_writes=[f"update-status {W}"],
        want_status={"conditions": {"Ready": ("False", "TooBig", "size 9 is too big")}},
        want_events=["Warning TooBig size 9 is too big"],
    ),
    TableRow(
        "a user problem the status already shows is not announced again",
        KEY,
        objects=[(WIDGETS, widget(size=9, problem=True, status={"size": 9, "conditions": [TOO_BIG]}))],
    ),
    TableRow(
        "a user problem without a condition is an event, and a later look",
        KEY,
        objects=[(WIDGETS, widget(size=1, note="hm", status=ready(1)))],
        want_events=["Warning Odd hm"],
        want_result=Result(requeue_after=10.0),
    ),
    TableRow(
        "an unreadable object is one event and nothing else",
        KEY,
        objects=[(WIDGETS, {**widget(), "spec": "nonsense"})],
        want_events=["Warning InvalidSpec spec must be an object"],
    ),
    TableRow(
        "a deleted object is finalized, then its finalizer goes",
        KEY,
        objects=[(WIDGETS, deleting(widget()))],
        want_writes=[f"patch {W}"],
    ),
    TableRow(
        "a deleted object without our finalizer is left alone",
        KEY,
        objects=[(WIDGETS, deleting(widget(finalizers=False), ["someone.else/finalizer"]))],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_kind_reconciler(row: TableRow) -> None:
    cluster, _, reconciler = setup()
    await run_row(row, cluster, reconciler, resource=WIDGETS)


async def test_finalize_kind_runs_before_the_finalizer_is_removed_and_gone_objects_are_observed() -> None:
    cluster, kind, reconciler = setup()
    cluster.add(WIDGETS, deleting(widget()))
    await reconciler.reconcile(Request("ns", "w"))
    assert kind.finalized == ["w"]
    assert cluster.object(WIDGETS, "w", "ns") is None
    cluster.sync()
    await reconciler.reconcile(Request("ns", "w"))
    assert kind.forgotten == [Request("ns", "w")]


async def test_the_status_write_follows_the_finalizer_patch_without_a_conflict() -> None:
    cluster, kind, reconciler = setup()
    cluster.add(WIDGETS, widget(finalizers=False, size=3))
    await reconciler.reconcile(Request("ns", "w"))
    assert cluster.writes() == [f"patch {W}", f"update-status {W}"]
    assert cluster.reads == [], "the status write used the version the finalizer patch returned"
    assert kind.transitions == [(None, 3)]


async def test_failures_are_announced_once_per_run_of_failed_attempts() -> None:
    cluster, _, reconciler = setup()
    cluster.add(WIDGETS, widget(broken=True, status=ready(1)))
    for _ in range(9):
        with pytest.raises(ServerUnavailable):
            await reconciler.reconcile(Request("ns", "w"))
    cluster.add(WIDGETS, widget(size=2, status=ready(1)))
    cluster.fail("update-status", WIDGETS, UNAVAILABLE, times=9)
    for _ in range(9):
        with pytest.raises(ServerUnavailable):
            await reconciler.reconcile(Request("ns", "w"))
    assert cluster.recorder.messages() == [
        f"Warning InternalError {UNAVAILABLE}",
        f'Warning UpdateFailed Failed to update status for Widget "w": {UNAVAILABLE}',
    ]
    await reconciler.reconcile(Request("ns", "w"))
    cluster.add(WIDGETS, widget(broken=True, status=ready(2)))
    with pytest.raises(ServerUnavailable):
        await reconciler.reconcile(Request("ns", "w"))
    assert cluster.recorder.messages()[-1] == f"Warning InternalError {UNAVAILABLE}", "a new run is announced"


async def test_internal_error_events_are_for_kinds_that_ask_for_them() -> None:
    cluster, _, reconciler = setup(internal_error_events=False)
    cluster.add(WIDGETS, widget(broken=True))
    with pytest.raises(ServerUnavailable):
        await reconciler.reconcile(Request("ns", "w"))
    assert cluster.recorder.messages() == []


async def test_a_problem_without_a_condition_is_announced_once_per_message() -> None:
    cluster, _, reconciler = setup()
    cluster.add(WIDGETS, widget(note="one", status=ready(1)))
    for _ in range(3):
        await reconciler.reconcile(Request("ns", "w"))
    cluster.add(WIDGETS, widget(note="two", status=ready(1)))
    await reconciler.reconcile(Request("ns", "w"))
    cluster.add(WIDGETS, widget(size=1, status=ready(1)))
    await reconciler.reconcile(Request("ns", "w"))
    cluster.add(WIDGETS, widget(note="two", status=ready(1)))
    await reconciler.reconcile(Request("ns", "w"))
    assert cluster.recorder.messages() == ["Warning Odd one", "Warning Odd two", "Warning Odd two"]


def test_semantic_status_ignores_transition_times_and_condition_order() -> None:
    one = {"a": 1, "conditions": [{"type": "B", "status": "True"}, {"type": "A", "lastTransitionTime": "t1"}]}
    two = {"a": 1, "conditions": [{"type": "A", "lastTransitionTime": "t2"}, {"type": "B", "status": "True"}]}
    assert semantic_status(one) == semantic_status(two)
    assert semantic_status(one) != semantic_status({**two, "a": 2})
    assert semantic_status({"a": 1}) == {"a": 1}


async def test_retry_on_conflict_re_reads_and_gives_up_after_the_last_attempt() -> None:
    attempts: list[int] = []

    async def conflicting(n: int) -> str:
        attempts.append(n)
        if n < 2:
            raise Conflict(409, "Conflict", "modified")
        return "written"

    assert await retry_on_conflict(conflicting) == "written"
    assert attempts == [0, 1, 2]

    async def always(n: int) -> str:
        raise Conflict(409, "Conflict", f"attempt {n}")

    with pytest.raises(Conflict, match="attempt 4"):
        await retry_on_conflict(always)


async def test_a_problem_is_announced_once_when_a_reconcile_runs_on_a_stale_cache() -> None:
    cluster, _, reconciler = setup()
    cluster.add(WIDGETS, widget(problem=True, size=9, status=ready(1)))
    await reconciler.reconcile(Request("ns", "w"))
    # The cache has not seen the status write yet: the second reconcile computes the same problem from the
    # old status, its write conflicts, and the re-read shows the condition already there.
    await reconciler.reconcile(Request("ns", "w"))
    assert cluster.writes() == [f"update-status {W}"] * 2, "the second write was refused with a conflict"
    assert cluster.recorder.messages() == ["Warning TooBig size 9 is too big"]
    cluster.sync()
    await reconciler.reconcile(Request("ns", "w"))
    assert cluster.recorder.messages() == ["Warning TooBig size 9 is too big"]
