"""Local cluster benchmark: what a node costs next to the API-only cluster, and where the time goes.

Measures, in one run on this machine: start and stop of the API-only cluster (the peer) and of a cluster
with a node; the offline image lookup with a warm cache; importing the e2e images into a fresh node one
after another and all at once; and the whole offline deployment (`make run`, `--target node`) until the
manager Deployment serves its webhooks. Prints a markdown table with each figure's ratio to the API-only
start.

    .venv/bin/python -m benchmarks.local_node
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from e2e.images import build_images
from e2e.localcluster.cluster import LocalCluster
from e2e.localcluster.deployment import IMAGES, LocalDeployment

Row = tuple[str, float, str]


def timed(action: Callable[[], object]) -> float:
    """Seconds `action()` takes."""
    started = time.monotonic()
    action()
    return time.monotonic() - started


def import_all(cluster: LocalCluster, archives: Sequence[Path], parallel: bool) -> None:
    if not parallel:
        cluster.load_images(archives)
        return
    with ThreadPoolExecutor(max_workers=len(archives)) as pool:
        list(pool.map(lambda archive: cluster.load_images([archive]), archives))


def bench(workdir: Path) -> list[Row]:
    rows: list[Row] = []
    api = LocalCluster(workdir / "api", extra_users=())
    rows.append(("API-only cluster: start", timed(lambda: api.start(timeout=120)), "the peer"))
    rows.append(("API-only cluster: stop", timed(api.stop), ""))

    lookup = timed(lambda: build_images(IMAGES))
    images = build_images(IMAGES)
    archives = [image.archive for image in images.values()]
    size = sum(image.size for image in images.values()) / 2**30
    rows.append(("image lookup, warm cache", lookup, f"{len(images)} images, {size:.1f} GiB of archives"))

    for parallel in (False, True):
        node = LocalCluster(workdir / f"node-{parallel}", node=True, extra_users=())
        start = timed(lambda: node.start(timeout=180))  # noqa: B023 (called at once)
        how = "all at once" if parallel else "one after another"
        load = timed(lambda: import_all(node, archives, parallel))  # noqa: B023 (called at once)
        stop = timed(node.stop)
        if not parallel:
            rows.append(("node cluster: start (to Node Ready, DNS answering)", start, "pause image imported"))
            rows.append(("node cluster: stop (pods, namespaces, cgroups)", stop, ""))
        rows.append((f"import the e2e images into a fresh node, {how}", load, ""))

    deployment = LocalDeployment(workdir / "deployment")
    try:
        rows.append(
            ("offline deployment: start to webhooks served", timed(deployment.start), "images cached")
        )
    finally:
        deployment.stop()
    return rows


def table(rows: Sequence[Row]) -> str:
    peer = rows[0][1]
    lines = ["| what | seconds | vs API-only start | note |", "|---|---|---|---|"]
    lines += [f"| {what} | {seconds:.1f} | {seconds / peer:.1f}x | {note} |" for what, seconds, note in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kserve-bench-node-") as tmp:
        rows = bench(Path(tmp))
    print(table(rows))
    print()
    load = os.getloadavg()
    print(
        f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
