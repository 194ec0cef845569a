"""From a predictor's `model` to the pod spec that serves it: runtime resolution and KServe's merge rules.

A `model:` predictor names no image; the (Cluster)ServingRuntime chosen for it (explicitly or by
auto-selection, see `apis.servingruntime`) contributes the `kserve-container` and the rest of the pod. The
user's `model` fields then override the runtime's container the way `kubectl patch` would (a strategic
merge: env by name, ports by containerPort, volume mounts by path), except `args`, which KServe concatenates
(runtime args first) because users extend a runtime's flags far more often than they replace them. Both
rules are KServe v0.11's and decide what runs, so they are reproduced exactly, as is the templating of
`{{.Name}}`-style placeholders in the runtime's container and the `runtimeVersion` image tag rewrite.

Problems a user can fix in the spec (unknown or disabled runtime, no supporting runtime, a runtime without
`kserve-container`) raise `ComponentSpecError`, which carries KServe's reason: the caller turns it into a
condition instead of retrying.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apis import constants as c
from apis.base import InvalidObjectError
from apis.inferenceservice import InferenceService, ModelSpec
from apis.servingruntime import (
    CLUSTER_SERVING_RUNTIME_KIND,
    ClusterServingRuntime,
    RuntimeSelectionError,
    ServingRuntime,
    ServingRuntimeSpec,
    describe_format,
    select_runtime,
)

log = logging.getLogger(__name__)

RuntimeLike = ServingRuntime | ClusterServingRuntime | Mapping[str, Any]
"""A runtime as a typed model or as the JSON object the cache holds (kind tells the two kinds apart)."""

REASON_INVALID_SPEC = "InvalidSpec"
REASON_INVALID_STORAGE_URI = "InvalidStorageURI"

NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
GPU_IMAGE_RUNTIMES = frozenset({"kserve-tensorflow-serving", "kserve-torchserve"})
"""Runtimes whose GPU build is the same image with a `-gpu` tag suffix."""


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


# --- Runtime selection ----------------------------------------------------------------------------


def split_runtimes(
    runtimes: Iterable[RuntimeLike],
) -> tuple[list[ServingRuntime], list[ClusterServingRuntime]]:
    """Typed namespace and cluster runtimes; a malformed runtime object is skipped with a warning."""
    local: list[ServingRuntime] = []
    cluster: list[ClusterServingRuntime] = []
    for rt in runtimes:
        if isinstance(rt, ClusterServingRuntime):
            cluster.append(rt)
        elif isinstance(rt, ServingRuntime):
            local.append(rt)
        else:
            try:
                if rt.get("kind") == CLUSTER_SERVING_RUNTIME_KIND:
                    cluster.append(ClusterServingRuntime.from_object(rt))
                else:
                    local.append(ServingRuntime.from_object(rt))
            except InvalidObjectError as exc:
                log.warning("ignoring malformed runtime: %s", exc)
    return local, cluster


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What the chosen runtime makes of a `model` predictor."""

    runtime_name: str
    cluster: bool
    protocol_version: str
    """The model's protocol, or the runtime's preferred one when the model names none."""
    pod_spec: dict[str, Any]
    """The merged pod spec; `containers` is the merged kserve-container, then the runtime's others."""
    labels: dict[str, str] = field(default_factory=dict)
    """The runtime's `spec.labels` (lowest priority on the Knative Service)."""
    annotations: dict[str, str] = field(default_factory=dict)
    """The runtime's `spec.annotations`, e.g. `prometheus.kserve.io/port` (lowest priority)."""


def select(model: ModelSpec, runtimes: Iterable[RuntimeLike]) -> tuple[str, ServingRuntimeSpec, bool]:
    """`(name, spec, is_cluster_runtime)` of the runtime serving the model; `ComponentSpecError` if none."""
    local, cluster = split_runtimes(runtimes)
    model_format = model.model_format
    if model_format is None or not model_format.name:
        raise ComponentSpecError(REASON_INVALID_SPEC, "predictor.model.modelFormat.name must be specified")
    try:
        chosen = select_runtime(local, cluster, model_format, model.protocol_version, model.runtime)
    except RuntimeSelectionError as exc:
        raise ComponentSpecError(exc.reason, str(exc), model_failure_message=exc.message) from None
    log.debug("model format %s served by runtime %s", describe_format(model_format), chosen.name)
    return chosen.name, chosen.spec, chosen.cluster


def resolve_model(
    isvc: InferenceService,
    model: ModelSpec,
    predictor_pod_spec: Mapping[str, Any],
    runtimes: Iterable[RuntimeLike],
) -> ResolvedModel:
    """Select the runtime and build the predictor's pod spec from it (KServe predictor, `model` branch)."""
    name, spec, cluster = select(model, runtimes)
    try:
        runtime_container = spec.kserve_container()
    except RuntimeSelectionError as exc:
        raise ComponentSpecError(exc.reason, str(exc), model_failure_message=exc.message) from None
    container = merge_container(runtime_container.to_object(), model.container().to_object())
    container["name"] = c.INFERENCE_SERVICE_CONTAINER_NAME
    container = replace_placeholders(container, isvc.metadata)
    update_image_tag(container, model.runtime_version, name)
    pod_spec = merge_pod_spec(runtime_pod_spec(spec), predictor_pod_spec)
    others = [ct.to_object() for ct in spec.containers or () if ct.name != c.INFERENCE_SERVICE_CONTAINER_NAME]
    pod_spec["containers"] = [container, *others]
    return ResolvedModel(
        runtime_name=name,
        cluster=cluster,
        protocol_version=model.protocol_version or spec.default_protocol_version(),
        pod_spec=pod_spec,
        labels=dict(spec.labels or {}),
        annotations=dict(spec.annotations or {}),
    )


def runtime_pod_spec(spec: ServingRuntimeSpec) -> dict[str, Any]:
    """The pod-level fields a runtime contributes (KServe `MergePodSpec` reads exactly these)."""
    obj = spec.to_object()
    return {
        key: obj[key]
        for key in ("nodeSelector", "affinity", "tolerations", "volumes", "imagePullSecrets", "schedulerName")
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

    Objects merge key by key, recursively; a `null` in the patch deletes the key. Lists named in
    `list_keys` merge item by item on their merge key (matched items merge, new items are appended);
    other lists, and scalars, are replaced by the patch.
    """
    if not isinstance(original, Mapping) or not isinstance(patch, Mapping):
        return _copy(patch)
    merged: dict[str, Any] = {k: _copy(v) for k, v in original.items()}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
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
    out = [_copy(item) for item in original]
    for item in patch:
        key = item.get(merge_key) if isinstance(item, Mapping) else None
        index = next(
            (
                i
                for i, o in enumerate(out)
                if key is not None and isinstance(o, Mapping) and o.get(merge_key) == key
            ),
            None,
        )
        if index is None:
            out.append(_copy(item))
        else:
            out[index] = strategic_merge(out[index], item, item_keys)
    return out


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
NO_VALUE = "<no value>"
"""What Go's text/template prints for a missing map key."""


def replace_placeholders(obj: Any, metadata: Mapping[str, Any]) -> Any:
    """Every string in `obj` with `{{.Name}}`, `{{.Namespace}}`, `{{.Labels.x}}`, `{{index .Annotations "k"}}`
    (and the other ObjectMeta scalars) replaced from the InferenceService metadata, as KServe's Go template
    over the runtime container does. Any other template action is a runtime error the user must fix."""
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
        return NO_VALUE if value is None else str(value)
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
