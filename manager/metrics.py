"""Prometheus metrics of the manager, with controller-runtime's and client-go's names and labels.

Why the names are copied exactly: dashboards and alerts written for Go operators (and for KServe's own
controller) query ``controller_runtime_*``, ``workqueue_*``, ``rest_client_*`` and
``leader_election_master_status``; keeping the names and label sets lets them work unchanged.

Why a ``Metrics`` object instead of module-level metrics: every metric lives on a registry passed in at
construction, so each test builds its own registry and reads values with ``get_sample_value`` without
seeing another test's counts. ``DEFAULT_METRICS`` is the instance the manager's ``/metrics`` endpoint
serves; it is built on its own registry (never prometheus_client's global ``REGISTRY``) that also carries
the process, platform and GC collectors.

Why facades: callers get ``metrics.controller(name)``, ``metrics.workqueue(name)``,
``metrics.rest_client`` and ``metrics.leader_election(name)`` objects whose methods say what happened
("a reconcile finished with this result"), so label names and values are spelled in one place only.

Why the work-queue series are collected at scrape time: the queue's hot path updates them once or twice
per item, and prometheus_client's metric objects take a lock per update (a histogram observation costs
about 0.7 µs, more than the queue's own add, get and done together). ``WorkQueueMetrics`` therefore
keeps plain counters and bucket arrays, and one collector turns them into the ``workqueue_*`` families
when Prometheus scrapes.
The same collector computes ``workqueue_unfinished_work_seconds`` and
``workqueue_longest_running_processor_seconds`` from the start times of the items each queue is
processing (client-go refreshes them from a goroutine every 500 ms), so no background task is needed and
they are never stale.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from enum import StrEnum
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

__all__ = [
    "DEFAULT_METRICS",
    "RECONCILE_TIME_BUCKETS",
    "REST_CLIENT_DURATION_BUCKETS",
    "WORKQUEUE_DURATION_BUCKETS",
    "ControllerMetrics",
    "InFlightSource",
    "LeaderElectionMetrics",
    "Metrics",
    "ReconcileResult",
    "RestClientMetrics",
    "WorkQueueMetrics",
]

# controller-runtime's reconcile_time_seconds buckets (5 ms .. 60 s).
RECONCILE_TIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0, 25.0, 30.0,
    40.0, 50.0, 60.0,
)  # fmt: skip

# Work-queue durations: exponential buckets from 10 ns, factor 10, 12 buckets (up to 1000 s).
WORKQUEUE_DURATION_BUCKETS: tuple[float, ...] = tuple(float(f"1e{exp}") for exp in range(-8, 4))

# client-go's rest-client request latency buckets.
REST_CLIENT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
)  # fmt: skip

_WORKQUEUE_LABELS = ("name", "controller")

InFlightSource = Callable[[], Iterable[float]]
"""Returns the age in seconds of every item a queue is currently processing."""


class ReconcileResult(StrEnum):
    """Values of the ``result`` label of ``controller_runtime_reconcile_total``."""

    SUCCESS = "success"
    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"


class ControllerMetrics:
    """The ``controller_runtime_*`` series of one controller."""

    def __init__(self, metrics: Metrics, controller: str) -> None:
        self._results = {
            result: metrics._reconcile_total.labels(controller=controller, result=result.value)
            for result in ReconcileResult
        }
        self._errors = metrics._reconcile_errors.labels(controller=controller)
        self._terminal_errors = metrics._terminal_errors.labels(controller=controller)
        self._panics = metrics._reconcile_panics.labels(controller=controller)
        self._time = metrics._reconcile_time.labels(controller=controller)
        self._max_concurrent = metrics._max_concurrent.labels(controller=controller)
        self._active_workers = metrics._active_workers.labels(controller=controller)
        self._timeouts = metrics._reconcile_timeouts.labels(controller=controller)

    def reconciled(self, result: ReconcileResult, seconds: float) -> None:
        """Count one finished reconcile under ``result`` and observe how long it took."""
        self._results[result].inc()
        self._time.observe(seconds)

    def error(self, *, terminal: bool = False) -> None:
        """Count a reconcile error; a terminal one is also counted as terminal (it is not retried)."""
        self._errors.inc()
        if terminal:
            self._terminal_errors.inc()

    def panic(self) -> None:
        """Count an unexpected exception escaping the reconciler (controller-runtime's "panic")."""
        self._panics.inc()

    def timeout(self) -> None:
        """Count a reconcile cut short by the per-reconcile timeout."""
        self._timeouts.inc()

    def set_max_concurrent(self, n: int) -> None:
        """Record the controller's worker limit (``controller_runtime_max_concurrent_reconciles``)."""
        self._max_concurrent.set(n)

    def worker_started(self) -> None:
        """A worker began a reconcile (raises ``controller_runtime_active_workers``)."""
        self._active_workers.inc()

    def worker_finished(self) -> None:
        """A worker finished a reconcile (lowers ``controller_runtime_active_workers``)."""
        self._active_workers.dec()


class WorkQueueMetrics:
    """The ``workqueue_*`` series of one queue; ``name`` and ``controller`` labels are both the queue name.

    The values are plain attributes updated without locks and exported by a collector at scrape time.
    The queue updates them from the event loop; a scrape from another thread may see a histogram's count
    and buckets one observation apart, which Prometheus tolerates.
    """

    __slots__ = (
        "_adds",
        "_depth",
        "_in_flight",
        "_queue_buckets",
        "_queue_sum",
        "_retries",
        "_work_buckets",
        "_work_sum",
        "name",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self._depth = 0
        self._adds = 0
        self._retries = 0
        # Per-bucket (non-cumulative) counts; the last slot is +Inf.
        self._queue_buckets = [0] * (len(WORKQUEUE_DURATION_BUCKETS) + 1)
        self._queue_sum = 0.0
        self._work_buckets = [0] * (len(WORKQUEUE_DURATION_BUCKETS) + 1)
        self._work_sum = 0.0
        self._in_flight: InFlightSource | None = None

    def add(self) -> None:
        """An item entered the queue (after de-duplication)."""
        self._adds += 1

    def get(self, queued_for: float) -> None:
        """An item was handed to a worker after waiting ``queued_for`` seconds since it was added."""
        self._queue_buckets[bisect_left(WORKQUEUE_DURATION_BUCKETS, queued_for)] += 1
        self._queue_sum += queued_for

    def done(self, work_time: float) -> None:
        """A worker finished an item it held for ``work_time`` seconds."""
        self._work_buckets[bisect_left(WORKQUEUE_DURATION_BUCKETS, work_time)] += 1
        self._work_sum += work_time

    def retry(self) -> None:
        """An item was re-added with rate-limited backoff."""
        self._retries += 1

    def set_depth(self, n: int) -> None:
        """Number of items ready to be handed out."""
        self._depth = n

    def track_in_flight(self, source: InFlightSource | None) -> None:
        """Use ``source`` at scrape time for the unfinished-work and longest-running gauges.

        The facade keeps a strong reference to ``source``; a queue that registers later for the same
        name replaces it, and ``None`` detaches it.
        """
        self._in_flight = source

    def _in_flight_ages(self) -> list[float]:
        source = self._in_flight
        return [] if source is None else list(source())


class RestClientMetrics:
    """client-go's ``rest_client_*`` series, fed by the API client once per HTTP request."""

    def __init__(self, metrics: Metrics) -> None:
        self._requests = metrics._rest_requests
        self._duration = metrics._rest_duration

    def request(self, *, method: str, host: str, code: int | str, seconds: float) -> None:
        """Record one request; ``code`` is the HTTP status, or ``"<error>"`` when no response came back."""
        verb = method.upper()
        self._requests.labels(code=str(code), host=host, method=verb).inc()
        self._duration.labels(verb=verb, host=host).observe(seconds)


class LeaderElectionMetrics:
    """client-go's ``leader_election_master_status`` for one lease."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._status = metrics._leader_status.labels(name=name)

    def set_leading(self, leading: bool) -> None:
        self._status.set(1 if leading else 0)


_format_bound: Callable[[float], str] = floatToGoString  # the client's own "le" formatting
_WORKQUEUE_BUCKET_LABELS = (*(_format_bound(bound) for bound in WORKQUEUE_DURATION_BUCKETS), "+Inf")


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    return list(zip(_WORKQUEUE_BUCKET_LABELS, accumulate(buckets), strict=True))


class _WorkQueueCollector:
    """Exports every ``WorkQueueMetrics`` facade; the two in-flight gauges are computed from "now"."""

    def __init__(self, queues: dict[str, WorkQueueMetrics], lock: threading.Lock) -> None:
        self._queues = queues
        self._lock = lock

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        HistogramMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=_WORKQUEUE_LABELS),
            CounterMetricFamily(
                "workqueue_adds",
                "Total number of adds handled by workqueue",
                labels=_WORKQUEUE_LABELS,
            ),
            HistogramMetricFamily(
                "workqueue_queue_duration_seconds",
                "How long in seconds an item stays in workqueue before being requested",
                labels=_WORKQUEUE_LABELS,
            ),
            HistogramMetricFamily(
                "workqueue_work_duration_seconds",
                "How long in seconds processing an item from workqueue takes",
                labels=_WORKQUEUE_LABELS,
            ),
            GaugeMetricFamily(
                "workqueue_unfinished_work_seconds",
                "How many seconds of work has been done that is in progress and hasn't been observed by "
                "work_duration. Large values indicate stuck threads.",
                labels=_WORKQUEUE_LABELS,
            ),
            GaugeMetricFamily(
                "workqueue_longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                labels=_WORKQUEUE_LABELS,
            ),
            CounterMetricFamily(
                "workqueue_retries",
                "Total number of retries handled by workqueue",
                labels=_WORKQUEUE_LABELS,
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        depth, adds, queue_duration, work_duration, unfinished, longest, retries = families
        with self._lock:
            queues = list(self._queues.values())
        for queue in queues:
            labels = [queue.name, queue.name]
            depth.add_metric(labels, queue._depth)
            adds.add_metric(labels, queue._adds)
            queue_duration.add_metric(labels, _cumulative(queue._queue_buckets), queue._queue_sum)
            work_duration.add_metric(labels, _cumulative(queue._work_buckets), queue._work_sum)
            ages = queue._in_flight_ages()
            unfinished.add_metric(labels, sum(ages, 0.0))
            longest.add_metric(labels, max(ages, default=0.0))
            retries.add_metric(labels, queue._retries)
        return families


class Metrics:
    """Every metric the manager exports, registered on one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry, *, runtime_collectors: bool = False) -> None:
        """Register all metrics on ``registry``.

        ``runtime_collectors=True`` also registers the process, platform and GC collectors
        (``process_resident_memory_bytes``, ``python_info``, ``python_gc_*``). A registry can hold only
        one ``Metrics``: a second one raises prometheus_client's duplicate-timeseries ``ValueError``.
        """
        self.registry = registry
        self._lock = threading.Lock()
        self._controllers: dict[str, ControllerMetrics] = {}
        self._workqueues: dict[str, WorkQueueMetrics] = {}
        self._leaders: dict[str, LeaderElectionMetrics] = {}

        ctrl = ("controller",)
        self._reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ("controller", "result"),
            registry=registry,
        )
        self._reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ctrl,
            registry=registry,
        )
        self._terminal_errors = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ctrl,
            registry=registry,
        )
        self._reconcile_panics = Counter(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics (unexpected exceptions) per controller",
            ctrl,
            registry=registry,
        )
        self._reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ctrl,
            buckets=RECONCILE_TIME_BUCKETS,
            registry=registry,
        )
        self._max_concurrent = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ctrl,
            registry=registry,
        )
        self._active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ctrl,
            registry=registry,
        )
        self._reconcile_timeouts = Counter(
            "controller_runtime_reconcile_timeouts_total",
            "Total number of reconciliation timeouts per controller",
            ctrl,
            registry=registry,
        )

        registry.register(_WorkQueueCollector(self._workqueues, self._lock))

        self._rest_requests = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ("code", "host", "method"),
            registry=registry,
        )
        self._rest_duration = Histogram(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            ("verb", "host"),
            buckets=REST_CLIENT_DURATION_BUCKETS,
            registry=registry,
        )
        self._leader_status = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, "
            "1 indicates master. 'name' is the string used to identify the lease.",
            ("name",),
            registry=registry,
        )
        self.rest_client = RestClientMetrics(self)

        if runtime_collectors:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def controller(self, name: str) -> ControllerMetrics:
        """The facade for controller ``name`` (created on first use, then cached)."""
        with self._lock:
            facade = self._controllers.get(name)
            if facade is None:
                facade = self._controllers[name] = ControllerMetrics(self, name)
            return facade

    def init_controller(self, name: str, max_concurrent: int) -> ControllerMetrics:
        """Pre-set every ``controller_runtime_*`` series of ``name`` to 0 and record its worker limit.

        Series that exist from the start let ``rate()`` and absence alerts work before the first event.
        """
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        facade = self.controller(name)  # creating the labelled children sets them to 0
        facade.set_max_concurrent(max_concurrent)
        return facade

    def workqueue(self, name: str) -> WorkQueueMetrics:
        """The facade for queue ``name``; all of its series exist (at 0) once this returns."""
        with self._lock:
            facade = self._workqueues.get(name)
            if facade is None:
                facade = self._workqueues[name] = WorkQueueMetrics(name)
            return facade

    def leader_election(self, name: str) -> LeaderElectionMetrics:
        """The facade for the lease ``name``."""
        with self._lock:
            facade = self._leaders.get(name)
            if facade is None:
                facade = self._leaders[name] = LeaderElectionMetrics(self, name)
            return facade

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Exposition body and its content type, negotiated from an HTTP ``Accept`` header.

        An empty or unrecognised header gives the classic Prometheus text format (version 0.0.4).
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


DEFAULT_METRICS = Metrics(CollectorRegistry(), runtime_collectors=True)
"""The metrics the manager's ``/metrics`` endpoint serves."""
