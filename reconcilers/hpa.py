"""The HorizontalPodAutoscaler of a RawDeployment component, in `autoscaling/v1`.

The autoscaler class comes from the component's annotation `serving.kserve.io/autoscalerClass` (the
InferenceService's or the component's own): `hpa`, the default, gives the component an HPA named like it;
`external` gives none (something else scales the Deployment) and an HPA left from class `hpa` is deleted, as
KServe v0.13 does (v0.11 knows only `hpa`). The HPA's rules are KServe v0.11's:

- `minReplicas` is the component's, at least 1; `maxReplicas` the component's, at least `minReplicas`;
- the metric is the component's `scaleMetric` (`cpu` by default, or `memory`), as a utilization target:
  `scaleTarget`, else the annotation `serving.kserve.io/targetUtilizationPercentage`, else 80.

API version: KServe writes `autoscaling/v2`, which Kubernetes 1.20 does not serve, and `v2beta2` is gone
since 1.26, so the one version both serve is `autoscaling/v1`. It has a field for the CPU target only; a
memory target goes into the annotation `autoscaling.alpha.kubernetes.io/metrics`, which the API server
converts to and from the v2 `metrics` list (verified on 1.20.2 by tests/integration, and still so in
Kubernetes 1.35's `pkg/apis/autoscaling/v1/conversion.go`). The annotation is written exactly as the API
server re-serializes it, so a steady state compares equal. Read as `autoscaling/v2`, the object has the same
metrics as KServe's; only the empty `behavior` KServe sets (which the server fills with its default
policies, the ones the HPA controller applies anyway) is absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from apis import constants as c
from apis.inferenceservice import InferenceService
from apis.resources import DEPLOYMENTS, HORIZONTAL_POD_AUTOSCALERS
from manager.client import Object
from reconcilers.components import Component
from reconcilers.deployment import component_metadata
from reconcilers.runtime import REASON_INVALID_SPEC, ComponentSpecError

DEFAULT_UTILIZATION: Final = 80
METRIC_CPU: Final = "cpu"
METRIC_MEMORY: Final = "memory"
METRICS_ANNOTATION: Final = "autoscaling.alpha.kubernetes.io/metrics"
"""autoscaling/v1's carrier of the v2 metrics it has no field for."""


def autoscaler_class(annotations: Mapping[str, str]) -> str:
    """The component's autoscaler class (`hpa` unless annotated); `ComponentSpecError` for an unknown one."""
    klass = annotations.get(c.AUTOSCALER_CLASS_ANNOTATION, c.AUTOSCALER_CLASS_HPA)
    if klass not in c.AUTOSCALER_CLASSES:
        raise ComponentSpecError(
            REASON_INVALID_SPEC,
            f'unknown autoscaler class "{klass}" (annotation {c.AUTOSCALER_CLASS_ANNOTATION}); '
            f"use {' or '.join(c.AUTOSCALER_CLASSES)}",
        )
    return klass


def _utilization(built: Component) -> int:
    if built.spec.scale_target is not None:
        return built.spec.scale_target
    value = built.annotations.get(c.TARGET_UTILIZATION_ANNOTATION)
    if value is None:
        return DEFAULT_UTILIZATION
    try:
        return int(value)
    except ValueError:
        raise ComponentSpecError(
            REASON_INVALID_SPEC,
            f"annotation {c.TARGET_UTILIZATION_ANNOTATION} must be an integer percentage, got {value!r}",
        ) from None


def desired_hpa(isvc: InferenceService, built: Component) -> Object | None:
    """The component's HPA (`autoscaling/v1`), or None when its autoscaler class is `external`."""
    if autoscaler_class(built.annotations) != c.AUTOSCALER_CLASS_HPA:
        return None
    spec = built.spec
    min_replicas = max(spec.min_replicas or 0, c.DEFAULT_MIN_REPLICAS)
    max_replicas = max(spec.max_replicas or 0, min_replicas)
    metric = spec.scale_metric or METRIC_CPU
    if metric not in (METRIC_CPU, METRIC_MEMORY):
        raise ComponentSpecError(
            REASON_INVALID_SPEC,
            f'scaleMetric "{metric}" is not supported by the HPA autoscaler; use {METRIC_CPU} or '
            f"{METRIC_MEMORY}",
        )
    utilization = _utilization(built)
    meta = component_metadata(isvc, built)
    hpa_spec: Object = {
        "scaleTargetRef": {
            "apiVersion": DEPLOYMENTS.api_version,
            "kind": DEPLOYMENTS.kind,
            "name": built.name,
        },
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
    }
    if metric == METRIC_CPU:
        hpa_spec["targetCPUUtilizationPercentage"] = utilization
    else:
        metrics = [
            {"type": "Resource", "resource": {"name": metric, "targetAverageUtilization": utilization}}
        ]
        annotations = dict(meta.get("annotations") or {})
        annotations[METRICS_ANNOTATION] = json.dumps(metrics, separators=(",", ":"))
        meta["annotations"] = annotations
    return {
        "apiVersion": HORIZONTAL_POD_AUTOSCALERS.api_version,
        "kind": HORIZONTAL_POD_AUTOSCALERS.kind,
        "metadata": meta,
        "spec": hpa_spec,
    }
