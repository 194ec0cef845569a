"""Cluster DNS for the local node: a hosts file for dnsmasq, kept in step with Services, Endpoints and Pods.

Pods resolve `<service>.<namespace>.svc.cluster.local` through the kubelet's `clusterDNS`. Offline there is no
CoreDNS image, so the node runs Debian's dnsmasq, which re-reads the files of its `--hostsdir` whenever they
change. This feeder watches the API server and rewrites one hosts file (atomically, only when its content
changes) with the records of Kubernetes' DNS specification that a hosts file can express:

* `<svc>.<ns>.svc.<domain>` -> the ClusterIP of every Service that has one;
* headless Services -> the ready addresses of their Endpoints, and `<hostname>.<svc>.<ns>.svc.<domain>` for
  addresses that carry a hostname;
* `<a-b-c-d>.<ns>.pod.<domain>` for every Pod IP.

Not expressible in a hosts file, hence not served: SRV records, and CNAMEs for ExternalName Services (an
ExternalName whose target is a cluster Service name resolves to that Service's address instead, which is
what a client ends up connecting to either way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from manager.client import PODS, SERVICES, Client, Object, Resource, load_client
from manager.informer import Informer

log = logging.getLogger("kserve-localcluster-dns")

ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
DEBOUNCE_S = 0.05
"""Changes arriving within this window are written as one file."""


def _cluster_ips(service: Mapping[str, Any]) -> list[str]:
    spec = service.get("spec") or {}
    ips = [str(ip) for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip and ip != "None"]
    return ips


def _ready_addresses(endpoints: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(ip, hostname) of every ready address of an Endpoints object."""
    out: list[tuple[str, str]] = []
    for subset in (endpoints or {}).get("subsets") or []:
        for address in subset.get("addresses") or []:
            if address.get("ip"):
                out.append((str(address["ip"]), str(address.get("hostname") or "")))
    return out


def records(
    services: Iterable[Object],
    endpoints: Mapping[tuple[str, str], Object],
    pods: Iterable[Object],
    domain: str,
) -> list[tuple[str, str]]:
    """(address, name) pairs for the hosts file, sorted so equal clusters give byte-equal files."""
    out: set[tuple[str, str]] = set()
    by_name: dict[str, list[str]] = {}
    external: list[tuple[str, str]] = []
    for service in services:
        meta = service.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        if not name or not namespace:
            continue
        fqdn = f"{name}.{namespace}.svc.{domain}"
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            external.append((fqdn, str(spec.get("externalName") or "").rstrip(".")))
            continue
        ips = _cluster_ips(service)
        if not ips:  # headless: the endpoints themselves
            addresses = _ready_addresses(endpoints.get((namespace, name)))
            ips = [ip for ip, _ in addresses]
            out.update((ip, f"{host}.{fqdn}") for ip, host in addresses if host)
        out.update((ip, fqdn) for ip in ips)
        by_name[fqdn] = ips
    for fqdn, target in external:
        out.update((ip, fqdn) for ip in by_name.get(target, []))
    for pod in pods:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        for entry in (pod.get("status") or {}).get("podIPs") or []:
            ip = str(entry.get("ip") or "")
            if ip and "." in ip and namespace:
                out.add((ip, f"{ip.replace('.', '-')}.{namespace}.pod.{domain}"))
    return sorted(out)


def render(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"{ip} {name}\n" for ip, name in pairs)


def write_if_changed(path: Path, text: str) -> bool:
    """Replace `path` atomically when its content differs; True if it was written."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hosts-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


class _Changed:
    """Informer handler that only signals 'something changed'."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def on_add(self, obj: Object) -> None:
        self._event.set()

    def on_update(self, old: Object, new: Object) -> None:
        self._event.set()

    def on_delete(self, obj: Object) -> None:
        self._event.set()


async def feed(client: Client, hosts_file: Path, domain: str) -> None:
    """Keep `hosts_file` in step with the cluster until cancelled."""
    changed = asyncio.Event()
    informers = {r: Informer(client, r) for r in (SERVICES, ENDPOINTS, PODS)}
    for informer in informers.values():
        informer.add_handler(_Changed(changed))
        informer.start()
    try:
        await asyncio.gather(*(i.wait_for_sync() for i in informers.values()))
        while True:
            endpoints = {
                (str(e["metadata"].get("namespace")), str(e["metadata"].get("name"))): e
                for e in informers[ENDPOINTS].store
            }
            pairs = records(informers[SERVICES].store, endpoints, informers[PODS].store, domain)
            if write_if_changed(hosts_file, render(pairs)):
                log.info("wrote %d records to %s", len(pairs), hosts_file)
            await changed.wait()
            await asyncio.sleep(DEBOUNCE_S)
            changed.clear()
    finally:
        await asyncio.gather(*(i.stop() for i in informers.values()))


async def _main(args: argparse.Namespace) -> int:
    client = await load_client(args.kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(feed(client, Path(args.hosts_file), args.domain))
    try:
        await asyncio.wait({task, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # a feeder that ended on its own failed: raise its error
            return 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.localcluster.dns", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--hosts-file", required=True, help="the file dnsmasq reads (inside its --hostsdir)")
    parser.add_argument("--domain", default="cluster.local")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
