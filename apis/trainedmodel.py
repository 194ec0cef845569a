"""The `serving.kserve.io/v1alpha1` TrainedModel: one model loaded into a multi-model InferenceService.

The TrainedModel controller reads the spec to maintain the parent's `models.json` and reports three
conditions (parent Ready, the predictor is multi-model, memory fits) through its own living condition set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from pydantic import Field

from apis import constants as c
from apis.base import KubeModel, KubeObject
from apis.conditions import Condition, ConditionManager, ConditionSet
from apis.knative import Addressable

API_VERSION: Final = "serving.kserve.io/v1alpha1"
KIND: Final = "TrainedModel"

# Condition types.
INFERENCE_SERVICE_READY: Final = "InferenceServiceReady"
MEMORY_RESOURCE_AVAILABLE: Final = "MemoryResourceAvailable"
IS_MMS_PREDICTOR: Final = "IsMMSPredictor"

# Reasons of the False conditions.
INFERENCE_SERVICE_NOT_READY: Final = "InferenceServiceNotReady"
MEMORY_RESOURCE_NOT_AVAILABLE: Final = "MemoryResourceNotAvailable"
IS_NOT_MMS_PREDICTOR: Final = "IsNotMMSPredictor"

TRAINED_MODEL_CONDITIONS: Final = ConditionSet.living(
    INFERENCE_SERVICE_READY, MEMORY_RESOURCE_AVAILABLE, IS_MMS_PREDICTOR
)


class TrainedModelModel(KubeModel):
    """`spec.model`: where the model is, which framework serves it, how much memory it needs."""

    storage_uri: str | None = None
    framework: str | None = None
    memory: str | int | None = None


class TrainedModelSpec(KubeModel):
    inference_service: str = ""
    model: TrainedModelModel = Field(default_factory=TrainedModelModel)


class TrainedModelStatus(KubeModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    annotations: dict[str, str] | None = None
    url: str | None = None
    address: Addressable | None = None

    def conditions_manager(self, *, now: Callable[[], str] | None = None) -> ConditionManager:
        return TRAINED_MODEL_CONDITIONS.manage(self.conditions, now=now)

    def is_ready(self) -> bool:
        return self.conditions_manager().is_happy()


class TrainedModel(KubeObject):
    api_version: str = API_VERSION
    kind: str = KIND
    spec: TrainedModelSpec = Field(default_factory=TrainedModelSpec)
    status: TrainedModelStatus = Field(default_factory=TrainedModelStatus)


def predict_path(model_name: str, protocol_version: str = c.PROTOCOL_V1) -> str:
    """The inference path of a model (KServe `PredictPath`); empty for the gRPC protocols."""
    if protocol_version == c.PROTOCOL_V1:
        return f"/v1/models/{model_name}:predict"
    if protocol_version == c.PROTOCOL_V2:
        return f"/v2/models/{model_name}/infer"
    return ""
