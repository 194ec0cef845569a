"""The RawDeployment mode: per component a Deployment, a Service and an HPA; one Ingress in front.

KServe v0.11's raw mode runs each component without Knative: `reconcilers.deployment`,
`reconcilers.service` and `reconcilers.hpa` shape the children exactly as KServe does, and
`reconcilers.kube_ingress` the Ingress, hosts and URLs. This backend writes them through
`reconcilers.apply.apply_if_changed` (so a steady state writes nothing, and a child of the same name that the
InferenceService does not control is never touched) and folds their status into the InferenceService's:

- the component's Ready condition is its Deployment's `Available` condition, with the Deployment
  controller's reason and message when it is not True, or a failing pod's when one says why
  (`reconcilers.deployment.pod_failure`); latestCreatedRevision is the Deployment's revision;
- the component's URL (its own host, http) is set once it is Ready; the InferenceService's URL, address and
  IngressReady come from the ingress step;
- the model status comes from the predictor's pods, selected by `app: isvc.<predictor>` as KServe lists them,
  and a Ready InferenceService with pods is `Loaded` (no revisions to compare in raw mode).

A component that leaves the spec loses its Deployment, Service and HPA; an autoscaler class `external` loses
its HPA; a cluster-local InferenceService loses its Ingress. Only children this InferenceService controls are
deleted. Deleting the InferenceService removes everything through the owner references.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from apis import constants as c
from apis.conditions import FALSE, TRUE, Condition
from apis.config import IngressConfig
from apis.inferenceservice import ComponentStatusSpec, InferenceService
from apis.knative import Addressable
from apis.resources import DEPLOYMENTS, HORIZONTAL_POD_AUTOSCALERS, INGRESSES
from manager.cache import Cache
from manager.client import SERVICES, Client, Object, Resource
from manager.errors import ApiError
from manager.informer import LABEL_INDEX, Informer
from reconcilers.apply import apply_if_changed, delete_if_controlled, display_kind
from reconcilers.components import Component, component_name, existing_legacy_names
from reconcilers.deployment import available_condition, desired_deployment, pod_failure, revision
from reconcilers.hpa import desired_hpa
from reconcilers.kube_ingress import (
    address_url,
    component_url,
    desired_ingress,
    is_cluster_local,
    service_names,
    service_url,
)
from reconcilers.runtime import REASON_INVALID_SPEC, ComponentSpecError
from reconcilers.service import desired_service

log = logging.getLogger(__name__)

_COMPONENT_CHILDREN: tuple[Resource, ...] = (DEPLOYMENTS, SERVICES, HORIZONTAL_POD_AUTOSCALERS)


class RawBackend:
    """`reconcilers.backend.DeploymentBackend` for `serving.kserve.io/deploymentMode: RawDeployment`."""

    mode: str = c.RAW_DEPLOYMENT

    def __init__(self, client: Client, cache: Cache, *, pods: Informer | None = None) -> None:
        self.client = client
        self.cache = cache
        self.pods = pods

    def existing_names(self, isvc: InferenceService) -> Collection[str]:
        """The legacy `<isvc>-<component>-default` Services that exist (KServe checks the Service)."""
        return existing_legacy_names(self.cache, SERVICES, isvc)

    async def apply_component(self, isvc: InferenceService, built: Component) -> None:
        deployment = desired_deployment(isvc, built)
        live = await self._apply_child(DEPLOYMENTS, deployment, built.name, isvc.namespace)
        await self._apply_child(SERVICES, desired_service(isvc, built), built.name, isvc.namespace)
        hpa = desired_hpa(isvc, built)
        if hpa is not None:
            await self._apply_child(HORIZONTAL_POD_AUTOSCALERS, hpa, built.name, isvc.namespace)
        else:
            await self._delete(isvc, HORIZONTAL_POD_AUTOSCALERS, built.name)
        status = isvc.status
        spec = status.components.setdefault(built.component, ComponentStatusSpec())
        if live is None:
            return
        spec.latest_created_revision = revision(live)
        available = available_condition(live)
        if available is not None and available.status != TRUE:
            failure = pod_failure(self._pods_of(built.name))
            if failure is not None:
                available = Condition(
                    type=available.type, status=FALSE, reason=failure[0], message=failure[1]
                )
        status.set_condition(c.READY_CONDITIONS[built.component], available)

    async def remove_component(self, isvc: InferenceService, component: str) -> None:
        for name in (c.component_name(isvc.name, component), c.legacy_component_name(isvc.name, component)):
            for resource in _COMPONENT_CHILDREN:
                await self._delete(isvc, resource, name)

    def propagate(self, isvc: InferenceService, components: Sequence[str]) -> None:
        predictor = isvc.status.components.get(c.PREDICTOR)
        if predictor is None or self.pods is None:
            return
        name = component_name(isvc, c.PREDICTOR, self.existing_names(isvc))
        isvc.status.propagate_model_status(predictor, self._pods_of(name), raw=True)

    async def reconcile_ingress(self, isvc: InferenceService, config: IngressConfig) -> None:
        existing = self.existing_names(isvc)
        status = isvc.status
        for component in isvc.spec.components():
            entry = status.components.get(component)
            if entry is not None and status.is_condition_ready(c.READY_CONDITIONS[component]):
                entry.url = component_url(component_name(isvc, component, existing), isvc, config)
        names = service_names(isvc, set(existing))
        if is_cluster_local(isvc, config):
            await self._delete(isvc, INGRESSES, isvc.name)
        else:
            ingress = desired_ingress(isvc, config, names)
            if ingress is None:
                return
            live = self.cache.get(INGRESSES, isvc.name, isvc.namespace)
            if await apply_if_changed(self.client, INGRESSES, ingress, live) is not None:
                log.info("applied Ingress %s/%s", isvc.namespace, isvc.name)
        status.url = service_url(isvc, config)
        status.address = Addressable(url=address_url(isvc, config, names))
        status.set_condition(c.INGRESS_READY, Condition(type=c.INGRESS_READY, status=TRUE))

    def _pods_of(self, component: str) -> list[Object]:
        """The cached pods of a component (`app: isvc.<component>`), none without a pod informer."""
        if self.pods is None:
            return []
        return self.pods.store.by_index(LABEL_INDEX, f"{c.RAW_APP_LABEL}={c.raw_app_label(component)}")

    # -- writes -------------------------------------------------------------------------------------

    async def _apply_child(
        self, resource: Resource, desired: Object, name: str, namespace: str
    ) -> Object | None:
        """Apply a component's child when changed; the object as it now is (written or cached).

        The API server refusing it (400/422) is a problem of the component's spec."""
        live = self.cache.get(resource, name, namespace)
        try:
            written = await apply_if_changed(self.client, resource, desired, live)
        except ApiError as exc:
            if exc.status in (400, 422):
                raise ComponentSpecError(
                    REASON_INVALID_SPEC, f'{display_kind(resource)} "{name}" was rejected: {exc.message}'
                ) from None
            raise
        if written is not None:
            log.info("applied %s %s/%s", resource.kind, namespace, name)
            return written
        return live

    async def _delete(self, isvc: InferenceService, resource: Resource, name: str) -> None:
        live = self.cache.get(resource, name, isvc.namespace)
        uid = str(isvc.metadata.get("uid") or "")
        if await delete_if_controlled(self.client, resource, live, uid):
            log.info("deleted %s %s/%s", resource.kind, isvc.namespace, name)
