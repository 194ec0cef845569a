"""`make run`: the manager in the foreground, on the cluster you have or on a local control plane.

With `KUBECONFIG` set (or `--kubeconfig`), the manager runs against that cluster after our CRDs and config are
applied to it. Without one, a local control plane (etcd, kube-apiserver, kube-controller-manager on loopback)
is started first, with the Knative Serving double (e2e/knative_double) beside the manager so a demo
InferenceService goes Ready, so a developer can try the manager with nothing but this repository; the
kubeconfig path is printed for `kubectl`. Ctrl-C stops the manager gracefully and then tears the local
cluster down.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from e2e.localcluster.apply import ApplyError, apply_manifests
from e2e.localcluster.binaries import BinariesError, repo_root
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

PROG = "make run"

APPLY_ORDER = ("crd", "configmap", "runtimes", "local")
"""Sub-directories of config/ applied before the manager starts (those that exist), CRDs first."""


def config_paths(root: Path) -> list[Path]:
    """The directories to apply, in order (`apply_manifests` reads them and skips kustomization files)."""
    return [root / "config" / sub for sub in APPLY_ORDER if (root / "config" / sub).is_dir()]


def _namespace_manifest(directory: Path, namespace: str) -> Path:
    path = directory / "namespace.yaml"
    path.write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
    return path


def webhook_args(manager_args: Sequence[str], cert_dir: Path) -> list[str]:
    """Self-signed webhook certificates in `cert_dir`, unless the user chose a certificate directory.

    A developer machine has no cert-manager Secret mounted at the default directory, and the manager will
    not start its webhook server without a certificate.
    """
    if any(arg.startswith("--webhook-cert-dir") for arg in manager_args):
        return []
    return ["--webhook-self-signed", f"--webhook-cert-dir={cert_dir}", "--webhook-cert-ip=127.0.0.1"]


def run_manager(
    kubeconfig: Path, manager_args: Sequence[str], namespace: str, *, double: bool, cert_dir: Path
) -> int:
    """Run kserve-manager in the foreground (and, on the local cluster, the Knative Serving double beside
    it); forward Ctrl-C/SIGTERM to both as SIGTERM and wait for them."""
    env = dict(os.environ, POD_NAMESPACE=namespace)
    argv = [f"--kubeconfig={kubeconfig}", *webhook_args(manager_args, cert_dir), *manager_args]
    # Children get their own session: a terminal's Ctrl-C reaches only us, and each child is sent exactly
    # one SIGTERM (a second signal would make the manager skip its graceful shutdown).
    manager = subprocess.Popen(
        [sys.executable, "-m", "controllers.main", *argv], env=env, start_new_session=True
    )
    children = [manager]
    if double:
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "e2e.knative_double", f"--kubeconfig={kubeconfig}"],
                start_new_session=True,
            )
        )

    def forward(signum: int, frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = manager.wait()
        forward(signal.SIGTERM, None)
        for child in children[1:]:
            child.wait(30)
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


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
            with tempfile.TemporaryDirectory(prefix="kserve-webhook-certs-") as certs:
                return run_manager(
                    kubeconfig, args.manager_args, namespace, double=False, cert_dir=Path(certs)
                )
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
            return run_manager(
                cluster.kubeconfig_path,
                args.manager_args,
                namespace,
                double=True,
                cert_dir=cluster.workdir / "webhook-certs",
            )
    except (LocalClusterError, BinariesError, ApplyError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
