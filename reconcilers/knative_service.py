"""One Knative Service per InferenceService component: the Serverless mode's child, and writing it.

`reconcilers.components` builds the component (pod, labels, annotations); this module shapes it the way
KServe v0.11 does for Knative (kserve-behaviour.md §3.3) and keeps it in the cluster. The builder is a pure
function, so its rules are pinned by table tests without a cluster; the reconciler reads the live object from
the shared cache and writes through `reconcilers.apply.apply_if_changed`, so a steady state costs no API
request (KServe v0.11 updates every Knative Service on every reconcile), and a Knative Service of the same
name that the InferenceService does not control is never touched.

Rules worth knowing when reading the code:

- Knative's autoscaling annotations come from the component spec: `min-scale` (default 1), `max-scale`,
  the KPA class unless one is set, `target` and `metric`.
- The revision template carries every annotation except `serving.knative.dev/rollout-duration` and
  `serving.knative.openshift.io/enablePassthrough`, which belong on the Knative Service itself, and every
  label except `networking.knative.dev/visibility`, which only the route understands.
- Traffic pins the last rolled-out revision while a canary runs (`canaryTrafficPercent` with a rolled-out
  revision in status), tagged `prev`; otherwise 100% follows the latest revision.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from apis import constants as c
from apis.config import ExplainersConfig
from apis.inferenceservice import ComponentSpec, InferenceService
from apis.knative import (
    KNATIVE_SERVICE_KIND,
    KNATIVE_SERVING_GROUP,
    KNATIVE_SERVING_VERSION,
    TAG_LATEST,
    TAG_PREV,
)
from apis.resources import KNATIVE_SERVICES
from manager.cache import Cache
from manager.client import Client, Object
from manager.errors import ApiError
from reconcilers.apply import apply_if_changed, delete_if_controlled
from reconcilers.components import Component, build_component, existing_legacy_names
from reconcilers.runtime import REASON_INVALID_SPEC, ComponentSpecError, RuntimeLike

log = logging.getLogger(__name__)

KSVC_API_VERSION: Final = f"{KNATIVE_SERVING_GROUP}/{KNATIVE_SERVING_VERSION}"


# --- The Knative Service --------------------------------------------------------------------------


def _traffic(
    isvc: InferenceService, component: str, spec: ComponentSpec, annotations: Mapping[str, str]
) -> list[Any]:
    status = isvc.status.components.get(component)
    last_rolled_out = status.latest_rolledout_revision if status is not None else None
    latest: dict[str, Any] = {"latestRevision": True, "percent": 100}
    if annotations.get(c.ENABLE_TAG_ROUTING_ANNOTATION) == "true":
        latest["tag"] = TAG_LATEST
    canary = spec.canary_traffic_percent
    if canary is None or not last_rolled_out:
        return [latest]
    latest["percent"] = canary
    traffic: list[Any] = [latest]
    if canary < 100:
        traffic.append(
            {
                "tag": TAG_PREV,
                "revisionName": last_rolled_out,
                "latestRevision": False,
                "percent": 100 - canary,
            }
        )
    return traffic


def knative_service(isvc: InferenceService, built: Component) -> Object:
    """The Knative Service of one built component: Knative's autoscaling annotations, revision template,
    traffic."""
    spec = built.spec
    annotations = dict(built.annotations)
    annotations[c.KNATIVE_MIN_SCALE_ANNOTATION] = str(spec.min_replicas_or_default())
    if spec.max_replicas:
        annotations[c.KNATIVE_MAX_SCALE_ANNOTATION] = str(spec.max_replicas)
    annotations.setdefault(c.KNATIVE_AUTOSCALING_CLASS_ANNOTATION, c.KNATIVE_KPA_CLASS)
    if spec.scale_target is not None:
        annotations[c.KNATIVE_TARGET_ANNOTATION] = str(spec.scale_target)
    if spec.scale_metric is not None:
        annotations[c.KNATIVE_METRIC_ANNOTATION] = spec.scale_metric
    ksvc_annotations = {
        key: annotations.pop(key) for key in c.KSVC_METADATA_ANNOTATIONS if key in annotations
    }
    template_labels = {k: v for k, v in built.labels.items() if k not in c.REVISION_TEMPLATE_LABEL_DISALLOWED}
    revision_spec: dict[str, Any] = dict(built.pod_spec)
    if spec.container_concurrency is not None:
        revision_spec["containerConcurrency"] = spec.container_concurrency
    if spec.timeout is not None:
        revision_spec["timeoutSeconds"] = spec.timeout
    metadata: dict[str, Any] = {"name": built.name, "namespace": isvc.namespace, "labels": dict(built.labels)}
    if ksvc_annotations:
        metadata["annotations"] = ksvc_annotations
    metadata["ownerReferences"] = [isvc.owner_reference()]
    return {
        "apiVersion": KSVC_API_VERSION,
        "kind": KNATIVE_SERVICE_KIND,
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {"labels": template_labels, "annotations": annotations},
                "spec": revision_spec,
            },
            "traffic": _traffic(isvc, built.component, spec, annotations),
        },
    }


def desired_knative_service(
    isvc: InferenceService,
    component: str,
    *,
    runtimes: Sequence[RuntimeLike] = (),
    explainers_config: ExplainersConfig | None = None,
    existing_names: Collection[str] = (),
    storage_containers: Sequence[Object] = (),
) -> Object:
    """The whole desired Knative Service of one component (`ComponentSpecError` for a bad spec).

    The arguments are `reconcilers.components.build_component`'s; `existing_names` are the Knative Services
    of the namespace (a legacy `-default` one keeps that name).
    """
    built = build_component(
        isvc,
        component,
        runtimes=runtimes,
        explainers_config=explainers_config,
        existing_names=existing_names,
        storage_containers=storage_containers,
    )
    return knative_service(isvc, built)


# --- The reconciler -------------------------------------------------------------------------------


class KnativeServiceReconciler:
    """Keeps each component's Knative Service as desired, from the cache, writing only on a difference."""

    def __init__(self, client: Client, cache: Cache) -> None:
        self._client = client
        self._cache = cache

    def existing_names(self, isvc: InferenceService) -> set[str]:
        """The legacy `<isvc>-<component>-default` Knative Services that exist (they keep their names)."""
        return existing_legacy_names(self._cache, KNATIVE_SERVICES, isvc)

    async def reconcile(self, isvc: InferenceService, built: Component) -> Object:
        """Bring the component's Knative Service to the desired state; return its `status` (`{}` if new).

        Raises `reconcilers.apply.NotControlled` for a Knative Service of that name this InferenceService
        does not control, and `ComponentSpecError` for one the API server rejects.
        """
        desired = knative_service(isvc, built)
        live = self._cache.get(KNATIVE_SERVICES, built.name, isvc.namespace)
        try:
            written = await apply_if_changed(self._client, KNATIVE_SERVICES, desired, live)
        except ApiError as exc:
            if exc.status in (400, 422):
                raise ComponentSpecError(
                    REASON_INVALID_SPEC, f'Knative Service "{built.name}" was rejected: {exc.message}'
                ) from None
            raise
        if written is not None:
            log.info("applied Knative Service %s/%s", isvc.namespace, built.name)
            return dict(written.get("status") or {})
        return dict(live.get("status") or {}) if live is not None else {}

    async def delete(self, isvc: InferenceService, component: str) -> bool:
        """Delete the component's Knative Service if this InferenceService controls it; True if issued."""
        issued = False
        uid = str(isvc.metadata.get("uid") or "")
        for name in (c.component_name(isvc.name, component), c.legacy_component_name(isvc.name, component)):
            live = self._cache.get(KNATIVE_SERVICES, name, isvc.namespace)
            if await delete_if_controlled(self._client, KNATIVE_SERVICES, live, uid):
                log.info("deleted Knative Service %s/%s", isvc.namespace, name)
                issued = True
        return issued
