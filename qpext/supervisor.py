"""qpext as the queue-proxy container: serve ``/metrics`` while queue-proxy runs as a child process.

KServe's Go qpext ran queue-proxy in-process and then blocked forever on a context nobody cancelled, so
pods hung on termination (kserve/kserve#3186). Here the lifetime is the child's: SIGTERM and SIGINT are
forwarded to it (queue-proxy drains on SIGTERM while metrics stay available), and when it exits qpext
stops its server and exits with the child's code. Without a child, a signal stops the server directly.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from qpext.config import Config
from qpext.server import make_session, start_server

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(returncode: int) -> int:
    """A child's return code as a shell would report it (128 + signal number when killed)."""
    return 128 - returncode if returncode < 0 else returncode


async def run(config: Config) -> int:
    """Run until the child exits (its code) or, without a child, until SIGTERM/SIGINT (0)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    session = make_session()
    child: asyncio.subprocess.Process | None = None
    try:
        try:
            runner, _ = await start_server(config, session)
        except OSError as err:
            log.error("cannot listen on port %d: %s", config.listen_port, err)
            return 1
        try:
            if config.child_command:
                try:
                    child = await asyncio.create_subprocess_exec(*config.child_command)
                except OSError as err:
                    log.error("cannot start queue-proxy %r: %s", config.child_command[0], err)
                    return 1
                log.info("started queue-proxy %s (pid %d)", config.child_command[0], child.pid)

            def on_signal(sig: signal.Signals) -> None:
                if child is not None and child.returncode is None:
                    log.info("forwarding %s to queue-proxy", sig.name)
                    child.send_signal(sig)
                else:
                    stop.set()

            for sig in FORWARDED_SIGNALS:
                loop.add_signal_handler(sig, on_signal, sig)
            if child is not None:
                code = exit_code(await child.wait())
                log.info("queue-proxy exited with code %d", code)
                return code
            await stop.wait()
            return 0
        finally:
            for sig in FORWARDED_SIGNALS:
                loop.remove_signal_handler(sig)
            await runner.cleanup()
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            await child.wait()
        await session.close()
