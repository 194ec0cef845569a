"""ClusterStorageContainer (`serving.kserve.io/v1alpha1`, cluster-scoped): who downloads which storage URIs.

An operator adds a storage scheme, or replaces the storage initializer for one, without touching the
`inferenceservice-config` ConfigMap: each object names a container and the URIs it serves
(`supportedUriFormats`: a `prefix`, or else a `regex` searched anywhere in the URI). Two places ask the
same question, so the rule lives here once: the controller accepts a storage URI that some enabled object
serves (before its built-in scheme list), and the pod webhook merges that object's container over the
storage-initializer init container.

The first enabled object that serves the URI wins. KServe reads the objects from its informer cache, whose
order Go leaves unspecified; we take them by name, the order the API server lists them in, so the choice is
stable. A regex uses Python's `re` syntax, which agrees with Go's RE2 on the usual patterns (character
classes, groups, lazy quantifiers, anchors); a pattern that does not compile is an error naming the object,
as in KServe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import Field

from apis.base import InvalidObjectError, KubeModel, KubeObject

API_VERSION: Final = "serving.kserve.io/v1alpha1"
CLUSTER_STORAGE_CONTAINER_KIND: Final = "ClusterStorageContainer"


class StorageContainerError(ValueError):
    """A ClusterStorageContainer cannot be used (bad regex, malformed object); the message names it."""


class SupportedUriFormat(KubeModel):
    """One accepted URI form: `prefix` when set (non-empty), else `regex`; neither matches nothing."""

    prefix: str | None = None
    regex: str | None = None

    def matches(self, uri: str) -> bool:
        """Whether `uri` has this form (`re.error` for a regex that does not compile)."""
        if self.prefix:
            return uri.startswith(self.prefix)
        if self.regex:
            return re.search(self.regex, uri) is not None
        return False


class StorageContainerSpec(KubeModel):
    """The container to run for matching URIs and the URI forms it serves."""

    container: dict[str, Any] = Field(default_factory=dict)
    supported_uri_formats: list[SupportedUriFormat] = Field(default_factory=list)

    def supports(self, uri: str) -> bool:
        """KServe `IsStorageUriSupported`: any of the formats matches (`re.error` for a bad regex)."""
        return any(uri_format.matches(uri) for uri_format in self.supported_uri_formats)


class ClusterStorageContainer(KubeObject):
    """The cluster-scoped object; `disabled: true` takes it out of every decision."""

    api_version: str = API_VERSION
    kind: str = CLUSTER_STORAGE_CONTAINER_KIND
    spec: StorageContainerSpec = Field(default_factory=StorageContainerSpec)
    disabled: bool | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def is_disabled(self) -> bool:
        return bool(self.disabled)


def _parse(obj: Mapping[str, Any]) -> ClusterStorageContainer:
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    try:
        return ClusterStorageContainer.from_object(
            obj, where=f"ClusterStorageContainer {name or '(unnamed)'}"
        )
    except InvalidObjectError as exc:
        raise StorageContainerError(str(exc)) from None


def storage_container_for(
    objects: Iterable[Mapping[str, Any] | ClusterStorageContainer], uri: str
) -> ClusterStorageContainer | None:
    """The first enabled ClusterStorageContainer (by name) serving `uri`, or None.

    Raises `StorageContainerError` for an object that does not fit the schema or whose regex does not
    compile (KServe: "error checking storage container <name>: <error>").
    """
    parsed = [o if isinstance(o, ClusterStorageContainer) else _parse(o) for o in objects]
    for candidate in sorted(parsed, key=lambda item: item.name):
        if candidate.is_disabled:
            continue
        try:
            if candidate.spec.supports(uri):
                return candidate
        except re.error as exc:
            raise StorageContainerError(f"error checking storage container {candidate.name}: {exc}") from None
    return None
