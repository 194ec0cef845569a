"""ServingRuntime and ClusterServingRuntime (`serving.kserve.io/v1alpha1`) and runtime selection.

A predictor given as `model: {modelFormat: ...}` is served by a runtime: the one named in `model.runtime`,
or the best auto-selectable one. The rules are KServe v0.11's, kept exact because they decide which image
serves a user's model:

- Explicit name: the namespace's ServingRuntime of that name, else the ClusterServingRuntime; it must not be
  disabled, must support the protocol version if one is given, and must list the model format (and version,
  when the model gives one) in `supportedModelFormats` (autoSelect does not matter).
- Automatic: candidates are the enabled, single-model (unless asked otherwise) runtimes that list the format
  with `autoSelect: true` and support the protocol version (default `v1`; a runtime without
  `protocolVersions` supports v1 and v2). Namespace runtimes come first (newest first, then by name), then
  cluster runtimes (by name); within each group a higher `priority` for the format wins and runtimes without
  a priority go last.

Failures raise a `RuntimeSelectionError` carrying KServe's model-status reason and message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import Field

from apis import constants as c
from apis.base import KubeModel, KubeObject
from apis.inferenceservice import Container, ModelFormat

API_VERSION: Final = "serving.kserve.io/v1alpha1"
SERVING_RUNTIME_KIND: Final = "ServingRuntime"
CLUSTER_SERVING_RUNTIME_KIND: Final = "ClusterServingRuntime"


class SupportedModelFormat(KubeModel):
    name: str = ""
    version: str | None = None
    auto_select: bool | None = None
    priority: int | None = None


class StorageHelper(KubeModel):
    disabled: bool | None = None


class ServingRuntimeSpec(KubeModel):
    """What a runtime serves and the pod template (containers, volumes, ...) it contributes."""

    supported_model_formats: list[SupportedModelFormat] | None = None
    multi_model: bool | None = None
    disabled: bool | None = None
    protocol_versions: list[str] | None = None
    containers: list[Container] | None = None
    volumes: list[dict[str, object]] | None = None
    node_selector: dict[str, str] | None = None
    affinity: dict[str, object] | None = None
    tolerations: list[dict[str, object]] | None = None
    image_pull_secrets: list[dict[str, object]] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    storage_helper: StorageHelper | None = None

    @property
    def is_disabled(self) -> bool:
        return bool(self.disabled)

    @property
    def is_multi_model(self) -> bool:
        return bool(self.multi_model)

    def supports_protocol(self, protocol_version: str) -> bool:
        """Listed in `protocolVersions`; with none listed, v1 and v2 are supported."""
        if not self.protocol_versions:
            return protocol_version in (c.PROTOCOL_V1, c.PROTOCOL_V2)
        return protocol_version in self.protocol_versions

    def supports_format(self, model_format: ModelFormat, *, auto_select_only: bool = False) -> bool:
        """Whether a `supportedModelFormats` entry matches the name (and the version, when given)."""
        return self._matching_format(model_format, auto_select_only=auto_select_only) is not None

    def priority_for(self, model_format: ModelFormat) -> int | None:
        """The priority of the auto-selectable entry matching the format, or None."""
        entry = self._matching_format(model_format, auto_select_only=True)
        return entry.priority if entry is not None else None

    def _matching_format(
        self, model_format: ModelFormat, *, auto_select_only: bool
    ) -> SupportedModelFormat | None:
        for entry in self.supported_model_formats or ():
            if auto_select_only and not entry.auto_select:
                continue
            if entry.name != model_format.name:
                continue
            if model_format.version is None or entry.version == model_format.version:
                return entry
        return None

    def default_protocol_version(self) -> str:
        """The protocol a model gets when it names none: the first of v1, v2, grpc-v1, grpc-v2 listed."""
        listed = [p for p in c.PROTOCOL_VERSIONS if p in (self.protocol_versions or ())]
        return listed[0] if listed else c.PROTOCOL_V1

    def kserve_container(self) -> Container:
        """The container named `kserve-container`; its absence is a runtime error KServe reports verbatim."""
        for container in self.containers or ():
            if container.name == c.INFERENCE_SERVICE_CONTAINER_NAME:
                return container
        raise RuntimeSelectionError(
            c.FAILURE_INVALID_PREDICTOR_SPEC,
            "failed to find kserve-container in ServingRuntime containers",
            "failed to find kserve-container in ServingRuntime containers",
        )


class ServingRuntime(KubeObject):
    api_version: str = API_VERSION
    kind: str = SERVING_RUNTIME_KIND
    spec: ServingRuntimeSpec = Field(default_factory=ServingRuntimeSpec)


class ClusterServingRuntime(KubeObject):
    api_version: str = API_VERSION
    kind: str = CLUSTER_SERVING_RUNTIME_KIND
    spec: ServingRuntimeSpec = Field(default_factory=ServingRuntimeSpec)


@dataclass(frozen=True, slots=True)
class SupportedRuntime:
    """A selected runtime: its name, its spec and whether it is a ClusterServingRuntime."""

    name: str
    spec: ServingRuntimeSpec
    cluster: bool


class RuntimeSelectionError(Exception):
    """No usable runtime. `reason`/`message` are KServe's model-status failure info; str() is the error."""

    def __init__(self, reason: str, message: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.message = message


class RuntimeNotFoundError(RuntimeSelectionError):
    """The explicitly named runtime exists neither in the namespace nor in the cluster."""


class RuntimeDisabledError(RuntimeSelectionError):
    """The explicitly named runtime is disabled."""


class NoSupportingRuntimeError(RuntimeSelectionError):
    """The named runtime does not support the model, or no runtime can be auto-selected."""


def describe_format(model_format: ModelFormat) -> str:
    """`sklearn` or `sklearn:1`."""
    return model_format.name + (f":{model_format.version}" if model_format.version is not None else "")


def _sorted_namespace_runtimes(runtimes: Sequence[ServingRuntime]) -> list[ServingRuntime]:
    by_name = sorted(runtimes, key=lambda r: r.name)
    return sorted(by_name, key=lambda r: str(r.metadata.get("creationTimestamp") or ""), reverse=True)


def _by_priority(candidates: list[SupportedRuntime], model_format: ModelFormat) -> list[SupportedRuntime]:
    def key(rt: SupportedRuntime) -> tuple[int, int]:
        priority = rt.spec.priority_for(model_format)
        return (0, -priority) if priority is not None else (1, 0)

    return sorted(candidates, key=key)


def supporting_runtimes(
    runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
    model_format: ModelFormat,
    protocol_version: str | None = None,
    *,
    multi_model: bool = False,
) -> list[SupportedRuntime]:
    """Every auto-selectable runtime for the model, best first (KServe `GetSupportingRuntimes`)."""
    protocol = protocol_version or c.PROTOCOL_V1

    def eligible(spec: ServingRuntimeSpec) -> bool:
        return (
            not spec.is_disabled
            and spec.is_multi_model == multi_model
            and spec.supports_format(model_format, auto_select_only=True)
            and spec.supports_protocol(protocol)
        )

    local = [
        SupportedRuntime(r.name, r.spec, cluster=False)
        for r in _sorted_namespace_runtimes(runtimes)
        if eligible(r.spec)
    ]
    cluster = [
        SupportedRuntime(r.name, r.spec, cluster=True)
        for r in sorted(cluster_runtimes, key=lambda r: r.name)
        if eligible(r.spec)
    ]
    return _by_priority(local, model_format) + _by_priority(cluster, model_format)


def select_runtime(
    runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
    model_format: ModelFormat,
    protocol_version: str | None = None,
    explicit_name: str | None = None,
    *,
    multi_model: bool = False,
) -> SupportedRuntime:
    """The runtime that serves the model; `runtimes` are the InferenceService namespace's ServingRuntimes."""
    if explicit_name:
        return _explicit(runtimes, cluster_runtimes, model_format, protocol_version, explicit_name)
    found = supporting_runtimes(
        runtimes, cluster_runtimes, model_format, protocol_version, multi_model=multi_model
    )
    if not found:
        raise NoSupportingRuntimeError(
            c.FAILURE_NO_SUPPORTING_RUNTIME,
            "No runtime found to support specified framework/version",
            f"no runtime found to support predictor with model type: {describe_format(model_format)}",
        )
    return found[0]


def _explicit(
    runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
    model_format: ModelFormat,
    protocol_version: str | None,
    name: str,
) -> SupportedRuntime:
    chosen: SupportedRuntime | None = None
    for r in runtimes:
        if r.name == name:
            chosen = SupportedRuntime(name, r.spec, cluster=False)
            break
    else:
        for cr in cluster_runtimes:
            if cr.name == name:
                chosen = SupportedRuntime(name, cr.spec, cluster=True)
                break
    if chosen is None:
        raise RuntimeNotFoundError(
            c.FAILURE_RUNTIME_NOT_RECOGNIZED,
            "Waiting for runtime to become available",
            f"No ServingRuntimes or ClusterServingRuntimes with the name: {name}",
        )
    if chosen.spec.is_disabled:
        raise RuntimeDisabledError(
            c.FAILURE_RUNTIME_DISABLED,
            "Specified runtime is disabled",
            f"specified runtime {name} is disabled",
        )
    if protocol_version is not None and not chosen.spec.supports_protocol(protocol_version):
        raise NoSupportingRuntimeError(
            c.FAILURE_NO_SUPPORTING_RUNTIME,
            "Specified runtime does not support specified protocol version",
            f"specified runtime {name} does not support specified protocol version",
        )
    if not chosen.spec.supports_format(model_format):
        raise NoSupportingRuntimeError(
            c.FAILURE_NO_SUPPORTING_RUNTIME,
            "Specified runtime does not support specified framework/version",
            f"specified runtime {name} does not support specified framework/version",
        )
    return chosen
