"""Knative Serving (`serving.knative.dev/v1`) names and the part of a Knative Service status KServe reads.

KServe does not own Knative's types; it builds Knative Services as plain JSON and reads back their status to
derive component readiness, URLs, traffic and rollout state. Only that read side is modelled here, leniently
(every field optional, unknown fields kept), so a newer Knative never breaks parsing. A condition whose
status is not True, False or Unknown (e.g. empty) is dropped, which is what KServe's `SetCondition` amounts
to: it copies none of those.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from pydantic import Field, field_validator

from apis.base import KubeModel
from apis.conditions import Condition, ConditionSeverity, ConditionStatus

KNATIVE_SERVING_GROUP: Final = "serving.knative.dev"
KNATIVE_SERVING_VERSION: Final = "v1"
KNATIVE_SERVICE_KIND: Final = "Service"

# Condition types of a Knative Service.
SERVICE_READY: Final = "Ready"
SERVICE_ROUTES_READY: Final = "RoutesReady"
SERVICE_CONFIGURATIONS_READY: Final = "ConfigurationsReady"

# Labels Knative puts on revisions and their pods.
SERVICE_LABEL: Final = "serving.knative.dev/service"
CONFIGURATION_LABEL: Final = "serving.knative.dev/configuration"
REVISION_LABEL: Final = "serving.knative.dev/revision"
SERVICE_UID_LABEL: Final = "serving.knative.dev/serviceUID"
CONFIGURATION_GENERATION_LABEL: Final = "serving.knative.dev/configurationGeneration"

_STATUSES: Final = get_args(ConditionStatus)
_SEVERITIES: Final = get_args(ConditionSeverity)

TAG_PREV: Final = "prev"
TAG_LATEST: Final = "latest"


class Addressable(KubeModel):
    """`{url}`: a Knative `duckv1.Addressable`, also used by InferenceService and TrainedModel status."""

    url: str | None = None


class TrafficTarget(KubeModel):
    """One entry of a Knative route's traffic split (spec and status share the shape)."""

    tag: str | None = None
    revision_name: str | None = None
    configuration_name: str | None = None
    latest_revision: bool | None = None
    percent: int | None = None
    url: str | None = None


class KnativeServiceStatus(KubeModel):
    """`status` of a Knative Service: what KServe propagates into the InferenceService."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    latest_ready_revision_name: str | None = None
    latest_created_revision_name: str | None = None
    url: str | None = None
    address: Addressable | None = None
    traffic: list[TrafficTarget] | None = None

    @field_validator("conditions", mode="before")
    @classmethod
    def _known_statuses(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        kept = []
        for item in value:
            if isinstance(item, dict) and item.get("status") not in _STATUSES:
                continue
            if isinstance(item, dict) and item.get("severity") not in (None, *_SEVERITIES):
                item = {**item, "severity": ""}
            kept.append(item)
        return kept

    def get_condition(self, condition_type: str) -> Condition | None:
        for c in self.conditions:
            if c.type == condition_type:
                return c
        return None
