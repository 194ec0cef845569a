"""The Knative Serving double: the objects of a revision, config-deployment, the Service status Knative
computes from its revisions, the revision history, and its reconcile over the shared fake cluster."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import pytest

from e2e.knative_double.compare import endpoint_set, prune, quantity, with_quantities
from e2e.knative_double.config import (
    ACTIVATION_TIMEOUT_BUFFER,
    CONFIG_DEPLOYMENT,
    DEFAULT_PROGRESS_DEADLINE,
    SYSTEM_NAMESPACE,
    DeploymentConfig,
    ScaleBounds,
    parse_duration,
    progress_deadline,
)
from e2e.knative_double.double import KnativeServingDouble
from e2e.knative_double.history import MAX_HISTORY, Failure, History, Revision, template_hash
from e2e.knative_double.lifecycle import desired_status, routed_revisions
from e2e.knative_double.resources import (
    DEPLOYMENTS,
    ENDPOINTS,
    RevisionMeta,
    child_name,
    encode_probe,
    make_deployment,
    make_private_service,
    make_public_endpoints,
    make_public_service,
    with_revision_defaults,
)
from e2e.knative_double.resources import KSVC as KSVC_RESOURCE
from e2e.knative_double.revision import READINESS_DEPLOYMENT
from manager.client import CONFIGMAPS, PODS, SERVICES
from manager.kindreconciler import KindReconciler
from manager.reconcile import Request, Result
from reconcilers.apply import is_subset
from tests.support.fakecluster import FakeCluster, TableRow, run_row

NOW = "2024-05-01T10:00:00Z"
LATER = "2024-06-01T10:00:00Z"
KSVC: dict[str, Any] = {
    "metadata": {"name": "iris-predictor", "namespace": "models", "uid": "svc-uid", "generation": 1},
    "spec": {
        "template": {
            "metadata": {
                "labels": {"serving.kserve.io/inferenceservice": "iris", "component": "predictor"},
                "annotations": {
                    "autoscaling.knative.dev/min-scale": "1",
                    "autoscaling.knative.dev/metric": "rps",
                },
            },
            "spec": {
                "containerConcurrency": 4,
                "timeoutSeconds": 120,
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "kserve/sklearnserver:v0.11.2",
                        "args": ["--model_name=iris"],
                        "env": [{"name": "STORAGE_URI", "value": "gs://models/iris"}],
                        "ports": [{"containerPort": 8081, "protocol": "TCP"}],
                        "readinessProbe": {
                            "httpGet": {"path": "/v1/models/iris", "port": 8081},
                            "periodSeconds": 5,
                        },
                        "livenessProbe": {"httpGet": {"path": "/", "port": 9999}},
                    }
                ],
            },
        }
    },
}


def meta(template: dict[str, Any] | None = None) -> RevisionMeta:
    return RevisionMeta(KSVC, "iris-predictor-00001", 1, template or KSVC["spec"]["template"])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_deployment_is_named_labelled_and_selected_as_knative_does() -> None:
    deployment = make_deployment(
        meta(), DeploymentConfig("registry.local/queue:1"), replicas=2, progress_deadline=45
    )
    metadata, spec = deployment["metadata"], deployment["spec"]
    assert metadata["name"] == "iris-predictor-00001-deployment"
    labels = metadata["labels"]
    assert labels["serving.kserve.io/inferenceservice"] == "iris"
    assert labels["serving.knative.dev/service"] == "iris-predictor"
    assert labels["serving.knative.dev/configuration"] == "iris-predictor"
    assert labels["serving.knative.dev/configurationGeneration"] == "1"
    assert labels["serving.knative.dev/serviceUID"] == "svc-uid"
    assert labels["serving.knative.dev/revision"] == "iris-predictor-00001"
    assert labels["app"] == "iris-predictor-00001"
    assert spec["selector"] == {
        "matchLabels": {"serving.knative.dev/revisionUID": labels["serving.knative.dev/revisionUID"]}
    }
    assert spec["template"]["metadata"]["labels"] == labels
    assert metadata["annotations"] == KSVC["spec"]["template"]["metadata"]["annotations"]
    assert metadata["ownerReferences"][0] | {} == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "iris-predictor",
        "uid": "svc-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert (spec["replicas"], spec["progressDeadlineSeconds"]) == (2, 45)
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["enableServiceLinks"] is False
    assert "containerConcurrency" not in pod
    assert "timeoutSeconds" not in pod


def test_the_user_container_is_the_templates_plus_knatives_port_env_probes_and_hook() -> None:
    deployment = make_deployment(meta(), DeploymentConfig("q"), replicas=1, progress_deadline=600)
    user, queue = deployment["spec"]["template"]["spec"]["containers"]
    assert (user["name"], user["image"], user["args"]) == (
        "kserve-container",
        "kserve/sklearnserver:v0.11.2",
        ["--model_name=iris"],
    )
    assert user["ports"] == [{"name": "user-port", "containerPort": 8081}]
    assert [e["name"] for e in user["env"]] == [
        "STORAGE_URI",
        "PORT",
        "K_REVISION",
        "K_CONFIGURATION",
        "K_SERVICE",
    ]
    assert env_of(user) | {} == {
        "STORAGE_URI": "gs://models/iris",
        "PORT": "8081",
        "K_REVISION": "iris-predictor-00001",
        "K_CONFIGURATION": "iris-predictor",
        "K_SERVICE": "iris-predictor",
    }
    assert "readinessProbe" not in user, "the HTTP readiness probe moves to queue-proxy"
    assert user["livenessProbe"]["httpGet"] == {
        "path": "/",
        "port": 8081,
        "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "queue"}],
    }
    assert user["lifecycle"] == {"preStop": {"httpGet": {"port": 8022, "path": "/wait-for-drain"}}}
    assert user["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert queue["name"] == "queue-proxy"


def test_the_queue_proxy_container_is_make_queue_container() -> None:
    config = DeploymentConfig(
        "registry.local/queue:1", 600, {"requests": {"cpu": "25m"}, "limits": {"memory": "1Gi"}}
    )
    deployment = make_deployment(meta(), config, replicas=1, progress_deadline=600)
    queue = deployment["spec"]["template"]["spec"]["containers"][1]
    assert queue["image"] == "registry.local/queue:1"
    assert queue["resources"] == {"requests": {"cpu": "25m"}, "limits": {"memory": "1Gi"}}
    assert [(p["name"], p["containerPort"]) for p in queue["ports"]] == [
        ("http-queueadm", 8022),
        ("http-autometric", 9090),
        ("http-usermetric", 9091),
        ("queue-port", 8012),
        ("https-port", 8112),
    ]
    env = env_of(queue)
    assert {
        k: env[k]
        for k in ("SERVING_NAMESPACE", "SERVING_SERVICE", "SERVING_CONFIGURATION", "SERVING_REVISION")
    } == {
        "SERVING_NAMESPACE": "models",
        "SERVING_SERVICE": "iris-predictor",
        "SERVING_CONFIGURATION": "iris-predictor",
        "SERVING_REVISION": "iris-predictor-00001",
    }
    assert (env["QUEUE_SERVING_PORT"], env["QUEUE_SERVING_TLS_PORT"], env["USER_PORT"]) == (
        "8012",
        "8112",
        "8081",
    )
    assert (env["CONTAINER_CONCURRENCY"], env["REVISION_TIMEOUT_SECONDS"]) == ("4", "120")
    assert env["SERVING_POD"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SERVING_POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["HOST_IP"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}
    assert (env["SYSTEM_NAMESPACE"], env["METRICS_DOMAIN"]) == (
        "knative-serving",
        "knative.dev/internal/serving",
    )
    assert env["SERVING_REQUEST_METRICS_BACKEND"] == "prometheus"
    assert env["SERVING_LOGGING_CONFIG"] is None, "an empty value is left out, as Go's omitempty does"
    assert json.loads(env["SERVING_READINESS_PROBE"]) == {
        "httpGet": {
            "path": "/v1/models/iris",
            "port": 8081,
            "host": "127.0.0.1",
            "scheme": "HTTP",
            "httpHeaders": [{"name": "K-Kubelet-Probe", "value": "queue"}],
        },
        "timeoutSeconds": 1,
        "periodSeconds": 5,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert queue["readinessProbe"] == {
        "periodSeconds": 5,
        "successThreshold": 1,
        "failureThreshold": 3,
        "timeoutSeconds": 1,
        "httpGet": {"port": 8012, "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}]},
    }
    assert queue["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


@pytest.mark.parametrize(
    ("probe", "port", "expected"),
    [
        (
            {"tcpSocket": {"port": 0}, "successThreshold": 1},
            8080,
            '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}',
        ),
        (
            {"exec": {"command": ["true"]}, "periodSeconds": 2},
            8080,
            '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"timeoutSeconds":1,"periodSeconds":2}',
        ),
        (
            {"httpGet": {"path": "/ready", "port": 1}},
            9000,
            '{"httpGet":{"path":"/ready","port":9000,"host":"127.0.0.1","scheme":"HTTP","httpHeaders":[{"name":"K-Kubelet-Probe","value":"queue"}]}}',
        ),
    ],
)
def test_serving_readiness_probe_is_encoded_as_knative_encodes_it(
    probe: dict[str, Any], port: int, expected: str
) -> None:
    assert encode_probe(probe, port) == expected


def test_knatives_defaults_name_containers_and_give_the_serving_one_a_tcp_probe() -> None:
    template = {
        "spec": {
            "containers": [
                {"image": "a", "ports": [{"containerPort": 8080}]},
                {"image": "b", "volumeMounts": [{"name": "cfg", "mountPath": "/c"}]},
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "c"}}],
        }
    }
    spec = with_revision_defaults(template)["spec"]
    assert [c["name"] for c in spec["containers"]] == ["user-container-0", "user-container-1"]
    assert spec["containers"][0]["readinessProbe"] == {"tcpSocket": {"port": 0}, "successThreshold": 1}
    assert "readinessProbe" not in spec["containers"][1]
    assert spec["containers"][1]["volumeMounts"][0]["readOnly"] is True
    assert (spec["timeoutSeconds"], spec["containerConcurrency"], spec["enableServiceLinks"]) == (
        300,
        0,
        False,
    )
    single = with_revision_defaults({"spec": {"containers": [{"image": "a"}]}})["spec"]["containers"][0]
    assert single["name"] == "user-container"
    deployment = make_deployment(
        meta({"spec": {"containers": [{"image": "a"}]}}),
        DeploymentConfig("q"),
        replicas=1,
        progress_deadline=1,
    )
    user, queue = deployment["spec"]["template"]["spec"]["containers"]
    assert user["ports"] == [{"name": "user-port", "containerPort": 8080}]
    assert (
        env_of(queue)["SERVING_READINESS_PROBE"]
        == '{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}'
    )


def test_the_private_and_public_services_and_endpoints() -> None:
    private = make_private_service(meta())
    public = make_public_service(meta())
    assert private["metadata"]["name"] == "iris-predictor-00001-private"
    assert private["metadata"]["labels"]["networking.internal.knative.dev/serviceType"] == "Private"
    assert (
        private["metadata"]["labels"]["networking.internal.knative.dev/serverlessservice"]
        == "iris-predictor-00001"
    )
    assert private["metadata"]["annotations"] == {"autoscaling.knative.dev/metric": "rps"}
    assert private["spec"]["selector"] == {"serving.knative.dev/revisionUID": meta().uid}
    assert [(p["name"], p["port"], p["targetPort"]) for p in private["spec"]["ports"]] == [
        ("http", 80, 8012),
        ("https", 443, 8112),
        ("http-autometric", 9090, "http-autometric"),
        ("http-usermetric", 9091, "http-usermetric"),
        ("http-queueadm", 8022, 8022),
        ("http-istio", 8012, 8012),
    ]
    assert public["metadata"]["name"] == "iris-predictor-00001"
    assert "selector" not in public["spec"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in public["spec"]["ports"]] == [
        ("http", 80, 8012),
        ("https", 443, 8112),
    ]
    endpoints = {
        "subsets": [
            {
                "addresses": [{"ip": "10.1.0.5", "targetRef": {"kind": "Pod", "name": "p1"}}],
                "ports": [
                    {"name": "http", "port": 8012, "protocol": "TCP"},
                    {"name": "http-usermetric", "port": 9091, "protocol": "TCP"},
                    {"name": "https", "port": 8112, "protocol": "TCP"},
                ],
            }
        ]
    }
    mirrored = make_public_endpoints(meta(), endpoints)
    assert mirrored["metadata"]["name"] == "iris-predictor-00001"
    assert mirrored["subsets"] == [
        {
            "addresses": [{"ip": "10.1.0.5", "targetRef": {"kind": "Pod", "name": "p1"}}],
            "ports": [
                {"name": "http", "port": 8012, "protocol": "TCP"},
                {"name": "https", "port": 8112, "protocol": "TCP"},
            ],
        }
    ]
    assert "subsets" not in make_public_endpoints(meta(), {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("600s", 600.0),
        ("10m", 600.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("250ms", 0.25),
        ("-2s", -2.0),
    ],
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "1d", "1m x"])
def test_bad_go_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_config_deployment_keys_and_what_knative_refuses() -> None:
    parsed = DeploymentConfig.parse(
        {
            "queue-sidecar-image": "r/queue:1",
            "progress-deadline": "45s",
            "queue-sidecar-memory-limit": "500Mi",
        },
        "flag",
    )
    assert parsed == DeploymentConfig(
        "r/queue:1", 45.0, {"requests": {"cpu": "25m"}, "limits": {"memory": "500Mi"}}
    )
    assert (
        DeploymentConfig.parse(
            {"queueSidecarImage": "old/key", "progressDeadline": "1m"}, "flag"
        ).progress_deadline
        == 60
    )
    assert DeploymentConfig.parse({}, "flag") == DeploymentConfig("flag")
    for bad in (
        {"progress-deadline": "0s"},
        {"progress-deadline": "1.5s"},
        {"progress-deadline": "soon"},
        {"queue-sidecar-image": " "},
        {"queue-sidecar-cpu-request": "lots"},
    ):
        with pytest.raises(ValueError, match=r"progress-deadline|duration|queue-sidecar"):
            DeploymentConfig.parse(bad, "flag")


def test_scale_annotations_and_the_per_revision_progress_deadline() -> None:
    assert ScaleBounds.of(
        {"autoscaling.knative.dev/minScale": "2", "autoscaling.knative.dev/max-scale": "5"}
    ) == ScaleBounds(2, 5, 1)
    assert ScaleBounds.of({"autoscaling.knative.dev/initial-scale": "0"}) == ScaleBounds(0, 0, 1)
    assert ScaleBounds.of({"autoscaling.knative.dev/min-scale": "x"}) == ScaleBounds()
    config = DeploymentConfig("q", 600.0)
    assert progress_deadline({"serving.knative.dev/progress-deadline": "30s"}, config) == 30
    assert progress_deadline({}, config) == 600


# The Service status from its revisions


def revision(
    name: str, generation: int, ready: str | None, message: str = "", *, creation_error: str | None = None
) -> Revision:
    rev = Revision(name, generation, f"h{generation}", {}, creation_error=creation_error)
    if ready is not None:
        reason = {"True": "", "False": "ExitCode1", "Unknown": "Deploying"}[ready]
        rev.conditions = [
            {
                "type": "Ready",
                "status": ready,
                "lastTransitionTime": NOW,
                "reason": reason,
                "message": message,
            }
        ]
    if creation_error is not None:
        rev.deployed = False
    return rev


def ksvc(
    status: dict[str, Any] | None = None, traffic: list[dict[str, Any]] | None = None, local: bool = False
) -> dict[str, Any]:
    labels = {"networking.knative.dev/visibility": "cluster-local"} if local else {}
    out: dict[str, Any] = {
        "metadata": {"name": "s", "namespace": "n", "generation": 2, "labels": labels},
        "spec": {},
    }
    if traffic is not None:
        out["spec"]["traffic"] = traffic
    if status is not None:
        out["status"] = status
    return out


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c.get("reason", ""), c.get("message", "")) for c in status["conditions"]}


def test_a_ready_first_revision_makes_the_service_ready_with_knative_urls() -> None:
    status = desired_status(ksvc(), History("u", [revision("s-00001", 1, "True")]), "example.com", NOW)
    assert conditions(status) == {
        "ConfigurationsReady": ("True", "", ""),
        "Ready": ("True", "", ""),
        "RoutesReady": ("True", "", ""),
    }
    assert status["url"] == "http://s.n.example.com"
    assert status["address"] == {"url": "http://s.n.svc.cluster.local"}
    assert (status["latestCreatedRevisionName"], status["latestReadyRevisionName"]) == ("s-00001", "s-00001")
    assert status["traffic"] == [{"revisionName": "s-00001", "latestRevision": True, "percent": 100}]
    assert status["observedGeneration"] == 2


def test_a_pending_first_revision_waits() -> None:
    status = desired_status(ksvc(), History("u", [revision("s-00001", 1, "Unknown")]), "example.com", NOW)
    waiting = 'Configuration "s" is waiting for a Revision to become ready.'
    assert conditions(status) == {
        "ConfigurationsReady": ("Unknown", "", ""),
        "Ready": ("Unknown", "RevisionMissing", waiting),
        "RoutesReady": ("Unknown", "RevisionMissing", waiting),
    }
    assert "traffic" not in status
    assert "latestReadyRevisionName" not in status


def test_a_failed_first_revision_shows_the_routes_words_on_ready_as_knative_ends_up() -> None:
    status = desired_status(
        ksvc(),
        History("u", [revision("s-00001", 1, "False", "Container failed with: boom")]),
        "example.com",
        NOW,
    )
    assert conditions(status) == {
        "ConfigurationsReady": (
            "False",
            "RevisionFailed",
            'Revision "s-00001" failed with message: Container failed with: boom.',
        ),
        "Ready": ("False", "RevisionMissing", 'Configuration "s" does not have any ready Revision.'),
        "RoutesReady": ("False", "RevisionMissing", 'Configuration "s" does not have any ready Revision.'),
    }


def test_a_failed_second_revision_keeps_traffic_on_the_last_ready_one() -> None:
    before = desired_status(ksvc(), History("u", [revision("s-00001", 1, "True")]), "example.com", NOW)
    history = History(
        "u", [revision("s-00001", 1, "True"), revision("s-00002", 2, "False", "Container failed with: boom")]
    )
    status = desired_status(ksvc(before), history, "example.com", LATER)
    message = 'Revision "s-00002" failed with message: Container failed with: boom.'
    assert conditions(status) == {
        "ConfigurationsReady": ("False", "RevisionFailed", message),
        "Ready": ("False", "RevisionFailed", message),
        "RoutesReady": ("True", "", ""),
    }
    assert (status["latestCreatedRevisionName"], status["latestReadyRevisionName"]) == ("s-00002", "s-00001")
    assert status["traffic"] == before["traffic"]
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {"ConfigurationsReady": LATER, "Ready": LATER, "RoutesReady": NOW}
    assert desired_status(ksvc(status), history, "example.com", "2024-07-01T00:00:00Z") == status


def test_a_pending_second_revision_makes_the_configuration_unknown_only() -> None:
    before = desired_status(ksvc(), History("u", [revision("s-00001", 1, "True")]), "example.com", NOW)
    history = History("u", [revision("s-00001", 1, "True"), revision("s-00002", 2, "Unknown")])
    status = desired_status(ksvc(before), history, "example.com", LATER)
    assert conditions(status) == {
        "ConfigurationsReady": ("Unknown", "", ""),
        "Ready": ("Unknown", "", ""),
        "RoutesReady": ("True", "", ""),
    }


def test_refused_revision_creation_is_a_configuration_failure() -> None:
    history = History(
        "u",
        [
            revision("s-00001", 1, "True"),
            revision("s-00002", 2, None, creation_error="spec.x: Invalid value"),
        ],
    )
    status = desired_status(ksvc(), history, "example.com", NOW)
    assert conditions(status)["ConfigurationsReady"] == (
        "False",
        "RevisionFailed",
        "Revision creation failed with message: spec.x: Invalid value.",
    )
    assert status["latestCreatedRevisionName"] == "s-00001"


@pytest.mark.parametrize(
    ("traffic", "routes"),
    [
        (
            [{"revisionName": "s-00042", "percent": 100}],
            ("False", "RevisionMissing", 'Revision "s-00042" referenced in traffic not found.'),
        ),
        (
            [{"revisionName": "s-00002", "percent": 100}],
            ("False", "RevisionMissing", 'Revision "s-00002" failed to become ready.'),
        ),
        (
            [{"revisionName": "s-00003", "percent": 100}],
            ("Unknown", "RevisionMissing", 'Revision "s-00003" is not yet ready.'),
        ),
        (
            [{"revisionName": "s-00003", "percent": 50}, {"revisionName": "s-00002", "percent": 50}],
            ("False", "RevisionMissing", 'Revision "s-00002" failed to become ready.'),
        ),
    ],
)
def test_pinned_traffic_targets_are_resolved_as_knatives_route_does(
    traffic: list[dict[str, Any]], routes: tuple[str, str, str]
) -> None:
    history = History(
        "u",
        [
            revision("s-00001", 1, "True"),
            revision("s-00002", 2, "False", "x"),
            revision("s-00003", 3, "Unknown"),
        ],
    )
    status = desired_status(ksvc(traffic=traffic), history, "example.com", NOW)
    assert conditions(status)["RoutesReady"] == routes


def test_tags_get_urls_and_cluster_local_services_get_cluster_local_urls() -> None:
    history = History("u", [revision("s-00001", 1, "True"), revision("s-00002", 2, "True")])
    traffic: list[dict[str, Any]] = [
        {"latestRevision": True, "percent": 90},
        {"revisionName": "s-00001", "percent": 10, "tag": "prev"},
    ]
    status = desired_status(ksvc(traffic=traffic), history, "example.com", NOW)
    assert status["traffic"] == [
        {"revisionName": "s-00002", "latestRevision": True, "percent": 90},
        {
            "tag": "prev",
            "revisionName": "s-00001",
            "latestRevision": False,
            "percent": 10,
            "url": "http://prev-s.n.example.com",
        },
    ]
    local = desired_status(
        ksvc(traffic=traffic, local=True),
        history,
        "example.com",
        NOW,
    )
    assert local["url"] == "http://s.n.svc.cluster.local"
    assert local["traffic"][1]["url"] == "http://prev-s.n.svc.cluster.local"


def test_routed_revisions_are_the_traffics_or_a_first_revisions() -> None:
    first = History("u", [revision("s-00001", 1, "Unknown")])
    assert routed_revisions(ksvc(), first, "example.com") == {"s-00001"}
    history = History("u", [revision("s-00001", 1, "True"), revision("s-00002", 2, "Unknown")])
    assert routed_revisions(ksvc(), history, "example.com") == {"s-00001"}


# History


def test_child_names_longer_than_63_characters_are_shortened_with_a_hash() -> None:
    assert child_name("sklearn-iris-predictor", "-00001") == "sklearn-iris-predictor-00001"
    shortened = child_name("a" * 60, "-00001")
    assert len(shortened) == 63
    assert shortened.endswith("-00001")
    assert shortened != child_name("b" * 60, "-00001")
    assert len(child_name("x", "-" + "y" * 70)) == 32


def test_the_fail_switch_text_parses_into_reason_and_message() -> None:
    assert Failure.parse("ExitCode1: boom: really") == Failure("ExitCode1", "boom: really")
    assert Failure.parse("the model did not load") == Failure("RevisionFailed", "the model did not load")
    assert Failure.parse("two words: message") == Failure("RevisionFailed", "two words: message")


def test_history_is_bounded_but_keeps_the_latest_ready_revision_and_round_trips() -> None:
    history = History("uid", [revision("s-00001", 1, "True")])
    dropped: list[Revision] = []
    for n in range(2, MAX_HISTORY + 5):
        failed = Revision(f"s-{n:05d}", n, f"h{n}", {})
        failed.fail(Failure("X", "broken"), NOW)
        dropped += history.add(failed, keep="s-00001")
    assert len(history.revisions) == MAX_HISTORY + 1
    assert history.revisions[0].name == "s-00001"
    assert [r.name for r in dropped] == ["s-00002", "s-00003", "s-00004"]
    assert history.next_generation == MAX_HISTORY + 5
    assert History.decode(history.encode()) == history.revisions
    assert history.revisions[-1].failure == Failure("X", "broken")
    assert template_hash({"a": 1, "b": 2}) == template_hash({"b": 2, "a": 1})


def test_config_deployment_is_read_and_a_bad_update_keeps_the_last_good_one() -> None:
    cluster = FakeCluster()
    cluster.watch(CONFIGMAPS, SYSTEM_NAMESPACE)
    double = KnativeServingDouble(
        cluster.client, cluster.cache, revision_readiness="pods", queue_proxy_image="flag/queue"
    )
    assert double.deployment_config() == DeploymentConfig("flag/queue")

    def config(data: dict[str, str]) -> None:
        meta = {"name": CONFIG_DEPLOYMENT, "namespace": SYSTEM_NAMESPACE}
        cluster.add(CONFIGMAPS, {"metadata": meta, "data": data})

    config({"queue-sidecar-image": "cm/queue", "progress-deadline": "20s"})
    assert double.deployment_config() == DeploymentConfig("cm/queue", 20.0)
    config({"progress-deadline": "-1s"})
    assert double.deployment_config() == DeploymentConfig("cm/queue", 20.0)
    config({})
    assert double.deployment_config() == DeploymentConfig("flag/queue")
    with pytest.raises(ValueError, match="revision readiness"):
        KnativeServingDouble(cluster.client, cluster.cache, revision_readiness=cast(Any, "nodes"))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", "1"),
        ("1000m", "1"),
        ("0.5", "0.5"),
        ("500m", "0.5"),
        ("2Gi", "2147483648"),
        ("1e3", "1000"),
        ("1k", "1000"),
    ],
)
def test_quantities_compare_by_value(text: str, value: str) -> None:
    assert quantity(text) == Decimal(value)


def test_what_the_api_server_rewrites_is_not_a_difference() -> None:
    want = {
        "containers": [
            {"env": [{"name": "A", "value": ""}], "resources": {"limits": {"cpu": "1000m"}}, "tty": False}
        ]
    }
    have = {
        "containers": [
            {"env": [{"name": "A"}], "resources": {"limits": {"cpu": "1"}}, "imagePullPolicy": "Always"}
        ]
    }
    assert is_subset(with_quantities(prune(want)), with_quantities(have))
    changed = {"containers": [{"env": [{"name": "A"}], "resources": {"limits": {"cpu": "2"}}}]}
    assert not is_subset(with_quantities(prune(want)), with_quantities(changed))
    assert quantity("lots") is None


def test_endpoints_compare_regardless_of_how_subsets_are_packed() -> None:
    ports = [{"name": "http", "port": 8012}, {"name": "https", "port": 8112}]
    one = [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": ports}]
    two = [
        {"addresses": [{"ip": "10.0.0.2"}], "ports": ports[::-1]},
        {"addresses": [{"ip": "10.0.0.1"}], "ports": ports},
    ]
    assert endpoint_set(one) == endpoint_set(two)
    assert endpoint_set(one) != endpoint_set(
        [{"notReadyAddresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": ports}]
    )


# --- The reconcile, as row tables over the shared fake cluster ---------------------------------------

SERVICE = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", **KSVC}
REV = "iris-predictor-00001"


def double_cluster() -> tuple[FakeCluster, KnativeServingDouble, KindReconciler[Any]]:
    cluster = FakeCluster()
    for resource in (KSVC_RESOURCE, DEPLOYMENTS, SERVICES, CONFIGMAPS, PODS, ENDPOINTS):
        cluster.watch(resource)
    double = KnativeServingDouble(cluster.client, cluster.cache, revision_readiness=READINESS_DEPLOYMENT)
    return (
        cluster,
        double,
        KindReconciler(double, resource=KSVC_RESOURCE, client=cluster.client, cache=cluster.cache),
    )


async def test_a_new_service_gets_its_revision_objects_history_and_status_then_nothing_more() -> None:
    cluster, double, reconciler = double_cluster()
    row = TableRow(
        "a new Service",
        "models/iris-predictor",
        objects=[(KSVC_RESOURCE, SERVICE)],
        want_writes=[
            f"create deployments.apps models/{REV}-deployment",
            f"create services models/{REV}-private",
            f"create services models/{REV}",
            "create configmaps models/iris-predictor-knative-double",
            "update-status services.serving.knative.dev models/iris-predictor",
        ],
        want_status={
            "latestCreatedRevisionName": REV,
            "url": "http://iris-predictor.models.example.com",
            "conditions": {"ConfigurationsReady": ("Unknown",), "Ready": ("Unknown",)},
        },
        # Until a revision that never gets pods is given up on.
        want_result=Result(requeue_after=DEFAULT_PROGRESS_DEADLINE + ACTIVATION_TIMEOUT_BUFFER),
    )
    await run_row(row, cluster, reconciler, resource=KSVC_RESOURCE)
    assert double.status_writes == 1
    cluster.sync()
    cluster.writes()
    # The Deployment is in the cache now: the revision is Queued (its history changes, not the status).
    await reconciler.reconcile(Request("models", "iris-predictor"))
    assert cluster.writes() == ["update configmaps models/iris-predictor-knative-double"]
    cluster.sync()
    await reconciler.reconcile(Request("models", "iris-predictor"))
    assert cluster.writes() == [], "a steady Service is not rewritten"
    assert double.status_writes == 1


async def test_a_stale_cache_costs_a_read_not_a_second_status() -> None:
    cluster, double, reconciler = double_cluster()
    cluster.add(KSVC_RESOURCE, SERVICE)
    for _ in range(2):
        await reconciler.reconcile(Request("models", "iris-predictor"))
        cluster.sync()
    cluster.writes()
    cluster.reads.clear()
    # The cache still shows the Service as it was before our status write.
    cluster.cache.informer(KSVC_RESOURCE).store.put(
        {**SERVICE, "metadata": {**SERVICE["metadata"], "resourceVersion": "1"}}
    )
    await reconciler.reconcile(Request("models", "iris-predictor"))
    # One status write refused with 409, then a read shows the status is already what it should be.
    assert cluster.writes() == ["update-status services.serving.knative.dev models/iris-predictor"]
    assert [str(r) for r in cluster.reads] == ["get services.serving.knative.dev models/iris-predictor"]
    assert double.status_writes == 1


async def test_a_deleted_service_is_forgotten() -> None:
    cluster, double, reconciler = double_cluster()
    cluster.add(KSVC_RESOURCE, SERVICE)
    await reconciler.reconcile(Request("models", "iris-predictor"))
    assert double.revisions("models", "iris-predictor")
    cluster.remove(KSVC_RESOURCE, "iris-predictor", "models")
    cluster.sync()
    await reconciler.reconcile(Request("models", "iris-predictor"))
    assert double.revisions("models", "iris-predictor") == []
