"""Component assembly and the Knative Service of each component (table-driven), and its reconciler.

Each row is an InferenceService (YAML), the runtimes and explainer images in scope, the Knative Services that
already exist and the InferenceService's status, with the fields of the desired Knative Service it must
produce (a path into the object -> the value, `ABSENT` for a key that must not be there), or the reason of
the `ComponentSpecError` it must raise.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from apis import constants as c
from apis.config import ExplainersConfig, InferenceServicesConfig
from apis.inferenceservice import InferenceService
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    KNATIVE_SERVICES,
    SERVING_RUNTIMES,
)
from manager.client import Object, Resource
from manager.errors import Invalid
from reconcilers.apply import HASH_ANNOTATION, NotControlled
from reconcilers.components import ComponentBuilder, ComponentSpecError, component_name, validate_storage_uri
from reconcilers.knative_service import KnativeServiceReconciler, desired_knative_service
from tests.support.fakecluster import FakeCluster

NS = "ns"
NAME = "sk"
UID = "isvc-uid"

ABSENT = object()
"""Expected value of a key that must not be present."""

SKLEARN_SERVER = """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: kserve-sklearnserver}
spec:
  annotations: {prometheus.kserve.io/port: "8080", prometheus.kserve.io/path: /metrics}
  labels: {runtime-label: sklearn, shared: runtime}
  supportedModelFormats:
  - {name: sklearn, version: "1", autoSelect: true, priority: 1}
  protocolVersions: [v1, v2]
  containers:
  - name: kserve-container
    image: kserve/sklearnserver:latest
    args: ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"]
    resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "1", memory: 2Gi}}
"""
MLSERVER = """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: kserve-mlserver}
spec:
  annotations: {prometheus.kserve.io/port: "8080", prometheus.kserve.io/path: /metrics}
  supportedModelFormats:
  - {name: sklearn, version: "1", autoSelect: true, priority: 2}
  protocolVersions: [v2]
  containers:
  - name: kserve-container
    image: docker.io/seldonio/mlserver:1.3.2
    env: [{name: MLSERVER_MODEL_IMPLEMENTATION, value: mlserver_sklearn.SKLearnModel}]
"""
TORCHSERVE = """
apiVersion: serving.kserve.io/v1alpha1
kind: ClusterServingRuntime
metadata: {name: kserve-torchserve}
spec:
  annotations: {prometheus.kserve.io/port: "8082", prometheus.kserve.io/path: /metrics}
  supportedModelFormats:
  - {name: pytorch, version: "1", autoSelect: true, priority: 1}
  containers:
  - name: kserve-container
    image: pytorch/torchserve-kfs:0.8.2
"""


def runtime(name: str, fmt: str, *, priority: int | None = None, cluster: bool = True, **spec: Any) -> Object:
    entry: dict[str, Any] = {"name": fmt, "autoSelect": True}
    if priority is not None:
        entry["priority"] = priority
    body: dict[str, Any] = {
        "supportedModelFormats": [entry],
        "containers": [{"name": "kserve-container", "image": f"{name}:v1"}],
        **spec,
    }
    meta: dict[str, Any] = {"name": name} if cluster else {"name": name, "namespace": NS}
    kind = "ClusterServingRuntime" if cluster else "ServingRuntime"
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": kind, "metadata": meta, "spec": body}


SHIPPED: dict[str, Object] = {
    path.stem: yaml.safe_load(path.read_text())
    for path in (Path(__file__).resolve().parents[2] / "config" / "runtimes").glob("kserve-*.yaml")
}
STANDARD_RUNTIMES: list[Object] = [
    yaml.safe_load(SKLEARN_SERVER),
    yaml.safe_load(MLSERVER),
    yaml.safe_load(TORCHSERVE),
]
EXPLAINERS = ExplainersConfig.model_validate(
    {
        "alibi": {"image": "kserve/alibi-explainer", "defaultImageVersion": "v0.11.0"},
        "art": {"image": "kserve/art-explainer", "defaultImageVersion": "v0.11.0"},
    }
)

CONFIG = InferenceServicesConfig.from_configmap({"explainers": EXPLAINERS.model_dump_json(by_alias=True)})

SKLEARN = "predictor: {sklearn: {storageUri: gs://b/m}}"
CUSTOM = "predictor: {containers: [{name: c, image: me/model:1}]}"
TRANSFORMER = "transformer: {containers: [{image: me/transformer:1}]}"

ANN = ("spec", "template", "metadata", "annotations")
TLABELS = ("spec", "template", "metadata", "labels")
CONTAINER = ("spec", "template", "spec", "containers", 0)
ARGS = (*CONTAINER, "args")
IMAGE = (*CONTAINER, "image")
LABELS = ("metadata", "labels")
TRAFFIC = ("spec", "traffic")


def make_isvc(spec: str, *, meta: str = "{}", status: str = "{}") -> InferenceService:
    metadata = {"name": NAME, "namespace": NS, "uid": UID, **yaml.safe_load(meta)}
    spec_obj = {}
    for part in spec.split("\n---\n") if "\n---\n" in spec else [spec]:
        spec_obj.update(yaml.safe_load(part))
    return InferenceService.from_object(
        {"metadata": metadata, "spec": spec_obj, "status": yaml.safe_load(status)}
    )


def lookup(obj: Any, path: Sequence[str | int]) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or key >= len(obj):
                return ABSENT
            obj = obj[key]
        else:
            if not isinstance(obj, dict) or key not in obj:
                return ABSENT
            obj = obj[key]
    return obj


@dataclass
class Case:
    name: str
    spec: str
    component: str = c.PREDICTOR
    meta: str = "{}"
    status: str = "{}"
    runtimes: list[Object] = field(default_factory=lambda: STANDARD_RUNTIMES)
    existing: tuple[str, ...] = ()
    expect: dict[tuple[str | int, ...], Any] = field(default_factory=dict)
    error: str | None = None
    message: str | None = None


CASES = [
    # --- Predictor from a model format and a runtime ---
    Case(
        "sklearn legacy key served by the sklearn runtime",
        SKLEARN,
        expect={
            ("metadata", "name"): "sk-predictor",
            ("metadata", "namespace"): NS,
            IMAGE: "kserve/sklearnserver:latest",
            (*CONTAINER, "name"): "kserve-container",
            ARGS: ["--model_name=sk", "--model_dir=/mnt/models", "--http_port=8080"],
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "gs://b/m",
            (*ANN, c.PROMETHEUS_PORT_ANNOTATION): "8080",
            (*ANN, c.PROMETHEUS_PATH_ANNOTATION): "/metrics",
            (*LABELS, "runtime-label"): "sklearn",
            (*LABELS, c.INFERENCE_SERVICE_LABEL): NAME,
            (*LABELS, c.COMPONENT_LABEL): c.PREDICTOR,
            (*CONTAINER, "resources", "limits", "memory"): "2Gi",
        },
    ),
    Case(
        "v2 model format picks the higher-priority v2 runtime",
        "predictor: {model: {modelFormat: {name: sklearn}, protocolVersion: v2, storageUri: s3://b/m}}",
        expect={
            IMAGE: "docker.io/seldonio/mlserver:1.3.2",
            # The defaults' new env vars come first, the runtime's after (strategic merge order).
            (*CONTAINER, "env"): [
                {"name": "MLSERVER_MODEL_NAME", "value": NAME},
                {"name": "MLSERVER_MODEL_URI", "value": "/mnt/models"},
                {"name": "MLSERVER_MODEL_IMPLEMENTATION", "value": "mlserver_sklearn.SKLearnModel"},
            ],
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "s3://b/m",
            (*LABELS, "runtime-label"): ABSENT,
        },
    ),
    Case(
        "v1 model format skips the v2-only runtime",
        "predictor: {model: {modelFormat: {name: sklearn}, storageUri: gs://b/m}}",
        expect={IMAGE: "kserve/sklearnserver:latest"},
    ),
    # --- Runtime defaults: labels fill the runtime's templates and label the Knative Service ---
    Case(
        "torchserve: protocol v1, PROTOCOL_VERSION and the serviceEnvelope its template reads",
        "predictor: {pytorch: {storageUri: gs://b/m}}",
        runtimes=[SHIPPED["kserve-torchserve"]],
        expect={
            (*CONTAINER, "env"): [
                {"name": "PROTOCOL_VERSION", "value": "v1"},
                {"name": "TS_SERVICE_ENVELOPE", "value": "kserve"},
            ],
            (*LABELS, "serviceEnvelope"): "kserve",
            (*TLABELS, "serviceEnvelope"): "kserve",
        },
    ),
    Case(
        "torchserve v2: the default envelope replaces the user's label",
        "predictor: {model: {modelFormat: {name: pytorch}, protocolVersion: v2, storageUri: gs://b/m}}",
        meta="{labels: {serviceEnvelope: mine, team: a}}",
        runtimes=[SHIPPED["kserve-torchserve"]],
        expect={
            (*CONTAINER, "env", 1): {"name": "TS_SERVICE_ENVELOPE", "value": "kservev2"},
            (*LABELS, "serviceEnvelope"): "kservev2",
            (*LABELS, "team"): "a",
        },
    ),
    Case(
        "triton without a model location loads models explicitly",
        "predictor: {triton: {}}",
        runtimes=[SHIPPED["kserve-tritonserver"]],
        expect={
            (*ARGS, 6): "--model-control-mode=explicit",
            (*ARGS, 7): ABSENT,
            (*ANN, c.AGENT_ANNOTATION): "true",
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): ABSENT,
        },
    ),
    Case(
        "a model predictor without a storage location is multi-model: agent annotations",
        "predictor: {model: {modelFormat: {name: sklearn}}}",
        expect={
            (*ANN, c.AGENT_ANNOTATION): "true",
            (*ANN, c.AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION): "modelconfig-sk-0",
            (*ANN, c.AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION): "/mnt/configs",
            (*ANN, c.AGENT_MODEL_DIR_ANNOTATION): "/mnt/models",
        },
    ),
    Case(
        "a model predictor with a storage location has no agent",
        SKLEARN,
        expect={(*ANN, c.AGENT_ANNOTATION): ABSENT},
    ),
    Case(
        "legacy pytorch key served by torchserve with its prometheus port",
        "predictor: {pytorch: {storageUri: gs://b/m}}",
        expect={IMAGE: "pytorch/torchserve-kfs:0.8.2", (*ANN, c.PROMETHEUS_PORT_ANNOTATION): "8082"},
    ),
    Case(
        "explicit runtime: the namespace runtime wins over a cluster runtime of the same name",
        "predictor: {model: {modelFormat: {name: fmt}, runtime: mine, storageUri: gs://b/m}}",
        runtimes=[runtime("mine", "fmt"), {**runtime("mine", "fmt", cluster=False)}],
        expect={IMAGE: "mine:v1"},
    ),
    Case(
        "explicit runtime need not be auto-selectable",
        "predictor: {model: {modelFormat: {name: fmt}, runtime: manual}}",
        runtimes=[
            runtime("manual", "other")
            | {
                "spec": {
                    "supportedModelFormats": [{"name": "fmt"}],
                    "containers": [{"name": "kserve-container", "image": "manual:2"}],
                }
            }
        ],
        expect={IMAGE: "manual:2", (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): ABSENT},
    ),
    Case(
        "auto-select takes the highest priority",
        "predictor: {model: {modelFormat: {name: fmt}}}",
        runtimes=[
            runtime("low", "fmt", priority=1),
            runtime("high", "fmt", priority=5),
            runtime("none", "fmt"),
        ],
        expect={IMAGE: "high:v1"},
    ),
    Case(
        "auto-select skips a disabled runtime",
        "predictor: {model: {modelFormat: {name: fmt}}}",
        runtimes=[runtime("low", "fmt", priority=1), runtime("high", "fmt", priority=5, disabled=True)],
        expect={IMAGE: "low:v1"},
    ),
    Case(
        "explicitly named disabled runtime",
        "predictor: {model: {modelFormat: {name: fmt}, runtime: disabled-rt}}",
        runtimes=[runtime("disabled-rt", "fmt", disabled=True)],
        error=c.FAILURE_RUNTIME_DISABLED,
        message="specified runtime disabled-rt is disabled",
    ),
    Case(
        "unknown runtime",
        "predictor: {model: {modelFormat: {name: sklearn}, runtime: nope}}",
        error=c.FAILURE_RUNTIME_NOT_RECOGNIZED,
        message="No ServingRuntimes or ClusterServingRuntimes with the name: nope",
    ),
    Case(
        "no supporting runtime",
        "predictor: {model: {modelFormat: {name: unknown-format}}}",
        error=c.FAILURE_NO_SUPPORTING_RUNTIME,
        message="no runtime found to support predictor with model type: unknown-format",
    ),
    Case(
        "runtime without kserve-container",
        "predictor: {model: {modelFormat: {name: fmt}}}",
        runtimes=[runtime("bad", "fmt", containers=[{"name": "other", "image": "x"}])],
        error=c.FAILURE_INVALID_PREDICTOR_SPEC,
    ),
    Case(
        "predictor overrides merge into the runtime container",
        """predictor:
  model:
    modelFormat: {name: sklearn}
    runtimeVersion: "1.2.0"
    args: [--workers=2]
    env: [{name: X, value: "1"}]
    resources: {limits: {memory: 4Gi}}
  serviceAccountName: sa
  nodeSelector: {disk: ssd}""",
        expect={
            IMAGE: "kserve/sklearnserver:1.2.0",
            ARGS: ["--model_name=sk", "--model_dir=/mnt/models", "--http_port=8080", "--workers=2"],
            (*CONTAINER, "env"): [{"name": "X", "value": "1"}],
            (*CONTAINER, "resources", "limits"): {"cpu": "1", "memory": "4Gi"},
            ("spec", "template", "spec", "serviceAccountName"): "sa",
            ("spec", "template", "spec", "nodeSelector"): {"disk": "ssd"},
        },
    ),
    # --- Custom containers ---
    Case(
        "custom container is renamed kserve-container and carries the pod spec",
        """predictor:
  containers:
  - name: mine
    image: me/model:1
    env: [{name: STORAGE_URI, value: "pvc://claim/model"}]
  serviceAccountName: sa
  volumes: [{name: v, emptyDir: {}}]
  imagePullSecrets: [{name: pull}]""",
        runtimes=[],
        expect={
            (*CONTAINER, "name"): "kserve-container",
            IMAGE: "me/model:1",
            ARGS: ABSENT,
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "pvc://claim/model",
            ("spec", "template", "spec", "serviceAccountName"): "sa",
            ("spec", "template", "spec", "volumes"): [{"name": "v", "emptyDir": {}}],
            ("spec", "template", "spec", "imagePullSecrets"): [{"name": "pull"}],
            (*ANN, c.PROMETHEUS_PORT_ANNOTATION): ABSENT,
        },
    ),
    Case(
        "custom multi-model server gets the agent annotations",
        "predictor: {containers: [{image: me/mms:1, env: [{name: MULTI_MODEL_SERVER, value: 'true'}]}]}",
        expect={
            (*ANN, c.AGENT_ANNOTATION): "true",
            (*ANN, c.AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION): "modelconfig-sk-0",
            (*ANN, c.AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION): "/mnt/configs",
            (*ANN, c.AGENT_MODEL_DIR_ANNOTATION): "/mnt/models",
        },
    ),
    Case(
        "two implementations",
        "predictor: {sklearn: {storageUri: gs://b/m}, containers: [{image: x}]}",
        error="InvalidSpec",
    ),
    Case("no implementation", "predictor: {serviceAccountName: sa}", error="InvalidSpec"),
    # --- Transformer and explainer ---
    Case(
        "transformer args point at the predictor",
        SKLEARN + "\n---\n" + TRANSFORMER,
        component=c.TRANSFORMER,
        expect={
            ("metadata", "name"): "sk-transformer",
            (*CONTAINER, "name"): "kserve-container",
            ARGS: ["--model_name", "sk", "--predictor_host", "sk-predictor.ns", "--http_port", "8080"],
            (*LABELS, c.COMPONENT_LABEL): c.TRANSFORMER,
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): ABSENT,
        },
    ),
    Case(
        "transformer args the user gave are kept, workers from containerConcurrency",
        SKLEARN + "\n---\n" + "transformer: {containerConcurrency: 4,"
        " containers: [{image: t, args: [--model_name=m, --http_port, '9000']}]}",
        component=c.TRANSFORMER,
        expect={
            ARGS: [
                "--model_name=m",
                "--http_port",
                "9000",
                "--predictor_host",
                "sk-predictor.ns",
                "--workers",
                "4",
            ],
            ("spec", "template", "spec", "containerConcurrency"): 4,
        },
    ),
    Case(
        "alibi explainer without transformer targets the predictor",
        SKLEARN
        + "\n---\n"
        + "explainer: {alibi: {type: AnchorTabular, storageUri: gs://b/e, config: {b: '2', a: '1'}}}",
        component=c.EXPLAINER,
        expect={
            ("metadata", "name"): "sk-explainer",
            IMAGE: "kserve/alibi-explainer:v0.11.0",
            (*CONTAINER, "name"): "kserve-container",
            ARGS: [
                "--model_name",
                "sk",
                "--http_port",
                "8080",
                "--predictor_host",
                "sk-predictor.ns",
                "--storage_uri",
                "/mnt/models",
                "AnchorTabular",
                "--a",
                "1",
                "--b",
                "2",
            ],
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "gs://b/e",
            (*LABELS, c.COMPONENT_LABEL): c.EXPLAINER,
        },
    ),
    Case(
        "alibi explainer with a transformer targets the transformer; runtimeVersion picks the tag",
        SKLEARN
        + "\n---\n"
        + TRANSFORMER
        + "\n---\n"
        + "explainer: {alibi: {type: AnchorText, runtimeVersion: v9}}",
        component=c.EXPLAINER,
        expect={
            IMAGE: "kserve/alibi-explainer:v9",
            ARGS: [
                "--model_name",
                "sk",
                "--http_port",
                "8080",
                "--predictor_host",
                "sk-transformer.ns",
                "AnchorText",
            ],
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): ABSENT,
        },
    ),
    Case(
        "art explainer passes its type as --adversary_type",
        SKLEARN + "\n---\n" + "explainer: {art: {type: SquareAttack, args: [--extra]}}",
        component=c.EXPLAINER,
        expect={
            IMAGE: "kserve/art-explainer:v0.11.0",
            ARGS: [
                "--model_name",
                "sk",
                "--http_port",
                "8080",
                "--predictor_host",
                "sk-predictor.ns",
                "--adversary_type",
                "SquareAttack",
                "--extra",
            ],
        },
    ),
    Case(
        "custom explainer gets the host of the transformer",
        SKLEARN + "\n---\n" + TRANSFORMER + "\n---\n" + "explainer: {containers: [{image: me/explainer:1}]}",
        component=c.EXPLAINER,
        expect={
            IMAGE: "me/explainer:1",
            ARGS: ["--model_name", "sk", "--predictor_host", "sk-transformer.ns", "--http_port", "8080"],
        },
    ),
    # --- Traffic ---
    Case(
        "canary 10% with a previously rolled-out revision",
        "predictor: {canaryTrafficPercent: 10, sklearn: {storageUri: gs://b/m}}",
        status="{components: {predictor: {latestRolledoutRevision: sk-predictor-00001}}}",
        expect={
            TRAFFIC: [
                {"latestRevision": True, "percent": 10},
                {"tag": "prev", "revisionName": "sk-predictor-00001", "latestRevision": False, "percent": 90},
            ]
        },
    ),
    Case(
        "canary 10% before anything was rolled out",
        "predictor: {canaryTrafficPercent: 10, sklearn: {storageUri: gs://b/m}}",
        expect={TRAFFIC: [{"latestRevision": True, "percent": 100}]},
    ),
    Case(
        "canary 100% has no prev entry",
        "predictor: {canaryTrafficPercent: 100, sklearn: {storageUri: gs://b/m}}",
        status="{components: {predictor: {latestRolledoutRevision: sk-predictor-00001}}}",
        expect={TRAFFIC: [{"latestRevision": True, "percent": 100}]},
    ),
    Case(
        "tag routing tags the latest entry",
        "predictor: {canaryTrafficPercent: 20, sklearn: {storageUri: gs://b/m}}",
        meta="{annotations: {serving.kserve.io/enable-tag-routing: 'true'}}",
        status="{components: {predictor: {latestRolledoutRevision: r1}}}",
        expect={
            TRAFFIC: [
                {"latestRevision": True, "percent": 20, "tag": "latest"},
                {"tag": "prev", "revisionName": "r1", "latestRevision": False, "percent": 80},
            ]
        },
    ),
    Case(
        "tag routing without canary",
        SKLEARN,
        meta="{annotations: {serving.kserve.io/enable-tag-routing: 'true'}}",
        expect={TRAFFIC: [{"latestRevision": True, "percent": 100, "tag": "latest"}]},
    ),
    # --- Autoscaling, revision settings ---
    Case(
        "autoscaling defaults: min-scale 1, no max-scale, KPA class",
        SKLEARN,
        expect={
            (*ANN, c.KNATIVE_MIN_SCALE_ANNOTATION): "1",
            (*ANN, c.KNATIVE_MAX_SCALE_ANNOTATION): ABSENT,
            (*ANN, c.KNATIVE_AUTOSCALING_CLASS_ANNOTATION): c.KNATIVE_KPA_CLASS,
            (*ANN, c.KNATIVE_TARGET_ANNOTATION): ABSENT,
            (*ANN, c.KNATIVE_METRIC_ANNOTATION): ABSENT,
            ("spec", "template", "spec", "timeoutSeconds"): ABSENT,
            ("spec", "template", "spec", "containerConcurrency"): ABSENT,
            ("metadata", "annotations"): ABSENT,
        },
    ),
    Case(
        "autoscaling from the component; the user's class wins",
        """predictor:
  minReplicas: 0
  maxReplicas: 3
  scaleTarget: 7
  scaleMetric: rps
  timeout: 60
  containerConcurrency: 2
  annotations: {autoscaling.knative.dev/class: hpa.autoscaling.knative.dev}
  sklearn: {storageUri: gs://b/m}""",
        expect={
            (*ANN, c.KNATIVE_MIN_SCALE_ANNOTATION): "0",
            (*ANN, c.KNATIVE_MAX_SCALE_ANNOTATION): "3",
            (*ANN, c.KNATIVE_AUTOSCALING_CLASS_ANNOTATION): "hpa.autoscaling.knative.dev",
            (*ANN, c.KNATIVE_TARGET_ANNOTATION): "7",
            (*ANN, c.KNATIVE_METRIC_ANNOTATION): "rps",
            ("spec", "template", "spec", "timeoutSeconds"): 60,
            ("spec", "template", "spec", "containerConcurrency"): 2,
        },
    ),
    Case(
        "disallowed annotations are dropped, others pass through to the template",
        "predictor: {annotations: {internal.serving.kserve.io/storage-initializer-sourceuri: x, comp: c},"
        " sklearn: {storageUri: gs://b/m}}",
        meta="""{annotations: {autoscaling.knative.dev/min-scale: '5', autoscaling.knative.dev/max-scale: '9',
                 kubectl.kubernetes.io/last-applied-configuration: '{}', user: u,
                 queue.sidecar.serving.knative.dev/x: q}}""",
        expect={
            (*ANN, c.KNATIVE_MIN_SCALE_ANNOTATION): "1",
            (*ANN, c.KNATIVE_MAX_SCALE_ANNOTATION): ABSENT,
            (*ANN, c.LAST_APPLIED_CONFIG_ANNOTATION): ABSENT,
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "gs://b/m",
            (*ANN, "user"): "u",
            (*ANN, "comp"): "c",
            (*ANN, "queue.sidecar.serving.knative.dev/x"): "q",
        },
    ),
    Case(
        "rollout-duration and enablePassthrough move to the Knative Service",
        SKLEARN,
        meta="{annotations: {serving.knative.dev/rollout-duration: 380s,"
        " serving.knative.openshift.io/enablePassthrough: 'true'}}",
        expect={
            ("metadata", "annotations"): {
                c.KNATIVE_ROLLOUT_DURATION_ANNOTATION: "380s",
                c.KNATIVE_OPENSHIFT_PASSTHROUGH_ANNOTATION: "true",
            },
            (*ANN, c.KNATIVE_ROLLOUT_DURATION_ANNOTATION): ABSENT,
            (*ANN, c.KNATIVE_OPENSHIFT_PASSTHROUGH_ANNOTATION): ABSENT,
        },
    ),
    Case(
        "visibility label on the Knative Service but not on the revision template",
        SKLEARN,
        meta="{labels: {networking.knative.dev/visibility: cluster-local, team: a}}",
        expect={
            (*LABELS, c.KNATIVE_VISIBILITY_LABEL): "cluster-local",
            (*TLABELS, c.KNATIVE_VISIBILITY_LABEL): ABSENT,
            (*TLABELS, "team"): "a",
            (*TLABELS, c.COMPONENT_LABEL): c.PREDICTOR,
        },
    ),
    Case(
        "label priority: runtime < isvc < component < fixed",
        "predictor: {labels: {team: comp, component: mine}, sklearn: {storageUri: gs://b/m}}",
        meta="{labels: {shared: isvc, team: isvc}}",
        expect={
            (*LABELS, "runtime-label"): "sklearn",
            (*LABELS, "shared"): "isvc",
            (*LABELS, "team"): "comp",
            (*LABELS, c.COMPONENT_LABEL): c.PREDICTOR,
        },
    ),
    Case(
        "runtime annotations have the lowest priority",
        "predictor: {annotations: {prometheus.kserve.io/port: '9999'}, sklearn: {storageUri: gs://b/m}}",
        expect={
            (*ANN, c.PROMETHEUS_PORT_ANNOTATION): "9999",
            (*ANN, c.PROMETHEUS_PATH_ANNOTATION): "/metrics",
        },
    ),
    Case(
        "logger and batcher annotations",
        "predictor: {logger: {url: 'http://sink'}, batcher: {maxBatchSize: 32, maxLatency: 500, timeout: 60},"
        " sklearn: {storageUri: gs://b/m}}",
        expect={
            (*ANN, c.LOGGER_ANNOTATION): "true",
            (*ANN, c.LOGGER_SINK_URL_ANNOTATION): "http://sink",
            (*ANN, c.LOGGER_MODE_ANNOTATION): "all",
            (*ANN, c.BATCHER_ANNOTATION): "true",
            (*ANN, c.BATCHER_MAX_BATCH_SIZE_ANNOTATION): "32",
            (*ANN, c.BATCHER_MAX_LATENCY_ANNOTATION): "500",
            (*ANN, c.BATCHER_TIMEOUT_ANNOTATION): "60",
        },
    ),
    Case(
        "storage spec annotations",
        "predictor: {model: {modelFormat: {name: sklearn},"
        " storage: {key: k, path: p/m, parameters: {b: '2', a: '1'}}}}",
        expect={
            (*ANN, c.STORAGE_SPEC_ANNOTATION): "true",
            (*ANN, c.STORAGE_SPEC_KEY_ANNOTATION): "k",
            (*ANN, c.STORAGE_SPEC_PARAM_ANNOTATION): '{"a":"1","b":"2"}',
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "<scheme-placeholder>://p/m",
        },
    ),
    Case(
        "storage spec: one leading slash of the path is dropped, parameters as Go's json.Marshal writes them",
        "predictor: {model: {modelFormat: {name: sklearn},"
        " storage: {path: /p/m, parameters: {q: 'a<b&c>d'}}}}",
        expect={
            (*ANN, c.STORAGE_SPEC_PARAM_ANNOTATION): '{"q":"a\\u003cb\\u0026c\\u003ed"}',
            (*ANN, c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION): "<scheme-placeholder>://p/m",
        },
    ),
    Case(
        "storageUri and storage.path together",
        "predictor: {model: {modelFormat: {name: sklearn}, storageUri: gs://b/m, storage: {path: p}}}",
        error="InvalidSpec",
        message="must provide only one of storageUri and storage.path",
    ),
    Case(
        "invalid storage URI scheme",
        "predictor: {sklearn: {storageUri: 'ftp://host/model'}}",
        error="InvalidStorageURI",
    ),
    Case(
        "invalid storage URI in a custom container",
        "predictor: {containers: [{image: x, env: [{name: STORAGE_URI, value: 'foo://bar'}]}]}",
        error="InvalidStorageURI",
    ),
    # --- Names and ownership ---
    Case(
        "legacy -default names are kept, and other components point at them",
        SKLEARN + "\n---\n" + TRANSFORMER,
        component=c.TRANSFORMER,
        existing=("sk-predictor-default", "sk-transformer-default"),
        expect={
            ("metadata", "name"): "sk-transformer-default",
            ARGS: [
                "--model_name",
                "sk",
                "--predictor_host",
                "sk-predictor-default.ns",
                "--http_port",
                "8080",
            ],
        },
    ),
    Case(
        "owner reference: controller to the InferenceService",
        SKLEARN,
        expect={
            ("metadata", "ownerReferences"): [
                {
                    "apiVersion": "serving.kserve.io/v1beta1",
                    "kind": "InferenceService",
                    "name": NAME,
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            ("apiVersion",): "serving.knative.dev/v1",
            ("kind",): "Service",
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_desired_knative_service(case: Case) -> None:
    isvc = make_isvc(case.spec, meta=case.meta, status=case.status)
    before = isvc.to_object()

    def build() -> dict[str, Any]:
        return desired_knative_service(
            isvc,
            case.component,
            runtimes=copy.deepcopy(case.runtimes),
            explainers_config=EXPLAINERS,
            existing_names=case.existing,
        )

    if case.error is not None:
        with pytest.raises(ComponentSpecError) as info:
            build()
        assert info.value.reason == case.error
        if case.message is not None:
            assert info.value.message == case.message
        return
    ksvc = build()
    for path, want in case.expect.items():
        assert lookup(ksvc, path) == want, path
    assert isvc.to_object() == before, "the builder must not modify the InferenceService"


def test_runtime_errors_carry_kserve_model_status_message() -> None:
    isvc = make_isvc("predictor: {model: {modelFormat: {name: sklearn}, runtime: nope}}")
    with pytest.raises(ComponentSpecError) as info:
        desired_knative_service(isvc, c.PREDICTOR, runtimes=STANDARD_RUNTIMES)
    assert info.value.model_failure_message == "Waiting for runtime to become available"
    with pytest.raises(ComponentSpecError) as storage:
        desired_knative_service(
            make_isvc("predictor: {sklearn: {storageUri: 'ftp://x'}}"),
            c.PREDICTOR,
            runtimes=STANDARD_RUNTIMES,
        )
    assert storage.value.reason == "InvalidStorageURI"
    assert storage.value.model_failure_message is None


def test_explainer_without_configured_image_is_a_clear_error() -> None:
    isvc = make_isvc(SKLEARN + "\n---\n" + "explainer: {alibi: {type: AnchorTabular}}")
    with pytest.raises(ComponentSpecError, match='key "explainers"'):
        desired_knative_service(isvc, c.EXPLAINER, explainers_config=ExplainersConfig())


def test_missing_component_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="has no transformer"):
        desired_knative_service(make_isvc(SKLEARN), c.TRANSFORMER)


@pytest.mark.parametrize(
    "uri",
    [
        "gs://b/m",
        "s3://b/m",
        "pvc://claim/m",
        "file:///m",
        "https://host/m.joblib",
        "http://host/m",
        "hdfs://nn/m",
        "webhdfs://nn/m",
        "https://account.blob.core.windows.net/container/model",
        "/local/absolute/path",
        "relative/path",
    ],
)
def test_valid_storage_uris(uri: str) -> None:
    validate_storage_uri(uri)


@pytest.mark.parametrize("uri", ["ftp://h/m", "oci://img", "https://blob.core.windows.net", "gcs://b/m"])
def test_invalid_storage_uris(uri: str) -> None:
    with pytest.raises(ComponentSpecError) as info:
        validate_storage_uri(uri)
    assert info.value.reason == "InvalidStorageURI"
    assert info.value.message.startswith(
        "StorageURI not supported: storageUri, must be one of: [gs://, s3://"
    )
    assert f"StorageUri [{uri}] is not supported." in info.value.message


def test_component_name() -> None:
    isvc = make_isvc(SKLEARN)
    assert component_name(isvc, c.PREDICTOR) == "sk-predictor"
    assert component_name(isvc, c.EXPLAINER, {"sk-predictor-default"}) == "sk-explainer"
    assert component_name(isvc, c.PREDICTOR, {"sk-predictor-default"}) == "sk-predictor-default"


# --- The reconciler over the shared fake cluster ----------------------------------------------------


def knative_defaults(resource: Resource, obj: Object) -> None:
    """What the API server and Knative's webhook add to a Knative Service we apply."""
    if resource != KNATIVE_SERVICES:
        return
    obj["metadata"].setdefault("annotations", {})["serving.knative.dev/creator"] = "admin"
    template = obj["spec"]["template"]["spec"]
    template.setdefault("timeoutSeconds", 300)
    template["enableServiceLinks"] = False
    template["containers"][0]["readinessProbe"] = {"successThreshold": 1}
    obj["spec"]["traffic"][0].setdefault("configurationName", obj["metadata"]["name"])


def make_cluster() -> tuple[FakeCluster, KnativeServiceReconciler, ComponentBuilder]:
    cluster = FakeCluster(defaulter=knative_defaults)
    for resource in (
        KNATIVE_SERVICES,
        SERVING_RUNTIMES,
        CLUSTER_SERVING_RUNTIMES,
        CLUSTER_STORAGE_CONTAINERS,
    ):
        cluster.watch(resource)
    for rt in STANDARD_RUNTIMES:
        cluster.add(CLUSTER_SERVING_RUNTIMES, rt)
    return cluster, KnativeServiceReconciler(cluster.client, cluster.cache), ComponentBuilder(cluster.cache)


async def reconcile(
    cluster: FakeCluster,
    reconciler: KnativeServiceReconciler,
    builder: ComponentBuilder,
    isvc: InferenceService,
    component: str = c.PREDICTOR,
    config: InferenceServicesConfig = CONFIG,
) -> Object:
    """Build the component, reconcile its Knative Service, and let the cache catch up."""
    built = builder.build(isvc, component, config=config, existing_names=reconciler.existing_names(isvc))
    status = await reconciler.reconcile(isvc, built)
    cluster.sync()
    return status


async def test_reconcile_creates_then_makes_no_write_until_a_spec_field_changes() -> None:
    cluster, reconciler, builder = make_cluster()
    status = await reconcile(cluster, reconciler, builder, make_isvc(SKLEARN))
    assert status == {}
    assert cluster.writes() == [f"apply services.serving.knative.dev {NS}/sk-predictor"]
    live = cluster.object(KNATIVE_SERVICES, "sk-predictor", NS)
    assert live is not None
    assert HASH_ANNOTATION in live["metadata"]["annotations"]

    live["status"] = {"url": "http://sk-predictor.ns.example.com", "observedGeneration": 1}
    cluster.add(KNATIVE_SERVICES, live)
    status = await reconcile(cluster, reconciler, builder, make_isvc(SKLEARN))
    assert cluster.writes() == [], "server and Knative defaults must not cause a write"
    assert status == {"url": "http://sk-predictor.ns.example.com", "observedGeneration": 1}

    changed = make_isvc("predictor: {sklearn: {storageUri: gs://b/m2}}")
    status = await reconcile(cluster, reconciler, builder, changed)
    (applied,) = cluster.actions
    annotations = applied.body["spec"]["template"]["metadata"]["annotations"]
    assert annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] == "gs://b/m2"
    assert status == {"url": "http://sk-predictor.ns.example.com", "observedGeneration": 1}


async def test_reconcile_reads_namespace_runtimes_from_the_cache() -> None:
    cluster, reconciler, builder = make_cluster()
    cluster.add(SERVING_RUNTIMES, runtime("ns-runtime", "fmt", cluster=False))
    await reconcile(cluster, reconciler, builder, make_isvc("predictor: {model: {modelFormat: {name: fmt}}}"))
    (applied,) = cluster.actions
    assert applied.body["spec"]["template"]["spec"]["containers"][0]["image"] == "ns-runtime:v1"


async def test_reconcile_keeps_the_legacy_name() -> None:
    cluster, reconciler, builder = make_cluster()
    legacy = desired_knative_service(make_isvc(SKLEARN), c.PREDICTOR, runtimes=STANDARD_RUNTIMES)
    legacy["metadata"]["name"] = "sk-predictor-default"
    cluster.add(KNATIVE_SERVICES, legacy)
    await reconcile(cluster, reconciler, builder, make_isvc(SKLEARN))
    assert cluster.writes() == [f"apply services.serving.knative.dev {NS}/sk-predictor-default"]


@pytest.mark.parametrize(
    "owner", [{"uid": "someone-else"}, None], ids=["another-controller", "no-controller"]
)
async def test_reconcile_never_writes_a_knative_service_it_does_not_control(owner: Object | None) -> None:
    cluster, reconciler, builder = make_cluster()
    foreign = desired_knative_service(make_isvc(SKLEARN), c.PREDICTOR, runtimes=STANDARD_RUNTIMES)
    if owner is None:
        del foreign["metadata"]["ownerReferences"]
    else:
        foreign["metadata"]["ownerReferences"][0].update(owner)
    cluster.add(KNATIVE_SERVICES, foreign)
    with pytest.raises(NotControlled) as info:
        await reconcile(cluster, reconciler, builder, make_isvc(SKLEARN))
    assert info.value.reason == "KnativeServiceNotOwned"
    assert info.value.message == (
        f'Knative Service "{NS}/sk-predictor" already exists and is not controlled by InferenceService "sk"'
    )
    assert cluster.writes() == []


async def test_reconcile_turns_a_rejected_object_into_a_spec_error() -> None:
    cluster, reconciler, builder = make_cluster()
    message = "spec.template.spec.containers[0].ports: must be a single port"
    cluster.fail("apply", KNATIVE_SERVICES, Invalid(422, "Invalid", message))
    with pytest.raises(ComponentSpecError, match="must be a single port") as info:
        await reconcile(cluster, reconciler, builder, make_isvc(SKLEARN))
    assert info.value.reason == "InvalidSpec"


async def test_delete_only_a_knative_service_controlled_by_this_inferenceservice() -> None:
    cluster, reconciler, builder = make_cluster()
    isvc = make_isvc(SKLEARN + "\n---\n" + TRANSFORMER)
    await reconcile(cluster, reconciler, builder, isvc, c.TRANSFORMER)
    cluster.writes()
    assert await reconciler.delete(isvc, c.TRANSFORMER)
    (deleted,) = cluster.actions
    assert str(deleted) == f"delete services.serving.knative.dev {NS}/sk-transformer"
    assert deleted.body["propagationPolicy"] == "Background"
    assert deleted.body["uid"].startswith("uid-sk-transformer")
    cluster.sync()
    cluster.writes()

    other = make_isvc(SKLEARN + "\n---\n" + TRANSFORMER)
    other.metadata["uid"] = "another-uid"
    await reconcile(cluster, reconciler, builder, other, c.TRANSFORMER)
    cluster.writes()
    assert not await reconciler.delete(isvc, c.TRANSFORMER)
    assert not await reconciler.delete(isvc, c.EXPLAINER), "nothing to delete"
    assert cluster.writes() == []


async def test_runtime_default_labels_reach_the_components_built_after_the_predictor() -> None:
    """As KServe's SetRuntimeDefaults edits the InferenceService in memory, the transformer carries them."""
    cluster, reconciler, builder = make_cluster()
    cluster.add(CLUSTER_SERVING_RUNTIMES, SHIPPED["kserve-torchserve"])
    isvc = make_isvc("predictor: {pytorch: {storageUri: gs://b/m}}\n---\n" + TRANSFORMER)
    await reconcile(cluster, reconciler, builder, isvc)
    assert isvc.labels == {"serviceEnvelope": "kserve"}
    await reconcile(cluster, reconciler, builder, isvc, c.TRANSFORMER)
    transformer = cluster.object(KNATIVE_SERVICES, "sk-transformer", NS)
    assert transformer is not None
    assert transformer["metadata"]["labels"]["serviceEnvelope"] == "kserve"


BROKEN_EXPLAINERS = InferenceServicesConfig.from_configmap({"explainers": "{not json"})


def test_a_broken_explainers_key_only_concerns_a_built_in_explainer() -> None:
    builder = ComponentBuilder(make_cluster()[0].cache)
    custom = make_isvc(SKLEARN + "\n---\n" + "explainer: {containers: [{image: me/explainer:1}]}")
    builder.build(custom, c.PREDICTOR, config=BROKEN_EXPLAINERS)
    builder.build(custom, c.EXPLAINER, config=BROKEN_EXPLAINERS)
    alibi = make_isvc(SKLEARN + "\n---\n" + "explainer: {alibi: {type: AnchorTabular}}")
    builder.build(alibi, c.PREDICTOR, config=BROKEN_EXPLAINERS)
    with pytest.raises(ComponentSpecError) as info:
        builder.build(alibi, c.EXPLAINER, config=BROKEN_EXPLAINERS)
    assert info.value.reason == "InvalidConfiguration"
    assert 'key "explainers": invalid JSON' in info.value.message


MALFORMED = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterServingRuntime",
    "metadata": {"name": "broken"},
    "spec": {"supportedModelFormats": [{"name": "sklearn", "autoSelect": True, "priority": "high"}]},
}


def test_a_malformed_runtime_is_logged_once_per_version_and_named_to_its_user(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster, _, builder = make_cluster()
    cluster.add(CLUSTER_SERVING_RUNTIMES, MALFORMED)
    named = make_isvc(
        "predictor: {model: {modelFormat: {name: sklearn}, runtime: broken, storageUri: s3://b}}"
    )
    with caplog.at_level(logging.WARNING, logger="reconcilers.components"):
        for _ in range(3):
            builder.build(make_isvc(SKLEARN), c.PREDICTOR, config=CONFIG)
            with pytest.raises(ComponentSpecError) as info:
                builder.build(named, c.PREDICTOR, config=CONFIG)
        assert len(caplog.records) == 1
        assert caplog.records[0].getMessage().startswith("ClusterServingRuntime broken cannot be used:")
        assert info.value.reason == "RuntimeNotRecognized"
        assert info.value.message.startswith('ClusterServingRuntime "broken" cannot be used: spec.support')
        cluster.add(CLUSTER_SERVING_RUNTIMES, MALFORMED)
        builder.build(make_isvc(SKLEARN), c.PREDICTOR, config=CONFIG)
        assert len(caplog.records) == 2, "a new version of it is reported again"
