"""A small typed facade over kubernetes-asyncio for any resource, built-in or custom.

The generated kubernetes-asyncio APIs are untyped, pick the patch content type from the body's Python type
(a dict patch to a custom resource silently becomes a JSON Patch and is rejected), and deserialise into model
classes we do not want. Controllers work on plain JSON objects addressed by a `Resource` (group, version,
plural), so this module talks to the API server through the one shared `ApiClient` (its aiohttp session,
TLS and token refresh) with raw JSON in and out, explicit content types, a timeout on every call, and one
`ApiError` taxonomy. A request hook lets the manager count requests (`rest_client_requests_total`) without
this module knowing about metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.config_exception import ConfigException

from manager.errors import ApiError, ConfigurationError, Gone, ServerUnavailable
from manager.listdecode import decode_list

log = logging.getLogger(__name__)

Object = dict[str, Any]
"""A Kubernetes object as the API server serialises it (JSON)."""

WATCH_CLIENT_MARGIN = 30.0
"""Seconds the client-side bound of a watch exceeds its server-side `timeoutSeconds`."""

RequestHook = Callable[[str, int, float], None]
"""Called after every request with (HTTP method, status code or 0 when there was no answer, seconds)."""


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource type: where it lives and what it is called."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """The apiVersion field of its objects (`v1`, `apps/v1`, ...)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection, of one object, or of one of its subresources."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
EVENTS = Resource("", "v1", "events", "Event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")


class PatchType(StrEnum):
    """The content type of a PATCH body; always explicit, never guessed from the body."""

    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


@dataclass(frozen=True, slots=True)
class ListResult:
    """A whole collection as read by `Client.list_collection`."""

    items: list[Object]
    resource_version: str
    paginated: bool
    """True when the server answered in more than one page (it honoured the limit)."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: Object


def namespace_of(obj: Mapping[str, Any]) -> str:
    """The object's namespace ('' for cluster-scoped objects)."""
    return str(obj.get("metadata", {}).get("namespace") or "")


def name_of(obj: Mapping[str, Any]) -> str:
    """The object's name."""
    return str(obj.get("metadata", {}).get("name") or "")


class Client:
    """JSON-in, JSON-out access to the API server over one shared `ApiClient`."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        request_timeout: float = 30.0,
        on_request: RequestHook | None = None,
    ) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        self._on_request = on_request

    @property
    def host(self) -> str:
        """The API server's base URL."""
        return str(self.api_client.configuration.host)

    def set_request_hook(self, hook: RequestHook | None) -> None:
        """Install (or remove) the per-request observer."""
        self._on_request = hook

    async def close(self) -> None:
        """Close the underlying HTTP session."""
        await self.api_client.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool | None] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> aiohttp.ClientResponse:
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        started = time.monotonic()
        try:
            response = await self.api_client.call_api(
                path,
                method,
                query_params=params,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout if timeout is not None else self.request_timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._observe(method, 0, started)
            raise ServerUnavailable(0, "Unreachable", f"{method} {path}: {_describe(exc)}") from exc
        self._observe(method, response.status, started)
        return cast(aiohttp.ClientResponse, response)

    def _observe(self, method: str, status: int, started: float) -> None:
        if self._on_request is not None:
            self._on_request(method, status, time.monotonic() - started)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool | None] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Send one request and return the decoded JSON answer; raise `ApiError` on non-2xx."""
        text = await self._request_text(method, path, query=query, body=body, content_type=content_type)
        return json.loads(text) if text else None

    async def _request_text(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool | None] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> str:
        response = await self._send(method, path, query=query, body=body, content_type=content_type)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServerUnavailable(0, "Unreachable", f"{method} {path}: {_describe(exc)}") from exc
        finally:
            response.release()
        text = raw.decode("utf-8", errors="replace")
        del raw
        if not 200 <= response.status < 300:
            raise ApiError.from_response(response.status, text)
        return text

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        """Read one object."""
        return cast(Object, await self.request("GET", resource.path(namespace, name)))

    async def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        on_item: Callable[[Object], None] | None = None,
    ) -> Object:
        """Read one page of a collection (the List object, with `metadata.continue` when there is more).

        With `on_item`, each item is handed over as it is decoded (`manager.listdecode`) and the returned
        List has no `items`."""
        query = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "continue": continue_token,
            "resourceVersion": resource_version,
        }
        if on_item is None:
            return cast(Object, await self.request("GET", resource.path(namespace), query=query))
        text = await self._request_text("GET", resource.path(namespace), query=query)
        return decode_list(text, on_item) if text else {}

    async def list_collection(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
        resource_version: str | None = None,
        on_item: Callable[[Object], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> ListResult:
        """Read a whole collection, `page_size` objects per request (0: in one request).

        With `on_item`, each object is handed over as soon as it is decoded, one at a time (see
        `manager.listdecode`), and `ListResult.items` stays empty: a large collection is never held
        decoded whole. As client-go's pager does: when a continue token expires (410) before the last page,
        because etcd was compacted past the list's revision, the collection is read again in one unpaged
        request at `resource_version`, rather than failing or starting over with pages that would expire
        again; the objects delivered so far are then superseded (`on_restart` says so).
        """
        items: list[Object] = []
        deliver = items.append if on_item is None else on_item

        def take(item: Object) -> None:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
            deliver(item)

        token: str | None = None
        paginated = False
        while True:
            try:
                page = await self.list_page(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    limit=page_size or None,
                    continue_token=token,
                    resource_version=None if token else resource_version or None,
                    on_item=take,
                )
            except Gone:
                if token is None:
                    raise
                log.info("listing %s: the continue token expired; listing again without pages", resource)
                items.clear()
                if on_restart is not None:
                    on_restart()
                page = await self.list_page(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    resource_version=resource_version or None,
                    on_item=take,
                )
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                return ListResult(items, str(meta.get("resourceVersion") or ""), paginated)
            paginated = True

    async def list_all(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
    ) -> tuple[list[Object], str]:
        """Read a whole, current collection page by page; returns its items and the list's resourceVersion."""
        result = await self.list_collection(
            resource, namespace, label_selector=label_selector, page_size=page_size
        )
        return result.items, result.resource_version

    async def create(self, resource: Resource, obj: Object, namespace: str | None = None) -> Object:
        """Create an object (namespace from the argument or the object)."""
        ns = namespace or namespace_of(obj)
        return cast(Object, await self.request("POST", resource.path(ns), body=obj))

    async def replace(self, resource: Resource, obj: Object, *, subresource: str | None = None) -> Object:
        """PUT an object (optimistic concurrency through its resourceVersion)."""
        path = resource.path(namespace_of(obj), name_of(obj), subresource)
        return cast(Object, await self.request("PUT", path, body=obj))

    async def replace_status(self, resource: Resource, obj: Object) -> Object:
        """PUT the status subresource."""
        return await self.replace(resource, obj, subresource="status")

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> Object:
        """PATCH an object with an explicit patch type (merge patch by default)."""
        query: dict[str, str | int | bool | None] = {"fieldManager": field_manager, "force": force}
        path = resource.path(namespace, name, subresource)
        return cast(
            Object, await self.request("PATCH", path, query=query, body=patch, content_type=patch_type)
        )

    async def apply(
        self, resource: Resource, obj: Object, *, field_manager: str, force: bool = True
    ) -> Object:
        """Server-side apply `obj` as `field_manager`."""
        return await self.patch(
            resource,
            name_of(obj),
            obj,
            namespace_of(obj) or None,
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        uid: str | None = None,
    ) -> None:
        """Delete an object; `uid` makes it a precondition (never delete a namesake)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if uid:
            body["preconditions"] = {"uid": uid}
        await self.request("DELETE", resource.path(namespace, name), body=body)

    @asynccontextmanager
    async def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_seconds: int,
        heartbeat_timeout: float,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Open a watch from `resource_version`; yields an iterator of events.

        The server ends the stream after `timeout_seconds`; the client gives it `WATCH_CLIENT_MARGIN` more
        before it calls the stream dead. A quiet stream is healthy until then: the API server (1.20 to at
        least 1.26) sends bookmarks only once its watch cache has seen the resource change since it started,
        and only with a version newer than the watch's start, so silence alone says nothing. Once the
        stream has delivered a bookmark, the server sends one about every minute, and a silence longer than
        `heartbeat_timeout` means a half-open connection: the iterator raises `ServerUnavailable`. A 410
        arrives either as an HTTP error (raised as `Gone`) or as an ERROR event (yielded; the caller
        decides).
        """
        query: dict[str, str | int | bool | None] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
            "labelSelector": label_selector,
        }
        timeout = aiohttp.ClientTimeout(
            total=timeout_seconds + WATCH_CLIENT_MARGIN,
            connect=self.request_timeout,
            sock_connect=self.request_timeout,
        )
        response = await self._send("GET", resource.path(namespace), query=query, timeout=timeout)
        try:
            if not 200 <= response.status < 300:
                text = (await response.read()).decode("utf-8", errors="replace")
                raise ApiError.from_response(response.status, text)
            yield _events(response, str(resource), heartbeat_timeout)
        finally:
            response.close()


async def _events(
    response: aiohttp.ClientResponse, what: str, heartbeat_timeout: float
) -> AsyncIterator[WatchEvent]:
    heartbeats = False
    while True:
        try:
            async with asyncio.timeout(heartbeat_timeout if heartbeats else None):
                line = await response.content.readline()
        except TimeoutError as exc:
            if not heartbeats:
                raise ServerUnavailable(0, "WatchBroken", f"watch {what}: not ended by the server") from exc
            raise ServerUnavailable(
                0, "WatchSilent", f"watch {what}: no bookmark for {heartbeat_timeout:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ServerUnavailable(0, "WatchBroken", f"watch {what}: {_describe(exc)}") from exc
        if not line:
            return
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise ServerUnavailable(0, "BadWatchLine", f"watch {what}: undecodable line") from exc
        kind = str(event.get("type") or "")
        heartbeats = heartbeats or kind == "BOOKMARK"
        yield WatchEvent(kind, event.get("object") or {})


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def load_client(
    kubeconfig: str | None = None,
    *,
    context: str | None = None,
    request_timeout: float = 30.0,
    connection_pool: int = 64,
) -> Client:
    """Build the shared client from `kubeconfig`, `$KUBECONFIG`, in-cluster config or ~/.kube/config.

    Raises `ConfigurationError` (one-line message) when no usable configuration is found.
    """
    configuration = k8s_client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if path:
            first = path.split(os.pathsep)[0]
            if not Path(first).is_file():
                raise ConfigurationError(f"kubeconfig {first!r} does not exist or is not a file")
            await k8s_config.load_kube_config(
                config_file=first, context=context, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        elif Path.home().joinpath(".kube", "config").is_file():
            await k8s_config.load_kube_config(context=context, client_configuration=configuration)
        else:
            raise ConfigurationError(
                "no cluster configured: pass --kubeconfig, set KUBECONFIG, or run inside a cluster"
            )
    except ConfigException as exc:
        raise ConfigurationError(f"invalid kubeconfig: {exc}") from exc
    except (ValueError, TypeError, KeyError, AttributeError, OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"invalid kubeconfig {path or '~/.kube/config'}: {_describe(exc)}") from exc
    configuration.connection_pool_maxsize = connection_pool
    return Client(k8s_client.ApiClient(configuration), request_timeout=request_timeout)


async def check_reachable(client: Client, timeout: float = 10.0) -> str:
    """GET /version once; returns the server's gitVersion or raises `ConfigurationError`."""
    try:
        response = await client._send("GET", "/version", timeout=timeout)
        try:
            text = (await response.read()).decode("utf-8", errors="replace")
        finally:
            response.release()
    except ApiError as exc:
        raise ConfigurationError(f"API server {client.host} unreachable: {exc.message}") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigurationError(f"API server {client.host} unreachable: {_describe(exc)}") from exc
    if response.status in (401, 403):
        raise ConfigurationError(
            f"API server {client.host} rejected the credentials (HTTP {response.status})"
        )
    if not 200 <= response.status < 300:
        raise ConfigurationError(f"API server {client.host} answered HTTP {response.status} to GET /version")
    try:
        return str(json.loads(text).get("gitVersion", "unknown"))
    except (ValueError, AttributeError):
        return "unknown"
