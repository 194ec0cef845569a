"""Component assembly: what every deployment mode runs for a predictor, transformer or explainer.

Whatever the mode (Serverless: a Knative Service; RawDeployment: a Deployment, a Service and an HPA), a
component is the same pod: the model server container (from a ServingRuntime for a `model` predictor, else
the user's container), KServe's arguments for a transformer or explainer, and the annotations that tell the
pod webhook what to inject (storage initializer, logger, batcher, agent). This module builds that, and
nothing mode-specific: a `Component` is handed to a deployment backend (`reconcilers.backend`), which turns
it into its children. Every rule here is KServe v0.11's (kserve-behaviour.md §3.3) and is pinned by table
tests without a cluster.

Rules worth knowing when reading the code:

- Labels, lowest to highest priority: the runtime's, the InferenceService's (including those the
  predictor's runtime defaults add, e.g. `serviceEnvelope`, which every later component and the ingress
  carry too, as in KServe), the component's, then `serving.kserve.io/inferenceservice` and `component`.
  Annotations: the runtime's, the InferenceService's, the component's, with the disallow list
  (min/max-scale, the storage-initializer source URI, last-applied-configuration) removed from the user's,
  so only the controller sets those.
- A `model` or framework predictor without a model location is multi-model (KServe `IsMMSPredictor`): it
  gets the agent annotations, as a custom container with `MULTI_MODEL_SERVER=true` does.
- A component keeps the kfserving-era name `<isvc>-<component>-default` while its backend still has a child
  of that name (the backend says which names exist), and the hosts other components point at follow it.
- Config keys are read only where needed: `explainers` only for a built-in explainer.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from apis import constants as c
from apis.config import ConfigError, ExplainersConfig, InferenceServicesConfig
from apis.inferenceservice import (
    ART,
    ComponentSpec,
    ExplainerSpec,
    InferenceService,
    PredictorSpec,
    StorageSpec,
)
from apis.resources import CLUSTER_SERVING_RUNTIMES, CLUSTER_STORAGE_CONTAINERS, SERVING_RUNTIMES
from apis.servingruntime import MalformedRuntime
from apis.storage import STORAGE_URI_PREFIXES, go_json, is_supported_storage_uri
from apis.storagecontainer import StorageContainerError
from manager.cache import Cache
from manager.client import Object, Resource
from reconcilers.modelconfig import is_mms_predictor
from reconcilers.runtime import (
    REASON_INVALID_SPEC,
    REASON_INVALID_STORAGE_URI,
    ComponentSpecError,
    RuntimeLike,
    parse_runtime,
    resolve_model,
)

__all__ = [
    "REASON_INVALID_CONFIG",
    "Component",
    "ComponentBuilder",
    "ComponentSpecError",
    "build_component",
    "component_name",
    "validate_storage_uri",
]

log = logging.getLogger(__name__)

REASON_INVALID_CONFIG: Final = "InvalidConfiguration"
"""Our reason for a broken `inferenceservice-config` key (KServe retries those forever without one)."""
RUNTIME_PARSE_CACHE_LIMIT: Final = 1024

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


def existing_legacy_names(cache: Cache, resource: Resource, isvc: InferenceService) -> set[str]:
    """The `<isvc>-<component>-default` objects of `resource` in the cache (each mode checks its own kind)."""
    names = (c.legacy_component_name(isvc.name, component) for component in c.COMPONENTS)
    return {n for n in names if cache.get(resource, n, isvc.namespace) is not None}


# --- Validation -----------------------------------------------------------------------------------


def validate_storage_uri(uri: str, storage_containers: Sequence[Object] = ()) -> None:
    """KServe `ValidateStorageURI`: served by a ClusterStorageContainer, a local path, a supported scheme, or
    an Azure blob URL."""
    try:
        if is_supported_storage_uri(uri, storage_containers):
            return
    except StorageContainerError as exc:
        raise ComponentSpecError(REASON_INVALID_STORAGE_URI, f"StorageURI not supported: {exc}") from None
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
        annotations[c.STORAGE_SPEC_PARAM_ANNOTATION] = go_json(storage.parameters)
    if storage.key is not None:
        annotations[c.STORAGE_SPEC_KEY_ANNOTATION] = storage.key
    if storage.path is not None:
        path = storage.path.removeprefix("/")
        annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] = (
            f"{STORAGE_PATH_SCHEME_PLACEHOLDER}://{path}"
        )


def _set_storage_uri(
    uri: str | None,
    annotations: dict[str, str],
    storage_containers: Sequence[Object],
    *,
    exclusive: bool = False,
) -> None:
    if not uri:
        return
    if exclusive and c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION in annotations:
        raise ComponentSpecError(REASON_INVALID_SPEC, "must provide only one of storageUri and storage.path")
    annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] = uri
    validate_storage_uri(uri, storage_containers)


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
class Component:
    """One component as every deployment mode needs it, before any mode-specific shaping."""

    component: str
    """predictor, transformer or explainer."""
    name: str
    """The name of its children: `<isvc>-<component>`, or the legacy `<isvc>-<component>-default`."""
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]
    pod_spec: dict[str, Any]
    spec: ComponentSpec
    """The component's spec: replicas, scaling, concurrency, timeout and canary traffic."""
    isvc_labels: dict[str, str]
    """The InferenceService's labels after this component (the predictor's runtime defaults add some)."""


def _component_labels(
    isvc: InferenceService,
    isvc_labels: Mapping[str, str],
    component: str,
    spec: ComponentSpec,
    runtime_labels: Mapping[str, str],
) -> dict[str, str]:
    return {
        **runtime_labels,
        **isvc_labels,
        **(spec.labels or {}),
        c.INFERENCE_SERVICE_LABEL: isvc.name,
        c.COMPONENT_LABEL: component,
    }


def _predictor(
    isvc: InferenceService,
    name: str,
    spec: PredictorSpec,
    runtimes: Sequence[RuntimeLike],
    storage_containers: Sequence[Object],
) -> Component:
    _implementation(spec, c.PREDICTOR)
    annotations = _allowed(isvc.annotations)
    _add_logger_annotations(spec, annotations)
    _add_batcher_annotations(spec, annotations)
    model = spec.model_spec()
    _add_storage_spec_annotations(model.storage if model is not None else None, annotations)
    if is_mms_predictor(spec):
        annotations[c.AGENT_ANNOTATION] = "true"
        annotations[c.AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION] = c.model_configmap_name(isvc.name)
        annotations[c.AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION] = MODEL_CONFIG_MOUNT_PATH
        annotations[c.AGENT_MODEL_DIR_ANNOTATION] = MODEL_DIR
    runtime_labels: dict[str, str] = {}
    runtime_annotations: dict[str, str] = {}
    isvc_labels = isvc.labels
    if model is not None:
        resolved = resolve_model(isvc, model, spec.pod_spec(), runtimes)
        _set_storage_uri(model.storage_uri, annotations, storage_containers, exclusive=True)
        pod_spec = resolved.pod_spec
        runtime_labels = resolved.labels
        runtime_annotations = resolved.annotations
        isvc_labels = resolved.isvc_labels
    else:
        container = _custom_container(spec)
        _set_storage_uri(
            _env_value(container, STORAGE_URI_ENV), annotations, storage_containers, exclusive=True
        )
        pod_spec = _with_container(spec, container)
    return Component(
        c.PREDICTOR,
        name,
        isvc.namespace,
        _component_labels(isvc, isvc_labels, c.PREDICTOR, spec, runtime_labels),
        {**runtime_annotations, **annotations, **_allowed(spec.annotations)},
        pod_spec,
        spec,
        isvc_labels,
    )


def _transformer(
    isvc: InferenceService,
    name: str,
    spec: ComponentSpec,
    predictor_host: str,
    storage_containers: Sequence[Object],
) -> Component:
    _implementation(spec, c.TRANSFORMER)
    annotations = _allowed(isvc.annotations)
    container = _transformer_container(isvc, spec, predictor_host)
    _set_storage_uri(_env_value(container, STORAGE_URI_ENV), annotations, storage_containers)
    _add_logger_annotations(spec, annotations)
    _add_batcher_annotations(spec, annotations)
    return Component(
        c.TRANSFORMER,
        name,
        isvc.namespace,
        _component_labels(isvc, isvc.labels, c.TRANSFORMER, spec, {}),
        {**annotations, **_allowed(spec.annotations)},
        _with_container(spec, container),
        spec,
        isvc.labels,
    )


def _explainer(
    isvc: InferenceService,
    name: str,
    spec: ExplainerSpec,
    predictor_host: str,
    explainers_config: ExplainersConfig | None,
    storage_containers: Sequence[Object],
) -> Component:
    _implementation(spec, c.EXPLAINER)
    annotations = _allowed(isvc.annotations)
    found = spec.explainer()
    container = _explainer_container(isvc, spec, predictor_host, explainers_config)
    uri = found[1].storage_uri if found is not None else _env_value(container, STORAGE_URI_ENV)
    _set_storage_uri(uri, annotations, storage_containers)
    _add_logger_annotations(spec, annotations)
    return Component(
        c.EXPLAINER,
        name,
        isvc.namespace,
        _component_labels(isvc, isvc.labels, c.EXPLAINER, spec, {}),
        {**annotations, **_allowed(spec.annotations)},
        _with_container(spec, container),
        spec,
        isvc.labels,
    )


# --- The whole component --------------------------------------------------------------------------


def build_component(
    isvc: InferenceService,
    component: str,
    *,
    runtimes: Sequence[RuntimeLike] = (),
    explainers_config: ExplainersConfig | None = None,
    existing_names: Collection[str] = (),
    storage_containers: Sequence[Object] = (),
) -> Component:
    """One component of `isvc`, ready for a backend (`ComponentSpecError` for a spec the user must fix).

    `runtimes` are the namespace's ServingRuntimes and the ClusterServingRuntimes (typed or JSON, mixed);
    `existing_names` are the names of the backend's children that exist (only legacy `-default` names
    matter); `storage_containers` are the ClusterStorageContainers, whose storage URIs are accepted.
    """
    spec = isvc.spec
    name = component_name(isvc, component, existing_names)
    predictor_name = component_name(isvc, c.PREDICTOR, existing_names)
    if component == c.PREDICTOR:
        return _predictor(isvc, name, spec.predictor, runtimes, storage_containers)
    if component == c.TRANSFORMER and spec.transformer is not None:
        return _transformer(isvc, name, spec.transformer, predictor_name, storage_containers)
    if component == c.EXPLAINER and spec.explainer is not None:
        target = (
            component_name(isvc, c.TRANSFORMER, existing_names)
            if spec.transformer is not None
            else predictor_name
        )
        return _explainer(isvc, name, spec.explainer, target, explainers_config, storage_containers)
    raise ValueError(f"InferenceService {isvc.namespace}/{isvc.name} has no {component}")


class ComponentBuilder:
    """Builds components from what the shared cache holds: runtimes, storage containers, the config.

    Each (Cluster)ServingRuntime is parsed once per resourceVersion. An unreadable one is logged once per
    version, not on every reconcile that lists it; the InferenceService naming it is told in its condition.
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._parsed_runtimes: dict[tuple[str, str, str], tuple[Any, RuntimeLike]] = {}

    def build(
        self,
        isvc: InferenceService,
        component: str,
        *,
        config: InferenceServicesConfig,
        existing_names: Collection[str] = (),
    ) -> Component:
        """`build_component` with the runtimes and storage containers of the cache.

        The predictor's runtime defaults add labels to the InferenceService (`isvc.metadata`, in memory
        only), as KServe's do, so the components and the ingress reconciled after it carry them too.
        Raises `ComponentSpecError` for a spec the user must fix, including a broken config key it needs.
        """
        needs_runtime = component == c.PREDICTOR and isvc.spec.predictor.model_spec() is not None
        explainers: ExplainersConfig | None = None
        if component == c.EXPLAINER and isvc.spec.explainer is not None and isvc.spec.explainer.explainer():
            try:
                explainers = config.explainers()
            except ConfigError as exc:
                raise ComponentSpecError(REASON_INVALID_CONFIG, str(exc)) from None
        built = build_component(
            isvc,
            component,
            runtimes=self._runtimes(isvc) if needs_runtime else (),
            explainers_config=explainers,
            existing_names=existing_names,
            storage_containers=self._cache.list(CLUSTER_STORAGE_CONTAINERS),
        )
        if built.isvc_labels != isvc.labels:
            isvc.metadata["labels"] = built.isvc_labels
        return built

    def _runtimes(self, isvc: InferenceService) -> list[RuntimeLike]:
        objects = [
            *self._cache.list(SERVING_RUNTIMES, isvc.namespace),
            *self._cache.list(CLUSTER_SERVING_RUNTIMES),
        ]
        if len(self._parsed_runtimes) > RUNTIME_PARSE_CACHE_LIMIT:
            self._parsed_runtimes.clear()
        runtimes: list[RuntimeLike] = []
        for obj in objects:
            meta = obj.get("metadata") or {}
            key = (str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))
            version = meta.get("resourceVersion")
            cached = self._parsed_runtimes.get(key)
            if cached is None or version is None or cached[0] != version:
                parsed = parse_runtime(obj)
                if isinstance(parsed, MalformedRuntime):
                    where = f"{key[1]}/{key[2]}" if key[1] else key[2]
                    log.warning("%s %s cannot be used: %s", key[0], where, parsed.problem)
                cached = (version, parsed)
                if version is not None:
                    self._parsed_runtimes[key] = cached
            runtimes.append(cached[1])
        return runtimes
