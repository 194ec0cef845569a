"""Pure parts of the local node and the offline deployment: addresses, configuration, DNS records, images."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from e2e.localcluster import node as nodecfg
from e2e.localcluster.deployment import model_access, replace_images, with_manager
from e2e.localcluster.dns import records, render


def test_node_ranges_never_overlap_each_other_or_between_nodes() -> None:
    ranges: list[ipaddress.IPv4Network] = []
    for index in range(nodecfg.MAX_NODES):
        net = nodecfg.NodeNetwork(index)
        for cidr in (net.transit, net.service_cidr, net.pod_cidr):
            ranges.append(ipaddress.IPv4Network(cidr))
        assert ipaddress.IPv4Address(net.node_ip) in ipaddress.IPv4Network(net.transit)
        assert ipaddress.IPv4Address(net.dns_ip) in ipaddress.IPv4Network(net.service_cidr)
        routed = ipaddress.IPv4Network(net.routed)
        assert ipaddress.IPv4Network(net.service_cidr).subnet_of(routed)
        assert ipaddress.IPv4Network(net.pod_cidr).subnet_of(routed)
        assert len(net.host_link) <= 15  # IFNAMSIZ - 1
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def test_containerd_config_keeps_everything_under_the_work_directory(tmp_path: Path) -> None:
    paths = nodecfg.NodePaths(tmp_path / "node")
    config = tomllib.loads(
        nodecfg.containerd_config(paths, "localhost/kserve-py/pause:abc", Path("/usr/lib/cni"))
    )
    assert config["root"].startswith(str(tmp_path))
    assert config["state"].startswith(str(tmp_path))
    assert config["grpc"]["address"] == str(paths.containerd_socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/kserve-py/pause:abc"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["cni"]["conf_dir"] == str(paths.cni_conf_dir)
    assert "io.containerd.internal.v1.opt" in config["disabled_plugins"]


def test_kubelet_and_proxy_configuration_fit_a_shared_machine(tmp_path: Path) -> None:
    net = nodecfg.NodeNetwork(3)
    paths = nodecfg.NodePaths(tmp_path)
    kubelet: dict[str, Any] = nodecfg.kubelet_config(
        net, paths, tmp_path / "ca.crt", "kserve-localcluster-1-3"
    )
    assert kubelet["cgroupRoot"] == "/kserve-localcluster-1-3"
    assert kubelet["clusterDNS"] == [net.dns_ip]
    assert kubelet["enforceNodeAllocatable"] == []
    assert kubelet["evictionHard"] == {}
    assert kubelet["failSwapOn"] is False
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["maxPods"] == 250  # the raw steady-state e2e test runs 100 pods beside the others
    proxy: dict[str, Any] = nodecfg.kube_proxy_config(net, tmp_path / "kubeconfig")
    assert proxy["mode"] == "iptables"
    assert proxy["clusterCIDR"] == net.pod_cidr
    # Host-wide conntrack settings are left alone.
    assert proxy["conntrack"]["maxPerCore"] == 0
    cni = nodecfg.cni_config(net, paths)
    bridge = cni["plugins"][0]  # type: ignore[index]
    assert bridge["ipam"]["ranges"] == [[{"subnet": net.pod_cidr}]]
    assert bridge["ipam"]["dataDir"] == str(paths.cni_ipam_dir)


def _service(name: str, ns: str, ip: str | None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip or "None", **spec}}


@pytest.mark.parametrize(
    ("services", "endpoints", "pods", "expected"),
    [
        pytest.param(
            [_service("web", "a", "10.1.0.5")],
            {},
            [],
            [("10.1.0.5", "web.a.svc.cluster.local")],
            id="cluster-ip",
        ),
        pytest.param(
            [_service("db", "a", None)],
            {
                ("a", "db"): {
                    "subsets": [{"addresses": [{"ip": "10.1.1.7", "hostname": "db-0"}, {"ip": "10.1.1.8"}]}]
                }
            },
            [],
            [
                ("10.1.1.7", "db-0.db.a.svc.cluster.local"),
                ("10.1.1.7", "db.a.svc.cluster.local"),
                ("10.1.1.8", "db.a.svc.cluster.local"),
            ],
            id="headless-uses-ready-endpoints",
        ),
        pytest.param(
            [
                _service("web", "a", "10.1.0.5"),
                _service("alias", "b", None, type="ExternalName", externalName="web.a.svc.cluster.local."),
                _service("outside", "b", None, type="ExternalName", externalName="example.com"),
            ],
            {},
            [],
            [("10.1.0.5", "alias.b.svc.cluster.local"), ("10.1.0.5", "web.a.svc.cluster.local")],
            id="external-name-to-a-cluster-service-resolves-to-its-address",
        ),
        pytest.param(
            [],
            {},
            [{"metadata": {"namespace": "a"}, "status": {"podIPs": [{"ip": "10.1.1.9"}, {"ip": "fd00::9"}]}}],
            [("10.1.1.9", "10-1-1-9.a.pod.cluster.local")],
            id="pod-records-ipv4-only",
        ),
        pytest.param([{"metadata": {}}], {}, [{"metadata": {}}], [], id="incomplete-objects-are-ignored"),
    ],
)
def test_dns_records(
    services: list[dict[str, Any]],
    endpoints: dict[tuple[str, str], dict[str, Any]],
    pods: list[dict[str, Any]],
    expected: list[tuple[str, str]],
) -> None:
    assert records(services, endpoints, pods, "cluster.local") == expected


def test_equal_clusters_render_byte_equal_hosts_files() -> None:
    services = [_service("b", "x", "10.0.0.2"), _service("a", "x", "10.0.0.1")]
    first = render(records(services, {}, [], "cluster.local"))
    second = render(records(list(reversed(services)), {}, [], "cluster.local"))
    assert first == second == "10.0.0.1 a.x.svc.cluster.local\n10.0.0.2 b.x.svc.cluster.local\n"


def test_images_are_replaced_by_repository_in_objects_and_in_the_configmap_json() -> None:
    deployment: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"name": "kserve-controller-manager"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "manager", "image": "kserve-py/manager:latest"}]}}
        },
    }
    runtime = {
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"image": "kserve/sklearnserver:v0.11.2"}, {"image": "tensorflow/serving:2.6.2"}]
        },
    }
    configmap = {
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config"},
        "data": {
            "storageInitializer": json.dumps({"image": "kserve/storage-initializer:latest", "cpuLimit": "1"})
        },
    }
    refs = {
        "kserve-py/manager": "localhost/kserve-py/manager:m",
        "kserve/sklearnserver": "localhost/kserve-py/sklearnserver:s",
        "kserve/storage-initializer": "localhost/kserve-py/storage-initializer:i",
    }
    out = replace_images([deployment, runtime, configmap], refs)
    assert out[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/kserve-py/manager:m"
    assert [c["image"] for c in out[1]["spec"]["containers"]] == [
        "localhost/kserve-py/sklearnserver:s",
        "tensorflow/serving:2.6.2",
    ]
    assert json.loads(out[2]["data"]["storageInitializer"]) == {
        "image": "localhost/kserve-py/storage-initializer:i",
        "cpuLimit": "1",
    }
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "kserve-py/manager:latest"


def test_make_run_arguments_and_replicas_reach_only_the_manager_deployment() -> None:
    manager = {
        "kind": "Deployment",
        "metadata": {"name": "kserve-controller-manager"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"args": ["--leader-elect"]}]}}},
    }
    other = {"kind": "Deployment", "metadata": {"name": "other"}, "spec": {"replicas": 1}}
    out = with_manager([manager, other], ["--log-level=debug"], 2)
    assert out[0]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--leader-elect",
        "--log-level=debug",
    ]
    assert out[0]["spec"]["replicas"] == 2
    assert out[1] == other
    assert with_manager([manager], [], None)[0]["spec"]["replicas"] == 1


def test_model_access_is_kserves_s3_secret_on_a_service_account() -> None:
    secret, account = model_access("team", ("AKIA1", "s3cr3t"))
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    annotations = secret["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "s3.kserve-e2e-store.svc.cluster.local:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert account["secrets"] == [{"name": secret["metadata"]["name"]}]
    assert account["metadata"]["namespace"] == secret["metadata"]["namespace"] == "team"
