"""Typed API models: KServe sample round trips, implementation helpers, status propagation, runtime choice."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from apis import constants as c
from apis.base import InvalidObjectError
from apis.conditions import Condition
from apis.inferenceservice import (
    ComponentStatusSpec,
    FailureInfo,
    InferenceService,
    InferenceServiceStatus,
    ModelFormat,
    PredictorSpec,
)
from apis.knative import KnativeServiceStatus
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    INFERENCE_SERVICES,
    KNATIVE_SERVICES,
    SERVING_RUNTIMES,
    TRAINED_MODELS,
    VIRTUAL_SERVICES,
)
from apis.servingruntime import (
    ClusterServingRuntime,
    NoSupportingRuntimeError,
    RuntimeDisabledError,
    RuntimeNotFoundError,
    RuntimeSelectionError,
    ServingRuntime,
    select_runtime,
    supporting_runtimes,
)
from apis.trainedmodel import TRAINED_MODEL_CONDITIONS, TrainedModel, predict_path

SKLEARN_V1 = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
  namespace: kserve-test
spec:
  predictor:
    sklearn:
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
"""

SKLEARN_V2 = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-irisv2
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      protocolVersion: v2
      runtime: kserve-mlserver
      storageUri: gs://seldon-models/sklearn/mms/lr_model
"""

TRANSFORMER = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: torch-transformer
spec:
  predictor:
    model:
      modelFormat:
        name: pytorch
      storageUri: gs://kfserving-examples/models/torchserve/image_classifier/v1
  transformer:
    containers:
      - image: kserve/image-transformer:latest
        name: kserve-container
        command: [python, -m, model]
        args: [--model_name, mnist]
"""

EXPLAINER = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: income
spec:
  predictor:
    minReplicas: 1
    sklearn:
      storageUri: gs://kfserving-examples/models/sklearn/1.0/income/model
      resources:
        requests: {cpu: 0.1, memory: 1Gi}
        limits: {cpu: 1, memory: 1Gi}
  explainer:
    minReplicas: 1
    alibi:
      type: AnchorTabular
      storageUri: gs://kfserving-examples/models/sklearn/1.0/income/explainer
      config: {threshold: "0.9"}
"""

CANARY = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
  annotations:
    serving.kserve.io/enable-tag-routing: "true"
spec:
  predictor:
    canaryTrafficPercent: 10
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model-2
status:
  url: http://sklearn-iris.kserve-test.example.com
  address:
    url: http://sklearn-iris.kserve-test.svc.cluster.local
  observedGeneration: 2
  conditions:
    - type: IngressReady
      status: "True"
      lastTransitionTime: "2023-06-01T10:00:00Z"
    - type: PredictorConfigurationReady
      status: "True"
      severity: Info
      lastTransitionTime: "2023-06-01T10:00:00Z"
    - type: Ready
      status: "True"
      lastTransitionTime: "2023-06-01T10:00:00Z"
  components:
    predictor:
      latestCreatedRevision: sklearn-iris-predictor-00002
      latestReadyRevision: sklearn-iris-predictor-00002
      latestRolledoutRevision: sklearn-iris-predictor-00001
      previousRolledoutRevision: sklearn-iris-predictor-00001
      url: http://sklearn-iris-predictor.kserve-test.example.com
      address:
        url: http://sklearn-iris-predictor.kserve-test.svc.cluster.local
      traffic:
        - latestRevision: true
          percent: 10
          revisionName: sklearn-iris-predictor-00002
          tag: latest
          url: http://latest-sklearn-iris-predictor.kserve-test.example.com
        - latestRevision: false
          percent: 90
          revisionName: sklearn-iris-predictor-00001
          tag: prev
  modelStatus:
    copies:
      failedCopies: 0
      totalCopies: 1
    states:
      activeModelState: Loaded
      targetModelState: Loaded
    transitionStatus: UpToDate
"""

CUSTOM = """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: custom-model
spec:
  predictor:
    serviceAccountName: sa
    nodeSelector: {gpu: "true"}
    tolerations: [{key: k, operator: Exists}]
    containers:
      - name: kserve-container
        image: kserve/custom-model:v1
        env: [{name: PROTOCOL, value: v1}]
        ports: [{containerPort: 8080, protocol: TCP}]
        readinessProbe: {httpGet: {path: /ready, port: 8080}}
"""

SAMPLES = {
    "sklearn-v1": SKLEARN_V1,
    "sklearn-v2": SKLEARN_V2,
    "transformer": TRANSFORMER,
    "explainer": EXPLAINER,
    "canary": CANARY,
    "custom": CUSTOM,
}


def load(text: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(text)
    return obj


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_round_trip_exactly(name: str) -> None:
    obj = load(SAMPLES[name])
    original = copy.deepcopy(obj)
    assert InferenceService.from_object(obj).to_object() == original
    assert obj == original


def test_unknown_fields_round_trip_at_every_level() -> None:
    obj = load(SKLEARN_V1)
    obj["futureTop"] = 1
    obj["spec"]["futureSpec"] = {"a": [1, None]}
    obj["spec"]["predictor"]["futurePredictor"] = "x"
    obj["spec"]["predictor"]["sklearn"]["futureExt"] = {"deep": {"deeper": True}}
    obj["spec"]["predictor"]["sklearn"]["env"] = [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}, "z": 1}
    ]
    obj["status"] = {"futureStatus": {"b": 2}, "components": {"predictor": {"futureComp": 3}}}
    assert InferenceService.from_object(obj).to_object() == obj


def test_unset_fields_are_omitted_and_mutated_defaults_emitted() -> None:
    isvc = InferenceService.from_object(load(SKLEARN_V1))
    out = isvc.to_object()
    assert "status" not in out
    assert set(out["spec"]["predictor"]) == {"sklearn"}
    isvc.status.conditions_manager().mark_true(c.PREDICTOR_READY)
    isvc.status.components["predictor"] = ComponentStatusSpec(url="http://x")
    status = isvc.to_object()["status"]
    assert set(status) == {"conditions", "components"}
    assert status["components"] == {"predictor": {"url": "http://x"}}


def test_bad_input_is_one_line_naming_the_field() -> None:
    obj = load(SKLEARN_V1)
    obj["spec"]["predictor"]["minReplicas"] = "many"
    with pytest.raises(InvalidObjectError) as err:
        InferenceService.from_object(obj)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("InferenceService kserve-test/sklearn-iris: spec.predictor.minReplicas:")


def test_missing_spec_parses_to_empty_predictor() -> None:
    isvc = InferenceService.from_object(
        {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}
    )
    assert isvc.spec.predictor.implementations() == []
    assert isvc.spec.predictor.implementation() is None
    assert isvc.to_object() == {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService"}


def test_metadata_helpers_and_deployment_mode() -> None:
    obj = load(CANARY)
    obj["metadata"].update(
        namespace="ns", generation=3, finalizers=["inferenceservice.finalizers"], deletionTimestamp="t"
    )
    isvc = InferenceService.from_object(obj)
    assert (isvc.name, isvc.namespace, isvc.generation) == ("sklearn-iris", "ns", 3)
    assert isvc.annotations == {c.ENABLE_TAG_ROUTING_ANNOTATION: "true"}
    assert isvc.labels == {}
    assert isvc.finalizers == [c.INFERENCE_SERVICE_FINALIZER]
    assert isvc.is_deleting
    assert isvc.annotated_deployment_mode() is None
    obj["metadata"]["annotations"][c.DEPLOYMENT_MODE_ANNOTATION] = "RawDeployment"
    assert InferenceService.from_object(obj).annotated_deployment_mode() == "RawDeployment"
    obj["metadata"]["annotations"][c.DEPLOYMENT_MODE_ANNOTATION] = "Bogus"
    assert InferenceService.from_object(obj).annotated_deployment_mode() is None


# --- implementations ------------------------------------------------------------------------------


def test_implementations_follow_kserve_precedence() -> None:
    spec = PredictorSpec.from_object(
        {
            "containers": [{"name": "c"}],
            "model": {"modelFormat": {"name": "sklearn"}},
            "paddle": {},
            "sklearn": {},
            "xgboost": {},
        }
    )
    assert spec.implementations() == ["xgboost", "sklearn", "paddle", "model", "custom"]
    assert spec.implementation() == "xgboost"


def test_each_sample_has_exactly_one_implementation() -> None:
    expected = {
        "sklearn-v1": "sklearn",
        "sklearn-v2": "model",
        "transformer": "model",
        "explainer": "sklearn",
        "canary": "model",
        "custom": "custom",
    }
    for name, text in SAMPLES.items():
        spec = InferenceService.from_object(load(text)).spec
        assert spec.predictor.implementations() == [expected[name]], name
    transformer = InferenceService.from_object(load(TRANSFORMER)).spec.transformer
    assert transformer is not None
    assert transformer.implementations() == ["custom"]
    explainer = InferenceService.from_object(load(EXPLAINER)).spec.explainer
    assert explainer is not None
    assert explainer.implementations() == ["alibi"]
    found = explainer.explainer()
    assert found is not None
    assert (found[0], found[1].type, found[1].config) == ("alibi", "AnchorTabular", {"threshold": "0.9"})


def test_components_in_reconcile_order() -> None:
    assert list(InferenceService.from_object(load(SKLEARN_V1)).spec.components()) == ["predictor"]
    assert list(InferenceService.from_object(load(TRANSFORMER)).spec.components()) == [
        "predictor",
        "transformer",
    ]
    assert list(InferenceService.from_object(load(EXPLAINER)).spec.components()) == ["predictor", "explainer"]


def test_legacy_framework_converts_to_model_spec_without_touching_the_spec() -> None:
    isvc = InferenceService.from_object(load(EXPLAINER))
    model = isvc.spec.predictor.model_spec()
    assert model is not None
    assert model.model_format == ModelFormat(name="sklearn")
    assert model.storage_uri == "gs://kfserving-examples/models/sklearn/1.0/income/model"
    assert model.resources is not None
    assert model.resources.limits == {"cpu": 1, "memory": "1Gi"}
    assert model.protocol() == "v1"
    assert isvc.spec.predictor.model is None
    assert isvc.spec.predictor.storage_uri() == "gs://kfserving-examples/models/sklearn/1.0/income/model"


def test_legacy_triton_defaults_to_protocol_v2() -> None:
    spec = PredictorSpec.from_object({"triton": {"storageUri": "s3://m"}})
    model = spec.model_spec()
    assert model is not None
    assert (model.model_format, model.protocol_version) == (ModelFormat(name="triton"), "v2")
    assert spec.protocol() == "v2"
    explicit = PredictorSpec.from_object({"triton": {"storageUri": "s3://m", "protocolVersion": "grpc-v2"}})
    assert explicit.protocol() == "grpc-v2"


def test_model_spec_is_returned_as_is_and_custom_has_none() -> None:
    spec = InferenceService.from_object(load(SKLEARN_V2)).spec.predictor
    assert spec.model_spec() is spec.model
    assert spec.protocol() == "v2"
    custom = InferenceService.from_object(load(CUSTOM)).spec.predictor
    assert custom.model_spec() is None
    assert custom.framework() is None
    assert custom.storage_uri() is None
    assert custom.protocol() == "v1"
    container = custom.custom_container()
    assert container is not None
    assert container.image == "kserve/custom-model:v1"


def test_container_strips_extension_fields_and_keeps_container_extras() -> None:
    spec = PredictorSpec.from_object(
        {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "runtime": "rt",
                "storageUri": "s3://x",
                "protocolVersion": "v2",
                "args": ["--a"],
                "livenessProbe": {"exec": {}},
            }
        }
    )
    assert spec.model is not None
    assert spec.model.container().to_object() == {"args": ["--a"], "livenessProbe": {"exec": {}}}


def test_pod_spec_excludes_extension_and_implementation_keys() -> None:
    obj = load(CUSTOM)
    obj["spec"]["predictor"].update(
        minReplicas=2, logger={"mode": "all"}, sklearn={}, priorityClassName="high"
    )
    pod = InferenceService.from_object(obj).spec.predictor.pod_spec()
    assert set(pod) == {
        "serviceAccountName",
        "nodeSelector",
        "tolerations",
        "containers",
        "priorityClassName",
    }
    assert pod["containers"][0]["readinessProbe"] == {"httpGet": {"path": "/ready", "port": 8080}}


def test_component_extension_fields_are_typed() -> None:
    spec = PredictorSpec.from_object(
        {
            "minReplicas": 0,
            "maxReplicas": 3,
            "scaleTarget": 5,
            "scaleMetric": "rps",
            "containerConcurrency": 2,
            "timeout": 30,
            "canaryTrafficPercent": 20,
            "logger": {"url": "http://sink", "mode": "request"},
            "batcher": {"maxBatchSize": 32, "maxLatency": 500, "timeout": 60},
            "labels": {"a": "b"},
            "annotations": {"c": "d"},
        }
    )
    assert (spec.min_replicas, spec.max_replicas, spec.scale_target, spec.scale_metric) == (0, 3, 5, "rps")
    assert (spec.container_concurrency, spec.timeout, spec.canary_traffic_percent) == (2, 30, 20)
    assert spec.logger is not None
    assert (spec.logger.url, spec.logger.mode) == ("http://sink", "request")
    assert spec.batcher is not None
    assert (spec.batcher.max_batch_size, spec.batcher.max_latency, spec.batcher.timeout) == (32, 500, 60)
    assert spec.min_replicas_or_default() == 0
    assert PredictorSpec().min_replicas_or_default() == 1


# --- status propagation ---------------------------------------------------------------------------


def ksvc(
    created: str,
    ready: str,
    traffic: list[dict[str, Any]],
    ready_status: str = "True",
    reason: str = "",
    message: str = "",
) -> KnativeServiceStatus:
    cond: dict[str, Any] = {"type": "Ready", "status": ready_status}
    if reason:
        cond.update(reason=reason, message=message)
    return KnativeServiceStatus.from_object(
        {
            "observedGeneration": 7,
            "latestCreatedRevisionName": created,
            "latestReadyRevisionName": ready,
            "url": "http://isvc-predictor.ns.example.com",
            "address": {"url": "http://isvc-predictor.ns.svc.cluster.local"},
            "conditions": [
                cond,
                {"type": "RoutesReady", "status": "True"},
                {"type": "ConfigurationsReady", "status": ready_status, "reason": reason, "message": message},
            ],
            "traffic": traffic,
        }
    )


def full(rev: str) -> list[dict[str, Any]]:
    return [{"revisionName": rev, "latestRevision": True, "percent": 100}]


def test_propagate_status_first_rollout_sets_urls_conditions_and_traffic() -> None:
    status = InferenceServiceStatus()
    status.initialize_conditions()
    status.propagate_status("predictor", ksvc("r1", "r1", full("r1")))
    comp = status.components["predictor"]
    assert (comp.latest_created_revision, comp.latest_ready_revision) == ("r1", "r1")
    assert (comp.latest_rolledout_revision, comp.previous_rolledout_revision) == ("r1", None)
    assert comp.url == "http://isvc-predictor.ns.example.com"
    assert comp.address is not None
    assert comp.address.url == "http://isvc-predictor.ns.svc.cluster.local"
    assert comp.traffic is not None
    assert comp.traffic[0].percent == 100
    assert status.is_condition_ready(c.PREDICTOR_READY)
    assert status.is_condition_ready(c.PREDICTOR_ROUTE_READY)
    assert status.is_condition_ready(c.PREDICTOR_CONFIGURATION_READY)
    route = status.get_condition(c.PREDICTOR_ROUTE_READY)
    assert route is not None
    assert route.severity == "Info"
    assert status.observed_generation is None
    assert not status.is_ready()


def test_propagate_status_promotion_tracks_previous_rollout() -> None:
    status = InferenceServiceStatus()
    status.propagate_status("predictor", ksvc("r1", "r1", full("r1")))
    canary = [
        {"revisionName": "r2", "latestRevision": True, "percent": 10},
        {"revisionName": "r1", "latestRevision": False, "percent": 90, "tag": "prev"},
    ]
    status.propagate_status("predictor", ksvc("r2", "r2", canary))
    comp = status.components["predictor"]
    assert (comp.latest_rolledout_revision, comp.previous_rolledout_revision) == ("r1", None)
    status.propagate_status("predictor", ksvc("r2", "r2", full("r2")))
    assert (comp.latest_rolledout_revision, comp.previous_rolledout_revision) == ("r2", "r1")


def test_propagate_status_rollback_restores_previous_rollout() -> None:
    status = InferenceServiceStatus()
    status.propagate_status("predictor", ksvc("r1", "r1", full("r1")))
    status.propagate_status("predictor", ksvc("r2", "r2", full("r2")))
    comp = status.components["predictor"]
    assert (comp.latest_rolledout_revision, comp.previous_rolledout_revision) == ("r2", "r1")
    # Rolling back: the latest revision keeps 0% while the same revision also carries 100 % via its name.
    rollback = [
        {"revisionName": "r2", "latestRevision": True, "percent": 0},
        {"revisionName": "r2", "latestRevision": False, "percent": 100, "tag": "prev"},
    ]
    status.propagate_status("predictor", ksvc("r2", "r2", rollback))
    assert comp.latest_rolledout_revision == "r1"


def test_propagate_status_not_ready_keeps_old_urls_and_explains_why() -> None:
    status = InferenceServiceStatus()
    status.initialize_conditions()
    status.propagate_status("predictor", ksvc("r1", "r1", full("r1")))
    status.propagate_status(
        "predictor", ksvc("r2", "r1", full("r1"), "False", "RevisionFailed", "Revision r2 failed: image pull")
    )
    comp = status.components["predictor"]
    assert comp.url == "http://isvc-predictor.ns.example.com"
    ready = status.get_condition(c.READY)
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "RevisionFailed",
        "Revision r2 failed: image pull",
    )


def test_propagate_status_none_creates_an_empty_component_entry() -> None:
    status = InferenceServiceStatus()
    status.propagate_status("transformer", None)
    assert status.to_object() == {"components": {"transformer": {}}}


def test_cross_component_status_rules() -> None:
    status = InferenceServiceStatus()
    m = status.conditions_manager()
    m.mark_true(c.PREDICTOR_ROUTE_READY)
    status.propagate_cross_component_status(["predictor"], c.ROUTES_READY)
    assert status.is_condition_ready(c.ROUTES_READY)
    status.propagate_cross_component_status(["predictor", "transformer"], c.ROUTES_READY)
    routes = status.get_condition(c.ROUTES_READY)
    assert routes is not None
    assert (routes.status, routes.reason) == ("Unknown", "TransformerRouteReady not ready")
    m.mark_false(c.TRANSFORMER_ROUTE_READY, "R", "m")
    status.propagate_cross_component_status(["predictor", "transformer"], c.ROUTES_READY)
    routes = status.get_condition(c.ROUTES_READY)
    assert routes is not None
    assert (routes.status, routes.reason, routes.message) == ("False", "TransformerRouteReady not ready", "")
    m.mark_false(c.PREDICTOR_CONFIGURATION_READY, "R", "m")
    status.propagate_cross_component_status(["predictor", "explainer"], c.LATEST_DEPLOYMENT_READY)
    deploy = status.get_condition(c.LATEST_DEPLOYMENT_READY)
    assert deploy is not None
    assert (deploy.status, deploy.reason) == ("Unknown", "ExplainerConfigurationReady not ready")
    before = list(status.conditions)
    status.propagate_cross_component_status(["predictor"], "NotAnAggregate")
    assert status.conditions == before


def test_ready_needs_predictor_and_ingress() -> None:
    status = InferenceServiceStatus()
    status.initialize_conditions()
    m = status.conditions_manager()
    m.mark_true(c.PREDICTOR_READY)
    m.mark_true(c.TRANSFORMER_READY)
    assert not status.is_ready()
    m.mark_true(c.INGRESS_READY)
    assert status.is_ready()
    m.mark_false(c.TRANSFORMER_READY, "X", "y")
    assert status.is_ready()
    m.mark_unknown(c.INGRESS_READY, c.PREDICTOR_INGRESS_NOT_CREATED, "")
    ready = status.get_condition(c.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("Unknown", "Predictor ingress not created")


def test_remove_component_clears_its_entry_and_conditions() -> None:
    status = InferenceServiceStatus()
    status.initialize_conditions()
    status.propagate_status("transformer", ksvc("t1", "t1", full("t1")))
    status.remove_component("transformer")
    assert "transformer" not in status.components
    assert {x.type for x in status.conditions} == {c.READY, c.PREDICTOR_READY, c.INGRESS_READY}


def test_status_semantics_survive_a_round_trip() -> None:
    status = InferenceServiceStatus.from_object(load(CANARY)["status"])
    again = InferenceServiceStatus.from_object(status.to_object())
    assert again == status
    assert again.is_ready()


# --- model status ---------------------------------------------------------------------------------


def pod(init: dict[str, Any] | None = None, main: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "storage-initializer", **init}]
    if main is not None:
        status["containerStatuses"] = [{"name": "kserve-container", **main}]
    return {"status": status}


def model_states(status: InferenceServiceStatus) -> tuple[str | None, str | None, str | None]:
    ms = status.model_status
    target = ms.states.target_model_state if ms.states else None
    reason = ms.last_failure_info.reason if ms.last_failure_info else None
    return ms.transition_status, target, reason


def test_model_status_from_pods() -> None:
    comp = ComponentStatusSpec(latest_created_revision="r1", latest_ready_revision="r1")
    status = InferenceServiceStatus()
    status.propagate_model_status(comp, [])
    assert model_states(status) == ("InProgress", "Pending", None)

    status = InferenceServiceStatus()
    status.propagate_model_status(comp, [pod(init={"state": {"running": {}}})])
    assert model_states(status) == ("InProgress", "Loading", None)

    status = InferenceServiceStatus()
    failed = {"state": {"terminated": {"reason": "Error", "message": "no such bucket", "exitCode": 1}}}
    status.propagate_model_status(comp, [pod(init=failed)])
    assert model_states(status) == ("BlockedByFailedLoad", "FailedToLoad", "ModelLoadFailed")
    assert status.model_status.last_failure_info is not None
    assert status.model_status.last_failure_info.message == "no such bucket"
    assert status.model_status.last_failure_info.exit_code == 1

    status = InferenceServiceStatus()
    crash = {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"message": "oom", "exitCode": 137}},
    }
    status.propagate_model_status(
        comp, [pod(init={"state": {"terminated": {"reason": "Completed"}}}, main=crash)]
    )
    assert model_states(status) == ("BlockedByFailedLoad", "FailedToLoad", "ModelLoadFailed")
    assert status.model_status.last_failure_info is not None
    assert status.model_status.last_failure_info.exit_code == 137

    status = InferenceServiceStatus()
    status.propagate_model_status(comp, [pod(main={"state": {"running": {}}})])
    assert model_states(status) == ("InProgress", "Pending", None)


def test_model_status_loaded_when_ready_and_revisions_agree() -> None:
    status = InferenceServiceStatus(conditions=[Condition(type="Ready", status="True")])
    status.propagate_model_status(
        ComponentStatusSpec(latest_created_revision="r1", latest_ready_revision="r1"), [pod(), pod()]
    )
    assert model_states(status) == ("UpToDate", "Loaded", None)
    assert status.model_status.copies is not None
    assert status.model_status.copies.total_copies == 2
    assert status.to_object()["modelStatus"]["states"] == {
        "targetModelState": "Loaded",
        "activeModelState": "Loaded",
    }
    lagging = InferenceServiceStatus(conditions=[Condition(type="Ready", status="True")])
    lagging_comp = ComponentStatusSpec(latest_created_revision="r2", latest_ready_revision="r1")
    lagging.propagate_model_status(lagging_comp, [pod()])
    assert model_states(lagging) == (None, None, None)
    lagging.propagate_model_status(lagging_comp, [pod(main={"state": {"running": {}}})])
    assert model_states(lagging)[1] == "Pending"
    lagging.propagate_model_status(
        ComponentStatusSpec(latest_created_revision="r2", latest_ready_revision="r1"), [pod()], raw=True
    )
    assert model_states(lagging)[1] == "Loaded"


def test_invalid_spec_transition_marks_failed_to_load() -> None:
    status = InferenceServiceStatus()
    status.update_model_transition_status(
        c.TRANSITION_INVALID_SPEC, FailureInfo(reason=c.FAILURE_NO_SUPPORTING_RUNTIME, message="none")
    )
    assert model_states(status) == ("InvalidSpec", "FailedToLoad", "NoSupportingRuntime")


# --- runtimes -------------------------------------------------------------------------------------


def runtime(
    name: str,
    formats: list[dict[str, Any]],
    *,
    cluster: bool = False,
    created: str = "2023-01-01T00:00:00Z",
    **spec: Any,
) -> Any:
    obj = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime" if cluster else "ServingRuntime",
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {
            "supportedModelFormats": formats,
            "containers": [{"name": "kserve-container", "image": f"{name}:latest"}],
            **spec,
        },
    }
    return ClusterServingRuntime.from_object(obj) if cluster else ServingRuntime.from_object(obj)


SKLEARN = ModelFormat(name="sklearn")


def auto(name: str = "sklearn", version: str | None = "1", priority: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "autoSelect": True}
    if version is not None:
        entry["version"] = version
    if priority is not None:
        entry["priority"] = priority
    return entry


def names(found: list[Any]) -> list[str]:
    return [r.name for r in found]


def test_auto_selection_needs_autoselect_and_skips_disabled_and_multimodel() -> None:
    rts = [
        runtime("manual", [{"name": "sklearn"}]),
        runtime("off", [auto()], disabled=True),
        runtime("mm", [auto()], multiModel=True),
        runtime("other", [auto("xgboost")]),
        runtime("good", [auto()]),
    ]
    assert names(supporting_runtimes(rts, [], SKLEARN)) == ["good"]
    assert names(supporting_runtimes(rts, [], SKLEARN, multi_model=True)) == ["mm"]


def test_namespace_runtimes_come_before_cluster_runtimes() -> None:
    local = [runtime("local", [auto(priority=1)])]
    cluster = [runtime("cluster", [auto(priority=9)], cluster=True)]
    assert names(supporting_runtimes(local, cluster, SKLEARN)) == ["local", "cluster"]
    chosen = select_runtime(local, cluster, SKLEARN)
    assert (chosen.name, chosen.cluster) == ("local", False)


def test_priority_orders_within_a_group_and_unprioritised_go_last() -> None:
    cluster = [
        runtime("a-none", [auto()], cluster=True),
        runtime("b-low", [auto(priority=1)], cluster=True),
        runtime("c-high", [auto(priority=5)], cluster=True),
    ]
    assert names(supporting_runtimes([], cluster, SKLEARN)) == ["c-high", "b-low", "a-none"]


def test_namespace_runtimes_newest_first_then_by_name() -> None:
    local = [
        runtime("b-old", [auto()], created="2023-01-01T00:00:00Z"),
        runtime("z-new", [auto()], created="2023-06-01T00:00:00Z"),
        runtime("a-old", [auto()], created="2023-01-01T00:00:00Z"),
    ]
    assert names(supporting_runtimes(local, [], SKLEARN)) == ["z-new", "a-old", "b-old"]


def test_version_must_match_when_the_model_gives_one() -> None:
    cluster = [
        runtime("v1", [auto(version="1")], cluster=True),
        runtime("v0", [auto(version="0")], cluster=True),
    ]
    assert names(supporting_runtimes([], cluster, ModelFormat(name="sklearn", version="0"))) == ["v0"]
    assert names(supporting_runtimes([], cluster, SKLEARN)) == ["v0", "v1"]


def test_protocol_version_filters_and_defaults_to_v1() -> None:
    cluster = [
        runtime("v2only", [auto()], cluster=True, protocolVersions=["v2", "grpc-v2"]),
        runtime("unlisted", [auto()], cluster=True),
    ]
    assert names(supporting_runtimes([], cluster, SKLEARN)) == ["unlisted"]
    # A runtime listing no protocol accepts every one, but ranks after those that list one.
    assert names(supporting_runtimes([], cluster, SKLEARN, "v2")) == ["v2only", "unlisted"]
    assert names(supporting_runtimes([], cluster, SKLEARN, "grpc-v2")) == ["v2only", "unlisted"]
    assert names(supporting_runtimes([], cluster, SKLEARN, "grpc-v1")) == ["unlisted"]
    # An empty protocol (set, but "") is not v1: every runtime supports it (KServe's GetProtocol).
    assert names(supporting_runtimes([], cluster, SKLEARN, "")) == ["v2only", "unlisted"]


@pytest.mark.parametrize(
    ("protocol_versions", "protocol", "supported"),
    [
        # KServe's TestServingRuntimeSpec_IsProtocolVersionSupported (as the code behaves; its test only
        # prints), plus the empty protocol.
        (None, "v1", True),
        (None, "v2", True),
        (["v2", "grpc-v2"], "grpc-v2", True),
        (["v2", "grpc-v2"], "v1", False),
        (None, "grpc-v1", True),
        ([], "grpc-v2", True),
        (["v1"], "", True),
    ],
)
def test_is_protocol_version_supported(
    protocol_versions: list[str] | None, protocol: str, supported: bool
) -> None:
    spec: dict[str, Any] = {} if protocol_versions is None else {"protocolVersions": protocol_versions}
    assert runtime("rt", [auto()], **spec).spec.supports_protocol(protocol) is supported


@pytest.mark.parametrize(
    ("formats", "name", "priority"),
    [
        # KServe's TestServingRuntimeSpec_GetPriority.
        ([{"name": "sklearn", "priority": 1}, {"name": "pytorch", "priority": 2}], "pytorch", 2),
        ([{"name": "sklearn"}, {"name": "pytorch", "priority": 2}], "sklearn", None),
        ([{"name": "sklearn", "priority": 1}], "xgboost", None),
        # A repeated name: the first entry decides, whatever its version or autoSelect.
        (
            [{"name": "sklearn", "version": "0"}, {"name": "sklearn", "version": "1", "priority": 5}],
            "sklearn",
            None,
        ),
        (
            [{"name": "sklearn", "priority": 1}, {"name": "sklearn", "autoSelect": True, "priority": 9}],
            "sklearn",
            1,
        ),
    ],
)
def test_get_priority(formats: list[dict[str, Any]], name: str, priority: int | None) -> None:
    assert runtime("rt", formats).spec.priority_for(name) == priority


def test_priority_of_a_repeated_format_is_the_first_entrys() -> None:
    """`first` ranks by its sklearn:0 entry (no priority) although its sklearn:1 entry has priority 9."""
    cluster = [
        runtime("first", [auto(version="0"), auto(version="1", priority=9)], cluster=True),
        runtime("second", [auto(version="1", priority=1)], cluster=True),
    ]
    assert names(supporting_runtimes([], cluster, ModelFormat(name="sklearn", version="1"))) == [
        "second",
        "first",
    ]


def test_lowest_listed_protocol_orders_runtimes_before_age_and_name() -> None:
    local = [
        runtime("a-v2", [auto()], protocolVersions=["v2"], created="2023-06-01T00:00:00Z"),
        runtime("b-v1", [auto()], protocolVersions=["v2", "v1"]),
        runtime("c-any", [auto()], created="2024-01-01T00:00:00Z"),
        runtime("d-grpc", [auto()], protocolVersions=["grpc-v1", "grpc-v2", "v2"]),
    ]
    assert names(supporting_runtimes(local, [], SKLEARN, "v2")) == ["b-v1", "a-v2", "d-grpc", "c-any"]


def test_cluster_runtimes_newest_first_then_by_name() -> None:
    cluster = [
        runtime("b-old", [auto()], cluster=True, created="2023-01-01T00:00:00Z"),
        runtime("z-new", [auto()], cluster=True, created="2023-06-01T00:00:00Z"),
        runtime("a-old", [auto()], cluster=True, created="2023-01-01T00:00:00Z"),
    ]
    assert names(supporting_runtimes([], cluster, SKLEARN)) == ["z-new", "a-old", "b-old"]


def test_equal_priorities_keep_the_listing_order_beyond_twelve_candidates() -> None:
    """Go's sort.Slice is stable only up to 12 elements; ours is stable for any number."""
    cluster = [runtime(f"r{i:02d}", [auto(priority=1)], cluster=True) for i in reversed(range(20))]
    cluster.append(runtime("top", [auto(priority=2)], cluster=True))
    assert names(supporting_runtimes([], cluster, SKLEARN)) == ["top", *(f"r{i:02d}" for i in range(20))]


def kserve_table_runtimes() -> tuple[list[Any], list[Any]]:
    """The runtimes of KServe's TestGetSupportingRuntimes (same names, formats, protocols and flags)."""
    tf = [auto("tensorflow", "1", 1)]
    sk = [auto("sklearn", "0", 1)]
    mms = [auto("sklearn", "0", 2), auto("xgboost", "1", 2), auto("lightgbm", "3", 2)]
    mlserver = [auto("sklearn", "0", 2), auto("lightgbm", "3", 2)]
    triton = [auto("sklearn", "0"), auto("triton", "1", 1), auto("lightgbm", "3")]
    v1v2: dict[str, Any] = {"protocolVersions": ["v1", "v2"]}
    v2: dict[str, Any] = {"protocolVersions": ["v2"]}
    same = "1970-01-01T00:00:00Z"
    local = [
        runtime("tf-runtime", tf, created=same, **v1v2),
        runtime("sklearn-runtime", sk, created=same, **v1v2),
        runtime(
            "pmml-runtime", [{"name": "pmml", "version": "4", "priority": 1}], created=same, disabled=True
        ),
        runtime("mlserver-runtime", mlserver, created=same, multiModel=False, **v2),
        runtime("triton-runtime", triton, created=same, multiModel=False, **v2),
        runtime("test-runtime", [auto("sklearn", "0")], created=same, multiModel=False, **v2),
    ]
    cluster = [
        runtime("cluster-mlserver-runtime-mms", mms, cluster=True, created=same, multiModel=True, **v2),
        runtime("cluster-tf-runtime", tf, cluster=True, created=same, **v1v2),
        runtime("cluster-xgboost-runtime", [auto("xgboost", "0", 1)], cluster=True, created=same, **v2),
    ]
    return local, cluster


@pytest.mark.parametrize(
    ("case", "model_format", "protocol", "multi_model", "want"),
    [
        ("BothClusterAndNamespaceRuntimesSupportModel", "tensorflow", None, False,
         ["tf-runtime", "cluster-tf-runtime"]),
        ("RuntimeNotFound", "nonexistent-modelformat", None, False, []),
        ("ModelFormatWithDisabledRuntimeSpecified", "pmml", None, False, []),
        ("ModelMeshCompatibleRuntimeModelFormatSpecified", "sklearn", "v2", True,
         ["cluster-mlserver-runtime-mms"]),
        ("SMSRuntimeModelFormatSpecified", "sklearn", None, False, ["sklearn-runtime"]),
        ("RuntimeV2ProtocolSpecified", "xgboost", "v2", False, ["cluster-xgboost-runtime"]),
        ("RuntimeV1ProtocolNotFound", "xgboost", "v1", False, []),
        ("MultipleRuntimeSupportsModelFormatSpecified", "sklearn", "v2", False,
         ["mlserver-runtime", "sklearn-runtime", "test-runtime", "triton-runtime"]),
    ],
)  # fmt: skip
def test_get_supporting_runtimes_kserve_table(
    case: str, model_format: str, protocol: str | None, multi_model: bool, want: list[str]
) -> None:
    local, cluster = kserve_table_runtimes()
    found = supporting_runtimes(
        local, cluster, ModelFormat(name=model_format), protocol, multi_model=multi_model
    )
    assert names(found) == want, case


def test_no_supporting_runtime_error() -> None:
    with pytest.raises(NoSupportingRuntimeError) as err:
        select_runtime(
            [], [runtime("x", [auto("xgboost")], cluster=True)], ModelFormat(name="sklearn", version="2")
        )
    assert err.value.reason == "NoSupportingRuntime"
    assert err.value.message == "No runtime found to support specified framework/version"
    assert str(err.value) == "no runtime found to support predictor with model type: sklearn:2"


def test_explicit_runtime_prefers_namespace_and_ignores_autoselect() -> None:
    local = [runtime("rt", [{"name": "sklearn"}])]
    cluster = [runtime("rt", [auto()], cluster=True), runtime("crt", [{"name": "sklearn"}], cluster=True)]
    chosen = select_runtime(local, cluster, SKLEARN, explicit_name="rt")
    assert (chosen.name, chosen.cluster) == ("rt", False)
    chosen = select_runtime(local, cluster, SKLEARN, explicit_name="crt")
    assert (chosen.name, chosen.cluster) == ("crt", True)


@pytest.mark.parametrize(
    ("rt", "protocol", "error", "reason", "message", "text"),
    [
        (
            None,
            None,
            RuntimeNotFoundError,
            "RuntimeNotRecognized",
            "Waiting for runtime to become available",
            "No ServingRuntimes or ClusterServingRuntimes with the name: rt",
        ),
        (
            {"disabled": True},
            None,
            RuntimeDisabledError,
            "RuntimeDisabled",
            "Specified runtime is disabled",
            "specified runtime rt is disabled",
        ),
        (
            {"protocolVersions": ["v1"]},
            "v2",
            NoSupportingRuntimeError,
            "NoSupportingRuntime",
            "Specified runtime does not support specified protocol version",
            "specified runtime rt does not support specified protocol version",
        ),
        (
            {"supportedModelFormats": [{"name": "xgboost"}]},
            None,
            NoSupportingRuntimeError,
            "NoSupportingRuntime",
            "Specified runtime does not support specified framework/version",
            "specified runtime rt does not support specified framework/version",
        ),
    ],
)
def test_explicit_runtime_errors(
    rt: dict[str, Any] | None,
    protocol: str | None,
    error: type[RuntimeSelectionError],
    reason: str,
    message: str,
    text: str,
) -> None:
    local = []
    if rt is not None:
        formats = rt.pop("supportedModelFormats", [{"name": "sklearn"}])
        local.append(runtime("rt", formats, **rt))
    with pytest.raises(error) as err:
        select_runtime(local, [], SKLEARN, protocol, "rt")
    assert (err.value.reason, err.value.message, str(err.value)) == (reason, message, text)


def test_runtime_helpers() -> None:
    rt = runtime("rt", [auto()], protocolVersions=["grpc-v2", "v2"])
    assert rt.spec.default_protocol_version() == "v2"
    # KServe: no listed (or only unknown) protocols give the unknown protocol "".
    assert runtime("x", [auto()]).spec.default_protocol_version() == ""
    assert runtime("y", [auto()], protocolVersions=["v3"]).spec.default_protocol_version() == ""
    assert rt.spec.kserve_container().image == "rt:latest"
    empty = ServingRuntime.from_object({"spec": {"containers": [{"name": "other"}]}})
    with pytest.raises(RuntimeSelectionError, match="failed to find kserve-container"):
        empty.spec.kserve_container()


# --- TrainedModel, resources ----------------------------------------------------------------------


def test_trained_model_round_trip_and_conditions() -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "m1", "namespace": "ns"},
        "spec": {
            "inferenceService": "parent",
            "model": {"storageUri": "gs://m", "framework": "sklearn", "memory": "1Gi"},
        },
    }
    tm = TrainedModel.from_object(obj)
    assert tm.to_object() == obj
    assert (tm.spec.inference_service, tm.spec.model.memory) == ("parent", "1Gi")
    assert TRAINED_MODEL_CONDITIONS.dependents == (
        "InferenceServiceReady",
        "MemoryResourceAvailable",
        "IsMMSPredictor",
    )
    m = tm.status.conditions_manager()
    m.initialize()
    for t in TRAINED_MODEL_CONDITIONS.dependents:
        m.mark_true(t)
    assert tm.status.is_ready()


def test_predict_path() -> None:
    assert predict_path("m") == "/v1/models/m:predict"
    assert predict_path("m", "v2") == "/v2/models/m/infer"
    assert predict_path("m", "grpc-v2") == ""


def test_resources_and_names() -> None:
    assert (
        INFERENCE_SERVICES.path("ns", "x", "status")
        == "/apis/serving.kserve.io/v1beta1/namespaces/ns/inferenceservices/x/status"
    )
    assert TRAINED_MODELS.api_version == "serving.kserve.io/v1alpha1"
    assert SERVING_RUNTIMES.kind == "ServingRuntime"
    assert (
        CLUSTER_SERVING_RUNTIMES.path("ignored") == "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes"
    )
    assert KNATIVE_SERVICES.api_version == "serving.knative.dev/v1"
    assert VIRTUAL_SERVICES.api_version == "networking.istio.io/v1alpha3"
    assert c.INFERENCE_SERVICE_CONDITIONS.happy == "Ready"
    assert c.INFERENCE_SERVICE_CONDITIONS.dependents == ("PredictorReady", "IngressReady")
    assert c.component_name("isvc", "predictor") == "isvc-predictor"
    assert c.legacy_component_name("isvc", "predictor") == "isvc-predictor-default"
    assert c.model_configmap_name("isvc") == "modelconfig-isvc-0"


def test_known_fields_set_to_none_are_omitted_like_nil_pointers() -> None:
    isvc = InferenceService.from_object(load(TRANSFORMER))
    isvc.spec.transformer = None
    isvc.status.url = None
    out = isvc.to_object()
    assert "transformer" not in out["spec"]
    assert "status" not in out
