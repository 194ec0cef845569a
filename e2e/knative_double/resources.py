"""The Kubernetes objects Knative Serving v1.10.2 makes for a revision, as pure functions of the revision.

Sources (knative/serving at tag knative-v1.10.2, commit 500756c; knative/networking e5d04e8):

* revision: `pkg/reconciler/configuration/resources/revision.go` (name `<config>-<generation:05d>` or the
  template's, labels), `pkg/apis/serving/v1/revision_defaults.go` (webhook defaults: container names,
  timeout 300 s, the serving container's default TCP readiness probe, read-only non-emptyDir mounts).
* Deployment: `pkg/reconciler/revision/resources/deploy.go`, `meta.go`, `queue.go`, `env_var.go`,
  `names/names.go`: `<rev>-deployment`, the revision's labels plus `serving.knative.dev/revision`,
  `serving.knative.dev/revisionUID` and `app`, selector on the revision UID, `maxUnavailable: 0`,
  `progressDeadlineSeconds`, `terminationGracePeriodSeconds` = the revision timeout; the user containers
  (the serving one gets port `user-port`, env `PORT`, its HTTP/TCP readiness probe moved to queue-proxy,
  its liveness probe pointed at the user port) with `K_REVISION`, `K_CONFIGURATION`, `K_SERVICE`, a preStop
  hook on queue-proxy's `/wait-for-drain`, `FallbackToLogsOnError`; then the `queue-proxy` container.
* Services: `pkg/reconciler/serverlessservice/resources/services.go`: the private `<rev>-private` selects the
  pods; the public `<rev>` has no selector and its Endpoints copy the private ones' serving ports, which is
  what Knative does in serve mode (and always without activator endpoints, as here).

The user's containers are otherwise copied as the template has them: KServe's pod webhook mutates the pods
at admission. There are no Revision, Configuration, PodAutoscaler or ServerlessService objects (their CRDs
are not installed), so every object is owned by the Knative Service and the UIDs Knative would take from
the Revision and Configuration are derived from the Service's UID.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from e2e.knative_double.config import SYSTEM_NAMESPACE, DeploymentConfig
from manager.client import Object, Resource

KSVC = Resource("serving.knative.dev", "v1", "services", "Service")
"""Knative Serving's Service (`ksvc`)."""
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")

SERVICE_LABEL = "serving.knative.dev/service"
SERVICE_UID_LABEL = "serving.knative.dev/serviceUID"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
CONFIGURATION_UID_LABEL = "serving.knative.dev/configurationUID"
CONFIGURATION_GENERATION_LABEL = "serving.knative.dev/configurationGeneration"
REVISION_LABEL = "serving.knative.dev/revision"
REVISION_UID_LABEL = "serving.knative.dev/revisionUID"
APP_LABEL = "app"
SKS_LABEL = "networking.internal.knative.dev/serverlessservice"
SERVICE_TYPE_LABEL = "networking.internal.knative.dev/serviceType"
METRIC_ANNOTATION = "autoscaling.knative.dev/metric"
EXCLUDED_LABELS = ("serving.knative.dev/route", "serving.knative.dev/routingState")
EXCLUDED_ANNOTATIONS = (
    "serving.knative.dev/lastPinned",
    "serving.knative.dev/no-gc",
    "serving.knative.dev/routingStateModified",
    "serving.knative.dev/routes",
)

QUEUE_CONTAINER = "queue-proxy"
DEFAULT_USER_CONTAINER = "user-container"
USER_PORT_NAME = "user-port"
DEFAULT_USER_PORT = 8080
QUEUE_HTTP_PORT = 8012
QUEUE_H2C_PORT = 8013
QUEUE_HTTPS_PORT = 8112
QUEUE_ADMIN_PORT = 8022
AUTOSCALING_METRICS_PORT = 9090
USER_METRICS_PORT = 9091
DRAIN_PATH = "/wait-for-drain"
DEFAULT_TIMEOUT_SECONDS = 300
LOCALHOST = "127.0.0.1"
PROBE_HEADER = "K-Network-Probe"
KUBELET_PROBE_HEADER = "K-Kubelet-Probe"
QUEUE_NAME = "queue"
METRICS_DOMAIN = "knative.dev/internal/serving"
REQUEST_LOG_TEMPLATE = (
    '{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", '
    '"requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": '
    '"{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": '
    '"{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": '
    '"{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, '
    '"traceId": "{{index .Request.Header "X-B3-Traceid"}}"}'
)
"""knative.dev/pkg's default request-log template (config-observability ships only an `_example`)."""

REVISION_ONLY_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)
"""Fields of a revision template's spec that are Knative's, not the Pod's."""

_MAX_NAME = 63


def child_name(parent: str, suffix: str) -> str:
    """Knative's `kmeta.ChildName`: `parent + suffix`, with `parent` shortened by an md5 when the result
    would exceed 63 characters."""
    if len(parent) + len(suffix) <= _MAX_NAME:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    head = _MAX_NAME - len(suffix) - len(digest)
    if head <= 0:
        return hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
    return parent[:head] + digest + suffix


def deployment_name(revision: str) -> str:
    return child_name(revision, "-deployment")


def private_service_name(revision: str) -> str:
    return child_name(revision, "-private")


def derived_uid(ksvc_uid: str, kind: str, name: str) -> str:
    """A stable stand-in for the UID of an object the double does not create (Revision, Configuration)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ksvc_uid}/{kind}/{name}"))


def owner_reference(ksvc: Mapping[str, Any]) -> Object:
    meta = ksvc["metadata"]
    return {
        "apiVersion": KSVC.api_version,
        "kind": KSVC.kind,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def with_revision_defaults(template: Mapping[str, Any]) -> Object:
    """The revision template after Knative's defaulting webhook (only the defaults that shape the pods)."""
    out = copy.deepcopy(dict(template))
    spec: Object = out.setdefault("spec", {})
    if not spec.get("timeoutSeconds"):
        spec["timeoutSeconds"] = DEFAULT_TIMEOUT_SECONDS
    spec.setdefault("containerConcurrency", 0)
    containers: list[Object] = spec.setdefault("containers", [])
    taken = {c.get("name") for c in [*containers, *(spec.get("initContainers") or [])] if c.get("name")}
    suffix = 0
    for container in containers:
        if container.get("name"):
            continue
        name = DEFAULT_USER_CONTAINER
        if len(containers) > 1 or name in taken:
            while True:
                name = child_name(DEFAULT_USER_CONTAINER, f"-{suffix}")
                suffix += 1
                if name not in taken:
                    break
        container["name"] = name
        taken.add(name)
    writable = {
        v.get("name") for v in spec.get("volumes") or [] if "emptyDir" in v or "persistentVolumeClaim" in v
    }
    for container in containers:
        if len(containers) == 1 or container.get("ports"):
            probe: Object = container.setdefault("readinessProbe", {})
            if not any(k in probe for k in ("tcpSocket", "httpGet", "exec")):
                probe["tcpSocket"] = {"port": 0}
            if not probe.get("successThreshold"):
                probe["successThreshold"] = 1
            if probe.get("periodSeconds"):
                probe.setdefault("failureThreshold", 3)
                probe.setdefault("timeoutSeconds", 1)
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in writable:
                mount["readOnly"] = True
    if "enableServiceLinks" not in spec:
        spec["enableServiceLinks"] = False
    return out


def serving_container(spec: Mapping[str, Any]) -> Object:
    """Knative's `GetContainer`: the only container, or the first one with ports."""
    containers = list(spec.get("containers") or [])
    if len(containers) == 1:
        return dict(containers[0])
    return next((dict(c) for c in containers if c.get("ports")), {})


def user_port(spec: Mapping[str, Any]) -> int:
    ports = serving_container(spec).get("ports") or []
    if ports and ports[0].get("containerPort"):
        return int(ports[0]["containerPort"])
    return DEFAULT_USER_PORT


def is_h2c(spec: Mapping[str, Any]) -> bool:
    ports = serving_container(spec).get("ports") or []
    return bool(ports) and ports[0].get("name") == "h2c"


def _env(name: str, value: str) -> Object:
    # Go omits an empty value; writing it would make the live object differ from ours forever.
    return {"name": name, "value": value} if value else {"name": name}


def _field_env(name: str, path: str, api_version: str | None = None) -> Object:
    ref: Object = {"fieldPath": path}
    if api_version:
        ref["apiVersion"] = api_version
    return {"name": name, "valueFrom": {"fieldRef": ref}}


class RevisionMeta:
    """What the objects of one revision are named and labelled with."""

    def __init__(self, ksvc: Mapping[str, Any], name: str, generation: int, template: Mapping[str, Any]):
        meta = ksvc["metadata"]
        self.service = str(meta["name"])
        self.namespace = str(meta["namespace"])
        self.service_uid = str(meta.get("uid", ""))
        self.name = name
        self.generation = generation
        self.template = with_revision_defaults(template)
        self.uid = derived_uid(self.service_uid, "Revision", name)
        self.configuration_uid = derived_uid(self.service_uid, "Configuration", self.service)
        self.owner = owner_reference(ksvc)

    @property
    def spec(self) -> Object:
        spec: Object = self.template["spec"]
        return spec

    @property
    def annotations(self) -> dict[str, str]:
        raw = (self.template.get("metadata") or {}).get("annotations") or {}
        return {str(k): str(v) for k, v in raw.items()}

    def labels(self) -> dict[str, str]:
        """`makeLabels`: the revision's labels (template + Knative's) without routing labels, plus
        revision, revisionUID and `app` unless the template sets one."""
        raw = (self.template.get("metadata") or {}).get("labels") or {}
        labels = {str(k): str(v) for k, v in raw.items() if k not in EXCLUDED_LABELS}
        labels.update(
            {
                CONFIGURATION_LABEL: self.service,
                SERVICE_LABEL: self.service,
                CONFIGURATION_GENERATION_LABEL: str(self.generation),
                CONFIGURATION_UID_LABEL: self.configuration_uid,
                SERVICE_UID_LABEL: self.service_uid,
                REVISION_LABEL: self.name,
                REVISION_UID_LABEL: self.uid,
            }
        )
        labels.setdefault(APP_LABEL, self.name)
        return labels

    def deployment_annotations(self) -> dict[str, str]:
        return {k: v for k, v in self.annotations.items() if k not in EXCLUDED_ANNOTATIONS}

    def selector(self) -> dict[str, str]:
        return {REVISION_UID_LABEL: self.uid}


def _user_containers(meta: RevisionMeta) -> list[Object]:
    spec = meta.spec
    containers = [copy.deepcopy(c) for c in spec.get("containers") or []]
    port = user_port(spec)
    knative_env = [
        _env("K_REVISION", meta.name),
        _env("K_CONFIGURATION", meta.service),
        _env("K_SERVICE", meta.service),
    ]
    out = []
    for container in containers:
        serving = bool(container.get("ports")) or len(containers) == 1
        env = list(container.get("env") or [])
        if serving:
            container["ports"] = [{"name": USER_PORT_NAME, "containerPort": port}]
            env.append(_env("PORT", str(port)))
        container["env"] = [*env, *knative_env]
        container["lifecycle"] = {"preStop": {"httpGet": {"port": QUEUE_ADMIN_PORT, "path": DRAIN_PATH}}}
        container.pop("stdin", None)
        container.pop("tty", None)
        container.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
        if serving:
            readiness = container.get("readinessProbe") or {}
            if "httpGet" in readiness or "tcpSocket" in readiness:
                container.pop("readinessProbe", None)
            liveness = container.get("livenessProbe")
            if liveness and "httpGet" in liveness:
                liveness["httpGet"]["port"] = port
                headers = list(liveness["httpGet"].get("httpHeaders") or [])
                liveness["httpGet"]["httpHeaders"] = [
                    *headers,
                    {"name": KUBELET_PROBE_HEADER, "value": QUEUE_NAME},
                ]
            elif liveness and "tcpSocket" in liveness:
                liveness["tcpSocket"]["port"] = port
        out.append(container)
    return out


def encode_probe(probe: Mapping[str, Any], port: int) -> str:
    """SERVING_READINESS_PROBE: the user's readiness probe aimed at 127.0.0.1:`port` (exec becomes TCP),
    as compact JSON in Go's field order (handler, then the timing fields)."""
    handler: Object
    if "httpGet" in probe:
        get = dict(probe["httpGet"])
        get["host"] = LOCALHOST
        get["port"] = port
        get.setdefault("scheme", "HTTP")
        get["httpHeaders"] = [
            *(get.get("httpHeaders") or []),
            {"name": KUBELET_PROBE_HEADER, "value": QUEUE_NAME},
        ]
        handler = {
            "httpGet": {k: get[k] for k in ("path", "port", "host", "scheme", "httpHeaders") if k in get}
        }
    else:
        handler = {"tcpSocket": {"port": port, "host": LOCALHOST}}
    values = dict(probe)
    if (values.get("periodSeconds") or 0) > 0 and (values.get("timeoutSeconds") or 0) < 1:
        values["timeoutSeconds"] = 1
    timing = {
        k: values[k]
        for k in (
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
            "terminationGracePeriodSeconds",
        )
        if values.get(k)
    }
    return json.dumps({**handler, **timing}, separators=(",", ":"))


def queue_container(meta: RevisionMeta, config: DeploymentConfig) -> Object:
    """`makeQueueContainer` with the defaults of Knative's shipped ConfigMaps (logging, observability,
    tracing and features carry only `_example` data in serving-core.yaml)."""
    spec = meta.spec
    port = user_port(spec)
    serving_port = QUEUE_H2C_PORT if is_h2c(spec) else QUEUE_HTTP_PORT
    user_probe = serving_container(spec).get("readinessProbe")
    probe_json = ""
    readiness: Object | None = None
    if user_probe is not None:
        probe_port = port
        for handler in ("httpGet", "tcpSocket"):
            explicit = (user_probe.get(handler) or {}).get("port")
            if isinstance(explicit, int) and explicit:
                probe_port = explicit
        probe_json = encode_probe(user_probe, probe_port)
        readiness = {k: v for k, v in user_probe.items() if k not in ("httpGet", "tcpSocket", "exec", "grpc")}
        readiness["httpGet"] = {
            "port": serving_port,
            "httpHeaders": [{"name": PROBE_HEADER, "value": QUEUE_NAME}],
        }
    env = [
        _env("SERVING_NAMESPACE", meta.namespace),
        _env("SERVING_SERVICE", meta.service),
        _env("SERVING_CONFIGURATION", meta.service),
        _env("SERVING_REVISION", meta.name),
        _env("QUEUE_SERVING_PORT", str(serving_port)),
        _env("QUEUE_SERVING_TLS_PORT", str(QUEUE_HTTPS_PORT)),
        _env("CONTAINER_CONCURRENCY", str(int(spec.get("containerConcurrency") or 0))),
        _env("REVISION_TIMEOUT_SECONDS", str(int(spec.get("timeoutSeconds") or 0))),
        _env(
            "REVISION_RESPONSE_START_TIMEOUT_SECONDS", str(int(spec.get("responseStartTimeoutSeconds") or 0))
        ),
        _env("REVISION_IDLE_TIMEOUT_SECONDS", str(int(spec.get("idleTimeoutSeconds") or 0))),
        _field_env("SERVING_POD", "metadata.name"),
        _field_env("SERVING_POD_IP", "status.podIP"),
        _env("SERVING_LOGGING_CONFIG", ""),
        _env("SERVING_LOGGING_LEVEL", ""),
        _env("SERVING_REQUEST_LOG_TEMPLATE", REQUEST_LOG_TEMPLATE),
        _env("SERVING_ENABLE_REQUEST_LOG", "false"),
        _env("SERVING_REQUEST_METRICS_BACKEND", "prometheus"),
        _env("TRACING_CONFIG_BACKEND", "none"),
        _env("TRACING_CONFIG_ZIPKIN_ENDPOINT", ""),
        _env("TRACING_CONFIG_DEBUG", "false"),
        _env("TRACING_CONFIG_SAMPLE_RATE", "0.1"),
        _env("USER_PORT", str(port)),
        _env("SYSTEM_NAMESPACE", SYSTEM_NAMESPACE),
        _env("METRICS_DOMAIN", METRICS_DOMAIN),
        _env("SERVING_READINESS_PROBE", probe_json),
        _env("ENABLE_PROFILING", "false"),
        _env("SERVING_ENABLE_PROBE_REQUEST_LOG", "false"),
        _env("METRICS_COLLECTOR_ADDRESS", ""),
        _field_env("HOST_IP", "status.hostIP", "v1"),
        _env("ENABLE_HTTP2_AUTO_DETECTION", "false"),
        _env("ROOT_CA", ""),
    ]
    container: Object = {
        "name": QUEUE_CONTAINER,
        "image": config.queue_sidecar_image,
        "ports": [
            {"name": "http-queueadm", "containerPort": QUEUE_ADMIN_PORT},
            {"name": "http-autometric", "containerPort": AUTOSCALING_METRICS_PORT},
            {"name": "http-usermetric", "containerPort": USER_METRICS_PORT},
            {"name": "queue-port", "containerPort": serving_port},
            {"name": "https-port", "containerPort": QUEUE_HTTPS_PORT},
        ],
        "env": env,
        "resources": copy.deepcopy(config.queue_resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if readiness is not None:
        container["readinessProbe"] = readiness
    return container


def make_deployment(
    meta: RevisionMeta, config: DeploymentConfig, *, replicas: int, progress_deadline: float
) -> Object:
    """`MakeDeployment` for the revision, with `replicas` chosen by the caller's autoscaler model."""
    spec = meta.spec
    pod_spec: Object = {k: copy.deepcopy(v) for k, v in spec.items() if k not in REVISION_ONLY_FIELDS}
    pod_spec["containers"] = [*_user_containers(meta), queue_container(meta, config)]
    pod_spec["terminationGracePeriodSeconds"] = int(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
    labels = meta.labels()
    annotations = meta.deployment_annotations()
    template_meta: Object = {"labels": dict(labels)}
    if annotations:
        template_meta["annotations"] = dict(annotations)
    metadata: Object = {
        "name": deployment_name(meta.name),
        "namespace": meta.namespace,
        "labels": labels,
        "ownerReferences": [meta.owner],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": DEPLOYMENTS.api_version,
        "kind": DEPLOYMENTS.kind,
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": meta.selector()},
            "progressDeadlineSeconds": int(progress_deadline),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def _sks_metadata(meta: RevisionMeta, name: str, service_type: str) -> Object:
    labels = {**meta.labels(), SKS_LABEL: meta.name, SERVICE_TYPE_LABEL: service_type}
    out: Object = {
        "name": name,
        "namespace": meta.namespace,
        "labels": labels,
        "ownerReferences": [meta.owner],
    }
    metric = meta.annotations.get(METRIC_ANNOTATION)
    if metric is not None:
        out["annotations"] = {METRIC_ANNOTATION: metric}
    return out


def _port_name(meta: RevisionMeta) -> str:
    return "http2" if is_h2c(meta.spec) else "http"


def make_private_service(meta: RevisionMeta) -> Object:
    """`<rev>-private`: selects the revision's pods; HTTP(S), metrics, admin and the `-istio` port."""
    target = QUEUE_H2C_PORT if is_h2c(meta.spec) else QUEUE_HTTP_PORT
    name = _port_name(meta)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _sks_metadata(meta, private_service_name(meta.name), "Private"),
        "spec": {
            "ports": [
                {"name": name, "protocol": "TCP", "port": 80, "targetPort": target},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": QUEUE_HTTPS_PORT},
                {
                    "name": "http-autometric",
                    "protocol": "TCP",
                    "port": AUTOSCALING_METRICS_PORT,
                    "targetPort": "http-autometric",
                },
                {
                    "name": "http-usermetric",
                    "protocol": "TCP",
                    "port": USER_METRICS_PORT,
                    "targetPort": "http-usermetric",
                },
                {
                    "name": "http-queueadm",
                    "protocol": "TCP",
                    "port": QUEUE_ADMIN_PORT,
                    "targetPort": QUEUE_ADMIN_PORT,
                },
                {"name": f"{name}-istio", "protocol": "TCP", "port": target, "targetPort": target},
            ],
            "selector": meta.selector(),
        },
    }


def make_public_service(meta: RevisionMeta) -> Object:
    """`<rev>`: no selector; its Endpoints are written by the double."""
    h2c = is_h2c(meta.spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _sks_metadata(meta, meta.name, "Public"),
        "spec": {
            "ports": [
                {
                    "name": _port_name(meta),
                    "protocol": "TCP",
                    "port": 81 if h2c else 80,
                    "targetPort": QUEUE_H2C_PORT if h2c else QUEUE_HTTP_PORT,
                },
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": QUEUE_HTTPS_PORT},
            ],
        },
    }


def make_public_endpoints(meta: RevisionMeta, private: Mapping[str, Any]) -> Object:
    """The public Endpoints: the private Endpoints' subsets keeping only the serving and HTTPS ports."""
    target = QUEUE_H2C_PORT if is_h2c(meta.spec) else QUEUE_HTTP_PORT
    subsets = []
    for subset in private.get("subsets") or []:
        kept = dict(subset)
        ports = [p for p in subset.get("ports") or [] if p.get("port") in (target, QUEUE_HTTPS_PORT)]
        if ports:
            kept["ports"] = ports
        else:
            kept.pop("ports", None)
        subsets.append(kept)
    body: Object = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": _sks_metadata(meta, meta.name, "Public"),
    }
    if subsets:
        body["subsets"] = subsets
    return body
