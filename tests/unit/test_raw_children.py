"""RawDeployment children, row by row: the Deployment, the Service and the HPA of one component.

The expectations are KServe v0.11.2's (`rawkube_controller_test.go` and the deployment, service, hpa and
autoscaler reconcilers): names, labels, selectors, defaults, probes, ports and scaling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from apis import constants as c
from apis.conditions import Condition
from apis.inferenceservice import InferenceService
from manager.client import Object
from reconcilers.components import Component, build_component
from reconcilers.deployment import available_condition, desired_deployment, pod_failure, revision
from reconcilers.hpa import METRICS_ANNOTATION, autoscaler_class, desired_hpa
from reconcilers.runtime import ComponentSpecError
from reconcilers.service import desired_service

NS = "default"
CONTAINER = {"name": "kserve-container", "image": "example/server:1"}
OWNER = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "name": "raw-foo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def built(
    predictor: Object | None = None,
    *,
    annotations: dict[str, str] | None = None,
    component: str = c.PREDICTOR,
    **spec: Object,
) -> tuple[InferenceService, Component]:
    meta: Object = {"name": "raw-foo", "namespace": NS, "uid": "uid-1"}
    meta["annotations"] = {c.DEPLOYMENT_MODE_ANNOTATION: c.RAW_DEPLOYMENT, **(annotations or {})}
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor or {"containers": [dict(CONTAINER)]}, **spec},
    }
    isvc = InferenceService.from_object(obj)
    return isvc, build_component(isvc, component)


# --- Deployment -----------------------------------------------------------------------------------


def test_deployment_is_kserves() -> None:
    isvc, comp = built(annotations={"serving.kserve.io/targetUtilizationPercentage": "75"})
    app = {"app": "isvc.raw-foo-predictor"}
    labels = {"serving.kserve.io/inferenceservice": "raw-foo", "component": "predictor", **app}
    annotations = {"serving.kserve.io/deploymentMode": "RawDeployment", c.TARGET_UTILIZATION_ANNOTATION: "75"}
    assert desired_deployment(isvc, comp) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "raw-foo-predictor",
            "namespace": NS,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "selector": {"matchLabels": app},
            "template": {
                "metadata": {
                    "name": "raw-foo-predictor",
                    "namespace": NS,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {
                    "containers": [
                        {
                            **CONTAINER,
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File",
                            "imagePullPolicy": "IfNotPresent",
                            "readinessProbe": {
                                "tcpSocket": {"port": 8080},
                                "timeoutSeconds": 1,
                                "periodSeconds": 10,
                                "successThreshold": 1,
                                "failureThreshold": 3,
                            },
                        }
                    ],
                    "dnsPolicy": "ClusterFirst",
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {},
                    "schedulerName": "default-scheduler",
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }


@dataclass
class ContainerRow:
    name: str
    containers: list[Object]
    want_probe: Any
    want_pull: str = "IfNotPresent"

    def __str__(self) -> str:
        return self.name


PROBE_9000 = {"httpGet": {"path": "/ready", "port": 9000}}
CONTAINER_ROWS = [
    ContainerRow("no ports: a TCP probe on 8080", [CONTAINER], {"tcpSocket": {"port": 8080}}),
    ContainerRow(
        "the first port is probed",
        [{**CONTAINER, "ports": [{"containerPort": 9000}, {"containerPort": 9001}]}],
        {"tcpSocket": {"port": 9000}},
    ),
    ContainerRow("the user's probe is kept", [{**CONTAINER, "readinessProbe": PROBE_9000}], PROBE_9000),
    ContainerRow(
        "the user's pull policy is kept",
        [{**CONTAINER, "imagePullPolicy": "Always"}],
        ...,
        want_pull="Always",
    ),
]


@pytest.mark.parametrize("row", CONTAINER_ROWS, ids=str)
def test_deployment_container_defaults(row: ContainerRow) -> None:
    isvc, comp = built({"containers": row.containers})
    container = desired_deployment(isvc, comp)["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == row.want_pull
    if row.want_probe is not ...:
        probe = container["readinessProbe"]
        assert {k: v for k, v in probe.items() if k in ("tcpSocket", "httpGet")} == row.want_probe


def test_deployment_never_sets_replicas_and_keeps_user_pod_fields() -> None:
    isvc, comp = built(
        {
            "containers": [CONTAINER],
            "minReplicas": 3,
            "maxReplicas": 5,
            "serviceAccountName": "sa",
            "dnsPolicy": "None",
        }
    )
    spec = desired_deployment(isvc, comp)["spec"]
    assert "replicas" not in spec
    assert spec["template"]["spec"]["serviceAccountName"] == "sa"
    assert spec["template"]["spec"]["dnsPolicy"] == "None"


def test_legacy_default_name_is_used_while_its_service_exists() -> None:
    meta: Object = {"name": "raw-foo", "namespace": NS, "uid": "uid-1"}
    obj = {"metadata": meta, "spec": {"predictor": {"containers": [CONTAINER]}}}
    isvc = InferenceService.from_object(obj)
    comp = build_component(isvc, c.PREDICTOR, existing_names={"raw-foo-predictor-default"})
    deployment = desired_deployment(isvc, comp)
    assert deployment["metadata"]["name"] == "raw-foo-predictor-default"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "isvc.raw-foo-predictor-default"}


@dataclass
class StatusRow:
    name: str
    conditions: list[Object]
    want: Condition | None

    def __str__(self) -> str:
        return self.name


STATUS_ROWS = [
    StatusRow("no status yet: nothing to say", [], None),
    StatusRow(
        "available",
        [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}],
        Condition(type="Available", status="True", reason="MinimumReplicasAvailable", message="ok"),
    ),
    StatusRow(
        "not available: the Deployment controller's reason and message",
        [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            },
        ],
        Condition(
            type="Available",
            status="False",
            reason="MinimumReplicasUnavailable",
            message="Deployment does not have minimum availability.",
        ),
    ),
]


@pytest.mark.parametrize("row", STATUS_ROWS, ids=str)
def test_available_condition(row: StatusRow) -> None:
    assert available_condition({"status": {"conditions": row.conditions}}) == row.want


def test_revision_is_the_deployment_controllers() -> None:
    assert revision({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "3"}}}) == "3"
    assert revision({"metadata": {}}) is None


# --- Service --------------------------------------------------------------------------------------


@dataclass
class ServiceRow:
    name: str
    predictor: Object
    want_ports: list[Object]

    def __str__(self) -> str:
        return self.name


SERVICE_ROWS = [
    ServiceRow(
        "no container port: one port named like the component, 80 -> 8080",
        {"containers": [CONTAINER]},
        [{"name": "raw-foo-predictor", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
    ),
    ServiceRow(
        "the first port on 80 with its name and protocol, the others on their own number",
        {
            "containers": [
                {
                    **CONTAINER,
                    "ports": [
                        {"name": "h2c", "containerPort": 9000, "protocol": "TCP"},
                        {"name": "grpc", "containerPort": 9001},
                    ],
                }
            ]
        },
        [
            {"name": "h2c", "port": 80, "targetPort": 9000, "protocol": "TCP"},
            {"name": "grpc", "port": 9001, "targetPort": 9001, "protocol": "TCP"},
        ],
    ),
    ServiceRow(
        "an unnamed first port stays unnamed",
        {"containers": [{**CONTAINER, "ports": [{"containerPort": 9000}]}]},
        [{"port": 80, "targetPort": 9000}],
    ),
    ServiceRow(
        "a logger sends port 80 to the agent",
        {"containers": [CONTAINER], "logger": {"url": "http://sink"}},
        [{"name": "raw-foo-predictor", "port": 80, "targetPort": 9081, "protocol": "TCP"}],
    ),
    ServiceRow(
        "a batcher too",
        {"containers": [CONTAINER], "batcher": {"maxBatchSize": 32}},
        [{"name": "raw-foo-predictor", "port": 80, "targetPort": 9081, "protocol": "TCP"}],
    ),
]


@pytest.mark.parametrize("row", SERVICE_ROWS, ids=str)
def test_service(row: ServiceRow) -> None:
    isvc, comp = built(row.predictor)
    service = desired_service(isvc, comp)
    assert service["metadata"]["name"] == "raw-foo-predictor"
    assert service["metadata"]["labels"]["app"] == "isvc.raw-foo-predictor"
    assert service["metadata"]["ownerReferences"] == [OWNER]
    assert service["spec"] == {"selector": {"app": "isvc.raw-foo-predictor"}, "ports": row.want_ports}


def test_transformer_children_are_named_for_it() -> None:
    isvc, comp = built(transformer={"containers": [CONTAINER]}, component=c.TRANSFORMER)
    assert desired_service(isvc, comp)["spec"]["selector"] == {"app": "isvc.raw-foo-transformer"}
    assert desired_deployment(isvc, comp)["metadata"]["labels"]["component"] == "transformer"
    hpa = desired_hpa(isvc, comp)
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "raw-foo-transformer"


# --- HPA ------------------------------------------------------------------------------------------


@dataclass
class HpaRow:
    name: str
    scaling: Object = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    want_spec: Object | None = None
    want_metrics: list[Object] | None = None

    def __str__(self) -> str:
        return self.name


TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "raw-foo-predictor"}
HPA_ROWS = [
    HpaRow(
        "defaults: 1..1 on 80% CPU",
        want_spec={
            "scaleTargetRef": TARGET,
            "minReplicas": 1,
            "maxReplicas": 1,
            "targetCPUUtilizationPercentage": 80,
        },
    ),
    HpaRow(
        "KServe's test: 1..3 on the annotation's 75% CPU",
        {"minReplicas": 1, "maxReplicas": 3},
        {c.TARGET_UTILIZATION_ANNOTATION: "75", c.AUTOSCALER_CLASS_ANNOTATION: "hpa"},
        {"scaleTargetRef": TARGET, "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 75},
    ),
    HpaRow(
        "minReplicas 0 is raised to 1, maxReplicas below it to it",
        {"minReplicas": 0, "maxReplicas": 0},
        want_spec={
            "scaleTargetRef": TARGET,
            "minReplicas": 1,
            "maxReplicas": 1,
            "targetCPUUtilizationPercentage": 80,
        },
    ),
    HpaRow(
        "maxReplicas below minReplicas becomes minReplicas",
        {"minReplicas": 4, "maxReplicas": 2},
        want_spec={
            "scaleTargetRef": TARGET,
            "minReplicas": 4,
            "maxReplicas": 4,
            "targetCPUUtilizationPercentage": 80,
        },
    ),
    HpaRow(
        "scaleTarget wins over the annotation",
        {"scaleTarget": 60},
        {c.TARGET_UTILIZATION_ANNOTATION: "75"},
        {"scaleTargetRef": TARGET, "minReplicas": 1, "maxReplicas": 1, "targetCPUUtilizationPercentage": 60},
    ),
    HpaRow(
        "memory goes into autoscaling/v1's metrics annotation",
        {"scaleMetric": "memory", "scaleTarget": 70, "maxReplicas": 2},
        want_spec={"scaleTargetRef": TARGET, "minReplicas": 1, "maxReplicas": 2},
        want_metrics=[{"type": "Resource", "resource": {"name": "memory", "targetAverageUtilization": 70}}],
    ),
]


@pytest.mark.parametrize("row", HPA_ROWS, ids=str)
def test_hpa(row: HpaRow) -> None:
    isvc, comp = built({"containers": [CONTAINER], **row.scaling}, annotations=row.annotations)
    hpa = desired_hpa(isvc, comp)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v1"
    assert hpa["metadata"]["name"] == "raw-foo-predictor"
    assert hpa["metadata"]["labels"]["app"] == "isvc.raw-foo-predictor"
    assert hpa["metadata"]["ownerReferences"] == [OWNER]
    assert hpa["spec"] == row.want_spec
    encoded = hpa["metadata"]["annotations"].get(METRICS_ANNOTATION)
    if row.want_metrics is None:
        assert encoded is None
    else:
        assert json.loads(encoded) == row.want_metrics
        assert encoded == json.dumps(row.want_metrics, separators=(",", ":")), "the API server's encoding"


def test_class_external_has_no_hpa() -> None:
    isvc, comp = built(annotations={c.AUTOSCALER_CLASS_ANNOTATION: "external"})
    assert desired_hpa(isvc, comp) is None


def test_component_annotation_sets_the_class_too() -> None:
    isvc, comp = built(
        {"containers": [CONTAINER], "annotations": {c.AUTOSCALER_CLASS_ANNOTATION: "external"}}
    )
    assert desired_hpa(isvc, comp) is None


@pytest.mark.parametrize(
    ("annotations", "scaling", "message"),
    [
        ({c.AUTOSCALER_CLASS_ANNOTATION: "keda"}, {}, 'unknown autoscaler class "keda"'),
        ({}, {"scaleMetric": "rps"}, 'scaleMetric "rps" is not supported by the HPA autoscaler'),
        ({c.TARGET_UTILIZATION_ANNOTATION: "lots"}, {}, "must be an integer percentage, got 'lots'"),
    ],
)
def test_hpa_problems_are_the_users(annotations: dict[str, str], scaling: Object, message: str) -> None:
    isvc, comp = built({"containers": [CONTAINER], **scaling}, annotations=annotations)
    with pytest.raises(ComponentSpecError, match=message) as caught:
        desired_hpa(isvc, comp)
    assert caught.value.reason == "InvalidSpec"


def test_autoscaler_class_default_is_hpa() -> None:
    assert autoscaler_class({}) == "hpa"
    assert autoscaler_class({c.AUTOSCALER_CLASS_ANNOTATION: "external"}) == "external"


def _pod(name: str, **status: Any) -> Object:
    return {"metadata": {"name": name}, "status": status}


def _waiting(container: str, reason: str, message: str = "", **extra: Any) -> Object:
    return {"name": container, "state": {"waiting": {"reason": reason, "message": message}}, **extra}


POD_FAILURES: list[tuple[str, list[Object], tuple[str, str] | None]] = [
    ("no pods", [], None),
    (
        "pulling and creating are not failures",
        [_pod("p", containerStatuses=[_waiting("kserve-container", "ContainerCreating")])],
        None,
    ),
    (
        "unschedulable: the scheduler's reason and message",
        [
            _pod(
                "p",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient cpu.",
                    }
                ],
            )
        ],
        ("Unschedulable", 'pod "p": 0/1 nodes are available: 1 Insufficient cpu.'),
    ),
    (
        "an image that cannot be pulled",
        [_pod("p", containerStatuses=[_waiting("kserve-container", "ErrImagePull", "not found")])],
        ("ErrImagePull", 'container "kserve-container" of pod "p": not found'),
    ),
    (
        "a failing storage initializer before the waiting model server; its last exit, not the back-off",
        [
            _pod(
                "p",
                initContainerStatuses=[
                    _waiting(
                        "storage-initializer",
                        "CrashLoopBackOff",
                        "back-off 20s restarting failed container",
                        lastState={
                            "terminated": {"exitCode": 1, "reason": "Error", "message": "NoSuchKey\n"}
                        },
                    )
                ],
                containerStatuses=[_waiting("kserve-container", "PodInitializing")],
            )
        ],
        (
            "CrashLoopBackOff",
            'container "storage-initializer" of pod "p" keeps failing: exit code 1: NoSuchKey',
        ),
    ),
    (
        "a container that exited with an error, first pod by name",
        [
            _pod("b", containerStatuses=[_waiting("kserve-container", "ImagePullBackOff", "b")]),
            _pod(
                "a",
                initContainerStatuses=[
                    {
                        "name": "storage-initializer",
                        "state": {"terminated": {"exitCode": 2, "reason": "Error"}},
                    }
                ],
            ),
        ],
        ("Error", 'container "storage-initializer" of pod "a" failed: exit code 2'),
    ),
    (
        "a container that completed is no failure",
        [
            _pod(
                "p",
                initContainerStatuses=[
                    {
                        "name": "storage-initializer",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
            )
        ],
        None,
    ),
]


@pytest.mark.parametrize(
    ("pods", "want"), [row[1:] for row in POD_FAILURES], ids=[r[0] for r in POD_FAILURES]
)
def test_pod_failure(pods: list[Object], want: tuple[str, str] | None) -> None:
    assert pod_failure(pods) == want
