"""What a deployment mode provides to the InferenceService reconciler.

KServe runs the same components in different ways: Serverless makes a Knative Service per component and
routes through Istio; RawDeployment makes a Deployment, a Service and an HPA per component and routes through
an Ingress. The InferenceService reconciler does everything that does not depend on the mode (configuration,
component assembly in `reconcilers.components`, user problems, conditions that explain themselves) and hands
each built component to the backend of the object's mode, which owns its children and also how their status
becomes the InferenceService's.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from reconcilers.components import Component


class DeploymentBackend(Protocol):
    """One deployment mode (`mode` is its `serving.kserve.io/deploymentMode` value).

    Every method edits `isvc.status` in place. Problems the user must fix are raised as
    `reconcilers.runtime.ComponentSpecError` or `reconcilers.apply.NotControlled`; API failures as
    `manager.errors.ApiError`.
    """

    mode: str

    def existing_names(self, isvc: InferenceService) -> Collection[str]:
        """Names of this mode's children that exist and keep a legacy `-default` component name."""
        ...

    async def apply_component(self, isvc: InferenceService, built: Component) -> None:
        """Create or update the component's children and fold their status into the component's."""
        ...

    async def remove_component(self, isvc: InferenceService, component: str) -> None:
        """The component left the spec: delete the children this InferenceService controls."""
        ...

    def propagate(self, isvc: InferenceService, components: Sequence[str]) -> None:
        """Status that spans the present components (e.g. RoutesReady) and the model status."""
        ...

    async def reconcile_ingress(self, isvc: InferenceService, config: IngressConfig) -> None:
        """Route to the InferenceService; set `status.url`, `status.address` and IngressReady."""
        ...
