"""Where a model may be stored: KServe's storage-URI rule, shared by the controller and the webhooks.

KServe (`ValidateStorageURI`) first accepts any URI an enabled ClusterStorageContainer serves, then a local
path (no scheme), one of a fixed set of schemes, or an Azure blob URL. The validating webhook rejects
anything else at admission and the controller reports it as a condition (for objects that were admitted
before the webhook existed, or before a ClusterStorageContainer was removed); both must agree, so the rule
lives here once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from apis.storagecontainer import ClusterStorageContainer, storage_container_for

STORAGE_URI_PREFIXES: Final = (
    "gs://",
    "s3://",
    "pvc://",
    "file://",
    "https://",
    "http://",
    "hdfs://",
    "webhdfs://",
)
AZURE_BLOB_HOST: Final = "blob.core.windows.net"
_AZURE_BLOB_URI: Final = re.compile(r"https://(.+?).blob.core.windows.net/(.+)")
"""KServe's pattern verbatim, unescaped dots included (so it matches exactly the URIs KServe accepts)."""
_HAS_SCHEME: Final = re.compile(r"\w+?://")


def is_supported_storage_uri(
    uri: str, storage_containers: Iterable[Mapping[str, Any] | ClusterStorageContainer] = ()
) -> bool:
    """True for a URI a ClusterStorageContainer serves, a local path, a supported scheme or an Azure blob URL.

    Raises `apis.storagecontainer.StorageContainerError` when a ClusterStorageContainer cannot be checked.
    """
    if storage_container_for(storage_containers, uri) is not None:
        return True
    if not _HAS_SCHEME.search(uri):
        return True
    if AZURE_BLOB_HOST in uri:
        return bool(_AZURE_BLOB_URI.search(uri))
    return uri.startswith(STORAGE_URI_PREFIXES)


def go_json(value: Mapping[str, str]) -> str:
    """`value` encoded as Go's `json.Marshal` encodes a map of strings: sorted keys, compact, `<>&` escaped.

    The storage spec's parameters travel in this form (the pod annotation, `STORAGE_OVERRIDE_CONFIG`).
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
