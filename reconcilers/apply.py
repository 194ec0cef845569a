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

One ownership rule covers every child: a desired object names its controller in its ownerReferences, and an
existing object of that name that this controller does not control (someone else's, or nobody's) is never
written or deleted. `NotControlled` says so in words a user can act on; the caller turns it into a condition.
(KServe v0.11 updates whatever Knative Service, VirtualService or Service holds the name; Knative itself
refuses, with reason `NotOwned`, to take over a Configuration or Route it does not own.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from apis.knative import KNATIVE_SERVING_GROUP
from manager.client import Client, Object, Resource
from manager.errors import Conflict, NotFound

FIELD_MANAGER = "kserve-manager"
NOT_CONTROLLED_SUFFIX = "NotOwned"
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


class NotControlled(Exception):
    """A child's name is taken by an object its would-be controller does not control.

    `reason` is `<Kind>NotOwned` (e.g. `KnativeServiceNotOwned`); `message` names the object and the owner.
    """

    def __init__(self, resource: Resource, live: Object, owner: Mapping[str, Any]) -> None:
        kind = display_kind(resource)
        meta = live.get("metadata") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
        self.reason = kind.replace(" ", "") + NOT_CONTROLLED_SUFFIX
        controller = f'{owner.get("kind")} "{owner.get("name")}"'
        self.message = f'{kind} "{where}" already exists and is not controlled by {controller}'
        super().__init__(self.message)


def display_kind(resource: Resource) -> str:
    """How a user calls the kind: "Knative Service" for Knative's, else the kind itself."""
    return f"Knative {resource.kind}" if resource.group == KNATIVE_SERVING_GROUP else resource.kind


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's controller owner reference, or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def is_controlled_by(obj: Mapping[str, Any], owner_uid: str | None) -> bool:
    """Whether `obj`'s controller is the object with uid `owner_uid`."""
    ref = controller_of(obj)
    return ref is not None and bool(owner_uid) and ref.get("uid") == owner_uid


async def apply_if_changed(
    client: Client, resource: Resource, desired: Object, live: Object | None
) -> Object | None:
    """Server-side apply `desired` when `needs_write`; returns the written object, or None when untouched.

    Raises `NotControlled` when `live` exists and is not controlled by `desired`'s controller.
    """
    owner = controller_of(desired)
    if live is not None and owner is not None and not is_controlled_by(live, owner.get("uid")):
        raise NotControlled(resource, live, owner)
    if not needs_write(desired, live):
        return None
    body = with_fingerprint(desired)
    body.setdefault("apiVersion", resource.api_version)
    body.setdefault("kind", resource.kind)
    return await client.apply(resource, body, field_manager=FIELD_MANAGER, force=True)


async def delete_if_controlled(
    client: Client, resource: Resource, live: Object | None, owner_uid: str
) -> bool:
    """Delete `live` when `owner_uid` controls it and it is not already going; True when a delete was issued.

    The delete carries `live`'s uid as a precondition, so a namesake created meanwhile is never deleted.
    """
    if live is None or not is_controlled_by(live, owner_uid):
        return False
    meta = live.get("metadata") or {}
    if meta.get("deletionTimestamp") is not None:
        return False
    try:
        await client.delete(
            resource,
            str(meta.get("name")),
            meta.get("namespace") or None,
            propagation_policy="Background",
            uid=meta.get("uid"),
        )
    except (NotFound, Conflict):
        return False
    return True
