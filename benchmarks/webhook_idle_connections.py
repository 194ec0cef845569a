"""Idle TLS connections against the manager's webhook server: its memory, what it closes, what it returns.

Issue 11 found that connections which complete the TLS handshake and then send nothing were kept forever,
at about 250 KiB of the manager's RSS each, and that the memory stayed after they closed. This measures the
real manager process (`python -m controllers.main`, from this checkout or from `--source` trees such as an
older commit unpacked with `git archive <commit> | tar -x -C <dir>`), against an API-only local control
plane, with its self-signed webhook certificate on 127.0.0.1:

1. start the manager, wait until it is ready, let it settle 3 s: RSS "idle";
2. open handshaken TLS connections that send nothing, up to each count in `--connections` (50 handshakes
   in flight; the connections stay open on the client side), wait 2 s: RSS, how many the manager already
   closed, and whether a request on a new connection is still answered (a POST of `{}` to the TrainedModel
   validator, which answers 400);
3. hold them `--hold` seconds (longer than Go's 32 s read-header timeout): RSS, how many it closed;
4. close every connection from the client side, wait 5 s: RSS (is the memory returned?), and the peak
   (VmHWM) over the run.

    .venv/bin/python -m benchmarks.webhook_idle_connections [--connections 250,500,1000,1500] [--hold 40]
        [--source DIR ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.isvc_scale import CONFIG_NAMESPACE, prepare
from e2e.localcluster.cluster import LocalCluster, free_port
from manager.client import load_client
from tests.integration.isvc_harness import install_crds

REPO = Path(__file__).resolve().parents[1]
PROBE_PATH = "/validate-serving-kserve-io-v1alpha1-trainedmodel"
HANDSHAKES_IN_FLIGHT = 50
TIMEOUT = 10.0


def status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def peak_mib(pid: int) -> float:
    return status_kib(pid, "VmHWM") / 1024


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Manager:
    popen: subprocess.Popen[bytes]
    webhook_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def start_manager(source: Path, kubeconfig: Path, workdir: Path) -> Manager:
    metrics, health, webhook = free_port(), free_port(), free_port()
    certs = workdir / "certs"
    certs.mkdir()
    log = workdir / "manager.log"
    env = dict(os.environ, POD_NAMESPACE=CONFIG_NAMESPACE, PYTHONPATH=str(source))
    argv = [
        sys.executable, "-m", "controllers.main",
        "--kubeconfig", str(kubeconfig),
        f"--metrics-addr=127.0.0.1:{metrics}",
        f"--health-probe-addr=127.0.0.1:{health}",
        f"--webhook-port={webhook}",
        "--webhook-self-signed", "--webhook-cert-ip", "127.0.0.1", "--webhook-host", "127.0.0.1",
        "--webhook-cert-dir", str(certs),
        "--log-level=warning",
    ]  # fmt: skip
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT)
    manager = Manager(popen, webhook, log)
    deadline = time.monotonic() + 60
    while not ready(f"http://127.0.0.1:{health}/readyz"):
        if not manager.alive() or time.monotonic() > deadline:
            manager.stop()
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            sys.exit(f"manager from {source} did not become ready:\n{tail}")
        time.sleep(0.2)
    return manager


@dataclass
class Flood:
    """Idle client connections; each one notices when the server closes it."""

    port: int
    context: ssl.SSLContext = field(default_factory=lambda: _insecure_context())
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    watchers: list[asyncio.Task[None]] = field(default_factory=list)
    closed_by_server: int = 0
    failed: int = 0

    @property
    def open(self) -> int:
        return len(self.writers) - self.closed_by_server

    async def grow_to(self, count: int) -> None:
        slots = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)

        async def one() -> None:
            async with slots:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.port, ssl=self.context), TIMEOUT
                    )
                except (OSError, TimeoutError, ssl.SSLError):
                    self.failed += 1
                    return
                self.writers.append(writer)
                self.watchers.append(asyncio.create_task(self._watch(reader)))

        await asyncio.gather(*(one() for _ in range(max(0, count - self.open))))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            await reader.read(1)
        self.closed_by_server += 1

    async def close(self) -> None:
        for task in self.watchers:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.watchers, return_exceptions=True)


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def probe(port: int) -> str:
    """A request on a fresh connection: the status line's code and the time, or why there was none."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=_insecure_context()), TIMEOUT
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return f"no connection ({type(exc).__name__})"
    try:
        body = json.dumps({}).encode()
        writer.write(
            f"POST {PROBE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        status = await asyncio.wait_for(reader.readline(), TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return f"no answer ({type(exc).__name__})"
    finally:
        writer.close()
    code = status.split(b" ")[1].decode() if status.count(b" ") >= 2 else "?"
    return f"{code} in {(time.perf_counter() - started) * 1000:.0f} ms"


@dataclass
class Row:
    stage: str
    open_connections: int
    closed_by_manager: int
    rss: float
    probe: str = ""


async def measure(source: Path, kubeconfig: Path, counts: list[int], hold: float) -> tuple[list[Row], float]:
    with tempfile.TemporaryDirectory(prefix="webhook-idle-") as tmp:
        manager = start_manager(source, kubeconfig, Path(tmp))
        flood = Flood(manager.webhook_port)
        rows: list[Row] = []
        try:
            await asyncio.sleep(3)
            rows.append(Row("idle", 0, 0, rss_mib(manager.pid), await probe(manager.webhook_port)))
            for count in counts:
                await flood.grow_to(count)
                await asyncio.sleep(2)
                check = await probe(manager.webhook_port)
                rows.append(
                    Row(f"{count:,} opened", flood.open, flood.closed_by_server, rss_mib(manager.pid), check)
                )
                print(f"{source}: {rows[-1]}", file=sys.stderr, flush=True)
            await asyncio.sleep(hold)
            check = await probe(manager.webhook_port)
            rows.append(
                Row(f"after {hold:g} s", flood.open, flood.closed_by_server, rss_mib(manager.pid), check)
            )
            closed = flood.closed_by_server
            await flood.close()
            await asyncio.sleep(5)
            rows.append(Row("5 s after the client closed them", 0, closed, rss_mib(manager.pid)))
            peak = peak_mib(manager.pid)
            if not manager.alive():
                sys.exit(f"the manager from {source} died; see {manager.log}")
        finally:
            await flood.close()
            manager.stop()
        return rows, peak


def describe(source: Path) -> str:
    """The tree's commit, and whether its working tree differs from it."""
    head = subprocess.run(
        ["git", "-C", str(source), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0 or not head.stdout.strip():
        return str(source)
    clean = subprocess.run(["git", "-C", str(source), "diff", "--quiet", "HEAD"], check=False).returncode == 0
    return head.stdout.strip()[:60] + ("" if clean else " + uncommitted changes")


async def main_async(args: argparse.Namespace, cluster: LocalCluster) -> None:
    await asyncio.to_thread(install_crds, cluster.kubeconfig_path)
    client = await load_client(str(cluster.kubeconfig_path))
    try:
        await prepare(client)
    finally:
        await client.close()
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores")
    for source in args.source or [REPO]:
        rows, peak = await measure(source.resolve(), cluster.kubeconfig_path, args.connections, args.hold)
        print()
        load = os.getloadavg()[0]
        print(f"code: {describe(source)}; peak RSS (VmHWM) {peak:.0f} MiB; load average {load:.1f}")
        print()
        print("| stage | open (client's view) | closed by the manager | manager RSS | new request |")
        print("|---|---:|---:|---:|---|")
        for row in rows:
            print(
                f"| {row.stage} | {row.open_connections:,} | {row.closed_by_manager:,} | {row.rss:.0f} MiB"
                f" | {row.probe} |"
            )


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from exc
    if not values or values != sorted(values) or values[0] < 1:
        raise argparse.ArgumentTypeError(f"expected increasing positive integers: {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--connections", type=_counts, default=[250, 500, 1000, 1500], help="[250,500,1000,1500]"
    )
    parser.add_argument("--hold", type=float, default=40.0, help="seconds to keep them open at the end [40]")
    parser.add_argument(
        "--source", type=Path, action="append", help="a tree to run the manager from (repeatable) [this one]"
    )
    args = parser.parse_args()
    with LocalCluster() as cluster:
        asyncio.run(main_async(args, cluster))


if __name__ == "__main__":
    main()
