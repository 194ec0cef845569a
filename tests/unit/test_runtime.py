"""ServingRuntime resolution and KServe's merge rules for the predictor's pod spec."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis import constants as c
from apis.inferenceservice import InferenceService, ModelSpec
from apis.servingruntime import ClusterServingRuntime, MalformedRuntime, ServingRuntime
from reconcilers.runtime import (
    CONTAINER_LIST_KEYS,
    POD_SPEC_LIST_KEYS,
    ComponentSpecError,
    merge_container,
    merge_pod_spec,
    replace_placeholders,
    resolve_model,
    select,
    split_runtimes,
    strategic_merge,
    update_image_tag,
)

RUNTIMES_DIR = Path(__file__).resolve().parents[2] / "config" / "runtimes"


def cluster_runtime(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name},
        "spec": {"supportedModelFormats": [{"name": "fmt", "autoSelect": True}], **spec},
    }


def isvc(**meta: Any) -> InferenceService:
    return InferenceService.from_object({"metadata": {"name": "m", "namespace": "ns", **meta}})


def model(**fields: Any) -> ModelSpec:
    return ModelSpec.model_validate({"modelFormat": {"name": "fmt"}, **fields})


# --- Strategic merge ------------------------------------------------------------------------------


def test_maps_merge_recursively_and_null_deletes() -> None:
    merged = strategic_merge({"a": {"x": 1, "y": 2}, "b": 1, "keep": True}, {"a": {"y": 3}, "b": None})
    assert merged == {"a": {"x": 1, "y": 3}, "keep": True}


def test_lists_with_a_merge_key_merge_by_key_others_are_replaced() -> None:
    original = {
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "ports": [{"containerPort": 8080, "name": "http1"}],
        "command": ["a", "b"],
    }
    patch = {
        "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "command": ["z"],
    }
    merged = strategic_merge(original, patch, CONTAINER_LIST_KEYS)
    assert merged["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    assert merged["ports"] == [{"containerPort": 8080, "name": "http1", "protocol": "TCP"}]
    assert merged["command"] == ["z"]


def test_merge_does_not_modify_its_inputs() -> None:
    original = {"env": [{"name": "A", "value": "1"}]}
    patch = {"env": [{"name": "A", "value": "2"}]}
    strategic_merge(original, patch, CONTAINER_LIST_KEYS)
    assert original == {"env": [{"name": "A", "value": "1"}]}
    assert patch == {"env": [{"name": "A", "value": "2"}]}


def test_merge_container_concatenates_args_and_keeps_the_runtime_name() -> None:
    runtime = {
        "name": "kserve-container",
        "image": "i:1",
        "args": ["--a"],
        "resources": {"limits": {"cpu": "1"}},
    }
    merged = merge_container(runtime, {"args": ["--b"], "resources": {"limits": {"memory": "1Gi"}}})
    assert merged == {
        "name": "kserve-container",
        "image": "i:1",
        "args": ["--a", "--b"],
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
    }
    assert merge_container({"name": "kserve-container"}, {})["name"] == "kserve-container"
    assert "args" not in merge_container({"name": "kserve-container"}, {"image": "x"})


def test_merge_pod_spec_predictor_overrides_runtime() -> None:
    runtime = {
        "nodeSelector": {"pool": "cpu", "zone": "a"},
        "tolerations": [{"key": "runtime"}],
        "volumes": [{"name": "shm", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "a"}}],
    }
    predictor = {
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "mine"}],
        "volumes": [{"name": "cfg", "configMap": {"name": "b"}}, {"name": "extra", "emptyDir": {}}],
        "serviceAccountName": "sa",
    }
    merged = merge_pod_spec(runtime, predictor)
    assert merged["nodeSelector"] == {"pool": "gpu", "zone": "a"}
    assert merged["tolerations"] == [{"key": "mine"}]
    assert [v["name"] for v in merged["volumes"]] == ["shm", "cfg", "extra"]
    assert merged["volumes"][1]["configMap"] == {"name": "b"}
    assert merged["serviceAccountName"] == "sa"
    assert "containers" in POD_SPEC_LIST_KEYS


# --- Placeholders and image tags ------------------------------------------------------------------


def test_placeholders_are_filled_from_the_inferenceservice_metadata() -> None:
    meta = {"name": "m", "namespace": "ns", "labels": {"team": "a"}, "annotations": {"x/y": "z"}}
    container = {
        "args": [
            "--model_name={{.Name}}",
            "--ns={{ .Namespace }}",
            "{{.Labels.team}}",
            '{{index .Annotations "x/y"}}',
        ],
        "env": [{"name": "N", "value": "{{.Name}}-{{.Labels.missing}}"}],
        "ports": [{"containerPort": 8080}],
    }
    assert replace_placeholders(container, meta) == {
        "args": ["--model_name=m", "--ns=ns", "a", "z"],
        "env": [{"name": "N", "value": "m-"}],
        "ports": [{"containerPort": 8080}],
    }


@pytest.mark.parametrize(
    ("template", "metadata", "want"),
    [
        # KServe's TestReplacePlaceholders.
        ("--foo={{.Name}}", {"name": "bar", "labels": {"modelDir": "/mnt/models"}}, "--foo=bar"),
        ("{{.Labels.modelDir}}", {"name": "bar", "labels": {"modelDir": "/mnt/models"}}, "/mnt/models"),
        # A missing label renders as "" (KServe's html/template), with or without any labels at all.
        ("{{.Labels.serviceEnvelope}}", {"name": "bar"}, ""),
        ("{{.Labels.serviceEnvelope}}", {"name": "bar", "labels": {"other": "x"}}, ""),
        ('{{index .Annotations "missing"}}', {"name": "bar"}, ""),
        # Deliberately verbatim: html/template would write `a&amp;b`.
        ('{{index .Annotations "k"}}', {"name": "bar", "annotations": {"k": "a&b<c>"}}, "a&b<c>"),
    ],
)
def test_placeholder_rendering(template: str, metadata: dict[str, Any], want: str) -> None:
    assert replace_placeholders({"env": [{"name": "X", "value": template}]}, metadata) == {
        "env": [{"name": "X", "value": want}]
    }


def test_an_unsupported_template_action_is_a_spec_error() -> None:
    with pytest.raises(ComponentSpecError) as info:
        replace_placeholders({"args": ["{{ printf `%s` .Name }}"]}, {"name": "m"})
    assert info.value.reason == c.FAILURE_INVALID_PREDICTOR_SPEC
    assert "failed to replace placeholders in serving runtime Container" in info.value.message


@pytest.mark.parametrize(
    ("image", "version", "runtime", "limits", "want"),
    [
        (
            "kserve/sklearnserver:latest",
            "v0.11.0",
            "kserve-sklearnserver",
            {},
            "kserve/sklearnserver:v0.11.0",
        ),
        ("kserve/sklearnserver", "v1", None, {}, "kserve/sklearnserver:v1"),
        ("registry:5000/img", "v2", None, {}, "registry:5000/img:v2"),
        (
            "tensorflow/serving:2.6.2",
            None,
            "kserve-tensorflow-serving",
            {"nvidia.com/gpu": 1},
            "tensorflow/serving:2.6.2-gpu",
        ),
        (
            "pytorch/torchserve-kfs:0.8.2",
            None,
            "kserve-torchserve",
            {"nvidia.com/gpu": 1},
            "pytorch/torchserve-kfs:0.8.2-gpu",
        ),
        ("tensorflow/serving:2.6.2", None, "kserve-tensorflow-serving", {}, "tensorflow/serving:2.6.2"),
        (
            "kserve/sklearnserver:latest",
            None,
            "kserve-sklearnserver",
            {"nvidia.com/gpu": 1},
            "kserve/sklearnserver:latest",
        ),
        (
            "tensorflow/serving:2.6.2-gpu",
            None,
            "kserve-tensorflow-serving",
            {"nvidia.com/gpu": 1},
            "tensorflow/serving:2.6.2-gpu",
        ),
    ],
)
def test_update_image_tag(
    image: str, version: str | None, runtime: str | None, limits: dict[str, Any], want: str
) -> None:
    container: dict[str, Any] = {"image": image, "resources": {"limits": limits}}
    update_image_tag(container, version, runtime)
    assert container["image"] == want


# --- Selection and resolution ---------------------------------------------------------------------


def test_split_runtimes_accepts_typed_and_json_and_keeps_malformed_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    typed_local = ServingRuntime.from_object({"metadata": {"name": "a", "namespace": "ns"}})
    typed_cluster = ClusterServingRuntime.from_object({"metadata": {"name": "b"}})
    raw_cluster = cluster_runtime("c")
    raw_local = {"kind": "ServingRuntime", "metadata": {"name": "d", "namespace": "ns"}}
    malformed = {"kind": "ServingRuntime", "metadata": {"name": "e"}, "spec": {"disabled": "not-a-bool"}}
    already = MalformedRuntime("f", cluster=True, problem="x")
    with caplog.at_level(logging.DEBUG):
        local, cluster, bad = split_runtimes(
            [typed_local, typed_cluster, raw_cluster, raw_local, malformed, already]
        )
    assert [r.name for r in local] == ["a", "d"]
    assert [r.name for r in cluster] == ["b", "c"]
    assert [(r.name, r.cluster) for r in bad] == [("e", False), ("f", True)]
    assert bad[0].problem.startswith("spec.disabled: Input should be a valid boolean")
    assert not caplog.records, "splitting is silent; the reconciler logs a malformed runtime once"


def test_an_explicitly_named_malformed_runtime_is_reported_with_its_problem() -> None:
    malformed = {
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "broken"},
        "spec": {"containers": [{"name": "kserve-container", "env": [{"name": "A", "valueFrom": "x"}]}]},
    }
    with pytest.raises(ComponentSpecError) as info:
        select(model(runtime="broken"), [malformed, cluster_runtime("ok")])
    assert info.value.reason == c.FAILURE_RUNTIME_NOT_RECOGNIZED
    assert info.value.message.startswith(
        'ClusterServingRuntime "broken" cannot be used: spec.containers.0.env.0.valueFrom'
    )
    assert "No ServingRuntimes" not in info.value.message
    assert info.value.model_failure_message == "Waiting for runtime to become available"
    # Auto-selection passes over it.
    assert select(model(), [malformed, cluster_runtime("ok")])[0] == "ok"


def test_a_readable_namespace_runtime_hides_a_malformed_cluster_runtime_of_the_same_name() -> None:
    local = {
        "kind": "ServingRuntime",
        "metadata": {"name": "rt", "namespace": "ns"},
        "spec": {"supportedModelFormats": [{"name": "fmt"}], "containers": [{"name": "kserve-container"}]},
    }
    broken = {"kind": "ClusterServingRuntime", "metadata": {"name": "rt"}, "spec": {"disabled": "x"}}
    assert select(model(runtime="rt"), [broken, local]) == select(model(runtime="rt"), [local])


def test_select_requires_a_model_format() -> None:
    with pytest.raises(ComponentSpecError, match=r"modelFormat\.name"):
        select(ModelSpec.model_validate({"storageUri": "gs://b"}), [])


def test_resolve_model_puts_kserve_container_first_and_carries_runtime_metadata() -> None:
    rt = cluster_runtime(
        "rt",
        containers=[
            {"name": "sidecar", "image": "side:1", "args": ["{{.Name}}"]},
            {"name": "kserve-container", "image": "srv:1", "args": ["--model_name={{.Name}}"]},
        ],
        protocolVersions=["v2", "grpc-v2"],
        labels={"l": "1"},
        annotations={"prometheus.kserve.io/port": "8082"},
        nodeSelector={"pool": "a"},
        volumes=[{"name": "shm", "emptyDir": {}}],
    )
    resolved = resolve_model(
        isvc(), model(protocolVersion="v2", runtimeVersion="2"), {"serviceAccountName": "sa"}, [rt]
    )
    assert resolved.runtime_name == "rt"
    assert resolved.cluster
    assert resolved.protocol_version == "v2"
    assert resolved.labels == {"l": "1"}
    assert resolved.annotations == {"prometheus.kserve.io/port": "8082"}
    containers = resolved.pod_spec["containers"]
    assert [ct["name"] for ct in containers] == ["kserve-container", "sidecar"]
    assert containers[0] == {"name": "kserve-container", "image": "srv:2", "args": ["--model_name=m"]}
    assert containers[1]["args"] == ["{{.Name}}"], "only the kserve-container is templated"
    assert resolved.pod_spec["nodeSelector"] == {"pool": "a"}
    assert resolved.pod_spec["volumes"] == [{"name": "shm", "emptyDir": {}}]
    assert resolved.pod_spec["serviceAccountName"] == "sa"


def test_resolve_model_protocol_defaults_from_the_runtime() -> None:
    rt = cluster_runtime(
        "rt", containers=[{"name": "kserve-container", "image": "x"}], protocolVersions=["grpc-v2", "v2"]
    )
    resolved = resolve_model(isvc(), model(runtime="rt"), {}, [rt])
    assert resolved.protocol_version == "v2"


def test_resolve_model_without_kserve_container() -> None:
    rt = cluster_runtime("rt", containers=[{"name": "other", "image": "x"}])
    with pytest.raises(ComponentSpecError) as info:
        resolve_model(isvc(), model(), {}, [rt])
    assert info.value.reason == c.FAILURE_INVALID_PREDICTOR_SPEC
    assert info.value.message == "failed to find kserve-container in ServingRuntime containers"
    assert info.value.model_failure_message is None, "KServe records no model status for this one"


def test_resolve_model_without_any_container() -> None:
    rt = cluster_runtime("rt", containers=[])
    with pytest.raises(ComponentSpecError) as info:
        resolve_model(isvc(), model(), {}, [rt])
    assert info.value.reason == c.FAILURE_INVALID_PREDICTOR_SPEC
    assert info.value.message == "no container configuration found in selected serving runtime"
    assert info.value.model_failure_message == "No container configuration found in selected serving runtime"


def test_protocol_mismatch_of_an_explicit_runtime() -> None:
    rt = cluster_runtime("rt", containers=[{"name": "kserve-container"}], protocolVersions=["v2"])
    with pytest.raises(ComponentSpecError) as info:
        select(model(runtime="rt", protocolVersion="v1"), [rt])
    assert info.value.reason == c.FAILURE_NO_SUPPORTING_RUNTIME
    assert info.value.model_failure_message == "Specified runtime does not support specified protocol version"


# --- Strategic merge order (KServe's TestMergeRuntimeContainers / TestMergePodSpec, and more) ---------


def named(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n, **extra} for n in names]


@pytest.mark.parametrize(
    ("case", "original", "patch", "want"),
    [
        # KServe's BasicMerge tables (env, volumes, imagePullSecrets).
        ("env BasicMerge", named("PORT", "PORT2"), named("PORT2", "Some"), ["PORT", "PORT2", "Some"]),
        ("volumes BasicMerge", named("foo", "aaa"), named("foo", "xxx"), ["foo", "xxx", "aaa"]),
        ("pull secrets BasicMerge", named("foo"), named("foo", "bar"), ["foo", "bar"]),
        # New predictor items come before the runtime's; matched ones keep the predictor's order.
        ("new item first", named("A", "B", "C"), named("D"), ["D", "A", "B", "C"]),
        ("matched and new", named("A", "B", "C"), named("B", "D"), ["A", "B", "D", "C"]),
        ("reordered matches", named("A", "B", "C"), named("C", "A"), ["B", "C", "A"]),
        ("predictor secret first", named("r1"), named("p1", "r1"), ["p1", "r1"]),
        ("repeated patch key merges into one", named("A", "B"), [*named("X"), *named("X")], ["X", "A", "B"]),
        ("repeated original keys are grouped", named("C", "D", "C"), named("B"), ["B", "C", "C", "D"]),
        ("empty patch changes nothing", named("A", "B"), [], ["A", "B"]),
    ],
)
def test_strategic_merge_order(
    case: str, original: list[dict[str, Any]], patch: list[dict[str, Any]], want: list[str]
) -> None:
    merged = strategic_merge({"volumes": original}, {"volumes": patch}, POD_SPEC_LIST_KEYS)
    assert [v["name"] for v in merged["volumes"]] == want, case


def test_merge_runtime_containers_basic_merge() -> None:
    runtime = {
        "name": "kserve-container",
        "image": "default-image",
        "args": ["--foo=bar", "--test=dummy"],
        "env": [{"name": "PORT", "value": "8080"}, {"name": "PORT2", "value": "8081"}],
        "resources": {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}},
    }
    predictor = {
        "args": ["--new-arg=baz"],
        "env": [{"name": "PORT2", "value": "8082"}, {"name": "Some", "value": "Var"}],
        "resources": {"limits": {"cpu": "2", "memory": "4Gi"}},
    }
    assert merge_container(runtime, predictor) == {
        "name": "kserve-container",
        "image": "default-image",
        "args": ["--foo=bar", "--test=dummy", "--new-arg=baz"],
        "env": [
            {"name": "PORT", "value": "8080"},
            {"name": "PORT2", "value": "8082"},
            {"name": "Some", "value": "Var"},
        ],
        "resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}},
    }


def test_merge_container_orders_env_ports_and_mounts_as_kubernetes_does() -> None:
    runtime = {
        "name": "kserve-container",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)"}],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    predictor = {
        "env": [{"name": "Z", "value": "first"}, {"name": "A", "value": "2"}],
        "ports": [{"containerPort": 9000, "name": "grpc"}],
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    }
    merged = merge_container(runtime, predictor)
    assert merged["env"] == [
        {"name": "Z", "value": "first"},
        {"name": "A", "value": "2"},
        {"name": "B", "value": "$(A)"},
    ]
    assert [p["containerPort"] for p in merged["ports"]] == [9000, 8080]
    assert [m["mountPath"] for m in merged["volumeMounts"]] == ["/cache", "/dev/shm"]


def test_merge_pod_spec_basic_merge() -> None:
    runtime = {
        "nodeSelector": {"foo": "bar", "aaa": "bbb"},
        "tolerations": [{"key": "key1", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [
            {"name": "foo", "persistentVolumeClaim": {"claimName": "bar"}},
            {"name": "aaa", "persistentVolumeClaim": {"claimName": "bbb"}},
        ],
        "imagePullSecrets": [{"name": "foo"}],
    }
    predictor = {
        "nodeSelector": {"foo": "baz", "xxx": "yyy"},
        "serviceAccountName": "testAccount",
        "volumes": [
            {"name": "foo", "persistentVolumeClaim": {"claimName": "baz"}},
            {"name": "xxx", "persistentVolumeClaim": {"claimName": "yyy"}},
        ],
        "imagePullSecrets": [{"name": "foo"}, {"name": "bar"}],
    }
    assert merge_pod_spec(runtime, predictor) == {
        "nodeSelector": {"foo": "baz", "xxx": "yyy", "aaa": "bbb"},
        "tolerations": [{"key": "key1", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "testAccount",
        "volumes": [
            {"name": "foo", "persistentVolumeClaim": {"claimName": "baz"}},
            {"name": "xxx", "persistentVolumeClaim": {"claimName": "yyy"}},
            {"name": "aaa", "persistentVolumeClaim": {"claimName": "bbb"}},
        ],
        "imagePullSecrets": [{"name": "foo"}, {"name": "bar"}],
    }


def test_runtime_pod_spec_is_only_what_kserve_merges() -> None:
    rt = cluster_runtime(
        "rt",
        containers=[{"name": "kserve-container", "image": "x"}],
        schedulerName="custom",
        imagePullSecrets=[{"name": "pull"}],
    )
    resolved = resolve_model(isvc(), model(), {}, [rt])
    assert "schedulerName" not in resolved.pod_spec
    assert resolved.pod_spec["imagePullSecrets"] == [{"name": "pull"}]


# --- Runtime defaults (KServe's TestRuntimeDefaults, TestTorchServeDefaults, TestSetTritonDefaults,
#     TestMlServerDefaults), through the whole resolution with the runtimes' own templates ---------------


def shipped_runtime(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((RUNTIMES_DIR / f"{name}.yaml").read_text())
    return doc


MLSERVER_RUNTIME: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterServingRuntime",
    "metadata": {"name": "kserve-mlserver"},
    "spec": {
        "supportedModelFormats": [
            {"name": fmt, "version": version, "autoSelect": True, "priority": 2}
            for fmt, version in (("sklearn", "0"), ("sklearn", "1"), ("xgboost", "1"), ("lightgbm", "3"))
        ]
        + [{"name": "mlflow", "version": "1", "autoSelect": True, "priority": 1}],
        "protocolVersions": ["v2"],
        "containers": [
            {
                "name": "kserve-container",
                "image": "docker.io/seldonio/mlserver:1.3.2",
                "env": [
                    {"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": "{{.Labels.modelClass}}"},
                    {"name": "MLSERVER_HTTP_PORT", "value": "8080"},
                    {"name": "MLSERVER_GRPC_PORT", "value": "9000"},
                    {"name": "MODELS_DIR", "value": "/mnt/models"},
                ],
            }
        ],
    },
}
"""KServe v0.11's kserve-mlserver ClusterServingRuntime (not shipped here: its image is not offline)."""


def all_runtimes() -> list[dict[str, Any]]:
    return [
        *(yaml.safe_load(p.read_text()) for p in sorted(RUNTIMES_DIR.glob("kserve-*.yaml"))),
        MLSERVER_RUNTIME,
    ]


def predictor_isvc(name: str = "foo", labels: dict[str, str] | None = None) -> InferenceService:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if labels:
        meta["labels"] = labels
    return InferenceService.from_object({"metadata": meta})


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


GS = "gs://testbucket/testmodel"


@pytest.mark.parametrize(
    ("case", "model_fields", "runtime", "labels", "protocol", "env", "absent_env", "args"),
    [
        # TestRuntimeDefaults: the protocol each runtime gives a model that names none.
        ("PyTorch", {"modelFormat": {"name": "pytorch"}, "storageUri": GS}, "kserve-torchserve", {}, "v1",
         {"PROTOCOL_VERSION": "v1", "TS_SERVICE_ENVELOPE": "kserve"}, (), None),
        ("Triton", {"modelFormat": {"name": "triton"}, "storageUri": GS}, "kserve-tritonserver", {}, "v2",
         {}, (), None),
        ("MlServer", {"modelFormat": {"name": "xgboost"}, "storageUri": GS}, "kserve-mlserver", {}, "v2",
         {"MLSERVER_MODEL_NAME": "foo", "MLSERVER_MODEL_URI": "/mnt/models",
          "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_xgboost.XGBoostModel"},
         ("MLSERVER_LOAD_MODELS_AT_STARTUP",), None),
        # TestTorchServeDefaults.
        ("pytorch with protocol version 2",
         {"modelFormat": {"name": "pytorch"}, "storageUri": GS, "protocolVersion": "v2"}, "kserve-torchserve",
         {"serviceEnvelope": "kservev2"}, "v2", {"PROTOCOL_VERSION": "v2", "TS_SERVICE_ENVELOPE": "kservev2"},
         (), None),
        ("pytorch with labels", {"modelFormat": {"name": "pytorch"}, "storageUri": GS}, "kserve-torchserve",
         {"Purpose": "Testing", "serviceEnvelope": "kserve"}, "v1", {"TS_SERVICE_ENVELOPE": "kserve"}, (),
         None),
        ("pytorch grpc-v1 keeps the v1 envelope",
         {"modelFormat": {"name": "pytorch"}, "storageUri": GS, "protocolVersion": "grpc-v1"},
         "kserve-torchserve", {"serviceEnvelope": "kserve"}, "grpc-v1", {"PROTOCOL_VERSION": "grpc-v1"}, (),
         None),
        ("the user's PROTOCOL_VERSION gives way to the default's",
         {"modelFormat": {"name": "pytorch"}, "storageUri": GS, "protocolVersion": "v2",
          "env": [{"name": "PROTOCOL_VERSION", "value": "mine"}]},
         "kserve-torchserve", {}, "v2", {"PROTOCOL_VERSION": "v2"}, (), None),
        # TestSetTritonDefaults.
        ("Storage URI is nil", {"modelFormat": {"name": "triton"}}, "kserve-tritonserver", {}, "v2", {}, (),
         ["tritonserver", "--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080",
          "--allow-grpc=true", "--allow-http=true", "--model-control-mode=explicit"]),
        ("storage spec counts as a location", {"modelFormat": {"name": "triton"}, "storage": {"key": "k"}},
         "kserve-tritonserver", {}, "v2", {}, (),
         ["tritonserver", "--model-store=/mnt/models", "--grpc-port=9000", "--http-port=8080",
          "--allow-grpc=true", "--allow-http=true"]),
        # TestMlServerDefaults.
        ("MLServer storage URI is nil", {"modelFormat": {"name": "sklearn"}}, "kserve-mlserver",
         {"modelClass": "mlserver_sklearn.SKLearnModel"}, "v2",
         {"MLSERVER_LOAD_MODELS_AT_STARTUP": "false",
          "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_sklearn.SKLearnModel"},
         ("MLSERVER_MODEL_NAME", "MLSERVER_MODEL_URI"), None),
        ("XGBoost model", {"modelFormat": {"name": "xgboost"}, "storageUri": GS}, "kserve-mlserver",
         {"modelClass": "mlserver_xgboost.XGBoostModel"}, "v2",
         {"MLSERVER_MODEL_NAME": "foo", "MLSERVER_MODEL_URI": "/mnt/models"}, (), None),
        ("LightGBM model", {"modelFormat": {"name": "lightgbm"}, "storageUri": GS}, "kserve-mlserver",
         {"modelClass": "mlserver_lightgbm.LightGBMModel"}, "v2",
         {"MLSERVER_MODEL_IMPLEMENTATION": "mlserver_lightgbm.LightGBMModel"}, (), None),
        ("LightGBM model with labels", {"modelFormat": {"name": "lightgbm"}, "storageUri": GS},
         "kserve-mlserver", {"Purpose": "Testing"}, "v2", {"MLSERVER_MODEL_NAME": "foo"}, (), None),
        ("mlflow model", {"modelFormat": {"name": "mlflow"}, "storageUri": GS, "runtime": "kserve-mlserver"},
         "kserve-mlserver", {"modelClass": "mlserver_mlflow.MLflowRuntime"}, "v2", {}, (), None),
        ("the user's MLServer env is kept",
         {"modelFormat": {"name": "sklearn"}, "storageUri": GS, "protocolVersion": "v2",
          "env": [{"name": "MLSERVER_MODEL_NAME", "value": "mine"}]},
         "kserve-mlserver", {}, "v2", {"MLSERVER_MODEL_NAME": "mine", "MLSERVER_MODEL_URI": "/mnt/models"},
         (), None),
    ],
)  # fmt: skip
def test_runtime_defaults(
    case: str,
    model_fields: dict[str, Any],
    runtime: str,
    labels: dict[str, str],
    protocol: str,
    env: dict[str, str],
    absent_env: tuple[str, ...],
    args: list[str] | None,
) -> None:
    fields = {"runtime": runtime, **model_fields}
    with_labels = predictor_isvc(labels={"Purpose": "Testing"} if "Purpose" in labels else None)
    resolved = resolve_model(with_labels, ModelSpec.model_validate(fields), {}, all_runtimes())
    assert resolved.runtime_name == runtime, case
    assert resolved.protocol_version == protocol, case
    assert labels.items() <= resolved.isvc_labels.items(), case
    container = resolved.pod_spec["containers"][0]
    assert env.items() <= env_of(container).items(), case
    assert not set(absent_env) & set(env_of(container)), case
    assert [e["name"] for e in container.get("env") or []].count("PROTOCOL_VERSION") <= 1, case
    if args is not None:
        assert container["args"] == args, case


def test_defaults_apply_after_automatic_selection_too() -> None:
    model_spec = ModelSpec.model_validate({"modelFormat": {"name": "pytorch"}, "storageUri": GS})
    resolved = resolve_model(predictor_isvc(), model_spec, {}, all_runtimes())
    assert resolved.runtime_name == "kserve-torchserve"
    assert resolved.isvc_labels == {"serviceEnvelope": "kserve"}
    assert env_of(resolved.pod_spec["containers"][0])["TS_SERVICE_ENVELOPE"] == "kserve"


def test_an_explicit_runtime_is_checked_against_the_protocol_its_defaults_give() -> None:
    """kserve-mlserver defaults the protocol to v2 before its protocol check: a v1-only copy refuses it."""
    v1_only = {**MLSERVER_RUNTIME, "spec": {**MLSERVER_RUNTIME["spec"], "protocolVersions": ["v1"]}}
    with pytest.raises(ComponentSpecError) as info:
        resolve_model(predictor_isvc(), model(runtime="kserve-mlserver"), {}, [v1_only])
    assert info.value.model_failure_message == "Specified runtime does not support specified protocol version"


def test_other_runtimes_get_no_defaults_and_the_runtime_protocol() -> None:
    model_spec = ModelSpec.model_validate({"modelFormat": {"name": "sklearn"}, "storageUri": GS})
    resolved = resolve_model(predictor_isvc(), model_spec, {}, all_runtimes())
    assert resolved.runtime_name == "kserve-sklearnserver"
    assert resolved.protocol_version == "v1"
    assert resolved.isvc_labels == {}
    unlisted = cluster_runtime("rt", containers=[{"name": "kserve-container", "image": "x"}])
    assert resolve_model(isvc(), model(), {}, [unlisted]).protocol_version == ""


# --- Every shipped runtime, rendered for a sample InferenceService -------------------------------------

_UNRESOLVED = re.compile(r"{{|}}|<no value>")


@pytest.mark.parametrize("path", sorted(RUNTIMES_DIR.glob("kserve-*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_runtime_renders_without_unresolved_templates(path: Path) -> None:
    rt = yaml.safe_load(path.read_text())
    for entry in rt["spec"]["supportedModelFormats"]:
        fields = {"modelFormat": {"name": entry["name"]}, "runtime": rt["metadata"]["name"], "storageUri": GS}
        resolved = resolve_model(predictor_isvc("sample"), ModelSpec.model_validate(fields), {}, [rt])
        rendered = yaml.safe_dump(resolved.pod_spec)
        assert not _UNRESOLVED.search(rendered), (entry["name"], rendered)
        # And every value the runtime templated is non-empty.
        container = resolved.pod_spec["containers"][0]
        templated = [e["name"] for e in rt["spec"]["containers"][0].get("env") or [] if "{{" in e["value"]]
        for name in templated:
            assert env_of(container)[name], (entry["name"], name)
