"""The deployable manifests under config/: they build, the API server accepts them, and they are safe.

Built with the kustomize inside kubectl v1.20.2 (v2.0.3, the oldest we support) and checked against the
local kube-apiserver with `kubectl apply --dry-run=server`: schema, defaulting and admission run, nothing is
stored. The build output exists only inside the tests. The CRDs the manifests instantiate are installed
first (ours, the Knative/Istio test CRDs of config/local, and test stand-ins for cert-manager's Issuer and
Certificate), and the `kserve` and `monitoring` namespaces are created, because a server-side dry run
cannot create what later objects need.

The security checks run on the rendered objects, so a patch in an overlay cannot silently undo them: the
manager's pod meets the restricted Pod Security Standard (plus a read-only root filesystem), and its RBAC
has no wildcard, reads Secrets only by name, and writes only what the manager owns.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis.config import InferenceServicesConfig
from apis.inferenceservice import ModelFormat
from apis.servingruntime import ClusterServingRuntime, supporting_runtimes
from e2e.localcluster.apply import apply_manifests
from e2e.localcluster.binaries import kubectl
from e2e.localcluster.cluster import LocalCluster
from webhooks.inferenceservice import default_inference_service, validate_inference_service

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
CERT_MANAGER_CRDS = Path(__file__).parent / "fixtures" / "cert-manager-crds.yaml"
KUBECTL_TIMEOUT_S = 120.0
MANAGER_SA = "system:serviceaccount:kserve:kserve-controller-manager"

OVERLAYS = ["default", "overlays/self-signed"]
SELF_SIGNED_ROLE = CONFIG / "overlays" / "self-signed" / "certificate_secret_role.yaml"
WEBHOOK_SECRET = "secrets/kserve-webhook-server-cert"
BASES = ["crd", "configmap", "rbac", "manager", "webhook", "certmanager", "runtimes", "local"]
SAMPLES = sorted((CONFIG / "samples").glob("*.yaml"))

Object = dict[str, Any]


def run_kubectl(*args: str, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
    """Run kubectl v1.20.2; fail the test with its stderr when it exits non-zero."""
    argv = [str(kubectl())]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}", pytrace=False)
    return result.stdout


def render(directory: str) -> list[Object]:
    """`kubectl kustomize config/<directory>` as objects."""
    return [d for d in yaml.safe_load_all(run_kubectl("kustomize", str(CONFIG / directory))) if d]


def only(objects: list[Object], kind: str, name: str | None = None) -> Object:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="module")
def prepared(local_cluster: LocalCluster) -> Path:
    """Admin kubeconfig of a cluster with the CRDs and namespaces the manifests need."""
    kubeconfig = local_cluster.kubeconfig_path
    apply_manifests(kubeconfig, [CONFIG / "crd", CONFIG / "local", CERT_MANAGER_CRDS])
    for namespace in ("kserve", "monitoring"):
        run_kubectl("apply", "-f", "-", kubeconfig=kubeconfig, stdin=yaml.safe_dump(_namespace(namespace)))
    return kubeconfig


def _namespace(name: str) -> Object:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# --- build and server-side dry run -------------------------------------------------------------------


@pytest.mark.parametrize("directory", [*OVERLAYS, *BASES, "prometheus-adapter"])
def test_kustomization_builds_with_kubectl_1_20(directory: str) -> None:
    assert render(directory), f"config/{directory} rendered no objects"


@pytest.mark.parametrize("directory", [*OVERLAYS, *BASES])
def test_server_side_dry_run_accepts_the_kustomization(prepared: Path, directory: str) -> None:
    out = run_kubectl("apply", "--dry-run=server", "-k", str(CONFIG / directory), kubeconfig=prepared)
    rendered = render(directory)
    assert out.count("(server dry run)") == len(rendered), out


def test_default_overlay_wires_cert_manager_to_every_webhook_configuration() -> None:
    objects = render("default")
    certificate = only(objects, "Certificate", "serving-cert")
    assert certificate["metadata"]["namespace"] == "kserve"
    assert certificate["spec"]["secretName"] == "kserve-webhook-server-cert"
    service = only(objects, "Service", "kserve-webhook-server-service")
    assert service["metadata"]["namespace"] == "kserve"
    assert "kserve-webhook-server-service.kserve.svc" in certificate["spec"]["dnsNames"]
    configurations = [o for o in objects if o["kind"].endswith("WebhookConfiguration")]
    assert len(configurations) == 3
    for configuration in configurations:
        assert (
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == "kserve/serving-cert"
        )
        for webhook in configuration["webhooks"]:
            assert webhook["clientConfig"]["service"]["name"] == "kserve-webhook-server-service"
            assert webhook["clientConfig"]["service"]["namespace"] == "kserve"
    deployment = only(objects, "Deployment", "kserve-controller-manager")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cert"]["secret"]["secretName"] == certificate["spec"]["secretName"]


def test_self_signed_overlay_needs_no_cert_manager() -> None:
    objects = render("overlays/self-signed")
    assert not [o for o in objects if o["apiVersion"].startswith("cert-manager.io/")]
    for configuration in (o for o in objects if o["kind"].endswith("WebhookConfiguration")):
        assert "cert-manager.io/inject-ca-from" not in (configuration["metadata"].get("annotations") or {})
    deployment = only(objects, "Deployment", "kserve-controller-manager")
    pod = deployment["spec"]["template"]["spec"]
    assert "--webhook-self-signed" in pod["containers"][0]["args"]
    assert {v["name"]: v for v in pod["volumes"]}["cert"] == {"name": "cert", "emptyDir": {}}


def test_self_signed_overlay_lets_replicas_share_the_certificate_secret_and_write_nothing_else() -> None:
    """The replicas share their certificate through the Secret named by SECRET_NAME (webhooks/certs.py), so
    the overlay does not pin the replica count, and it may write exactly that Secret."""
    objects = render("overlays/self-signed")
    deployment = only(objects, "Deployment", "kserve-controller-manager")
    base = only(render("manager"), "Deployment", "kserve-controller-manager")
    assert deployment["spec"]["replicas"] == base["spec"]["replicas"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    secret_name = {e["name"]: e.get("value") for e in container["env"]}["SECRET_NAME"]
    role = only(objects, "Role", "kserve-webhook-cert-role")
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret_name],
            "verbs": ["get", "update"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ]
    binding = only(objects, "RoleBinding", "kserve-webhook-cert-rolebinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kserve-controller-manager", "namespace": "kserve"}
    ]
    secret_writers = [
        o["metadata"]["name"]
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
        for rule in o["rules"]
        if "secrets" in rule["resources"] and set(rule["verbs"]) - {"get"}
    ]
    assert secret_writers == ["kserve-webhook-cert-role", "kserve-webhook-cert-role"]
    assert "kserve-webhook-cert-role" not in {o["metadata"]["name"] for o in render("default")}


def test_self_signed_overlay_keeps_every_flag_of_the_base_deployment() -> None:
    base = only(render("manager"), "Deployment", "kserve-controller-manager")
    overlay = only(render("overlays/self-signed"), "Deployment", "kserve-controller-manager")
    base_args = base["spec"]["template"]["spec"]["containers"][0]["args"]
    overlay_args = overlay["spec"]["template"]["spec"]["containers"][0]["args"]
    assert overlay_args == [*base_args, "--webhook-self-signed"]


def test_prometheus_adapter_manifests_are_accepted(prepared: Path) -> None:
    """The adapter rules as they are; the HPA as autoscaling/v2beta2, because the local API server (1.20)
    predates autoscaling/v2 (1.23), whose fields used here are identical."""
    objects = render("prometheus-adapter")
    for obj in objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            assert obj["apiVersion"] == "autoscaling/v2"
            obj["apiVersion"] = "autoscaling/v2beta2"
    out = run_kubectl(
        "apply", "--dry-run=server", "-f", "-", kubeconfig=prepared, stdin=yaml.safe_dump_all(objects)
    )
    assert out.count("(server dry run)") == len(objects), out


def test_runtimes_carry_kserve_prometheus_annotations() -> None:
    runtimes = {o["metadata"]["name"]: o["spec"] for o in render("runtimes")}
    ports = {name: spec["annotations"]["prometheus.kserve.io/port"] for name, spec in runtimes.items()}
    assert ports == {
        "kserve-sklearnserver": "8080",
        "kserve-xgbserver": "8080",
        "kserve-lgbserver": "8080",
        "kserve-paddleserver": "8080",
        "kserve-pmmlserver": "8080",
        "kserve-mlserver": "8080",
        "kserve-torchserve": "8082",
        "kserve-tensorflow-serving": "8080",
        "kserve-tritonserver": "8002",
    }
    for spec in runtimes.values():
        assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
        assert [c["name"] for c in spec["containers"]] == ["kserve-container"]
    formats = {
        (f["name"], n) for n, s in runtimes.items() for f in s["supportedModelFormats"] if f.get("autoSelect")
    }
    for name in (
        "sklearn",
        "xgboost",
        "lightgbm",
        "paddle",
        "pmml",
        "mlflow",
        "pytorch",
        "tensorflow",
        "onnx",
        "triton",
    ):
        assert any(f == name for f, _ in formats), f"no runtime auto-selects {name}"


@pytest.mark.parametrize(
    ("model_format", "protocol", "expected"),
    [
        ("sklearn", "v1", "kserve-sklearnserver"),
        ("sklearn", "v2", "kserve-mlserver"),
        ("xgboost", "v1", "kserve-xgbserver"),
        ("xgboost", "v2", "kserve-mlserver"),
        ("lightgbm", "v1", "kserve-lgbserver"),
        ("lightgbm", "v2", "kserve-mlserver"),
        ("paddle", "v1", "kserve-paddleserver"),
        ("pmml", "v1", "kserve-pmmlserver"),
        ("mlflow", "v2", "kserve-mlserver"),
        ("pytorch", "v1", "kserve-torchserve"),
        ("pytorch", "grpc-v1", "kserve-torchserve"),
        ("tensorflow", "v1", "kserve-tensorflow-serving"),
        ("tensorflow", "v2", "kserve-tritonserver"),
        ("onnx", "v2", "kserve-tritonserver"),
        ("triton", "v2", "kserve-tritonserver"),
    ],
)
def test_shipped_runtimes_select_as_in_kserve(model_format: str, protocol: str, expected: str) -> None:
    runtimes = [ClusterServingRuntime.from_object(o) for o in render("runtimes")]
    found = supporting_runtimes([], runtimes, ModelFormat(name=model_format), protocol)
    assert [r.name for r in found][:1] == [expected]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_is_valid_and_accepted(prepared: Path, namespace: str, sample: Path) -> None:
    (isvc,) = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    config = InferenceServicesConfig.from_configmap(
        only(render("configmap"), "ConfigMap", "inferenceservice-config")["data"]
    )
    defaulted = default_inference_service(isvc, config=config)
    assert validate_inference_service(defaulted, config=config) == []
    run_kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(sample), kubeconfig=prepared)


# --- restricted Pod Security Standard -----------------------------------------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Object) -> list[str]:
    """What keeps a pod spec from the restricted Pod Security Standard, plus a read-only root filesystem."""
    problems: list[str] = []
    pod_sc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} has type {sorted(kinds - ALLOWED_VOLUME_TYPES)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as UID 0")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    for container in containers:
        name = container["name"]
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp or 'unset'}, not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"{name}: uses a hostPort")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manager_pod_meets_the_restricted_pod_security_standard(overlay: str) -> None:
    deployment = only(render(overlay), "Deployment", "kserve-controller-manager")
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["serviceAccountName"] == "kserve-controller-manager"
    assert pod["terminationGracePeriodSeconds"] > 30


DROP = object()
BREAKAGES = [
    ("container", "allowPrivilegeEscalation", DROP, "allowPrivilegeEscalation is not false"),
    ("container", "capabilities", {"drop": ["NET_RAW"]}, "do not drop ALL"),
    ("container", "capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "adds capabilities"),
    ("container", "runAsNonRoot", False, "runAsNonRoot is not true"),
    ("container", "runAsUser", 0, "runs as UID 0"),
    ("pod", "seccompProfile", DROP, "seccompProfile is unset"),
    ("container", "readOnlyRootFilesystem", False, "root filesystem is writable"),
    ("container", "privileged", True, "privileged"),
    ("pod", "hostNetwork", True, "hostNetwork is set"),
    ("pod", "volumes", [{"name": "h", "hostPath": {"path": "/"}}], "volume h has type ['hostPath']"),
]


@pytest.mark.parametrize(("where", "key", "value", "message"), BREAKAGES)
def test_restricted_check_reports_a_violation(where: str, key: str, value: object, message: str) -> None:
    pod = only(render("manager"), "Deployment", "kserve-controller-manager")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    target = {
        "pod": pod if key in ("hostNetwork", "volumes") else pod["securityContext"],
        "container": pod["containers"][0]["securityContext"],
    }[where]
    if value is DROP:
        del target[key]
    else:
        target[key] = value
    assert any(message in problem for problem in restricted_violations(pod)), restricted_violations(pod)


def test_manager_deployment_matches_the_webhook_and_metrics_services() -> None:
    objects = render("default")
    deployment = only(objects, "Deployment", "kserve-controller-manager")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "manager"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 8080
    assert ports["webhook-server"] == 9443
    for name in ("kserve-webhook-server-service", "kserve-controller-manager-metrics-service"):
        service = only(objects, "Service", name)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# --- RBAC ---------------------------------------------------------------------------------------------


def rbac_rules() -> Iterator[tuple[str, Object]]:
    for obj in render("rbac"):
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                yield f"{obj['kind']} {obj['metadata']['name']}", rule


def test_roles_have_no_wildcards_and_read_secrets_only_by_name() -> None:
    rules = list(rbac_rules())
    assert rules
    for where, rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(field) or []), f"{where}: wildcard in {field}"
        assert "nonResourceURLs" not in rule, where
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
    secret_rules = [r for _, r in rules if "" in r["apiGroups"] and "secrets" in r["resources"]]
    assert [r["verbs"] for r in secret_rules] == [["get"]]
    assert secret_rules[0]["resources"] == ["secrets"]


@pytest.fixture(scope="module")
def rbac_installed(prepared: Path) -> Path:
    """config/rbac and the self-signed overlay's certificate Secret Role applied for real, so that the API
    server's authorizer can be asked."""
    run_kubectl("apply", "-k", str(CONFIG / "rbac"), kubeconfig=prepared)
    run_kubectl("apply", "-f", str(SELF_SIGNED_ROLE), kubeconfig=prepared)
    return prepared


def can_i(kubeconfig: Path, verb: str, resource: str, namespace: str | None, subresource: str = "") -> bool:
    argv = [
        str(kubectl()),
        "--kubeconfig",
        str(kubeconfig),
        "auth",
        "can-i",
        verb,
        resource,
        "--as",
        MANAGER_SA,
    ]
    argv += ["-n", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        argv += ["--subresource", subresource]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {resource}: {result.stderr.strip()}"
    return answer == "yes"


# (verb, resource, where: "user" = any user namespace, "kserve" = the manager's namespace, "" = cluster)
GRANTED = [
    ("get", "secrets", "user"),
    ("get", "serviceaccounts", "user"),
    ("list", "inferenceservices.serving.kserve.io", ""),
    ("patch", "inferenceservices.serving.kserve.io", "user"),
    ("update", "inferenceservices.serving.kserve.io/status", "user"),
    ("update", "trainedmodels.serving.kserve.io/status", "user"),
    ("delete", "trainedmodels.serving.kserve.io", "user"),
    ("watch", "clusterservingruntimes.serving.kserve.io", ""),
    ("list", "clusterstoragecontainers.serving.kserve.io", ""),
    ("watch", "clusterstoragecontainers.serving.kserve.io", ""),
    ("create", "services.serving.knative.dev", "user"),
    ("delete", "services.serving.knative.dev", "user"),
    ("patch", "virtualservices.networking.istio.io", "user"),
    ("patch", "services", "user"),
    ("delete", "services", "user"),
    # RawDeployment: a Deployment, a Service and an HPA per component, an Ingress per InferenceService
    ("watch", "deployments.apps", ""),
    ("create", "deployments.apps", "user"),
    ("patch", "deployments.apps", "user"),
    ("delete", "deployments.apps", "user"),
    ("list", "horizontalpodautoscalers.autoscaling", ""),
    ("create", "horizontalpodautoscalers.autoscaling", "user"),
    ("patch", "horizontalpodautoscalers.autoscaling", "user"),
    ("delete", "horizontalpodautoscalers.autoscaling", "user"),
    ("watch", "ingresses.networking.k8s.io", ""),
    ("create", "ingresses.networking.k8s.io", "user"),
    ("patch", "ingresses.networking.k8s.io", "user"),
    ("delete", "ingresses.networking.k8s.io", "user"),
    ("watch", "pods", ""),
    ("create", "configmaps", "user"),
    ("update", "configmaps", "user"),
    ("watch", "configmaps", "kserve"),
    ("create", "events", "user"),
    ("update", "leases.coordination.k8s.io", "kserve"),
    ("patch", "validatingwebhookconfigurations/trainedmodel.serving.kserve.io", ""),
    ("patch", "mutatingwebhookconfigurations/inferenceservice.serving.kserve.io", ""),
    # self-signed overlay: the shared webhook certificate Secret
    ("get", WEBHOOK_SECRET, "kserve"),
    ("update", WEBHOOK_SECRET, "kserve"),
    ("create", "secrets", "kserve"),
]
DENIED = [
    ("list", "secrets", "user"),
    ("watch", "secrets", "user"),
    ("list", "secrets", ""),
    ("create", "secrets", "user"),
    ("update", "secrets", "user"),
    ("update", "secrets/another-secret", "kserve"),
    ("update", WEBHOOK_SECRET, "user"),
    ("patch", WEBHOOK_SECRET, "kserve"),
    ("delete", WEBHOOK_SECRET, "kserve"),
    ("list", "secrets", "kserve"),
    ("watch", "secrets", "kserve"),
    ("list", "serviceaccounts", "user"),
    ("create", "inferenceservices.serving.kserve.io", "user"),
    ("delete", "inferenceservices.serving.kserve.io", "user"),
    ("update", "servingruntimes.serving.kserve.io", "user"),
    ("update", "clusterservingruntimes.serving.kserve.io", ""),
    ("get", "clusterstoragecontainers.serving.kserve.io", ""),
    ("create", "clusterstoragecontainers.serving.kserve.io", ""),
    ("update", "clusterstoragecontainers.serving.kserve.io", ""),
    ("delete", "clusterstoragecontainers.serving.kserve.io", ""),
    ("update", "services", "user"),
    ("delete", "virtualservices.networking.istio.io", "user"),
    ("create", "pods", "user"),
    ("delete", "pods", "user"),
    ("update", "deployments.apps", "user"),
    ("update", "deployments.apps/scale", "user"),
    ("create", "replicasets.apps", "user"),
    ("create", "statefulsets.apps", "user"),
    ("update", "horizontalpodautoscalers.autoscaling", "user"),
    ("update", "ingresses.networking.k8s.io", "user"),
    ("create", "ingressclasses.networking.k8s.io", ""),
    ("list", "configmaps", "user"),
    ("delete", "configmaps", "user"),
    ("patch", "configmaps", "kserve"),
    ("get", "leases.coordination.k8s.io", "user"),
    ("delete", "leases.coordination.k8s.io", "kserve"),
    ("list", "validatingwebhookconfigurations", ""),
    ("patch", "validatingwebhookconfigurations/someone-else", ""),
    ("create", "mutatingwebhookconfigurations", ""),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", "kserve"),
    ("get", "nodes", ""),
]


def _ask(kubeconfig: Path, user_namespace: str, verb: str, resource: str, where: str) -> bool:
    namespace = {"user": user_namespace, "kserve": "kserve", "": None}[where]
    resource, _, subresource = resource.partition("/")
    if resource.endswith("webhookconfigurations"):
        return can_i(kubeconfig, verb, f"{resource}/{subresource}" if subresource else resource, None)
    if resource == "secrets" and subresource:  # a Secret by name
        return can_i(kubeconfig, verb, f"{resource}/{subresource}", namespace)
    return can_i(kubeconfig, verb, resource, namespace, subresource)


@pytest.mark.parametrize(("verb", "resource", "where"), GRANTED)
def test_manager_service_account_is_granted(
    rbac_installed: Path, namespace: str, verb: str, resource: str, where: str
) -> None:
    assert _ask(rbac_installed, namespace, verb, resource, where)


@pytest.mark.parametrize(("verb", "resource", "where"), DENIED)
def test_manager_service_account_is_denied(
    rbac_installed: Path, namespace: str, verb: str, resource: str, where: str
) -> None:
    assert not _ask(rbac_installed, namespace, verb, resource, where)
