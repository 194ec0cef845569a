"""The InferenceService defaulting and validating admission webhooks (KServe v0.11 `Default()`/`Validate*()`).

Both work on the JSON the API server sends, not on a typed model: mutating webhooks run before the CRD schema
is enforced, so a field may have any type, and the defaulter must hand back every field it does not own
verbatim for the JSON Patch. Every structural surprise is reported as a one-line, path-named message.

Defaulting (KServe v0.11 behaviour):
- no `serving.kserve.io/deploymentMode` annotation and a `RawDeployment`/`ModelMesh` default in the
  ConfigMap's `deploy` key: the annotation is written, pinning the mode the object was created under
  (Serverless is never written); an existing annotation is never changed;
- outside ModelMesh, a legacy framework key (`sklearn:` ...) becomes `model: {modelFormat: {name: sklearn}}`
  carrying every field over, the protocol of `triton` and `onnx` defaulting to v2; a `model` of format
  `triton` without a protocol gets v2; nothing else is defaulted on a `model` (its runtime's container
  supplies the name and resources);
- for each other component implementation (custom containers, alibi, art), when it is the only one, its
  serving container is named `kserve-container` and gets requests/limits `cpu: 1`, `memory: 2Gi` where
  unset; explainers get the ConfigMap's default `runtimeVersion`.
Deliberate differences: a predictor with both a legacy key and `model` is left for the validator to reject
(v0.11 silently replaced the user's `model`), and a defaulted request never exceeds a user-set limit (nor a
defaulted limit a user-set request), which in v0.11 produced a pod the API server rejects
("must be less than or equal to cpu limit") long after the InferenceService was accepted.

Validation reports every problem at once, each saying what to change: the name (KServe's regex, and short
enough that `<name>-<component>` is a valid Service name), exactly one implementation per component,
replicas, concurrency, canary percent, logger mode, the autoscaler annotations and the per-component
scaling spec (HPA or Knative rules, as KServe picks them), KServe's spec checks (a custom predictor's
`PROTOCOL` env is v1 or v2; the `storage:` spec of an explainer and of the tensorflow, pytorch, onnx and
pmml keys names s3, hdfs or webhdfs; TensorFlow and TorchServe `-gpu` runtimeVersions iff a GPU limit; an
ONNX storageUri names a .onnx file or none; PMML runs one worker), and storage URIs (which v0.11 checked
only in the controller, after the object was stored; a URI a ClusterStorageContainer serves is accepted).
The legacy-key checks only matter in ModelMesh mode: elsewhere the defaulter, which runs first, has turned
the key into `model`, which KServe does not check either. On UPDATE, problems the old object already had
are not held against the update (a name cannot change; an object admitted before this webhook must still
accept its finalizer), and an object being deleted is always admitted.

Configuration and ClusterStorageContainers come from provider callables (the informer cache); the
configuration is parsed only when its data changes.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from apis import constants as c
from apis.config import ConfigError, InferenceServicesConfig
from apis.inferenceservice import EXPLAINERS, FRAMEWORKS, MODEL
from apis.quantity import QuantityError, parse_quantity
from apis.storage import STORAGE_URI_PREFIXES, is_supported_storage_uri
from apis.storagecontainer import StorageContainerError
from webhooks.admission import (
    AdmissionRequest,
    AdmissionResponse,
    allowed,
    denied,
    errored,
    patch_response_from_raw,
    wrong_kind,
)
from webhooks.config import SHIPPED_CONFIG, ConfigProvider, ConfigView

__all__ = [
    "DEFAULT_RESOURCES",
    "STORAGE_URI_PREFIXES",
    "InferenceServiceDefaulter",
    "InferenceServiceValidator",
    "InvalidObject",
    "default_inference_service",
    "describe",
    "storage_uri_error",
    "type_name",
    "validate_inference_service",
]

log = logging.getLogger(__name__)

DEFAULT_RESOURCES: Final[Mapping[str, str]] = {"cpu": "1", "memory": "2Gi"}
"""KServe v0.11's requests and limits for a serving container that sets none."""

_ISVC_NAME_FMT: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_ISVC_NAME_RE: Final = re.compile(_ISVC_NAME_FMT)
_MAX_SERVICE_NAME: Final = 63
"""A Service name (and so `<isvc>-<component>`) is a DNS-1035 label."""
_KNATIVE_HPA_CLASS: Final = "hpa.autoscaling.knative.dev"
_STORAGE_URI_ENV: Final = "STORAGE_URI"
_PREDICTOR_CHOICES: Final = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
    MODEL,
)
"""The predictor's implementation keys in the order users know them from the docs (`containers` last)."""
_CONTAINERS: Final = "containers"
_TRITON: Final = "triton"
_ONNX: Final = "onnx"
_PMML: Final = "pmml"
_GPU_IMAGE_FRAMEWORKS: Final = ("tensorflow", "pytorch")
"""Legacy keys whose runtimeVersion must carry `-gpu` exactly when a GPU is limited (KServe validateGPU)."""
_STORAGE_SPEC_CHECKED: Final = ("tensorflow", "pytorch", _ONNX, _PMML)
"""Legacy predictor keys whose `storage` spec KServe validates (explainers are checked too)."""
_STORAGE_SPEC_URI_PREFIXES: Final = ("s3://", "hdfs://", "webhdfs://")
_GPU_SUFFIX: Final = "-gpu"
_NVIDIA_GPU: Final = "nvidia.com/gpu"
_ONNX_FILE_EXT: Final = ".onnx"
_WORKERS_ARG: Final = "--workers"
_PMML_MAX_WORKERS: Final = 1
_PROTOCOL_ENV: Final = "PROTOCOL"
_CUSTOM_PROTOCOLS: Final = (c.PROTOCOL_V1, c.PROTOCOL_V2)
_V2_LEGACY_FRAMEWORKS: Final = (_TRITON, "onnx")
"""Legacy predictor keys whose conversion to `model` defaults the protocol to v2 (KServe assign*Runtime)."""


class InvalidObject(ValueError):
    """The admitted object does not have the shape of an InferenceService; the message names the field."""


# --- JSON helpers ---------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A user value for a one-line message: quoted strings with control characters escaped, shortened."""
    text = repr(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: Any) -> str:
    """How a JSON value's type reads in a message ("an object", "a list", "null", ...)."""
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _object_or_none(parent: Mapping[str, Any], key: str, path: str) -> dict[str, Any] | None:
    """`parent[key]` when it is an object, None when absent or null; InvalidObject for anything else."""
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidObject(f"{path} must be an object, got {type_name(value)}")
    return value


def _object_child(parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    """`parent[key]` as an object, created empty when absent or null."""
    found = _object_or_none(parent, key, path)
    if found is None:
        found = parent[key] = {}
    return found


def _join(names: Sequence[str]) -> str:
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _containers(component: Mapping[str, Any], path: str) -> list[Any]:
    value = component.get(_CONTAINERS)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidObject(f"{path}.containers must be a list, got {type_name(value)}")
    return value


def _implementations(component: Mapping[str, Any], keys: Sequence[str], path: str) -> list[str]:
    """The implementation keys set on a component, `containers` last when it lists any container."""
    found = [key for key in keys if component.get(key) is not None]
    if _containers(component, path):
        found.append(_CONTAINERS)
    return found


_COMPONENT_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    c.PREDICTOR: _PREDICTOR_CHOICES,
    c.EXPLAINER: EXPLAINERS,
    c.TRANSFORMER: (),
}


# --- Defaulting -----------------------------------------------------------------------------------


def _quantity(value: Any) -> Any:
    """The numeric value of a JSON quantity, or None when it does not parse."""
    if isinstance(value, bool):
        return None
    try:
        return parse_quantity(str(value) if isinstance(value, int | float) else value)
    except QuantityError:
        return None


def _default_resources(container: dict[str, Any], path: str) -> None:
    resources = _object_child(container, "resources", f"{path}.resources")
    requests = _object_child(resources, "requests", f"{path}.resources.requests")
    limits = _object_child(resources, "limits", f"{path}.resources.limits")
    for resource, default in DEFAULT_RESOURCES.items():
        user_request, user_limit = requests.get(resource), limits.get(resource)
        if user_request is None:
            # Never above a user-set limit: Kubernetes would reject the pod.
            limit = _quantity(user_limit) if user_limit is not None else None
            requests[resource] = user_limit if limit is not None and limit < _quantity(default) else default
        if user_limit is None:
            request = _quantity(user_request) if user_request is not None else None
            limits[resource] = (
                user_request if request is not None and request > _quantity(default) else default
            )


def _default_serving_container(container: Any, path: str) -> None:
    if not isinstance(container, dict):
        raise InvalidObject(f"{path} must be an object, got {type_name(container)}")
    container["name"] = c.INFERENCE_SERVICE_CONTAINER_NAME
    _default_resources(container, path)


def _convert_legacy_framework(predictor: dict[str, Any], framework: str) -> None:
    path = f"spec.predictor.{framework}"
    legacy = _object_or_none(predictor, framework, path)
    assert legacy is not None
    model: dict[str, Any] = {**legacy, "modelFormat": {"name": framework}}
    if framework in _V2_LEGACY_FRAMEWORKS and legacy.get("protocolVersion") is None:
        model["protocolVersion"] = c.PROTOCOL_V2
    del predictor[framework]
    predictor[MODEL] = model


def _default_model(model: dict[str, Any]) -> None:
    """KServe `setPredictorModelDefaults`: a Triton model without a protocol speaks v2.

    Nothing else: KServe's ModelSpec has no defaults, so the runtime's container supplies the name and the
    resources (defaulting them here would override the runtime's own).
    """
    model_format = model.get("modelFormat")
    if (
        isinstance(model_format, dict)
        and model_format.get("name") == _TRITON
        and model.get("protocolVersion") is None
    ):
        model["protocolVersion"] = c.PROTOCOL_V2


def _default_component(
    name: str, component: dict[str, Any], config: InferenceServicesConfig, *, predictor_defaults: bool
) -> None:
    if name == c.PREDICTOR and not predictor_defaults:
        return  # ModelMesh serves the predictor itself
    path = f"spec.{name}"
    found = _implementations(component, _COMPONENT_KEYS[name], path)
    if len(found) != 1:
        return  # the validator names what is missing or conflicting
    implementation = found[0]
    if implementation == _CONTAINERS:
        _default_serving_container(component[_CONTAINERS][0], f"{path}.containers[0]")
        return
    if name == c.PREDICTOR and implementation in FRAMEWORKS:
        _convert_legacy_framework(component, implementation)
        implementation = MODEL
    spec = _object_or_none(component, implementation, f"{path}.{implementation}")
    assert spec is not None
    if implementation == MODEL:
        _default_model(spec)
        return
    if name == c.EXPLAINER and spec.get("runtimeVersion") is None:
        explainer = getattr(config.explainers(), implementation)
        if explainer is not None:
            spec["runtimeVersion"] = explainer.default_image_version
    _default_serving_container(spec, f"{path}.{implementation}")


def default_inference_service(obj: Any, *, config: InferenceServicesConfig | None = None) -> dict[str, Any]:
    """A defaulted deep copy of an InferenceService (the input is not modified).

    `config` defaults to the ConfigMap values KServe ships. Raises `InvalidObject` when a field the defaulter
    must touch has the wrong type, and `apis.config.ConfigError` when a ConfigMap key it needs is broken.
    """
    if not isinstance(obj, dict):
        raise InvalidObject(f"an InferenceService must be a JSON object, got {type_name(obj)}")
    config = config or SHIPPED_CONFIG
    isvc = copy.deepcopy(obj)
    metadata = _object_or_none(isvc, "metadata", "metadata") or {}
    annotations = _object_or_none(metadata, "annotations", "metadata.annotations") or {}
    mode = annotations.get(c.DEPLOYMENT_MODE_ANNOTATION)
    if mode is None:
        default_mode = config.deploy().default_deployment_mode
        if default_mode in (c.RAW_DEPLOYMENT, c.MODEL_MESH):
            metadata = _object_child(isvc, "metadata", "metadata")
            _object_child(metadata, "annotations", "metadata.annotations")[c.DEPLOYMENT_MODE_ANNOTATION] = (
                default_mode
            )
    spec = _object_or_none(isvc, "spec", "spec")
    if spec is None:
        return isvc
    for name in c.COMPONENTS:
        component = _object_or_none(spec, name, f"spec.{name}")
        if component is not None:
            _default_component(name, component, config, predictor_defaults=mode != c.MODEL_MESH)
    return isvc


# --- Validation -----------------------------------------------------------------------------------


def _go_path_ext(path: str) -> str:
    """Go's `path.Ext`: from the last dot of the last `/`-separated element, "" without one."""
    element = path.rpartition("/")[2]
    dot = element.rfind(".")
    return element[dot:] if dot >= 0 else ""


def _go_int(text: str) -> int | None:
    """Go's `strconv.ParseInt(text, 10, 64)`, or None when it fails."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def storage_uri_error(
    uri: Any, where: str, storage_containers: Iterable[Mapping[str, Any]] = ()
) -> str | None:
    """Why `uri` cannot be a model location (None when it can), by KServe's rule (`apis.storage`)."""
    if not isinstance(uri, str):
        return f"{where} must be a string, got {type_name(uri)}"
    try:
        if is_supported_storage_uri(uri, storage_containers):
            return None
    except StorageContainerError as exc:
        return f"{where} {_show(uri)} cannot be checked: {exc}"
    return (
        f"{where} {_show(uri)} is not supported: use a URI starting with "
        f"{', '.join(STORAGE_URI_PREFIXES)}, an Azure blob URL "
        "(https://<account>.blob.core.windows.net/<container>/<path>), a local path, or a URI a "
        "ClusterStorageContainer serves"
    )


class _Checker:
    """Collects the problems of one object; every check tolerates any JSON type."""

    def __init__(
        self,
        errors: list[str],
        deployment_mode: str,
        annotations: Mapping[str, Any],
        storage_containers: Sequence[Mapping[str, Any]],
    ) -> None:
        self.errors = errors
        self.deployment_mode = deployment_mode
        self.annotations = annotations
        self.storage_containers = storage_containers

    def add(self, message: str) -> None:
        self.errors.append(message)

    def integer(
        self,
        parent: Mapping[str, Any],
        key: str,
        path: str,
        *,
        low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{path}.{key} must be an integer, got {_show(value)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.add(f"{path}.{key} must be {bound}, got {value}")
            return None
        return value

    def string(self, parent: Mapping[str, Any], key: str, path: str) -> str | None:
        value = parent.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(f"{path}.{key} must be a string, got {type_name(value)}")
            return None
        return value

    def storage_uri(self, uri: Any, where: str) -> None:
        if uri is not None and (problem := storage_uri_error(uri, where, self.storage_containers)):
            self.add(problem)

    # -- components --------------------------------------------------------------------------------

    def component(self, name: str, component: Any) -> None:
        path = f"spec.{name}"
        if not isinstance(component, dict):
            self.add(f"{path} must be an object, got {type_name(component)}")
            return
        self.extension(component, path)
        try:
            found = _implementations(component, _COMPONENT_KEYS[name], path)
        except InvalidObject as exc:
            self.add(str(exc))
            return
        if len(found) != 1:
            self.add(self._exactly_one(name, component, found))
            return
        implementation = found[0]
        if implementation == _CONTAINERS:
            container = component[_CONTAINERS][0]
            self.custom_container(container, f"{path}.containers[0]")
            if name == c.PREDICTOR and isinstance(container, dict):
                self.custom_protocol(container, f"{path}.containers[0]")
            return
        spec = component[implementation]
        where = f"{path}.{implementation}"
        if not isinstance(spec, dict):
            self.add(f"{where} must be an object, got {type_name(spec)}")
            return
        self.storage_uri(spec.get("storageUri"), f"{where}.storageUri")
        if name == c.PREDICTOR:
            self.predictor_implementation(spec, where, implementation)
            self.legacy_predictor(spec, where, implementation)
        if name == c.EXPLAINER or implementation in _STORAGE_SPEC_CHECKED:
            self.storage_spec(spec, where, explainer=name == c.EXPLAINER)

    @staticmethod
    def _exactly_one(name: str, component: Mapping[str, Any], found: Sequence[str]) -> str:
        keys = _COMPONENT_KEYS[name]
        found_text = _join(found)
        if not found and component.get(_CONTAINERS) == []:
            found_text = "none (containers is empty)"
        if not keys:
            return f"{name} must have containers; found {found_text}"
        return f"{name} must have exactly one of {', '.join((*keys, _CONTAINERS))}; found {found_text}"

    def predictor_implementation(self, spec: Mapping[str, Any], where: str, implementation: str) -> None:
        protocol = self.string(spec, "protocolVersion", where)
        if protocol is not None and protocol not in c.PROTOCOL_VERSIONS:
            self.add(
                f"{where}.protocolVersion {_show(protocol)} must be one of {', '.join(c.PROTOCOL_VERSIONS)}"
            )
        if implementation != MODEL:
            return
        model_format = spec.get("modelFormat")
        if (
            not isinstance(model_format, dict)
            or not isinstance(model_format.get("name"), str)
            or not (model_format["name"])
        ):
            self.add(f"{where}.modelFormat.name is required (the model's format, e.g. sklearn or onnx)")

    def custom_protocol(self, container: Mapping[str, Any], where: str) -> None:
        """KServe `validateCustomProtocol`: the first `PROTOCOL` env var of the container is v1 or v2."""
        env = container.get("env")
        for index, var in enumerate(env if isinstance(env, list) else []):
            if isinstance(var, dict) and var.get("name") == _PROTOCOL_ENV:
                value = var.get("value")
                if value not in _CUSTOM_PROTOCOLS:
                    self.add(
                        f"{where}.env[{index}] ({_PROTOCOL_ENV}) {_show(value)} is not a supported protocol; "
                        f"use {' or '.join(_CUSTOM_PROTOCOLS)}"
                    )
                return

    def legacy_predictor(self, spec: Mapping[str, Any], where: str, implementation: str) -> None:
        """KServe's checks of the legacy predictor keys (which survive defaulting only in ModelMesh mode)."""
        if implementation in _GPU_IMAGE_FRAMEWORKS:
            self.gpu_runtime_version(spec, where)
        elif implementation == _ONNX:
            uri = spec.get("storageUri")
            extension = _go_path_ext(uri) if isinstance(uri, str) else ""
            if extension not in ("", _ONNX_FILE_EXT):
                self.add(
                    f"{where}.storageUri {_show(uri)} must name a {_ONNX_FILE_EXT} file (or a directory), "
                    f"not a {extension} file"
                )
        elif implementation == _PMML:
            self.pmml_workers(spec, where)

    def gpu_runtime_version(self, spec: Mapping[str, Any], where: str) -> None:
        """KServe `validateGPU` (TensorFlow, TorchServe): a `-gpu` runtimeVersion iff a GPU is limited."""
        version = spec.get("runtimeVersion")
        if not isinstance(version, str):
            return
        resources = spec.get("resources")
        limits = resources.get("limits") if isinstance(resources, dict) else None
        wants_gpu = isinstance(limits, dict) and _NVIDIA_GPU in limits
        gpu_image = _GPU_SUFFIX in version
        if wants_gpu and not gpu_image:
            self.add(
                f"{where}.runtimeVersion {_show(version)} is not a GPU image but {where}.resources.limits "
                f'requests {_NVIDIA_GPU}; use a runtimeVersion with "{_GPU_SUFFIX}" or remove the GPU limit'
            )
        elif gpu_image and not wants_gpu:
            self.add(
                f"{where}.runtimeVersion {_show(version)} is a GPU image but {where}.resources.limits "
                f"requests no {_NVIDIA_GPU}; add the GPU limit or use a runtimeVersion without "
                f'"{_GPU_SUFFIX}"'
            )

    def pmml_workers(self, spec: Mapping[str, Any], where: str) -> None:
        """KServe `ValidateMaxArgumentWorkers(args, 1)`: each `--workers...` arg is `--workers=<n <= 1>`."""
        args = spec.get("args")
        for index, arg in enumerate(args if isinstance(args, list) else []):
            if not isinstance(arg, str) or not arg.startswith(_WORKERS_ARG):
                continue
            _, equals, value = arg.partition("=")
            workers = _go_int(value) if equals else None
            if workers is None:
                self.add(
                    f"{where}.args[{index}] {_show(arg)} is not a valid workers argument; use --workers=1"
                )
            elif workers > _PMML_MAX_WORKERS:
                self.add(
                    f"{where}.args[{index}] {_show(arg)}: the PMML server runs at most "
                    f"{_PMML_MAX_WORKERS} worker"
                )

    def storage_spec(self, spec: Mapping[str, Any], where: str, *, explainer: bool) -> None:
        """KServe `validateStorageSpec`: with `storage`, storageUri or type must be s3, hdfs or webhdfs."""
        storage = spec.get("storage")
        if storage is None:
            return
        if not isinstance(storage, dict):
            self.add(f"{where}.storage must be an object, got {type_name(storage)}")
            return
        uri = spec.get("storageUri")
        if uri is not None and not (explainer and uri == ""):
            if not (isinstance(uri, str) and uri.startswith(_STORAGE_SPEC_URI_PREFIXES)):
                self.add(
                    f"{where}.storageUri {_show(uri)} cannot be used with {where}.storage: with a storage "
                    f"spec, storageUri must start with {', '.join(_STORAGE_SPEC_URI_PREFIXES)}"
                )
            return
        parameters = storage.get("parameters")
        if isinstance(parameters, dict) and "type" in parameters:
            storage_type = parameters["type"]
            if not (
                isinstance(storage_type, str)
                and (storage_type + "://").startswith(_STORAGE_SPEC_URI_PREFIXES)
            ):
                types = ", ".join(p.removesuffix("://") for p in _STORAGE_SPEC_URI_PREFIXES)
                self.add(
                    f"{where}.storage.parameters.type {_show(storage_type)} is not supported; use one of "
                    f"{types}"
                )

    def custom_container(self, container: Any, where: str) -> None:
        if not isinstance(container, dict):
            self.add(f"{where} must be an object, got {type_name(container)}")
            return
        env = container.get("env")
        if not isinstance(env, list):
            return
        for index, var in enumerate(env):
            if isinstance(var, dict) and var.get("name") == _STORAGE_URI_ENV and "value" in var:
                self.storage_uri(var["value"], f"{where}.env[{index}] ({_STORAGE_URI_ENV})")

    def extension(self, component: Mapping[str, Any], path: str) -> None:
        min_replicas = self.integer(component, "minReplicas", path, low=0)
        max_replicas = self.integer(component, "maxReplicas", path, low=0)
        if min_replicas is not None and max_replicas and min_replicas > max_replicas:
            self.add(
                f"{path}.minReplicas ({min_replicas}) must not be greater than {path}.maxReplicas "
                f"({max_replicas}); raise maxReplicas or set it to 0 for no limit"
            )
        self.integer(component, "containerConcurrency", path, low=0)
        self.integer(component, "canaryTrafficPercent", path, low=0, high=100)
        self.integer(component, "timeout", path, low=0)
        logger = component.get("logger")
        if logger is not None:
            if not isinstance(logger, dict):
                self.add(f"{path}.logger must be an object, got {type_name(logger)}")
            else:
                mode = logger.get("mode")
                if mode not in (None, "", *c.LOGGER_MODES):
                    self.add(f"{path}.logger.mode {_show(mode)} must be one of {', '.join(c.LOGGER_MODES)}")
        self.scaling(component, path)

    def uses_hpa(self) -> bool:
        """KServe's choice between the HPA and the Knative autoscaler rules for a component's scaling."""
        return (
            self.deployment_mode == c.RAW_DEPLOYMENT
            or self.annotations.get(c.AUTOSCALER_CLASS_ANNOTATION) == c.AUTOSCALER_CLASS_HPA
            or self.annotations.get(c.KNATIVE_AUTOSCALING_CLASS_ANNOTATION) == _KNATIVE_HPA_CLASS
        )

    def scaling(self, component: Mapping[str, Any], path: str) -> None:
        metric = self.string(component, "scaleMetric", path)
        if component.get("scaleMetric") is not None and metric is None:
            return
        target = self.integer(component, "scaleTarget", path)
        if self.uses_hpa():
            metric = metric or "cpu"
            if metric not in c.HPA_METRICS:
                self.add(
                    f"{path}.scaleMetric {_show(metric)} is not supported by the HPA autoscaler (used in "
                    f"RawDeployment mode or with autoscalerClass hpa); use {' or '.join(c.HPA_METRICS)}"
                )
            elif target is not None and metric == "cpu" and not 1 <= target <= 100:
                self.add(
                    f"{path}.scaleTarget must be a CPU utilization percentage from 1 to 100, got {target}"
                )
            elif target is not None and metric == "memory" and target < 1:
                self.add(f"{path}.scaleTarget must be at least 1 (MiB of memory), got {target}")
            return
        if metric is None:
            return
        if metric not in c.KPA_METRICS:
            self.add(
                f"{path}.scaleMetric {_show(metric)} is not supported by the Knative autoscaler; use "
                f"{' or '.join(c.KPA_METRICS)}, or set the annotation {c.AUTOSCALER_CLASS_ANNOTATION}: hpa "
                "for cpu or memory"
            )
        elif target is not None and metric == "rps" and target < 1:
            self.add(f"{path}.scaleTarget must be at least 1 request per second, got {target}")

    # -- object level ------------------------------------------------------------------------------

    def name(self, metadata: Mapping[str, Any], components: Sequence[str]) -> None:
        name = metadata.get("name")
        if name is None or name == "":
            if not metadata.get("generateName"):
                self.add("metadata.name is required")
            return
        if not isinstance(name, str):
            self.add(f"metadata.name must be a string, got {type_name(name)}")
            return
        if not _ISVC_NAME_RE.fullmatch(name):
            self.add(
                f"metadata.name {_show(name)} is invalid: use lower case letters, digits and '-', starting "
                f"with a letter and ending with a letter or digit (regex '{_ISVC_NAME_FMT}'), e.g. 'my-model'"
            )
            return
        longest = max(components, key=len)
        limit = _MAX_SERVICE_NAME - len(longest) - 1
        if len(name) > limit:
            self.add(
                f"metadata.name is too long ({len(name)} characters): the {longest} is served as "
                f'"{name}-{longest}", which must be at most {_MAX_SERVICE_NAME} characters, so use a '
                f"name of at most {limit} characters"
            )

    def autoscaler_annotations(self) -> None:
        annotations = self.annotations
        klass = annotations.get(c.AUTOSCALER_CLASS_ANNOTATION)
        if klass is not None and klass not in c.AUTOSCALER_CLASSES:
            self.add(
                f"annotation {c.AUTOSCALER_CLASS_ANNOTATION} {_show(klass)} is not a supported autoscaler "
                f"class; use {', '.join(c.AUTOSCALER_CLASSES)} (or remove it for the Knative autoscaler)"
            )
        metric = annotations.get(c.AUTOSCALER_METRICS_ANNOTATION)
        if klass == c.AUTOSCALER_CLASS_HPA and metric is not None and metric not in c.HPA_METRICS:
            self.add(
                f"annotation {c.AUTOSCALER_METRICS_ANNOTATION} {_show(metric)} is not a supported HPA "
                f"metric; use {' or '.join(c.HPA_METRICS)}"
            )
        target = annotations.get(c.TARGET_UTILIZATION_ANNOTATION)
        if target is not None:
            text = target.strip() if isinstance(target, str) else ""
            if not (text.isascii() and text.lstrip("+-").isdigit() and 1 <= int(text) <= 100):
                self.add(
                    f"annotation {c.TARGET_UTILIZATION_ANNOTATION} {_show(target)} must be an integer "
                    "from 1 to 100"
                )


def _annotations(metadata: Mapping[str, Any], errors: list[str]) -> dict[str, Any]:
    annotations = metadata.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        errors.append(f"metadata.annotations must be an object, got {type_name(annotations)}")
        return {}
    for key, value in annotations.items():
        if not isinstance(value, str):
            shown = key if isinstance(key, str) and key.isprintable() else _show(key)
            errors.append(f"annotation {shown} must be a string, got {type_name(value)}")
    return annotations


def _problems(
    obj: Any, config: InferenceServicesConfig, storage_containers: Sequence[Mapping[str, Any]]
) -> list[str]:
    if not isinstance(obj, dict):
        return [f"an InferenceService must be a JSON object, got {type_name(obj)}"]
    errors: list[str] = []
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return [f"metadata must be an object, got {type_name(metadata)}"]
    annotations = _annotations(metadata, errors)
    mode = annotations.get(c.DEPLOYMENT_MODE_ANNOTATION)
    if not isinstance(mode, str):
        try:
            mode = config.deploy().default_deployment_mode
        except ConfigError:
            mode = c.SERVERLESS
    checker = _Checker(errors, mode, annotations, storage_containers)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        checker.name(metadata, [c.PREDICTOR])
        checker.add("spec is required" if spec is None else f"spec must be an object, got {type_name(spec)}")
        return errors
    present = [name for name in c.COMPONENTS if spec.get(name) is not None]
    checker.name(metadata, present or [c.PREDICTOR])
    checker.autoscaler_annotations()
    if spec.get(c.PREDICTOR) is None:
        checker.add(f"spec.predictor is required: set one of {', '.join((*_PREDICTOR_CHOICES, _CONTAINERS))}")
    for name in present:
        checker.component(name, spec[name])
    return errors


def validate_inference_service(
    obj: Any,
    old: Any = None,
    *,
    config: InferenceServicesConfig | None = None,
    storage_containers: Iterable[Mapping[str, Any]] = (),
) -> list[str]:
    """The problems of an InferenceService, each a sentence saying what to change ([] when valid).

    With `old` (an UPDATE), problems the old object already had are left out, and an object that is being
    deleted has none. `config` supplies the default deployment mode when the object has no annotation (the
    shipped default when omitted); `storage_containers` are the cluster's ClusterStorageContainers, whose
    URIs are accepted.
    """
    config = config or SHIPPED_CONFIG
    containers = tuple(storage_containers)
    if old is not None and isinstance(obj, dict):
        metadata = obj.get("metadata")
        if isinstance(metadata, dict) and metadata.get("deletionTimestamp"):
            return []
    errors = _problems(obj, config, containers)
    if old is not None and errors:
        existing = set(_problems(old, config, containers))
        errors = [error for error in errors if error not in existing]
    return errors


def describe(name: Any, errors: Sequence[str], kind: str = "InferenceService") -> str:
    """One line for the user: `the InferenceService "x" is invalid: <problem>; <problem>`."""
    shown = name if isinstance(name, str) and name else "(unnamed)"
    return f'the {kind} "{shown}" is invalid: ' + "; ".join(errors)


# --- Admission handlers ---------------------------------------------------------------------------


def _request_name(request: AdmissionRequest, obj: Any) -> Any:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        return obj["metadata"].get("name") or request.name
    return request.name


class InferenceServiceDefaulter:
    """`/mutate-serving-kserve-io-v1beta1-inferenceservice`: answers with the JSON Patch of the defaults."""

    def __init__(self, config: ConfigProvider | None = None) -> None:
        self._config = ConfigView(config)

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        """Default the request's InferenceService (no patch when it is already defaulted)."""
        if (wrong := wrong_kind(request, c.KSERVE_GROUP, "InferenceService")) is not None:
            return wrong
        obj = request.object
        if obj is None:
            return allowed()
        try:
            defaulted = default_inference_service(obj, config=self._config.current())
        except InvalidObject as exc:
            return denied(describe(_request_name(request, obj), [str(exc)]))
        except (ConfigError, LookupError) as exc:
            return errored(500, f"cannot default the InferenceService: {exc}")
        except Exception as exc:  # a bug must still answer with a message, never EOF
            log.exception("defaulting InferenceService %s/%s failed", request.namespace, request.name)
            return errored(500, f"internal error while defaulting the InferenceService: {exc!r}")
        return patch_response_from_raw(request.raw_object or obj, defaulted)


class InferenceServiceValidator:
    """`/validate-serving-kserve-io-v1beta1-inferenceservice`: denies with every problem in one message."""

    reads_raw_object = False

    def __init__(
        self,
        config: ConfigProvider | None = None,
        storage_containers: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._config = ConfigView(config)
        self._storage_containers = storage_containers

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        """Validate CREATE and UPDATE (the new object; problems the old one had are tolerated)."""
        if (wrong := wrong_kind(request, c.KSERVE_GROUP, "InferenceService")) is not None:
            return wrong
        obj = request.object
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return allowed()
        try:
            config = self._config.current()
            containers = tuple(self._storage_containers()) if self._storage_containers is not None else ()
            old = request.old_object if request.operation == "UPDATE" else None
            errors = validate_inference_service(obj, old, config=config, storage_containers=containers)
        except LookupError as exc:
            return errored(500, f"cannot validate the InferenceService: {exc}")
        except Exception as exc:  # a bug must still answer with a message, never EOF
            log.exception("validating InferenceService %s/%s failed", request.namespace, request.name)
            return errored(500, f"internal error while validating the InferenceService: {exc!r}")
        if errors:
            return denied(describe(_request_name(request, obj), errors))
        return allowed()
