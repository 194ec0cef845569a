"""Tests for manager.metrics: names, labels, buckets, pre-set zeros, facades and exposition."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from manager.metrics import (
    DEFAULT_METRICS,
    RECONCILE_TIME_BUCKETS,
    Metrics,
    ReconcileResult,
)

parse_text: Callable[[str], Iterable[Metric]] = text_string_to_metric_families
parse_openmetrics: Callable[[str], Iterable[Metric]] = openmetrics_families

CONTROLLER_SERIES = (
    "controller_runtime_reconcile_errors_total",
    "controller_runtime_terminal_reconcile_errors_total",
    "controller_runtime_reconcile_panics_total",
    "controller_runtime_reconcile_timeouts_total",
    "controller_runtime_active_workers",
    "controller_runtime_reconcile_time_seconds_count",
    "controller_runtime_reconcile_time_seconds_sum",
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def ctrl(registry: CollectorRegistry, name: str, controller: str = "isvc", **labels: str) -> float | None:
    return registry.get_sample_value(name, {"controller": controller, **labels})


def wq(registry: CollectorRegistry, name: str, queue: str = "isvc", **labels: str) -> float | None:
    return registry.get_sample_value(name, {"name": queue, "controller": queue, **labels})


# ------------------------------------------------------------------------------ controllers


def test_init_controller_presets_every_series_to_zero(metrics: Metrics, registry: CollectorRegistry) -> None:
    assert ctrl(registry, "controller_runtime_reconcile_total", result="success") is None
    metrics.init_controller("isvc", max_concurrent=3)
    for result in ("success", "error", "requeue", "requeue_after"):
        assert ctrl(registry, "controller_runtime_reconcile_total", result=result) == 0
    for name in CONTROLLER_SERIES:
        assert ctrl(registry, name) == 0, name
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_bucket", le="+Inf") == 0
    assert ctrl(registry, "controller_runtime_max_concurrent_reconciles") == 3


def test_init_controller_keeps_existing_counts(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.init_controller("isvc", max_concurrent=1).reconciled(ReconcileResult.SUCCESS, 0.1)
    metrics.init_controller("isvc", max_concurrent=2)
    assert ctrl(registry, "controller_runtime_reconcile_total", result="success") == 1
    assert ctrl(registry, "controller_runtime_max_concurrent_reconciles") == 2


def test_init_controller_rejects_zero_workers(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="max_concurrent must be at least 1"):
        metrics.init_controller("isvc", max_concurrent=0)


def test_controller_facade_counts(metrics: Metrics, registry: CollectorRegistry) -> None:
    c = metrics.controller("isvc")
    c.reconciled(ReconcileResult.SUCCESS, 0.2)
    c.reconciled(ReconcileResult.REQUEUE_AFTER, 0.3)
    c.reconciled(ReconcileResult.ERROR, 2.0)
    c.reconciled(ReconcileResult.ERROR, 70.0)
    c.error()
    c.error(terminal=True)
    c.panic()
    c.timeout()
    c.worker_started()
    c.worker_started()
    c.worker_finished()

    assert ctrl(registry, "controller_runtime_reconcile_total", result="success") == 1
    assert ctrl(registry, "controller_runtime_reconcile_total", result="requeue_after") == 1
    assert ctrl(registry, "controller_runtime_reconcile_total", result="error") == 2
    assert ctrl(registry, "controller_runtime_reconcile_total", result="requeue") == 0
    assert ctrl(registry, "controller_runtime_reconcile_errors_total") == 2
    assert ctrl(registry, "controller_runtime_terminal_reconcile_errors_total") == 1
    assert ctrl(registry, "controller_runtime_reconcile_panics_total") == 1
    assert ctrl(registry, "controller_runtime_reconcile_timeouts_total") == 1
    assert ctrl(registry, "controller_runtime_active_workers") == 1
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_count") == 4
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_sum") == pytest.approx(72.5)
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_bucket", le="0.15") == 0
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_bucket", le="0.2") == 1
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_bucket", le="60.0") == 3
    assert ctrl(registry, "controller_runtime_reconcile_time_seconds_bucket", le="+Inf") == 4
    assert ctrl(registry, "controller_runtime_reconcile_total", controller="other", result="success") is None


def test_reconcile_time_has_controller_runtime_buckets(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.init_controller("isvc", max_concurrent=1)
    family = next(f for f in registry.collect() if f.name == "controller_runtime_reconcile_time_seconds")
    bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
    assert bounds == [*RECONCILE_TIME_BUCKETS, float("inf")]
    assert RECONCILE_TIME_BUCKETS[0] == 0.005
    assert RECONCILE_TIME_BUCKETS[-1] == 60.0
    assert len(RECONCILE_TIME_BUCKETS) == 40


def test_facades_are_cached(metrics: Metrics) -> None:
    assert metrics.controller("a") is metrics.controller("a")
    assert metrics.workqueue("a") is metrics.workqueue("a")
    assert metrics.leader_election("a") is metrics.leader_election("a")


# -------------------------------------------------------------------------------- workqueue


def test_workqueue_series_exist_at_zero(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.workqueue("isvc")
    for name in (
        "workqueue_depth",
        "workqueue_adds_total",
        "workqueue_retries_total",
        "workqueue_queue_duration_seconds_count",
        "workqueue_work_duration_seconds_count",
        "workqueue_unfinished_work_seconds",
        "workqueue_longest_running_processor_seconds",
    ):
        assert wq(registry, name) == 0, name


def test_workqueue_facade_values(metrics: Metrics, registry: CollectorRegistry) -> None:
    q = metrics.workqueue("isvc")
    q.add()
    q.add()
    q.retry()
    q.set_depth(7)
    q.get(5e-9)
    q.get(1e-8)  # on the bound: counted in le="1e-08"
    q.get(0.3)
    q.done(2000.0)  # above the last bound: only in +Inf

    assert wq(registry, "workqueue_adds_total") == 2
    assert wq(registry, "workqueue_retries_total") == 1
    assert wq(registry, "workqueue_depth") == 7
    assert wq(registry, "workqueue_queue_duration_seconds_bucket", le="1e-08") == 2
    assert wq(registry, "workqueue_queue_duration_seconds_bucket", le="0.1") == 2
    assert wq(registry, "workqueue_queue_duration_seconds_bucket", le="1.0") == 3
    assert wq(registry, "workqueue_queue_duration_seconds_count") == 3
    assert wq(registry, "workqueue_queue_duration_seconds_sum") == pytest.approx(0.3 + 1.5e-8)
    assert wq(registry, "workqueue_work_duration_seconds_bucket", le="1000.0") == 0
    assert wq(registry, "workqueue_work_duration_seconds_bucket", le="+Inf") == 1
    assert wq(registry, "workqueue_work_duration_seconds_sum") == 2000.0


def test_workqueue_buckets_are_exponential_from_10ns(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.workqueue("isvc")
    for family_name in ("workqueue_queue_duration_seconds", "workqueue_work_duration_seconds"):
        family = next(f for f in registry.collect() if f.name == family_name)
        bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        assert bounds == [10.0**exp for exp in range(-8, 4)] + [float("inf")]


def test_in_flight_gauges_come_from_the_source(metrics: Metrics, registry: CollectorRegistry) -> None:
    q = metrics.workqueue("isvc")
    ages = [1.5, 4.0, 0.5]
    q.track_in_flight(lambda: ages)
    assert wq(registry, "workqueue_unfinished_work_seconds") == 6.0
    assert wq(registry, "workqueue_longest_running_processor_seconds") == 4.0
    ages.clear()
    assert wq(registry, "workqueue_unfinished_work_seconds") == 0.0
    q.track_in_flight(lambda: [9.0])
    assert wq(registry, "workqueue_longest_running_processor_seconds") == 9.0
    q.track_in_flight(None)
    assert wq(registry, "workqueue_longest_running_processor_seconds") == 0.0


def test_queues_are_labelled_separately(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.workqueue("a").add()
    metrics.workqueue("b").set_depth(2)
    assert wq(registry, "workqueue_adds_total", queue="a") == 1
    assert wq(registry, "workqueue_adds_total", queue="b") == 0
    assert wq(registry, "workqueue_depth", queue="b") == 2


# ---------------------------------------------------------------------- client, leader, misc


def test_rest_client_request(metrics: Metrics, registry: CollectorRegistry) -> None:
    rest = metrics.rest_client
    rest.request(method="patch", host="10.0.0.1:6443", code=200, seconds=0.02)
    rest.request(method="PATCH", host="10.0.0.1:6443", code=200, seconds=0.03)
    rest.request(method="GET", host="10.0.0.1:6443", code="<error>", seconds=10.0)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"host": "10.0.0.1:6443", **labels})

    assert value("rest_client_requests_total", code="200", method="PATCH") == 2
    assert value("rest_client_requests_total", code="<error>", method="GET") == 1
    assert value("rest_client_request_duration_seconds_count", verb="PATCH") == 2
    assert value("rest_client_request_duration_seconds_bucket", verb="GET", le="8.0") == 0
    assert value("rest_client_request_duration_seconds_bucket", verb="GET", le="15.0") == 1


def test_leader_election_status(metrics: Metrics, registry: CollectorRegistry) -> None:
    lease = metrics.leader_election("kserve-controller-manager")
    labels = {"name": "kserve-controller-manager"}
    lease.set_leading(True)
    assert registry.get_sample_value("leader_election_master_status", labels) == 1
    lease.set_leading(False)
    assert registry.get_sample_value("leader_election_master_status", labels) == 0


def test_registries_are_isolated() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first).workqueue("q").add()
    Metrics(second).workqueue("q")
    assert wq(first, "workqueue_adds_total", queue="q") == 1
    assert wq(second, "workqueue_adds_total", queue="q") == 0


def test_default_metrics_have_runtime_collectors_on_a_private_registry() -> None:
    assert DEFAULT_METRICS.registry is not prometheus_client.REGISTRY
    default = DEFAULT_METRICS.registry
    assert default.get_sample_value("process_resident_memory_bytes", {}) is not None
    assert default.get_sample_value("python_gc_collections_total", {"generation": "0"}) is not None
    names = {family.name for family in default.collect()}
    assert "python_info" in names
    assert Metrics(CollectorRegistry()).registry.get_sample_value("process_resident_memory_bytes", {}) is None


def populate(metrics: Metrics) -> None:
    metrics.init_controller("isvc", max_concurrent=2).reconciled(ReconcileResult.REQUEUE, 0.01)
    queue = metrics.workqueue("isvc")
    queue.add()
    queue.get(0.001)
    queue.track_in_flight(lambda: [0.25])
    metrics.rest_client.request(method="GET", host="h", code=200, seconds=0.1)
    metrics.leader_election("lease").set_leading(True)


EXPECTED_FAMILIES = {
    "controller_runtime_reconcile": "counter",
    "controller_runtime_reconcile_errors": "counter",
    "controller_runtime_terminal_reconcile_errors": "counter",
    "controller_runtime_reconcile_panics": "counter",
    "controller_runtime_reconcile_time_seconds": "histogram",
    "controller_runtime_max_concurrent_reconciles": "gauge",
    "controller_runtime_active_workers": "gauge",
    "controller_runtime_reconcile_timeouts": "counter",
    "workqueue_depth": "gauge",
    "workqueue_adds": "counter",
    "workqueue_queue_duration_seconds": "histogram",
    "workqueue_work_duration_seconds": "histogram",
    "workqueue_unfinished_work_seconds": "gauge",
    "workqueue_longest_running_processor_seconds": "gauge",
    "workqueue_retries": "counter",
    "rest_client_requests": "counter",
    "rest_client_request_duration_seconds": "histogram",
    "leader_election_master_status": "gauge",
}


def test_render_parses_as_prometheus_text(metrics: Metrics) -> None:
    populate(metrics)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in parse_text(body.decode())}
    assert {name: families[name].type for name in EXPECTED_FAMILIES} == EXPECTED_FAMILIES
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples}
    isvc = {("controller", "isvc")}
    assert (
        samples[("workqueue_longest_running_processor_seconds", frozenset({*isvc, ("name", "isvc")}))] == 0.25
    )
    assert samples[("controller_runtime_reconcile_total", frozenset({*isvc, ("result", "requeue")}))] == 1


def test_render_negotiates_openmetrics(metrics: Metrics) -> None:
    populate(metrics)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    names = {family.name for family in parse_openmetrics(body.decode())}
    assert set(EXPECTED_FAMILIES) <= names
