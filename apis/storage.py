"""Where a model may be stored: KServe's storage-URI rule, shared by the controller and the webhooks.

KServe accepts a local path (no scheme), one of a fixed set of schemes, or an Azure blob URL. The validating
webhook rejects anything else at admission and the controller reports it as a condition (for objects that
were admitted before the webhook existed); both must agree, so the rule lives here once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

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
_AZURE_BLOB_URI: Final = re.compile(r"https://(.+?)\.blob\.core\.windows\.net/(.+)")
_HAS_SCHEME: Final = re.compile(r"\w+?://")


def is_supported_storage_uri(uri: str, extra_prefixes: Iterable[str] = ()) -> bool:
    """True for a local path, a supported scheme (plus `extra_prefixes`), or a well-formed Azure blob URL."""
    if not _HAS_SCHEME.search(uri):
        return True
    if AZURE_BLOB_HOST in uri:
        return bool(_AZURE_BLOB_URI.search(uri))
    return uri.startswith((*STORAGE_URI_PREFIXES, *extra_prefixes))
