"""Benchmark qpext's `GET /metrics`: speed against a pass-through floor (and KServe's Go qpext when given),
memory with very large bodies, and shutdown, each in one run on loopback.

Every party is its own process, so each one's CPU share is measured: the server under test is pinned to
CPU 1, the upstreams (queue-proxy's and the app's exposition, served from memory by a raw asyncio server)
and the load generators to CPU 0. Two load generators: wrk (C, the "fast client") and a Python aiohttp
client. Latency is measured one request at a time, throughput with 8 connections.

App bodies have 100, 10,000 or 100,000 sample lines (30% counters, 20% gauges, 35% histograms with 12
buckets, 15% untyped `_total`/`_created`; 3-5 labels per sample); queue-proxy's has ~200 series. The floor
scrapes the same two upstreams with qpext's own HTTP client and server and only concatenates the bodies.

    .venv/bin/python -m benchmarks.qpext_bench [--quick] [--only speed,memory,shutdown]
        [--go-qpext PATH]      # also measure this binary (KServe's Go qpext; it scrapes localhost:9091)
        [--qpext-path DIR]     # run the qpext package found in DIR instead of this tree's (e.g. an old one)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = (100, 10_000, 100_000)
MEMORY_SIZES_MB = (10, 50, 100)
SERVER_CPU, HARNESS_CPU = 1, 0
GO_QUEUE_PROXY_PORT = 9091
TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
LABEL_POOL = (
    ("model", "m"),
    ("method", "POST"),
    ("code", "200"),
    ("handler", "/v1/models/x:predict"),
    ("region", "eu"),
)
LABEL_VALUES = ("svc", "svc-predictor", "svc-predictor-00001")


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


def app_body_of_size(megabytes: int) -> bytes:
    """An app body of about ``megabytes`` MB: the 10,000-line body repeated with distinct family names."""
    unit = app_body(10_000)
    copies = max(1, megabytes * 1_000_000 // len(unit))
    return b"".join(re.sub(rb"app_", f"app{i}_".encode(), unit) for i in range(copies))


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


# ---------------------------------------------------------------------------------------------- processes


class _Canned(asyncio.Protocol):
    """Answers every request on the connection with one prepared response, after an optional delay.

    Large responses are written a piece at a time as the reader takes them: asyncio would otherwise copy
    a 100 MB body into its send buffer and shift it down after every send, which costs more than qpext.
    """

    PIECE = 1 << 20

    def __init__(self, response: bytes, delay: float) -> None:
        self._response = response
        self._delay = delay
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._queue: collections.deque[memoryview] = collections.deque()
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            _, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            if self._delay:
                asyncio.get_running_loop().call_later(self._delay, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        self._queue.append(memoryview(self._response))
        self._pump()

    def _pump(self) -> None:
        while self._queue and not self._paused and self._transport is not None:
            view = self._queue[0]
            self._transport.write(view[: self.PIECE])
            if len(view) > self.PIECE:
                self._queue[0] = view[self.PIECE :]
            else:
                self._queue.popleft()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()


def canned(body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def serve_upstreams(qp_port: int, app_port: int, app_spec: str, delay: float) -> None:
    """The upstream process: queue-proxy's and the app's exposition from memory."""
    kind, _, number = app_spec.partition(":")
    body = app_body(int(number)) if kind == "lines" else app_body_of_size(int(number))
    loop = asyncio.get_running_loop()
    qp = canned(queue_proxy_body())
    app = canned(body)
    await loop.create_server(lambda: _Canned(qp, 0.0), "127.0.0.1", qp_port, reuse_address=True)
    await loop.create_server(lambda: _Canned(app, delay), "127.0.0.1", app_port, reuse_address=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def serve_qpext(port: int, qp_port: int, app_port: int, max_body_bytes: int) -> None:
    import dataclasses

    from qpext.config import Config
    from qpext.supervisor import run

    options: dict[str, Any] = {
        "listen_port": port,
        "listen_host": "127.0.0.1",
        "upstream_host": "127.0.0.1",
        "queue_proxy_port": qp_port,
        "app_port": app_port,
        "serverless_label_values": LABEL_VALUES,
    }
    if max_body_bytes and "max_body_bytes" in {f.name for f in dataclasses.fields(Config)}:
        options["max_body_bytes"] = max_body_bytes
    await run(Config(**options))


async def serve_passthrough(port: int, qp_port: int, app_port: int) -> None:
    """The floor: qpext's HTTP server and client, both bodies fetched concurrently and concatenated."""
    from qpext.httpclient import Upstream
    from qpext.httpserver import HttpServer, Request, Response

    upstreams = [Upstream("127.0.0.1", qp_port), Upstream("127.0.0.1", app_port)]

    async def fetch(upstream: Upstream) -> bytes:
        chunks: list[bytes] = []
        await upstream.get("/metrics", {}, lambda status, headers: chunks.append, 1 << 30)
        return b"".join(chunks)

    async def handle(request: Request) -> Response:
        bodies = await asyncio.gather(*(fetch(u) for u in upstreams))
        return Response(200, list(bodies))

    server = HttpServer({"/metrics": handle})
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


async def python_client(url: str, connections: int, seconds: float, timeout: float) -> None:
    """The Python load generator (aiohttp): prints the latencies of every request as JSON."""
    import aiohttp

    latencies: list[float] = []
    failures = 0
    headers = {TIMEOUT_HEADER: str(timeout)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout + 5)) as session:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    print(json.dumps({"latencies": latencies, "elapsed": elapsed, "failures": failures}))


def _self(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.qpext_bench", *args]


def _pinned(cpu: int) -> Any:
    """Pin a child to ``cpu`` and raise its priority, so other jobs on the machine disturb it less."""

    def setup() -> None:
        os.sched_setaffinity(0, {cpu})
        os.setpriority(os.PRIO_PROCESS, 0, -10)

    return setup


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def start_upstreams(
    started: list[Proc], qp_port: int, app_port: int, app_spec: str, delay: float = 0
) -> Proc:
    popen = subprocess.Popen(
        _self("--serve-upstreams", str(qp_port), str(app_port), app_spec, str(delay)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        preexec_fn=_pinned(HARNESS_CPU),
    )
    proc = Proc("upstreams", popen)
    started.append(proc)
    assert popen.stdout is not None
    if popen.stdout.readline() != b"ready\n":
        raise RuntimeError("upstream process failed to start")
    return proc


def qpext_env(qpext_path: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSERVE_", "AGGREGATE_", "SERVING_"))}
    env["QPEXT_LOG_LEVEL"] = "ERROR"
    if qpext_path:
        env["QPEXT_BENCH_PATH"] = qpext_path
    return env


def start_server(
    started: list[Proc], kind: str, qp_port: int, app_port: int, args: argparse.Namespace, max_body: int = 0
) -> Proc:
    port = free_port()
    if kind == "go":
        env = {
            **qpext_env(None),
            "AGGREGATE_PROMETHEUS_METRICS_PORT": str(port),
            "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": str(app_port),
            "SERVING_SERVICE": LABEL_VALUES[0],
            "SERVING_CONFIGURATION": LABEL_VALUES[1],
            "SERVING_REVISION": LABEL_VALUES[2],
        }
        command = [args.go_qpext]
        stderr: int | None = subprocess.DEVNULL
    else:
        mode = "--serve-qpext" if kind == "qpext" else "--serve-passthrough"
        extra = [str(max_body)] if kind == "qpext" else []
        command = _self(mode, str(port), str(qp_port), str(app_port), *extra)
        env = qpext_env(args.qpext_path if kind == "qpext" else None)
        stderr = None
    popen = subprocess.Popen(command, cwd=ROOT, env=env, stderr=stderr, preexec_fn=_pinned(SERVER_CPU))
    proc = Proc(kind, popen, port)
    started.append(proc)
    wait_listening(port)
    return proc


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# -------------------------------------------------------------------------------------------------- speed


@dataclass
class Load:
    median_ms: float
    p99_ms: float
    rps: float
    cpu: dict[str, float]


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]


def run_load(client: str, url: str, connections: int, seconds: float, watched: list[Proc]) -> Load:
    """One load phase; CPU shares (% of one core) of the watched processes and the load generator."""
    if client == "wrk":
        command = [
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "30s",
            "-H", f"{TIMEOUT_HEADER}: 30", url,
        ]  # fmt: skip
    else:
        command = _self("--client", url, str(connections), str(seconds), "30")
    before = {p.name: cpu_seconds(p.pid) for p in watched}
    # The load generator is the only child that ends in the phase: its CPU is what the children's grows by.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    popen = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, preexec_fn=_pinned(HARNESS_CPU))
    out, _ = popen.communicate(timeout=seconds + 120)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {p.name: (cpu_seconds(p.pid) - before[p.name]) / elapsed * 100 for p in watched}
    client_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    cpu["client"] = client_cpu / elapsed * 100
    text = out.decode()
    if client == "wrk":
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
        p50 = _ms(re.search(r"\s50%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
        p99 = _ms(re.search(r"\s99%\s+(\S+)", text).group(1))  # type: ignore[union-attr]
        if "Non-2xx" in text or "Socket errors" in text:
            raise RuntimeError(f"wrk saw errors:\n{text}")
        return Load(p50, p99, rps, cpu)
    result = json.loads(text)
    if result["failures"]:
        raise RuntimeError(f"{result['failures']} requests failed")
    latencies = sorted(result["latencies"])
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Load(statistics.median(latencies) * 1e3, p99 * 1e3, len(latencies) / result["elapsed"], cpu)


def _median_load(loads: list[Load]) -> Load:
    cpu = {name: statistics.median(load.cpu[name] for load in loads) for name in loads[0].cpu}
    return Load(
        statistics.median(load.median_ms for load in loads),
        statistics.median(load.p99_ms for load in loads),
        statistics.median(load.rps for load in loads),
        cpu,
    )


def speed(args: argparse.Namespace) -> None:
    """Each (server, client, connections) phase runs in several short rounds, the servers taking turns, so
    that load from elsewhere on the machine falls on all of them alike; the tables show the medians."""
    kinds = ["qpext", "pass-through"] + (["go"] if args.go_qpext else [])
    seconds, rounds = (1.0, 1) if args.quick else (2.0, 3)
    qp_port = GO_QUEUE_PROXY_PORT if args.go_qpext else free_port()
    results: dict[tuple[str, int, str, int], list[Load]] = {}
    idle: dict[str, float] = {}
    peak: dict[tuple[str, int, int], float] = {}
    for size in SIZES:
        # Go needs about a second per 100,000-line scrape: longer phases give it samples.
        phase = seconds * (4 if size >= 100_000 else 1)
        with processes() as started:
            app_port = free_port()
            upstreams = start_upstreams(started, qp_port, app_port, f"lines:{size}")
            servers = [start_server(started, kind, qp_port, app_port, args) for kind in kinds]
            for server in servers:
                idle.setdefault(server.name, rss_mib(server.pid))
                run_load("wrk", f"http://127.0.0.1:{server.port}/metrics", 1, 1, [])
            for turn in range(rounds):
                for server in servers[turn % len(servers) :] + servers[: turn % len(servers)]:
                    url = f"http://127.0.0.1:{server.port}/metrics"
                    for client in ("wrk", "python"):
                        for connections in (1, 8):
                            reset_peak_rss(server.pid)
                            load = run_load(client, url, connections, phase, [server, upstreams])
                            results.setdefault((server.name, size, client, connections), []).append(load)
                            key = (server.name, size, connections)
                            peak[key] = max(peak.get(key, 0.0), rss_mib(server.pid, "VmHWM"))
    print(f"\n### Speed ({machine()})\n")
    print(
        f"{rounds} rounds of {seconds:.0f} s phases (4x longer at 100,000 lines); medians over the rounds.\n"
    )
    print("Idle RSS: " + ", ".join(f"{name} {rss:.1f} MiB" for name, rss in idle.items()) + "\n")
    for client, title in (("wrk", "wrk (C)"), ("python", "Python aiohttp client")):
        print(f"Load generator: {title}. CPU: % of one core during the 8-connection phases.\n")
        print(
            "| server | app lines | median (1 conn) | p99 (1 conn) | req/s (8 conns) | p99 (8 conns) "
            "| server CPU per request | CPU server / upstreams / client |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for size in SIZES:
            for name in kinds:
                one = _median_load(results[(name, size, client, 1)])
                eight = _median_load(results[(name, size, client, 8)])
                shares = f"{eight.cpu[name]:.0f} / {eight.cpu['upstreams']:.0f} / {eight.cpu['client']:.0f} %"
                print(
                    f"| {name} | {size:,} | {one.median_ms:.2f} ms | {one.p99_ms:.2f} ms | {eight.rps:,.0f} "
                    f"| {eight.p99_ms:.2f} ms | {eight.cpu[name] * 10 / max(eight.rps, 1e-9):.2f} ms "
                    f"| {shares} |"
                )
        print()
    print("| server | app lines | peak RSS 1 conn | peak RSS 8 conns |\n|---|---|---|---|")
    for size in SIZES:
        for name in kinds:
            print(
                f"| {name} | {size:,} | {peak[(name, size, 1)]:.0f} MiB | {peak[(name, size, 8)]:.0f} MiB |"
            )


# ------------------------------------------------------------------------------------------------- memory


async def _scrapes(url: str, count: int, timeout: float) -> list[tuple[float, str]]:
    """``count`` concurrent scrapes; for each, the seconds to the answer and how it ended."""
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[float, str]:
            start = time.perf_counter()
            try:
                async with session.get(
                    url, headers={TIMEOUT_HEADER: str(timeout)}, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as resp:
                    body = await resp.read()
            except TimeoutError:
                return time.perf_counter() - start, "no answer in time"
            except aiohttp.ClientError as err:
                return time.perf_counter() - start, f"error {type(err).__name__}"
            # qpext's own series are at the end.
            up = b'qpext_scrape_up{target="app"} 1' in body[-4096:]
            return time.perf_counter() - start, "app up" if up else "app down"

        return list(await asyncio.gather(*(one() for _ in range(count))))


def memory(args: argparse.Namespace) -> None:
    limits = [0] if args.qpext_path else [0, 256 * 1024 * 1024]
    rows = []
    for megabytes in MEMORY_SIZES_MB:
        with processes() as started:
            qp_port, app_port = free_port(), free_port()
            start_upstreams(started, qp_port, app_port, f"megabytes:{megabytes}")
            for limit in limits:
                server = start_server(started, "qpext", qp_port, app_port, args, limit)
                url = f"http://127.0.0.1:{server.port}/metrics"
                base = rss_mib(server.pid)
                for count, timeout in ((1, 60.0), (5, 5.0)):
                    reset_peak_rss(server.pid)
                    outcomes = asyncio.run(_scrapes(url, count, timeout))
                    growth = rss_mib(server.pid, "VmHWM") - base
                    slowest = max(seconds for seconds, _ in outcomes)
                    ends = ", ".join(f"{n}x {e}" for e, n in _counted(outcome for _, outcome in outcomes))
                    label = "default" if not limit else f"{limit >> 20} MiB"
                    rows.append((megabytes, label, count, timeout, growth, slowest, ends))
                server.stop()
    print(f"\n### Memory with large app bodies ({machine()})\n")
    print(
        "| app body | body limit | scrapes at once | scrape timeout | peak RSS growth | slowest answer "
        "| outcome |"
    )
    print("|---|---|---|---|---|---|---|")
    for megabytes, label, count, timeout, growth, slowest, ends in rows:
        print(
            f"| {megabytes} MB | {label} | {count} | {timeout:.0f} s | +{growth:.0f} MiB "
            f"| {slowest:.2f} s | {ends} |"
        )


def _counted(items: Iterator[str] | Any) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items())


# ----------------------------------------------------------------------------------------------- shutdown

FAKE_QUEUE_PROXY = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _standin_env() -> dict[str, str]:
    """What the Knative double gives queue-proxy, on free ports (the stand-in's own test hooks)."""
    return {
        "QUEUE_SERVING_PORT": str(free_port()),
        "QUEUE_SERVING_TLS_PORT": str(free_port()),
        "USER_PORT": str(free_port()),
        "CONTAINER_CONCURRENCY": "0",
        "REVISION_TIMEOUT_SECONDS": "300",
        "SERVING_LOGGING_CONFIG": "",
        "SERVING_LOGGING_LEVEL": "",
        "SERVING_NAMESPACE": "default",
        "SERVING_CONFIGURATION": "c",
        "SERVING_REVISION": "r",
        "SERVING_POD": "p",
        "SERVING_POD_IP": "127.0.0.1",
        "QUEUE_PROXY_STANDIN_ADMIN_PORT": str(free_port()),
        "QUEUE_PROXY_STANDIN_METRICS_PORT": str(free_port()),
        "QUEUE_PROXY_STANDIN_USER_METRICS_PORT": str(free_port()),
    }


def shutdown(args: argparse.Namespace) -> None:
    """SIGTERM to `python -m qpext <queue-proxy>`: idle, and with a scrape in flight whose app answers after
    3 s. The queue-proxy is a script that exits at once (so the time is qpext's own) or the Knative double's
    stand-in, which drains until no request has come for a second, as the pods in e2e run it."""
    cases = (
        ("idle, queue-proxy exits at once", "fake", "idle"),
        ("idle with a kept-alive scrape connection, queue-proxy exits at once", "fake", "kept"),
        (
            "idle with a kept-alive scrape connection, queue-proxy stand-in (drains for 1 s)",
            "standin",
            "kept",
        ),
        ("scrape in flight (app answers after 3 s), queue-proxy exits at once", "fake", "in flight"),
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp, processes() as started:
        fake = Path(tmp) / "queue.py"
        fake.write_text(FAKE_QUEUE_PROXY)
        standin = ROOT / "e2e" / "knative_double" / "queue_proxy.py"
        qp_port, app_port = free_port(), free_port()
        start_upstreams(started, qp_port, app_port, "lines:100", delay=3.0)
        for case, child, state in cases:
            times = []
            for _ in range(1 if args.quick else 3):
                port = free_port()
                env = {
                    **qpext_env(None),
                    **(_standin_env() if child == "standin" else {}),
                    "QPEXT_LOG_LEVEL": "WARNING",
                    "AGGREGATE_PROMETHEUS_METRICS_PORT": str(port),
                    "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": str(app_port),
                }
                command = [
                    sys.executable,
                    "-m",
                    "qpext",
                    sys.executable,
                    str(fake if child == "fake" else standin),
                ]
                popen = subprocess.Popen(
                    command,
                    cwd=args.qpext_path or ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                wait_listening(port)
                time.sleep(0.5)
                scrape = kept = None
                if state == "kept":
                    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    kept.request("GET", "/metrics", headers={TIMEOUT_HEADER: "10"})
                    kept.getresponse().read()
                if state == "in flight":
                    scrape = subprocess.Popen(
                        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20", "-H",
                         f"{TIMEOUT_HEADER}: 10", f"http://127.0.0.1:{port}/metrics"],
                        stdout=subprocess.PIPE,
                    )  # fmt: skip
                    time.sleep(0.3)
                start = time.perf_counter()
                popen.send_signal(signal.SIGTERM)
                popen.wait(30)
                exited = time.perf_counter() - start
                if kept is not None:
                    kept.close()
                answer = ""
                if scrape is not None:
                    out, _ = scrape.communicate(timeout=30)
                    answer = out.decode() if out.decode() != "000" else "none"
                times.append((exited, answer))
            rows.append((case, times))
    print(f"\n### Shutdown ({machine()})\n")
    print("| case | SIGTERM to exit | in-flight scrape's answer |\n|---|---|---|")
    for case, times in rows:
        exits = " / ".join(f"{t:.2f} s" for t, _ in times)
        answers = " / ".join(a for _, a in times) if any(a for _, a in times) else "-"
        print(f"| {case} | {exits} | {answers} |")


def machine() -> str:
    load = os.getloadavg()
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, for a smoke run")
    parser.add_argument("--only", default="speed,memory,shutdown", help="comma-separated parts to run")
    parser.add_argument("--go-qpext", help="path of a KServe Go qpext binary to measure too")
    parser.add_argument("--qpext-path", help="directory holding the qpext package to measure")
    parser.add_argument("--serve-upstreams", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--serve-qpext", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-passthrough", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstreams:
        qp, app, spec, delay = args.serve_upstreams
        asyncio.run(serve_upstreams(int(qp), int(app), spec, float(delay)))
    elif args.serve_qpext:
        if os.environ.get("QPEXT_BENCH_PATH"):
            sys.path.insert(0, os.environ["QPEXT_BENCH_PATH"])
        asyncio.run(serve_qpext(*args.serve_qpext))
    elif args.serve_passthrough:
        asyncio.run(serve_passthrough(*args.serve_passthrough))
    elif args.client:
        url, connections, seconds, timeout = args.client
        asyncio.run(python_client(url, int(connections), float(seconds), float(timeout)))
    else:
        for tool in ("wrk", "curl"):
            if shutil.which(tool) is None:
                sys.exit(f"qpext_bench: {tool} not found (apt-get install {tool})")
        parts = args.only.split(",")
        print(f"qpext benchmark: {args.qpext_path or 'this tree'}; {machine()}")
        if "speed" in parts:
            speed(args)
        if "memory" in parts:
            memory(args)
        if "shutdown" in parts:
            shutdown(args)


if __name__ == "__main__":
    main()
