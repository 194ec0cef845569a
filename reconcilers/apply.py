"""Write a child object only when what we own of it differs: the no-op-write rule in one place.

KServe v0.11 updates its Knative Service and ExternalName Service on every reconcile, so 200 steady
InferenceServices cost hundreds of writes per resync. Comparing the desired object with the live one is not
enough on its own, because the API server and other controllers (Knative's webhook) fill in defaults we never
set: a plain equality check sees a difference forever. So a write is needed when either

* the live object no longer contains what we want (`is_subset(desired, live)` fails): a field we set was
  changed or removed by someone else, or we now want something new; or
* what we want changed since our last write, which also catches fields we stopped setting (a subset check
  cannot see a removal). Our last desired state is fingerprinted in one small annotation.

Writes use server-side apply with one field manager, so the API server removes the fields we stopped
applying and leaves other managers' fields (Knative's defaults, users' extra labels) alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from manager.client import Client, Object, Resource

FIELD_MANAGER = "kserve-manager"
HASH_ANNOTATION = "serving.kserve.io/desired-hash"
"""Fingerprint of the desired state we last applied (a short hash, never the state itself)."""


def fingerprint(desired: Object) -> str:
    """A stable short hash of a desired object (key order does not matter)."""
    canonical = json.dumps(desired, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_subset(want: Any, have: Any) -> bool:
    """True when every field of `want` is present in `have` with the same value.

    Mappings are compared key by key (extra keys in `have` are defaults and fine); lists element by element
    with the same length (a different number of containers or routes is a real difference); scalars by
    equality, with numbers compared by value (the server may return 1.0 for 1).
    """
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    return bool(want == have)


def with_fingerprint(desired: Object) -> Object:
    """A copy of `desired` carrying the fingerprint of its own content."""
    stamped: Object = json.loads(json.dumps(desired))
    annotations = stamped.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.pop(HASH_ANNOTATION, None)
    annotations[HASH_ANNOTATION] = fingerprint(desired)
    return stamped


def needs_write(desired: Object, live: Object | None) -> bool:
    """Whether `live` must be written to hold `desired` (always when it does not exist)."""
    if live is None:
        return True
    stamped = with_fingerprint(desired)
    recorded = (live.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if recorded != stamped["metadata"]["annotations"][HASH_ANNOTATION]:
        return True
    return not is_subset(_owned(stamped), live)


def _owned(obj: Object) -> Object:
    """The parts of a desired object that identify what we manage (not apiVersion/kind/name)."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


async def apply_if_changed(
    client: Client, resource: Resource, desired: Object, live: Object | None
) -> Object | None:
    """Server-side apply `desired` when `needs_write`; returns the written object, or None when untouched."""
    if not needs_write(desired, live):
        return None
    body = with_fingerprint(desired)
    body.setdefault("apiVersion", resource.api_version)
    body.setdefault("kind", resource.kind)
    return await client.apply(resource, body, field_manager=FIELD_MANAGER, force=True)
