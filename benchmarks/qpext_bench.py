"""Benchmark qpext's `GET /metrics` against a pass-through floor, on loopback, in one run.

For app bodies of 100, 10,000 and 100,000 sample lines (30% counters, 20% gauges, 35% histograms with 12
buckets, 15% untyped `_total`/`_created`; 3-5 labels per sample) and a queue-proxy body of ~200 series:
latency (median, p99) one request at a time, requests per second with 8 concurrent connections, and the
peak RSS of the server process in both phases. The floor is a server that scrapes the same two upstreams
concurrently and only concatenates the bodies. Prints a markdown table.

    .venv/bin/python -m benchmarks.qpext_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100, 10_000, 100_000)
LABEL_POOL = (
    ("model", "m"),
    ("method", "POST"),
    ("code", "200"),
    ("handler", "/v1/models/x:predict"),
    ("region", "eu"),
)


def _labels(rnd: random.Random, i: int) -> str:
    count = 3 + rnd.randrange(3)
    return ",".join(f'{k}="{v}{i}"' for k, v in LABEL_POOL[:count])


def app_body(lines: int, seed: int = 1) -> bytes:
    """A model server's exposition with the mix of family types described above."""
    rnd = random.Random(seed)
    out: list[str] = []
    total = family = 0
    while total < lines:
        family += 1
        pick = rnd.random()
        if pick < 0.30:
            name = f"app_requests_{family}_total"
            out.append(f"# HELP {name} Requests.\n# TYPE {name} counter\n")
            out += [f"{name}{{{_labels(rnd, i)}}} {rnd.randrange(10**6)}\n" for i in range(10)]
            total += 10
        elif pick < 0.50:
            name = f"app_inflight_{family}"
            out.append(f"# HELP {name} In flight.\n# TYPE {name} gauge\n")
            out += [f"{name}{{{_labels(rnd, i)}}} {rnd.random() * 100:.3f}\n" for i in range(10)]
            total += 10
        elif pick < 0.85:
            name = f"app_latency_{family}_seconds"
            out.append(f"# HELP {name} Latency.\n# TYPE {name} histogram\n")
            labels = _labels(rnd, family)
            count = 0
            for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"):
                count += rnd.randrange(100)
                out.append(f'{name}_bucket{{{labels},le="{le}"}} {count}\n')
            out.append(f"{name}_sum{{{labels}}} {count * 0.1:.2f}\n{name}_count{{{labels}}} {count}\n")
            total += 14
        else:
            name = f"app_untyped_{family}" + rnd.choice(("_total", "_created"))
            out += [f"{name}{{{_labels(rnd, i)}}} {rnd.randrange(10**6)}\n" for i in range(10)]
            total += 10
    return "".join(out).encode()


def queue_proxy_body() -> bytes:
    """~200 series shaped like Knative queue-proxy's exposition."""
    base = (
        'configuration_name="c",container_name="queue-proxy",namespace_name="default",pod_name="p",'
        'revision_name="r",service_name="s"'
    )
    out = []
    for metric in ("revision_request_count", "revision_app_request_count"):
        out.append(f"# HELP {metric} Requests.\n# TYPE {metric} counter\n")
        out += [
            f'{metric}{{{base},response_code="{c}",response_code_class="{c // 100}xx"}} {c * 7}\n'
            for c in range(200, 240)
        ]
    for metric in ("revision_request_latencies", "revision_app_request_latencies"):
        out.append(f"# HELP {metric} Latency.\n# TYPE {metric} histogram\n")
        for code in (200, 500):
            for le in (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, "+Inf"):
                out.append(f'{metric}_bucket{{{base},response_code="{code}",le="{le}"}} 10\n')
            out.append(f'{metric}_sum{{{base},response_code="{code}"}} 12.5\n')
            out.append(f'{metric}_count{{{base},response_code="{code}"}} 10\n')
    out.append("# HELP revision_queue_depth Depth.\n# TYPE revision_queue_depth gauge\n")
    out.append(f"revision_queue_depth{{{base}}} 0\n")
    return "".join(out).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_passthrough(port: int, qp_port: int, app_port: int) -> None:
    """The floor: concurrent scrape of both sides, bodies concatenated, nothing else."""
    async with aiohttp.ClientSession() as session:

        async def fetch(url: str) -> bytes:
            async with session.get(url, headers={"Accept-Encoding": "identity"}) as resp:
                return await resp.read()

        async def handle(request: web.Request) -> web.Response:
            qp, app = await asyncio.gather(
                fetch(f"http://127.0.0.1:{qp_port}/metrics"), fetch(f"http://127.0.0.1:{app_port}/metrics")
            )
            return web.Response(body=qp + app, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()


async def serve_qpext(port: int, qp_port: int, app_port: int) -> None:
    from qpext.config import Config
    from qpext.supervisor import run

    await run(
        Config(
            listen_port=port,
            listen_host="127.0.0.1",
            upstream_host="127.0.0.1",
            queue_proxy_port=qp_port,
            app_port=app_port,
            serverless_label_values=("svc", "svc-predictor", "svc-predictor-00001"),
        )
    )


class Upstreams:
    def __init__(self) -> None:
        self.qp_body = queue_proxy_body()
        self.app_body = b""
        self.qp_port = free_port()
        self.app_port = free_port()

    async def start(self) -> web.AppRunner:
        async def qp(request: web.Request) -> web.Response:
            return web.Response(body=self.qp_body, content_type="text/plain")

        async def app(request: web.Request) -> web.Response:
            return web.Response(body=self.app_body, content_type="text/plain")

        runners = []
        for port, handler in ((self.qp_port, qp), (self.app_port, app)):
            application = web.Application()
            application.router.add_get("/metrics", handler)
            runner = web.AppRunner(application, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        self._runners = runners
        return runners[0]

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def measure(url: str, pid: int, sequential: int, concurrent_seconds: float) -> dict[str, float]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one() -> float:
            start = time.perf_counter()
            async with session.get(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"}) as resp:
                await resp.read()
                assert resp.status == 200
            return time.perf_counter() - start

        for _ in range(3):
            await one()
        reset_peak_rss(pid)
        latencies = sorted([await one() for _ in range(sequential)])
        rss_one = peak_rss_mib(pid)
        reset_peak_rss(pid)
        done = 0
        stop_at = time.perf_counter() + concurrent_seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await one()
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        elapsed = time.perf_counter() - start
        rss_eight = peak_rss_mib(pid)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "median": statistics.median(latencies) * 1e3,
        "p99": p99 * 1e3,
        "rps": done / elapsed,
        "rss1": rss_one,
        "rss8": rss_eight,
    }


def spawn(mode: str, port: int, upstreams: Upstreams) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.qpext_bench",
            mode,
            str(port),
            str(upstreams.qp_port),
            str(upstreams.app_port),
        ],
        cwd=ROOT,
        env={**os.environ, "QPEXT_LOG_LEVEL": "ERROR"},
    )


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)


async def bench(quick: bool) -> None:
    upstreams = Upstreams()
    await upstreams.start()
    rows = []
    try:
        servers = {}
        for mode in ("--serve-qpext", "--serve-passthrough"):
            port = free_port()
            servers[mode] = (spawn(mode, port, upstreams), port)
        for _, port in servers.values():
            await wait_listening(port)
        for size in SIZES:
            upstreams.app_body = app_body(size)
            sequential = {100: 300, 10_000: 60, 100_000: 20}[size] // (5 if quick else 1)
            seconds = 2.0 if quick else 5.0
            result = {}
            for mode, (proc, port) in servers.items():
                url = f"http://127.0.0.1:{port}/metrics"
                result[mode] = await measure(url, proc.pid, sequential, seconds)
            rows.append((size, result["--serve-qpext"], result["--serve-passthrough"]))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        await upstreams.stop()
    print(
        f"qpext benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}, queue-proxy body {len(queue_proxy_body())} bytes\n"
    )
    print(
        "| app lines | qpext median | qpext p99 | qpext req/s (8 conns) | qpext peak RSS 1 / 8 concurrent "
        "| pass-through median | pass-through p99 | pass-through req/s | pass-through RSS 1 / 8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size, ours, floor in rows:
        print(
            f"| {size:,} | {ours['median']:.2f} ms | {ours['p99']:.2f} ms | {ours['rps']:,.1f} "
            f"| {ours['rss1']:.0f} / {ours['rss8']:.0f} MiB | {floor['median']:.2f} ms "
            f"| {floor['p99']:.2f} ms | {floor['rps']:,.1f} "
            f"| {floor['rss1']:.0f} / {floor['rss8']:.0f} MiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument(
        "--serve-qpext", nargs=3, type=int, metavar=("PORT", "QP", "APP"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--serve-passthrough", nargs=3, type=int, metavar=("PORT", "QP", "APP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_qpext:
        asyncio.run(serve_qpext(*args.serve_qpext))
    elif args.serve_passthrough:
        asyncio.run(serve_passthrough(*args.serve_passthrough))
    else:
        asyncio.run(bench(args.quick))


if __name__ == "__main__":
    main()
