"""The process shell around a `Manager`: flags, logging, client, signals, exit codes.

Domain packages call `run_manager(setup)` with a function that registers their controllers and webhooks; this
module knows nothing about them. Start-up problems the user must fix (missing or invalid kubeconfig, an
unreachable API server, a port already in use) end the process with exit code 1 and one clear line on
stderr, never a traceback. SIGTERM/SIGINT start a graceful shutdown; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from manager.client import check_reachable, load_client
from manager.errors import ConfigurationError
from manager.logs import setup_logging
from manager.manager import EXIT_FAILED, Manager
from manager.metrics import DEFAULT_METRICS
from manager.options import ManagerOptions, parse_options

log = logging.getLogger(__name__)

Setup = Callable[[Manager], Awaitable[None] | None]
"""Registers controllers, webhooks and checks on a new manager."""


async def serve(options: ManagerOptions, setup: Setup, stop: asyncio.Event) -> int:
    """Build the manager for `options`, let `setup` register on it, and run it until `stop`."""
    client = await load_client(options.kubeconfig)
    try:
        version = await check_reachable(client)
        log.info("connected to API server %s (%s)", client.host, version)
        manager = Manager(client, options, metrics=DEFAULT_METRICS)
        outcome = setup(manager)
        if outcome is not None:
            await outcome
        return await manager.run(stop)
    finally:
        await client.close()


def run_manager(setup: Setup, argv: Sequence[str] | None = None) -> int:
    """Parse flags, run the manager with signal handling, return the exit code."""
    options = parse_options(argv)
    setup_logging(options.log_level, options.log_format)
    try:
        return asyncio.run(_main(options, setup))
    except ConfigurationError as exc:
        print(f"kserve-manager: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


async def _main(options: ManagerOptions, setup: Setup) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal %s, exiting immediately", signal.Signals(signum).name)
            os._exit(EXIT_FAILED)
        log.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return await serve(options, setup, stop)
