"""Throughput of ``WorkQueue``: distinct keys added, then taken and finished by a pool of worker tasks.

Why two kinds of worker: a worker that calls ``done`` right after ``get`` measures the queue alone (a
``get`` that finds a ready key never suspends, so one worker may take many keys in a row); a worker that
awaits ``asyncio.sleep(0)`` in between yields to the loop like a real reconciler awaiting the API, which
adds event-loop scheduling cost and interleaves the workers. Each case runs with and without metrics.

Run: ``.venv/bin/python -m benchmarks.workqueue_throughput [--keys N] [--workers N] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from manager.metrics import Metrics
from manager.workqueue import QueueShutDown, WorkQueue


@dataclass(frozen=True)
class Case:
    with_metrics: bool
    yield_in_work: bool


@dataclass(frozen=True)
class Row:
    case: Case
    keys: int
    workers: int
    seconds: float


async def _run_once(case: Case, keys: int, workers: int) -> float:
    metrics = Metrics(CollectorRegistry()).workqueue("bench") if case.with_metrics else None
    queue: WorkQueue[int] = WorkQueue(metrics=metrics)
    remaining = keys
    finished = asyncio.Event()

    async def worker() -> None:
        nonlocal remaining
        while True:
            try:
                item = await queue.get()
            except QueueShutDown:
                return
            if case.yield_in_work:
                await asyncio.sleep(0)
            queue.done(item)
            remaining -= 1
            if remaining == 0:
                finished.set()

    start = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    for key in range(keys):
        queue.add(key)
    await finished.wait()
    elapsed = time.perf_counter() - start
    await queue.shutdown(drain=True, timeout=5.0)
    await asyncio.gather(*tasks)
    return elapsed


async def _bench(keys: int, workers: int, repeat: int) -> list[Row]:
    rows = []
    for yield_in_work in (False, True):
        for with_metrics in (False, True):
            case = Case(with_metrics=with_metrics, yield_in_work=yield_in_work)
            best = min([await _run_once(case, keys, workers) for _ in range(repeat)])
            rows.append(Row(case, keys, workers, best))
    return rows


def _table(rows: list[Row]) -> str:
    lines = [
        "| keys | workers | work between get and done | metrics | seconds | keys/s |",
        "|---:|---:|---|---|---:|---:|",
    ]
    for row in rows:
        work = "await asyncio.sleep(0)" if row.case.yield_in_work else "none"
        metrics = "yes" if row.case.with_metrics else "no"
        lines.append(
            f"| {row.keys:,} | {row.workers} | {work} | {metrics} | {row.seconds:.3f} "
            f"| {row.keys / row.seconds:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys to add (default 100000)")
    parser.add_argument("--workers", type=int, default=8, help="worker tasks (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown (default 3)")
    args = parser.parse_args(argv)
    for flag in ("keys", "workers", "repeat"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")

    rows = asyncio.run(_bench(args.keys, args.workers, args.repeat))
    print(_table(rows))
    print()
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, processor: {platform.processor() or 'unknown'}; "
        f"best of {args.repeat} runs per case"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
