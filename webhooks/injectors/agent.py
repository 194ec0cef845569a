"""The `agent` sidecar: request logger, batcher and model puller in one container (KServe's AgentInjector).

The controller marks a revision with internal annotations (`internal.serving.kserve.io/logger`,
`.../batcher`, `.../agent` for the multi-model puller); this injector adds one `agent` container serving on
9081 and, when Knative's `queue-proxy` is present, points queue-proxy's `USER_PORT` at it so traffic flows
queue-proxy -> agent -> model. The agent gets a copy of queue-proxy's env taken before that rewrite (it
needs the model's real port and Knative's probe settings); without queue-proxy (RawDeployment pods) it gets
the first container's readiness probe as `SERVING_READINESS_PROBE` (the JSON `null` when there is none, as
v0.11 sends: the agent refuses to start without the variable, and reports not ready with "no probe found"),
and `USER_PORT` is left alone since there is nothing to point at it: the raw Service targets the agent's
port itself. Argument order, names, port and probe follow v0.11.

Differences from v0.11: without a user securityContext the agent gets the restricted profile (`security`);
a puller pod without the `configVolumeName` annotation is an admission error instead of a broken volume.
Idempotent: an existing `agent` container skips the injector, and every edit it makes happens together
with adding that container.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from apis.config import BatcherConfig, InferenceServicesConfig, LoggerConfig
from apis.constants import (
    AGENT_ANNOTATION,
    AGENT_CONTAINER_NAME,
    AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION,
    AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION,
    AGENT_MODEL_DIR_ANNOTATION,
    BATCHER_ANNOTATION,
    BATCHER_MAX_BATCH_SIZE_ANNOTATION,
    BATCHER_MAX_LATENCY_ANNOTATION,
    COMPONENT_LABEL,
    INFERENCE_SERVICE_CONTAINER_NAME,
    INFERENCE_SERVICE_LABEL,
    LOGGER_ANNOTATION,
    LOGGER_MODE_ANNOTATION,
    LOGGER_SINK_URL_ANNOTATION,
    QUEUE_PROXY_CONTAINER_NAME,
)
from webhooks.injectors.credentials import CredentialInjector
from webhooks.injectors.pod import (
    Container,
    MutationError,
    Pod,
    containers,
    ensure_mount,
    ensure_volume,
    find_container,
    get_annotations,
    get_labels,
    set_existing_env,
)
from webhooks.injectors.security import injected_security_context
from webhooks.json_patch import copy_json

AGENT_PORT = 9081
AGENT_PORT_NAME = "agent-port"
DEFAULT_COMPONENT_PORT = "8080"
ENDPOINT_LABEL = "endpoint"
USER_PORT_ENV = "USER_PORT"
READINESS_PROBE_ENV = "SERVING_READINESS_PROBE"
MODEL_CONFIG_VOLUME_NAME = "model-config"
MODEL_DIR_VOLUME_NAME = "model-dir"
DEFAULT_MODEL_CONFIG_DIR = "/mnt/configs"
DEFAULT_MODEL_DIR = "/mnt/models"
DEFAULT_LOG_MODE = "all"


def _batcher_args(pod_annotations: Mapping[str, str], config: BatcherConfig) -> list[str]:
    args = ["--enable-batcher"]
    size = pod_annotations.get(BATCHER_MAX_BATCH_SIZE_ANNOTATION, config.max_batch_size)
    if size is not None:
        args += ["--max-batchsize", size]
    latency = pod_annotations.get(BATCHER_MAX_LATENCY_ANNOTATION, config.max_latency)
    if latency is not None:
        args += ["--max-latency", latency]
    return args


def _logger_args(pod: Pod, namespace: str, config: LoggerConfig) -> list[str]:
    pod_annotations = get_annotations(pod)
    pod_labels = get_labels(pod)
    return [
        "--log-url",
        pod_annotations.get(LOGGER_SINK_URL_ANNOTATION, config.default_url),
        "--source-uri",
        (pod.get("metadata") or {}).get("name") or "",
        "--log-mode",
        pod_annotations.get(LOGGER_MODE_ANNOTATION, DEFAULT_LOG_MODE),
        "--inference-service",
        pod_labels.get(INFERENCE_SERVICE_LABEL, ""),
        "--namespace",
        namespace,
        "--endpoint",
        pod_labels.get(ENDPOINT_LABEL, ""),
        "--component",
        pod_labels.get(COMPONENT_LABEL, ""),
    ]


def _component_port_args(pod: Pod) -> list[str]:
    """`--component-port <first port of kserve-container, else 8080>`; nothing without a kserve-container."""
    model = find_container(pod, INFERENCE_SERVICE_CONTAINER_NAME)
    if model is None:
        return []
    ports = model.get("ports") or []
    return ["--component-port", str(ports[0]["containerPort"]) if ports else DEFAULT_COMPONENT_PORT]


def agent_requested(pod: Pod) -> bool:
    """Whether any of the logger, batcher or puller annotations asks for the agent."""
    pod_annotations = get_annotations(pod)
    return any(key in pod_annotations for key in (LOGGER_ANNOTATION, BATCHER_ANNOTATION, AGENT_ANNOTATION))


async def inject_agent(
    pod: Pod,
    namespace: str,
    config: InferenceServicesConfig,
    credentials: CredentialInjector,
) -> None:
    """Add the `agent` sidecar; the `logger`/`batcher` keys are read only when those modes are requested."""
    pod_annotations = get_annotations(pod)
    if not agent_requested(pod) or find_container(pod, AGENT_CONTAINER_NAME) is not None:
        return
    puller = AGENT_ANNOTATION in pod_annotations
    config_volume = pod_annotations.get(AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION)
    if puller and not config_volume:
        raise MutationError(
            f'annotation "{AGENT_ANNOTATION}" (model puller) requires the annotation '
            f'"{AGENT_MODEL_CONFIG_VOLUME_NAME_ANNOTATION}"'
        )
    agent = config.agent()
    model_dir = pod_annotations.get(AGENT_MODEL_DIR_ANNOTATION, DEFAULT_MODEL_DIR)
    config_dir = pod_annotations.get(AGENT_MODEL_CONFIG_MOUNT_PATH_ANNOTATION, DEFAULT_MODEL_CONFIG_DIR)
    args: list[str] = []
    if puller:
        args += ["--enable-puller", "--config-dir", config_dir, "--model-dir", model_dir]
    if BATCHER_ANNOTATION in pod_annotations:
        args += _batcher_args(pod_annotations, config.batcher())
    if LOGGER_ANNOTATION in pod_annotations:
        args += _logger_args(pod, namespace, config.logger())
    args += _component_port_args(pod)

    first = containers(pod)[0]
    queue_proxy = find_container(pod, QUEUE_PROXY_CONTAINER_NAME)
    env: list[dict[str, Any]]
    if queue_proxy is not None:
        env = copy_json(queue_proxy.get("env") or [])
    else:
        # `null` without a probe, as v0.11 marshals a nil pointer: the agent requires the variable.
        probe = json.dumps(first.get("readinessProbe"), separators=(",", ":"))
        env = [{"name": READINESS_PROBE_ENV, "value": probe}]
    security_context = injected_security_context(pod, first)
    container: Container = {
        "name": AGENT_CONTAINER_NAME,
        "image": agent.image,
        "args": args,
        "ports": [{"name": AGENT_PORT_NAME, "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": agent.resources(),
        "securityContext": security_context,
        "readinessProbe": {
            "httpGet": {
                "path": "/",
                "port": AGENT_PORT,
                "scheme": "HTTP",
                "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
            },
            "timeoutSeconds": 1,
            "periodSeconds": 10,
            "successThreshold": 1,
            "failureThreshold": 3,
        },
    }
    if puller:
        assert config_volume is not None
        ensure_volume(pod, {"name": MODEL_DIR_VOLUME_NAME, "emptyDir": {}})
        ensure_volume(pod, {"name": MODEL_CONFIG_VOLUME_NAME, "configMap": {"name": config_volume}})
        ensure_mount(container, {"name": MODEL_DIR_VOLUME_NAME, "mountPath": model_dir})
        ensure_mount(container, {"name": MODEL_CONFIG_VOLUME_NAME, "mountPath": config_dir})
        model = find_container(pod, INFERENCE_SERVICE_CONTAINER_NAME)
        if model is not None:
            ensure_mount(model, {"name": MODEL_DIR_VOLUME_NAME, "mountPath": model_dir})
    await credentials.inject_service_account_credentials(pod, namespace, container)
    if queue_proxy is not None:
        set_existing_env(queue_proxy, USER_PORT_ENV, str(AGENT_PORT))
    containers(pod).append(container)
