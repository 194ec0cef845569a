"""The Deployment of a RawDeployment component, and what its status says about the component.

In RawDeployment mode a component runs as a plain Deployment named like the component (`<isvc>-predictor`,
or the legacy `<isvc>-predictor-default` while a Service of that name exists). KServe v0.11 shapes it in a
particular way, and since users read and select on it, this builder does exactly the same:

- the Deployment and its pods carry the component's labels and annotations plus `app: isvc.<name>`, which
  is also the selector (and the Service's);
- KServe writes the API server's defaults itself (DNS policy, restart policy, grace period, scheduler, an
  empty pod securityContext, termination-message fields, `IfNotPresent` pulls, a RollingUpdate strategy of
  25%/25%, 10 old ReplicaSets, a 600 s progress deadline), so `IfNotPresent` holds even for `:latest`;
- `kserve-container` without a readiness probe gets a TCP probe on its first port (8080 without ports);
- `replicas` is never set: the HPA (or an external autoscaler) owns it, and server-side apply then leaves
  it alone. The HPA's `minReplicas` is how `minReplicas` is honoured.

The component's Ready condition is the Deployment's `Available` condition (True without reason; False or
Unknown with the Deployment controller's reason and message); a Deployment that has no such condition yet
leaves it as it was (KServe `PropagateRawStatus`). When it is not available and one of the component's pods
says why (`pod_failure`: unschedulable, an image that cannot be pulled, a container or init container that
keeps failing), the condition carries the pod's reason and message instead of the Deployment controller's
`MinimumReplicasUnavailable`, which names no cause (a deliberate difference, listed in README).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from apis import constants as c
from apis.conditions import Condition
from apis.inferenceservice import InferenceService
from apis.resources import DEPLOYMENTS
from manager.client import Object
from reconcilers.components import Component

DEFAULT_HTTP_PORT: Final = 8080
"""The model server's port when its container declares none (KServe `InferenceServiceDefaultHttpPort`)."""
AVAILABLE: Final = "Available"
REVISION_ANNOTATION: Final = "deployment.kubernetes.io/revision"
"""Set by the Deployment controller; KServe reports it as the component's latestCreatedRevision."""

_POD_DEFAULTS: Final[Mapping[str, Any]] = {
    "dnsPolicy": "ClusterFirst",
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 30,
    "securityContext": {},
    "schedulerName": "default-scheduler",
}
_CONTAINER_DEFAULTS: Final[Mapping[str, Any]] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}


def component_metadata(isvc: InferenceService, built: Component) -> Object:
    """Name, namespace, labels (with `app`), annotations and the controller reference of every raw child."""
    labels = {**built.labels, c.RAW_APP_LABEL: c.raw_app_label(built.name)}
    meta: Object = {"name": built.name, "namespace": isvc.namespace, "labels": labels}
    if built.annotations:
        meta["annotations"] = dict(built.annotations)
    meta["ownerReferences"] = [isvc.owner_reference()]
    return meta


def _readiness_probe(container: Mapping[str, Any]) -> Object:
    ports = container.get("ports") or []
    port = ports[0].get("containerPort", DEFAULT_HTTP_PORT) if ports else DEFAULT_HTTP_PORT
    return {
        "tcpSocket": {"port": port},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def _with_pod_defaults(pod_spec: Mapping[str, Any]) -> Object:
    spec: Object = {**pod_spec}
    for key, value in _POD_DEFAULTS.items():
        if spec.get(key) in (None, ""):
            spec[key] = value
    containers = []
    for original in spec.get("containers") or []:
        container = dict(original)
        for key, value in _CONTAINER_DEFAULTS.items():
            if not container.get(key):
                container[key] = value
        if container.get("name") == c.INFERENCE_SERVICE_CONTAINER_NAME and not container.get(
            "readinessProbe"
        ):
            container["readinessProbe"] = _readiness_probe(container)
        containers.append(container)
    spec["containers"] = containers
    return spec


def desired_deployment(isvc: InferenceService, built: Component) -> Object:
    """The Deployment of one built component, as KServe v0.11 creates it (see the module docstring)."""
    meta = component_metadata(isvc, built)
    template_meta: Object = {"name": built.name, "namespace": isvc.namespace, "labels": dict(meta["labels"])}
    if built.annotations:
        template_meta["annotations"] = dict(built.annotations)
    return {
        "apiVersion": DEPLOYMENTS.api_version,
        "kind": DEPLOYMENTS.kind,
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {c.RAW_APP_LABEL: c.raw_app_label(built.name)}},
            "template": {"metadata": template_meta, "spec": _with_pod_defaults(built.pod_spec)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }


def available_condition(deployment: Mapping[str, Any]) -> Condition | None:
    """The Deployment's `Available` condition as an InferenceService condition source, or None."""
    for condition in (deployment.get("status") or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == AVAILABLE:
            status = condition.get("status")
            if status not in ("True", "False", "Unknown"):
                return None
            return Condition(
                type=AVAILABLE,
                status=status,
                reason=str(condition.get("reason") or ""),
                message=str(condition.get("message") or ""),
            )
    return None


_STARTING: Final = frozenset({"ContainerCreating", "PodInitializing"})
"""Waiting reasons of a container that is on its way, not failing."""


def pod_failure(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """Why the component's pods do not run, as (reason, message) in the scheduler's or kubelet's words.

    The first pod by name that cannot be scheduled or has a container (init containers first) waiting for a
    reason other than starting, or terminated with a non-zero exit code; None when no pod says why. A crash
    loop is told by its last exit rather than by the back-off delay, which grows on every restart.
    """
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name") or "")):
        name = str((pod.get("metadata") or {}).get("name") or "")
        status = pod.get("status") or {}
        for condition in status.get("conditions") or ():
            unscheduled = condition.get("type") == "PodScheduled" and condition.get("status") == "False"
            if unscheduled and condition.get("reason"):
                return str(condition["reason"]), f'pod "{name}": {condition.get("message") or ""}'
        for key in ("initContainerStatuses", "containerStatuses"):
            for container in status.get(key) or ():
                failure = _container_failure(name, container)
                if failure is not None:
                    return failure
    return None


def _container_failure(pod: str, container: Mapping[str, Any]) -> tuple[str, str] | None:
    where = f'container "{container.get("name")}" of pod "{pod}"'
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = waiting.get("reason")
    if reason and reason not in _STARTING:
        last = (container.get("lastState") or {}).get("terminated") or {}
        if reason == c.STATE_REASON_CRASH_LOOP_BACK_OFF and last:
            return str(reason), f"{where} keeps failing: {_exit(last)}"
        return str(reason), f"{where}: {waiting.get('message') or reason}"
    terminated = state.get("terminated") or {}
    if terminated and terminated.get("exitCode", 0) != 0:
        return str(terminated.get("reason") or "Error"), f"{where} failed: {_exit(terminated)}"
    return None


def _exit(terminated: Mapping[str, Any]) -> str:
    text = f"exit code {terminated.get('exitCode')}"
    message = str(terminated.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def revision(deployment: Mapping[str, Any]) -> str | None:
    """The Deployment controller's revision number of the live Deployment, if it has set one."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(REVISION_ANNOTATION)
    return value if isinstance(value, str) else None
