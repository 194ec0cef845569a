"""The InferenceService defaulting/validating webhooks and the TrainedModel validator, without a server."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apis.config import InferenceServicesConfig
from webhooks.admission import AdmissionRequest, AdmissionResponse
from webhooks.inferenceservice import (
    InferenceServiceDefaulter,
    InferenceServiceValidator,
    InvalidObject,
    default_inference_service,
    storage_uri_error,
    validate_inference_service,
)
from webhooks.trainedmodel import TrainedModelValidator, validate_trained_model

FRAMEWORKS = ["sklearn", "xgboost", "tensorflow", "pytorch", "triton", "onnx", "pmml", "lightgbm", "paddle"]
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}


def isvc(name: str = "my-model", annotations: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations is not None:
        metadata["annotations"] = annotations
    if not spec:
        spec = {"predictor": {"sklearn": {"storageUri": "gs://bucket/model"}}}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": spec,
    }


def _name_of(obj: Any) -> str:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def request(
    obj: dict[str, Any] | None,
    *,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    kind: str = "InferenceService",
    version: str = "v1beta1",
    group: str = "serving.kserve.io",
) -> AdmissionRequest:
    return AdmissionRequest.model_validate(
        {
            "uid": "u-1",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
            "name": _name_of(obj),
            "namespace": "default",
            "operation": operation,
            "object": obj,
            "oldObject": old,
        }
    )


def config(**keys: Any) -> InferenceServicesConfig:
    return InferenceServicesConfig.from_configmap({k: json.dumps(v) for k, v in keys.items()})


def patched(obj: dict[str, Any], response: AdmissionResponse) -> dict[str, Any]:
    assert response.allowed, response.status
    result: dict[str, Any] = jsonpatch.apply_patch(obj, response.json_patch())
    return result


def message(response: AdmissionResponse) -> str:
    assert response.status is not None
    assert response.status.message
    return response.status.message


# --- Defaulting -----------------------------------------------------------------------------------


def test_legacy_sklearn_becomes_model_with_everything_carried_over() -> None:
    spec: dict[str, Any] = {
        "predictor": {
            "minReplicas": 2,
            "sklearn": {
                "storageUri": "gs://bucket/model",
                "runtimeVersion": "1.3.0",
                "protocolVersion": "v2",
                "env": [{"name": "A", "value": "1"}],
                "name": "mine",
            },
        }
    }
    out = default_inference_service(isvc(**spec))
    predictor = out["spec"]["predictor"]
    assert "sklearn" not in predictor
    assert predictor["minReplicas"] == 2
    assert predictor["model"] == {
        "modelFormat": {"name": "sklearn"},
        "storageUri": "gs://bucket/model",
        "runtimeVersion": "1.3.0",
        "protocolVersion": "v2",
        "env": [{"name": "A", "value": "1"}],
        "name": "mine",
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_legacy_framework_is_converted(framework: str) -> None:
    out = default_inference_service(isvc(predictor={framework: {"storageUri": "s3://b/m"}}))
    model = out["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": framework}
    assert framework not in out["spec"]["predictor"]
    # KServe's assignTritonRuntime and assignONNXRuntime default the protocol to v2; the others none.
    assert model.get("protocolVersion") == ("v2" if framework in ("triton", "onnx") else None)


@pytest.mark.parametrize("framework", ["triton", "onnx"])
def test_v2_frameworks_keep_an_explicit_protocol(framework: str) -> None:
    out = default_inference_service(isvc(predictor={framework: {"protocolVersion": "grpc-v2"}}))
    assert out["spec"]["predictor"]["model"]["protocolVersion"] == "grpc-v2"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # KServe setPredictorModelDefaults: only a Triton model without a protocol gets one (v2).
        pytest.param(
            {"modelFormat": {"name": "triton"}},
            {"modelFormat": {"name": "triton"}, "protocolVersion": "v2"},
            id="triton-v2",
        ),
        pytest.param(
            {"modelFormat": {"name": "triton"}, "protocolVersion": "grpc-v2"},
            {"modelFormat": {"name": "triton"}, "protocolVersion": "grpc-v2"},
            id="triton-explicit",
        ),
        pytest.param(
            {"modelFormat": {"name": "onnx"}}, {"modelFormat": {"name": "onnx"}}, id="onnx-untouched"
        ),
        # KServe's ModelSpec.Default is empty: no name, no resources; the runtime's container supplies them.
        pytest.param(
            {"modelFormat": {"name": "sklearn"}, "resources": {"limits": {"cpu": "2"}}},
            {"modelFormat": {"name": "sklearn"}, "resources": {"limits": {"cpu": "2"}}},
            id="resources-untouched",
        ),
        pytest.param(
            {"modelFormat": {"name": "x"}, "name": "mine"},
            {"modelFormat": {"name": "x"}, "name": "mine"},
            id="name-untouched",
        ),
    ],
)
def test_model_predictor_defaults_as_in_kserve(model: dict[str, Any], expected: dict[str, Any]) -> None:
    out = default_inference_service(isvc(predictor={"model": model}))
    assert out["spec"]["predictor"]["model"] == expected


def test_legacy_predictor_gets_no_resources_or_name() -> None:
    """KServe converts before defaulting, so a legacy key gets the (empty) ModelSpec defaults too."""
    out = default_inference_service(isvc(predictor={"sklearn": {"storageUri": "s3://b/m"}}))
    assert out["spec"]["predictor"]["model"] == {"storageUri": "s3://b/m", "modelFormat": {"name": "sklearn"}}


def test_custom_predictor_first_container_is_kserve_container() -> None:
    containers = [{"name": "server", "image": "me/server"}, {"name": "sidecar", "image": "me/side"}]
    out = default_inference_service(isvc(predictor={"containers": containers}))
    first, second = out["spec"]["predictor"]["containers"]
    assert first == {"name": "kserve-container", "image": "me/server", "resources": DEFAULT_RESOURCES}
    assert second == {"name": "sidecar", "image": "me/side"}


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        pytest.param(
            {"requests": {"cpu": "2"}, "limits": {"memory": "4Gi"}},
            {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
            id="user-values-kept-defaulted-limit-not-below-request",
        ),
        pytest.param(
            {"limits": {"cpu": "500m", "memory": "1Gi"}},
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "1Gi"}},
            id="defaulted-request-not-above-limit",
        ),
        pytest.param(
            {"requests": {"cpu": "100m", "nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
            {
                "requests": {"cpu": "100m", "memory": "2Gi", "nvidia.com/gpu": 1},
                "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1},
            },
            id="other-resources-untouched",
        ),
        pytest.param(
            {"requests": None, "limits": {"cpu": 4}},
            {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": 4, "memory": "2Gi"}},
            id="null-requests-and-numeric-quantity",
        ),
    ],
)
def test_default_resources_fill_only_missing_values(
    resources: dict[str, Any], expected: dict[str, Any]
) -> None:
    out = default_inference_service(isvc(predictor={"containers": [{"image": "x", "resources": resources}]}))
    assert out["spec"]["predictor"]["containers"][0]["resources"] == expected


def test_explainer_defaults_runtime_version_from_config() -> None:
    cfg = config(explainers={"alibi": {"image": "kserve/alibi-explainer", "defaultImageVersion": "v0.11.2"}})
    obj = isvc(predictor={"sklearn": {}}, explainer={"alibi": {"type": "AnchorTabular"}})
    alibi = default_inference_service(obj, config=cfg)["spec"]["explainer"]["alibi"]
    assert alibi == {
        "type": "AnchorTabular",
        "runtimeVersion": "v0.11.2",
        "name": "kserve-container",
        "resources": DEFAULT_RESOURCES,
    }
    kept = isvc(predictor={"sklearn": {}}, explainer={"art": {"runtimeVersion": "0.1"}})
    assert default_inference_service(kept)["spec"]["explainer"]["art"]["runtimeVersion"] == "0.1"


def test_transformer_and_custom_explainer_containers_are_defaulted() -> None:
    obj = isvc(
        predictor={"sklearn": {}},
        transformer={"containers": [{"image": "t"}]},
        explainer={"containers": [{"image": "e"}]},
    )
    out = default_inference_service(obj)
    for component in ("transformer", "explainer"):
        container = out["spec"][component]["containers"][0]
        assert container["name"] == "kserve-container"
        assert container["resources"] == DEFAULT_RESOURCES


@pytest.mark.parametrize(
    ("default_mode", "annotations", "expected"),
    [
        ("RawDeployment", None, {"serving.kserve.io/deploymentMode": "RawDeployment"}),
        ("ModelMesh", {"a": "b"}, {"a": "b", "serving.kserve.io/deploymentMode": "ModelMesh"}),
        ("Serverless", None, None),
        ("RawDeployment", {"serving.kserve.io/deploymentMode": "Serverless"}, None),
    ],
)
def test_deployment_mode_annotation(
    default_mode: str, annotations: dict[str, str] | None, expected: dict[str, str] | None
) -> None:
    cfg = config(deploy={"defaultDeploymentMode": default_mode})
    out = default_inference_service(isvc(annotations=annotations), config=cfg)
    assert out["metadata"].get("annotations") == (expected if expected is not None else annotations)


def test_model_mesh_predictor_is_not_converted_but_transformer_is_defaulted() -> None:
    obj = isvc(
        annotations={"serving.kserve.io/deploymentMode": "ModelMesh"},
        predictor={"sklearn": {"storageUri": "s3://b/m"}},
        transformer={"containers": [{"image": "t"}]},
    )
    out = default_inference_service(obj)
    assert out["spec"]["predictor"] == {"sklearn": {"storageUri": "s3://b/m"}}
    assert out["spec"]["transformer"]["containers"][0]["name"] == "kserve-container"


def test_conflicting_implementations_are_left_for_the_validator() -> None:
    obj = isvc(predictor={"sklearn": {"storageUri": "s3://a"}, "model": {"modelFormat": {"name": "onnx"}}})
    assert default_inference_service(obj) == obj


def test_defaulting_is_idempotent_and_does_not_modify_its_input() -> None:
    obj = isvc(
        predictor={"triton": {"storageUri": "s3://b/m"}},
        explainer={"alibi": {}},
        transformer={"containers": [{"image": "t"}]},
    )
    before = copy.deepcopy(obj)
    once = default_inference_service(obj)
    assert obj == before
    assert default_inference_service(once) == once


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2], "an InferenceService must be a JSON object, got a list"),
        ({"metadata": [], "spec": {}}, "metadata must be an object, got a list"),
        ({"metadata": {"annotations": "x"}}, "metadata.annotations must be an object, got a string"),
        (isvc(predictor={"sklearn": "yes"}), "spec.predictor.sklearn must be an object, got a string"),
        (isvc(predictor={"containers": {"a": 1}}), "spec.predictor.containers must be a list, got an object"),
        (
            isvc(predictor={"containers": ["x"]}),
            "spec.predictor.containers[0] must be an object, got a string",
        ),
        (
            isvc(transformer={"containers": [{"resources": {"limits": [1]}}]}),
            "spec.transformer.containers[0].resources.limits must be an object, got a list",
        ),
    ],
)
def test_defaulter_names_the_malformed_field(obj: Any, expected: str) -> None:
    with pytest.raises(InvalidObject) as info:
        default_inference_service(obj)
    assert str(info.value) == expected


async def test_defaulter_handler_answers_with_a_patch_that_reproduces_the_defaults() -> None:
    obj = isvc(predictor={"sklearn": {"storageUri": "gs://b/m"}})
    response = await InferenceServiceDefaulter().handle(request(obj))
    assert response.patch_type == "JSONPatch"
    assert patched(obj, response) == default_inference_service(obj)
    again = await InferenceServiceDefaulter().handle(request(patched(obj, response)))
    assert again.allowed
    assert again.patch is None


async def test_defaulter_handler_reads_config_from_the_provider_on_each_request() -> None:
    data = {"deploy": json.dumps({"defaultDeploymentMode": "Serverless"})}
    defaulter = InferenceServiceDefaulter(lambda: data)
    first = await defaulter.handle(request(isvc()))
    assert all(op["path"] != "/metadata/annotations" for op in first.json_patch())
    data = {"deploy": json.dumps({"defaultDeploymentMode": "RawDeployment"})}
    second = await defaulter.handle(request(isvc()))
    assert patched(isvc(), second)["metadata"]["annotations"] == {
        "serving.kserve.io/deploymentMode": "RawDeployment"
    }


async def test_defaulter_handler_denies_malformed_objects_with_the_field() -> None:
    response = await InferenceServiceDefaulter().handle(request(isvc(predictor={"sklearn": 3})))
    assert not response.allowed
    assert message(response) == (
        'the InferenceService "my-model" is invalid: spec.predictor.sklearn must be an object, got a number'
    )


def _raise() -> Mapping[str, str]:
    raise RuntimeError("cache not synced")


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (_raise, "cannot read ConfigMap inferenceservice-config: cache not synced"),
        (lambda: None, "ConfigMap inferenceservice-config not found"),
        (lambda: {"deploy": "{not json"}, 'inferenceservice-config key "deploy": invalid JSON'),
    ],
)
async def test_defaulter_config_problems_are_admission_errors(
    provider: Callable[[], Mapping[str, str] | None], expected: str
) -> None:
    response = await InferenceServiceDefaulter(provider).handle(request(isvc()))
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == 500
    assert expected in message(response)


@pytest.mark.parametrize("handler", [InferenceServiceDefaulter(), InferenceServiceValidator()])
async def test_isvc_handlers_reject_other_kinds(handler: InferenceServiceDefaulter) -> None:
    response = await handler.handle(request({"metadata": {"name": "p"}}, kind="Pod", group="", version="v1"))
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == 400
    assert message(response) == "expected a serving.kserve.io/InferenceService, got Pod"


# --- Validation -----------------------------------------------------------------------------------

PREDICTOR_CHOICES = (
    "sklearn, xgboost, tensorflow, pytorch, triton, onnx, pmml, lightgbm, paddle, model, containers"
)
SERVERLESS_METRICS = {"serving.kserve.io/deploymentMode": "Serverless"}
RAW = {"serving.kserve.io/deploymentMode": "RawDeployment"}


def with_predictor(annotations: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    return isvc(annotations=annotations, predictor={"sklearn": {"storageUri": "gs://b/m"}, **fields})


VALID = [
    pytest.param(isvc(), id="minimal"),
    pytest.param(
        isvc(predictor={"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://b/m"}}), id="model"
    ),
    pytest.param(isvc(predictor={"containers": [{"image": "me/server"}]}), id="custom"),
    pytest.param(with_predictor(minReplicas=0, maxReplicas=0), id="zero-replicas"),
    pytest.param(with_predictor(minReplicas=3, maxReplicas=0), id="max-0-means-unlimited"),
    pytest.param(with_predictor(maxReplicas=5), id="max-only"),
    pytest.param(with_predictor(canaryTrafficPercent=0, containerConcurrency=0), id="zero-canary"),
    pytest.param(with_predictor(logger={"url": "http://x"}), id="logger-mode-defaulted-by-crd"),
    pytest.param(with_predictor(logger={"mode": "response"}), id="logger-response"),
    pytest.param(with_predictor(scaleMetric="rps", scaleTarget=5), id="kpa-rps"),
    pytest.param(with_predictor(RAW, scaleMetric="memory", scaleTarget=512), id="raw-memory"),
    pytest.param(
        with_predictor({"serving.kserve.io/autoscalerClass": "hpa", "serving.kserve.io/metrics": "memory"}),
        id="hpa-annotations",
    ),
    pytest.param(with_predictor({"serving.kserve.io/targetUtilizationPercentage": "80"}), id="target-80"),
    pytest.param(isvc(predictor={"pytorch": {"storageUri": "/mnt/models/m"}}), id="local-path"),
    pytest.param(
        isvc(predictor={"onnx": {"storageUri": "https://acct.blob.core.windows.net/c/model.onnx"}}),
        id="azure",
    ),
    pytest.param(
        isvc(
            predictor={"sklearn": {}}, explainer={"alibi": {}}, transformer={"containers": [{"image": "t"}]}
        ),
        id="three-components",
    ),
    pytest.param(
        isvc(name="a" * 51, predictor={"sklearn": {}}, transformer={"containers": [{}]}), id="name-51"
    ),
    pytest.param(isvc(name="a" * 53), id="name-53-predictor-only"),
    pytest.param(
        isvc(name="", predictor={"sklearn": {}}) | {"metadata": {"generateName": "m-"}}, id="generateName"
    ),
]


@pytest.mark.parametrize("obj", VALID)
def test_valid_inference_services(obj: dict[str, Any]) -> None:
    assert validate_inference_service(obj) == []


INVALID = [
    pytest.param(
        isvc(name="My_Model"),
        "metadata.name \"My_Model\" is invalid: use lower case letters, digits and '-', starting with a "
        "letter and ending with a letter or digit (regex '[a-z]([-a-z0-9]*[a-z0-9])?'), e.g. 'my-model'",
        id="name-format",
    ),
    pytest.param(isvc(name="model-"), 'metadata.name "model-" is invalid', id="name-trailing-dash"),
    pytest.param(isvc(name="1model"), 'metadata.name "1model" is invalid', id="name-leading-digit"),
    pytest.param(
        isvc(name="a" * 52, predictor={"sklearn": {}}, transformer={"containers": [{}]}),
        'metadata.name is too long (52 characters): the transformer is served as "'
        + "a" * 52
        + '-transformer", which must be at most 63 characters, so use a name of at most 51 characters',
        id="name-too-long-for-transformer",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {}, "xgboost": {}}),
        f"predictor must have exactly one of {PREDICTOR_CHOICES}; found sklearn and xgboost",
        id="two-frameworks",
    ),
    pytest.param(
        isvc(predictor={"model": {"modelFormat": {"name": "x"}}, "containers": [{}], "onnx": {}}),
        f"predictor must have exactly one of {PREDICTOR_CHOICES}; found onnx, model and containers",
        id="three-implementations",
    ),
    pytest.param(
        isvc(predictor={"minReplicas": 1}),
        f"predictor must have exactly one of {PREDICTOR_CHOICES}; found none",
        id="no-implementation",
    ),
    pytest.param(
        isvc(predictor={"containers": []}),
        f"predictor must have exactly one of {PREDICTOR_CHOICES}; found none (containers is empty)",
        id="empty-containers",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {}}, explainer={"alibi": {}, "art": {}}),
        "explainer must have exactly one of alibi, art, containers; found alibi and art",
        id="two-explainers",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {}}, transformer={"minReplicas": 1}),
        "transformer must have containers; found none",
        id="transformer-without-containers",
    ),
    pytest.param(
        {"metadata": {"name": "m"}, "spec": {"transformer": {"containers": [{}]}}},
        "spec.predictor is required: set one of " + PREDICTOR_CHOICES,
        id="no-predictor",
    ),
    pytest.param(
        with_predictor(minReplicas=-1), "spec.predictor.minReplicas must be at least 0, got -1", id="min"
    ),
    pytest.param(
        with_predictor(maxReplicas=-2), "spec.predictor.maxReplicas must be at least 0, got -2", id="max"
    ),
    pytest.param(
        with_predictor(minReplicas=3, maxReplicas=2),
        "spec.predictor.minReplicas (3) must not be greater than spec.predictor.maxReplicas (2); raise "
        "maxReplicas or set it to 0 for no limit",
        id="min-above-max",
    ),
    pytest.param(
        with_predictor(containerConcurrency=-1),
        "spec.predictor.containerConcurrency must be at least 0, got -1",
        id="concurrency",
    ),
    pytest.param(
        with_predictor(canaryTrafficPercent=101),
        "spec.predictor.canaryTrafficPercent must be from 0 to 100, got 101",
        id="canary",
    ),
    pytest.param(
        with_predictor(minReplicas="2"),
        'spec.predictor.minReplicas must be an integer, got "2"',
        id="min-type",
    ),
    pytest.param(
        with_predictor(logger={"mode": "everything"}),
        'spec.predictor.logger.mode "everything" must be one of all, request, response',
        id="logger-mode",
    ),
    pytest.param(
        with_predictor({"serving.kserve.io/autoscalerClass": "keda"}),
        'annotation serving.kserve.io/autoscalerClass "keda" is not a supported autoscaler class; use hpa, '
        "external (or remove it for the Knative autoscaler)",
        id="autoscaler-class",
    ),
    pytest.param(
        with_predictor({"serving.kserve.io/autoscalerClass": "hpa", "serving.kserve.io/metrics": "rps"}),
        'annotation serving.kserve.io/metrics "rps" is not a supported HPA metric; use cpu or memory',
        id="hpa-metric-annotation",
    ),
    *[
        pytest.param(
            with_predictor({"serving.kserve.io/targetUtilizationPercentage": value}),
            f'annotation serving.kserve.io/targetUtilizationPercentage "{value}" must be an integer '
            "from 1 to 100",
            id=f"target-utilization-{value or 'empty'}",
        )
        for value in ("0", "101", "abc", "50.5", "")
    ],
    pytest.param(
        with_predictor(SERVERLESS_METRICS, scaleMetric="cpu"),
        'spec.predictor.scaleMetric "cpu" is not supported by the Knative autoscaler; use concurrency or '
        "rps, or set the annotation serving.kserve.io/autoscalerClass: hpa for cpu or memory",
        id="kpa-cpu",
    ),
    pytest.param(
        with_predictor(RAW, scaleMetric="concurrency"),
        'spec.predictor.scaleMetric "concurrency" is not supported by the HPA autoscaler (used in '
        "RawDeployment mode or with autoscalerClass hpa); use cpu or memory",
        id="hpa-concurrency",
    ),
    pytest.param(
        with_predictor(RAW, scaleTarget=150),
        "spec.predictor.scaleTarget must be a CPU utilization percentage from 1 to 100, got 150",
        id="hpa-cpu-target",
    ),
    pytest.param(
        with_predictor(
            {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
            scaleMetric="memory",
            scaleTarget=0,
        ),
        "spec.predictor.scaleTarget must be at least 1 (MiB of memory), got 0",
        id="knative-hpa-memory-target",
    ),
    pytest.param(
        with_predictor(scaleMetric="rps", scaleTarget=0),
        "spec.predictor.scaleTarget must be at least 1 request per second, got 0",
        id="kpa-rps-target",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {"storageUri": "ftp://host/model"}}),
        'spec.predictor.sklearn.storageUri "ftp://host/model" is not supported: use a URI starting with '
        "gs://, s3://, pvc://, file://, https://, http://, hdfs://, webhdfs://, an Azure blob URL "
        "(https://<account>.blob.core.windows.net/<container>/<path>), a local path, or a URI a "
        "ClusterStorageContainer serves",
        id="storage-scheme",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {"storageUri": "abfs://acct.blob.core.windows.net/c"}}),
        'spec.predictor.sklearn.storageUri "abfs://acct.blob.core.windows.net/c" is not supported',
        id="storage-azure-malformed",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {}}, explainer={"art": {"storageUri": "oci://x/y"}}),
        'spec.explainer.art.storageUri "oci://x/y" is not supported',
        id="explainer-storage",
    ),
    pytest.param(
        isvc(predictor={"containers": [{"env": [{"name": "STORAGE_URI", "value": "ftp://m"}]}]}),
        'spec.predictor.containers[0].env[0] (STORAGE_URI) "ftp://m" is not supported',
        id="custom-storage-env",
    ),
    pytest.param(
        isvc(predictor={"model": {"storageUri": "s3://b/m"}}),
        "spec.predictor.model.modelFormat.name is required (the model's format, e.g. sklearn or onnx)",
        id="model-format",
    ),
    pytest.param(
        isvc(predictor={"triton": {"protocolVersion": "v3"}}),
        'spec.predictor.triton.protocolVersion "v3" must be one of v1, v2, grpc-v1, grpc-v2',
        id="protocol",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {"storageUri": 7}}),
        "spec.predictor.sklearn.storageUri must be a string, got a number",
        id="storage-type",
    ),
    pytest.param(isvc(predictor=[1]), "spec.predictor must be an object, got a list", id="predictor-type"),
    pytest.param(
        isvc(annotations={"serving.kserve.io/autoscalerClass": 1}),
        "annotation serving.kserve.io/autoscalerClass must be a string, got a number",
        id="annotation-type",
    ),
    pytest.param(
        {"metadata": {"name": "x"}, "spec": "s"}, "spec must be an object, got a string", id="spec-type"
    ),
    pytest.param({"metadata": {"name": "x"}}, "spec is required", id="spec-missing"),
    pytest.param({"spec": {}}, "metadata must be an object, got null", id="metadata-missing"),
    pytest.param("isvc", "an InferenceService must be a JSON object, got a string", id="not-an-object"),
]


@pytest.mark.parametrize(("obj", "expected"), INVALID)
def test_invalid_inference_services(obj: Any, expected: str) -> None:
    errors = validate_inference_service(obj)
    assert any(error.startswith(expected) for error in errors), errors


MODEL_MESH = {"serving.kserve.io/deploymentMode": "ModelMesh"}
GPU_LIMIT = {"limits": {"nvidia.com/gpu": "1"}}


def custom_predictor(*env: dict[str, str]) -> dict[str, Any]:
    return isvc(predictor={"containers": [{"image": "me/server", "env": list(env)}]})


def legacy(framework: str, **fields: Any) -> dict[str, Any]:
    """A legacy predictor key as the validator sees it after defaulting: in ModelMesh mode."""
    return isvc(annotations=MODEL_MESH, predictor={framework: fields})


KSERVE_SPEC_CHECKS = [
    # predictor_custom_test.go TestCustomPredictorValidation
    pytest.param(custom_predictor({"name": "PROTOCOL", "value": "v1"}), [], id="custom-protocol-v1"),
    pytest.param(custom_predictor({"name": "PROTOCOL", "value": "v2"}), [], id="custom-protocol-v2"),
    pytest.param(
        custom_predictor({"name": "PROTOCOL", "value": "unknown"}),
        [
            'spec.predictor.containers[0].env[0] (PROTOCOL) "unknown" is not a supported protocol; '
            "use v1 or v2"
        ],
        id="custom-protocol-unknown",
    ),
    pytest.param(
        custom_predictor({"name": "A", "value": "1"}, {"name": "PROTOCOL", "value": "grpc-v2"}),
        [
            'spec.predictor.containers[0].env[1] (PROTOCOL) "grpc-v2" is not a supported protocol; '
            "use v1 or v2"
        ],
        id="custom-protocol-grpc",
    ),
    pytest.param(
        isvc(
            predictor={"sklearn": {}},
            transformer={"containers": [{"env": [{"name": "PROTOCOL", "value": "x"}]}]},
        ),
        [],
        id="protocol-checked-only-on-the-predictor",
    ),
    # predictor_tfserving_test.go / predictor_torchserve_test.go TestValidate
    pytest.param(legacy("tensorflow", runtimeVersion="latest"), [], id="tf-cpu"),
    pytest.param(legacy("tensorflow", runtimeVersion="latest-gpu", resources=GPU_LIMIT), [], id="tf-gpu"),
    pytest.param(
        legacy("tensorflow", runtimeVersion="latest-gpu"),
        [
            'spec.predictor.tensorflow.runtimeVersion "latest-gpu" is a GPU image but '
            "spec.predictor.tensorflow.resources.limits requests no nvidia.com/gpu; add the GPU limit or "
            'use a runtimeVersion without "-gpu"'
        ],
        id="tf-gpu-image-without-gpu",
    ),
    pytest.param(
        legacy("tensorflow", runtimeVersion="latest", resources=GPU_LIMIT),
        [
            'spec.predictor.tensorflow.runtimeVersion "latest" is not a GPU image but '
            "spec.predictor.tensorflow.resources.limits requests nvidia.com/gpu; use a runtimeVersion with "
            '"-gpu" or remove the GPU limit'
        ],
        id="tf-gpu-without-gpu-image",
    ),
    pytest.param(legacy("tensorflow", resources=GPU_LIMIT), [], id="tf-no-runtime-version-not-checked"),
    pytest.param(legacy("pytorch", runtimeVersion="0.7.0"), [], id="torchserve-cpu"),
    pytest.param(
        legacy("pytorch", runtimeVersion="0.7.0-gpu"),
        [
            'spec.predictor.pytorch.runtimeVersion "0.7.0-gpu" is a GPU image but '
            "spec.predictor.pytorch.resources.limits requests no nvidia.com/gpu; add the GPU limit or use a "
            'runtimeVersion without "-gpu"'
        ],
        id="torchserve-gpu-image-without-gpu",
    ),
    pytest.param(
        legacy("pytorch", runtimeVersion="0.7.0", resources=GPU_LIMIT),
        [
            'spec.predictor.pytorch.runtimeVersion "0.7.0" is not a GPU image but '
            "spec.predictor.pytorch.resources.limits requests nvidia.com/gpu; use a runtimeVersion with "
            '"-gpu" or remove the GPU limit'
        ],
        id="torchserve-gpu-without-gpu-image",
    ),
    pytest.param(legacy("sklearn", runtimeVersion="1-gpu"), [], id="gpu-check-only-for-tf-and-torchserve"),
    # predictor_onnxruntime_test.go TestValidate
    pytest.param(legacy("onnx", storageUri="gs://my_model.onnx"), [], id="onnx-file"),
    pytest.param(legacy("onnx", storageUri="gs://bucket/models/"), [], id="onnx-directory"),
    pytest.param(
        legacy("onnx", storageUri="gs://my_model.txt"),
        [
            'spec.predictor.onnx.storageUri "gs://my_model.txt" must name a .onnx file (or a directory), '
            "not a .txt file"
        ],
        id="onnx-wrong-extension",
    ),
    # inference_service_validation_test.go TestPMMLWorkersArguments
    pytest.param(
        legacy("pmml", storageUri="gs://testbucket/testmodel", args=["--workers=1"]), [], id="pmml-1"
    ),
    pytest.param(
        legacy("pmml", args=["--workers=2"]),
        ['spec.predictor.pmml.args[0] "--workers=2": the PMML server runs at most 1 worker'],
        id="pmml-2",
    ),
    pytest.param(
        legacy("pmml", args=["--workers=foo"]),
        ['spec.predictor.pmml.args[0] "--workers=foo" is not a valid workers argument; use --workers=1'],
        id="pmml-not-a-number",
    ),
    pytest.param(
        legacy("pmml", args=["--workers", "2"]),
        ['spec.predictor.pmml.args[0] "--workers" is not a valid workers argument; use --workers=1'],
        id="pmml-separate-value",
    ),
    # component_test.go TestComponentExtensionSpec_validateStorageSpec, on every spec KServe applies it to
    pytest.param(legacy("tensorflow", storage={"parameters": {"type": "s3"}}), [], id="storage-type-s3"),
    pytest.param(legacy("pytorch", storage={}), [], id="storage-without-parameters"),
    pytest.param(
        legacy("onnx", storageUri="s3://test/model", storage={"parameters": {"type": "s3"}}),
        [],
        id="storage-with-s3-uri",
    ),
    pytest.param(
        legacy("pmml", storageUri="gs://test/model", storage={"parameters": {"type": "gs"}}),
        [
            'spec.predictor.pmml.storageUri "gs://test/model" cannot be used with '
            "spec.predictor.pmml.storage: with a storage spec, storageUri must start with s3://, hdfs://, "
            "webhdfs://"
        ],
        id="storage-with-gs-uri",
    ),
    pytest.param(
        legacy("tensorflow", storage={"parameters": {"type": "gs"}}),
        [
            'spec.predictor.tensorflow.storage.parameters.type "gs" is not supported; '
            "use one of s3, hdfs, webhdfs"
        ],
        id="storage-type-gs",
    ),
    pytest.param(
        isvc(predictor={"sklearn": {}}, explainer={"alibi": {"storage": {"parameters": {"type": "gs"}}}}),
        ['spec.explainer.alibi.storage.parameters.type "gs" is not supported; use one of s3, hdfs, webhdfs'],
        id="explainer-storage-type",
    ),
    pytest.param(
        isvc(
            predictor={"sklearn": {}},
            explainer={"art": {"storageUri": "gs://b/m", "storage": {"parameters": {"type": "s3"}}}},
        ),
        [
            'spec.explainer.art.storageUri "gs://b/m" cannot be used with spec.explainer.art.storage: with a '
            "storage spec, storageUri must start with s3://, hdfs://, webhdfs://"
        ],
        id="explainer-storage-with-gs-uri",
    ),
    pytest.param(
        isvc(
            predictor={"sklearn": {}},
            explainer={"alibi": {"storageUri": "", "storage": {"parameters": {"type": "hdfs"}}}},
        ),
        [],
        id="explainer-empty-storage-uri-is-unset",
    ),
    # KServe leaves the storage spec of model and of the other legacy keys unchecked (predictor.go TODO).
    pytest.param(
        isvc(predictor={"model": {"modelFormat": {"name": "x"}, "storage": {"parameters": {"type": "gs"}}}}),
        [],
        id="model-storage-spec-unchecked",
    ),
    pytest.param(
        legacy("sklearn", storage={"parameters": {"type": "gs"}}), [], id="sklearn-storage-spec-unchecked"
    ),
]


@pytest.mark.parametrize(("obj", "expected"), KSERVE_SPEC_CHECKS)
def test_kserve_spec_checks(obj: dict[str, Any], expected: list[str]) -> None:
    assert validate_inference_service(obj) == expected


def test_legacy_key_checks_do_not_apply_after_defaulting_outside_model_mesh() -> None:
    """In Serverless mode the defaulter turns the legacy key into `model`, which KServe does not check."""
    obj = isvc(predictor={"pmml": {"args": ["--workers=2"]}})
    assert validate_inference_service(obj) != []
    assert validate_inference_service(default_inference_service(obj)) == []


def test_every_problem_is_reported_at_once() -> None:
    obj = isvc(
        name="Bad",
        annotations={"serving.kserve.io/targetUtilizationPercentage": "0"},
        predictor={"sklearn": {}, "xgboost": {}, "minReplicas": -1},
    )
    errors = validate_inference_service(obj)
    assert len(errors) == 4
    assert [e.split(" ")[0] for e in errors] == [
        "metadata.name",
        "annotation",
        "spec.predictor.minReplicas",
        "predictor",
    ]


def test_config_default_mode_selects_the_hpa_rules() -> None:
    obj = with_predictor(scaleMetric="cpu")
    assert validate_inference_service(obj) != []
    raw = config(deploy={"defaultDeploymentMode": "RawDeployment"})
    assert validate_inference_service(obj, config=raw) == []


def storage_container(
    name: str, *formats: dict[str, str], disabled: bool | None = None, **container: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": name},
        "spec": {
            "container": {"name": "storage-initializer", **container},
            "supportedUriFormats": list(formats),
        },
    }
    if disabled is not None:
        obj["disabled"] = disabled
    return obj


HF = storage_container("hf", {"prefix": "hf://"}, image="me/hf")
OCI = storage_container("oci", {"regex": "^oci://[a-z]+/"}, image="me/oci")


@pytest.mark.parametrize(
    ("uri", "containers", "accepted"),
    [
        pytest.param("hf://org/model", [], False, id="unknown-scheme"),
        pytest.param("hf://org/model", [HF], True, id="prefix"),
        pytest.param("oci://registry/model", [HF, OCI], True, id="regex"),
        pytest.param("oci://Registry/model", [OCI], False, id="regex-no-match"),
        pytest.param(
            "hf://org/model",
            [storage_container("hf", {"prefix": "hf://"}, disabled=True)],
            False,
            id="disabled-container-ignored",
        ),
        pytest.param("s3://b/m", [], True, id="builtin-scheme-without-containers"),
    ],
)
def test_storage_uri_served_by_a_cluster_storage_container_is_accepted(
    uri: str, containers: list[dict[str, Any]], accepted: bool
) -> None:
    assert (storage_uri_error(uri, "uri", containers) is None) is accepted
    obj = isvc(predictor={"model": {"modelFormat": {"name": "x"}, "storageUri": uri}})
    assert (validate_inference_service(obj, storage_containers=containers) == []) is accepted


def test_cluster_storage_container_with_a_bad_regex_is_named() -> None:
    bad = storage_container("broken", {"regex": "(unclosed"})
    problem = storage_uri_error("s3://b/m", "spec.predictor.model.storageUri", [bad])
    assert problem is not None
    assert problem.startswith(
        'spec.predictor.model.storageUri "s3://b/m" cannot be checked: '
        "error checking storage container broken: "
    )


def test_update_tolerates_problems_the_old_object_had_but_not_new_ones() -> None:
    old = isvc(name="Legacy")
    assert validate_inference_service(old) != []
    update = copy.deepcopy(old)
    update["metadata"]["finalizers"] = ["inferenceservice.finalizers"]
    assert validate_inference_service(update, old) == []
    update["spec"]["predictor"]["minReplicas"] = -1
    assert validate_inference_service(update, old) == [
        "spec.predictor.minReplicas must be at least 0, got -1"
    ]


def test_an_object_being_deleted_is_admitted() -> None:
    obj = isvc(predictor={"sklearn": {}, "xgboost": {}})
    obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert validate_inference_service(obj, isvc()) == []


async def test_validator_handler_denies_with_one_line_naming_the_object() -> None:
    response = await InferenceServiceValidator().handle(
        request(isvc(name="x", predictor={"sklearn": {}, "xgboost": {}}))
    )
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == 403
    assert message(response) == (
        f'the InferenceService "x" is invalid: predictor must have exactly one of {PREDICTOR_CHOICES}; '
        "found sklearn and xgboost"
    )
    assert "\n" not in message(response)


async def test_validator_handler_update_validates_the_new_object() -> None:
    validator = InferenceServiceValidator()
    good = isvc()
    bad = with_predictor(canaryTrafficPercent=200)
    assert (await validator.handle(request(bad, operation="UPDATE", old=good))).allowed is False
    assert (await validator.handle(request(good, operation="UPDATE", old=bad))).allowed is True
    assert (await validator.handle(request(None, operation="DELETE", old=bad))).allowed is True


async def test_validator_handler_uses_the_config_and_storage_providers() -> None:
    data = {"deploy": json.dumps({"defaultDeploymentMode": "RawDeployment"})}
    validator = InferenceServiceValidator(lambda: data, lambda: [HF])
    obj = isvc(
        predictor={"model": {"modelFormat": {"name": "x"}, "storageUri": "hf://m"}, "scaleMetric": "cpu"}
    )
    assert (await validator.handle(request(obj))).allowed
    failing = InferenceServiceValidator(lambda: None)
    response = await failing.handle(request(obj))
    assert response.status is not None
    assert response.status.code == 500
    assert "ConfigMap inferenceservice-config not found" in message(response)


# --- TrainedModel ---------------------------------------------------------------------------------


def trained_model(name: str = "my_model-1", memory: Any = "1Gi", uri: Any = "gs://b/m") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "inferenceService": "parent",
            "model": {"storageUri": uri, "framework": "sklearn", "memory": memory},
        },
    }


def tm_request(obj: dict[str, Any], **kwargs: Any) -> AdmissionRequest:
    return request(obj, kind="TrainedModel", version="v1alpha1", **kwargs)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (trained_model(), []),
        (trained_model(uri="https://acct.blob.core.windows.net/c/m"), []),
        (
            trained_model(name="my.model"),
            ["metadata.name 'my.model' is invalid: use letters, digits, '_' and '-' only"],
        ),
        (
            trained_model(uri="ftp://m"),
            ['spec.model.storageUri "ftp://m" is not supported: use a URI starting with gs://'],
        ),
        (trained_model(uri="/local/path"), ['spec.model.storageUri "/local/path" is not supported']),
        (trained_model(uri=None), ["spec.model.storageUri is required"]),
        (trained_model(memory="lots"), ["spec.model.memory: 'lots' is not a Kubernetes quantity"]),
        (
            {"metadata": {"name": "m"}, "spec": {"model": 1}},
            ["spec.inferenceService is required", "spec.model must"],
        ),
        ({"metadata": {}, "spec": None}, ["metadata.name is required", "spec is required"]),
        ([], ["a TrainedModel must be a JSON object, got a list"]),
    ],
)
def test_trained_model_validation(obj: Any, expected: list[str]) -> None:
    errors = validate_trained_model(obj)
    assert len(errors) == len(expected), errors
    for error, prefix in zip(errors, expected, strict=True):
        assert error.startswith(prefix), errors


@pytest.mark.parametrize(
    ("old", "new", "ok"), [("1Gi", "1024Mi", True), ("1Gi", "2Gi", False), (None, "1Gi", False)]
)
def test_trained_model_memory_is_immutable(old: Any, new: Any, ok: bool) -> None:
    errors = validate_trained_model(trained_model(memory=new), trained_model(memory=old))
    assert errors == (
        []
        if ok
        else [
            f"memory field is immutable (was {old!r}, now {new!r}); delete and recreate the Trained Model "
            "to change it"
        ]
    )


async def test_trained_model_handler() -> None:
    validator = TrainedModelValidator()
    assert (await validator.handle(tm_request(trained_model()))).allowed
    response = await validator.handle(
        tm_request(trained_model(memory="2Gi"), operation="UPDATE", old=trained_model(memory="1Gi"))
    )
    assert not response.allowed
    assert message(response).startswith(
        'the Trained Model "my_model-1" is invalid: memory field is immutable'
    )
    deleting = trained_model(memory="2Gi")
    deleting["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert (await validator.handle(tm_request(deleting, operation="UPDATE", old=trained_model()))).allowed
    wrong = await validator.handle(request(isvc()))
    assert wrong.status is not None
    assert wrong.status.code == 400


# --- Fuzz -----------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | json_values


quantities = st.sampled_from(["1", "500m", "2Gi", "4", "lots", 3, None])
containers = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(st.text(max_size=5)),
        "image": st.text(max_size=5),
        "env": maybe(
            st.lists(
                st.fixed_dictionaries({"name": st.just("STORAGE_URI"), "value": json_values}), max_size=2
            )
        ),
        "resources": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "requests": maybe(st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities)),
                    "limits": maybe(st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities)),
                },
            )
        ),
        "storageUri": maybe(
            st.sampled_from(["gs://b", "ftp://x", "/p", "https://a.blob.core.windows.net/c/m"])
        ),
        "protocolVersion": maybe(st.sampled_from(["v1", "v2", "v9"])),
        "runtimeVersion": maybe(st.text(max_size=4)),
        "modelFormat": maybe(st.fixed_dictionaries({"name": maybe(st.sampled_from(["sklearn", ""]))})),
    },
)
extension = {
    "minReplicas": maybe(st.integers(-2, 5)),
    "maxReplicas": maybe(st.integers(-2, 5)),
    "containerConcurrency": maybe(st.integers(-2, 5)),
    "canaryTrafficPercent": maybe(st.integers(-5, 105)),
    "scaleMetric": maybe(st.sampled_from(["cpu", "memory", "rps", "concurrency", "qps"])),
    "scaleTarget": maybe(st.integers(-1, 200)),
    "logger": maybe(
        st.fixed_dictionaries({}, optional={"mode": maybe(st.sampled_from(["all", "request", "x"]))})
    ),
    "containers": maybe(st.lists(maybe(containers), max_size=2)),
}
predictors = st.fixed_dictionaries(
    {}, optional={**extension, **{key: maybe(containers) for key in [*FRAMEWORKS, "model"]}}
)
explainers = st.fixed_dictionaries(
    {}, optional={**extension, "alibi": maybe(containers), "art": maybe(containers)}
)
annotation_values = st.dictionaries(
    st.sampled_from(
        [
            "serving.kserve.io/deploymentMode",
            "serving.kserve.io/autoscalerClass",
            "serving.kserve.io/metrics",
            "serving.kserve.io/targetUtilizationPercentage",
            "autoscaling.knative.dev/class",
        ]
    ),
    maybe(st.sampled_from(["RawDeployment", "ModelMesh", "Serverless", "hpa", "cpu", "50", "0", "x"])),
    max_size=3,
)
isvc_dicts = st.fixed_dictionaries(
    {},
    optional={
        "metadata": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": maybe(st.sampled_from(["m", "Bad_Name", "a" * 60])),
                    "annotations": maybe(annotation_values),
                },
            )
        ),
        "spec": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "predictor": maybe(predictors),
                    "explainer": maybe(explainers),
                    "transformer": maybe(explainers),
                },
            )
        ),
    },
)
near_valid = st.builds(
    lambda name, impl, uri, ext, annotations: isvc(
        name=name, annotations=annotations, predictor={impl: {"storageUri": uri}, **ext}
    ),
    st.sampled_from(["m", "my-model", "x" * 53]),
    st.sampled_from([*FRAMEWORKS, "model"]),
    st.sampled_from(["gs://b/m", "s3://b/m", "/mnt/m", "ftp://m"]),
    st.fixed_dictionaries(
        {},
        optional={
            "minReplicas": st.integers(0, 3),
            "maxReplicas": st.integers(0, 3),
            "canaryTrafficPercent": st.integers(0, 100),
            "scaleMetric": st.sampled_from(["concurrency", "rps", "cpu"]),
            "logger": st.just({"mode": "all"}),
        },
    ),
    st.none() | st.just(RAW) | st.just({"serving.kserve.io/targetUtilizationPercentage": "70"}),
)


def _check_response(response: AdmissionResponse) -> None:
    if not response.allowed:
        assert response.status is not None
        assert response.status.message
        assert "\n" not in response.status.message
        assert "Traceback" not in response.status.message
        assert response.status.code in (400, 403)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(isvc_dicts | near_valid)
def test_fuzzed_inference_services_always_get_an_answer(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    defaulted = asyncio.run(InferenceServiceDefaulter().handle(request(obj)))
    _check_response(defaulted)
    validated = asyncio.run(InferenceServiceValidator().handle(request(obj, operation="UPDATE", old=isvc())))
    _check_response(validated)
    assert obj == original
    if defaulted.allowed:
        result = patched(obj, defaulted)
        assert result == default_inference_service(obj)
        assert default_inference_service(result) == result
    assert isinstance(validate_inference_service(obj), list)


@settings(max_examples=200, deadline=None)
@given(
    maybe(
        st.fixed_dictionaries(
            {},
            optional={
                "metadata": json_values,
                "spec": maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "inferenceService": json_values,
                            "model": maybe(
                                st.fixed_dictionaries(
                                    {}, optional={"storageUri": json_values, "memory": maybe(quantities)}
                                )
                            ),
                        },
                    )
                ),
            },
        )
    ),
    json_values,
)
def test_fuzzed_trained_models_always_get_an_answer(obj: Any, old: Any) -> None:
    errors = validate_trained_model(obj, old)
    assert all(isinstance(error, str) and error and "\n" not in error for error in errors)
    if isinstance(obj, dict):
        response = asyncio.run(
            TrainedModelValidator().handle(
                tm_request(obj, operation="UPDATE", old=old if isinstance(old, dict) else None)
            )
        )
        _check_response(response)


def test_problems_stay_one_line_whatever_the_user_wrote() -> None:
    obj = isvc(name="a\nb", annotations={"x\ny": None, "serving.kserve.io/autoscalerClass": "h\npa"})
    problems = validate_inference_service(obj)
    assert len(problems) == 3
    assert not any("\n" in problem for problem in problems)
    assert 'annotation "x\\ny" must be a string, got null' in problems
