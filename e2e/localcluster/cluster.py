"""A real, node-less Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

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

from e2e.localcluster.apply import decode_body
from e2e.localcluster.binaries import Binaries, BinariesError, resolve_binaries
from e2e.localcluster.pki import Pki, generate_pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"

SERVICE_CIDR = "10.0.0.0/24"
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
    ) -> None:
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
        # Also covers a cluster that is created but never started: its temporary workdir must go too.
        atexit.register(self.stop)

    # ----- public attributes -------------------------------------------------------------------------

    @property
    def server(self) -> str:
        if not self._apiserver_port:
            raise LocalClusterError("cluster not started")
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def etcd_url(self) -> str:
        if not self._etcd_port:
            raise LocalClusterError("cluster not started")
        return f"http://127.0.0.1:{self._etcd_port}"

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
        if self._binaries is None:
            try:
                self._binaries = resolve_binaries()
            except BinariesError as exc:
                raise LocalClusterError(str(exc)) from exc
        deadline = time.monotonic() + timeout
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._pki = generate_pki(self.workdir / "pki", service_ip=SERVICE_IP)
        self._write_token_file()
        self._etcd_port = free_port()
        self._apiserver_port = free_port()
        self.write_kubeconfig(self.kubeconfig_path, ADMIN_USER, self.admin_token)

        self._argv[ETCD] = self._etcd_argv()
        self._spawn(ETCD)
        self._wait_until(ETCD, deadline, self._etcd_healthy)

        self._argv[APISERVER] = self._apiserver_argv()
        self._spawn(APISERVER)
        self._wait_until(APISERVER, deadline, self._apiserver_ready)

        if self._with_controller_manager:
            kcm_port = free_port()
            self._argv[CONTROLLER_MANAGER] = self._controller_manager_argv(kcm_port)
            self._spawn(CONTROLLER_MANAGER)
            self._wait_until(CONTROLLER_MANAGER, deadline, lambda: self._kcm_healthy(kcm_port))

    def stop(self) -> None:
        """Terminate every process group (SIGTERM, then SIGKILL), remove a temporary workdir. Idempotent."""
        with self._lock:
            for name in (CONTROLLER_MANAGER, APISERVER, ETCD):
                self._terminate(name, kill=False)
            if not self._stopped:
                self._stopped = True
                atexit.unregister(self.stop)
                if self._owns_workdir:
                    shutil.rmtree(self.workdir, ignore_errors=True)

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

    # ----- internals -----------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._started or self._stopped:
            raise LocalClusterError("cluster not running")

    def _spawn(self, name: str) -> None:
        argv = self._argv[name]
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

    def _kcm_healthy(self, port: int) -> bool:
        url = f"https://127.0.0.1:{port}/healthz"
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
        path = self.workdir / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _prepared(self) -> tuple[Binaries, Pki]:
        if self._binaries is None or self._pki is None:
            raise LocalClusterError("binaries and PKI are not prepared")
        return self._binaries, self._pki

    def _etcd_argv(self) -> list[str]:
        binaries, _ = self._prepared()
        peer_url = f"http://127.0.0.1:{free_port()}"
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
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
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
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The 1.20 defaults already include both webhook plugins; naming them documents the dependency.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--allow-privileged=true",
            "--profiling=false",
        ]

    def _controller_manager_argv(self, port: int) -> list[str]:
        binaries, pki = self._prepared()
        kubeconfig = str(self.kubeconfig_path)
        return [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            "--port=0",
            f"--tls-cert-file={pki.controller_manager_cert}",
            f"--tls-private-key-file={pki.controller_manager_key}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=false",
            "--controllers=*",
            "--leader-elect=false",
            "--profiling=false",
            # Its default lives under /usr/libexec, which it would create on the host.
            f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
        ]
