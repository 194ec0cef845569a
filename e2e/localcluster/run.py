"""`make run`: the manager in the foreground, on the cluster you have or on a local control plane.

With `KUBECONFIG` set (or `--kubeconfig`), the manager runs against that cluster after our CRDs and config are
applied to it. Without one, a local control plane (etcd, kube-apiserver, kube-controller-manager on loopback)
is started first, so a developer can try the manager with nothing but this repository; the kubeconfig path
is printed for `kubectl`. Ctrl-C stops the manager gracefully and then tears the local cluster down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from e2e.localcluster.apply import ApplyError, apply_manifests
from e2e.localcluster.binaries import BinariesError, repo_root
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

PROG = "make run"

APPLY_ORDER = ("crd", "configmap", "runtimes", "local")
"""Sub-directories of config/ applied before the manager starts (those that exist), CRDs first."""


def config_paths(root: Path) -> list[Path]:
    """The manifest files to apply, in order; kustomize files are not manifests and are skipped."""
    paths: list[Path] = []
    for sub in APPLY_ORDER:
        directory = root / "config" / sub
        if directory.is_dir():
            paths.extend(
                p for p in sorted(directory.rglob("*.yaml")) if p.name not in ("kustomization.yaml",)
            )
    return paths


def _namespace_manifest(directory: Path, namespace: str) -> Path:
    path = directory / "namespace.yaml"
    path.write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
    return path


def run_manager(kubeconfig: Path, manager_args: Sequence[str], namespace: str) -> int:
    """Run kserve-manager in the foreground; forward Ctrl-C/SIGTERM as SIGTERM and wait for it."""
    argv = [sys.executable, "-m", "controllers.main", f"--kubeconfig={kubeconfig}", *manager_args]
    env = dict(os.environ, POD_NAMESPACE=namespace)
    proc = subprocess.Popen(argv, env=env)

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="use this cluster")
    parser.add_argument("--dir", type=Path, default=None, help="local cluster work directory (kept)")
    parser.add_argument("manager_args", nargs="*", help="extra kserve-manager flags (after --)")
    args = parser.parse_args(argv)
    namespace = os.environ.get("POD_NAMESPACE", "kserve")
    root = repo_root()
    try:
        if args.kubeconfig:
            kubeconfig = Path(args.kubeconfig)
            print(f"{PROG}: using the cluster of {kubeconfig}", flush=True)
            apply_manifests(kubeconfig, config_paths(root))
            return run_manager(kubeconfig, args.manager_args, namespace)
        print(f"{PROG}: starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
        with LocalCluster(args.dir) as cluster:
            apply_manifests(
                cluster.kubeconfig_path,
                [_namespace_manifest(cluster.workdir, namespace), *config_paths(root)],
            )
            print(
                f"{PROG}: cluster ready; use it with:\n  export KUBECONFIG={cluster.kubeconfig_path}",
                flush=True,
            )
            return run_manager(cluster.kubeconfig_path, args.manager_args, namespace)
    except (LocalClusterError, BinariesError, ApplyError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
