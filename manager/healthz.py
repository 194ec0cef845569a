"""`/healthz` and `/readyz`: named checks, aggregated, with one sub-path per check.

Mirrors controller-runtime's healthz package so that probes and humans get the same answers from us as from
a Go manager: `/readyz` is 200 only when every check passes, `?verbose` lists each check, `?exclude=name`
skips one, and `/readyz/<name>` runs one. A check is a function that raises (or returns an error string) when
unhealthy; the manager registers "ping" for liveness and "cache-sync" for readiness.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None] | None]
"""Raises (any exception) when the thing it checks is not healthy."""

CHECK_TIMEOUT = 5.0


def ping() -> None:
    """Always healthy: the process answers HTTP."""


class Checks:
    """A named set of checks served under one path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        """Register a check; names must be unique and URL-safe."""
        if name in self._checks:
            raise ValueError(f"check {name!r} already registered under {self.path}")
        self._checks[name] = check

    async def run(self, exclude: set[str] | None = None) -> list[tuple[str, str | None]]:
        """Run every check (minus `exclude`); returns (name, error or None) pairs in name order."""
        results: list[tuple[str, str | None]] = []
        for name in sorted(self._checks):
            if exclude and name in exclude:
                continue
            results.append((name, await self._run_one(name)))
        return results

    async def _run_one(self, name: str) -> str | None:
        try:
            outcome = self._checks[name]()
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, CHECK_TIMEOUT)
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    async def handle(self, request: web.Request) -> web.Response:
        """Serve the aggregate or, for `<path>/<name>`, one check."""
        name = request.match_info.get("name")
        if name:
            if name not in self._checks:
                return web.Response(status=404, text=f"no check named {name}\n")
            error = await self._run_one(name)
            if error is None:
                return web.Response(text="ok")
            return web.Response(status=500, text=f"internal server error: {error}\n")
        exclude = set(request.query.getall("exclude", []))
        results = await self.run(exclude)
        failed = [(n, e) for n, e in results if e is not None]
        verbose = "verbose" in request.query
        if not failed and not verbose:
            return web.Response(text="ok")
        lines = [f"[+]{n} ok" if e is None else f"[-]{n} failed: reason withheld" for n, e in results]
        for n, e in failed:
            log.info("%s check %s failed: %s", self.path, n, e)
        status = 500 if failed else 200
        lines.append(f"{self.path.strip('/')} check {'failed' if failed else 'passed'}")
        return web.Response(status=status, text="\n".join(lines) + "\n")

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes for this set."""
        return [web.get(self.path, self.handle), web.get(self.path + "/{name}", self.handle)]
