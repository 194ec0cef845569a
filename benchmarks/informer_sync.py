"""Informer benchmark: time to `has_synced` and resident memory for N ConfigMaps of 1 KiB each.

Starts a local control plane, creates the ConfigMaps, then measures in a fresh child process (so the RSS is
the informer's, not the loader's): process RSS before the informer starts, time from start to `has_synced`,
RSS after sync, and the time to see one more change through the watch. Prints a markdown table.

    .venv/bin/python -m benchmarks.informer_sync [--objects 5000] [--size 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, NAMESPACES, load_client
from manager.informer import Informer

NAMESPACE = "bench"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def populate(kubeconfig: Path, objects: int, size: int) -> None:
    client = await load_client(str(kubeconfig), connection_pool=32)
    try:
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        payload = "x" * size
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                await client.create(
                    CONFIGMAPS,
                    {
                        "metadata": {"name": f"cm-{i:05d}", "namespace": NAMESPACE},
                        "data": {"payload": payload},
                    },
                )

        await asyncio.gather(*(one(i) for i in range(objects)))
    finally:
        await client.close()


async def measure(kubeconfig: Path) -> dict[str, float]:
    client = await load_client(str(kubeconfig))
    try:
        gc.collect()
        before = rss_mib()
        informer = Informer(client, CONFIGMAPS, NAMESPACE)
        started = time.perf_counter()
        informer.start()
        await informer.wait_for_sync()
        synced = time.perf_counter() - started
        gc.collect()
        after = rss_mib()
        objects = len(informer.store)
        t0 = time.perf_counter()
        probe = f"probe-{os.getpid()}"
        await client.create(CONFIGMAPS, {"metadata": {"name": probe, "namespace": NAMESPACE}})
        while informer.store.get(NAMESPACE, probe) is None:
            await asyncio.sleep(0.001)
        watch_latency = time.perf_counter() - t0
        await client.delete(CONFIGMAPS, probe, NAMESPACE)
        await informer.stop()
        return {
            "objects": objects,
            "sync_seconds": synced,
            "rss_before_mib": before,
            "rss_after_mib": after,
            "watch_latency_ms": watch_latency * 1000,
        }
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child))))
        return
    with LocalCluster(controller_manager=False) as cluster:
        t0 = time.perf_counter()
        asyncio.run(populate(cluster.kubeconfig_path, args.objects, args.size))
        created = time.perf_counter() - t0
        runs = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.informer_sync", "--child", str(cluster.kubeconfig_path)],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(f"benchmark child failed:\n{out.stderr}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["sync_seconds"])
    print(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"created {args.objects} objects in {created:.1f}s"
    )
    print()
    print(
        "| objects | size | time to has_synced (best of 3) | RSS before | RSS after sync | RSS delta"
        " | watch latency |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {int(best['objects']):,} | {args.size} B | {best['sync_seconds']:.2f} s"
        f" | {best['rss_before_mib']:.0f} MiB"
        f" | {best['rss_after_mib']:.0f} MiB | {best['rss_after_mib'] - best['rss_before_mib']:.0f} MiB"
        f" | {best['watch_latency_ms']:.1f} ms |"
    )


if __name__ == "__main__":
    main()
