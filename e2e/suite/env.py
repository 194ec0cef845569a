"""The two places the e2e suite runs, behind one interface the tests use.

`LocalEnv` (`--target local`, offline, what CI runs) builds the deployment itself: a local control plane,
our CRDs plus the test CRDs of Knative and Istio, the ConfigMap, the runtimes and the shipped RBAC; then
two manager replicas as processes, each authenticated as the `kserve-controller-manager` ServiceAccount
(its token from the Secret the 1.20 token controller creates), with leader election, self-signed webhook
certificates in a shared directory (as a Secret volume would be shared) and the webhook configurations
pointing at a loopback forwarder standing in for the webhook Service; and the Knative Serving double as a
process with admin rights, playing Knative's part.

`KindEnv` (`--target kind`) assumes `e2e/kind/setup.sh` deployed everything on the cluster the kubeconfig
names, and uses the real Knative, Istio and cert-manager.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from apis.resources import INFERENCE_SERVICES
from e2e.localcluster.apply import apply_manifests, kustomize
from e2e.localcluster.binaries import kubectl as local_kubectl
from e2e.localcluster.cluster import LocalCluster, free_port
from e2e.suite.manifests import (
    MANAGER_NAMESPACE,
    in_namespace,
    unpatched_webhook_configurations,
    url_webhook_configurations,
    write_manifests,
)
from e2e.suite.processes import ChildProcess, ManagerProcess, http_get, http_post_json
from e2e.suite.support import SKLEARN_IRIS, sklearn_isvc
from e2e.suite.tcpproxy import TcpForwarder
from manager.client import LEASES, Client, Object
from manager.errors import NotFound
from manager.options import LEADER_ELECTION_ID

REPO = Path(__file__).resolve().parents[2]
MANAGER_SA = "kserve-controller-manager"
MANAGER_DEPLOYMENT = "kserve-controller-manager"
MANAGER_USER = f"system:serviceaccount:{MANAGER_NAMESPACE}:{MANAGER_SA}"
MANAGER_METRICS_PORT = 8080
MANAGER_SELECTOR = "control-plane=kserve-controller-manager"
DOMAIN = "example.com"
LOCAL_BASES = ("crd", "local", "configmap", "runtimes", "rbac")
# Short leases keep the SIGKILL failover test quick; the defaults (15 s) only make it slower.
LOCAL_LEASE_FLAGS = (
    "--leader-elect-lease-duration=6",
    "--leader-elect-renew-deadline=4",
    "--leader-elect-retry-period=1",
)
SUBPROCESS_TIMEOUT_S = 120.0


class EnvError(RuntimeError):
    """The deployment under test could not be set up or operated."""


def until(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check()` (sync) until it returns something truthy; raise EnvError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise EnvError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


class Env(abc.ABC):
    """What the tests need from a target."""

    target: str
    kubeconfig: Path
    kubectl: str
    artifacts: Path
    namespace = MANAGER_NAMESPACE
    domain = DOMAIN
    ready_timeout: float
    runs_pods = False
    """Whether containers really run here (kind, node): predictions, logs and exec only work there."""
    model_uri = SKLEARN_IRIS
    model_service_account: str | None = None
    predictor_resources: Object | None = None
    """Requests/limits for the model container, when the runtime's own do not fit the target."""

    def isvc(
        self,
        namespace: str,
        name: str,
        *,
        annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        **predictor: Any,
    ) -> Object:
        """The sklearn iris InferenceService, with this target's model location and resources."""
        if self.model_service_account:
            predictor.setdefault("serviceAccountName", self.model_service_account)
        obj = sklearn_isvc(
            namespace, name, annotations=annotations, labels=labels, storage_uri=self.model_uri, **predictor
        )
        if self.predictor_resources:
            obj["spec"]["predictor"]["model"].setdefault("resources", copy.deepcopy(self.predictor_resources))
        return obj

    @abc.abstractmethod
    async def prepare_namespace(self, admin: Client, namespace: str) -> None:
        """Give a fresh test namespace what this target's InferenceServices need (e.g. credentials)."""

    async def predict(
        self,
        admin: Client,
        namespace: str,
        name: str,
        payload: Object,
        *,
        protocol: str = "v1",
        revision: str | None = None,
    ) -> tuple[int, Any]:
        """POST `payload` to the model `name` through its predictor revision's Service (the latest ready
        revision unless `revision` is given): `/v1/models/<name>:predict` or `/v2/models/<name>/infer`."""
        if not self.runs_pods:
            raise EnvError(f"{self.target} mode runs no containers: nothing can answer a prediction")
        if revision is None:
            isvc = await admin.get(INFERENCE_SERVICES, name, namespace)
            revision = str(isvc["status"]["components"]["predictor"]["latestReadyRevision"])
        path = f"/v1/models/{name}:predict" if protocol == "v1" else f"/v2/models/{name}/infer"
        return await asyncio.to_thread(self.post_to_service, namespace, f"{revision}-private", path, payload)

    def post_to_service(self, namespace: str, service: str, path: str, payload: Object) -> tuple[int, Any]:
        """POST JSON to port 80 of a Service; (status, decoded body)."""
        raise EnvError(f"{self.target} mode cannot reach Services")

    @property
    def is_kind(self) -> bool:
        return self.target == "kind"

    def run_kubectl(
        self, *args: str, timeout: float = SUBPROCESS_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """kubectl against the admin kubeconfig (output captured; never raises on a non-zero exit)."""
        return subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @abc.abstractmethod
    def manager_metrics(self, leader_only: bool = True) -> str:
        """The Prometheus text of a manager replica's /metrics (the leader's by default)."""

    @abc.abstractmethod
    async def fail_over(self, admin: Client) -> tuple[str, str]:
        """Kill the leading replica without a graceful release; (old, new) lease holder once one took over."""

    @abc.abstractmethod
    async def restart_all(self, admin: Client) -> None:
        """Restart every manager replica (graceful), and wait until one leads again."""

    @abc.abstractmethod
    def manager_kubeconfig(self) -> Path:
        """A kubeconfig authenticating as the manager's ServiceAccount."""

    @abc.abstractmethod
    def manager_logs(self) -> dict[str, str]:
        """The log of every manager replica that ran during the session, by replica name."""

    @abc.abstractmethod
    def collect(self, reason: str) -> None:
        """Write diagnostics into the artifacts directory."""

    def collect_namespace(self, namespace: str) -> Path:
        """What a failed test's namespace holds, before its deletion takes the pods and their logs along:
        objects, events and every container's log (and the previous one's, after a restart)."""
        out = self.artifacts / "namespaces" / namespace
        out.mkdir(parents=True, exist_ok=True)
        kinds = ",".join(
            [
                *("all", "configmaps", "inferenceservices", "services.serving.knative.dev"),
                *("virtualservices", "ingresses", "events"),
            ]
        )
        commands: list[tuple[str, Sequence[str]]] = [
            ("objects.yaml", ("-n", namespace, "get", kinds, "-o", "yaml")),
            ("describe-pods.txt", ("-n", namespace, "describe", "pods")),
        ]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            pods = self.run_kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.split()
            for pod in pods:
                name = pod.rpartition("/")[2]
                logs = ("-n", namespace, "logs", name, "--all-containers")
                commands += [(f"{name}.log", logs), (f"{name}.previous.log", (*logs, "--previous"))]
        for file, args in commands:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                done = self.run_kubectl(*args)
                (out / file).write_text(done.stdout + done.stderr)
        return out

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the environment started."""


async def lease_holder(admin: Client, namespace: str = MANAGER_NAMESPACE) -> str:
    try:
        lease = await admin.get(LEASES, LEADER_ELECTION_ID, namespace)
    except NotFound:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def wait_new_holder(admin: Client, old: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = await lease_holder(admin)
        if holder and holder != old:
            return holder
        await asyncio.sleep(0.3)
    raise EnvError(f"no new leader within {timeout:.0f}s (still {old!r})")


# ----- local ------------------------------------------------------------------------------------------


class LocalEnv(Env):
    """The offline deployment: local control plane, managers as processes, the Knative double."""

    target = "local"
    ready_timeout = 45.0

    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.kubectl = str(local_kubectl())
        self.cluster = LocalCluster(artifacts / "cluster", extra_users=())
        self.kubeconfig = self.cluster.kubeconfig_path
        self.cert_dir = artifacts / "webhook-certs"
        self.log_dir = artifacts / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.forwarder = TcpForwarder()
        self.managers: list[ManagerProcess] = []
        self.retired: list[ManagerProcess] = []
        self.double: ChildProcess | None = None
        self.sa_kubeconfig = artifacts / "manager-sa.kubeconfig"
        self._replica = 0

    # set-up

    def start(self) -> None:
        self.cluster.start(timeout=120)
        self._install()
        self.forwarder.start()
        self._apply_webhooks(f"https://127.0.0.1:{self.forwarder.port}")
        self._write_sa_kubeconfig()
        first = self.start_manager()
        first.wait_ready()
        # The second replica starts once the first has written the certificate, so it reuses it.
        self.start_manager().wait_ready()
        self.double = ChildProcess(
            "knative-double",
            [
                sys.executable,
                "-m",
                "e2e.knative_double",
                f"--kubeconfig={self.kubeconfig}",
                # No node: a revision is ready once its pods were admitted.
                "--revision-readiness=deployment",
            ],
            self.log_dir,
            {k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            REPO,
        )
        until(self._leader, 60, "a manager replica leads")
        until(self._admission_works, 60, "the API server calls the webhooks and trusts their certificate")

    def _install(self) -> None:
        kubectl = Path(self.kubectl)
        objects: list[Object] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        ]
        for base in LOCAL_BASES:
            path = REPO / "config" / base
            if (path / "kustomization.yaml").is_file():
                objects += in_namespace(kustomize(kubectl, path), self.namespace)
        manifest = write_manifests(objects, self.artifacts / "manifests" / "installed.yaml")
        apply_manifests(self.kubeconfig, [manifest], timeout=120)

    def _apply_webhooks(self, base_url: str) -> None:
        shipped = kustomize(Path(self.kubectl), REPO / "config" / "webhook")
        missing = unpatched_webhook_configurations(shipped)
        if missing:
            raise EnvError(f"the self-signed manager would not patch the caBundle of {', '.join(missing)}")
        configs = url_webhook_configurations(shipped, base_url)
        apply_manifests(
            self.kubeconfig, [write_manifests(configs, self.artifacts / "manifests" / "webhooks.yaml")]
        )

    def _sa_token(self) -> str | None:
        status, body = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/secrets")
        if status != 200:
            return None
        for secret in body.get("items") or []:
            annotations = secret["metadata"].get("annotations") or {}
            if (
                secret.get("type") == "kubernetes.io/service-account-token"
                and annotations.get("kubernetes.io/service-account.name") == MANAGER_SA
                and (secret.get("data") or {}).get("token")
            ):
                return base64.b64decode(secret["data"]["token"]).decode()
        return None

    def _write_sa_kubeconfig(self) -> None:
        token = until(self._sa_token, 60, f"the token Secret of ServiceAccount {self.namespace}/{MANAGER_SA}")
        self.cluster.write_kubeconfig(self.sa_kubeconfig, MANAGER_SA, token)

    def start_manager(self) -> ManagerProcess:
        self._replica += 1
        manager = ManagerProcess(
            f"manager-{self._replica}",
            kubeconfig=self.sa_kubeconfig,
            namespace=self.namespace,
            cert_dir=self.cert_dir,
            log_dir=self.log_dir,
            cwd=REPO,
            extra_args=("--leader-elect", *LOCAL_LEASE_FLAGS),
        )
        self.managers.append(manager)
        self._route()
        return manager

    def _route(self) -> None:
        self.forwarder.set_backends([m.webhook_port for m in self.managers if m.alive()])

    def _leader(self) -> ManagerProcess | None:
        leaders = [m for m in self.managers if m.is_leader(LEADER_ELECTION_ID)]
        if len(leaders) > 1:
            raise EnvError(f"two replicas lead at once: {', '.join(m.name for m in leaders)}")
        return leaders[0] if leaders else None

    def _admission_works(self) -> bool:
        probe = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "admission-probe", "namespace": self.namespace},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://b/m"}}},
        }
        path = f"/apis/serving.kserve.io/v1beta1/namespaces/{self.namespace}/inferenceservices?dryRun=All"
        status, _ = self.cluster.request("POST", path, probe)
        return status == 201

    # operations

    async def prepare_namespace(self, admin: Client, namespace: str) -> None:
        """Nothing: no pod runs, so no model is downloaded and no credentials are needed."""

    def manager_kubeconfig(self) -> Path:
        return self.sa_kubeconfig

    def manager_logs(self) -> dict[str, str]:
        return {m.name: m.log_path.read_text(errors="replace") for m in [*self.managers, *self.retired]}

    def leader(self) -> ManagerProcess:
        leader: ManagerProcess = until(self._leader, 60, "a manager replica leads")
        return leader

    def manager_metrics(self, leader_only: bool = True) -> str:
        manager = self.leader() if leader_only else next(m for m in self.managers if m.alive())
        return manager.metrics_text()

    async def fail_over(self, admin: Client) -> tuple[str, str]:
        old = await lease_holder(admin)
        leader = self.leader()
        leader.kill()
        self.managers.remove(leader)
        self.retired.append(leader)
        self._route()
        new = await wait_new_holder(admin, old, timeout=60)
        # Like a ReplicaSet, bring the replica count back.
        self.start_manager()
        return old, new

    async def restart_all(self, admin: Client) -> None:
        for manager in list(self.managers):
            code = manager.stop()
            if code != 0:
                raise EnvError(f"manager {manager.name} exited with {code} on SIGTERM:\n{manager.tail()}")
            self.managers.remove(manager)
            self.retired.append(manager)
        self._route()
        self.start_manager().wait_ready()
        self.start_manager().wait_ready()
        self.leader()

    def collect(self, reason: str) -> None:
        lines = [f"reason: {reason}"]
        for manager in [*self.managers, *self.retired]:
            lines.append(f"{manager.name}: pid {manager.pid} alive={manager.alive()} log={manager.log_path}")
        if self.double is not None:
            lines.append(f"double: alive={self.double.alive()} log={self.double.log_path}")
        (self.artifacts / "summary.txt").write_text("\n".join(lines) + "\n")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = self.run_kubectl(
                "get", "inferenceservices,services.serving.knative.dev,pods,events", "-A", "-o", "wide"
            )
            (self.artifacts / "resources.txt").write_text(done.stdout + done.stderr)

    def close(self) -> None:
        for process in [*self.managers, *([self.double] if self.double else [])]:
            if process.alive():
                process.stop()
        self.forwarder.stop()
        self.cluster.stop()


# ----- a manager Deployment in a real cluster (kind, or the local node) ------------------------------------


class DeployedEnv(Env):
    """A cluster where the manager runs as the shipped Deployment: failover is deleting the leader's Pod,
    a restart is a rollout restart, and metrics come through a port-forward to the leader's Pod."""

    _retired_logs: dict[str, str]

    def manager_kubeconfig(self) -> Path:
        """A kubeconfig with a token of the manager's ServiceAccount from the TokenRequest API (Kubernetes
        1.20 and later), for the cluster the admin kubeconfig names."""
        path = self.artifacts / "manager-sa.kubeconfig"
        if path.is_file():
            return path
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        body = self.artifacts / "token-request.json"
        body.write_text(json.dumps(request))
        account = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{MANAGER_SA}/token"
        done = self.run_kubectl("create", "--raw", account, "-f", str(body))
        if done.returncode != 0:
            raise EnvError(f"cannot get a token of {MANAGER_USER}: {done.stderr.strip()}")
        token = json.loads(done.stdout)["status"]["token"]
        config = yaml.safe_load(self.kubeconfig.read_text())
        context = config["contexts"][0]
        context["context"]["user"] = MANAGER_SA
        config["contexts"] = [context]
        config["current-context"] = context["name"]
        config["users"] = [{"name": MANAGER_SA, "user": {"token": token}}]
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _manager_pods(self) -> list[str]:
        done = self.run_kubectl(
            "-n",
            self.namespace,
            "get",
            "pods",
            "-l",
            MANAGER_SELECTOR,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        )
        return done.stdout.split()

    def _pod_log(self, pod: str) -> str:
        return self.run_kubectl("-n", self.namespace, "logs", pod, "--all-containers").stdout

    def _retire(self, pods: Sequence[str]) -> None:
        """Keep the logs of manager pods about to go (a deleted pod's log goes with it)."""
        if not hasattr(self, "_retired_logs"):
            self._retired_logs = {}
        for pod in pods:
            self._retired_logs[pod] = self._pod_log(pod)

    def manager_logs(self) -> dict[str, str]:
        logs = dict(getattr(self, "_retired_logs", {}))
        logs.update({pod: self._pod_log(pod) for pod in self._manager_pods()})
        return logs

    def _leader_pod(self) -> str:
        done = self.run_kubectl(
            "-n", self.namespace, "get", "lease", LEADER_ELECTION_ID, "-o", "jsonpath={.spec.holderIdentity}"
        )
        holder = done.stdout.strip()
        if done.returncode != 0 or not holder:
            raise EnvError(f"no leader lease: {done.stderr.strip()}")
        return holder.split("_", 1)[0]

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, remote_port: int) -> Iterator[int]:
        """`kubectl port-forward` to `target` (pod/x, svc/y) for the duration; yields the local port."""
        local = free_port()
        proc = subprocess.Popen(
            [
                self.kubectl,
                f"--kubeconfig={self.kubeconfig}",
                "-n",
                namespace,
                "port-forward",
                "--address=127.0.0.1",
                target,
                f"{local}:{remote_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            until(lambda: _accepts(local) or proc.poll() is not None, 30, f"port-forward to {target}")
            if proc.poll() is not None:
                error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise EnvError(f"kubectl port-forward {target} exited: {error.strip()}")
            yield local
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    runs_pods = True

    def pod_exec(self, namespace: str, pod: str, container: str, *argv: str) -> str:
        """Run `argv` in a container of a running pod (kubectl exec); its standard output."""
        done = self.run_kubectl("-n", namespace, "exec", pod, "-c", container, "--", *argv)
        if done.returncode != 0:
            raise EnvError(f"exec in {namespace}/{pod}/{container} failed: {done.stderr.strip()}")
        return done.stdout

    def logs(self, namespace: str, pod: str, container: str, *, previous: bool = False) -> str:
        """A container's log (kubectl logs), with kubectl's error text when there is none."""
        args = ["-n", namespace, "logs", pod, "-c", container, *(["--previous"] if previous else [])]
        done = self.run_kubectl(*args)
        return done.stdout + done.stderr

    def post_to_service(self, namespace: str, service: str, path: str, payload: Object) -> tuple[int, Any]:
        with self.port_forward(namespace, f"svc/{service}", 80) as port:
            return http_post_json(f"http://127.0.0.1:{port}{path}", payload, timeout=60)

    def manager_metrics(self, leader_only: bool = True) -> str:
        pod = self._leader_pod()
        with self.port_forward(self.namespace, f"pod/{pod}", MANAGER_METRICS_PORT) as port:
            status, text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        if status != 200:
            raise EnvError(f"manager pod {pod} /metrics answered HTTP {status}")
        return text

    def _rollout(self, failure: str = "manager rollout did not finish") -> None:
        done = self.run_kubectl(
            "-n",
            self.namespace,
            "rollout",
            "status",
            f"deployment/{MANAGER_DEPLOYMENT}",
            "--timeout=300s",
            timeout=330,
        )
        if done.returncode != 0:
            raise EnvError(f"{failure}: {done.stderr.strip()}")

    async def fail_over(self, admin: Client) -> tuple[str, str]:
        old = await lease_holder(admin)
        pod = old.split("_", 1)[0]
        self._retire([pod])
        done = self.run_kubectl(
            "-n", self.namespace, "delete", "pod", pod, "--grace-period=0", "--force", "--wait=false"
        )
        if done.returncode != 0:
            raise EnvError(f"cannot delete manager pod {pod}: {done.stderr.strip()}")
        new = await wait_new_holder(admin, old, timeout=120)
        self._rollout()
        return old, new

    async def restart_all(self, admin: Client) -> None:
        self._retire(self._manager_pods())
        done = self.run_kubectl(
            "-n", self.namespace, "rollout", "restart", f"deployment/{MANAGER_DEPLOYMENT}"
        )
        if done.returncode != 0:
            raise EnvError(f"rollout restart failed: {done.stderr.strip()}")
        self._rollout()
        until(self._leader_pod_or_none, 120, "a manager pod leads after the restart", interval=1)

    def _leader_pod_or_none(self) -> str | None:
        try:
            return self._leader_pod()
        except EnvError:
            return None

    def collect(self, reason: str) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        commands: Sequence[tuple[str, Sequence[str]]] = (
            ("get-all.txt", ("get", "all,inferenceservices,ksvc,virtualservices", "-A", "-o", "wide")),
            ("events.txt", ("get", "events", "-A", "--sort-by=.lastTimestamp")),
            ("describe-isvc.txt", ("describe", "inferenceservices", "-A")),
            ("describe-pods.txt", ("describe", "pods", "-A")),
            (
                "manager.log",
                (
                    "-n",
                    self.namespace,
                    "logs",
                    f"deployment/{MANAGER_DEPLOYMENT}",
                    "--all-containers",
                    "--tail=2000",
                ),
            ),
        )
        for name, args in commands:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                done = self.run_kubectl(*args)
                (self.artifacts / name).write_text(f"# {reason}\n{done.stdout}{done.stderr}")


class KindEnv(DeployedEnv):
    """A cluster prepared by e2e/kind/setup.sh: the manager Deployment, real Knative and Istio."""

    target = "kind"
    ready_timeout = 600.0

    def __init__(self, kubeconfig: Path, kubectl: str, artifacts: Path) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.artifacts = artifacts

    def start(self) -> None:
        if shutil.which(self.kubectl) is None and not Path(self.kubectl).is_file():
            raise EnvError(f"kubectl not found: {self.kubectl}")
        self._rollout("the manager Deployment is not rolled out (run e2e/kind/setup.sh)")

    async def prepare_namespace(self, admin: Client, namespace: str) -> None:
        """Nothing: the samples' model is public (gs://kfserving-examples)."""

    def close(self) -> None:
        """Nothing to release: the cluster belongs to setup.sh/teardown.sh."""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def make_artifacts_dir(given: str | None) -> tuple[Path, bool]:
    """The artifacts directory and whether the suite created it (and may remove it when all passed)."""
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix="kserve-e2e-")), True
