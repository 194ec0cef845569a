"""What a local node could leave behind on the machine, captured so a test can compare before and after.

"Stopping the cluster leaves nothing" is checked against everything a kubelet, containerd, CNI and
kube-proxy are known to create: processes, mounts, network links, network namespaces, iptables rules,
cgroups, host-global sysctls and the well-known host directories of a node.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from e2e.localcluster.node import SHADOWED_SYSCTLS, cgroup_mounts

NODE_PATHS = (
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/cni/net.d",
    "/opt/cni",
)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def net_namespaces() -> frozenset[str]:
    """The network namespaces some process is in."""
    found: set[str] = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found.add(os.readlink(proc / "ns" / "net"))
            except OSError:
                continue
    return frozenset(found)


def processes_mentioning(text: str) -> list[str]:
    """`pid: cmdline` of every process whose command line or cgroup mentions `text`."""
    found: list[str] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        cmdline = _read(proc / "cmdline").replace("\0", " ")
        if text in cmdline or text in _read(proc / "cgroup"):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def _iptables() -> str:
    lines: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        done = subprocess.run([tool], capture_output=True, text=True, timeout=30, check=False)
        lines += [line for line in done.stdout.splitlines() if not line.startswith(("#", ":"))]
        lines += [line.split()[0] for line in done.stdout.splitlines() if line.startswith(":")]
    return "\n".join(lines)


@dataclass(frozen=True)
class HostState:
    mounts: frozenset[str]
    links: frozenset[str]
    iptables: str
    cgroups: frozenset[str]
    sysctls: tuple[tuple[str, str], ...]
    paths: tuple[tuple[str, bool], ...]

    @classmethod
    def capture(cls) -> HostState:
        mounts = frozenset(
            " ".join(line.split()[3:5]) for line in _read(Path("/proc/self/mountinfo")).splitlines()
        )
        done = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30, check=True)
        links = frozenset(line.split(":")[1].strip().split("@")[0] for line in done.stdout.splitlines())
        cgroups = frozenset(
            f"{mount}/{entry.name}"
            for mount, _, _ in cgroup_mounts()
            for entry in mount.iterdir()
            if entry.is_dir()
        )
        sysctls = tuple((key, _read(Path("/proc/sys") / key).strip()) for key in sorted(SHADOWED_SYSCTLS))
        paths = tuple((p, Path(p).exists()) for p in NODE_PATHS)
        return cls(mounts, links, _iptables(), cgroups, sysctls, paths)

    def differences(self, later: HostState) -> list[str]:
        """One line per thing that differs between this capture and a later one."""
        out: list[str] = []
        for name in ("mounts", "links", "cgroups"):
            before, after = getattr(self, name), getattr(later, name)
            out += [f"{name}: new {item}" for item in sorted(after - before)]
            out += [f"{name}: gone {item}" for item in sorted(before - after)]
        if self.iptables != later.iptables:
            out.append(f"iptables changed:\n{later.iptables}")
        sysctls = zip(self.sysctls, later.sysctls, strict=True)
        out += [f"sysctl {a[0]}: {a[1]} -> {b[1]}" for a, b in sysctls if a != b]
        paths = zip(self.paths, later.paths, strict=True)
        out += [f"path {a[0]}: exists {a[1]} -> {b[1]}" for a, b in paths if a != b]
        return out
