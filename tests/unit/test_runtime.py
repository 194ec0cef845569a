"""ServingRuntime resolution and KServe's merge rules for the predictor's pod spec."""

from __future__ import annotations

from typing import Any

import pytest

from apis import constants as c
from apis.inferenceservice import InferenceService, ModelSpec
from apis.servingruntime import ClusterServingRuntime, ServingRuntime
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
        "env": [{"name": "N", "value": "m-<no value>"}],
        "ports": [{"containerPort": 8080}],
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


def test_split_runtimes_accepts_typed_and_json_and_skips_malformed() -> None:
    typed_local = ServingRuntime.from_object({"metadata": {"name": "a", "namespace": "ns"}})
    typed_cluster = ClusterServingRuntime.from_object({"metadata": {"name": "b"}})
    raw_cluster = cluster_runtime("c")
    raw_local = {"kind": "ServingRuntime", "metadata": {"name": "d", "namespace": "ns"}}
    malformed = {"kind": "ServingRuntime", "metadata": {"name": "e"}, "spec": {"disabled": "not-a-bool"}}
    local, cluster = split_runtimes([typed_local, typed_cluster, raw_cluster, raw_local, malformed])
    assert [r.name for r in local] == ["a", "d"]
    assert [r.name for r in cluster] == ["b", "c"]


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


def test_protocol_mismatch_of_an_explicit_runtime() -> None:
    rt = cluster_runtime("rt", containers=[{"name": "kserve-container"}], protocolVersions=["v2"])
    with pytest.raises(ComponentSpecError) as info:
        select(model(runtime="rt", protocolVersion="v1"), [rt])
    assert info.value.reason == c.FAILURE_NO_SUPPORTING_RUNTIME
    assert info.value.model_failure_message == "Specified runtime does not support specified protocol version"
