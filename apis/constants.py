"""Every KServe, Knative and Istio name the controllers read or write, in one place.

These strings are user-visible contract (labels users select on, annotations they set, condition types and
reasons they read in `kubectl describe`), so they must match KServe v0.11 byte for byte; keeping them here
makes a typo a single-point fix and lets tests pin them.
"""

from __future__ import annotations

from typing import Final

from apis.conditions import ConditionSet

# --- API groups -----------------------------------------------------------------------------------
KSERVE_GROUP: Final = "serving.kserve.io"

# --- Components -----------------------------------------------------------------------------------
PREDICTOR: Final = "predictor"
TRANSFORMER: Final = "transformer"
EXPLAINER: Final = "explainer"
COMPONENTS: Final = (PREDICTOR, TRANSFORMER, EXPLAINER)
"""In reconcile order."""

INFERENCE_SERVICE_CONTAINER_NAME: Final = "kserve-container"
STORAGE_INITIALIZER_CONTAINER_NAME: Final = "storage-initializer"
AGENT_CONTAINER_NAME: Final = "agent"
QUEUE_PROXY_CONTAINER_NAME: Final = "queue-proxy"

# --- Deployment modes -----------------------------------------------------------------------------
SERVERLESS: Final = "Serverless"
RAW_DEPLOYMENT: Final = "RawDeployment"
MODEL_MESH: Final = "ModelMesh"
DEPLOYMENT_MODES: Final = (SERVERLESS, RAW_DEPLOYMENT, MODEL_MESH)

# --- Protocols ------------------------------------------------------------------------------------
PROTOCOL_V1: Final = "v1"
PROTOCOL_V2: Final = "v2"
PROTOCOL_GRPC_V1: Final = "grpc-v1"
PROTOCOL_GRPC_V2: Final = "grpc-v2"
PROTOCOL_VERSIONS: Final = (PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_GRPC_V1, PROTOCOL_GRPC_V2)

# --- Labels ---------------------------------------------------------------------------------------
INFERENCE_SERVICE_LABEL: Final = "serving.kserve.io/inferenceservice"
"""On every child object and pod: the owning InferenceService's name."""
COMPONENT_LABEL: Final = "component"
TRAINED_MODEL_ISVC_LABEL: Final = "inferenceservice"
"""On a TrainedModel: its parent InferenceService (set by the TrainedModel controller)."""
TRAINED_MODEL_ALLOCATED_LABEL: Final = "serving.kserve.io/trainedmodel-allocated"
KNATIVE_VISIBILITY_LABEL: Final = "networking.knative.dev/visibility"
CLUSTER_LOCAL_VISIBILITY: Final = "cluster-local"
NETWORK_VISIBILITY_LABEL: Final = "networking.kserve.io/visibility"
"""RawDeployment's cluster-local switch (value `cluster-local`): no Ingress."""
RAW_APP_LABEL: Final = "app"
"""RawDeployment: selects a component's pods, value `isvc.<component name>` (`raw_app_label`)."""

# --- Annotations: InferenceService ----------------------------------------------------------------
DEPLOYMENT_MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS_ANNOTATION: Final = "serving.kserve.io/autoscalerClass"
AUTOSCALER_METRICS_ANNOTATION: Final = "serving.kserve.io/metrics"
TARGET_UTILIZATION_ANNOTATION: Final = "serving.kserve.io/targetUtilizationPercentage"
ENABLE_TAG_ROUTING_ANNOTATION: Final = "serving.kserve.io/enable-tag-routing"
ENABLE_METRIC_AGGREGATION_ANNOTATION: Final = "serving.kserve.io/enable-metric-aggregation"
ENABLE_PROMETHEUS_SCRAPING_ANNOTATION: Final = "serving.kserve.io/enable-prometheus-scraping"
PROMETHEUS_PORT_ANNOTATION: Final = "prometheus.kserve.io/port"
PROMETHEUS_PATH_ANNOTATION: Final = "prometheus.kserve.io/path"
DEFAULT_PROMETHEUS_PORT: Final = "8080"
DEFAULT_PROMETHEUS_PATH: Final = "/metrics"
STORAGE_INITIALIZER_UID_ANNOTATION: Final = "serving.kserve.io/storage-initializer-uid"
STORAGE_SECRET_NAME_ANNOTATION: Final = "serving.kserve.io/storageSecretName"
GKE_ACCELERATOR_ANNOTATION: Final = "serving.kserve.io/gke-accelerator"
LAST_APPLIED_CONFIG_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"

# --- Annotations: internal (controller -> pod webhook) --------------------------------------------
STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION: Final = "internal.serving.kserve.io/storage-initializer-sourceuri"
STORAGE_SPEC_ANNOTATION: Final = "internal.serving.kserve.io/storage-spec"
STORAGE_SPEC_PARAM_ANNOTATION: Final = "internal.serving.kserve.io/storage-spec-param"
STORAGE_SPEC_KEY_ANNOTATION: Final = "internal.serving.kserve.io/storage-spec-key"
LOGGER_ANNOTATION: Final = "internal.serving.kserve.io/logger"
LOGGER_SINK_URL_ANNOTATION: Final = "internal.serving.kserve.io/logger-sink-url"
LOGGER_MODE_ANNOTATION: Final = "internal.serving.kserve.io/logger-mode"
BATCHER_ANNOTATION: Final = "internal.serving.kserve.io/batcher"
BATCHER_MAX_BATCH_SIZE_ANNOTATION: Final = "internal.serving.kserve.io/batcher-max-batchsize"
BATCHER_MAX_LATENCY_ANNOTATION: Final = "internal.serving.kserve.io/batcher-max-latency"
BATCHER_TIMEOUT_ANNOTATION: Final = "internal.serving.kserve.io/batcher-timeout"
AGENT_ANNOTATION: Final = "internal.serving.kserve.io/agent"
AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION: Final = "internal.serving.kserve.io/configVolumeName"
AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION: Final = "internal.serving.kserve.io/configMountPath"
AGENT_MODEL_DIR_ANNOTATION: Final = "internal.serving.kserve.io/modelDir"

# --- Annotations: Knative autoscaling and rollout -------------------------------------------------
KNATIVE_AUTOSCALING_CLASS_ANNOTATION: Final = "autoscaling.knative.dev/class"
KNATIVE_KPA_CLASS: Final = "kpa.autoscaling.knative.dev"
KNATIVE_MIN_SCALE_ANNOTATION: Final = "autoscaling.knative.dev/min-scale"
KNATIVE_MAX_SCALE_ANNOTATION: Final = "autoscaling.knative.dev/max-scale"
KNATIVE_TARGET_ANNOTATION: Final = "autoscaling.knative.dev/target"
KNATIVE_METRIC_ANNOTATION: Final = "autoscaling.knative.dev/metric"
KNATIVE_ROLLOUT_DURATION_ANNOTATION: Final = "serving.knative.dev/rollout-duration"
KNATIVE_OPENSHIFT_PASSTHROUGH_ANNOTATION: Final = "serving.knative.openshift.io/enablePassthrough"

SERVICE_ANNOTATION_DISALLOWED: Final = frozenset(
    {
        KNATIVE_MIN_SCALE_ANNOTATION,
        KNATIVE_MAX_SCALE_ANNOTATION,
        STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION,
        LAST_APPLIED_CONFIG_ANNOTATION,
    }
)
"""InferenceService annotations never copied to a child (KServe `ServiceAnnotationDisallowedList`)."""

KSVC_METADATA_ANNOTATIONS: Final = (
    KNATIVE_ROLLOUT_DURATION_ANNOTATION,
    KNATIVE_OPENSHIFT_PASSTHROUGH_ANNOTATION,
)
"""The only annotations moved from the revision template onto the Knative Service itself."""

REVISION_TEMPLATE_LABEL_DISALLOWED: Final = frozenset({KNATIVE_VISIBILITY_LABEL})
"""Labels that reach the Knative Service but not its revision template."""

DEFAULT_MIN_REPLICAS: Final = 1

# --- Autoscaling enums (validation) ---------------------------------------------------------------
AUTOSCALER_CLASS_HPA: Final = "hpa"
AUTOSCALER_CLASS_EXTERNAL: Final = "external"
"""RawDeployment without an HPA: something else (e.g. KEDA) scales the Deployment (KServe v0.12+)."""
AUTOSCALER_CLASSES: Final = (AUTOSCALER_CLASS_HPA, AUTOSCALER_CLASS_EXTERNAL)
HPA_METRICS: Final = ("cpu", "memory")
KPA_METRICS: Final = ("concurrency", "rps")
LOGGER_MODES: Final = ("all", "request", "response")

# --- Finalizers -----------------------------------------------------------------------------------
INFERENCE_SERVICE_FINALIZER: Final = "inferenceservice.finalizers"
TRAINED_MODEL_FINALIZER: Final = "trainedmodel.finalizer"

# --- ConfigMaps -----------------------------------------------------------------------------------
INFERENCE_SERVICE_CONFIGMAP: Final = "inferenceservice-config"
MODEL_CONFIG_FILE_NAME: Final = "models.json"


def model_configmap_name(isvc_name: str, shard: int = 0) -> str:
    """The multi-model ConfigMap of an InferenceService shard: `modelconfig-<isvc>-<shard>`."""
    return f"modelconfig-{isvc_name}-{shard}"


# --- Names ----------------------------------------------------------------------------------------


def component_name(isvc_name: str, component: str) -> str:
    """The Knative Service / Deployment of a component: `<isvc>-<component>`."""
    return f"{isvc_name}-{component}"


def raw_app_label(component_name: str) -> str:
    """The `app` label value of a RawDeployment component's pods (KServe `GetRawServiceLabel`)."""
    return f"isvc.{component_name}"


def legacy_component_name(isvc_name: str, component: str) -> str:
    """The kfserving-era name, kept when such an object already exists: `<isvc>-<component>-default`."""
    return f"{isvc_name}-{component}-default"


# --- InferenceService condition types -------------------------------------------------------------
READY: Final = "Ready"
PREDICTOR_READY: Final = "PredictorReady"
TRANSFORMER_READY: Final = "TransformerReady"
EXPLAINER_READY: Final = "ExplainerReady"
PREDICTOR_ROUTE_READY: Final = "PredictorRouteReady"
TRANSFORMER_ROUTE_READY: Final = "TransformerRouteReady"
EXPLAINER_ROUTES_READY: Final = "ExplainerRoutesReady"
"""Sic: KServe spells the explainer's route condition with a plural."""
PREDICTOR_CONFIGURATION_READY: Final = "PredictorConfigurationReady"
TRANSFORMER_CONFIGURATION_READY: Final = "TransformerConfigurationReady"
EXPLAINER_CONFIGURATION_READY: Final = "ExplainerConfigurationReady"
INGRESS_READY: Final = "IngressReady"
ROUTES_READY: Final = "RoutesReady"
LATEST_DEPLOYMENT_READY: Final = "LatestDeploymentReady"

READY_CONDITIONS: Final = {
    PREDICTOR: PREDICTOR_READY,
    TRANSFORMER: TRANSFORMER_READY,
    EXPLAINER: EXPLAINER_READY,
}
ROUTE_CONDITIONS: Final = {
    PREDICTOR: PREDICTOR_ROUTE_READY,
    TRANSFORMER: TRANSFORMER_ROUTE_READY,
    EXPLAINER: EXPLAINER_ROUTES_READY,
}
CONFIGURATION_CONDITIONS: Final = {
    PREDICTOR: PREDICTOR_CONFIGURATION_READY,
    TRANSFORMER: TRANSFORMER_CONFIGURATION_READY,
    EXPLAINER: EXPLAINER_CONFIGURATION_READY,
}
CROSS_COMPONENT_CONDITIONS: Final = {
    ROUTES_READY: ROUTE_CONDITIONS,
    LATEST_DEPLOYMENT_READY: CONFIGURATION_CONDITIONS,
}
"""Aggregate condition -> the per-component conditions it is computed from."""

INFERENCE_SERVICE_CONDITIONS: Final = ConditionSet.living(PREDICTOR_READY, INGRESS_READY)
"""KServe's v1beta1 condition set: Ready follows PredictorReady and IngressReady only."""

# --- InferenceService condition reasons (ingress gating) ------------------------------------------
PREDICTOR_INGRESS_NOT_CREATED: Final = "Predictor ingress not created"
TRANSFORMER_INGRESS_NOT_CREATED: Final = "Transformer ingress not created"
EXPLAINER_INGRESS_NOT_CREATED: Final = "Explainer ingress not created"
INGRESS_NOT_CREATED_REASONS: Final = {
    PREDICTOR: PREDICTOR_INGRESS_NOT_CREATED,
    TRANSFORMER: TRANSFORMER_INGRESS_NOT_CREATED,
    EXPLAINER: EXPLAINER_INGRESS_NOT_CREATED,
}

# --- Event reasons --------------------------------------------------------------------------------
EVENT_INFERENCE_SERVICE_READY: Final = "InferenceServiceReady"
EVENT_INFERENCE_SERVICE_NOT_READY: Final = "InferenceServiceNotReady"
EVENT_UPDATE_FAILED: Final = "UpdateFailed"
EVENT_INTERNAL_ERROR: Final = "InternalError"
EVENT_SOURCE_COMPONENT: Final = "v1beta1Controllers"

# --- Model status enums ---------------------------------------------------------------------------
TRANSITION_UP_TO_DATE: Final = "UpToDate"
TRANSITION_IN_PROGRESS: Final = "InProgress"
TRANSITION_BLOCKED_BY_FAILED_LOAD: Final = "BlockedByFailedLoad"
TRANSITION_INVALID_SPEC: Final = "InvalidSpec"

MODEL_STATE_PENDING: Final = "Pending"
MODEL_STATE_STANDBY: Final = "Standby"
MODEL_STATE_LOADING: Final = "Loading"
MODEL_STATE_LOADED: Final = "Loaded"
MODEL_STATE_FAILED_TO_LOAD: Final = "FailedToLoad"

FAILURE_MODEL_LOAD_FAILED: Final = "ModelLoadFailed"
FAILURE_RUNTIME_UNHEALTHY: Final = "RuntimeUnhealthy"
FAILURE_RUNTIME_DISABLED: Final = "RuntimeDisabled"
FAILURE_NO_SUPPORTING_RUNTIME: Final = "NoSupportingRuntime"
FAILURE_RUNTIME_NOT_RECOGNIZED: Final = "RuntimeNotRecognized"
FAILURE_INVALID_PREDICTOR_SPEC: Final = "InvalidPredictorSpec"

# --- Pod state reasons read by model-status propagation -------------------------------------------
STATE_REASON_ERROR: Final = "Error"
STATE_REASON_CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"

# --- Default arguments ----------------------------------------------------------------------------
TRANSFORMER_DEFAULT_ARGS_HTTP_PORT: Final = "8080"
