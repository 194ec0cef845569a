"""A revision's Knative conditions from its Deployment and pods: Knative Serving v1.10.2's revision
reconciler and the part of its autoscaler (KPA) that decides readiness and scale, as pure functions.

Sources (knative/serving tag knative-v1.10.2, commit 500756c):

* `pkg/reconciler/revision/reconcile_resources.go` `reconcileDeployment`: a new Deployment makes
  ResourcesAvailable and ContainerHealthy Unknown/`Deploying`; the Deployment's status is propagated only
  while the revision is Active (`IsActivationRequired`); when the Deployment wants pods but has none
  available, the first pod explains why: `PodScheduled=False` (its reason and message), the user
  container's last termination (`ExitCode<n>`, `Container failed with: <message>`, or `container exited
  with no error`), or, once the Deployment is past its progress deadline, the user container's waiting
  reason and message (`ImagePullBackOff`, `ErrImagePull`, `CreateContainerConfigError`, and
  `PodInitializing` with an empty message while an init container such as KServe's storage-initializer
  keeps failing: init container statuses are never read).
* `pkg/apis/serving/k8s_lifecycle.go` `TransformDeploymentStatus` and `revision_lifecycle.go`
  `PropagateDeploymentStatus` / `PropagateAutoscalerStatus` (`ProgressDeadlineExceeded: Initial scale was
  never achieved` when activation times out).
* `pkg/reconciler/autoscaling/kpa/kpa.go` `computeActiveCondition` / `activeThreshold`, `scaler.go`
  (`applyBounds`, initial scale, scale to zero after `progress deadline + 30 s` of failed activation),
  `pkg/apis/autoscaling/v1alpha1/pa_lifecycle.go` `ScaleBounds` (min-scale ignored when unreachable),
  `pkg/reconciler/revision/resources/pa.go` (reachability), `pkg/resources/pods.go` (ready pods).

Deliberate differences, each because the double has no activator or metrics pipeline:

* A Deployment `ReplicaFailure` (pods the API server rejects: a webhook, a quota, a LimitRange) always
  fails the revision with the Deployment's reason and message (`FailedCreate: pods "..." is forbidden:
  ...`). v1.10.2 shows it only when its informer race lets it (knative/serving#9857, #13708) and otherwise
  `ProgressDeadlineExceeded` much later; upstream made it deterministic in #14453 (commit d3127e9).
* No traffic is modelled: a routed revision keeps `max(min-scale, 1)` replicas (Knative scales a
  min-scale-0 revision to zero after a minute without requests); an unrouted revision is scaled to zero at
  once (Knative waits the stable window and grace period, about 90 s), except that one still activating
  keeps its pods until its activation times out, as in Knative.
* Node-less readiness (`READINESS_DEPLOYMENT`): on a control plane without kubelets pods never run, so a
  pod that exists (the API server admitted it) counts as ready and the Deployment's Progressing condition
  is ignored (its deadline would otherwise fail every revision).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from e2e.knative_double.conditions import FALSE, READY, TRUE, UNKNOWN, Cond, Conditions
from e2e.knative_double.config import ScaleBounds

RESOURCES_AVAILABLE = "ResourcesAvailable"
CONTAINER_HEALTHY = "ContainerHealthy"
ACTIVE = "Active"
REVISION_DEPENDENTS = (RESOURCES_AVAILABLE, CONTAINER_HEALTHY)

Readiness = Literal["pods", "deployment"]
READINESS_PODS: Readiness = "pods"
READINESS_DEPLOYMENT: Readiness = "deployment"
READINESS_MODES: tuple[Readiness, ...] = (READINESS_PODS, READINESS_DEPLOYMENT)

DEPLOYING = "Deploying"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
INITIAL_SCALE_NEVER_ACHIEVED = "Initial scale was never achieved"
NOT_OWNED = "NotOwned"
QUEUED = Cond(UNKNOWN, "Queued", "Requests to the target are being buffered as resources are provisioned.")
NO_TRAFFIC = Cond(FALSE, "NoTraffic", "The target is not receiving traffic.")
TIMED_OUT = Cond(FALSE, "TimedOut", "The target could not be activated.")
ACTIVE_TRUE = Cond(TRUE)

Reachability = Literal["Reachable", "Unreachable", "Unknown"]
KEEP = -1
"""`want` when the autoscaler leaves the Deployment's replicas as they are."""


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Kubernetes writes it."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Autoscaler:
    """What the double remembers of a revision's PodAutoscaler: its Active verdict and since when, and
    whether the initial scale was reached once (`ScaleTargetInitialized`)."""

    active: Cond = field(default_factory=lambda: Cond(UNKNOWN))
    since: str = ""
    initialized: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "active": {
                "status": self.active.status,
                "reason": self.active.reason,
                "message": self.active.message,
            },
            "since": self.since,
            "initialized": self.initialized,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Autoscaler:
        if not data:
            return cls()
        active = data.get("active") or {}
        return cls(
            Cond(
                str(active.get("status", UNKNOWN)),
                str(active.get("reason", "")),
                str(active.get("message", "")),
            ),
            str(data.get("since", "")),
            bool(data.get("initialized", False)),
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What the revision reconciler sees in one pass."""

    deployment: Mapping[str, Any] | None
    """The live Deployment, or None when the double is creating it in this pass."""
    pods: Sequence[Mapping[str, Any]]
    """The revision's pods (label `serving.knative.dev/revision`)."""
    serving_container: str
    routed: bool
    """The route sends (or, for a Service's first revision, will send) traffic to it: routing state active."""
    bounds: ScaleBounds
    activation_timeout: float
    now: str
    readiness: Readiness = READINESS_PODS
    owned: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    conditions: list[dict[str, Any]]
    autoscaler: Autoscaler
    replicas: int | None
    """The Deployment's replicas; None leaves them as they are."""
    recheck_after: float | None = None
    """Seconds until the verdict may change without any watched object changing (an activation timeout)."""


def deployment_ready(status: Mapping[str, Any], readiness: Readiness) -> Cond:
    """`TransformDeploymentStatus`: the Deployment's Progressing and ReplicaFailure conditions folded into
    one verdict, in the order the Deployment lists them (node-less: Progressing counts as True)."""
    c = Conditions.load(("Progressing", "ReplicaSetReady"), (), "")
    c.initialize()
    c.mark_true("ReplicaSetReady")
    for cond in status.get("conditions") or []:
        kind, state = cond.get("type"), cond.get("status")
        reason, message = str(cond.get("reason", "")), str(cond.get("message", ""))
        if kind == "Progressing":
            if readiness == READINESS_DEPLOYMENT or state == TRUE:
                c.mark_true("Progressing")
            elif state == FALSE:
                c.mark_false("Progressing", reason, message)
            else:
                c.mark_unknown("Progressing", reason, message)
        elif kind == "ReplicaFailure":
            if state == TRUE:
                c.mark_false("ReplicaSetReady", reason, message)
            elif state == FALSE:
                c.mark_true("ReplicaSetReady")
            else:
                c.mark_unknown("ReplicaSetReady", reason, message)
    ready = c.get(READY)
    return ready if ready is not None else Cond(UNKNOWN)


def replica_failure(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "ReplicaFailure" and c.get("status") == TRUE for c in status.get("conditions") or []
    )


def timed_out(status: Mapping[str, Any]) -> bool:
    """`hasDeploymentTimedOut`: Progressing=False with reason ProgressDeadlineExceeded."""
    return any(
        c.get("type") == "Progressing"
        and c.get("status") == FALSE
        and c.get("reason") == PROGRESS_DEADLINE_EXCEEDED
        for c in status.get("conditions") or []
    )


def _pod_ready(pod: Mapping[str, Any], readiness: Readiness) -> bool:
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    if readiness == READINESS_DEPLOYMENT:
        return True
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == TRUE for c in status.get("conditions") or [])


def ready_pods(pods: Sequence[Mapping[str, Any]], readiness: Readiness) -> int:
    return sum(1 for p in pods if _pod_ready(p, readiness))


def _explain_pods(
    c: Conditions, deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], name: str
) -> None:
    """The Deployment wants pods and has none available: the first pod (by name, as the API lists them)
    says why."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    if (
        int(spec.get("replicas", 1) or 0) <= 0
        or int(status.get("availableReplicas", 0) or 0) != 0
        or not pods
    ):
        return
    pod = sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", "")))[0]
    pod_status = pod.get("status") or {}
    for cond in pod_status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == FALSE:
            c.mark_false(RESOURCES_AVAILABLE, str(cond.get("reason", "")), str(cond.get("message", "")))
            break
    for container in pod_status.get("containerStatuses") or []:
        if container.get("name") != name:
            continue
        terminated = (container.get("lastState") or {}).get("terminated")
        waiting = (container.get("state") or {}).get("waiting")
        if terminated:
            code = int(terminated.get("exitCode", 0) or 0)
            message = str(terminated.get("message", ""))
            if code == 0 and not message:
                message = "container exited with no error"
            c.mark_false(CONTAINER_HEALTHY, f"ExitCode{code}", f"Container failed with: {message}")
        elif waiting is not None and timed_out(status):
            c.mark_false(RESOURCES_AVAILABLE, str(waiting.get("reason", "")), str(waiting.get("message", "")))
        break


def reachability(c: Conditions, routed: bool) -> Reachability:
    """`MakePA`'s reachability: a failed revision nobody routes to is unreachable; one still activating is
    unknown; otherwise its routing state decides."""
    if c.is_false(READY) and not routed:
        return "Unreachable"
    if c.status(ACTIVE) in (None, UNKNOWN):
        return "Unknown"
    return "Reachable" if routed else "Unreachable"


def _desired_scale(
    pa: Autoscaler, reach: Reachability, bounds: ScaleBounds, now: float, timeout: float
) -> tuple[int, float | None]:
    """The scaler's decision without traffic: (want, seconds until an activation timeout)."""
    low = bounds.min_scale if reach != "Unreachable" else 0
    if bounds.initial_scale > 1 and not pa.initialized:
        low = max(low, bounds.initial_scale)
    desired = min(low, bounds.max_scale) if bounds.max_scale and low > bounds.max_scale else low
    if desired > 0:
        return desired, None
    if pa.active.status == UNKNOWN:
        started = parse_time(pa.since) if pa.since else now
        if now - started >= timeout:
            return 0, None
        return KEEP, started + timeout - now
    if reach == "Unreachable":
        return 0, None
    return 1, None


def _active(pa: Autoscaler, want: int, ready: int, min_ready: int) -> Cond:
    """`computeActiveCondition`."""
    inactive = pa.active.status == FALSE
    activating = pa.active.status == UNKNOWN
    if want == 0 or min_ready == 0:
        return TIMED_OUT if activating and min_ready > 0 else NO_TRAFFIC
    if ready < min_ready:
        return QUEUED if want > 0 or not inactive else NO_TRAFFIC
    if want > 0 or not inactive:
        return ACTIVE_TRUE
    return pa.active


def reconcile(previous: Sequence[Mapping[str, Any]], pa: Autoscaler, obs: Observation) -> Outcome:
    """One pass of Knative's revision reconciler plus its autoscaler over `obs`."""
    now = parse_time(obs.now)
    c = Conditions.load(REVISION_DEPENDENTS, previous, obs.now)
    c.initialize()
    bounds = obs.bounds
    if obs.deployment is None:
        c.mark_unknown(RESOURCES_AVAILABLE, DEPLOYING, "")
        c.mark_unknown(CONTAINER_HEALTHY, DEPLOYING, "")
        if not pa.since:  # the PodAutoscaler is created in this pass too: it has no status yet
            c.mark_unknown(ACTIVE, DEPLOYING, "")
            fresh = Autoscaler(Cond(UNKNOWN), obs.now, False)
            want, _ = _desired_scale(fresh, reachability(c, obs.routed), bounds, now, obs.activation_timeout)
            replicas = want if want > 0 else bounds.initial_scale
            return Outcome(c.to_json(), fresh, replicas, obs.activation_timeout)
    elif not obs.owned:
        name = str((obs.deployment.get("metadata") or {}).get("name", ""))
        c.mark_false(
            RESOURCES_AVAILABLE, NOT_OWNED, f'There is an existing Deployment "{name}" that we do not own.'
        )
        return Outcome(c.to_json(), pa, None)
    else:
        status = obs.deployment.get("status") or {}
        if replica_failure(status):
            c.propagate(RESOURCES_AVAILABLE, deployment_ready(status, obs.readiness))
        else:
            active = c.get(ACTIVE)
            if active is None or active.status == TRUE:
                c.propagate(RESOURCES_AVAILABLE, deployment_ready(status, obs.readiness))
            _explain_pods(c, obs.deployment, obs.pods, obs.serving_container)

    reach = reachability(c, obs.routed)
    ready = ready_pods(obs.pods, obs.readiness)
    min_scale = bounds.min_scale if reach != "Unreachable" else 0
    min_ready = max(min_scale, 1 if pa.initialized else bounds.initial_scale)
    want, recheck = _desired_scale(pa, reach, bounds, now, obs.activation_timeout)
    initialized = pa.initialized or ready >= min_ready
    verdict = _active(pa, want, ready, min_ready)
    since = pa.since if verdict == pa.active and pa.since else obs.now
    new_pa = replace(pa, active=verdict, since=since, initialized=initialized)

    unavailable = c.is_false(RESOURCES_AVAILABLE)
    if initialized and not unavailable:
        c.mark_true(RESOURCES_AVAILABLE)
        c.mark_true(CONTAINER_HEALTHY)
    if verdict.status == UNKNOWN:
        c.mark_unknown(ACTIVE, verdict.reason, verdict.message)
    elif verdict.status == FALSE:
        if not initialized and not unavailable:
            c.mark_false(RESOURCES_AVAILABLE, PROGRESS_DEADLINE_EXCEEDED, INITIAL_SCALE_NEVER_ACHIEVED)
        c.mark_false(ACTIVE, verdict.reason, verdict.message)
    else:
        c.mark_true(ACTIVE)
        c.mark_true(RESOURCES_AVAILABLE)
        c.mark_true(CONTAINER_HEALTHY)
    if verdict.status != UNKNOWN:
        recheck = None
    # A Deployment made again (someone deleted it) starts at the initial scale, as MakeDeployment's does.
    keep = bounds.initial_scale if obs.deployment is None else None
    return Outcome(c.to_json(), new_pa, keep if want == KEEP else want, recheck)
