"""A list-then-watch informer that keeps a local copy of one resource type and never goes blind.

Why it is written this way (each point is a failure seen in operators built on kubernetes-asyncio or kopf,
or in this one), following client-go's reflector wherever it has an answer:

* List, then watch from the list's resourceVersion with bookmarks, so no change between the two is missed
  and a watch keeps an up-to-date resourceVersion to resume from.
* Where to list from, as the reflector does: the first list asks for resourceVersion "0" (the API server's
  watch cache, no etcd read); a re-list asks for at least the last version seen, in one unpaged request,
  which the watch cache also serves; only when that version is unavailable (410, or "too large") does it
  list from etcd ("" : the current state), page by page, falling back to one unpaged request if a continue
  token expires before the last page (see `Client.list_collection`). A consistent paged list whose tokens
  expire under continuous compaction would otherwise start over forever.
* A listed object is stored as soon as it is decoded (`manager.listdecode`): the watch cache answers a first
  list in one response however large, and decoding it whole first made the start-up peak, not the cache,
  the process' RSS (docs/benchmarks.md).
* A 410 Gone (as an HTTP status or as an ERROR event) means our resourceVersion fell out of the server's
  window: list again and diff the new list against the store, emitting the adds, updates and deletes that
  happened while we were away. kubernetes-asyncio retries a 410 once and then gives up; we always re-list.
* Every list after the first, and every retry after an error, waits for client-go's backoff (0.8 s
  doubling to 30 s, with up to 100% jitter, back to 0.8 s after two minutes without a failure), so a
  re-list that keeps failing costs at most one list per 30 s.
* The server ends each watch after `watch_timeout` (randomised in [1x, 2x) so that many informers do not
  reconnect in lock-step), and the informer reopens it from the last resourceVersion without a word. A
  quiet watch is not a failure: Kubernetes sends bookmarks only for resources its watch cache has seen
  change since it started, so the client bounds a silent stream by the server's own deadline (plus a
  margin), and by `inactivity_timeout` only once the stream has delivered a bookmark (`Client.watch`).
  Reopening a silent stream costs one cheap watch request, not a re-list.
* Connection errors back off and resume from the last resourceVersion.
* Handlers run inline and must be cheap (they only enqueue keys); a handler that raises is logged and does
  not stop the informer.

The store holds the objects as the server sent them, minus `metadata.managedFields` and minus whatever an
optional `transform` drops (controller-runtime's cache `TransformFunc`: a controller that caches every pod
of a kind but reads only their labels and status need not hold their specs), kept as compact JSON (see
`Store`): every read decodes a fresh copy, which readers may modify. Handlers get the decoded event object
itself and must not modify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from manager.client import Client, ListResult, Object, Resource, WatchEvent, name_of, namespace_of
from manager.errors import ApiError, Gone

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of an object; namespace is '' for cluster-scoped objects."""

IndexFunc = Callable[[Object], Iterable[str]]
"""Maps an object to the index values it is found under."""

Transform = Callable[[Object], Object]
"""Shrinks an object before it is stored (may modify it in place); must keep metadata name, namespace,
uid and resourceVersion, and everything the readers and index functions of the cache use."""

OWNER_INDEX = "owner-uid"
"""Index of objects by the uid of each of their owners."""

LABEL_INDEX = "label"
"""Index of objects by each of their labels, as `key=value`."""


def key_of(obj: Mapping[str, Any]) -> Key:
    """The store key of an object."""
    return namespace_of(obj), name_of(obj)


def owner_uids(obj: Object) -> Iterable[str]:
    """Index function: the uids of the object's owners."""
    return [str(ref["uid"]) for ref in obj.get("metadata", {}).get("ownerReferences") or [] if ref.get("uid")]


def label_pairs(obj: Object) -> Iterable[str]:
    """Index function: the object's labels as `key=value` strings."""
    return [f"{k}={v}" for k, v in (obj.get("metadata", {}).get("labels") or {}).items()]


class EventHandler(Protocol):
    """Receives the changes an informer observes; must be cheap and must not mutate the objects."""

    def on_add(self, obj: Object) -> None:
        """An object appeared (or was listed for the first time)."""

    def on_update(self, old: Object, new: Object) -> None:
        """An object changed (or, on a resync, `old is new`)."""

    def on_delete(self, obj: Object) -> None:
        """An object is gone; `obj` is its last known state."""


class _Entry:
    """One stored object: its identity, its compact JSON encoding, and the index values it is filed under."""

    __slots__ = ("data", "indexed", "uid", "version")

    def __init__(self, uid: str, version: str, data: bytes, indexed: tuple[tuple[str, str], ...]) -> None:
        self.uid = uid
        self.version = version
        self.data = data
        self.indexed = indexed


class Store:
    """Objects by key, with secondary indexes kept in step on every change.

    Each object is kept as its compact JSON encoding, not as the decoded dicts: a decoded object costs five
    to six times its JSON size in Python objects (measured per kind in docs/benchmarks.md), which is what
    limited the manager to a few thousand InferenceServices per GiB. Every read decodes a fresh object, which
    replaces the deep copy reads made before (and costs less than it). The uid, resourceVersion and index
    values are kept beside the bytes, so that an unchanged object on a re-list and the removal of a key need
    no decoding.
    """

    def __init__(self, index_funcs: Mapping[str, IndexFunc]) -> None:
        self._items: dict[Key, _Entry] = {}
        self._index_funcs = dict(index_funcs)
        self._indexes: dict[str, dict[str, set[Key]]] = {name: {} for name in self._index_funcs}

    def get(self, namespace: str, name: str) -> Object | None:
        """A freshly decoded copy of the stored object, or None."""
        entry = self._items.get((namespace, name))
        return _decode(entry.data) if entry is not None else None

    def identity(self, namespace: str, name: str) -> tuple[str, str] | None:
        """(uid, resourceVersion) of the stored object, without decoding it; None when absent."""
        entry = self._items.get((namespace, name))
        return (entry.uid, entry.version) if entry is not None else None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Object]:
        return iter([_decode(entry.data) for entry in list(self._items.values())])

    def in_namespace(self, namespace: str) -> list[Object]:
        """Decoded copies of the objects of one namespace (the others are not decoded)."""
        return [_decode(entry.data) for key, entry in list(self._items.items()) if key[0] == namespace]

    def all_keys(self) -> list[Key]:
        """All keys."""
        return list(self._items)

    def by_index(self, name: str, value: str) -> list[Object]:
        """Decoded copies of the objects an index maps `value` to."""
        keys = self._indexes[name].get(value, ())
        return [_decode(self._items[k].data) for k in sorted(keys)]

    def put(self, obj: Object) -> None:
        """Store `obj` (replacing what was stored under its key)."""
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        indexed = tuple((name, value) for name, func in self._index_funcs.items() for value in func(obj))
        meta = obj.get("metadata", {})
        self._items[key] = _Entry(
            str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""), _encode(obj), indexed
        )
        for name, value in indexed:
            self._indexes[name].setdefault(value, set()).add(key)

    def remove(self, key: Key) -> Object | None:
        """Drop a key; returns (a decoded copy of) what was stored."""
        old = self._items.pop(key, None)
        if old is None:
            return None
        self._unindex(key, old)
        return _decode(old.data)

    def _unindex(self, key: Key, entry: _Entry) -> None:
        for name, value in entry.indexed:
            index = self._indexes[name]
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]


def _encode(obj: Object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(data: bytes) -> Object:
    obj: Object = json.loads(data)
    return obj


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timeouts of the list/watch loop; every one has a non-null default."""

    watch_timeout: float = 300.0
    """Server-side watch timeout; each watch uses a random value in [watch_timeout, 2*watch_timeout)."""
    inactivity_timeout: float = 120.0
    """Client-side: reopen a watch that has sent bookmarks but then nothing for this long (must exceed the
    server's bookmark interval, a minute)."""
    backoff_initial: float = 0.8
    backoff_max: float = 30.0
    backoff_reset: float = 120.0
    """The backoff starts again from `backoff_initial` after this long without a failure."""
    page_size: int = 500
    """Objects per request when the list comes from etcd (watch-cache lists are never paged)."""
    resync_period: float | None = None
    """When set, every stored object is re-delivered to handlers as an update this often."""


class Informer:
    """Keeps a `Store` of one resource type in step with the API server and notifies handlers."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        settings: WatchSettings | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.transform = transform
        self.settings = settings or WatchSettings()
        self.store = Store({OWNER_INDEX: owner_uids, LABEL_INDEX: label_pairs})
        self._handlers: list[EventHandler] = []
        self._synced = asyncio.Event()
        self._resource_version = ""
        self._version_unavailable = False
        self._server_pages = False
        self._backoff = Backoff(self.settings)
        self._task: asyncio.Task[None] | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self.relists = 0
        """How many times the informer listed (1 after the first sync); observable for tests and logs."""
        self.watches = 0
        """How many watch requests it opened."""

    def __repr__(self) -> str:
        return f"Informer({self.resource}, namespace={self.namespace or '*'})"

    @property
    def has_synced(self) -> bool:
        """True once the first list has been stored (and stays true)."""
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        """The resourceVersion the next watch resumes from."""
        return self._resource_version

    def add_handler(self, handler: EventHandler) -> None:
        """Deliver future changes to `handler`; replays the current store as adds when already synced."""
        self._handlers.append(handler)
        if self.has_synced:
            for obj in self.store:
                _call(handler.on_add, obj)

    def start(self) -> None:
        """Start the list/watch loop as an owned task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer:{self.resource}")
            if self.settings.resync_period:
                self._resync_task = asyncio.create_task(self._resync_loop(self.settings.resync_period))

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        tasks = [t for t in (self._task, self._resync_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = self._resync_task = None

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait until the first list is stored; False on timeout."""
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                await self._watch_once()
                continue
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("%r: resourceVersion %s expired, listing again", self, self._resource_version)
                need_list = True
                delay = self._backoff.next()
            except Exception as exc:
                delay = self._backoff.next()
                if isinstance(exc, ApiError):
                    log.warning("%r: %s; retrying in %.1fs", self, exc, delay)
                else:
                    log.exception("%r: unexpected error; retrying in %.1fs", self, delay)
            await _sleep(delay)

    def _relist_version(self) -> str:
        # client-go's relistResourceVersion: the watch cache when it can serve us, etcd when it cannot.
        if self._version_unavailable:
            return ""
        return self._resource_version or "0"

    async def _list(self, version: str, seen: set[Key]) -> ListResult:
        # The watch cache serves a list at a version other than "0" only without a limit; a server that
        # paged the first list has no watch cache for this resource, and keeps getting pages.
        paged = self._server_pages or version in ("", "0")
        seen.clear()

        def upsert(obj: Object) -> None:
            # Stored as it is decoded: a large list is never held decoded whole (`manager.listdecode`).
            seen.add(key_of(obj))
            self._apply_upsert(obj)

        return await self.client.list_collection(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            page_size=self.settings.page_size if paged else 0,
            resource_version=version,
            on_item=upsert,
            on_restart=seen.clear,
        )

    async def _list_and_replace(self) -> None:
        version = self._relist_version()
        seen: set[Key] = set()
        try:
            result = await self._list(version, seen)
        except ApiError as exc:
            if not (isinstance(exc, Gone) or is_version_too_large(exc)):
                raise
            log.info(
                "%r: resourceVersion %s is not available (%s), listing the current state", self, version, exc
            )
            self._version_unavailable = True
            version = self._relist_version()
            result = await self._list(version, seen)
        self._version_unavailable = False
        if version == "0" and result.paginated:
            self._server_pages = True
        self.relists += 1
        for key in self.store.all_keys():
            if key not in seen:
                gone = self.store.remove(key)
                if gone is not None:
                    self._emit_delete(gone)
        self._resource_version = result.resource_version
        if not self._synced.is_set():
            log.info("%r: synced %d objects", self, len(self.store))
            self._synced.set()

    async def _watch_once(self) -> None:
        settings = self.settings
        timeout = int(settings.watch_timeout * random.uniform(1.0, 2.0))
        self.watches += 1
        async with self.client.watch(
            self.resource,
            self.namespace,
            resource_version=self._resource_version,
            timeout_seconds=timeout,
            heartbeat_timeout=settings.inactivity_timeout,
            label_selector=self.label_selector,
        ) as events:
            async for event in events:
                self._handle(event)
        log.debug("%r: the server ended the watch at resourceVersion %s", self, self._resource_version)

    def _handle(self, event: WatchEvent) -> None:
        obj = event.object
        if event.type == "ERROR":
            code = int(obj.get("code") or 0)
            message = str(obj.get("message") or "")
            if code == 410:
                raise Gone(410, str(obj.get("reason") or "Expired"), message, obj)
            raise ApiError(code, str(obj.get("reason") or "WatchError"), message or "watch error", obj)
        version = str(obj.get("metadata", {}).get("resourceVersion") or "")
        if event.type == "BOOKMARK":
            if version:
                self._resource_version = version
            return
        if event.type in ("ADDED", "MODIFIED"):
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
            self._apply_upsert(obj)
        elif event.type == "DELETED":
            gone = self.store.remove(key_of(obj))
            self._emit_delete(gone if gone is not None else obj)
        else:
            log.warning("%r: ignoring watch event of unknown type %r", self, event.type)
            return
        if version:
            self._resource_version = version

    def _apply_upsert(self, obj: Object) -> None:
        # managedFields are a third to a half of a typical object and no reader of the cache needs them
        # (controller-runtime's TransformStripManagedFields); a PUT without them keeps the server's.
        obj.get("metadata", {}).pop("managedFields", None)
        if self.transform is not None:
            obj = self.transform(obj)
        key = key_of(obj)
        identity = self.store.identity(*key)
        if identity is not None and identity[0] != _uid(obj):
            # Deleted and re-created under the same name while we were not watching.
            gone = self.store.remove(key)
            if gone is not None:
                self._emit_delete(gone)
            identity = None
        if identity is not None and identity[1] == _version(obj):
            return
        old = self.store.get(*key) if identity is not None and self._handlers else None
        self.store.put(obj)
        for handler in self._handlers:
            if old is None:
                _call(handler.on_add, obj)
            else:
                _call(handler.on_update, old, obj)

    async def _resync_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if self.has_synced:
                self.resync()

    def resync(self) -> None:
        """Re-deliver every stored object to the handlers as an update (controller-runtime's SyncPeriod)."""
        for obj in self.store:
            for handler in self._handlers:
                _call(handler.on_update, obj, obj)

    def _emit_delete(self, obj: Object) -> None:
        for handler in self._handlers:
            _call(handler.on_delete, obj)


class Backoff:
    """client-go's reflector backoff: `initial` doubling to `max`, each wait in [d, 2d), reset after quiet."""

    def __init__(self, settings: WatchSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._duration = settings.backoff_initial
        self._last: float | None = None

    def next(self) -> float:
        """The next wait, in seconds."""
        now = self._clock()
        if self._last is None or now - self._last > self.settings.backoff_reset:
            self._duration = self.settings.backoff_initial
        self._last = now
        duration = self._duration
        self._duration = min(duration * 2, self.settings.backoff_max)
        return duration * (1 + random.random())


def is_version_too_large(exc: ApiError) -> bool:
    """The server has not caught up with the resourceVersion asked for (504 with that cause)."""
    details = exc.body.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return any(
        isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes or []
    ) or (exc.status == 504 and "Too large resource version" in exc.message)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _call(method: Callable[..., None], *objs: Object) -> None:
    try:
        method(*objs)
    except Exception:
        log.exception("event handler %r failed", method)


def _uid(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("uid") or "")


def _version(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion") or "")
