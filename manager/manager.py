"""The manager: owns the shared client, cache, metrics, probes and event broadcasters, and runs controllers.

Start and stop order follow controller-runtime, because getting them wrong loses work or blocks the cluster:

start: HTTP servers (metrics, probes) -> always-on runnables (webhook server) -> event broadcasters ->
       caches (wait for sync; `/readyz` turns green) -> leader election (if enabled) -> controllers and
       leader-only runnables.
stop:  controllers (drain in-flight reconciles) -> leader-only runnables -> release the lease -> caches ->
       always-on runnables -> event broadcasters (flush) -> HTTP servers.

The webhook server comes up before the caches because the API server may call it while we list. Caches run
on followers too, so a new leader starts reconciling from a warm cache. The whole stop sequence shares one
deadline (`graceful_shutdown_timeout`, 30 s by default): reconciles still running at the deadline are
cancelled. Losing the lease while leading ends the process with exit code 1, as in controller-runtime, so
that two replicas never reconcile at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar

from aiohttp import web

from manager.cache import Cache
from manager.client import Client
from manager.controller import Builder, Controller
from manager.events import EventBroadcaster
from manager.healthz import Check, Checks, ping
from manager.httpserver import HttpServer, parse_address
from manager.informer import WatchSettings
from manager.leaderelection import LeaderElector
from manager.metrics import Metrics
from manager.options import ManagerOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1


class Runnable(Protocol):
    """Something the manager starts and stops (a webhook server, a test double, ...)."""

    async def start(self) -> None:
        """Start; return once running (work continues in owned tasks)."""

    async def stop(self) -> None:
        """Stop and release everything started."""


class Manager:
    """Runs controllers and runnables against one cluster with controller-runtime's lifecycle."""

    def __init__(
        self,
        client: Client,
        options: ManagerOptions,
        *,
        metrics: Metrics,
        watch_settings: WatchSettings | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.metrics = metrics
        self.cache = Cache(client, settings=watch_settings)
        self.controllers: list[Controller] = []
        self._runnables: list[Runnable] = []
        self._leader_runnables: list[Runnable] = []
        self._broadcasters: list[EventBroadcaster] = []
        self.healthz = Checks("/healthz")
        self.readyz = Checks("/readyz")
        self.healthz.add("ping", ping)
        self.readyz.add("cache-sync", self._cache_synced)
        self.servers: list[HttpServer] = []
        self.elector: LeaderElector | None = None
        self._leading = asyncio.Event()
        host = client.host
        client.set_request_hook(
            lambda method, code, seconds: metrics.rest_client.request(
                method=method, host=host, code=code or "<error>", seconds=seconds
            )
        )

    def builder(self) -> Builder:
        """Start wiring a new controller (`.named().for_().owns().watches().complete(reconciler)`)."""
        return Builder(self.cache, self.metrics, self.controllers.append)

    def event_broadcaster(self, component: str) -> EventBroadcaster:
        """A new event broadcaster with its own queue and source component; one per controller."""
        broadcaster = EventBroadcaster(self.client, component, host=self.options.identity.split("_")[0])
        self._broadcasters.append(broadcaster)
        return broadcaster

    @property
    def event_broadcasters(self) -> tuple[EventBroadcaster, ...]:
        """The event broadcasters made by `event_broadcaster`."""
        return tuple(self._broadcasters)

    def add_runnable(self, runnable: Runnable, *, needs_leader: bool) -> None:
        """Run `runnable` with the manager: always, or only while this replica leads."""
        (self._leader_runnables if needs_leader else self._runnables).append(runnable)

    def add_readyz_check(self, name: str, check: Check) -> None:
        """Add a readiness check."""
        self.readyz.add(name, check)

    @property
    def is_leader(self) -> bool:
        """True while controllers run (always true without leader election, once started)."""
        return self._leading.is_set()

    async def wait_leading(self) -> None:
        """Wait until controllers run."""
        await self._leading.wait()

    def _cache_synced(self) -> None:
        if not self.cache.has_synced:
            raise RuntimeError("informer caches not synced yet")

    def _http_servers(self) -> list[HttpServer]:
        servers = []
        metrics_addr = parse_address(self.options.metrics_addr)
        if metrics_addr is not None:
            app = web.Application()
            app.router.add_get("/metrics", self._serve_metrics)
            servers.append(HttpServer("metrics", app, metrics_addr))
        probe_addr = parse_address(self.options.health_probe_addr)
        if probe_addr is not None:
            app = web.Application()
            app.add_routes(self.healthz.routes() + self.readyz.routes())
            servers.append(HttpServer("health probe", app, probe_addr))
        return servers

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def run(self, stop: asyncio.Event) -> int:
        """Run until `stop` is set (or the lease is lost); returns the process exit code."""
        exit_code = EXIT_OK
        try:
            for server in self._http_servers():
                await server.start()
                self.servers.append(server)
            for runnable in self._runnables:
                await runnable.start()
            for broadcaster in self._broadcasters:
                await broadcaster.start()
            self.cache.start()
            synced = await _until(self.cache.wait_for_sync(self.options.cache_sync_timeout), stop)
            if stop.is_set():
                return EXIT_OK
            if not synced:
                log.error("timed out after %.0fs waiting for caches to sync", self.options.cache_sync_timeout)
                return EXIT_FAILED
            if self.options.leader_elect:
                self.elector = self._make_elector()
                await _until(self.elector.acquire(), stop)
                if stop.is_set():
                    return EXIT_OK
                self.elector.keep_renewing()
            await self._start_leading()
            lost = self.elector.lost.wait() if self.elector is not None else asyncio.Event().wait()
            await _until(lost, stop)
            if not stop.is_set():
                log.error("leader election lost; exiting so that another replica takes over")
                exit_code = EXIT_FAILED
        finally:
            await self._shutdown()
        return exit_code

    def _make_elector(self) -> LeaderElector:
        gauge = self.metrics.leader_election(self.options.leader_election_id)
        return LeaderElector(
            self.client,
            name=self.options.leader_election_id,
            namespace=self.options.leader_election_namespace,
            identity=self.options.identity,
            lease_duration=self.options.lease_duration,
            renew_deadline=self.options.renew_deadline,
            retry_period=self.options.retry_period,
            on_change=gauge.set_leading,
        )

    async def _start_leading(self) -> None:
        for runnable in self._leader_runnables:
            await runnable.start()
        for controller in self.controllers:
            await controller.start()
        self._leading.set()

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self.options.graceful_shutdown_timeout

        def remaining() -> float:
            return max(0.1, deadline - time.monotonic())

        log.info("shutting down (grace period %.0fs)", self.options.graceful_shutdown_timeout)
        self._leading.clear()
        await asyncio.gather(*(c.stop(timeout=remaining()) for c in self.controllers))
        for runnable in reversed(self._leader_runnables):
            await _bounded(runnable.stop, remaining(), "leader runnable")
        if self.elector is not None:
            await _bounded(self.elector.release, min(remaining(), 5.0), "lease release")
        await _bounded(self.cache.stop, remaining(), "cache")
        for runnable in reversed(self._runnables):
            await _bounded(runnable.stop, remaining(), "runnable")
        for broadcaster in self._broadcasters:
            await _bounded(partial(broadcaster.stop, timeout=min(remaining(), 5.0)), remaining(), "events")
        for server in reversed(self.servers):
            await _bounded(server.stop, remaining(), "http server")
        self.servers.clear()
        log.info("shutdown complete")


async def _until(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await `work` unless `stop` is set first (then cancel it and return None)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    if task.cancelled():
        return None
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return None


async def _bounded(stop: Callable[[], Awaitable[object]], timeout: float, what: str) -> None:
    """Run one shutdown step within `timeout`; log (never raise) what goes wrong."""
    try:
        await asyncio.wait_for(stop(), timeout)
    except TimeoutError:
        log.warning("%s did not stop within %.1fs", what, timeout)
    except Exception:
        log.exception("%s failed to stop cleanly", what)
