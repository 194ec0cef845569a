"""Metrics aggregation and Prometheus scrape annotations: the pod side of the qpext contract.

With `serving.kserve.io/enable-metric-aggregation: "true"` the queue-proxy image (qpext) serves one
Prometheus endpoint on 9088 that merges its own metrics with the model container's; it learns where the
model's metrics are from env vars this injector sets: `KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT` and
`..._PATH` (from the runtime's `prometheus.kserve.io/port|path` annotations, default 8080 and /metrics)
and `AGGREGATE_PROMETHEUS_METRICS_PORT=9088`. With `serving.kserve.io/enable-prometheus-scraping: "true"`
the pod gets the annotations a Prometheus `kubernetes-pods` job uses: port 9088 when aggregating, else
queue-proxy's own 9091, and path /metrics.

Either annotation, when absent, is written onto the pod with the cluster default from the ConfigMap key
`metricsAggregator` (as KServe does), so an explicit "false" on the InferenceService beats a "true" default
and the pod records which setting applied. Only the exact string "true" enables a feature.

A pod without queue-proxy (a RawDeployment pod) is treated as v0.11 treats it: no env var and no port
(there is no queue-proxy to aggregate), but both `serving.kserve.io/enable-*` annotations are recorded and,
with scraping on, `prometheus.io/port` names 9088 or 9091 and `prometheus.io/path` /metrics all the same,
though nothing in the pod listens there.

Differences from v0.11 (reference §10): env vars are merged by name instead of appended (v0.11 duplicates
them when the webhook runs again), the `aggr-metric` 9088 container port is added (as KServe HEAD does) so
a Service or PodMonitor can name it, and `prometheus.io/scrape: "true"` is set, which v0.11 forgot
(kserve/website#315), on pods with queue-proxy only: on a raw pod it would turn v0.11's inert port
annotation into a scrape target that is always down. All edits are set-or-replace, so the injector is
idempotent.
"""

from __future__ import annotations

from apis.config import MetricsAggregatorConfig
from apis.constants import (
    DEFAULT_PROMETHEUS_PATH,
    DEFAULT_PROMETHEUS_PORT,
    ENABLE_METRIC_AGGREGATION_ANNOTATION,
    ENABLE_PROMETHEUS_SCRAPING_ANNOTATION,
    PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION,
    QUEUE_PROXY_CONTAINER_NAME,
)
from webhooks.injectors.pod import (
    Pod,
    containers,
    ensure_port,
    find_container,
    merge_env,
    writable_annotations,
)

AGGREGATE_METRICS_PORT = 9088
AGGREGATE_METRICS_PORT_NAME = "aggr-metric"
QUEUE_PROXY_METRICS_PORT = 9091
METRICS_PORT_ENV = "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT"
METRICS_PATH_ENV = "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH"
AGGREGATE_PORT_ENV = "AGGREGATE_PROMETHEUS_METRICS_PORT"
SCRAPE_ANNOTATION = "prometheus.io/scrape"
SCRAPE_PORT_ANNOTATION = "prometheus.io/port"
SCRAPE_PATH_ANNOTATION = "prometheus.io/path"


def inject_metrics_aggregator(pod: Pod, config: MetricsAggregatorConfig) -> None:
    """Apply the aggregation env/port and the scrape annotations (pod annotations, then defaults)."""
    pod_annotations = writable_annotations(pod)
    aggregate = pod_annotations.setdefault(
        ENABLE_METRIC_AGGREGATION_ANNOTATION, config.enable_metric_aggregation
    )
    if aggregate == "true":
        envs = [
            {
                "name": METRICS_PORT_ENV,
                "value": pod_annotations.get(PROMETHEUS_PORT_ANNOTATION, DEFAULT_PROMETHEUS_PORT),
            },
            {
                "name": METRICS_PATH_ENV,
                "value": pod_annotations.get(PROMETHEUS_PATH_ANNOTATION, DEFAULT_PROMETHEUS_PATH),
            },
            {"name": AGGREGATE_PORT_ENV, "value": str(AGGREGATE_METRICS_PORT)},
        ]
        for container in containers(pod):
            if container["name"] == QUEUE_PROXY_CONTAINER_NAME:
                merge_env(container, [dict(env) for env in envs])
                ensure_port(
                    container,
                    {
                        "name": AGGREGATE_METRICS_PORT_NAME,
                        "containerPort": AGGREGATE_METRICS_PORT,
                        "protocol": "TCP",
                    },
                )
    scrape = pod_annotations.setdefault(
        ENABLE_PROMETHEUS_SCRAPING_ANNOTATION, config.enable_prometheus_scraping
    )
    if scrape == "true":
        port = AGGREGATE_METRICS_PORT if aggregate == "true" else QUEUE_PROXY_METRICS_PORT
        if find_container(pod, QUEUE_PROXY_CONTAINER_NAME) is not None:
            pod_annotations[SCRAPE_ANNOTATION] = "true"
        pod_annotations[SCRAPE_PORT_ANNOTATION] = str(port)
        pod_annotations[SCRAPE_PATH_ANNOTATION] = DEFAULT_PROMETHEUS_PATH
