"""The local control plane itself: readiness, RBAC, controllers, restarts, compaction, teardown, CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from e2e.localcluster import binaries
from e2e.localcluster.apply import ApplyError, apply_manifests, load_manifests
from e2e.localcluster.binaries import Binaries, BinariesError, find_binary, resolve_binaries
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

FIXTURES = Path(__file__).parent / "fixtures" / "apply"
REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (catches strays of a cluster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def configmap(name: str, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["name"], "uid": owner["uid"]}
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}}


def fake_binary(directory: Path, name: str, script: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


async def api_client(kubeconfig: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return k8s.ApiClient(configuration)


async def list_or_none(api: k8s.CoreV1Api, namespace: str) -> Any:
    """The namespace's ConfigMaps, or None while listing is forbidden."""
    try:
        return await api.list_namespaced_config_map(namespace)
    except k8s.ApiException as exc:
        if exc.status == 403:
            return None
        raise


# ----- the session cluster -------------------------------------------------------------------------------


def test_apiserver_is_ready_and_is_v1_20_2(local_cluster: LocalCluster) -> None:
    assert local_cluster.request("GET", "/readyz") == (200, {"message": "ok"})
    status, version = local_cluster.request("GET", "/version")
    assert status == 200
    assert version["gitVersion"] == "v1.20.2"
    assert local_cluster.server.startswith("https://127.0.0.1:")


def test_unauthenticated_requests_are_rejected(local_cluster: LocalCluster) -> None:
    request = urllib.request.Request(f"{local_cluster.server}/api/v1/namespaces")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5, context=local_cluster.ssl_context())
    info.value.close()
    assert info.value.code == 403


async def test_admin_kubeconfig_works_with_kubernetes_asyncio(kubeconfig: Path, namespace: str) -> None:
    async with await api_client(kubeconfig) as api:
        ns = await k8s.CoreV1Api(api).read_namespace(namespace)
    assert ns.metadata.name == namespace


async def test_rbac_forbids_token_users_until_bound(local_cluster: LocalCluster, namespace: str) -> None:
    async with await api_client(local_cluster.kubeconfig_for("alice")) as api:
        with pytest.raises(k8s.ApiException) as info:
            await k8s.CoreV1Api(api).list_namespaced_config_map(namespace)
        assert info.value.status == 403

        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "alice-view", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        }
        path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
        assert local_cluster.request("POST", path, binding)[0] == 201

        deadline = time.monotonic() + 30
        while (listed := await list_or_none(k8s.CoreV1Api(api), namespace)) is None:
            assert time.monotonic() < deadline, "the RoleBinding never took effect"
            await asyncio.sleep(0.1)
    assert listed.items is not None
    assert local_cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps", user="bob")[0] == 403
    assert (
        local_cluster.request(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", configmap("x", namespace), user="alice"
        )[0]
        == 403
    )


def test_garbage_collector_deletes_child_of_deleted_owner(
    local_cluster: LocalCluster, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    status, parent = local_cluster.request("POST", base, configmap("parent", namespace))
    assert status == 201
    owner = {"name": "parent", "uid": parent["metadata"]["uid"]}
    assert local_cluster.request("POST", base, configmap("child", namespace, owner))[0] == 201
    assert local_cluster.request("POST", base, configmap("unowned", namespace))[0] == 201

    assert local_cluster.request("DELETE", f"{base}/parent")[0] == 200
    wait_for(lambda: local_cluster.request("GET", f"{base}/child")[0] == 404, "the child to be collected")
    assert local_cluster.request("GET", f"{base}/unowned")[0] == 200


def test_new_namespace_gets_default_service_account_with_token(
    local_cluster: LocalCluster, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/default"

    def has_token() -> bool:
        status, account = local_cluster.request("GET", path)
        return status == 200 and bool(account.get("secrets"))

    wait_for(has_token, "the default ServiceAccount and its token secret")
    _, account = local_cluster.request("GET", path)
    secret_name = account["secrets"][0]["name"]
    status, secret = local_cluster.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")
    assert status == 200
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert set(secret["data"]) >= {"ca.crt", "namespace", "token"}


def test_kubeconfig_for_writes_a_token_kubeconfig(local_cluster: LocalCluster) -> None:
    config = yaml.safe_load(local_cluster.kubeconfig_for("manager").read_text())
    assert config["users"] == [{"name": "manager", "user": {"token": local_cluster.token_for("manager")}}]
    assert config["clusters"][0]["cluster"]["server"] == local_cluster.server
    with pytest.raises(LocalClusterError, match="unknown user 'mallory'"):
        local_cluster.kubeconfig_for("mallory")


def test_component_logs_are_written(local_cluster: LocalCluster) -> None:
    for component in ("etcd", "kube-apiserver", "kube-controller-manager"):
        assert local_cluster.log_path(component).stat().st_size > 0


# ----- apply_manifests ----------------------------------------------------------------------------------


def test_apply_creates_crds_first_then_namespaces_then_objects(local_cluster: LocalCluster) -> None:
    apply_manifests(local_cluster.kubeconfig_path, [FIXTURES])
    status, widget = local_cluster.request(
        "GET", "/apis/fixtures.kserve-py.io/v1/namespaces/apply-fixture/widgets/sprocket"
    )
    assert status == 200
    assert widget["spec"] == {"size": 3}
    status, settings = local_cluster.request(
        "GET", "/api/v1/namespaces/apply-fixture/configmaps/widget-settings"
    )
    assert status == 200
    assert settings["data"] == {"colour": "blue"}

    apply_manifests(local_cluster.kubeconfig_path, [FIXTURES])
    _, again = local_cluster.request(
        "GET", "/apis/fixtures.kserve-py.io/v1/namespaces/apply-fixture/widgets/sprocket"
    )
    assert again["metadata"]["resourceVersion"] == widget["metadata"]["resourceVersion"]


def test_load_manifests_skips_kustomization_and_reads_dirs_recursively() -> None:
    kinds = [m.kind for m in load_manifests([FIXTURES])]
    assert kinds == ["ConfigMap", "Widget", "Namespace", "CustomResourceDefinition"]


def test_apply_reports_server_rejection(local_cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "fixtures.kserve-py.io/v1",
                "kind": "Widget",
                "metadata": {"name": "broken", "namespace": namespace},
                "spec": {"size": "big"},
            }
        )
    )
    with pytest.raises(ApplyError, match=r"applying Widget .*/broken .* failed: HTTP \d+: .*spec\.size"):
        apply_manifests(local_cluster.kubeconfig_path, [FIXTURES / "crds", bad])


def test_apply_rejects_documents_that_are_not_objects(kubeconfig: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: a mapping\n")
    with pytest.raises(ApplyError, match="not a Kubernetes object"):
        apply_manifests(kubeconfig, [bad])
    with pytest.raises(ApplyError, match="no such file or directory"):
        apply_manifests(kubeconfig, [tmp_path / "missing"])


# ----- restarts and compaction (a private cluster: they would disturb other tests) ------------------------


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(controller_manager=False) as cluster:
        assert cluster.request("POST", "/api/v1/namespaces", {"metadata": {"name": "work"}})[0] == 201
        yield cluster


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_restart_apiserver_keeps_server_and_data(private_cluster: LocalCluster, kill: bool) -> None:
    server = private_cluster.server
    old_pid = private_cluster.pids()["kube-apiserver"]
    name = f"survivor-{kill}".lower()
    assert (
        private_cluster.request("POST", "/api/v1/namespaces/work/configmaps", configmap(name, "work"))[0]
        == 201
    )

    private_cluster.restart_apiserver(kill=kill)

    assert private_cluster.server == server
    assert private_cluster.pids()["kube-apiserver"] != old_pid
    assert private_cluster.request("GET", f"/api/v1/namespaces/work/configmaps/{name}")[0] == 200


def test_stopped_apiserver_refuses_connections_until_started(private_cluster: LocalCluster) -> None:
    private_cluster.stop_apiserver(kill=True)
    try:
        with pytest.raises(urllib.error.URLError):
            private_cluster.request("GET", "/readyz", timeout=2)
    finally:
        private_cluster.start_apiserver()
    assert private_cluster.request("GET", "/readyz") == (200, {"message": "ok"})
    with pytest.raises(LocalClusterError, match="already running"):
        private_cluster.start_apiserver()


def watch_events(cluster: LocalCluster, path: str, resource_version: str) -> list[tuple[str, Any]]:
    url = f"{cluster.server}{path}?watch=1&resourceVersion={resource_version}&timeoutSeconds=1"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.admin_token}"})
    with urllib.request.urlopen(request, timeout=10, context=cluster.ssl_context()) as response:
        lines = response.read().decode().splitlines()
    return [(event["type"], event["object"].get("code")) for event in map(json.loads, lines)]


def test_compaction_expires_old_resource_versions(private_cluster: LocalCluster) -> None:
    base = "/api/v1/namespaces/work/configmaps"
    status, listing = private_cluster.request("GET", base)
    assert status == 200
    old = listing["metadata"]["resourceVersion"]
    for i in range(3):
        assert private_cluster.request("POST", base, configmap(f"compact-{i}", "work"))[0] == 201

    revision = private_cluster.compact_etcd()
    assert revision > int(old)
    assert private_cluster.compact_etcd() == revision  # compacting again at the same revision is fine

    exact = private_cluster.request("GET", f"{base}?resourceVersion={old}&resourceVersionMatch=Exact")
    assert exact[0] == 410
    # The watch cache still holds the events, so a watch from the old version is served...
    assert watch_events(private_cluster, base, old) == [("ADDED", None)] * 3
    # ...until the cache is rebuilt from the compacted store.
    private_cluster.restart_apiserver()
    assert watch_events(private_cluster, base, old) == [("ERROR", 410)]


# ----- teardown and start-up failures ---------------------------------------------------------------------


def test_stop_leaves_no_process_and_removes_the_temporary_workdir() -> None:
    cluster = LocalCluster()
    cluster.start()
    pids = cluster.pids()
    workdir = cluster.workdir
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert processes_mentioning(str(workdir))

    cluster.stop()

    assert not workdir.exists()
    assert processes_mentioning(str(workdir)) == []
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    cluster.stop()  # idempotent
    with pytest.raises(LocalClusterError, match="was stopped"):
        cluster.start()


def test_context_manager_keeps_a_caller_workdir_with_logs(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"
    with LocalCluster(workdir, controller_manager=False) as cluster:
        assert cluster.request("GET", "/readyz")[0] == 200
        assert "kube-controller-manager" not in cluster.pids()
    assert processes_mentioning(str(workdir)) == []
    assert (workdir / "logs" / "kube-apiserver.log").stat().st_size > 0


def test_failed_start_raises_with_the_log_and_tears_down(tmp_path: Path) -> None:
    real = resolve_binaries(provision=False)
    broken = fake_binary(tmp_path / "bin", "kube-apiserver", "echo 'boom: unknown flag' >&2; exit 2")
    workdir = tmp_path / "cluster"
    cluster = LocalCluster(
        workdir,
        binaries=Binaries(real.etcd, broken, real.kube_controller_manager),
    )
    with pytest.raises(LocalClusterError, match=r"kube-apiserver exited with code 2 during start-up: boom"):
        cluster.start()
    assert cluster.pids() == {}
    assert processes_mentioning(str(workdir)) == []


# ----- the CLI ----------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "e2e.localcluster", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_cli_up_serves_until_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "cli"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e2e.localcluster", "up", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        output = ""
        deadline = time.monotonic() + 90
        while not output.endswith("Press Ctrl-C to stop.\n"):
            assert proc.poll() is None, f"CLI exited early after printing {output!r}"
            assert time.monotonic() < deadline, f"CLI never printed the kubeconfig: {output!r}"
            # Raw reads: a buffered readline would hide data from select().
            if select.select([proc.stdout], [], [], 1.0)[0]:
                output += os.read(proc.stdout.fileno(), 4096).decode()
        kubeconfig = Path(output.split("export KUBECONFIG=")[1].split()[0])
        assert kubeconfig == workdir / "admin.kubeconfig"
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        server = cluster["server"]
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        token = config["users"][0]["user"]["token"]
        request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            assert response.read() == b"ok"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert processes_mentioning(str(workdir)) == []


def test_cli_reports_a_failing_component_in_one_line(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    fake_binary(assets, "kube-apiserver", "echo 'boom: unknown flag' >&2; exit 2")
    done = run_cli("up", "--dir", str(tmp_path / "cli"), env={"KUBEBUILDER_ASSETS": str(assets)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "kserve-localcluster: error: kube-apiserver exited with code 2 during start-up: boom: unknown flag"
    ]


def test_cli_rejects_bad_arguments_in_one_line(tmp_path: Path) -> None:
    done = run_cli("up", "--timeout", "0")
    assert done.returncode == 1
    assert done.stderr.strip() == "kserve-localcluster: error: --timeout must be positive"
    done = run_cli("up", "--node", "--no-controller-manager")
    assert done.returncode == 1
    assert done.stderr.strip() == "kserve-localcluster: error: --node needs the controller manager"
    a_file = tmp_path / "file"
    a_file.write_text("")
    done = run_cli("up", "--dir", str(a_file))
    assert done.returncode == 1
    assert "is not a directory" in done.stderr
    assert "Traceback" not in done.stderr


# ----- binary resolution ------------------------------------------------------------------------------------


def test_kubebuilder_assets_take_precedence_per_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_binary(tmp_path, "kube-apiserver", "exit 0")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert find_binary("kube-apiserver") == tmp_path / "kube-apiserver"
    # Not in the assets directory: falls through to PATH / the cache.
    assert find_binary("etcd") == resolve_binaries(provision=False).etcd


def test_user_cache_is_used_when_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("KSERVE_PY_CACHE", str(tmp_path / "cache"))
    cached = fake_binary(tmp_path / "cache" / "k8s" / f"v{binaries.K8S_VERSION}", "etcd", "exit 0")
    assert find_binary("etcd") == cached
    with pytest.raises(BinariesError, match="missing kube-apiserver, kube-controller-manager"):
        resolve_binaries(provision=False)


def test_cache_dir_follows_the_provisioning_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSERVE_PY_CACHE", "/c")
    assert binaries.cache_dir() == Path("/c/k8s/v1.20.2")
    monkeypatch.delenv("KSERVE_PY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert binaries.cache_dir() == Path("/x/kserve-py/k8s/v1.20.2")
    script = binaries.provision_script().read_text()
    assert 'CACHE_ROOT="${KSERVE_PY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kserve-py}"' in script
