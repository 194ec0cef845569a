"""From a predictor's `model` to the pod spec that serves it: runtime resolution and KServe's merge rules.

A `model:` predictor names no image; the (Cluster)ServingRuntime chosen for it (explicitly or by
auto-selection, see `apis.servingruntime`) contributes the `kserve-container` and the rest of the pod. The
steps and their order are KServe v0.11's, because each decides what runs:

1. Runtime defaults (KServe `SetRuntimeDefaults`) for the three runtimes that need them, applied before the
   lookup of an explicitly named runtime (so its protocol check sees the defaulted protocol) and after an
   automatic selection: `kserve-torchserve` gets protocol v1 by default, `PROTOCOL_VERSION` and the
   `serviceEnvelope` label its `{{.Labels.serviceEnvelope}}` template reads (`kservev2` for v2, else
   `kserve`); `kserve-mlserver` gets protocol v2, the `modelClass` label for its
   `{{.Labels.modelClass}}` and either `MLSERVER_MODEL_NAME`/`MLSERVER_MODEL_URI` or, without a model
   location, `MLSERVER_LOAD_MODELS_AT_STARTUP=false`; `kserve-tritonserver` gets protocol v2 and, without a
   model location, `--model-control-mode=explicit`. The labels become part of the InferenceService's labels
   for the rest of the reconcile, as in KServe, so the Knative Services and the VirtualService carry them.
2. A model without a protocol takes the runtime's lowest listed one ("" when it lists none).
3. The user's `model` fields override the runtime's container the way `kubectl patch` would (a strategic
   merge: env by name, ports by containerPort, volume mounts by path, in the order the API server's merge
   produces), except `args`, which KServe concatenates (runtime args first).
4. The runtime's pod-level fields (volumes, imagePullSecrets, nodeSelector, affinity, tolerations) are merged
   the same way under the predictor's pod spec.
5. `{{.Name}}`-style placeholders in the merged container are filled from the InferenceService's metadata,
   and `runtimeVersion` (or a GPU limit) rewrites the image tag.

Problems a user can fix in the spec (unknown, unreadable or disabled runtime, no supporting runtime, a
runtime without `kserve-container`) raise `ComponentSpecError`, which carries KServe's reason: the caller
turns it into a condition instead of retrying.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from apis import constants as c
from apis.base import InvalidObjectError
from apis.inferenceservice import InferenceService, ModelSpec
from apis.servingruntime import (
    CLUSTER_SERVING_RUNTIME_KIND,
    ClusterServingRuntime,
    MalformedRuntime,
    RuntimeSelectionError,
    ServingRuntime,
    ServingRuntimeSpec,
    describe_format,
    select_runtime,
)

log = logging.getLogger(__name__)

RuntimeLike = ServingRuntime | ClusterServingRuntime | MalformedRuntime | Mapping[str, Any]
"""A runtime as a typed model, as an unreadable one, or as the JSON object the cache holds (kind tells the
two scopes apart)."""

REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_STORAGE_URI = "InvalidStorageURI"

NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
GPU_IMAGE_RUNTIMES = frozenset({"kserve-tensorflow-serving", "kserve-torchserve"})
"""Runtimes whose GPU build is the same image with a `-gpu` tag suffix."""

MLSERVER: Final = "kserve-mlserver"
TORCHSERVE: Final = "kserve-torchserve"
TRITONSERVER: Final = "kserve-tritonserver"

SERVICE_ENVELOPE_LABEL: Final = "serviceEnvelope"
SERVICE_ENVELOPE_V1: Final = "kserve"
SERVICE_ENVELOPE_V2: Final = "kservev2"
MODEL_CLASS_LABEL: Final = "modelClass"
MLSERVER_MODEL_CLASSES: Final = {
    "xgboost": "mlserver_xgboost.XGBoostModel",
    "lightgbm": "mlserver_lightgbm.LightGBMModel",
    "mlflow": "mlserver_mlflow.MLflowRuntime",
}
MLSERVER_DEFAULT_MODEL_CLASS: Final = "mlserver_sklearn.SKLearnModel"
PROTOCOL_VERSION_ENV: Final = "PROTOCOL_VERSION"
MLSERVER_MODEL_NAME_ENV: Final = "MLSERVER_MODEL_NAME"
MLSERVER_MODEL_URI_ENV: Final = "MLSERVER_MODEL_URI"
MLSERVER_LOAD_MODELS_AT_STARTUP_ENV: Final = "MLSERVER_LOAD_MODELS_AT_STARTUP"
MODEL_MOUNT_PATH: Final = "/mnt/models"
TRITON_EXPLICIT_MODEL_CONTROL: Final = "--model-control-mode=explicit"


class ComponentSpecError(Exception):
    """A problem in the InferenceService spec that only the user can fix: shown as a condition, not retried.

    `reason` is KServe's (RuntimeNotRecognized, RuntimeDisabled, NoSupportingRuntime, InvalidPredictorSpec,
    InvalidSpec, InvalidStorageURI); `message` is the precise one-line explanation. When KServe also records
    the problem in `status.modelStatus` (runtime problems), `model_failure_message` is the message it puts in
    `lastFailureInfo` (with `transitionStatus: InvalidSpec`), else None.
    """

    def __init__(self, reason: str, message: str, *, model_failure_message: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.model_failure_message = model_failure_message


def _spec_error(exc: RuntimeSelectionError) -> ComponentSpecError:
    return ComponentSpecError(exc.reason, str(exc), model_failure_message=exc.message or None)


# --- Runtime selection ----------------------------------------------------------------------------


def split_runtimes(
    runtimes: Iterable[RuntimeLike],
) -> tuple[list[ServingRuntime], list[ClusterServingRuntime], list[MalformedRuntime]]:
    """Namespace runtimes, cluster runtimes and the unreadable ones (with what is wrong with each)."""
    local: list[ServingRuntime] = []
    cluster: list[ClusterServingRuntime] = []
    malformed: list[MalformedRuntime] = []
    for rt in runtimes:
        if isinstance(rt, ClusterServingRuntime):
            cluster.append(rt)
        elif isinstance(rt, ServingRuntime):
            local.append(rt)
        elif isinstance(rt, MalformedRuntime):
            malformed.append(rt)
        else:
            parsed = parse_runtime(rt)
            if isinstance(parsed, MalformedRuntime):
                malformed.append(parsed)
            elif isinstance(parsed, ClusterServingRuntime):
                cluster.append(parsed)
            else:
                local.append(parsed)
    return local, cluster, malformed


def parse_runtime(obj: Mapping[str, Any]) -> ServingRuntime | ClusterServingRuntime | MalformedRuntime:
    """A runtime's JSON as its typed model, or as a `MalformedRuntime` saying what does not fit."""
    cluster = obj.get("kind") == CLUSTER_SERVING_RUNTIME_KIND
    model = ClusterServingRuntime if cluster else ServingRuntime
    try:
        return model.from_object(obj, where="runtime")
    except InvalidObjectError as exc:
        name = str((obj.get("metadata") or {}).get("name", ""))
        return MalformedRuntime(name, cluster, str(exc).removeprefix("runtime: "))


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What the chosen runtime makes of a `model` predictor."""

    runtime_name: str
    cluster: bool
    protocol_version: str
    """The model's protocol after the runtime defaults, else the runtime's preferred one ("" if none)."""
    pod_spec: dict[str, Any]
    """The merged pod spec; `containers` is the merged kserve-container, then the runtime's others."""
    labels: dict[str, str] = field(default_factory=dict)
    """The runtime's `spec.labels` (lowest priority on the Knative Service)."""
    annotations: dict[str, str] = field(default_factory=dict)
    """The runtime's `spec.annotations`, e.g. `prometheus.kserve.io/port` (lowest priority)."""
    isvc_labels: dict[str, str] = field(default_factory=dict)
    """The InferenceService's labels with those the runtime defaults set (e.g. `serviceEnvelope`)."""


def select(model: ModelSpec, runtimes: Iterable[RuntimeLike]) -> tuple[str, ServingRuntimeSpec, bool]:
    """`(name, spec, is_cluster_runtime)` of the runtime serving the model; `ComponentSpecError` if none."""
    local, cluster, malformed = split_runtimes(runtimes)
    model_format = model.model_format
    if model_format is None or not model_format.name:
        raise ComponentSpecError(REASON_INVALID_SPEC, "predictor.model.modelFormat.name must be specified")
    try:
        chosen = select_runtime(
            local, cluster, model_format, model.protocol_version, model.runtime, malformed=malformed
        )
    except RuntimeSelectionError as exc:
        raise _spec_error(exc) from None
    log.debug("model format %s served by runtime %s", describe_format(model_format), chosen.name)
    return chosen.name, chosen.spec, chosen.cluster


# --- Runtime defaults -----------------------------------------------------------------------------


def _append_env_if_absent(container: dict[str, Any], *env: tuple[str, str]) -> None:
    current: list[Any] = list(container.get("env") or [])
    names = {e.get("name") for e in current if isinstance(e, Mapping)}
    current += [{"name": name, "value": value} for name, value in env if name not in names]
    container["env"] = current


def _has_model_location(model: Mapping[str, Any]) -> bool:
    return model.get("storageUri") is not None or model.get("storage") is not None


def _mlserver_defaults(model: dict[str, Any], isvc_name: str, labels: dict[str, str]) -> None:
    model.setdefault("protocolVersion", c.PROTOCOL_V2)
    if _has_model_location(model):
        _append_env_if_absent(
            model, (MLSERVER_MODEL_NAME_ENV, isvc_name), (MLSERVER_MODEL_URI_ENV, MODEL_MOUNT_PATH)
        )
    else:
        _append_env_if_absent(model, (MLSERVER_LOAD_MODELS_AT_STARTUP_ENV, "false"))
    format_name = str((model.get("modelFormat") or {}).get("name"))
    labels[MODEL_CLASS_LABEL] = MLSERVER_MODEL_CLASSES.get(format_name, MLSERVER_DEFAULT_MODEL_CLASS)


def _torchserve_defaults(model: dict[str, Any], isvc_name: str, labels: dict[str, str]) -> None:
    protocol = model.setdefault("protocolVersion", c.PROTOCOL_V1)
    labels[SERVICE_ENVELOPE_LABEL] = SERVICE_ENVELOPE_V2 if protocol == c.PROTOCOL_V2 else SERVICE_ENVELOPE_V1
    # Appended even when the user set it: the merge below then keeps this value, as KServe's does.
    model["env"] = [*(model.get("env") or []), {"name": PROTOCOL_VERSION_ENV, "value": protocol}]


def _triton_defaults(model: dict[str, Any], isvc_name: str, labels: dict[str, str]) -> None:
    model.setdefault("protocolVersion", c.PROTOCOL_V2)
    if not _has_model_location(model):
        model["args"] = [*(model.get("args") or []), TRITON_EXPLICIT_MODEL_CONTROL]


_RUNTIME_DEFAULTS: Final[dict[str, Callable[[dict[str, Any], str, dict[str, str]], None]]] = {
    MLSERVER: _mlserver_defaults,
    TORCHSERVE: _torchserve_defaults,
    TRITONSERVER: _triton_defaults,
}


def with_runtime_defaults(
    runtime_name: str, model: ModelSpec, isvc: InferenceService
) -> tuple[ModelSpec, dict[str, str]]:
    """The model and the InferenceService labels after KServe's `SetRuntimeDefaults` for `runtime_name`.

    Neither input is modified; runtimes other than MLServer, TorchServe and Triton change nothing.
    """
    labels = isvc.labels
    apply = _RUNTIME_DEFAULTS.get(runtime_name)
    if apply is None:
        return model, labels
    obj = model.to_object()
    apply(obj, isvc.name, labels)
    return ModelSpec.model_validate(obj), labels


def resolve_model(
    isvc: InferenceService,
    model: ModelSpec,
    predictor_pod_spec: Mapping[str, Any],
    runtimes: Iterable[RuntimeLike],
) -> ResolvedModel:
    """Select the runtime and build the predictor's pod spec from it (KServe predictor, `model` branch)."""
    runtimes = list(runtimes)
    labels = isvc.labels
    if model.runtime:
        model, labels = with_runtime_defaults(model.runtime, model, isvc)
        name, spec, cluster = select(model, runtimes)
    else:
        name, spec, cluster = select(model, runtimes)
        model, labels = with_runtime_defaults(name, model, isvc)
    protocol = (
        model.protocol_version if model.protocol_version is not None else spec.default_protocol_version()
    )
    try:
        runtime_container = spec.kserve_container()
    except RuntimeSelectionError as exc:
        raise _spec_error(exc) from None
    container = merge_container(runtime_container.to_object(), model.container().to_object())
    container["name"] = c.INFERENCE_SERVICE_CONTAINER_NAME
    container = replace_placeholders(container, {**isvc.metadata, "labels": labels})
    update_image_tag(container, model.runtime_version, name)
    pod_spec = merge_pod_spec(runtime_pod_spec(spec), predictor_pod_spec)
    others = [ct.to_object() for ct in spec.containers or () if ct.name != c.INFERENCE_SERVICE_CONTAINER_NAME]
    pod_spec["containers"] = [container, *others]
    return ResolvedModel(
        runtime_name=name,
        cluster=cluster,
        protocol_version=protocol,
        pod_spec=pod_spec,
        labels=dict(spec.labels or {}),
        annotations=dict(spec.annotations or {}),
        isvc_labels=labels,
    )


def runtime_pod_spec(spec: ServingRuntimeSpec) -> dict[str, Any]:
    """The pod-level fields a runtime contributes (KServe `MergePodSpec` reads exactly these)."""
    obj = spec.to_object()
    return {
        key: obj[key]
        for key in ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets")
        if obj.get(key) is not None
    }


# --- Strategic merge ------------------------------------------------------------------------------

ListKeys = Mapping[str, tuple[str, "ListKeys | None"]]
"""For a JSON object type: list field -> (merge key of its items, the item type's own list keys)."""

CONTAINER_LIST_KEYS: ListKeys = {
    "env": ("name", None),
    "ports": ("containerPort", None),
    "volumeMounts": ("mountPath", None),
    "volumeDevices": ("devicePath", None),
}
"""corev1.Container lists with `patchStrategy: merge`; every other list is replaced."""

POD_SPEC_LIST_KEYS: ListKeys = {
    "containers": ("name", CONTAINER_LIST_KEYS),
    "initContainers": ("name", CONTAINER_LIST_KEYS),
    "ephemeralContainers": ("name", CONTAINER_LIST_KEYS),
    "volumes": ("name", None),
    "imagePullSecrets": ("name", None),
    "hostAliases": ("ip", None),
    "topologySpreadConstraints": ("topologyKey", None),
    "resourceClaims": ("name", None),
    "schedulingGates": ("name", None),
}
"""corev1.PodSpec lists with `patchStrategy: merge` (tolerations, readinessGates, ... are replaced)."""


def strategic_merge(original: Any, patch: Any, list_keys: ListKeys | None = None) -> Any:
    """Kubernetes strategic merge of JSON values (without `$patch` directives).

    Objects merge key by key, recursively; a `null` in the patch deletes the key, and an empty list in the
    patch changes nothing (Go's `omitempty` never sends one). Lists named in `list_keys` merge item by item
    on their merge key, ordered as `_merge_list` describes; other lists, and scalars, are replaced.
    """
    if not isinstance(original, Mapping) or not isinstance(patch, Mapping):
        return _copy(patch)
    merged: dict[str, Any] = {k: _copy(v) for k, v in original.items()}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
            continue
        if value == []:
            continue
        spec = (list_keys or {}).get(key)
        if spec is not None and isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = _merge_list(merged[key], value, *spec)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = strategic_merge(merged[key], value)
        else:
            merged[key] = _copy(value)
    return merged


def _merge_list(
    original: list[Any], patch: list[Any], merge_key: str, item_keys: ListKeys | None
) -> list[Any]:
    """Merge by key, then order as apimachinery's strategic merge does.

    Items are matched on `merge_key` (a patch item with no match is appended, so a repeated key merges into
    the first). The result then holds the patch's items in patch order, with the original's other items (in
    their original order, repeated keys grouped) woven in where their original position says: each goes
    before the first patch item that came after it in the original, and a new patch item goes before any
    original one.
    """
    merged = [_copy(item) for item in original]
    for item in patch:
        key = _merge_value(item, merge_key)
        index = next(
            (i for i, o in enumerate(merged) if key is not None and _merge_value(o, merge_key) == key), None
        )
        if index is None:
            merged.append(_copy(item))
        else:
            merged[index] = strategic_merge(merged[index], item, item_keys)
    patch_keys = [_merge_value(item, merge_key) for item in patch]
    in_patch = [m for m in merged if _position(patch_keys, m, merge_key) >= 0]
    server_only = [m for m in merged if _position(patch_keys, m, merge_key) < 0]
    original_keys = [_merge_value(item, merge_key) for item in original]
    in_patch.sort(key=lambda m: _position(patch_keys, m, merge_key))

    def original_rank(item: Any) -> int:
        """The first position of the item's key in the original (an item without a key goes last)."""
        position = _position(original_keys, item, merge_key)
        return position if position >= 0 else len(original)

    server_only.sort(key=original_rank)
    out: list[Any] = []
    while server_only or in_patch:
        if not in_patch:
            out.append(server_only.pop(0))
            continue
        if server_only:
            left = _position(original_keys, server_only[0], merge_key)
            right = _position(original_keys, in_patch[0], merge_key)
            if 0 <= left < right:
                out.append(server_only.pop(0))
                continue
        out.append(in_patch.pop(0))
    return out


def _merge_value(item: Any, merge_key: str) -> Any:
    return item.get(merge_key) if isinstance(item, Mapping) else None


def _position(keys: list[Any], item: Any, merge_key: str) -> int:
    """The index of the item's merge key in `keys` (first occurrence), or -1."""
    key = _merge_value(item, merge_key)
    if key is None:
        return -1
    return next((i for i, k in enumerate(keys) if k == key), -1)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def merge_container(runtime_container: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's container patched with the predictor's fields; args are runtime args + predictor args."""
    merged: dict[str, Any] = strategic_merge(runtime_container, override, CONTAINER_LIST_KEYS)
    args = [*(runtime_container.get("args") or ()), *(override.get("args") or ())]
    if args:
        merged["args"] = args
    if not merged.get("name") and runtime_container.get("name"):
        merged["name"] = runtime_container["name"]
    return merged


def merge_pod_spec(runtime_pod: Mapping[str, Any], predictor_pod: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's pod-level fields overridden by the predictor's inlined pod spec (strategic merge)."""
    merged: dict[str, Any] = strategic_merge(runtime_pod, predictor_pod, POD_SPEC_LIST_KEYS)
    return merged


# --- Placeholders and image tags ------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_FIELD = re.compile(r"^\.(Name|Namespace|GenerateName|UID|ResourceVersion)$")
_MAP_FIELD = re.compile(r"^\.(Labels|Annotations)\.([A-Za-z_][A-Za-z0-9_]*)$")
_INDEX = re.compile(r'^index\s+\.(Labels|Annotations)\s+"([^"]*)"$')
_META_KEYS = {
    "Name": "name",
    "Namespace": "namespace",
    "GenerateName": "generateName",
    "UID": "uid",
    "ResourceVersion": "resourceVersion",
    "Labels": "labels",
    "Annotations": "annotations",
}


def replace_placeholders(obj: Any, metadata: Mapping[str, Any]) -> Any:
    """Every string in `obj` with `{{.Name}}`, `{{.Namespace}}`, `{{.Labels.x}}`, `{{index .Annotations "k"}}`
    (and the other ObjectMeta scalars) replaced from the InferenceService metadata, as KServe's Go template
    over the runtime container does. Any other template action is a runtime error the user must fix.

    A label or annotation the InferenceService does not have renders as the empty string, never as Go
    text/template's `<no value>`: KServe executes the template with html/template, which prints nothing for
    a missing key. Values are inserted as they are (html/template would HTML-escape them, `a&b` becoming
    `a&amp;b` in the container).
    """
    if isinstance(obj, str):
        return _PLACEHOLDER.sub(lambda m: _render(m.group(1), metadata), obj) if "{{" in obj else obj
    if isinstance(obj, Mapping):
        return {k: replace_placeholders(v, metadata) for k, v in obj.items()}
    if isinstance(obj, list):
        return [replace_placeholders(v, metadata) for v in obj]
    return obj


def _render(action: str, metadata: Mapping[str, Any]) -> str:
    m = _FIELD.match(action)
    if m:
        return str(metadata.get(_META_KEYS[m.group(1)]) or "")
    m = _MAP_FIELD.match(action) or _INDEX.match(action)
    if m:
        values = metadata.get(_META_KEYS[m.group(1)]) or {}
        value = values.get(m.group(2))
        return "" if value is None else str(value)
    raise ComponentSpecError(
        c.FAILURE_INVALID_PREDICTOR_SPEC,
        "failed to replace placeholders in serving runtime Container: "
        f"unsupported template action {{{{{action}}}}}",
    )


_TAG = re.compile(r":[\w.\-]*$")


def update_image_tag(
    container: dict[str, Any], runtime_version: str | None, runtime_name: str | None
) -> None:
    """`runtimeVersion` replaces (or adds) the image tag; without it, a GPU container of a runtime with
    `-gpu` builds gets the `-gpu` tag suffix (KServe `UpdateImageTag`)."""
    image = container.get("image")
    if not isinstance(image, str) or not image:
        return
    if runtime_version:
        container["image"] = (
            _TAG.sub(f":{runtime_version}", image) if _TAG.search(image) else f"{image}:{runtime_version}"
        )
        return
    limits = (container.get("resources") or {}).get("limits") or {}
    if (
        NVIDIA_GPU_RESOURCE in limits
        and runtime_name in GPU_IMAGE_RUNTIMES
        and _TAG.search(image)
        and not image.endswith("-gpu")
    ):
        container["image"] = f"{image}-gpu"
