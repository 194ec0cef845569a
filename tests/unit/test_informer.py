"""The informer's list/watch decisions, against a scripted API server or a recording fake client.

The scripted server is a real HTTP server on loopback (aiohttp), so the client's stream handling (line
reading, the heartbeat watchdog, the server-side deadline) runs for real; the recording client checks which
lists the informer asks for (client-go's reflector: resourceVersion "0" first, the last version unpaged on a
re-list, "" paged when that version is unavailable) and that every re-list waits for the backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client as k8s_client

from manager import informer as informer_module
from manager.client import CONFIGMAPS, Client, ListResult, Object, Resource, WatchEvent
from manager.errors import ApiError, Gone, ServerUnavailable
from manager.informer import Backoff, Informer, WatchSettings, is_version_too_large

NAMESPACE = "ns"
HANG_GUARD = 10.0


def configmap(name: str, version: str) -> Object:
    return {"metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": version, "uid": name}}


def status(code: int, reason: str, message: str, causes: list[dict[str, str]] | None = None) -> Object:
    body: Object = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason}
    body["message"] = message
    if causes is not None:
        body["details"] = {"causes": causes}
    return body


async def eventually(check: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not check():
            await asyncio.sleep(0.01)


# --- a scripted API server over HTTP --------------------------------------------------------------------


@dataclass
class ScriptedServer:
    """Serves one ConfigMap list and a scripted watch stream; records every request's query."""

    watch_script: Callable[[web.StreamResponse, int], Any]
    pages: list[Object] = field(default_factory=list)
    lists: list[dict[str, str]] = field(default_factory=list)
    watches: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        if query.get("watch") != "true":
            self.lists.append(query)
            empty: Object = {"metadata": {"resourceVersion": "10"}, "items": []}
            page = self.pages.pop(0) if self.pages else empty
            code = int(page.get("code") or 200)
            return web.json_response(page, status=code)
        self.watches.append(query)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await self.watch_script(response, int(query["timeoutSeconds"]))
        return response


def lists_only(pages: list[Object]) -> ScriptedServer:
    """A server that answers lists with `pages`, in order, and fails the test if anything watches."""

    async def unused(response: web.StreamResponse, timeout: int) -> None:
        raise AssertionError("no watch expected")

    return ScriptedServer(unused, pages)


@asynccontextmanager
async def scripted(server: ScriptedServer) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps", server.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    client = Client(k8s_client.ApiClient(configuration), request_timeout=HANG_GUARD)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


def line(event_type: str, obj: Object) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


async def test_a_silent_watch_without_bookmarks_lasts_until_the_server_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def silent_until_deadline(response: web.StreamResponse, timeout: int) -> None:
        # A Kubernetes 1.20 watch of a resource its watch cache has not seen change: nothing at all.
        await asyncio.sleep(timeout)

    server = ScriptedServer(silent_until_deadline)
    settings = WatchSettings(watch_timeout=1, inactivity_timeout=0.2)
    async with scripted(server) as client:
        informer = Informer(client, CONFIGMAPS, NAMESPACE, settings=settings)
        with caplog.at_level(logging.DEBUG, logger="manager"):
            informer.start()
            try:
                await eventually(lambda: len(server.watches) >= 3, "three watches")
            finally:
                await informer.stop()
    assert informer.relists == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(w["allowWatchBookmarks"] == "true" and w["resourceVersion"] == "10" for w in server.watches)


async def test_a_watch_that_stops_after_sending_bookmarks_is_reopened_without_a_relist(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def bookmark_then_hang(response: web.StreamResponse, timeout: int) -> None:
        await response.write(line("BOOKMARK", {"kind": "ConfigMap", "metadata": {"resourceVersion": "12"}}))
        await asyncio.sleep(timeout)  # a half-open connection: the server will end it much later

    server = ScriptedServer(bookmark_then_hang)
    settings = WatchSettings(watch_timeout=60, inactivity_timeout=0.2)
    async with scripted(server) as client:
        informer = Informer(client, CONFIGMAPS, NAMESPACE, settings=settings)
        with caplog.at_level(logging.WARNING, logger="manager"):
            informer.start()
            try:
                await eventually(lambda: len(server.watches) >= 2, "the watch reopened")
            finally:
                await informer.stop()
    assert informer.relists == 1
    assert server.watches[1]["resourceVersion"] == "12"
    assert any("no bookmark for 0.2s" in r.getMessage() for r in caplog.records)


async def test_an_expired_continue_token_falls_back_to_one_unpaged_list() -> None:
    server = lists_only(
        [
            {"metadata": {"resourceVersion": "20", "continue": "token-1"}, "items": [configmap("a", "5")]},
            status(410, "Expired", "The provided continue parameter is too old to display a consistent list"),
            {"metadata": {"resourceVersion": "30"}, "items": [configmap("a", "5"), configmap("b", "25")]},
        ]
    )
    async with scripted(server) as client:
        result = await client.list_collection(CONFIGMAPS, NAMESPACE, page_size=1, resource_version="")
    assert [o["metadata"]["name"] for o in result.items] == ["a", "b"]
    assert result.resource_version == "30"
    assert server.lists == [{"limit": "1"}, {"limit": "1", "continue": "token-1"}, {}]


async def test_streamed_items_are_superseded_when_a_continue_token_expires() -> None:
    server = lists_only(
        [
            {"metadata": {"resourceVersion": "20", "continue": "token-1"}, "items": [configmap("gone", "5")]},
            status(410, "Expired", "The provided continue parameter is too old to display a consistent list"),
            {"metadata": {"resourceVersion": "30"}, "items": [configmap("a", "5"), configmap("b", "25")]},
        ]
    )
    delivered: list[str] = []
    async with scripted(server) as client:
        result = await client.list_collection(
            CONFIGMAPS,
            NAMESPACE,
            page_size=1,
            resource_version="",
            on_item=lambda o: delivered.append(o["metadata"]["name"]),
            on_restart=lambda: delivered.append("restart"),
        )
    assert delivered == ["gone", "restart", "a", "b"]
    assert (result.items, result.resource_version) == ([], "30")


async def test_an_expired_first_page_is_an_error_for_the_caller() -> None:
    server = lists_only([status(410, "Expired", "too old resource version: 5 (30)")])
    async with scripted(server) as client:
        with pytest.raises(Gone):
            await client.list_collection(CONFIGMAPS, NAMESPACE, resource_version="5")
    assert len(server.lists) == 1


# --- which lists the informer asks for --------------------------------------------------------------------


@dataclass
class ListCall:
    resource_version: str | None
    page_size: int


class RecordingClient:
    """Answers lists from a script of results or errors; every watch ends with the next scripted error."""

    def __init__(self, lists: list[ListResult | ApiError], watch_errors: list[ApiError]) -> None:
        self.lists = lists
        self.watch_errors = watch_errors
        self.calls: list[ListCall] = []
        self.watched_from: list[str] = []
        self.done = asyncio.Event()

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
        self.calls.append(ListCall(resource_version, page_size))
        answer = self.lists.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        assert on_item is not None, "the informer stores items as they are decoded"
        for item in answer.items:
            on_item(item)
        return ListResult([], answer.resource_version, answer.paginated)

    @asynccontextmanager
    async def watch(
        self, resource: Resource, namespace: str | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        self.watched_from.append(kwargs["resource_version"])
        if not self.watch_errors:
            self.done.set()
            await asyncio.Event().wait()
        raise self.watch_errors.pop(0)
        yield  # pragma: no cover


def result(version: str, *names: str, paginated: bool = False) -> ListResult:
    return ListResult([configmap(n, version) for n in names], version, paginated)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []

    async def record(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(informer_module, "_sleep", record)
    return waited


async def run_until_idle(client: RecordingClient, settings: WatchSettings | None = None) -> Informer:
    informer = Informer(client, CONFIGMAPS, NAMESPACE, settings=settings)  # type: ignore[arg-type]
    informer.start()
    try:
        async with asyncio.timeout(HANG_GUARD):
            await client.done.wait()
    finally:
        await informer.stop()
    return informer


GONE = Gone(410, "Expired", "too old resource version: 10 (40)")
TOO_LARGE = ServerUnavailable(
    504,
    "Timeout",
    "Too large resource version: 90, current: 40",
    status(
        504, "Timeout", "Too large resource version: 90, current: 40", [{"reason": "ResourceVersionTooLarge"}]
    ),
)


async def test_the_first_list_comes_from_the_watch_cache_and_a_relist_from_the_last_version_unpaged(
    sleeps: list[float],
) -> None:
    client = RecordingClient([result("10", "a"), result("40", "a", "b")], watch_errors=[GONE])
    informer = await run_until_idle(client)
    assert client.calls == [ListCall("0", 500), ListCall("10", 0)]
    assert client.watched_from == ["10", "40"]
    assert informer.relists == 2
    assert len(sleeps) == 1, "the re-list after 410 waits for the backoff"


@pytest.mark.parametrize("error", [GONE, TOO_LARGE], ids=["expired", "too-large"])
async def test_an_unavailable_version_lists_the_current_state_in_pages(
    sleeps: list[float], error: ApiError
) -> None:
    client = RecordingClient([result("10", "a"), error, result("40", "a")], watch_errors=[GONE])
    await run_until_idle(client)
    assert client.calls == [ListCall("0", 500), ListCall("10", 0), ListCall("", 500)]
    assert client.watched_from == ["10", "40"]


async def test_a_server_that_pages_the_first_list_keeps_getting_pages(sleeps: list[float]) -> None:
    client = RecordingClient([result("10", "a", paginated=True), result("40", "a")], watch_errors=[GONE])
    await run_until_idle(client, WatchSettings(page_size=7))
    assert client.calls == [ListCall("0", 7), ListCall("10", 7)]


async def test_failing_lists_back_off_each_time(sleeps: list[float]) -> None:
    broken = ServerUnavailable(500, "InternalError", "etcd is unhappy")
    client = RecordingClient([broken, broken, broken, result("10", "a")], watch_errors=[])
    informer = await run_until_idle(client, WatchSettings(backoff_initial=1, backoff_max=3))
    assert informer.relists == 1
    assert len(sleeps) == 3
    bases = [1, 2, 3]
    assert all(base <= wait < 2 * base for base, wait in zip(bases, sleeps, strict=True)), sleeps


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_quiet_period() -> None:
    now = [1000.0]
    backoff = Backoff(WatchSettings(backoff_initial=0.8, backoff_max=30, backoff_reset=120), lambda: now[0])
    waits = [backoff.next() for _ in range(8)]
    bases = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]
    assert all(base <= wait < 2 * base for base, wait in zip(bases, waits, strict=True))
    now[0] += 121
    assert 0.8 <= backoff.next() < 1.6


def test_is_version_too_large() -> None:
    assert is_version_too_large(TOO_LARGE)
    assert not is_version_too_large(ServerUnavailable(504, "Timeout", "request timed out"))
    assert not is_version_too_large(GONE)


async def test_watch_events_are_delivered_and_the_version_follows_bookmarks(sleeps: list[float]) -> None:
    events = [
        WatchEvent("ADDED", configmap("b", "11")),
        WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
    ]

    class Streaming(RecordingClient):
        @asynccontextmanager
        async def watch(
            self, resource: Resource, namespace: str | None = None, **kwargs: Any
        ) -> AsyncIterator[Any]:
            self.watched_from.append(kwargs["resource_version"])

            async def stream() -> AsyncIterator[WatchEvent]:
                if len(self.watched_from) > 1:
                    self.done.set()
                    await asyncio.Event().wait()
                for event in events:
                    yield event

            yield stream()

    client = Streaming([result("10", "a")], watch_errors=[])
    informer = await run_until_idle(client)
    assert client.watched_from == ["10", "15"]
    assert sorted(o["metadata"]["name"] for o in informer.store) == ["a", "b"]
    assert sleeps == [], "a watch the server ended is reopened at once"
