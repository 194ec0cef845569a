"""The controller's handling of reconcile outcomes, concurrency, draining and log context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from manager.controller import Controller
from manager.errors import Conflict, Forbidden, TerminalError
from manager.handlers import EnqueueForObject, EnqueueForOwner, EnqueueMapped, GenerationChanged
from manager.logs import ContextFilter
from manager.metrics import Metrics
from manager.reconcile import Request, Result

NAME = "test-controller"


class Scripted:
    """A reconciler whose behaviour per call is scripted."""

    def __init__(self, behaviour: Callable[[Request, int], Result]) -> None:
        self.behaviour = behaviour
        self.calls: list[Request] = []
        self.running: set[Request] = set()
        self.max_parallel = 0
        self.overlap = False
        self.delay = 0.0

    async def reconcile(self, request: Request) -> Result:
        if request in self.running:
            self.overlap = True
        self.running.add(request)
        self.max_parallel = max(self.max_parallel, len(self.running))
        try:
            self.calls.append(request)
            if self.delay:
                await asyncio.sleep(self.delay)
            return self.behaviour(request, len(self.calls))
        finally:
            self.running.discard(request)


def make(reconciler: Scripted, workers: int = 1) -> tuple[Controller, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return Controller(NAME, reconciler, metrics=metrics, max_concurrent_reconciles=workers), metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, {"controller": NAME, **labels})
    assert v is not None, f"{name}{labels} missing"
    return v


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.001)


KEY = Request("ns", "a")


async def test_success_counts_and_forgets() -> None:
    r = Scripted(lambda req, n: Result())
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: value(m, "controller_runtime_reconcile_total", result="success") == 1)
    assert c.queue.num_requeues(KEY) == 0
    await c.stop()


async def test_requeue_after_runs_again_later() -> None:
    r = Scripted(lambda req, n: Result(requeue_after=0.05) if n == 1 else Result())
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: len(r.calls) == 2)
    assert value(m, "controller_runtime_reconcile_total", result="requeue_after") == 1
    assert value(m, "controller_runtime_reconcile_total", result="success") == 1
    await c.stop()


def _raise(exc: Exception) -> Result:
    raise exc


async def test_terminal_error_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    r = Scripted(lambda req, n: _raise(TerminalError("spec cannot work")))
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: value(m, "controller_runtime_terminal_reconcile_errors_total") == 1)
    await asyncio.sleep(0.1)
    assert len(r.calls) == 1
    assert value(m, "controller_runtime_reconcile_errors_total") == 1
    assert value(m, "controller_runtime_reconcile_total", result="error") == 1
    assert "spec cannot work" in caplog.text
    await c.stop()


async def test_conflict_is_retried_without_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    r = Scripted(lambda req, n: _raise(Conflict(409, "Conflict", "stale")) if n < 3 else Result())
    c, m = make(r)
    await c.start()
    with caplog.at_level(logging.DEBUG):
        c.queue.add(KEY)
        await until(lambda: value(m, "controller_runtime_reconcile_total", result="success") == 1)
    assert len(r.calls) == 3
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    await c.stop()


async def test_other_errors_back_off_and_reset_on_success(caplog: pytest.LogCaptureFixture) -> None:
    r = Scripted(lambda req, n: _raise(RuntimeError("boom")) if n < 4 else Result())
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: len(r.calls) == 3)
    assert c.queue.num_requeues(KEY) >= 2
    await until(lambda: value(m, "controller_runtime_reconcile_total", result="success") == 1)
    assert c.queue.num_requeues(KEY) == 0
    assert value(m, "controller_runtime_reconcile_errors_total") == 3
    assert "boom" in caplog.text
    assert any(rec.exc_info for rec in caplog.records if rec.levelno == logging.ERROR)
    await c.stop()


async def test_api_errors_are_one_log_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    forbidden = Forbidden(
        403, "Forbidden", "unable to create new content in namespace x: it is being terminated"
    )
    r = Scripted(lambda req, n: _raise(forbidden) if n == 1 else Result())
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: value(m, "controller_runtime_reconcile_total", result="success") == 1)
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "being terminated" in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert value(m, "controller_runtime_reconcile_errors_total") == 1
    assert value(m, "controller_runtime_reconcile_panics_total") == 0
    await c.stop()


async def test_workers_run_in_parallel_but_never_on_one_key() -> None:
    r = Scripted(lambda req, n: Result())
    r.delay = 0.05
    c, _ = make(r, workers=4)
    await c.start()
    for i in range(8):
        c.queue.add(Request("ns", f"k{i}"))
    for _ in range(5):
        c.queue.add(KEY)
        await asyncio.sleep(0.01)
    await until(lambda: len(c.queue) == 0 and not r.running, timeout=5)
    assert r.max_parallel == 4
    assert not r.overlap
    await c.stop()


async def test_stop_lets_in_flight_reconciles_finish() -> None:
    r = Scripted(lambda req, n: Result())
    r.delay = 0.2
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: bool(r.running))
    await c.stop(timeout=5)
    assert value(m, "controller_runtime_reconcile_total", result="success") == 1


async def test_stop_cancels_reconciles_past_the_grace_period() -> None:
    r = Scripted(lambda req, n: Result())
    r.delay = 30
    c, _ = make(r)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: bool(r.running))
    async with asyncio.timeout(5):
        await c.stop(timeout=0.1)
    assert not r.running


async def test_reconcile_timeout_is_counted_and_retried() -> None:
    r = Scripted(lambda req, n: Result())
    r.delay = 10
    metrics = Metrics(CollectorRegistry())
    c = Controller(NAME, r, metrics=metrics, reconcile_timeout=0.05)
    await c.start()
    c.queue.add(KEY)
    await until(lambda: value(metrics, "controller_runtime_reconcile_timeouts_total") >= 1)
    assert c.queue.num_requeues(KEY) >= 1
    await c.stop(timeout=0.1)


async def test_log_lines_carry_controller_key_and_reconcile_id(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, str]] = []

    def behaviour(req: Request, n: int) -> Result:
        logging.getLogger("reconciler").warning("inside")
        return Result()

    caplog.handler.addFilter(ContextFilter())
    r = Scripted(behaviour)
    c, m = make(r)
    await c.start()
    c.queue.add(KEY)
    c.queue.add(Request("ns", "b"))
    await until(lambda: value(m, "controller_runtime_reconcile_total", result="success") == 2)
    await c.stop()
    for rec in caplog.records:
        if rec.getMessage() == "inside":
            seen.append(rec.ctx)  # type: ignore[attr-defined]
    assert [(s["controller"], s["namespace"], s["name"]) for s in seen] == [
        (NAME, "ns", "a"),
        (NAME, "ns", "b"),
    ]
    assert len({s["reconcile_id"] for s in seen}) == 2


class Keys:
    def __init__(self) -> None:
        self.items: list[Request] = []

    def add(self, item: Request) -> None:
        self.items.append(item)


def obj(
    name: str, *, owners: list[dict[str, object]] | None = None, generation: int = 1
) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "namespace": "ns", "generation": generation}
    if owners:
        meta["ownerReferences"] = owners
    return {"metadata": meta}


def test_enqueue_for_owner_uses_the_controller_reference_of_the_right_kind() -> None:
    keys = Keys()
    h = EnqueueForOwner(keys, "serving.kserve.io", "InferenceService")
    h.on_add(
        obj("child", owners=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "controller": True}])
    )
    h.on_add(
        obj(
            "child",
            owners=[
                {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "not-ctl"},
                {
                    "apiVersion": "serving.kserve.io/v1beta1",
                    "kind": "InferenceService",
                    "name": "isvc",
                    "controller": True,
                },
            ],
        )
    )
    assert keys.items == [Request("ns", "isvc")]


def test_enqueue_mapped_and_generation_predicate() -> None:
    keys = Keys()
    EnqueueMapped(keys, lambda o: [Request("a", "1"), Request("b", "2")]).on_delete(obj("cm"))
    assert keys.items == [Request("a", "1"), Request("b", "2")]
    keys.items.clear()
    h = EnqueueForObject(keys, [GenerationChanged()])
    h.on_update(obj("x", generation=1), obj("x", generation=1))
    assert keys.items == []
    h.on_update(obj("x", generation=1), obj("x", generation=2))
    assert set(keys.items) == {Request("ns", "x")}
    same = obj("x")
    h.on_update(same, same)
    assert keys.items[-1] == Request("ns", "x")
