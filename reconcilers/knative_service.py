"""One Knative Service per InferenceService component: the desired object, and writing it only when needed.

The builders are pure functions of the InferenceService, the runtimes and the explainer images, so every
naming, labelling, annotation and traffic rule of KServe v0.11 (kserve-behaviour.md §3.3) is pinned by table
tests without a cluster. The reconciler around them reads everything from the shared cache and writes through
`reconcilers.apply.apply_if_changed`, so a steady state costs no API request (KServe v0.11 updates every
Knative Service on every reconcile).

Rules worth knowing when reading the code:

- Labels, lowest to highest priority: the runtime's, the InferenceService's, the component's, then
  `serving.kserve.io/inferenceservice` and `component`. Annotations: the runtime's, the InferenceService's,
  the component's, with the disallow list (min/max-scale, the storage-initializer source URI,
  last-applied-configuration) removed from the user's, so only the controller sets those.
- The revision template carries every annotation except `serving.knative.dev/rollout-duration` and
  `serving.knative.openshift.io/enablePassthrough`, which belong on the Knative Service itself, and every
  label except `networking.knative.dev/visibility`, which only the route understands.
- Traffic pins the last rolled-out revision while a canary runs (`canaryTrafficPercent` with a rolled-out
  revision in status), tagged `prev`; otherwise 100% follows the latest revision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from apis import constants as c
from apis.config import ExplainersConfig
from apis.inferenceservice import (
    ART,
    ComponentSpec,
    ExplainerSpec,
    InferenceService,
    PredictorSpec,
    StorageSpec,
)
from apis.knative import (
    KNATIVE_SERVICE_KIND,
    KNATIVE_SERVING_GROUP,
    KNATIVE_SERVING_VERSION,
    TAG_LATEST,
    TAG_PREV,
)
from apis.resources import CLUSTER_SERVING_RUNTIMES, KNATIVE_SERVICES, SERVING_RUNTIMES
from apis.storage import STORAGE_URI_PREFIXES, is_supported_storage_uri
from manager.cache import Cache
from manager.client import Client, Object
from manager.errors import ApiError, Conflict, NotFound
from reconcilers.apply import apply_if_changed
from reconcilers.modelconfig import MULTI_MODEL_SERVER_ENV
from reconcilers.runtime import (
    REASON_INVALID_SPEC,
    REASON_INVALID_STORAGE_URI,
    ComponentSpecError,
    RuntimeLike,
    resolve_model,
)

__all__ = [
    "ComponentSpecError",
    "KnativeServiceReconciler",
    "component_name",
    "desired_knative_service",
    "validate_storage_uri",
]

log = logging.getLogger(__name__)

KSVC_API_VERSION: Final = f"{KNATIVE_SERVING_GROUP}/{KNATIVE_SERVING_VERSION}"
REASON_NOT_OWNED: Final = "KnativeServiceNotOwned"

STORAGE_URI_ENV: Final = "STORAGE_URI"
"""A custom container's model location (KServe `CustomSpecStorageUriEnvVarKey`)."""
STORAGE_PATH_SCHEME_PLACEHOLDER: Final = "<scheme-placeholder>"
MODEL_CONFIG_MOUNT_PATH: Final = "/mnt/configs"
MODEL_DIR: Final = "/mnt/models"
DEFAULT_LOGGER_MODE: Final = "all"

ARG_MODEL_NAME: Final = "--model_name"
ARG_PREDICTOR_HOST: Final = "--predictor_host"
ARG_HTTP_PORT: Final = "--http_port"
ARG_WORKERS: Final = "--workers"
ARG_STORAGE_URI: Final = "--storage_uri"
ARG_ADVERSARY_TYPE: Final = "--adversary_type"


# --- Names ----------------------------------------------------------------------------------------


def component_name(isvc: InferenceService, component: str, existing_names: Collection[str] = ()) -> str:
    """`<isvc>-<component>`, or the kfserving-era `<isvc>-<component>-default` when that one exists."""
    legacy = c.legacy_component_name(isvc.name, component)
    return legacy if legacy in existing_names else c.component_name(isvc.name, component)


# --- Validation -----------------------------------------------------------------------------------


def validate_storage_uri(uri: str) -> None:
    """KServe `ValidateStorageURI`: a local path, a supported scheme, or an Azure blob URL."""
    if is_supported_storage_uri(uri):
        return
    raise ComponentSpecError(
        REASON_INVALID_STORAGE_URI,
        "StorageURI not supported: storageUri, must be one of: "
        f"[{', '.join(STORAGE_URI_PREFIXES)}] or match "
        "https://{}.blob.core.windows.net/{}/{} or be an absolute or relative local path. "
        f"StorageUri [{uri}] is not supported.",
    )


_IMPLEMENTATION_FIELDS: Final = {
    c.PREDICTOR: "sklearn, xgboost, tensorflow, pytorch, triton, onnx, pmml, lightgbm, paddle, "
    "model, containers",
    c.TRANSFORMER: "containers",
    c.EXPLAINER: "alibi, art, containers",
}


def _implementation(spec: ComponentSpec, component: str) -> str:
    found = spec.implementations()
    if len(found) != 1:
        what = "none" if not found else ", ".join(found)
        raise ComponentSpecError(
            REASON_INVALID_SPEC,
            f"exactly one of [{_IMPLEMENTATION_FIELDS[component]}] must be specified in {component} "
            f"(found {what})",
        )
    return found[0]


# --- Annotations ----------------------------------------------------------------------------------


def _allowed(annotations: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (annotations or {}).items() if k not in c.SERVICE_ANNOTATION_DISALLOWED}


def _add_logger_annotations(spec: ComponentSpec, annotations: dict[str, str]) -> None:
    logger = spec.logger
    if logger is None:
        return
    annotations[c.LOGGER_ANNOTATION] = "true"
    if logger.url is not None:
        annotations[c.LOGGER_SINK_URL_ANNOTATION] = logger.url
    annotations[c.LOGGER_MODE_ANNOTATION] = logger.mode or DEFAULT_LOGGER_MODE


def _add_batcher_annotations(spec: ComponentSpec, annotations: dict[str, str]) -> None:
    batcher = spec.batcher
    if batcher is None:
        return
    annotations[c.BATCHER_ANNOTATION] = "true"
    if batcher.max_batch_size is not None:
        annotations[c.BATCHER_MAX_BATCH_SIZE_ANNOTATION] = str(batcher.max_batch_size)
    if batcher.max_latency is not None:
        annotations[c.BATCHER_MAX_LATENCY_ANNOTATION] = str(batcher.max_latency)
    if batcher.timeout is not None:
        annotations[c.BATCHER_TIMEOUT_ANNOTATION] = str(batcher.timeout)


def _add_storage_spec_annotations(storage: StorageSpec | None, annotations: dict[str, str]) -> None:
    if storage is None:
        return
    annotations[c.STORAGE_SPEC_ANNOTATION] = "true"
    if storage.parameters is not None:
        annotations[c.STORAGE_SPEC_PARAM_ANNOTATION] = json.dumps(
            storage.parameters, sort_keys=True, separators=(",", ":")
        )
    if storage.key is not None:
        annotations[c.STORAGE_SPEC_KEY_ANNOTATION] = storage.key
    if storage.path is not None:
        annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] = (
            f"{STORAGE_PATH_SCHEME_PLACEHOLDER}://{storage.path}"
        )


def _set_storage_uri(uri: str | None, annotations: dict[str, str], *, exclusive: bool = False) -> None:
    if not uri:
        return
    if exclusive and c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION in annotations:
        raise ComponentSpecError(REASON_INVALID_SPEC, "must provide only one of storageUri and storage.path")
    annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] = uri
    validate_storage_uri(uri)


def _env_value(container: Mapping[str, Any], name: str) -> str | None:
    for env in container.get("env") or ():
        if isinstance(env, Mapping) and env.get("name") == name:
            value = env.get("value")
            return value if isinstance(value, str) else None
    return None


# --- Containers -----------------------------------------------------------------------------------


def _has_arg(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _custom_container(spec: ComponentSpec) -> dict[str, Any]:
    container = spec.custom_container()
    obj = container.to_object() if container is not None else {}
    obj["name"] = c.INFERENCE_SERVICE_CONTAINER_NAME
    return obj


def _with_container(spec: ComponentSpec, container: dict[str, Any]) -> dict[str, Any]:
    """The component's inlined pod spec with `containers[0]` replaced by (or set to) `container`."""
    pod_spec = spec.pod_spec()
    containers = list(pod_spec.get("containers") or [])
    pod_spec["containers"] = [container, *containers[1:]]
    return pod_spec


def _append_if_absent(args: list[str], flag: str, value: str) -> None:
    if not _has_arg(args, flag):
        args.extend((flag, value))


def _transformer_container(
    isvc: InferenceService, spec: ComponentSpec, predictor_host: str
) -> dict[str, Any]:
    container = _custom_container(spec)
    args: list[str] = list(container.get("args") or [])
    _append_if_absent(args, ARG_MODEL_NAME, isvc.name)
    _append_if_absent(args, ARG_PREDICTOR_HOST, f"{predictor_host}.{isvc.namespace}")
    _append_if_absent(args, ARG_HTTP_PORT, c.TRANSFORMER_DEFAULT_ARGS_HTTP_PORT)
    if spec.container_concurrency is not None:
        _append_if_absent(args, ARG_WORKERS, str(spec.container_concurrency))
    container["args"] = args
    return container


def _explainer_container(
    isvc: InferenceService,
    spec: ExplainerSpec,
    predictor_host: str,
    explainers_config: ExplainersConfig | None,
) -> dict[str, Any]:
    found = spec.explainer()
    if found is None:
        return _transformer_container(isvc, spec, predictor_host)
    kind, explainer = found
    image_config = getattr(explainers_config, kind, None) if explainers_config is not None else None
    container = explainer.container().to_object()
    user_args: list[str] = list(container.get("args") or [])
    args = [ARG_MODEL_NAME, isvc.name, ARG_HTTP_PORT, c.TRANSFORMER_DEFAULT_ARGS_HTTP_PORT]
    if not _has_arg(user_args, ARG_PREDICTOR_HOST):
        args += [ARG_PREDICTOR_HOST, f"{predictor_host}.{isvc.namespace}"]
    if spec.container_concurrency is not None and not _has_arg(user_args, ARG_WORKERS):
        args += [ARG_WORKERS, str(spec.container_concurrency)]
    if explainer.storage_uri:
        args += [ARG_STORAGE_URI, MODEL_DIR]
    if explainer.type is not None:
        args += [ARG_ADVERSARY_TYPE, explainer.type] if kind == ART else [explainer.type]
    for key in sorted(explainer.config or {}):
        args += [f"--{key}", (explainer.config or {})[key]]
    if not container.get("image"):
        if image_config is None:
            raise ComponentSpecError(
                REASON_INVALID_SPEC,
                f'explainer "{kind}" has no image: key "explainers" of inferenceservice-config '
                "does not configure it",
            )
        version = explainer.runtime_version or image_config.default_image_version
        container["image"] = f"{image_config.image}:{version}"
    container["name"] = c.INFERENCE_SERVICE_CONTAINER_NAME
    container["args"] = args + user_args
    return container


# --- Per-component metadata and pod spec ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parts:
    """What a component contributes before the Knative-specific shaping."""

    labels: dict[str, str]
    annotations: dict[str, str]
    pod_spec: dict[str, Any]
    spec: ComponentSpec


def _component_labels(
    isvc: InferenceService, component: str, spec: ComponentSpec, runtime_labels: Mapping[str, str]
) -> dict[str, str]:
    return {
        **runtime_labels,
        **isvc.labels,
        **(spec.labels or {}),
        c.INFERENCE_SERVICE_LABEL: isvc.name,
        c.COMPONENT_LABEL: component,
    }


def _predictor_parts(isvc: InferenceService, spec: PredictorSpec, runtimes: Sequence[RuntimeLike]) -> _Parts:
    _implementation(spec, c.PREDICTOR)
    annotations = _allowed(isvc.annotations)
    _add_logger_annotations(spec, annotations)
    _add_batcher_annotations(spec, annotations)
    model = spec.model_spec()
    _add_storage_spec_annotations(model.storage if model is not None else None, annotations)
    runtime_labels: dict[str, str] = {}
    runtime_annotations: dict[str, str] = {}
    if model is not None:
        _set_storage_uri(model.storage_uri, annotations, exclusive=True)
        resolved = resolve_model(isvc, model, spec.pod_spec(), runtimes)
        pod_spec = resolved.pod_spec
        runtime_labels = resolved.labels
        runtime_annotations = resolved.annotations
    else:
        container = _custom_container(spec)
        if _env_value(container, MULTI_MODEL_SERVER_ENV) == "true":
            annotations[c.AGENT_ANNOTATION] = "true"
            annotations[c.AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION] = c.model_configmap_name(isvc.name)
            annotations[c.AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION] = MODEL_CONFIG_MOUNT_PATH
            annotations[c.AGENT_MODEL_DIR_ANNOTATION] = MODEL_DIR
        _set_storage_uri(_env_value(container, STORAGE_URI_ENV), annotations, exclusive=True)
        pod_spec = _with_container(spec, container)
    return _Parts(
        _component_labels(isvc, c.PREDICTOR, spec, runtime_labels),
        {**runtime_annotations, **annotations, **_allowed(spec.annotations)},
        pod_spec,
        spec,
    )


def _transformer_parts(isvc: InferenceService, spec: ComponentSpec, predictor_host: str) -> _Parts:
    _implementation(spec, c.TRANSFORMER)
    annotations = _allowed(isvc.annotations)
    container = _transformer_container(isvc, spec, predictor_host)
    _set_storage_uri(_env_value(container, STORAGE_URI_ENV), annotations)
    _add_logger_annotations(spec, annotations)
    _add_batcher_annotations(spec, annotations)
    return _Parts(
        _component_labels(isvc, c.TRANSFORMER, spec, {}),
        {**annotations, **_allowed(spec.annotations)},
        _with_container(spec, container),
        spec,
    )


def _explainer_parts(
    isvc: InferenceService,
    spec: ExplainerSpec,
    predictor_host: str,
    explainers_config: ExplainersConfig | None,
) -> _Parts:
    _implementation(spec, c.EXPLAINER)
    annotations = _allowed(isvc.annotations)
    found = spec.explainer()
    container = _explainer_container(isvc, spec, predictor_host, explainers_config)
    uri = found[1].storage_uri if found is not None else _env_value(container, STORAGE_URI_ENV)
    _set_storage_uri(uri, annotations)
    _add_logger_annotations(spec, annotations)
    return _Parts(
        _component_labels(isvc, c.EXPLAINER, spec, {}),
        {**annotations, **_allowed(spec.annotations)},
        _with_container(spec, container),
        spec,
    )


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


def _knative_service(isvc: InferenceService, component: str, name: str, parts: _Parts) -> dict[str, Any]:
    spec = parts.spec
    annotations = dict(parts.annotations)
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
    template_labels = {k: v for k, v in parts.labels.items() if k not in c.REVISION_TEMPLATE_LABEL_DISALLOWED}
    revision_spec: dict[str, Any] = dict(parts.pod_spec)
    if spec.container_concurrency is not None:
        revision_spec["containerConcurrency"] = spec.container_concurrency
    if spec.timeout is not None:
        revision_spec["timeoutSeconds"] = spec.timeout
    metadata: dict[str, Any] = {"name": name, "namespace": isvc.namespace, "labels": dict(parts.labels)}
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
            "traffic": _traffic(isvc, component, spec, annotations),
        },
    }


def desired_knative_service(
    isvc: InferenceService,
    component: str,
    *,
    runtimes: Sequence[RuntimeLike] = (),
    explainers_config: ExplainersConfig | None = None,
    existing_names: Collection[str] = (),
) -> dict[str, Any]:
    """The whole desired Knative Service of one component (`ComponentSpecError` for a bad spec).

    `runtimes` are the namespace's ServingRuntimes and the ClusterServingRuntimes (typed or JSON, mixed);
    `existing_names` are the Knative Services that exist in the namespace (only legacy `-default` names
    matter: they keep that name for the component and for the hosts other components point at).
    """
    spec = isvc.spec
    name = component_name(isvc, component, existing_names)
    predictor_name = component_name(isvc, c.PREDICTOR, existing_names)
    if component == c.PREDICTOR:
        parts = _predictor_parts(isvc, spec.predictor, runtimes)
    elif component == c.TRANSFORMER and spec.transformer is not None:
        parts = _transformer_parts(isvc, spec.transformer, predictor_name)
    elif component == c.EXPLAINER and spec.explainer is not None:
        target = (
            component_name(isvc, c.TRANSFORMER, existing_names)
            if spec.transformer is not None
            else predictor_name
        )
        parts = _explainer_parts(isvc, spec.explainer, target, explainers_config)
    else:
        raise ValueError(f"InferenceService {isvc.namespace}/{isvc.name} has no {component}")
    return _knative_service(isvc, component, name, parts)


# --- The reconciler -------------------------------------------------------------------------------


def _controller_uid(obj: Object) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid is not None else None
    return None


class KnativeServiceReconciler:
    """Keeps each component's Knative Service as desired, from the cache, writing only on a difference."""

    def __init__(self, client: Client, cache: Cache) -> None:
        self._client = client
        self._cache = cache

    def _existing_names(self, isvc: InferenceService) -> set[str]:
        names = (c.legacy_component_name(isvc.name, component) for component in c.COMPONENTS)
        return {n for n in names if self._cache.get(KNATIVE_SERVICES, n, isvc.namespace) is not None}

    def _runtimes(self, isvc: InferenceService) -> list[Object]:
        return [
            *self._cache.list(SERVING_RUNTIMES, isvc.namespace),
            *self._cache.list(CLUSTER_SERVING_RUNTIMES),
        ]

    async def reconcile(
        self, isvc: InferenceService, component: str, *, explainers_config: ExplainersConfig | None
    ) -> dict[str, Any] | None:
        """Bring the component's Knative Service to the desired state; return its `status` (`{}` if new).

        Raises `ComponentSpecError` for a spec the user must fix, including a Knative Service of the same
        name that this InferenceService does not control, and a Knative Service the API server rejects.
        """
        needs_runtime = component == c.PREDICTOR and isvc.spec.predictor.model_spec() is not None
        desired = desired_knative_service(
            isvc,
            component,
            runtimes=self._runtimes(isvc) if needs_runtime else (),
            explainers_config=explainers_config,
            existing_names=self._existing_names(isvc),
        )
        name = desired["metadata"]["name"]
        live = self._cache.get(KNATIVE_SERVICES, name, isvc.namespace)
        if live is not None and _controller_uid(live) != isvc.metadata.get("uid"):
            raise ComponentSpecError(
                REASON_NOT_OWNED,
                f'Knative Service "{isvc.namespace}/{name}" already exists and is not controlled by '
                f'InferenceService "{isvc.name}"',
            )
        try:
            written = await apply_if_changed(self._client, KNATIVE_SERVICES, desired, live)
        except ApiError as exc:
            if exc.status in (400, 422):
                raise ComponentSpecError(
                    REASON_INVALID_SPEC, f'Knative Service "{name}" was rejected: {exc.message}'
                ) from None
            raise
        if written is not None:
            log.info("applied Knative Service %s/%s", isvc.namespace, name)
            return dict(written.get("status") or {})
        return dict(live.get("status") or {}) if live is not None else {}

    async def delete(self, isvc: InferenceService, component: str) -> bool:
        """Delete the component's Knative Service if this InferenceService controls it; True if issued."""
        issued = False
        for name in (c.component_name(isvc.name, component), c.legacy_component_name(isvc.name, component)):
            live = self._cache.get(KNATIVE_SERVICES, name, isvc.namespace)
            if live is None or _controller_uid(live) != isvc.metadata.get("uid"):
                continue
            if live.get("metadata", {}).get("deletionTimestamp") is not None:
                continue
            try:
                await self._client.delete(
                    KNATIVE_SERVICES,
                    name,
                    isvc.namespace,
                    propagation_policy="Background",
                    uid=live["metadata"].get("uid"),
                )
            except (NotFound, Conflict):
                continue
            log.info("deleted Knative Service %s/%s", isvc.namespace, name)
            issued = True
        return issued
