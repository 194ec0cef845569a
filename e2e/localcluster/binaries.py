"""Find the local cluster's binaries, provisioning them if needed.

Tests must run against the exact Kubernetes version KServe targets (v1.20.2), and a fresh machine has none of
these binaries. Resolution is per binary so a developer can override one of them: ``$KUBEBUILDER_ASSETS``
first (the envtest convention), then ``$PATH``, then the per-version user cache that
``hack/provision-binaries.sh`` fills. Only when something is still missing do we run that script, which
installs etcd from Debian and builds the Kubernetes binaries from Debian's source package (minutes, once).

A cluster with a node also needs kube-scheduler, kubelet and kube-proxy (same build) and the node's system
tools, which come from Debian packages (``hack/provision-node.sh``): containerd, runc, the CNI plugins,
iptables, conntrack, dnsmasq and util-linux's namespace tools.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.20.2"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
NODE_COMPONENTS = ("kube-scheduler", "kubelet", "kube-proxy")
NODE_TOOLS = (
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "dnsmasq",
    "iptables",
    "conntrack",
    "ip",
    "nsenter",
    "unshare",
    "setpriv",
)
"""Found on PATH (and in the sbin directories, which a non-login PATH may lack)."""
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
"""Debian's containernetworking-plugins, then the upstream default."""
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROVISION_TIMEOUT_S = 3600.0


class BinariesError(RuntimeError):
    """A binary could not be found or provisioned."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path


@dataclass(frozen=True)
class NodeBinaries:
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    tools: dict[str, Path]
    cni_bin_dir: Path

    def tool(self, name: str) -> str:
        return str(self.tools[name])


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def provision_script() -> Path:
    return repo_root() / "hack" / "provision-binaries.sh"


def node_provision_script() -> Path:
    return repo_root() / "hack" / "provision-node.sh"


def cache_dir(version: str = K8S_VERSION) -> Path:
    """The directory the provisioning script fills (same precedence of variables as the script)."""
    root = os.environ.get("KSERVE_PY_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "kserve-py")
    return Path(root) / "k8s" / f"v{version}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _from_assets(name: str) -> Path | None:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    return Path(assets) / name if assets and _executable(Path(assets) / name) else None


def find_binary(name: str) -> Path | None:
    """Resolve one binary without provisioning: $KUBEBUILDER_ASSETS, then PATH, then the user cache."""
    from_assets = _from_assets(name)
    if from_assets:
        return from_assets
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    cached = cache_dir() / name
    return cached if _executable(cached) else None


def kubectl() -> Path:
    """kubectl v1.20.2 (matching the local control plane): $KUBEBUILDER_ASSETS, else the user cache
    (provisioned when missing). The PATH is not consulted: kubectl's built-in kustomize differs by version,
    and the manifests are tested with this one."""
    from_assets = _from_assets("kubectl")
    if from_assets:
        return from_assets
    cached = cache_dir() / "kubectl"
    if not _executable(cached):
        _run_provisioning()
    if not _executable(cached):
        raise BinariesError(f"kubectl not found in {cached.parent} after provisioning")
    return cached


def _run_provisioning(script: Path | None = None) -> Path:
    script = script or provision_script()
    if not script.is_file():
        raise BinariesError(f"provisioning script not found: {script}")
    lock_path = cache_dir().parent.parent / ".provision.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # Two test sessions provisioning at once would build into the same source tree; serialise them.
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run(
                ["bash", str(script)],
                stdout=subprocess.PIPE,
                text=True,
                timeout=PROVISION_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BinariesError(f"{script} did not finish within {PROVISION_TIMEOUT_S:.0f}s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BinariesError(f"{script} failed with exit code {done.returncode} (see its output above)")
    return Path(lines[-1].strip())


def resolve_binaries(*, provision: bool = True) -> Binaries:
    """Return the three binaries; provision the missing ones (blocking, possibly minutes) if allowed."""
    found = {name: find_binary(name) for name in COMPONENTS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        if not provision:
            raise BinariesError(
                f"missing {', '.join(missing)}: set KUBEBUILDER_ASSETS, put them on PATH, "
                f"or run {provision_script()}"
            )
        provisioned = _run_provisioning()
        for name in missing:
            candidate = provisioned / name
            if not _executable(candidate):
                raise BinariesError(f"provisioning reported {provisioned} but {candidate} is not executable")
            found[name] = candidate
    return Binaries(
        etcd=_require(found, "etcd"),
        kube_apiserver=_require(found, "kube-apiserver"),
        kube_controller_manager=_require(found, "kube-controller-manager"),
    )


def _require(found: dict[str, Path | None], name: str) -> Path:
    path = found[name]
    if path is None:
        raise BinariesError(f"{name} not found")
    return path


def _system_tool(name: str) -> Path | None:
    found = shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)
    return Path(found) if found else None


def _cni_bin_dir() -> Path | None:
    for directory in CNI_BIN_DIRS:
        if all(_executable(Path(directory) / plugin) for plugin in CNI_PLUGINS):
            return Path(directory)
    return None


def resolve_node_binaries(*, provision: bool = True) -> NodeBinaries:
    """kube-scheduler, kubelet, kube-proxy and the node's system tools; provision what is missing."""
    components = {name: find_binary(name) for name in NODE_COMPONENTS}
    if any(path is None for path in components.values()):
        if not provision:
            missing = [name for name, path in components.items() if path is None]
            raise BinariesError(f"missing {', '.join(missing)}: run {provision_script()}")
        provisioned = _run_provisioning()
        components = {name: path or provisioned / name for name, path in components.items()}
    tools = {name: _system_tool(name) for name in NODE_TOOLS}
    if any(path is None for path in tools.values()) or _cni_bin_dir() is None:
        if not provision:
            missing = [name for name, path in tools.items() if path is None]
            raise BinariesError(
                f"missing node tools {', '.join(missing) or 'CNI plugins'}: run {node_provision_script()}"
            )
        _run_provisioning(node_provision_script())
        tools = {name: _system_tool(name) for name in NODE_TOOLS}
    cni = _cni_bin_dir()
    missing = [name for name, path in tools.items() if path is None]
    missing += [name for name, path in components.items() if path is None or not _executable(path)]
    if missing or cni is None:
        raise BinariesError(f"still missing after provisioning: {', '.join(missing) or 'CNI plugins'}")
    return NodeBinaries(
        kube_scheduler=_require(components, "kube-scheduler"),
        kubelet=_require(components, "kubelet"),
        kube_proxy=_require(components, "kube-proxy"),
        tools={name: _require(tools, name) for name in NODE_TOOLS},
        cni_bin_dir=cni,
    )
