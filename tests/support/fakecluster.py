"""One in-memory cluster for every reconciler test: an API server, the manager's cache over it, an event sink.

Reconcilers talk to `manager.client.Client` and read `manager.cache.Cache`. `FakeCluster` is both ends: it
serves the client calls reconcilers make (get, list, create, replace, replace_status, merge patch, server-side
apply, delete) with the API server's rules that matter to them (resourceVersion preconditions and 409s, uid
preconditions, the status subresource ignoring everything but status, finalizers holding a deleted object,
generation bumps, admission defaults), records every write as an `Action`, and keeps a real `Cache` whose
stores are filled from it on `sync()` (the cache lags the server until then, as informers do). Events go to
`recorder`, which keeps them as strings `"<type> <reason> <message>"` (the form knative's table tests use).

`TableRow` and `run_row` turn a test into data: objects in; the writes, status, events, result or error
expected out.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from manager.cache import Cache
from manager.client import Client, Object, PatchType, Resource
from manager.errors import AlreadyExists, ApiError, Conflict, NotFound
from manager.informer import Informer
from manager.reconcile import Reconciler, Request, Result

NOW = "2024-01-01T00:00:00Z"

WITHOUT_STATUS = frozenset({"configmaps", "secrets", "endpoints", "events", "serviceaccounts"})
"""Plurals of kinds without a status subresource (their status, if any, is written like any field)."""

Defaulter = Callable[[Resource, Object], None]
"""Admission defaults: edits an object about to be stored (every create, update and apply)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One write the cluster received (failed ones included): what, where, and the body sent."""

    verb: str
    """create, update, update-status, patch, apply or delete."""
    resource: Resource
    namespace: str
    name: str
    body: Any = None

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.verb} {self.resource} {where}"


class FakeRecorder:
    """An event recorder that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        """(involved object's name, "<type> <reason> <message>")."""

    def event(self, obj: Mapping[str, Any], type: str, reason: str, message: str) -> None:
        self.events.append((str((obj.get("metadata") or {}).get("name") or ""), f"{type} {reason} {message}"))

    def messages(self) -> list[str]:
        """Every event as "<type> <reason> <message>", in order."""
        return [text for _, text in self.events]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _matches_selector(obj: Object, selector: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        key, eq, value = term.partition("=")
        if (eq and labels.get(key) != value) or (not eq and key not in labels):
            return False
    return True


class FakeCluster:
    """The API server, the cache and the event sink of a reconciler under test (module docstring)."""

    def __init__(self, *, defaulter: Defaulter | None = None) -> None:
        self._objects: dict[tuple[Resource, str, str], Object] = {}
        self._versions = itertools.count(100)
        self._uids = itertools.count(1)
        self._failures: dict[tuple[str, Resource], list[ApiError]] = {}
        self._defaulter = defaulter
        self.actions: list[Action] = []
        self.reads: list[Action] = []
        self.recorder = FakeRecorder()
        self.cache = Cache(cast(Client, self))
        self.client = cast(Client, self)

    # -- set-up and inspection ------------------------------------------------------------------------

    def watch(
        self, resource: Resource, namespace: str | None = None, *, labels: str | None = None
    ) -> Informer:
        """An informer of the cache over this cluster (reconcilers find only watched kinds in the cache)."""
        return self.cache.informer(resource, namespace, label_selector=labels)

    def add(self, resource: Resource, obj: Object) -> Object:
        """Store `obj` as it is (status included), with server metadata filled in; the cache sees it too."""
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("namespace", "")
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", NOW)
        meta["resourceVersion"] = str(next(self._versions))
        stored.setdefault("apiVersion", resource.api_version)
        stored.setdefault("kind", resource.kind)
        self._objects[(resource, meta["namespace"], meta["name"])] = stored
        self._sync_one(resource)
        return copy.deepcopy(stored)

    def object(self, resource: Resource, name: str, namespace: str = "") -> Object | None:
        """What the server holds (a copy), or None."""
        obj = self._objects.get((resource, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def objects(self, resource: Resource) -> list[Object]:
        """Everything the server holds of one kind (copies)."""
        return [
            copy.deepcopy(o)
            for (res, _, _), o in sorted(self._objects.items(), key=_order)
            if res == resource
        ]

    def remove(self, resource: Resource, name: str, namespace: str = "") -> None:
        """Make an object vanish from the server (not from the cache until `sync`)."""
        self._objects.pop((resource, namespace, name), None)

    def fail(self, verb: str, resource: Resource, error: ApiError, *, times: int = 1) -> None:
        """The next `times` calls of `verb` (as in `Action.verb`, or get/list) on `resource` raise `error`."""
        self._failures.setdefault((verb, resource), []).extend([error] * times)

    def sync(self) -> None:
        """Make every informer's store mirror the server, as after the informers caught up."""
        for informer in self.cache.informers:
            self._fill(informer)

    def writes(self) -> list[str]:
        """The writes so far as strings (`Action.__str__`), then forget them."""
        done = [str(a) for a in self.actions]
        self.actions.clear()
        return done

    def status_updates(self) -> list[Object]:
        """The bodies of every status write so far."""
        return [a.body for a in self.actions if a.verb == "update-status"]

    def _sync_one(self, resource: Resource) -> None:
        for informer in self.cache.informers:
            if informer.resource == resource:
                self._fill(informer)

    def _fill(self, informer: Informer) -> None:
        store = informer.store
        for key in store.all_keys():
            store.remove(key)
        for (res, ns, _), obj in self._objects.items():
            if res != informer.resource or (informer.namespace and ns != informer.namespace):
                continue
            if _matches_selector(obj, informer.label_selector):
                store.put(copy.deepcopy(obj))

    # -- the API ------------------------------------------------------------------------------------

    def _check_failure(self, verb: str, resource: Resource) -> None:
        queue = self._failures.get((verb, resource))
        if queue:
            raise queue.pop(0)

    def _write(self, verb: str, resource: Resource, namespace: str, name: str, body: Any) -> None:
        self.actions.append(Action(verb, resource, namespace, name, copy.deepcopy(body)))
        self._check_failure(verb, resource)

    def _live(self, resource: Resource, namespace: str, name: str) -> Object:
        obj = self._objects.get((resource, namespace, name))
        if obj is None:
            raise NotFound(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    @staticmethod
    def _precondition(live: Object, version: Any) -> None:
        if version is not None and version != live["metadata"]["resourceVersion"]:
            raise Conflict(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            )

    def _store(self, resource: Resource, obj: Object, live: Object | None) -> Object:
        """Persist `obj` as the new state of `live` (or as new), with the server's bookkeeping."""
        meta = obj.setdefault("metadata", {})
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        if live is None:
            meta["uid"] = f"uid-{meta['name']}-{next(self._uids)}"
            meta["creationTimestamp"] = NOW
            meta["generation"] = 1
            if resource.plural not in WITHOUT_STATUS:
                obj.pop("status", None)
        else:
            old = live["metadata"]
            for field_name in ("uid", "creationTimestamp", "deletionTimestamp"):
                if field_name in old:
                    meta[field_name] = old[field_name]
                else:
                    meta.pop(field_name, None)
            meta["generation"] = int(old.get("generation", 1)) + (obj.get("spec") != live.get("spec"))
            if resource.plural not in WITHOUT_STATUS:
                if "status" in live:
                    obj["status"] = copy.deepcopy(live["status"])
                else:
                    obj.pop("status", None)
        if self._defaulter is not None:
            self._defaulter(resource, obj)
        meta["resourceVersion"] = str(next(self._versions))
        key = (resource, str(meta.get("namespace") or ""), str(meta["name"]))
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        return copy.deepcopy(obj)

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        self.reads.append(Action("get", resource, namespace or "", name))
        self._check_failure("get", resource)
        return copy.deepcopy(self._live(resource, namespace or "", name))

    def _list(self, resource: Resource, namespace: str | None, label_selector: str | None) -> list[Object]:
        self.reads.append(Action("list", resource, namespace or "", label_selector or ""))
        self._check_failure("list", resource)
        return [
            copy.deepcopy(o)
            for (res, ns, _), o in sorted(self._objects.items(), key=_order)
            if res == resource and (not namespace or ns == namespace) and _matches_selector(o, label_selector)
        ]

    async def list_page(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None, **_: Any
    ) -> Object:
        items = self._list(resource, namespace, label_selector)
        return {"items": items, "metadata": {"resourceVersion": str(next(self._versions))}}

    async def list_all(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None, **_: Any
    ) -> tuple[list[Object], str]:
        return self._list(resource, namespace, label_selector), str(next(self._versions))

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        body = copy.deepcopy(obj)
        ns = namespace or str(body.get("metadata", {}).get("namespace") or "")
        name = str(body["metadata"]["name"])
        self._write("create", resource, ns, name, body)
        if (resource, ns, name) in self._objects:
            raise AlreadyExists(409, "AlreadyExists", f'{resource} "{name}" already exists')
        body["metadata"]["namespace"] = ns
        return self._store(resource, body, None)

    async def replace(self, resource: Resource, obj: Object, *, subresource: str | None = None) -> Object:
        if subresource == "status":
            return await self.replace_status(resource, obj)
        body = copy.deepcopy(obj)
        meta = body["metadata"]
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        self._write("update", resource, ns, name, body)
        live = self._live(resource, ns, name)
        self._precondition(live, meta.get("resourceVersion"))
        return self._store(resource, body, live)

    async def replace_status(self, resource: Resource, obj: Object) -> Object:
        meta = obj["metadata"]
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        self._write("update-status", resource, ns, name, obj.get("status"))
        live = self._live(resource, ns, name)
        self._precondition(live, meta.get("resourceVersion"))
        updated = copy.deepcopy(live)
        updated["status"] = copy.deepcopy(obj.get("status"))
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        self._objects[(resource, ns, name)] = updated
        return copy.deepcopy(updated)

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
        **_: Any,
    ) -> Object:
        if patch_type == PatchType.APPLY:
            return await self.apply(resource, patch, field_manager="")
        ns = namespace or ""
        self._write("patch", resource, ns, name, patch)
        live = self._live(resource, ns, name)
        self._precondition(live, (patch.get("metadata") or {}).get("resourceVersion"))
        merged = merge_patch(live, patch)
        if resource.plural not in WITHOUT_STATUS:
            merged.pop("status", None)
        return self._store(resource, merged, live)

    async def apply(
        self, resource: Resource, obj: Object, *, field_manager: str, force: bool = True
    ) -> Object:
        """Server-side apply, reduced to its effect for a single manager: the object becomes what was
        applied (fields no longer applied disappear), keeping the server's metadata and the status."""
        body = copy.deepcopy(obj)
        ns, name = str(body["metadata"].get("namespace") or ""), str(body["metadata"]["name"])
        self._write("apply", resource, ns, name, body)
        live = self._objects.get((resource, ns, name))
        if live is not None:
            for key in ("finalizers", "ownerReferences"):
                if key in live["metadata"] and key not in body["metadata"]:
                    body["metadata"][key] = copy.deepcopy(live["metadata"][key])
        return self._store(resource, body, live)

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        uid: str | None = None,
    ) -> None:
        ns = namespace or ""
        self._write("delete", resource, ns, name, {"propagationPolicy": propagation_policy, "uid": uid})
        live = self._live(resource, ns, name)
        if uid and live["metadata"].get("uid") != uid:
            raise Conflict(409, "Conflict", f"Precondition failed: UID in precondition: {uid}")
        if live["metadata"].get("finalizers"):
            live["metadata"].setdefault("deletionTimestamp", NOW)
            live["metadata"]["resourceVersion"] = str(next(self._versions))
        else:
            del self._objects[(resource, ns, name)]


def _order(item: tuple[tuple[Resource, str, str], Object]) -> tuple[str, str, str]:
    (resource, ns, name), _ = item
    return str(resource), ns, name


# --- Table tests ----------------------------------------------------------------------------------


@dataclass
class TableRow:
    """One reconcile of one key: what exists before, and everything observable after.

    `want_writes` lists every write attempted, in order, as `Action.__str__` gives it (e.g.
    `"apply services.serving.knative.dev ns/sk-predictor"`). `want_status` is matched against the status of
    the key's object on the server afterwards: each entry a top-level status field, except `conditions`,
    given as `{type: (status, reason)}` or `{type: (status, reason, message)}` for the listed types only.
    `want_events` are exact `"<type> <reason> <message>"` strings.
    """

    name: str
    key: str
    objects: Sequence[tuple[Resource, Object]] = ()
    failures: Sequence[tuple[str, Resource, ApiError]] = ()
    want_writes: Sequence[str] = ()
    want_status: Mapping[str, Any] | None = None
    want_events: Sequence[str] = ()
    want_result: Result = field(default_factory=Result)
    want_error: type[BaseException] | None = None
    setup: Callable[[FakeCluster], None] | None = None
    """Runs after the objects are in and the cache synced (e.g. to make the cache lag)."""
    check: Callable[[FakeCluster], None] | None = None
    """Further assertions on the cluster afterwards (e.g. the content of a child)."""

    def __str__(self) -> str:
        return self.name


def request_of(key: str) -> Request:
    namespace, _, name = key.rpartition("/")
    return Request(namespace, name)


async def run_row(
    row: TableRow,
    cluster: FakeCluster,
    reconciler: Reconciler,
    *,
    resource: Resource,
) -> None:
    """Seed `cluster` with the row's objects, reconcile its key once, and check every expectation.

    `resource` is the kind of the key (its object's status is what `want_status` describes).
    """
    for res, obj in row.objects:
        cluster.add(res, obj)
    for verb, res, error in row.failures:
        cluster.fail(verb, res, error)
    cluster.sync()
    if row.setup is not None:
        row.setup(cluster)
    request = request_of(row.key)
    if row.want_error is not None:
        try:
            await reconciler.reconcile(request)
        except row.want_error:
            pass
        else:
            raise AssertionError(f"{row.name}: expected {row.want_error.__name__}")
    else:
        result = await reconciler.reconcile(request)
        assert result == row.want_result, f"{row.name}: {result}"
    writes = [str(a) for a in cluster.actions]
    assert writes == list(row.want_writes), f"{row.name}: writes {writes}"
    events = cluster.recorder.messages()
    assert events == list(row.want_events), f"{row.name}: events {events}"
    if row.want_status is not None:
        stored = cluster.object(resource, request.name, request.namespace)
        assert stored is not None, f"{row.name}: {row.key} is gone"
        assert_status(stored.get("status") or {}, row.want_status, row.name)
    if row.check is not None:
        row.check(cluster)


def conditions_of(status: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """`{type: (status, reason, message)}` of a status."""
    return {
        str(c["type"]): (str(c.get("status")), str(c.get("reason", "")), str(c.get("message", "")))
        for c in status.get("conditions") or []
    }


def assert_status(status: Mapping[str, Any], want: Mapping[str, Any], what: str = "") -> None:
    """Check `status` against a `TableRow.want_status` description."""
    for key, value in want.items():
        if key != "conditions":
            assert status.get(key) == value, f"{what}: status.{key}: {json.dumps(status.get(key))}"
            continue
        have = conditions_of(status)
        for type_, expected in value.items():
            assert type_ in have, f"{what}: no condition {type_} in {sorted(have)}"
            assert have[type_][: len(expected)] == tuple(expected), f"{what}: {type_}: {have[type_]}"
