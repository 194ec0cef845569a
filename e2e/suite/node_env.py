"""`--target node`: the e2e suite on the local cluster's real node, offline.

The deployment is `e2e.localcluster.deployment.LocalDeployment` (also what `make run` starts): the manager
as the shipped Deployment of `config/overlays/self-signed` with offline images, the Knative Serving double
driving real pods, and an S3 store with the iris model. Each test namespace gets the store's Secret and a
ServiceAccount naming it, and every InferenceService of the suite reads its model from there, so every
test goes through the credential injection and a real download. Predictions go through the revision's
Service (kube-proxy on the node, reached from the host by routing), not through an Istio gateway.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

from e2e.localcluster.binaries import kubectl as local_kubectl
from e2e.localcluster.deployment import (
    IRIS_URI,
    MODEL_RESOURCES,
    MODEL_SERVICE_ACCOUNT,
    DeploymentError,
    LocalDeployment,
)
from e2e.suite.env import DeployedEnv, EnvError
from e2e.suite.processes import http_post_json
from manager.client import SECRETS, SERVICEACCOUNTS, Client, Object
from manager.errors import AlreadyExists


class NodeEnv(DeployedEnv):
    """The local node with the manager Deployment, offline images and the Knative double."""

    target = "node"
    ready_timeout = 300.0
    model_uri = IRIS_URI
    model_service_account = MODEL_SERVICE_ACCOUNT
    predictor_resources = MODEL_RESOURCES

    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.kubectl = str(local_kubectl())
        # Two replicas, as an HA deployment has them: failover tests kill the leader's pod.
        self.deployment = LocalDeployment(artifacts, replicas=2, log=self._log)
        self.kubeconfig = self.deployment.kubeconfig

    def start(self) -> None:
        try:
            self.deployment.start()
        except DeploymentError as exc:
            raise EnvError(str(exc)) from exc

    def _log(self, line: str) -> None:
        with (self.artifacts / "deployment.log").open("a") as log:
            log.write(line.rstrip() + "\n")

    def model_access(
        self, namespace: str, *, key_id: str | None = None, secret: str | None = None
    ) -> list[Object]:
        return self.deployment.model_access(namespace, key_id=key_id, secret=secret)

    async def prepare_namespace(self, admin: Client, namespace: str) -> None:
        secret, account = self.model_access(namespace)
        await admin.create(SECRETS, secret, namespace)
        with contextlib.suppress(AlreadyExists):
            await admin.create(SERVICEACCOUNTS, account, namespace)

    def post_to_service(self, namespace: str, service: str, path: str, payload: Object) -> tuple[int, Any]:
        """Through the Service's ClusterIP, which the host routes into the node (kube-proxy does the rest)."""
        done = self.run_kubectl(
            "-n", namespace, "get", "service", service, "-o", "jsonpath={.spec.clusterIP}"
        )
        if done.returncode != 0 or not done.stdout.strip():
            raise EnvError(f"no Service {namespace}/{service}: {done.stderr.strip()}")
        return http_post_json(f"http://{done.stdout.strip()}{path}", payload, timeout=60)

    def collect(self, reason: str) -> None:
        super().collect(reason)
        lines = [
            f"reason: {reason}",
            f"cluster logs (kubelet, containerd, ...): {self.deployment.cluster.workdir / 'logs'}",
            f"container logs: {self.deployment.cluster.node_paths.root / 'log' / 'pods'}",
            f"knative double: alive={self.deployment.double_alive} log={self.deployment.double_log}",
        ]
        lines += [f"image {i.name}: {i.ref} {i.archive}" for i in self.deployment.images.values()]
        (self.artifacts / "summary.txt").write_text("\n".join(lines) + "\n")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = self.run_kubectl("get", "deployments,replicasets,services,endpoints", "-A", "-o", "wide")
            (self.artifacts / "workloads.txt").write_text(done.stdout + done.stderr)

    def close(self) -> None:
        self.deployment.stop()
