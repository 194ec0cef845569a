"""The local cluster's node: pods run, Services and cluster DNS work, and stopping it leaves nothing behind.

These run real kubelet, containerd, runc, CNI, kube-proxy and dnsmasq processes (root required). A node
that cannot start fails the tests, never skips them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.images import build_images
from e2e.localcluster import node as nodecfg
from e2e.localcluster.binaries import kubectl
from e2e.localcluster.cluster import LocalCluster, LocalClusterError
from tests.support.hoststate import HostState, net_namespaces, processes_mentioning

pytestmark = [pytest.mark.cluster, pytest.mark.node]

WEB = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: {image}
          command: ["python3", "-m", "http.server", "8080"]
          ports: [{{containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""

RESTRICTED = """
apiVersion: v1
kind: Pod
metadata: {{name: restricted, namespace: {ns}}}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {{type: RuntimeDefault}}
  containers:
    - name: main
      image: {image}
      command: ["python3", "-c", "import time; time.sleep(3600)"]
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {{drop: [ALL]}}
"""


def _kubectl(cluster: LocalCluster, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(kubectl()), f"--kubeconfig={cluster.kubeconfig_path}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr.strip()}"
    return done.stdout


def _python_in(cluster: LocalCluster, ns: str, pod: str, code: str) -> str:
    return _kubectl(cluster, "-n", ns, "exec", pod, "--", "python3", "-c", code)


@pytest.fixture(scope="module")
def base_image() -> tuple[str, Path]:
    built = build_images(["base"])["base"]
    return built.ref, built.archive


@pytest.fixture(scope="module")
def node_cluster(base_image: tuple[str, Path]) -> Iterator[LocalCluster]:
    cluster = LocalCluster(node=True, extra_users=())
    try:
        cluster.start(timeout=180)
        cluster.load_images([base_image[1]])
    except LocalClusterError as exc:
        cluster.stop()
        pytest.fail(f"the local node did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ns(node_cluster: LocalCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"node-{request.node.name.replace('_', '-')[5:30].strip('-')}-{os.getpid() % 10000}"
    _kubectl(node_cluster, "create", "namespace", name)
    # Pods need the namespace's default ServiceAccount, which kube-controller-manager creates.
    deadline = time.monotonic() + 30
    while subprocess.run(
        [str(kubectl()), f"--kubeconfig={node_cluster.kubeconfig_path}", "-n", name, "get", "sa", "default"],
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode:
        assert time.monotonic() < deadline, "no default ServiceAccount"
        time.sleep(0.2)
    yield name
    _kubectl(node_cluster, "delete", "namespace", name, "--wait=false")


def test_the_node_is_ready_with_the_pinned_versions(node_cluster: LocalCluster) -> None:
    node = json.loads(_kubectl(node_cluster, "get", "node", nodecfg.NODE_NAME, "-o", "json"))
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.20.2"
    assert info["kubeProxyVersion"] == "v1.20.2"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == node_cluster.network.node_ip
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_a_deployment_behind_a_service_answers_the_host_and_pods_by_cluster_dns(
    node_cluster: LocalCluster, ns: str, base_image: tuple[str, Path]
) -> None:
    _kubectl(node_cluster, "apply", "-f", "-", stdin=WEB.format(ns=ns, image=base_image[0]))
    _kubectl(node_cluster, "-n", ns, "rollout", "status", "deployment/web", "--timeout=120s")
    ip = _kubectl(node_cluster, "-n", ns, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as resp:
        assert resp.status == 200
    pods = _kubectl(node_cluster, "-n", ns, "get", "pods", "-l", "app=web", "-o", "name").split()
    assert len(pods) == 2
    out = _python_in(
        node_cluster,
        ns,
        pods[0].split("/")[1],
        "import socket, urllib.request\n"
        f"print(socket.gethostbyname('web.{ns}.svc.cluster.local'), socket.gethostbyname('web'))\n"
        "print(urllib.request.urlopen('http://web/', timeout=5).status)\n",
    )
    assert out.split() == [ip, ip, "200"]


def test_kubectl_logs_and_exec_reach_the_kubelet(
    node_cluster: LocalCluster, ns: str, base_image: tuple[str, Path]
) -> None:
    _kubectl(
        node_cluster,
        "-n",
        ns,
        "run",
        "hello",
        f"--image={base_image[0]}",
        "--restart=Never",
        "--command",
        "--",
        "python3",
        "-c",
        "print('hello from the node', flush=True); import time; time.sleep(3600)",
    )
    _kubectl(node_cluster, "-n", ns, "wait", "pod/hello", "--for=condition=Ready", "--timeout=120s")
    deadline = time.monotonic() + 30
    while "hello from the node" not in _kubectl(node_cluster, "-n", ns, "logs", "hello"):
        assert time.monotonic() < deadline, "the container's output never reached kubectl logs"
        time.sleep(0.5)
    assert (
        _kubectl(node_cluster, "-n", ns, "exec", "hello", "--", "python3", "-c", "print(6 * 7)").strip()
        == "42"
    )


def test_a_pod_with_the_restricted_profile_runs_as_the_profile_demands(
    node_cluster: LocalCluster, ns: str, base_image: tuple[str, Path]
) -> None:
    _kubectl(node_cluster, "apply", "-f", "-", stdin=RESTRICTED.format(ns=ns, image=base_image[0]))
    _kubectl(node_cluster, "-n", ns, "wait", "pod/restricted", "--for=condition=Ready", "--timeout=120s")
    status = _python_in(
        node_cluster,
        ns,
        "restricted",
        "import os; print(os.getuid()); print(open('/proc/self/status').read())",
    )
    lines = status.splitlines()
    fields = dict(line.split(":\t", 1) for line in lines[1:] if ":\t" in line)
    assert lines[0] == "65532"
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["CapBnd"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # filter mode: the runtime's default profile


def test_cluster_dns_answers_services_and_pods_and_nothing_else(
    node_cluster: LocalCluster, ns: str, base_image: tuple[str, Path]
) -> None:
    net = node_cluster.network
    assert nodecfg.dns_query(net.node_ip, "kubernetes.default.svc.cluster.local") == [net.service_ip]
    assert nodecfg.dns_query(net.dns_ip, "kube-dns.kube-system.svc.cluster.local") == [net.dns_ip]
    assert nodecfg.dns_query(net.node_ip, f"missing.{ns}.svc.cluster.local") == []
    _kubectl(node_cluster, "apply", "-f", "-", stdin=WEB.format(ns=ns, image=base_image[0]))
    _kubectl(node_cluster, "-n", ns, "rollout", "status", "deployment/web", "--timeout=120s")
    pod_ip = _kubectl(
        node_cluster, "-n", ns, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"
    )
    name = f"{pod_ip.replace('.', '-')}.{ns}.pod.cluster.local"
    deadline = time.monotonic() + 10
    while nodecfg.dns_query(net.node_ip, name) != [pod_ip]:
        assert time.monotonic() < deadline, f"{name} never resolved"
        time.sleep(0.2)


def test_the_kubelet_never_changes_the_hosts_kernel_tunables(node_cluster: LocalCluster) -> None:
    for key, wanted in nodecfg.SHADOWED_SYSCTLS.items():
        inside = subprocess.run(
            node_cluster.node_command(["cat", f"/proc/sys/{key}"]),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        assert inside == wanted, key
    # The host's own values are whatever they were: HostState in the next test compares them.


def test_stopping_a_node_leaves_nothing_on_the_machine(
    node_cluster: LocalCluster, base_image: tuple[str, Path], tmp_path: Path
) -> None:
    """A second node beside the first (it gets the next index), a pod running in it, then stop()."""
    before = HostState.capture()
    namespaces_before = net_namespaces()
    workdir = tmp_path / "cluster"
    cluster = LocalCluster(workdir, node=True, extra_users=())
    try:
        cluster.start(timeout=180)
        assert cluster.network.index != node_cluster.network.index
        cluster.load_images([base_image[1]])
        _kubectl(cluster, "create", "namespace", "leak")
        _kubectl(cluster, "apply", "-f", "-", stdin=WEB.format(ns="leak", image=base_image[0]))
        _kubectl(cluster, "-n", "leak", "rollout", "status", "deployment/web", "--timeout=120s")
        cgroup = cluster.cgroup
        assert any("http.server" in p for p in processes_mentioning(cgroup)), (
            "pods are not in the node's cgroup"
        )
    finally:
        cluster.stop()
    after = HostState.capture()
    assert before.differences(after) == []
    assert processes_mentioning(str(workdir)) == []
    assert processes_mentioning(cgroup) == []
    assert net_namespaces() - namespaces_before == frozenset()


def test_a_node_whose_owner_was_killed_is_swept_at_the_next_start(tmp_path: Path) -> None:
    """What SIGKILL of a test run leaves (a process in the node's cgroup, its host link) is removed."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    index = nodecfg.MAX_NODES - 1
    name = f"{nodecfg.CGROUP_PREFIX}{dead.pid}-{index}"
    pids = next(m for m, fstype, opts in nodecfg.cgroup_mounts() if "pids" in opts)
    (pids / name / "system").mkdir(parents=True)
    orphan = subprocess.Popen(
        ["/bin/sh", "-c", 'echo $$ > "$0" && exec sleep 3600', str(pids / name / "system" / "cgroup.procs")],
        start_new_session=True,
    )
    procs = pids / name / "system" / "cgroup.procs"
    deadline = time.monotonic() + 10
    while str(orphan.pid) not in procs.read_text().split():
        assert time.monotonic() < deadline, "the orphan never joined its cgroup"
        time.sleep(0.05)
    link = nodecfg.NodeNetwork(index)
    subprocess.run(
        ["ip", "link", "add", link.host_link, "type", "veth", "peer", "name", link.node_link], check=True
    )
    # Orphans of a dead owner are reaped by init; here the test process is their parent, so it reaps.
    reaper = threading.Thread(target=orphan.wait, daemon=True)
    reaper.start()
    try:
        swept = nodecfg.sweep_stale("ip")
        assert name in swept
        reaper.join(10)
        assert orphan.returncode == -signal.SIGKILL
        assert not (pids / name).exists()
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert link.host_link not in links
    finally:
        if orphan.poll() is None:
            orphan.kill()
        subprocess.run(["ip", "link", "del", link.host_link], capture_output=True, check=False)
