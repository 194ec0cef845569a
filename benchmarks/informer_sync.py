"""Informer benchmark: time to `has_synced` and resident memory for N ConfigMaps.

Starts a local control plane, creates the ConfigMaps (`--keys` data entries of `--size` bytes each, plus a
few labels), then measures in a fresh child process (so the RSS is the informer's, not the loader's):
process RSS before the informer starts, time from start to `has_synced`, RSS after sync, the peak RSS
(VmHWM) and the time to see one more change through the watch. Prints a markdown table.

`--source DIR` (repeatable) runs the child with the runtime (`manager/`) of another tree too, e.g.
`git archive <commit> | tar -x -C DIR`, against the same objects, so trees are compared in one run.

    .venv/bin/python -m benchmarks.informer_sync [--objects 5000] [--size 1024] [--keys 1] [--source DIR]
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


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def populate(kubeconfig: Path, objects: int, size: int, keys: int) -> None:
    client = await load_client(str(kubeconfig), connection_pool=32)
    try:
        await client.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            labels = {f"bench.kserve-py.dev/label-{n}": f"value-{i}-{n}" for n in range(4)}
            data = {f"key-{k}": f"{i:05d}{k:05d}".ljust(size, "x") for k in range(keys)}
            meta = {"name": f"cm-{i:05d}", "namespace": NAMESPACE, "labels": labels}
            async with sem:
                await client.create(CONFIGMAPS, {"metadata": meta, "data": data})

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
        peak = rss_mib("VmHWM")
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
            "rss_peak_mib": peak,
            "watch_latency_ms": watch_latency * 1000,
        }
    finally:
        await client.close()


def describe(source: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("log", "-1", "--format=%h")
    if not head:
        return f"{source} (not a git tree)"
    return f"{source} ({head}{' + changes' if git('status', '--porcelain', '--untracked-files=no') else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024, help="bytes per data entry")
    parser.add_argument("--keys", type=int, default=1, help="data entries per ConfigMap")
    parser.add_argument("--source", type=Path, action="append", default=[], help="another tree to measure")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child))))
        return
    here = Path(__file__).resolve().parent.parent
    sources = [here, *(s.resolve() for s in args.source)]
    results: list[tuple[Path, dict[str, float]]] = []
    with LocalCluster(controller_manager=False) as cluster:
        t0 = time.perf_counter()
        asyncio.run(populate(cluster.kubeconfig_path, args.objects, args.size, args.keys))
        created = time.perf_counter() - t0
        for source in sources:
            runs = []
            for _ in range(3):
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(source), str(here)]))
                out = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", str(cluster.kubeconfig_path)],
                    capture_output=True,
                    text=True,
                    cwd=source,
                    env=env,
                )
                if out.returncode != 0:
                    sys.exit(f"benchmark child failed:\n{out.stderr}")
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results.append((source, min(runs, key=lambda r: r["rss_peak_mib"])))
    print(
        f"python {platform.python_version()}, {platform.machine()}, load average {os.getloadavg()[0]:.1f}, "
        f"created {args.objects} ConfigMaps ({args.keys} x {args.size} B of data) in {created:.1f}s"
    )
    print()
    print(
        "| runtime | objects | time to has_synced | RSS before | RSS after sync | peak RSS (VmHWM)"
        " | RSS delta | watch latency |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for source, best in results:
        print(
            f"| {describe(source)} | {int(best['objects']):,} | {best['sync_seconds']:.2f} s"
            f" | {best['rss_before_mib']:.0f} MiB | {best['rss_after_mib']:.0f} MiB"
            f" | {best['rss_peak_mib']:.0f} MiB | {best['rss_after_mib'] - best['rss_before_mib']:.0f} MiB"
            f" | {best['watch_latency_ms']:.1f} ms |"
        )
    print()
    print("Each row: the run of 3 with the lowest peak RSS.")


if __name__ == "__main__":
    main()
