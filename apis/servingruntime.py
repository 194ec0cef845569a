"""ServingRuntime and ClusterServingRuntime (`serving.kserve.io/v1alpha1`) and runtime selection.

A predictor given as `model: {modelFormat: ...}` is served by a runtime: the one named in `model.runtime`,
or the best auto-selectable one. The rules are KServe v0.11's, kept exact because they decide which image
serves a user's model:

- Explicit name: the namespace's ServingRuntime of that name, else the ClusterServingRuntime; it must not be
  disabled, must support the protocol version if one is given, and must list the model format (and version,
  when the model gives one) in `supportedModelFormats` (autoSelect does not matter).
- Automatic: candidates are the enabled, single-model (unless asked otherwise) runtimes that list the format
  with `autoSelect: true` and support the model's protocol (default `v1`). A runtime without
  `protocolVersions` supports every protocol.
- Order: namespace runtimes first, then cluster runtimes. Each group is first ordered by its lowest listed
  protocol (v1 < v2 < grpc-v1 < grpc-v2 < none or unknown), then newest first, then by name; then, keeping
  that order among equals, by the priority of the format (higher first, runtimes without one last). The
  priority is that of the *first* `supportedModelFormats` entry with the format's name, whatever its
  version or autoSelect (KServe `GetPriority`).

A runtime object that passes the CRD schema but not our model (the schema keeps unknown fields, so a
mistyped field can get through) is a `MalformedRuntime`: never auto-selected, and reported, with what is
wrong with it, to the InferenceService that names it.

Failures raise a `RuntimeSelectionError` carrying KServe's model-status reason and message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

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
        """Listed in `protocolVersions`; a runtime listing none, or an empty protocol, always matches."""
        if not protocol_version or not self.protocol_versions:
            return True
        return protocol_version in self.protocol_versions

    def supports_format(self, model_format: ModelFormat, *, auto_select_only: bool = False) -> bool:
        """Whether a `supportedModelFormats` entry matches the name (and the version, when given)."""
        for entry in self.supported_model_formats or ():
            if auto_select_only and not entry.auto_select:
                continue
            if entry.name != model_format.name:
                continue
            if model_format.version is None or entry.version == model_format.version:
                return True
        return False

    def priority_for(self, format_name: str) -> int | None:
        """The priority of the first entry named `format_name`, whatever its version (`GetPriority`)."""
        for entry in self.supported_model_formats or ():
            if entry.name == format_name:
                return entry.priority
        return None

    def protocol_rank(self) -> int:
        """The rank of the lowest protocol listed (v1=1 ... grpc-v2=4); none or only unknown ones rank 5."""
        return min((protocol_rank(p) for p in self.protocol_versions or ()), default=UNKNOWN_PROTOCOL_RANK)

    def default_protocol_version(self) -> str:
        """The protocol a model gets when it names none: the lowest listed, or "" when none is known."""
        rank = self.protocol_rank()
        return c.PROTOCOL_VERSIONS[rank - 1] if rank != UNKNOWN_PROTOCOL_RANK else ""

    def kserve_container(self) -> Container:
        """The container named `kserve-container`; its absence is a runtime error KServe reports verbatim."""
        if not self.containers:
            raise RuntimeSelectionError(
                c.FAILURE_INVALID_PREDICTOR_SPEC,
                "No container configuration found in selected serving runtime",
                "no container configuration found in selected serving runtime",
            )
        for container in self.containers:
            if container.name == c.INFERENCE_SERVICE_CONTAINER_NAME:
                return container
        raise KserveContainerMissingError(
            c.FAILURE_INVALID_PREDICTOR_SPEC,
            "",
            "failed to find kserve-container in ServingRuntime containers",
        )


UNKNOWN_PROTOCOL_RANK: Final = len(c.PROTOCOL_VERSIONS) + 1


def protocol_rank(protocol: str) -> int:
    """KServe's protocol order: v1=1, v2=2, grpc-v1=3, grpc-v2=4, anything else 5."""
    if protocol in c.PROTOCOL_VERSIONS:
        return c.PROTOCOL_VERSIONS.index(protocol) + 1
    return UNKNOWN_PROTOCOL_RANK


class ServingRuntime(KubeObject):
    api_version: str = API_VERSION
    kind: str = SERVING_RUNTIME_KIND
    spec: ServingRuntimeSpec = Field(default_factory=ServingRuntimeSpec)


class ClusterServingRuntime(KubeObject):
    api_version: str = API_VERSION
    kind: str = CLUSTER_SERVING_RUNTIME_KIND
    spec: ServingRuntimeSpec = Field(default_factory=ServingRuntimeSpec)


@dataclass(frozen=True, slots=True)
class MalformedRuntime:
    """A runtime object our model cannot read: its name, scope and the one-line problem."""

    name: str
    cluster: bool
    problem: str


@dataclass(frozen=True, slots=True)
class SupportedRuntime:
    """A selected runtime: its name, its spec and whether it is a ClusterServingRuntime."""

    name: str
    spec: ServingRuntimeSpec
    cluster: bool


class RuntimeSelectionError(Exception):
    """No usable runtime. `reason`/`message` are KServe's model-status failure info; str() is the error.

    An empty `message` means KServe records no model status for this failure.
    """

    def __init__(self, reason: str, message: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.message = message


class RuntimeNotFoundError(RuntimeSelectionError):
    """The explicitly named runtime exists neither in the namespace nor in the cluster."""


class MalformedRuntimeError(RuntimeSelectionError):
    """The explicitly named runtime exists but cannot be read."""


class RuntimeDisabledError(RuntimeSelectionError):
    """The explicitly named runtime is disabled."""


class NoSupportingRuntimeError(RuntimeSelectionError):
    """The named runtime does not support the model, or no runtime can be auto-selected."""


class KserveContainerMissingError(RuntimeSelectionError):
    """The runtime has containers but none named `kserve-container`."""


def describe_format(model_format: ModelFormat) -> str:
    """`sklearn` or `sklearn:1`."""
    return model_format.name + (f":{model_format.version}" if model_format.version is not None else "")


def _created(runtime: ServingRuntime | ClusterServingRuntime) -> float:
    """creationTimestamp as seconds; absent or unreadable is the zero time (oldest)."""
    stamp = runtime.metadata.get("creationTimestamp")
    if not isinstance(stamp, str):
        return 0.0
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


_R = TypeVar("_R", ServingRuntime, ClusterServingRuntime)


def listing_order(runtimes: Sequence[_R]) -> list[_R]:
    """KServe's list order: lowest protocol rank first, then newest first, then by name."""
    return sorted(runtimes, key=lambda r: (r.spec.protocol_rank(), -_created(r), r.name))


def _by_priority(candidates: list[SupportedRuntime], model_format: ModelFormat) -> list[SupportedRuntime]:
    def key(rt: SupportedRuntime) -> tuple[int, int]:
        priority = rt.spec.priority_for(model_format.name)
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
    protocol = c.PROTOCOL_V1 if protocol_version is None else protocol_version

    def eligible(spec: ServingRuntimeSpec) -> bool:
        return (
            not spec.is_disabled
            and spec.is_multi_model == multi_model
            and spec.supports_format(model_format, auto_select_only=True)
            and spec.supports_protocol(protocol)
        )

    local = [
        SupportedRuntime(r.name, r.spec, cluster=False) for r in listing_order(runtimes) if eligible(r.spec)
    ]
    cluster = [
        SupportedRuntime(r.name, r.spec, cluster=True)
        for r in listing_order(cluster_runtimes)
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
    malformed: Sequence[MalformedRuntime] = (),
) -> SupportedRuntime:
    """The runtime that serves the model; `runtimes` are the InferenceService namespace's ServingRuntimes.

    `malformed` are the runtimes (of both scopes) that could not be read: only an explicit name finds them.
    """
    if explicit_name:
        return _explicit(runtimes, cluster_runtimes, malformed, model_format, protocol_version, explicit_name)
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


def _lookup(
    runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
    malformed: Sequence[MalformedRuntime],
    name: str,
) -> SupportedRuntime | MalformedRuntime | None:
    """The namespace's runtime of that name, else the cluster's (KServe `GetServingRuntime`)."""
    for cluster in (False, True):
        for r in cluster_runtimes if cluster else runtimes:
            if r.name == name:
                return SupportedRuntime(name, r.spec, cluster=cluster)
        for bad in malformed:
            if bad.cluster == cluster and bad.name == name:
                return bad
    return None


def _explicit(
    runtimes: Sequence[ServingRuntime],
    cluster_runtimes: Sequence[ClusterServingRuntime],
    malformed: Sequence[MalformedRuntime],
    model_format: ModelFormat,
    protocol_version: str | None,
    name: str,
) -> SupportedRuntime:
    chosen = _lookup(runtimes, cluster_runtimes, malformed, name)
    if chosen is None:
        raise RuntimeNotFoundError(
            c.FAILURE_RUNTIME_NOT_RECOGNIZED,
            "Waiting for runtime to become available",
            f"No ServingRuntimes or ClusterServingRuntimes with the name: {name}",
        )
    if isinstance(chosen, MalformedRuntime):
        kind = CLUSTER_SERVING_RUNTIME_KIND if chosen.cluster else SERVING_RUNTIME_KIND
        raise MalformedRuntimeError(
            c.FAILURE_RUNTIME_NOT_RECOGNIZED,
            "Waiting for runtime to become available",
            f'{kind} "{name}" cannot be used: {chosen.problem}',
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
