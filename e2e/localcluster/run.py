"""`make run`: the whole product on a local cluster with a real node, or the manager against your cluster.

Without `KUBECONFIG` (or `--kubeconfig`): `e2e.localcluster.deployment.LocalDeployment` builds the images
offline, starts a one-node cluster, and deploys the manager in it (`config/overlays/self-signed` with the
offline images), with the Knative Serving double and an S3 store holding an iris model. The default
namespace gets the store's credentials (a Secret on ServiceAccount `kserve-e2e-models`), and a ready-to-apply
InferenceService is written next to the kubeconfig; the commands to apply it, watch the manager's logs and
send a prediction are printed. Ctrl-C (or SIGTERM) tears everything down. Extra manager flags (`-- ARGS`) are
appended to the manager container's arguments.

With a cluster: the manager runs in the foreground as a process against it, after our CRDs and config are
applied; Ctrl-C stops it gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import yaml

from e2e.localcluster.apply import ApplyError, apply_manifests
from e2e.localcluster.binaries import BinariesError, kubectl, repo_root
from e2e.localcluster.cluster import LocalClusterError
from e2e.localcluster.deployment import (
    IRIS_URI,
    MODEL_RESOURCES,
    MODEL_SERVICE_ACCOUNT,
    DeploymentError,
    LocalDeployment,
)

PROG = "make run"

SAMPLE = "sklearn-iris"
IRIS_REQUEST = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
APPLY_ORDER = ("crd", "configmap", "runtimes", "local")
"""Sub-directories of config/ applied before the manager starts (those that exist), CRDs first."""


def config_paths(root: Path) -> list[Path]:
    """The directories to apply, in order (`apply_manifests` reads them and skips kustomization files)."""
    return [root / "config" / sub for sub in APPLY_ORDER if (root / "config" / sub).is_dir()]


def webhook_args(manager_args: Sequence[str], cert_dir: Path) -> list[str]:
    """Self-signed webhook certificates in `cert_dir`, unless the user chose a certificate directory.

    A developer machine has no cert-manager Secret mounted at the default directory, and the manager will
    not start its webhook server without a certificate.
    """
    if any(arg.startswith("--webhook-cert-dir") for arg in manager_args):
        return []
    return ["--webhook-self-signed", f"--webhook-cert-dir={cert_dir}", "--webhook-cert-ip=127.0.0.1"]


def run_manager(kubeconfig: Path, manager_args: Sequence[str], namespace: str, *, cert_dir: Path) -> int:
    """Run kserve-manager in the foreground; forward Ctrl-C/SIGTERM to it as one SIGTERM and wait."""
    env = dict(os.environ, POD_NAMESPACE=namespace)
    argv = [f"--kubeconfig={kubeconfig}", *webhook_args(manager_args, cert_dir), *manager_args]
    # The child gets its own session: a terminal's Ctrl-C reaches only us, and the manager is sent exactly
    # one SIGTERM (a second signal would make it skip its graceful shutdown).
    manager = subprocess.Popen(
        [sys.executable, "-m", "controllers.main", *argv], env=env, start_new_session=True
    )

    def forward(signum: int, frame: object) -> None:
        if manager.poll() is None:
            manager.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return manager.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if manager.poll() is None:
            manager.kill()
            manager.wait()


def sample(namespace: str) -> dict[str, object]:
    """An sklearn InferenceService reading the iris model from the local S3 store."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": SAMPLE, "namespace": namespace},
        "spec": {
            "predictor": {
                "serviceAccountName": MODEL_SERVICE_ACCOUNT,
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": IRIS_URI,
                    "resources": MODEL_RESOURCES,
                },
            }
        },
    }


def instructions(deployment: LocalDeployment, sample_file: Path) -> str:
    ctl = f"{kubectl()} --kubeconfig={deployment.kubeconfig}"
    body = json.dumps(IRIS_REQUEST)
    service = f"{SAMPLE}-predictor-00001-private"
    return f"""{PROG}: the manager runs in the cluster (namespace kserve), beside the Knative double and an
S3 store. Try it:
  export KUBECONFIG={deployment.kubeconfig}
  alias kubectl='{ctl}'                                  # kubectl v1.20.2, as the cluster
  kubectl logs -n kserve deployment/kserve-controller-manager -f      # the manager's logs
  kubectl apply -f {sample_file}             # an sklearn InferenceService
  kubectl get inferenceservice {SAMPLE} -w                            # until READY is True
  curl -s -H 'Content-Type: application/json' -d '{body}' \\
    http://$(kubectl get service {service} -o jsonpath='{{.spec.clusterIP}}')/v1/models/{SAMPLE}:predict
Cluster logs (kubelet, containerd, API server): {deployment.cluster.workdir / "logs"}
Knative double log: {deployment.double_log}
Press Ctrl-C to stop and remove everything."""


def run_local(workdir: Path | None, manager_args: Sequence[str]) -> int:
    """The local deployment until Ctrl-C/SIGTERM; exit 1 if it cannot start or the double dies."""
    owned = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="kserve-run-")) if workdir is None else workdir
    deployment = LocalDeployment(
        directory, manager_args=manager_args, log=lambda line: print(f"{PROG}: {line}", flush=True)
    )
    stop = threading.Event()
    previous = {
        s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        deployment.start()
        for obj in deployment.model_access("default"):
            done = deployment.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
            if done.returncode != 0:
                detail = done.stderr.strip()
                raise DeploymentError(f"cannot give namespace default the model's credentials: {detail}")
        sample_file = directory / "sklearn-iris.yaml"
        sample_file.write_text(yaml.safe_dump(sample("default"), sort_keys=False))
        print(instructions(deployment, sample_file), flush=True)
        while not stop.wait(1.0):
            if not deployment.double_alive:
                print(f"{PROG}: the Knative double exited; see {deployment.double_log}", file=sys.stderr)
                return 1
        print(f"{PROG}: stopping", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not abandon the teardown half-way.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        deployment.stop()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
        print(f"{PROG}: shutdown complete", flush=True)


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
                return run_manager(kubeconfig, args.manager_args, namespace, cert_dir=Path(certs))
        return run_local(args.dir, args.manager_args)
    except (LocalClusterError, BinariesError, ApplyError, DeploymentError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
