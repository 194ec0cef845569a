"""A real local Kubernetes cluster: a control plane on loopback, or a whole one-node cluster.

API-only mode (the default, for fast tests): etcd, kube-apiserver and kube-controller-manager on loopback;
pods are stored but never run. Node mode (``node=True``): the same control plane plus kube-scheduler, a
kubelet with containerd, runc and CNI, kube-proxy and cluster DNS, all inside the node's own network and
mount namespace (see ``node.py``); the API server listens on the node's address, which the host routes to,
so pods run, Services work and the API server calls webhooks served by pods.

The manager's hardest behaviour (watch expiry, apiserver restarts, RBAC, garbage collection, admission
webhooks) only shows against the real thing, so tests, ``make run`` and e2e start these binaries as plain
subprocesses. Each process runs in its own session (process group) so teardown can signal the whole group,
and, when started from the main thread, under ``setpriv --pdeathsig KILL`` so even a SIGKILLed test runner
leaves nothing behind. All output goes to per-component log files in the work directory for diagnosis.

Authentication is by static tokens: an admin in ``system:masters`` plus one group-less token per extra user,
so RBAC can be exercised without client certificates.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from e2e.localcluster import node as nodecfg
from e2e.localcluster.apply import decode_body
from e2e.localcluster.binaries import (
    Binaries,
    BinariesError,
    NodeBinaries,
    resolve_binaries,
    resolve_node_binaries,
)
from e2e.localcluster.node import NodeError, NodeNetwork, NodePaths, NodeSandbox
from e2e.localcluster.pki import Pki, generate_pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
DNSMASQ = "dnsmasq"
DNS_FEEDER = "dns-feeder"
STOP_ORDER = (
    DNS_FEEDER,
    DNSMASQ,
    KUBE_PROXY,
    KUBELET,
    CONTAINERD,
    SCHEDULER,
    CONTROLLER_MANAGER,
    APISERVER,
    ETCD,
)
NODE_USER = f"system:node:{nodecfg.NODE_NAME}"
KUBE_PROXY_USER = "system:kube-proxy"
NODE_READY_TIMEOUT_S = 120.0
IMAGE_IMPORT_TIMEOUT_S = 600.0

SERVICE_CIDR = "10.0.0.0/16"
"""Room for thousands of Services: each Knative revision has two ClusterIPs."""
SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "admin"
TERM_GRACE_S = 10.0
LOG_TAIL_LINES = 25
HTTP_TIMEOUT_S = 2.0


class LocalClusterError(RuntimeError):
    """The local control plane could not be started or operated."""


@dataclass
class _Process:
    argv: list[str]
    popen: subprocess.Popen[bytes]


def free_port() -> int:
    """A currently unused loopback TCP port (the kernel's choice; tiny race until the binary binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _failure(summary: str, log: Path) -> LocalClusterError:
    """First line: the summary and the log's last line (what a CLI prints); then the log's tail."""
    tail = _tail(log)
    last = tail[-1].strip() if tail else "(empty log)"
    return LocalClusterError(f"{summary}: {last}\nlast lines of {log}:\n" + "\n".join(tail))


class LocalCluster:
    """Start, operate and tear down one local control plane. Use as a context manager or call stop()."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        controller_manager: bool = True,
        extra_users: Sequence[str] = ("alice", "bob", "manager"),
        binaries: Binaries | None = None,
        node: bool = False,
        pause_image: tuple[str, Path] | None = None,
    ) -> None:
        """``node``: run a node (see the module docstring). ``pause_image``: (ref, archive) of the sandbox
        image; by default the one ``e2e.images`` builds."""
        for user in extra_users:
            if not user or "," in user or user == ADMIN_USER:
                raise ValueError(f"invalid extra user name: {user!r}")
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="kserve-localcluster-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._with_controller_manager = controller_manager
        self._binaries = binaries
        self.admin_token = secrets.token_hex(24)
        self._user_tokens = {user: secrets.token_hex(24) for user in extra_users}
        self.kubeconfig_path = self.workdir / "admin.kubeconfig"
        self.ca_path = self.workdir / "pki" / "ca.crt"
        self._pki: Pki | None = None
        self._procs: dict[str, _Process] = {}
        self._argv: dict[str, list[str]] = {}
        self._etcd_port = 0
        self._apiserver_port = 0
        self._lock = threading.RLock()
        self._started = False
        self._stopped = False
        self._node = node
        self._pause_image = pause_image
        self._node_binaries: NodeBinaries | None = None
        self._sandbox: NodeSandbox | None = None
        self._node_tokens = {NODE_USER: secrets.token_hex(24), KUBE_PROXY_USER: secrets.token_hex(24)}
        # Also covers a cluster that is created but never started: its temporary workdir must go too.
        atexit.register(self.stop)

    # ----- public attributes -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Where the control plane listens: loopback, or the node's address in node mode."""
        return self.network.node_ip if self._node else "127.0.0.1"

    @property
    def server(self) -> str:
        if not self._apiserver_port:
            raise LocalClusterError("cluster not started")
        return f"https://{self.host}:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        if not self._etcd_port:
            raise LocalClusterError("cluster not started")
        return f"http://{self.host}:{self._etcd_port}"

    @property
    def has_node(self) -> bool:
        return self._node

    @property
    def network(self) -> NodeNetwork:
        """The node's addresses (node mode only)."""
        if self._sandbox is None or self._sandbox.network is None:
            raise LocalClusterError("this cluster has no node" if not self._node else "node not started")
        return self._sandbox.network

    @property
    def node_paths(self) -> NodePaths:
        return NodePaths(self.workdir / "node")

    @property
    def cgroup(self) -> str:
        """The node's cgroup subtree name (node mode only)."""
        if self._sandbox is None:
            raise LocalClusterError("this cluster has no node")
        return self._sandbox.cgroup

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._user_tokens)

    def token_for(self, user: str) -> str:
        if user == ADMIN_USER:
            return self.admin_token
        try:
            return self._user_tokens[user]
        except KeyError:
            raise LocalClusterError(f"unknown user {user!r}; known: {', '.join(self._user_tokens)}") from None

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    def kubeconfig_for(self, user: str) -> Path:
        """Write (and return) a kubeconfig authenticating as one of the extra token users."""
        if user not in self._user_tokens:
            raise LocalClusterError(f"unknown user {user!r}; known: {', '.join(self._user_tokens)}")
        path = self.workdir / f"{user}.kubeconfig"
        self.write_kubeconfig(path, user, self._user_tokens[user])
        return path

    def write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        """Write a kubeconfig for this cluster that authenticates with ``token`` (mode 0600)."""
        context = f"{user}@localcluster"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "localcluster",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(self.ca_path.read_bytes()).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "localcluster", "user": user, "namespace": "default"},
                }
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        user: str = ADMIN_USER,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        """One JSON request to the apiserver as ``user``; returns (HTTP status, decoded body)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token_for(user)}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"{self.server}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return resp.status, decode_body(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            return exc.code, decode_body(raw)

    # ----- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start every component and wait until the apiserver is ready; on failure tear down and raise."""
        with self._lock:
            if self._stopped:
                raise LocalClusterError("cluster was stopped; create a new LocalCluster")
            if self._started:
                raise LocalClusterError("cluster already started")
            self._started = True
            try:
                self._start(timeout)
            except BaseException:
                self.stop()
                raise

    def _start(self, timeout: float) -> None:
        try:
            if self._binaries is None:
                self._binaries = resolve_binaries()
            if self._node and self._node_binaries is None:
                self._node_binaries = resolve_node_binaries()
        except BinariesError as exc:
            raise LocalClusterError(str(exc)) from exc
        (self.workdir / "logs").mkdir(exist_ok=True)
        pause = self._pause() if self._node else None
        deadline = time.monotonic() + timeout
        node_ip: str | None = None
        service_ip = SERVICE_IP
        if self._node_binaries is not None:
            self._sandbox = NodeSandbox(self.workdir, self._node_binaries)
            try:
                self._sandbox.create()
            except NodeError as exc:
                raise LocalClusterError(f"cannot create the node: {exc}") from exc
            self._etcd_port, self._apiserver_port = nodecfg.ETCD_PORT, nodecfg.APISERVER_PORT
            node_ip, service_ip = self.network.node_ip, self.network.service_ip
        else:
            self._etcd_port = free_port()
            self._apiserver_port = free_port()
        self._pki = generate_pki(self.workdir / "pki", service_ip=service_ip, node_ip=node_ip)
        self._write_token_file()
        self.write_kubeconfig(self.kubeconfig_path, ADMIN_USER, self.admin_token)

        self._argv[ETCD] = self._etcd_argv()
        self._spawn(ETCD)
        self._wait_until(ETCD, deadline, self._etcd_healthy)

        self._argv[APISERVER] = self._apiserver_argv()
        self._spawn(APISERVER)
        self._wait_until(APISERVER, deadline, self._apiserver_ready)

        if self._with_controller_manager:
            kcm_port = nodecfg.KCM_PORT if self._node else free_port()
            self._argv[CONTROLLER_MANAGER] = self._controller_manager_argv(kcm_port)
            self._spawn(CONTROLLER_MANAGER)
            self._wait_until(CONTROLLER_MANAGER, deadline, lambda: self._https_healthy(kcm_port))
        if pause is not None:
            self._start_node(max(deadline, time.monotonic() + NODE_READY_TIMEOUT_S), pause)

    def stop(self) -> None:
        """Terminate every process group (SIGTERM, then SIGKILL); with a node, kill its pods and remove its
        namespaces, link and cgroups; remove a temporary workdir. Idempotent. Raises LocalClusterError if
        the node could not be removed completely (after doing all it could)."""
        with self._lock:
            problem = ""
            for name in STOP_ORDER:
                if name == CONTAINERD and self._sandbox is not None and self._sandbox.cgroup:
                    # Containers first: containerd's shims outlive containerd, their containers too.
                    with contextlib.suppress(NodeError):
                        nodecfg.kill_processes(f"{self._sandbox.cgroup}/kubepods")
                self._terminate(name, kill=False)
            if self._sandbox is not None:
                try:
                    self._sandbox.destroy()
                except NodeError as exc:
                    problem = f"the node was not removed completely: {exc}"
            if not self._stopped:
                self._stopped = True
                atexit.unregister(self.stop)
                if self._owns_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)
            if problem:
                raise LocalClusterError(problem)

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pids(self) -> dict[str, int]:
        """Process ids of the running components (for diagnostics and leak checks)."""
        with self._lock:
            return {name: p.popen.pid for name, p in self._procs.items() if p.popen.poll() is None}

    # ----- apiserver restarts and etcd compaction ------------------------------------------------------

    def stop_apiserver(self, kill: bool = False) -> None:
        """Stop kube-apiserver: SIGKILL at once if ``kill``, else SIGTERM with a grace period."""
        with self._lock:
            self._require_running()
            self._terminate(APISERVER, kill=kill)

    def start_apiserver(self, timeout: float = 60.0) -> None:
        """Start kube-apiserver again on the same port with the same flags and wait for /readyz."""
        with self._lock:
            self._require_running()
            if APISERVER in self._procs:
                raise LocalClusterError("kube-apiserver is already running")
            self._spawn(APISERVER)
            self._wait_until(APISERVER, time.monotonic() + timeout, self._apiserver_ready)

    def restart_apiserver(self, kill: bool = False, timeout: float = 60.0) -> None:
        self.stop_apiserver(kill=kill)
        self.start_apiserver(timeout=timeout)

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision and return that revision.

        Older resourceVersions then no longer exist in etcd, but what clients see depends on the watch cache
        (observed with v1.20.2): right after compaction a watch from an old version is still served from
        the cache's event window; after the cache is rebuilt (``restart_apiserver``; a restart alone has
        the same effect) or once the window has moved on, the watch gets a 200 stream whose first event is
        ``ERROR`` with a Status of code 410. Reads that bypass the cache (an exact-version list) get 410
        as soon as etcd is compacted.
        """
        with self._lock:
            self._require_running()
            header = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"/").decode(), "limit": 1})
            revision = int(header["header"]["revision"])
            try:
                self._etcd_post("/v3/kv/compaction", {"revision": revision, "physical": True})
            except LocalClusterError as exc:
                if "compacted" not in str(exc):
                    raise
            return revision

    # ----- the node ---------------------------------------------------------------------------------------

    def node_command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as a command that runs inside the node's network and mount namespace."""
        if self._sandbox is None:
            raise LocalClusterError("this cluster has no node")
        return self._sandbox.command(argv, in_cgroup=False)

    def load_images(self, archives: Sequence[Path]) -> None:
        """Import image archives (docker-archive or OCI) into the node's containerd, keeping their refs."""
        for archive in archives:
            done = self._ctr("images", "import", str(archive), timeout=IMAGE_IMPORT_TIMEOUT_S)
            if done.returncode != 0:
                raise LocalClusterError(f"cannot import {archive} into the node: {_last_line(done.stderr)}")

    def tag_image(self, source: str, target: str) -> None:
        """Give an image of the node a further ref (as `docker tag` would)."""
        done = self._ctr("images", "tag", "--force", source, target)
        if done.returncode != 0:
            raise LocalClusterError(f"cannot tag {source} as {target}: {_last_line(done.stderr)}")

    def images(self) -> list[str]:
        """The image refs the node's containerd holds."""
        done = self._ctr("images", "list", "--quiet")
        if done.returncode != 0:
            raise LocalClusterError(f"cannot list the node's images: {_last_line(done.stderr)}")
        return [line for line in done.stdout.splitlines() if line and not line.startswith("sha256:")]

    def _ctr(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        if self._node_binaries is None:
            raise LocalClusterError("this cluster has no node")
        socket_path = str(self.node_paths.containerd_socket)
        argv = [self._node_binaries.tool("ctr"), "--address", socket_path, "--namespace", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def _pause(self) -> tuple[str, Path]:
        if self._pause_image is not None:
            return self._pause_image
        from e2e.images import ImageBuildError, build_images

        try:
            built = build_images(["pause"])["pause"]
        except ImageBuildError as exc:
            raise LocalClusterError(f"cannot build the node's pause image: {exc}") from exc
        self._pause_image = (built.ref, built.archive)
        return self._pause_image

    def _start_node(self, deadline: float, pause: tuple[str, Path]) -> None:
        """kube-scheduler, cluster DNS, containerd (with the pause image), kubelet and kube-proxy; wait until
        the Node is Ready, kube-proxy has synced and DNS answers."""
        tools, pki = self._node_binaries, self._pki
        if tools is None or pki is None:
            raise LocalClusterError("node binaries and PKI are not prepared")
        paths, net = self.node_paths, self.network
        for directory in (paths.cni_conf_dir, paths.cni_ipam_dir, paths.dns_dir, paths.kubelet_certs):
            directory.mkdir(parents=True, exist_ok=True)

        self._argv[SCHEDULER] = [
            str(tools.kube_scheduler),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--authentication-kubeconfig={self.kubeconfig_path}",
            f"--authorization-kubeconfig={self.kubeconfig_path}",
            f"--bind-address={net.node_ip}",
            f"--secure-port={nodecfg.SCHEDULER_PORT}",
            "--port=0",
            f"--tls-cert-file={pki.controller_manager_cert}",
            f"--tls-private-key-file={pki.controller_manager_key}",
            "--leader-elect=false",
            "--profiling=false",
        ]
        self._spawn(SCHEDULER)
        self._wait_until(SCHEDULER, deadline, lambda: self._https_healthy(nodecfg.SCHEDULER_PORT))

        paths.containerd_config.write_text(nodecfg.containerd_config(paths, pause[0], tools.cni_bin_dir))
        self._argv[CONTAINERD] = [tools.tool("containerd"), f"--config={paths.containerd_config}"]
        self._spawn(CONTAINERD)
        self._wait_until(CONTAINERD, deadline, lambda: self._ctr("version", timeout=5).returncode == 0)
        self.load_images([pause[1]])
        (paths.cni_conf_dir / "10-kserve-node.conflist").write_text(
            json.dumps(nodecfg.cni_config(net, paths), indent=2)
        )

        paths.resolv_conf.write_text(f"nameserver {net.dns_ip}\n")
        paths.kubelet_config.write_text(
            yaml.safe_dump(nodecfg.kubelet_config(net, paths, pki.ca_cert, self.cgroup))
        )
        node_kubeconfig = paths.root / "kubelet.kubeconfig"
        self.write_kubeconfig(node_kubeconfig, NODE_USER, self._node_tokens[NODE_USER])
        self._argv[KUBELET] = [
            str(tools.kubelet),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={node_kubeconfig}",
            f"--hostname-override={nodecfg.NODE_NAME}",
            f"--node-ip={net.node_ip}",
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{paths.containerd_socket}",
            f"--pod-infra-container-image={pause[0]}",
            f"--cert-dir={paths.kubelet_certs}",
            "--v=1",
        ]
        self._spawn(KUBELET)

        proxy_kubeconfig = paths.root / "kube-proxy.kubeconfig"
        self.write_kubeconfig(proxy_kubeconfig, KUBE_PROXY_USER, self._node_tokens[KUBE_PROXY_USER])
        paths.kube_proxy_config.write_text(yaml.safe_dump(nodecfg.kube_proxy_config(net, proxy_kubeconfig)))
        self._argv[KUBE_PROXY] = [str(tools.kube_proxy), f"--config={paths.kube_proxy_config}"]
        self._spawn(KUBE_PROXY)

        self._create_dns_service()
        self._argv[DNSMASQ] = nodecfg.dnsmasq_argv(
            tools.tool("dnsmasq"), net, paths, self.log_path("dnsmasq-queries")
        )
        self._spawn(DNSMASQ)
        self._argv[DNS_FEEDER] = [
            sys.executable,
            "-m",
            "e2e.localcluster.dns",
            f"--kubeconfig={self.kubeconfig_path}",
            f"--hosts-file={paths.dns_hosts}",
            f"--domain={nodecfg.CLUSTER_DOMAIN}",
        ]
        self._spawn(DNS_FEEDER)

        self._wait_until(KUBELET, deadline, self._node_ready)
        self._wait_until(KUBE_PROXY, deadline, self._kube_proxy_healthy)
        kubernetes = f"kubernetes.default.svc.{nodecfg.CLUSTER_DOMAIN}"
        self._wait_until(
            DNS_FEEDER, deadline, lambda: nodecfg.dns_query(net.node_ip, kubernetes) == [net.service_ip]
        )

    def _create_dns_service(self) -> None:
        """`kube-system/kube-dns` at the kubelet's clusterDNS address, its endpoint the node's dnsmasq."""
        net = self.network
        ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": net.dns_ip,
                "ports": [{"name": n, "port": 53, "protocol": p, "targetPort": 53} for n, p in ports],
            },
        }
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "subsets": [
                {
                    "addresses": [{"ip": net.node_ip}],
                    "ports": [{"name": n, "port": 53, "protocol": p} for n, p in ports],
                }
            ],
        }
        for path, body in (
            ("/api/v1/namespaces/kube-system/services", service),
            ("/api/v1/namespaces/kube-system/endpoints", endpoints),
        ):
            status, reply = self.request("POST", path, body)
            if status not in (201, 409):
                detail = reply.get("message", reply)
                raise LocalClusterError(f"cannot create kube-dns: HTTP {status}: {detail}")

    def _node_ready(self) -> bool:
        status, node = self.request("GET", f"/api/v1/nodes/{nodecfg.NODE_NAME}", timeout=HTTP_TIMEOUT_S)
        if status != 200:
            return False
        conditions = (node.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _kube_proxy_healthy(self) -> bool:
        url = f"http://{self.network.node_ip}:{nodecfg.KUBE_PROXY_HEALTHZ_PORT}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            exc.close()
            return False

    # ----- internals -----------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._started or self._stopped:
            raise LocalClusterError("cluster not running")

    def _spawn(self, name: str) -> None:
        argv = self._argv[name]
        if self._sandbox is not None and name != DNS_FEEDER:
            argv = self._sandbox.command(argv)
        prefix: list[str] = []
        setpriv = shutil.which("setpriv")
        # PDEATHSIG fires when the forking *thread* exits, so only use it from the main thread.
        if setpriv and threading.current_thread() is threading.main_thread():
            prefix = [setpriv, "--pdeathsig", "KILL", "--"]
        log_path = self.log_path(name)
        with log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} starting {' '.join(argv)}\n".encode())
            log.flush()
            try:
                popen = subprocess.Popen(
                    [*prefix, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LocalClusterError(f"cannot run {argv[0]}: {exc}") from exc
        self._procs[name] = _Process(argv=argv, popen=popen)

    def _terminate(self, name: str, *, kill: bool) -> None:
        proc = self._procs.pop(name, None)
        if proc is None:
            return
        popen = proc.popen
        if popen.poll() is None and not kill:
            self._signal_group(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(TERM_GRACE_S)
        # Kill the group even if the leader exited: nothing it may have forked must survive.
        self._signal_group(popen.pid, signal.SIGKILL)
        popen.wait()

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _wait_until(self, name: str, deadline: float, ready: Any) -> None:
        proc = self._procs[name]
        last_error = "not probed yet"
        while True:
            code = proc.popen.poll()
            if code is not None:
                raise _failure(f"{name} exited with code {code} during start-up", self.log_path(name))
            try:
                if ready():
                    return
            except (OSError, ValueError) as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                raise _failure(f"{name} not ready in time (last probe: {last_error})", self.log_path(name))
            time.sleep(0.1)

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=HTTP_TIMEOUT_S) as resp:
            body = json.loads(resp.read())
        return bool(body.get("health") == "true")

    def _apiserver_ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=self.ssl_context()) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            exc.close()
            return False

    def _https_healthy(self, port: int) -> bool:
        """A control-plane component's /healthz (its certificate is signed by our CA)."""
        url = f"https://{self.host}:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S, context=self.ssl_context()) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            exc.close()
            return False

    def _etcd_post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10.0) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise LocalClusterError(f"etcd {path} failed: HTTP {exc.code}: {detail}") from exc
        except OSError as exc:
            raise LocalClusterError(f"etcd {path} failed: {exc}") from exc

    def _write_token_file(self) -> None:
        lines = [f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"']
        lines += [f"{token},{user},{user}" for user, token in self._user_tokens.items()]
        if self._node:
            lines.append(f'{self._node_tokens[NODE_USER]},{NODE_USER},{NODE_USER},"system:nodes"')
            lines.append(f"{self._node_tokens[KUBE_PROXY_USER]},{KUBE_PROXY_USER},{KUBE_PROXY_USER}")
        path = self.workdir / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _prepared(self) -> tuple[Binaries, Pki]:
        if self._binaries is None or self._pki is None:
            raise LocalClusterError("binaries and PKI are not prepared")
        return self._binaries, self._pki

    def _etcd_argv(self) -> list[str]:
        binaries, _ = self._prepared()
        peer_url = f"http://127.0.0.1:{2380 if self._node else free_port()}"
        return [
            str(binaries.etcd),
            "--name=localcluster",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=localcluster={peer_url}",
            "--initial-cluster-state=new",
        ]

    def _apiserver_argv(self) -> list[str]:
        binaries, pki = self._prepared()
        return [
            str(binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={'0.0.0.0' if self._node else '127.0.0.1'}",
            f"--advertise-address={self.host}",
            f"--secure-port={self._apiserver_port}",
            "--insecure-port=0",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.apiserver_cert}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Published in kube-system/extension-apiserver-authentication; kube-controller-manager's
            # delegated authentication expects it and logs errors every few seconds without it.
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={self.network.service_cidr if self._node else SERVICE_CIDR}",
            # The 1.20 defaults already include both webhook plugins; naming them documents the dependency.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
            + (",NodeRestriction" if self._node else ""),
            "--allow-privileged=true",
            "--profiling=false",
            *self._apiserver_node_args(pki),
        ]

    def _apiserver_node_args(self, pki: Pki) -> list[str]:
        """With a node: the client certificate for the kubelet's API (logs, exec, port-forward), reached at
        the node's InternalIP (the node has no resolvable host name)."""
        if not self._node:
            return []
        return [
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controller_manager_argv(self, port: int) -> list[str]:
        binaries, pki = self._prepared()
        kubeconfig = str(self.kubeconfig_path)
        return [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={self.host}",
            f"--secure-port={port}",
            "--port=0",
            f"--tls-cert-file={pki.controller_manager_cert}",
            f"--tls-private-key-file={pki.controller_manager_key}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=false",
            # Client-go's default (20 qps) makes the garbage collector and ReplicaSet controller the
            # bottleneck of tests that create or delete hundreds of objects.
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--controllers=*",
            "--leader-elect=false",
            "--profiling=false",
            # Its default lives under /usr/libexec, which it would create on the host.
            f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
        ]
