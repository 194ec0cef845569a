"""One informer per watched collection, shared by every controller and reader in the process.

Controllers read from here instead of the API server: a reconcile costs no GET, and two controllers watching
the same kind share one list/watch stream and one copy of the objects. Reads hand out deep copies so that a
reconciler can mutate what it got without corrupting the cache (controller-runtime's rule "never mutate
cached objects", enforced rather than documented): the store keeps compact JSON and every read decodes a
fresh copy. Readiness (`/readyz`) is gated on every informer having
synced, and informers added after start are started at once. A controller may register a transform per
resource (`set_transform`) that every informer of that resource applies before storing an object, so
that fields no reader uses do not cost memory (see `manager.informer.Transform`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Iterable

from manager.client import Client, Object, Resource
from manager.informer import LABEL_INDEX, OWNER_INDEX, Informer, Transform, WatchSettings

log = logging.getLogger(__name__)

InformerKey = tuple[Resource, str | None, str | None]
"""(resource, namespace or None for all, label selector or None)."""


class Cache:
    """The shared informer cache of the manager."""

    def __init__(self, client: Client, *, settings: WatchSettings | None = None) -> None:
        self.client = client
        self.settings = settings or WatchSettings()
        self._informers: dict[InformerKey, Informer] = {}
        self._transforms: dict[Resource, Transform] = {}
        self._started = False

    def set_transform(self, resource: Resource, transform: Transform) -> None:
        """Shrink every object of `resource` before it is cached; must come before its first informer."""
        if any(key[0] == resource for key in self._informers):
            raise ValueError(f"{resource} is already cached; set its transform before watching it")
        self._transforms[resource] = transform

    def informer(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> Informer:
        """The shared informer for a collection, created (and started, if the cache runs) on first use."""
        key = (resource, namespace, label_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client,
                resource,
                namespace,
                label_selector=label_selector,
                settings=self.settings,
                transform=self._transforms.get(resource),
            )
            self._informers[key] = informer
            if self._started:
                informer.start()
        return informer

    @property
    def informers(self) -> builtins.list[Informer]:
        """Every informer created so far."""
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer (and every informer created later)."""
        self._started = True
        for informer in self._informers.values():
            informer.start()

    async def stop(self) -> None:
        """Stop every informer."""
        self._started = False
        await asyncio.gather(*(i.stop() for i in self._informers.values()))

    @property
    def has_synced(self) -> bool:
        """True when every informer has listed at least once."""
        return all(i.has_synced for i in self._informers.values())

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """Wait for every informer to sync; False on timeout."""
        results = await asyncio.gather(*(i.wait_for_sync(timeout) for i in self._informers.values()))
        return all(results)

    def get(self, resource: Resource, name: str, namespace: str = "") -> Object | None:
        """A copy of the cached object, or None when it does not exist (as far as the cache knows)."""
        return self._lookup(resource, namespace).store.get(namespace, name)

    def list(
        self, resource: Resource, namespace: str | None = None, *, labels: dict[str, str] | None = None
    ) -> list[Object]:
        """Copies of the cached objects in a namespace (or all), optionally matching labels exactly."""
        informer = self._lookup(resource, namespace or "")
        if labels:
            key, value = next(iter(labels.items()))
            candidates: Iterable[Object] = informer.store.by_index(LABEL_INDEX, f"{key}={value}")
        elif namespace is not None:
            candidates = informer.store.in_namespace(namespace)
        else:
            candidates = informer.store
        return [
            obj
            for obj in candidates
            if (namespace is None or obj.get("metadata", {}).get("namespace", "") == namespace)
            and _matches(obj, labels)
        ]

    def by_owner(
        self, resource: Resource, owner_uid: str, namespace: str | None = None
    ) -> builtins.list[Object]:
        """Copies of the cached objects owned by `owner_uid`."""
        informer = self._lookup(resource, namespace or "")
        return informer.store.by_index(OWNER_INDEX, owner_uid)

    def keys(self, resource: Resource) -> Iterable[tuple[str, str]]:
        """Every cached (namespace, name) of a resource, across all its informers."""
        for (res, _, _), informer in self._informers.items():
            if res == resource:
                yield from informer.store.all_keys()

    def _lookup(self, resource: Resource, namespace: str) -> Informer:
        # Prefer the informer for exactly this namespace: a handler registered on it was woken by its event,
        # and a second (all-namespaces) informer of the same kind may not have seen that event yet.
        for key in ((resource, namespace or None, None), (resource, None, None)):
            informer = self._informers.get(key)
            if informer is not None:
                return informer
        raise LookupError(f"no informer for {resource} in namespace {namespace or '*'}; watch it first")


def _matches(obj: Object, labels: dict[str, str] | None) -> bool:
    if not labels:
        return True
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())
