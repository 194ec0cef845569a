"""The `serving.kserve.io/v1beta1` InferenceService as typed models.

The spec is modelled as KServe defines it: each component (predictor, transformer, explainer) inlines a
Kubernetes PodSpec and the ComponentExtensionSpec; the predictor adds the legacy framework keys and the new
`model` key, each an inlined Container plus storage fields. Only the fields the controllers and validators
read are typed; everything else (the rest of the PodSpec, fields of newer KServe versions) is kept verbatim
as extra fields, so `InferenceService.from_object(obj).to_object() == obj`.

Types are lenient on purpose: enumerations (scaleMetric, logger mode, protocolVersion) are plain strings, so
a bad value parses and is reported by validation as a precise reason rather than failing the whole object.

The status side carries the propagation rules KServe keeps next to its status type (knative ksvc status ->
component status and conditions, rollout tracking, cross-component aggregation, model status from pods),
because they are pure data transformations the reconcilers and their tests share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from apis import constants as c
from apis.base import KubeModel, KubeObject
from apis.conditions import Condition, ConditionManager
from apis.knative import (
    SERVICE_CONFIGURATIONS_READY,
    SERVICE_READY,
    SERVICE_ROUTES_READY,
    Addressable,
    KnativeServiceStatus,
    TrafficTarget,
)

API_VERSION: Final = "serving.kserve.io/v1beta1"
KIND: Final = "InferenceService"

Quantity = str | int | float
"""A Kubernetes resource quantity as it appears in JSON (`"1"`, `1`, `"2Gi"`, `0.5`)."""


# --- Container ------------------------------------------------------------------------------------


class EnvVar(KubeModel):
    name: str
    value: str | None = None
    value_from: dict[str, Any] | None = None


class ContainerPort(KubeModel):
    container_port: int
    name: str | None = None
    protocol: str | None = None


class ResourceRequirements(KubeModel):
    limits: dict[str, Quantity] | None = None
    requests: dict[str, Quantity] | None = None


class Container(KubeModel):
    """A `corev1.Container`; the fields the controllers touch are typed, the rest kept as extras."""

    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[dict[str, Any]] | None = None
    image_pull_policy: str | None = None
    working_dir: str | None = None


# --- Predictor implementations --------------------------------------------------------------------


PREDICTOR_EXTENSION_KEYS: Final = ("storageUri", "runtimeVersion", "protocolVersion", "storage")
"""JSON keys a framework spec adds to its inlined Container."""
MODEL_KEYS: Final = ("modelFormat", "runtime")
"""JSON keys `model` adds to a framework spec."""
EXPLAINER_EXTENSION_KEYS: Final = ("type", "storageUri", "runtimeVersion", "config")
"""JSON keys an explainer spec adds to its inlined Container."""


class StorageSpec(KubeModel):
    """`storage`: a model location inside a storage-config secret entry (alternative to storageUri)."""

    path: str | None = None
    schema_path: str | None = None
    parameters: dict[str, str] | None = None
    key: str | None = None


class PredictorExtensionSpec(Container):
    """A framework spec (`sklearn:` ...) or `model:`: a Container plus where the model lives."""

    storage_uri: str | None = None
    runtime_version: str | None = None
    protocol_version: str | None = None
    storage: StorageSpec | None = None

    def container(self) -> Container:
        """The inlined Container alone (what gets merged into the runtime's `kserve-container`)."""
        obj = self.to_object()
        for key in (*PREDICTOR_EXTENSION_KEYS, *MODEL_KEYS):
            obj.pop(key, None)
        return Container.model_validate(obj)


class ModelFormat(KubeModel):
    name: str = ""
    version: str | None = None


class ModelSpec(PredictorExtensionSpec):
    """`predictor.model`: a model format served by a (Cluster)ServingRuntime."""

    model_format: ModelFormat | None = None
    runtime: str | None = None

    def protocol(self) -> str:
        """The protocol version, `v1` when unset (KServe `GetProtocol`)."""
        return self.protocol_version or c.PROTOCOL_V1


FRAMEWORKS: Final = (
    "xgboost",
    "pytorch",
    "triton",
    "sklearn",
    "tensorflow",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
)
"""Legacy predictor keys, in KServe's implementation precedence order."""

MODEL: Final = "model"
CUSTOM: Final = "custom"
"""Implementation name of a component given by its own `containers`."""

ALIBI: Final = "alibi"
ART: Final = "art"
EXPLAINERS: Final = (ALIBI, ART)


class ExplainerExtensionSpec(Container):
    """An `alibi:` or `art:` explainer: a Container plus its type, model location and config."""

    type: str | None = None
    storage_uri: str | None = None
    runtime_version: str | None = None
    config: dict[str, str] | None = None

    def container(self) -> Container:
        obj = self.to_object()
        for key in EXPLAINER_EXTENSION_KEYS:
            obj.pop(key, None)
        return Container.model_validate(obj)


# --- Components -----------------------------------------------------------------------------------


class LoggerSpec(KubeModel):
    url: str | None = None
    mode: str | None = None
    """`all` (default), `request` or `response`."""


class Batcher(KubeModel):
    max_batch_size: int | None = None
    max_latency: int | None = None
    timeout: int | None = None


COMPONENT_EXTENSION_KEYS: Final = (
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
)
"""JSON keys of KServe's ComponentExtensionSpec (not part of the pod spec)."""


class ComponentSpec(KubeModel):
    """What every component inlines: ComponentExtensionSpec plus a PodSpec (typed in part, rest extra)."""

    # ComponentExtensionSpec
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_target: int | None = None
    scale_metric: str | None = None
    container_concurrency: int | None = None
    timeout: int | None = None
    canary_traffic_percent: int | None = None
    logger: LoggerSpec | None = None
    batcher: Batcher | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    # PodSpec (the rest of it round-trips as extra fields)
    containers: list[Container] | None = None
    init_containers: list[Container] | None = None
    service_account_name: str | None = None
    volumes: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] | None = None

    implementation_keys: ClassVar[tuple[str, ...]] = ()

    def implementations(self) -> list[str]:
        """Names of the implementations that are set, in KServe's precedence order (`custom` last)."""
        return [CUSTOM] if self.containers else []

    def implementation(self) -> str | None:
        """The implementation KServe uses (the first of `implementations()`), or None."""
        found = self.implementations()
        return found[0] if found else None

    def custom_container(self) -> Container | None:
        """`containers[0]` when the component is given by its own containers."""
        return self.containers[0] if self.containers else None

    def pod_spec(self) -> dict[str, Any]:
        """The inlined PodSpec as JSON: everything but the extension fields and the implementation keys."""
        obj = self.to_object()
        for key in (*COMPONENT_EXTENSION_KEYS, *self.implementation_keys):
            obj.pop(key, None)
        return obj

    def min_replicas_or_default(self) -> int:
        """minReplicas, where unset means 1 (KServe's default min-scale)."""
        return c.DEFAULT_MIN_REPLICAS if self.min_replicas is None else self.min_replicas


class PredictorSpec(ComponentSpec):
    """`spec.predictor`: exactly one of a legacy framework key, `model`, or custom `containers`."""

    sklearn: PredictorExtensionSpec | None = None
    xgboost: PredictorExtensionSpec | None = None
    tensorflow: PredictorExtensionSpec | None = None
    pytorch: PredictorExtensionSpec | None = None
    triton: PredictorExtensionSpec | None = None
    onnx: PredictorExtensionSpec | None = None
    pmml: PredictorExtensionSpec | None = None
    lightgbm: PredictorExtensionSpec | None = None
    paddle: PredictorExtensionSpec | None = None
    model: ModelSpec | None = None

    implementation_keys: ClassVar[tuple[str, ...]] = (*FRAMEWORKS, MODEL)

    def implementations(self) -> list[str]:
        found = [key for key in (*FRAMEWORKS, MODEL) if getattr(self, key) is not None]
        if self.containers:
            found.append(CUSTOM)
        return found

    def framework(self) -> tuple[str, PredictorExtensionSpec] | None:
        """`(key, spec)` of the implementation in use when it is a framework key or `model`, else None."""
        name = self.implementation()
        if name is None or name == CUSTOM:
            return None
        spec: PredictorExtensionSpec = getattr(self, name)
        return name, spec

    def model_spec(self) -> ModelSpec | None:
        """The implementation as a ModelSpec, converting a legacy framework key as KServe's defaulter does.

        `sklearn: {...}` becomes `model: {modelFormat: {name: sklearn}, ...}` with the same extension
        fields; Triton's protocol defaults to v2. The spec itself is not modified. None for custom or
        missing implementations.
        """
        found = self.framework()
        if found is None:
            return None
        name, spec = found
        if isinstance(spec, ModelSpec):
            return spec
        obj = spec.to_object()
        obj["modelFormat"] = {"name": name}
        if name == "triton" and spec.protocol_version is None:
            obj["protocolVersion"] = c.PROTOCOL_V2
        return ModelSpec.model_validate(obj)

    def storage_uri(self) -> str | None:
        """The model's storageUri (framework or model), or None."""
        found = self.framework()
        return found[1].storage_uri if found else None

    def protocol(self) -> str:
        """The protocol version of the implementation (v1 unless set; v2 for legacy Triton)."""
        spec = self.model_spec()
        if spec is not None:
            return spec.protocol()
        return c.PROTOCOL_V1


class TransformerSpec(ComponentSpec):
    """`spec.transformer`: custom containers only."""


class ExplainerSpec(ComponentSpec):
    """`spec.explainer`: `alibi`, `art`, or custom `containers`."""

    alibi: ExplainerExtensionSpec | None = None
    art: ExplainerExtensionSpec | None = None

    implementation_keys: ClassVar[tuple[str, ...]] = EXPLAINERS

    def implementations(self) -> list[str]:
        found = [key for key in EXPLAINERS if getattr(self, key) is not None]
        if self.containers:
            found.append(CUSTOM)
        return found

    def explainer(self) -> tuple[str, ExplainerExtensionSpec] | None:
        """`(alibi|art, spec)` when a built-in explainer is in use, else None."""
        name = self.implementation()
        if name is None or name == CUSTOM:
            return None
        spec: ExplainerExtensionSpec = getattr(self, name)
        return name, spec


class InferenceServiceSpec(KubeModel):
    predictor: PredictorSpec = Field(default_factory=PredictorSpec)
    transformer: TransformerSpec | None = None
    explainer: ExplainerSpec | None = None

    def components(self) -> dict[str, ComponentSpec]:
        """The components present, in reconcile order (predictor first)."""
        out: dict[str, ComponentSpec] = {c.PREDICTOR: self.predictor}
        if self.transformer is not None:
            out[c.TRANSFORMER] = self.transformer
        if self.explainer is not None:
            out[c.EXPLAINER] = self.explainer
        return out


# --- Status ---------------------------------------------------------------------------------------


class ComponentStatusSpec(KubeModel):
    """`status.components[<component>]`."""

    latest_ready_revision: str | None = None
    latest_created_revision: str | None = None
    previous_rolledout_revision: str | None = None
    latest_rolledout_revision: str | None = None
    traffic: list[TrafficTarget] | None = None
    url: str | None = None
    rest_url: str | None = None
    grpc_url: str | None = None
    address: Addressable | None = None


class ModelRevisionStates(KubeModel):
    active_model_state: str | None = None
    target_model_state: str | None = None


class FailureInfo(KubeModel):
    location: str | None = None
    reason: str | None = None
    message: str | None = None
    model_revision_name: str | None = None
    time: str | None = None
    exit_code: int | None = None


class ModelCopies(KubeModel):
    failed_copies: int = 0
    total_copies: int | None = None


class ModelStatus(KubeModel):
    transition_status: str | None = None
    states: ModelRevisionStates | None = None
    last_failure_info: FailureInfo | None = None
    copies: ModelCopies | None = None


class InferenceServiceStatus(KubeModel):
    """`status`: knative duck status (conditions, observedGeneration, annotations) plus KServe's fields."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    annotations: dict[str, str] | None = None
    url: str | None = None
    address: Addressable | None = None
    components: dict[str, ComponentStatusSpec] = Field(default_factory=dict)
    model_status: ModelStatus = Field(default_factory=ModelStatus)

    # Conditions

    def conditions_manager(self, *, now: Callable[[], str] | None = None) -> ConditionManager:
        """The InferenceService condition set managing `self.conditions` in place."""
        return c.INFERENCE_SERVICE_CONDITIONS.manage(self.conditions, now=now)

    def initialize_conditions(self) -> None:
        self.conditions_manager().initialize()

    def get_condition(self, condition_type: str) -> Condition | None:
        return self.conditions_manager().get(condition_type)

    def is_ready(self) -> bool:
        """Whether the Ready condition is present and True."""
        return self.conditions_manager().is_happy()

    def is_condition_ready(self, condition_type: str) -> bool:
        cond = self.get_condition(condition_type)
        return cond is not None and cond.is_true

    def is_condition_unknown(self, condition_type: str) -> bool:
        """True when the condition is absent or Unknown."""
        cond = self.get_condition(condition_type)
        return cond is None or cond.is_unknown

    def set_condition(self, condition_type: str, source: Condition | None) -> None:
        """Copy a condition (KServe `SetCondition`): None is a no-op; False/Unknown keep reason+message."""
        self.conditions_manager().propagate(condition_type, source)

    # Knative -> InferenceService

    def propagate_status(self, component: str, ksvc_status: KnativeServiceStatus | None) -> None:
        """Fold a component's Knative Service status into this status (KServe `PropagateStatus`).

        Tracks rollouts (latest/previous rolled-out revision, including rollback), copies url and address
        only while the ksvc is Ready, maps Ready/RoutesReady/ConfigurationsReady onto the component's
        conditions with Knative's reason and message, and copies the traffic. Unlike KServe it does not copy
        the ksvc's observedGeneration: the InferenceService reports its own generation.
        """
        spec = self.components.setdefault(component, ComponentStatusSpec())
        if ksvc_status is None:
            return
        spec.latest_created_revision = ksvc_status.latest_created_revision_name
        latest_ready = ksvc_status.latest_ready_revision_name
        traffic = ksvc_status.traffic or []
        per_revision: dict[str | None, int] = {}
        for t in traffic:
            if t.percent is not None:
                per_revision[t.revision_name] = per_revision.get(t.revision_name, 0) + t.percent
        for t in traffic:
            if t.revision_name != latest_ready or not t.latest_revision:
                continue
            if spec.latest_rolledout_revision != latest_ready:
                if t.percent == 100:
                    spec.previous_rolledout_revision = spec.latest_rolledout_revision
                    spec.latest_rolledout_revision = latest_ready
            elif (
                ksvc_status.latest_created_revision_name == latest_ready
                and t.percent is not None
                and t.percent < 100
                and per_revision.get(t.revision_name) == 100
                and spec.previous_rolledout_revision
            ):
                spec.latest_rolledout_revision = spec.previous_rolledout_revision
        spec.latest_ready_revision = latest_ready
        ready = ksvc_status.get_condition(SERVICE_READY)
        if ready is not None and ready.is_true:
            if ksvc_status.address is not None:
                spec.address = ksvc_status.address.model_copy(deep=True)
            if ksvc_status.url is not None:
                spec.url = ksvc_status.url
        self.set_condition(c.READY_CONDITIONS[component], ready)
        self.set_condition(c.ROUTE_CONDITIONS[component], ksvc_status.get_condition(SERVICE_ROUTES_READY))
        self.set_condition(
            c.CONFIGURATION_CONDITIONS[component], ksvc_status.get_condition(SERVICE_CONFIGURATIONS_READY)
        )
        spec.traffic = [t.model_copy(deep=True) for t in ksvc_status.traffic] if ksvc_status.traffic else None

    def propagate_cross_component_status(self, components: Sequence[str], condition_type: str) -> None:
        """Aggregate RoutesReady or LatestDeploymentReady over the components (KServe rule).

        True if every component's condition is True; otherwise False, or Unknown when the last non-ready
        component's condition is absent/Unknown, with reason `<ComponentCondition> not ready`.
        """
        per_component = c.CROSS_COMPONENT_CONDITIONS.get(condition_type)
        if per_component is None:
            return
        aggregate = Condition(type=condition_type, status="True")
        for component in components:
            source = per_component[component]
            if not self.is_condition_ready(source):
                status: Literal["False", "Unknown"] = (
                    "Unknown" if self.is_condition_unknown(source) else "False"
                )
                aggregate = Condition(type=condition_type, status=status, reason=f"{source} not ready")
        self.set_condition(condition_type, aggregate)

    def remove_component(self, component: str) -> None:
        """Forget a component that left the spec: its status entry and its non-terminal conditions."""
        self.components.pop(component, None)
        manager = self.conditions_manager()
        for table in (c.READY_CONDITIONS, c.ROUTE_CONDITIONS, c.CONFIGURATION_CONDITIONS):
            condition_type = table[component]
            if not manager.condition_set.is_terminal(condition_type):
                manager.clear(condition_type)

    # Model status

    def update_model_revision_states(
        self, state: str, copies: ModelCopies | None = None, failure: FailureInfo | None = None
    ) -> None:
        """Set the target model state and its transition status (KServe `UpdateModelRevisionStates`)."""
        ms = self.model_status
        if ms.states is None:
            ms.states = ModelRevisionStates()
        ms.states.target_model_state = state
        if state in (c.MODEL_STATE_PENDING, c.MODEL_STATE_LOADING):
            ms.transition_status = c.TRANSITION_IN_PROGRESS
        elif state == c.MODEL_STATE_LOADED:
            ms.transition_status = c.TRANSITION_UP_TO_DATE
            ms.copies = copies
            ms.states.active_model_state = c.MODEL_STATE_LOADED
        elif state == c.MODEL_STATE_FAILED_TO_LOAD:
            ms.transition_status = c.TRANSITION_BLOCKED_BY_FAILED_LOAD
        if failure is not None:
            ms.last_failure_info = failure

    def update_model_transition_status(self, transition: str, failure: FailureInfo | None = None) -> None:
        """Record a spec problem (KServe `UpdateModelTransitionStatus`); InvalidSpec means FailedToLoad."""
        ms = self.model_status
        ms.transition_status = transition
        if transition == c.TRANSITION_INVALID_SPEC:
            if ms.states is None:
                ms.states = ModelRevisionStates()
            ms.states.target_model_state = c.MODEL_STATE_FAILED_TO_LOAD
        if failure is not None:
            ms.last_failure_info = failure

    def propagate_model_status(
        self, component_status: ComponentStatusSpec, pods: Sequence[Mapping[str, Any]], *, raw: bool = False
    ) -> None:
        """Model state from the pods of the latest revision (KServe `PropagateModelStatus`)."""
        if not pods:
            self.update_model_revision_states(c.MODEL_STATE_PENDING)
            return
        if self.is_ready() and (
            raw or component_status.latest_created_revision == component_status.latest_ready_revision
        ):
            self.update_model_revision_states(c.MODEL_STATE_LOADED, ModelCopies(total_copies=len(pods)))
            return
        pod_status: Mapping[str, Any] = pods[0].get("status") or {}
        for cs in _named(pod_status.get("initContainerStatuses"), c.STORAGE_INITIALIZER_CONTAINER_NAME):
            state = cs.get("state") or {}
            if state.get("running") is not None:
                self.update_model_revision_states(c.MODEL_STATE_LOADING)
                return
            failure = _load_failure(cs)
            if failure is not None:
                self.update_model_revision_states(c.MODEL_STATE_FAILED_TO_LOAD, failure=failure)
                return
        for cs in _named(pod_status.get("containerStatuses"), c.INFERENCE_SERVICE_CONTAINER_NAME):
            failure = _load_failure(cs)
            if failure is not None:
                self.update_model_revision_states(c.MODEL_STATE_FAILED_TO_LOAD, failure=failure)
            else:
                self.update_model_revision_states(c.MODEL_STATE_PENDING)


def _named(statuses: Iterable[Mapping[str, Any]] | None, name: str) -> list[Mapping[str, Any]]:
    return [s for s in statuses or () if s.get("name") == name]


def _load_failure(container_status: Mapping[str, Any]) -> FailureInfo | None:
    """ModelLoadFailed info for a container that exited with Error or is in CrashLoopBackOff, else None."""
    state = container_status.get("state") or {}
    terminated = state.get("terminated")
    if terminated is not None and terminated.get("reason") == c.STATE_REASON_ERROR:
        return FailureInfo(
            reason=c.FAILURE_MODEL_LOAD_FAILED,
            message=terminated.get("message"),
            exit_code=terminated.get("exitCode"),
        )
    waiting = state.get("waiting")
    if waiting is not None and waiting.get("reason") == c.STATE_REASON_CRASH_LOOP_BACK_OFF:
        last = (container_status.get("lastState") or {}).get("terminated") or {}
        return FailureInfo(
            reason=c.FAILURE_MODEL_LOAD_FAILED, message=last.get("message"), exit_code=last.get("exitCode")
        )
    return None


# --- The object -----------------------------------------------------------------------------------


class InferenceService(KubeObject):
    """A whole InferenceService object."""

    api_version: str = API_VERSION
    kind: str = KIND
    spec: InferenceServiceSpec = Field(default_factory=InferenceServiceSpec)
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)

    def owner_reference(self) -> dict[str, Any]:
        """A controller owner reference to this InferenceService (garbage collection and Owns() watches)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": str(self.metadata.get("uid", "")),
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def annotated_deployment_mode(self) -> str | None:
        """The `serving.kserve.io/deploymentMode` annotation when it names a mode, else None (then the
        `deploy` config key decides, as in KServe)."""
        mode = self.annotations.get(c.DEPLOYMENT_MODE_ANNOTATION)
        return mode if mode in c.DEPLOYMENT_MODES else None
