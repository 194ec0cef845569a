"""The Serverless deployment mode: a Knative Service per component, an Istio VirtualService in front.

Knative turns each Knative Service into revisions, pods and routes and reports on them in the Knative
Service's status; this backend writes the Knative Services (`reconcilers.knative_service`) and the Istio
ingress (`reconcilers.ingress`), and folds Knative's status into the InferenceService's as KServe v0.11 does:
each component's Ready, RoutesReady and ConfigurationsReady conditions with Knative's reasons, its URL,
address, traffic and revisions, then RoutesReady and LatestDeploymentReady over all components, and the model
status from the pods of the predictor's latest revision (cached through a label-selected pod informer, as
KServe reads them).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from apis import constants as c
from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from apis.knative import REVISION_LABEL, KnativeServiceStatus
from manager.cache import Cache
from manager.client import Client, Object
from manager.informer import LABEL_INDEX, Informer
from reconcilers.components import Component
from reconcilers.ingress import IngressReconciler
from reconcilers.knative_service import KnativeServiceReconciler


class ServerlessBackend:
    """`reconcilers.backend.DeploymentBackend` for `serving.kserve.io/deploymentMode: Serverless`."""

    mode: str = c.SERVERLESS

    def __init__(self, client: Client, cache: Cache, *, pods: Informer | None = None) -> None:
        self.services = KnativeServiceReconciler(client, cache)
        self.ingress = IngressReconciler(client, cache)
        self.pods = pods

    def existing_names(self, isvc: InferenceService) -> Collection[str]:
        return self.services.existing_names(isvc)

    async def apply_component(self, isvc: InferenceService, built: Component) -> None:
        status = await self.services.reconcile(isvc, built)
        parsed = KnativeServiceStatus.from_object(status) if status else None
        isvc.status.propagate_status(built.component, parsed)

    async def remove_component(self, isvc: InferenceService, component: str) -> None:
        await self.services.delete(isvc, component)

    def propagate(self, isvc: InferenceService, components: Sequence[str]) -> None:
        status = isvc.status
        status.propagate_cross_component_status(components, c.ROUTES_READY)
        status.propagate_cross_component_status(components, c.LATEST_DEPLOYMENT_READY)
        predictor = status.components.get(c.PREDICTOR)
        if predictor is not None and self.pods is not None:
            status.propagate_model_status(predictor, self._revision_pods(predictor.latest_created_revision))

    async def reconcile_ingress(self, isvc: InferenceService, config: IngressConfig) -> None:
        await self.ingress.reconcile(isvc, config)

    def _revision_pods(self, revision: str | None) -> Sequence[Object]:
        if not revision or self.pods is None:
            return []
        return self.pods.store.by_index(LABEL_INDEX, f"{REVISION_LABEL}={revision}")
