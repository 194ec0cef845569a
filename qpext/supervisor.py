"""qpext as the queue-proxy container: serve ``/metrics`` while queue-proxy runs as a child process.

KServe's Go qpext ran queue-proxy in-process and then blocked forever on a context nobody cancelled, so
pods hung on termination (kserve/kserve#3186). Here the lifetime is the child's: SIGTERM and SIGINT are
forwarded to it (queue-proxy drains on SIGTERM while metrics stay available), and when it exits qpext stops
its server and exits with the child's code. Without a child, a signal stops the server directly. Stopping
closes idle connections at once and gives scrapes in flight a short grace period, after which they are
answered with what has arrived, so an idle qpext exits within milliseconds and no scraper is left without
an answer. A signal during that grace period exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from qpext.config import Config
from qpext.server import MetricsServer

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(returncode: int) -> int:
    """A child's return code as a shell would report it (128 + signal number when killed)."""
    return 128 - returncode if returncode < 0 else returncode


async def run(config: Config) -> int:
    """Run until the child exits (its code) or, without a child, until SIGTERM/SIGINT (0)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    aborted = asyncio.Event()
    server = MetricsServer(config)
    child: asyncio.subprocess.Process | None = None
    try:
        await server.start()
    except OSError as err:
        log.error("cannot listen on port %d: %s", config.listen_port, err)
        server.aggregator.close()
        return 1

    def on_signal(sig: signal.Signals) -> None:
        if child is not None and child.returncode is None:
            log.info("forwarding %s to queue-proxy", sig.name)
            child.send_signal(sig)
        elif stopping.is_set():
            log.info("%s while stopping: exiting now", sig.name)
            aborted.set()
        else:
            stopping.set()

    for sig in FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        code = 0
        if config.child_command:
            try:
                child = await asyncio.create_subprocess_exec(*config.child_command)
            except OSError as err:
                log.error("cannot start queue-proxy %r: %s", config.child_command[0], err)
                code = 1
            else:
                log.info("started queue-proxy %s (pid %d)", config.child_command[0], child.pid)
                code = exit_code(await child.wait())
                log.info("queue-proxy exited with code %d", code)
        else:
            await stopping.wait()
        stopping.set()
        stop = asyncio.create_task(server.stop())
        abort = asyncio.create_task(aborted.wait())
        await asyncio.wait((stop, abort), return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, abort):
            task.cancel()
        await asyncio.gather(stop, abort, return_exceptions=True)
        return code
    finally:
        for sig in FORWARDED_SIGNALS:
            loop.remove_signal_handler(sig)
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        server.aggregator.close()
