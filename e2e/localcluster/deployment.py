"""The whole product, offline, on the local node: what `make run` gives a newcomer and what e2e tests run on.

Starting from nothing but this repository, it builds the images (`e2e.images`), starts a cluster with a real
node, imports the images, and deploys `config/overlays/self-signed` exactly as shipped except for the image
references, which point at the offline images. So the manager runs as a Pod, as its ServiceAccount with the
shipped RBAC, behind its probes, and the API server calls its webhooks through the webhook Service.

Around it, what a real cluster would have and an offline machine lacks:

* the Knative Serving double (`e2e.knative_double`), a process with admin rights, playing Knative's
  controllers: each revision becomes a Deployment and Services, with the qpext image (wrapping the
  queue-proxy stand-in) as the queue-proxy container, named in `config-deployment` as Knative reads it;
* an S3 store (moto, `e2e/images/s3`) in namespace `kserve-e2e-store`, holding an iris model, whose key
  pair is new at every start: `model_access()` gives a namespace the Secret and ServiceAccount that let the
  storage initializer download it, through the pod webhook's credential injection.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from e2e.images import BuiltImage, ImageBuildError, build_images
from e2e.localcluster.apply import ApplyError, apply_manifests, kustomize
from e2e.localcluster.binaries import kubectl, repo_root
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

Object = dict[str, Any]

IMAGES = ("manager", "qpext", "sklearnserver", "storage-initializer", "s3")
UPSTREAM_IMAGES = {
    "kserve-py/manager": "manager",
    "kserve/sklearnserver": "sklearnserver",
    "kserve/storage-initializer": "storage-initializer",
}
"""The shipped image repositories (any tag) and the offline image that replaces each."""
EXTRA_SKLEARN_TAGS = ("v0.11.1",)
"""`runtimeVersion` values the e2e suite uses: the offline sklearn image under these tags too."""

MANAGER_NAMESPACE = "kserve"
MANAGER_DEPLOYMENT = "kserve-controller-manager"
KNATIVE_NAMESPACE = "knative-serving"
PROGRESS_DEADLINE = "120s"
"""Knative's `progress-deadline` (600s by default): how long a revision may take before a stuck pod fails
it."""

STORE_NAMESPACE = "kserve-e2e-store"
STORE_PORT = 9000
STORE_HOST = f"s3.{STORE_NAMESPACE}.svc.cluster.local"
IRIS_URI = "s3://example-models/sklearn/iris"
MODEL_SERVICE_ACCOUNT = "kserve-e2e-models"
MODEL_SECRET = "kserve-e2e-s3"
CREDENTIALS_LINE = re.compile(r"credentials: AWS_ACCESS_KEY_ID=(\S+) AWS_SECRET_ACCESS_KEY=(\S+)")
MODEL_RESOURCES: Object = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
"""The shipped sklearn runtime asks for a whole CPU and 2Gi; a 2-core node could not run a canary with it."""
KUBECTL_TIMEOUT_S = 330.0


class DeploymentError(RuntimeError):
    """The offline deployment could not be built, started or operated (one line, naming what failed)."""


def replace_images(objects: Sequence[Object], refs: Mapping[str, str]) -> list[Object]:
    """Copies of `objects` with every image of a repository in `refs` (any tag) replaced by its ref:
    container images anywhere in an object, and images inside the JSON values of `inferenceservice-config`."""

    def image(value: str) -> str:
        name = value.split("@")[0]
        repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        return refs.get(repository, value)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: image(v) if k == "image" and isinstance(v, str) else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: list[Object] = [walk(obj) for obj in objects]
    for obj in out:
        if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == "inferenceservice-config":
            data = obj.get("data") or {}
            for key, value in data.items():
                with contextlib.suppress(ValueError):
                    parsed = json.loads(value)
                    replaced = walk(parsed)
                    if replaced != parsed:
                        data[key] = json.dumps(replaced, indent=2)
    return out


def with_manager(objects: Sequence[Object], args: Sequence[str], replicas: int | None) -> list[Object]:
    """Copies of `objects` where the manager container gets `args` appended (`make run ARGS=...`) and the
    Deployment `replicas` (when given)."""
    out = [json.loads(json.dumps(obj)) for obj in objects]
    for obj in out:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] == MANAGER_DEPLOYMENT:
            manager = obj["spec"]["template"]["spec"]["containers"][0]
            manager["args"] = [*manager.get("args", []), *args]
            if replicas is not None:
                obj["spec"]["replicas"] = replicas
    return out


def model_access(namespace: str, credentials: tuple[str, str], *, secret: str = MODEL_SECRET) -> list[Object]:
    """The Secret (KServe's S3 keys and `serving.kserve.io/s3-*` annotations) and the ServiceAccount naming
    it, through which InferenceServices in `namespace` read the store."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret,
                "namespace": namespace,
                "annotations": {
                    "serving.kserve.io/s3-endpoint": f"{STORE_HOST}:{STORE_PORT}",
                    "serving.kserve.io/s3-usehttps": "0",
                    "serving.kserve.io/s3-region": "us-east-1",
                },
            },
            "type": "Opaque",
            "stringData": {"AWS_ACCESS_KEY_ID": credentials[0], "AWS_SECRET_ACCESS_KEY": credentials[1]},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": MODEL_SERVICE_ACCOUNT, "namespace": namespace},
            "secrets": [{"name": secret}],
        },
    ]


def store_objects(image: str) -> list[Object]:
    """The S3 store: one Deployment (ready once the model is uploaded) and its Service."""
    labels = {"app": "s3"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORE_NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "s3", "namespace": STORE_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        # No `S3_*` variables for the Service named s3 in the store's environment.
                        "enableServiceLinks": False,
                        "containers": [
                            {
                                "name": "s3",
                                "image": image,
                                "ports": [{"containerPort": STORE_PORT, "protocol": "TCP"}],
                                "readinessProbe": {
                                    "exec": {"command": ["test", "-f", "/tmp/ready"]},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s3", "namespace": STORE_NAMESPACE},
            "spec": {
                "selector": labels,
                "ports": [{"port": STORE_PORT, "targetPort": STORE_PORT, "protocol": "TCP"}],
            },
        },
    ]


class LocalDeployment:
    """Build, start and stop the offline deployment (see the module docstring)."""

    def __init__(
        self,
        workdir: Path,
        *,
        manager_args: Sequence[str] = (),
        replicas: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalCluster(workdir / "cluster", node=True, extra_users=())
        self.manager_args = list(manager_args)
        self.replicas = replicas
        self.log = log or (lambda line: None)
        self.images: dict[str, BuiltImage] = {}
        self.credentials: tuple[str, str] | None = None
        self.double_log = workdir / "knative-double.log"
        self._double: subprocess.Popen[bytes] | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig_path

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl v1.20.2 against the cluster as admin (never raises on a non-zero exit)."""
        return subprocess.run(
            [str(kubectl()), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_S,
            check=False,
        )

    def start(self) -> None:
        """Everything, in order; on failure what was started is stopped and DeploymentError raised."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.log("building images (cached; the first build takes several minutes)")
        try:
            self.images = build_images(IMAGES, log=self.log)
        except ImageBuildError as exc:
            raise DeploymentError(f"cannot build the images: {exc}") from exc
        self.log("starting the cluster and its node")
        try:
            self.cluster.start(timeout=180)
            self.cluster.load_images([image.archive for image in self.images.values()])
            sklearn = self.images["sklearnserver"].ref
            for tag in EXTRA_SKLEARN_TAGS:
                self.cluster.tag_image(sklearn, f"{sklearn.rsplit(':', 1)[0]}:{tag}")
        except LocalClusterError as exc:
            raise DeploymentError(str(exc)) from exc
        self.log("deploying config/overlays/self-signed, the Knative double and the S3 store")
        try:
            self._apply(self._manifests(), "installed.yaml")
            self._apply(store_objects(self.images["s3"].ref), "s3-store.yaml")
        except ApplyError as exc:
            raise DeploymentError(f"cannot apply the manifests: {exc}") from exc
        self._start_double()
        self._wait("-n", STORE_NAMESPACE, "rollout", "status", "deployment/s3", "--timeout=300s")
        self.credentials = self._until(self._store_credentials, 60, "the S3 store's credentials in its log")
        self.log("waiting for the manager Deployment (readiness: caches synced, webhook certificate served)")
        self._wait(
            "-n", MANAGER_NAMESPACE, "rollout", "status", f"deployment/{MANAGER_DEPLOYMENT}", "--timeout=300s"
        )
        self._until(self._admission_works, 120, "the API server calls the webhooks through their Service")

    def _manifests(self) -> list[Object]:
        tool = kubectl()
        root = repo_root()
        refs = {upstream: self.images[name].ref for upstream, name in UPSTREAM_IMAGES.items()}
        deployed = replace_images(kustomize(tool, root / "config" / "overlays" / "self-signed"), refs)
        knative: list[Object] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KNATIVE_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "config-deployment", "namespace": KNATIVE_NAMESPACE},
                "data": {
                    "queue-sidecar-image": self.images["qpext"].ref,
                    "progress-deadline": PROGRESS_DEADLINE,
                },
            },
        ]
        return [
            *kustomize(tool, root / "config" / "local"),
            *knative,
            *with_manager(deployed, self.manager_args, self.replicas),
        ]

    def _apply(self, objects: Sequence[Object], name: str) -> None:
        path = self.workdir / "manifests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n---\n".join(json.dumps(obj) for obj in objects) + "\n")
        apply_manifests(self.kubeconfig, [path], timeout=180)

    def _start_double(self) -> None:
        with self.double_log.open("ab") as log:
            self._double = subprocess.Popen(
                [sys.executable, "-m", "e2e.knative_double", f"--kubeconfig={self.kubeconfig}"],
                cwd=repo_root(),
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def double_alive(self) -> bool:
        return self._double is not None and self._double.poll() is None

    def _wait(self, *args: str) -> None:
        done = self.kubectl(*args)
        if done.returncode != 0:
            raise DeploymentError(f"kubectl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")

    def _until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if not self.double_alive:
                raise DeploymentError(f"the Knative double exited; see {self.double_log}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"not within {timeout:.0f}s: {what}")
            time.sleep(0.5)

    def _store_credentials(self) -> tuple[str, str] | None:
        match = CREDENTIALS_LINE.search(self.kubectl("-n", STORE_NAMESPACE, "logs", "deployment/s3").stdout)
        return (match.group(1), match.group(2)) if match else None

    def _admission_works(self) -> bool:
        probe = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "admission-probe", "namespace": MANAGER_NAMESPACE},
            "spec": {"predictor": {"sklearn": {"storageUri": "gs://b/m"}}},
        }
        path = f"/apis/serving.kserve.io/v1beta1/namespaces/{MANAGER_NAMESPACE}/inferenceservices?dryRun=All"
        status, body = self.cluster.request("POST", path, probe)
        # The defaulter moved the legacy `sklearn:` key to `model:`: the mutating webhook answered.
        return status == 201 and "model" in body.get("spec", {}).get("predictor", {})

    def model_access(
        self, namespace: str, *, key_id: str | None = None, secret: str | None = None
    ) -> list[Object]:
        """`model_access()` for `namespace` with the store's key pair (or the given, e.g. wrong, one)."""
        if self.credentials is None:
            raise DeploymentError("the S3 store has not started")
        return model_access(namespace, (key_id or self.credentials[0], secret or self.credentials[1]))

    def stop(self) -> None:
        """Stop the double and remove the cluster. Idempotent."""
        if self._double is not None and self._double.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._double.pid, signal.SIGTERM)
            try:
                self._double.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._double.pid, signal.SIGKILL)
                self._double.wait()
        self.cluster.stop()
