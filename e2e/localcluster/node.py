"""The local cluster's node: its own network and mount namespace, a cgroup subtree, and the node's config.

A real node (kubelet, containerd, runc, CNI, kube-proxy, cluster DNS) changes a machine: network links,
iptables rules, mounts, cgroups and even kernel tunables. Like a kind node, which is a container, ours lives
in namespaces of its own so that it can be created next to another one and removed without a trace:

* **Network namespace.** A holder process (`unshare --net --mount`) owns a fresh network namespace, joined by
  every node process (`nsenter`). A veth pair links it to the host: the node's address is on the inside end
  (`172.31.<i>.2/30`; it must not be loopback) and the host routes the node's `10.<100+i>.0.0/16` (services
  in the lower half, pods in the upper) through it,
  so tests on the host reach ClusterIPs and pod IPs. kube-proxy's and the CNI bridge's iptables rules, the
  bridge and the pods' veths all live in that namespace and go with it.
* **Mount namespace.** The same holder has a private mount namespace (slave of the host's): fresh tmpfs on
  `/run` and `/var/lib`, and `/var/lib/kubelet` and `/var/log` bind-mounted from the work directory (so
  container logs survive as artifacts). Everything the kubelet and containerd mount (volumes, rootfs
  overlays, network-namespace files) is invisible to the host and vanishes with the namespace. Files over
  the host-global sysctls the kubelet insists on setting (`vm.overcommit_memory`, `kernel.panic`, ...)
  hold the values it wants, so it never changes the host's kernel.
* **Cgroups.** A subtree `kserve-localcluster-<owner pid>-<i>` in every cgroup hierarchy: the kubelet's
  `cgroupRoot` (pods go below it) and, in the pids hierarchy, every node process (containerd's shims
  included). Stopping the node kills whatever is left there and removes the subtree; a subtree whose owner
  process is gone (a SIGKILLed test run) is swept at the next start.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.localcluster.binaries import NodeBinaries

NODE_NAME = "kserve-node"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_PREFIX = "kserve-localcluster-"
MAX_NODES = 64
APISERVER_PORT = 6443
ETCD_PORT = 2379
KCM_PORT = 10257
SCHEDULER_PORT = 10259
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
MAX_PODS = 250
"""The kubelet's default is 110; the e2e suite's steady-state test alone runs 100 light model pods beside
the system pods and the pods of namespaces still being deleted."""
CNI_NETWORK = "kserve-node"
BRIDGE = "cni0"
COMMAND_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 15.0
CGROUP_RELEASE_TIMEOUT_S = 10.0

SHADOWED_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
"""The host-global tunables the kubelet sets at start (to these values), shadowed inside the node."""

NAMESPACE_SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
"""Per-network-namespace settings a node needs: routing between pods and services, and iptables on bridged
traffic (a pod calling a Service whose endpoint is on the same bridge)."""


class NodeError(RuntimeError):
    """The node's namespaces, network or cgroups could not be set up."""


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses of node number `index` (several nodes can coexist on one machine)."""

    index: int

    @property
    def host_link(self) -> str:
        return f"ksn{self.index}h"

    @property
    def node_link(self) -> str:
        return f"ksn{self.index}n"

    @property
    def host_ip(self) -> str:
        return f"172.31.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"172.31.{self.index}.2"

    @property
    def transit(self) -> str:
        return f"172.31.{self.index}.0/30"

    @property
    def service_cidr(self) -> str:
        return f"10.{100 + self.index}.0.0/17"

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service: the first address of the service range."""
        return f"10.{100 + self.index}.0.1"

    @property
    def dns_ip(self) -> str:
        """The `kube-dns` Service's ClusterIP, the kubelet's `clusterDNS`."""
        return f"10.{100 + self.index}.0.10"

    @property
    def pod_cidr(self) -> str:
        return f"10.{100 + self.index}.128.0/17"

    @property
    def routed(self) -> str:
        """Service and pod ranges together: what the host routes through the node."""
        return f"10.{100 + self.index}.0.0/16"


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
        raise NodeError(f"{' '.join(argv)}: {detail}")
    return done


def _host_networks(ip: str) -> list[ipaddress.IPv4Network]:
    """Every IPv4 route and address the host has, to keep a node's ranges clear of them."""
    nets: list[ipaddress.IPv4Network] = []
    for what in ("route", "addr"):
        out = _run([ip, "-j", "-4", what, "show"], check=False).stdout or "[]"
        for entry in json.loads(out):
            if what == "route" and entry.get("dst") not in (None, "default"):
                nets.append(ipaddress.IPv4Network(entry["dst"], strict=False))
            for info in entry.get("addr_info") or []:
                nets.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return nets


def cgroup_mounts() -> list[tuple[Path, str, frozenset[str]]]:
    """(mount point, fstype, super options) of every cgroup hierarchy, from /proc/self/mountinfo."""
    mounts: list[tuple[Path, str, frozenset[str]]] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        fstype, _, options = [*fields[1].split(), "", ""][:3]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((Path(fields[0].split()[4]), fstype, frozenset(options.split(","))))
    return mounts


def _pids_hierarchy() -> Path:
    for mount, fstype, options in cgroup_mounts():
        if fstype == "cgroup" and "pids" in options:
            return mount
    raise NodeError("no cgroup v1 pids hierarchy: the node needs cgroup v1 (cgroupfs driver)")


def _walk_bottom_up(root: Path) -> Iterator[Path]:
    for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -entry[0].count(os.sep)):
        yield Path(dirpath)


def _procs(root: Path) -> set[int]:
    pids: set[int] = set()
    for directory in _walk_bottom_up(root):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return pids


def kill_processes(name: str, timeout: float = KILL_TIMEOUT_S) -> None:
    """SIGKILL every process in the pids cgroup `name` (and below) until none is left."""
    root = _pids_hierarchy() / name
    deadline = time.monotonic() + timeout
    while root.exists():
        remaining = _procs(root)
        if not remaining:
            return
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NodeError(f"processes {sorted(remaining)} of cgroup {name} did not die")
        time.sleep(0.05)


def kill_cgroup(name: str, timeout: float = KILL_TIMEOUT_S) -> None:
    """Kill every process of the subtree `name`, then remove it from every hierarchy. Raises NodeError if
    processes or directories remain."""
    kill_processes(name, timeout)
    # The kernel releases a cgroup whose last task just exited asynchronously: rmdir is EBUSY until then.
    deadline = time.monotonic() + CGROUP_RELEASE_TIMEOUT_S
    leftovers: list[str] = []
    for mount, _, _ in cgroup_mounts():
        root = mount / name
        if not root.exists():
            continue
        for directory in _walk_bottom_up(root):
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        leftovers.append(str(directory))
                        break
                    time.sleep(0.05)
    if leftovers:
        raise NodeError(f"cgroups could not be removed: {', '.join(leftovers[:5])}")


def sweep_stale(ip: str) -> list[str]:
    """Remove the cgroups and host links of nodes whose owner process no longer exists; their names."""
    swept: list[str] = []
    pids_root = _pids_hierarchy()
    for entry in sorted(pids_root.glob(f"{CGROUP_PREFIX}*")):
        owner, _, index = entry.name.removeprefix(CGROUP_PREFIX).partition("-")
        if not owner.isdigit() or not index.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        kill_cgroup(entry.name)
        _run([ip, "link", "del", NodeNetwork(int(index)).host_link], check=False)
        swept.append(entry.name)
    return swept


class NodeSandbox:
    """The namespaces, host link, addresses and cgroups of one node, and how to run commands inside it."""

    def __init__(self, workdir: Path, binaries: NodeBinaries) -> None:
        self.workdir = workdir
        self.binaries = binaries
        self.network: NodeNetwork | None = None
        self.cgroup = ""
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def net(self) -> NodeNetwork:
        if self.network is None:
            raise NodeError("node network not created")
        return self.network

    @property
    def holder_pid(self) -> int:
        if self._holder is None:
            raise NodeError("node namespaces not created")
        return self._holder.pid

    def create(self) -> None:
        """Allocate an index, create cgroups, the namespaces and the link; configure addresses and routes."""
        ip = self.binaries.tool("ip")
        sweep_stale(ip)
        self.network = self._allocate_link(ip)
        net = self.net
        self.cgroup = f"{CGROUP_PREFIX}{os.getpid()}-{net.index}"
        self._create_cgroups()
        self._start_holder()
        _run([ip, "link", "set", net.node_link, "netns", str(self.holder_pid)])
        _run([ip, "addr", "add", f"{net.host_ip}/30", "dev", net.host_link])
        _run([ip, "link", "set", net.host_link, "up"])
        _run([ip, "route", "add", net.routed, "via", net.node_ip])
        for argv in (
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{net.node_ip}/30", "dev", net.node_link],
            ["link", "set", net.node_link, "up"],
            ["route", "add", "default", "via", net.host_ip],
        ):
            _run(self.command([ip, *argv], in_cgroup=False))
        for key, value in NAMESPACE_SYSCTLS.items():
            path = "/proc/sys/" + key.replace(".", "/")
            _run(self.command(["/bin/sh", "-c", f"echo {value} > {path}"], in_cgroup=False))

    def command(self, argv: Sequence[str], *, in_cgroup: bool = True) -> list[str]:
        """`argv` run inside the node: in its cgroup (pids hierarchy) and its network and mount namespace."""
        enter = [
            self.binaries.tool("nsenter"),
            f"--target={self.holder_pid}",
            "--net",
            "--mount",
            f"--wd={self.workdir}",
            "--",
        ]
        if not in_cgroup:
            return [*enter, *argv]
        procs = _pids_hierarchy() / self.cgroup / "system" / "cgroup.procs"
        join = 'echo $$ > "$0" && exec "$@"'
        return ["/bin/sh", "-c", join, str(procs), *enter, *argv]

    def destroy(self) -> None:
        """Kill everything left in the node, remove its link and cgroups. Idempotent."""
        errors: list[str] = []
        if self.network is not None:
            _run([self.binaries.tool("ip"), "link", "del", self.network.host_link], check=False)
        if self.cgroup:
            try:
                kill_cgroup(self.cgroup)
            except NodeError as exc:
                errors.append(str(exc))
        if self._holder is not None:
            self._holder.kill()
            self._holder.wait()
            self._holder = None
        if errors:
            raise NodeError("; ".join(errors))

    # ----- internals -----------------------------------------------------------------------------------

    @staticmethod
    def _allocate_link(ip: str) -> NodeNetwork:
        taken = _host_networks(ip)
        for index in range(MAX_NODES):
            net = NodeNetwork(index)
            wanted = [ipaddress.IPv4Network(net.transit), ipaddress.IPv4Network(net.routed)]
            if any(w.overlaps(t) for w in wanted for t in taken):
                continue
            # Creating the link is the allocation: it fails if another node holds this index.
            done = _run(
                [ip, "link", "add", net.host_link, "type", "veth", "peer", "name", net.node_link], check=False
            )
            if done.returncode == 0:
                return net
        raise NodeError(f"no free node index (0-{MAX_NODES - 1}): remove stale ksn*h links or routes")

    def _create_cgroups(self) -> None:
        for mount, fstype, options in cgroup_mounts():
            if fstype != "cgroup":
                continue
            for directory in (mount / self.cgroup, mount / self.cgroup / "system"):
                directory.mkdir(exist_ok=True)
                if "cpuset" in options:
                    # A cpuset cgroup takes no task until it has CPUs and memory nodes.
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        (directory / name).write_text((mount / name).read_text())

    def _start_holder(self) -> None:
        node = self.workdir / "node"
        for sub in ("kubelet", "log", "sysctl"):
            (node / sub).mkdir(parents=True, exist_ok=True)
        lines = [
            "set -e",
            "mount -t tmpfs -o mode=0755 kserve-node-run /run",
            "mount -t tmpfs -o mode=0755 kserve-node-var-lib /var/lib",
            "mkdir /var/lib/kubelet",
            f"mount --bind {node / 'kubelet'} /var/lib/kubelet",
            f"mount --bind {node / 'log'} /var/log",
        ]
        for key, value in SHADOWED_SYSCTLS.items():
            shadow = node / "sysctl" / key.replace("/", ".")
            shadow.write_text(value + "\n")
            lines.append(f"mount --bind {shadow} /proc/sys/{key}")
        lines.append("echo ready")
        lines.append("exec sleep infinity")
        procs = _pids_hierarchy() / self.cgroup / "system" / "cgroup.procs"
        argv = [
            "/bin/sh",
            "-c",
            'echo $$ > "$0" && exec "$@"',
            str(procs),
            self.binaries.tool("unshare"),
            "--net",
            "--mount",
            "--propagation=slave",
            "--",
            "/bin/sh",
            "-c",
            "\n".join(lines),
        ]
        prefix = []
        if threading.current_thread() is threading.main_thread():
            prefix = [self.binaries.tool("setpriv"), "--pdeathsig", "KILL", "--"]
        log = (self.workdir / "logs" / "node-namespaces.log").open("ab")
        with log:
            self._holder = subprocess.Popen(
                [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log
            )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        self._holder.stdout.close()
        if line.strip() != b"ready":
            code = self._holder.wait()
            raise NodeError(f"cannot set up the node's namespaces (exit {code}); see node-namespaces.log")


# ----- the node's configuration files --------------------------------------------------------------------


@dataclass(frozen=True)
class NodePaths:
    """Where the node keeps its state, under the cluster's work directory."""

    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kubelet_certs(self) -> Path:
        return self.root / "kubelet-pki"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def dns_dir(self) -> Path:
        return self.root / "dns"

    @property
    def dns_hosts(self) -> Path:
        return self.dns_dir / "cluster"


def _toml_string(value: str) -> str:
    return json.dumps(value)


def containerd_config(paths: NodePaths, sandbox_image: str, cni_bin_dir: Path) -> str:
    """containerd 1.6 configuration (version 2): private root, state and socket; the CRI plugin with our
    pause image and CNI; plugins that would touch host paths (/opt, aufs, zfs, ...) disabled.

    `restrict_oom_score_adj`: runc may only raise a container's OOM score, never lower it below
    containerd's own (without it, runc fails with "failed to update /proc/self/oom_score_adj: Permission
    denied" here). `netns_mounts_under_state_dir` keeps the pods' network-namespace files in our state
    directory instead of /var/run/netns."""
    q = _toml_string
    disabled = [
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.internal.v1.opt",
        "io.containerd.internal.v1.tracing",
        "io.containerd.tracing.processor.v1.otlp",
    ]
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f"root = {q(str(paths.containerd_root))}",
            f"state = {q(str(paths.containerd_state))}",
            f"disabled_plugins = [{', '.join(q(d) for d in disabled)}]",
            "[grpc]",
            f"  address = {q(str(paths.containerd_socket))}",
            "[ttrpc]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            f"[{cri}]",
            f"  sandbox_image = {q(sandbox_image)}",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            "  disable_apparmor = true",
            '  stream_server_address = "127.0.0.1"',
            f"[{cri}.cni]",
            f"  bin_dir = {q(str(cni_bin_dir))}",
            f"  conf_dir = {q(str(paths.cni_conf_dir))}",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            "",
        ]
    )


def cni_config(net: NodeNetwork, paths: NodePaths) -> dict[str, object]:
    """A bridge with host-local addresses from the pod range (state in our directory) and port mapping.
    Hairpin mode lets a pod reach itself through its own Service."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(net: NodeNetwork, paths: NodePaths, ca_cert: Path, cgroup: str) -> dict[str, object]:
    """KubeletConfiguration for a node that shares a machine: cgroupfs under our own cgroup root, no node
    allocatable enforcement or eviction (the machine's other work is not the kubelet's business), swap
    tolerated, webhook authentication/authorisation against the API server (kubectl logs/exec), and room
    for `MAX_PODS` pods."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": net.node_ip,
        "readOnlyPort": 0,
        "healthzBindAddress": net.node_ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [net.dns_ip],
        "resolvConf": str(paths.resolv_conf),
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": True,
        "cgroupRoot": f"/{cgroup}",
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
        "maxPods": MAX_PODS,
    }


def kube_proxy_config(net: NodeNetwork, kubeconfig: Path) -> dict[str, object]:
    """kube-proxy in iptables mode. Conntrack limits and timeouts are host-wide on older kernels, so they
    are left as they are (0 means: do not touch)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": net.pod_cidr,
        "hostnameOverride": NODE_NAME,
        "bindAddress": net.node_ip,
        "healthzBindAddress": f"{net.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def dnsmasq_argv(dnsmasq: str, net: NodeNetwork, paths: NodePaths, log_file: Path) -> list[str]:
    """dnsmasq answering for the cluster domain from the feeder's hosts file, nothing else: no upstream
    servers (offline), names under the cluster domain that are not in the file are NXDOMAIN at once."""
    return [
        dnsmasq,
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        f"--listen-address={net.node_ip}",
        "--bind-interfaces",
        f"--hostsdir={paths.dns_dir}",
        f"--local=/{CLUSTER_DOMAIN}/",
        "--user=root",
        "--pid-file=",
        f"--log-facility={log_file}",
    ]


def dns_query(server: str, name: str, timeout: float = 1.0) -> list[str]:
    """The A records `server` (port 53, UDP) returns for `name`; [] for NXDOMAIN or no answer."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        data, _ = sock.recvfrom(4096)
    reply_id, flags, _, answers = struct.unpack(">HHHH", data[:8])
    if reply_id != ident or flags & 0x000F:
        return []
    offset = 12 + len(question) + 4
    addresses: list[str] = []
    for _ in range(answers):
        while data[offset] and data[offset] < 0xC0:  # a name: labels, or a pointer
            offset += data[offset] + 1
        offset += 2 if data[offset] >= 0xC0 else 1
        rtype, _, _, length = struct.unpack(">HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(".".join(str(b) for b in data[offset : offset + 4]))
        offset += length
    return addresses
