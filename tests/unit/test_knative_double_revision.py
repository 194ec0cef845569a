"""Knative v1.10.2's revision conditions from Deployment and pod statuses, row by row, without a cluster.

Each row starts from the state the double's first pass leaves (Deployment just created) and feeds one
realistic observation: the statuses kubelet, scheduler and kube-controller-manager write for that failure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from e2e.knative_double.conditions import Cond, Conditions
from e2e.knative_double.config import ScaleBounds
from e2e.knative_double.revision import (
    Autoscaler,
    Observation,
    Outcome,
    Readiness,
    deployment_ready,
    reconcile,
)

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:00:05Z"
LATER = "2024-05-01T10:11:00Z"
"""Past the default activation timeout (600 s progress deadline + 30 s) counted from T0/T1."""
USER = "kserve-container"
TIMEOUT = 630.0
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "iris-predictor-00001-deployment-5d8f" has timed out progressing.',
}
PROGRESSING = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": "updating"}
AVAILABLE = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "done"}
FORBIDDEN = (
    'pods "iris-predictor-00001-deployment-5d8f-x2" is forbidden: maximum cpu usage per Container is 100m, '
    "but limit is 1"
)
REPLICA_FAILURE = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": FORBIDDEN}


def deployment(replicas: int = 1, available: int = 0, *conditions: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-predictor-00001-deployment"},
        "spec": {"replicas": replicas},
        "status": {"availableReplicas": available, "conditions": list(conditions)},
    }


def container(
    name: str, *, state: Mapping[str, Any] | None = None, last: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "ready": False, "state": dict(state or {"running": {}})}
    if last is not None:
        out["lastState"] = dict(last)
    return out


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": {"reason": reason, "message": message} if message else {"reason": reason}}


def pod(
    name: str = "iris-predictor-00001-deployment-5d8f-abcde",
    *,
    phase: str = "Pending",
    ready: bool = False,
    scheduled: Mapping[str, Any] | None = None,
    containers: Sequence[Mapping[str, Any]] = (),
    init: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [dict(scheduled or {"type": "PodScheduled", "status": "True"})]
    if phase == "Running":
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if containers:
        status["containerStatuses"] = [dict(c) for c in containers]
    if init:
        status["initContainerStatuses"] = [dict(c) for c in init]
    return {"metadata": {"name": name}, "status": status}


RUNNING_READY = pod(phase="Running", ready=True, containers=[container(USER), container("queue-proxy")])
RUNNING_UNREADY = pod(phase="Running", containers=[container(USER), container("queue-proxy")])
PULL_BACKOFF = pod(
    containers=[
        container(
            USER, state=waiting("ImagePullBackOff", 'Back-off pulling image "kserve/sklearnserver:nope"')
        ),
        container("queue-proxy"),
    ]
)
ERR_IMAGE_PULL = pod(
    containers=[
        container(
            USER, state=waiting("ErrImagePull", 'rpc error: code = NotFound desc = failed to pull "x"')
        ),
        container("queue-proxy"),
    ]
)
CRASH_LOOP = pod(
    phase="Running",
    containers=[
        container(
            USER,
            state=waiting("CrashLoopBackOff", "back-off 10s restarting failed container"),
            last={
                "terminated": {"exitCode": 1, "reason": "Error", "message": "model not found: /mnt/models"}
            },
        ),
        container("queue-proxy"),
    ],
)
CLEAN_EXIT = pod(
    phase="Running",
    containers=[
        container(
            USER,
            state=waiting("CrashLoopBackOff"),
            last={"terminated": {"exitCode": 0, "reason": "Completed"}},
        )
    ],
)
INIT_FAILING = pod(
    init=[
        container(
            "storage-initializer",
            state=waiting("CrashLoopBackOff", "back-off 20s restarting failed container"),
            last={"terminated": {"exitCode": 1, "reason": "Error", "message": "bucket not found"}},
        )
    ],
    containers=[
        container(USER, state=waiting("PodInitializing")),
        container("queue-proxy", state=waiting("PodInitializing")),
    ],
)
UNSCHEDULABLE = pod(
    scheduled={
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu.",
    }
)
MIN_ONE = ScaleBounds(min_scale=1)
NODELESS_POD = {
    "metadata": {"name": "iris-predictor-00001-deployment-5d8f-abcde"},
    "status": {"phase": "Pending"},
}


@dataclass
class State:
    conditions: list[dict[str, Any]]
    autoscaler: Autoscaler


def observe(
    dep: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]] = (),
    *,
    now: str = T1,
    routed: bool = True,
    bounds: ScaleBounds = MIN_ONE,
    readiness: Readiness = "pods",
    owned: bool = True,
) -> Observation:
    return Observation(dep, list(pods), USER, routed, bounds, TIMEOUT, now, readiness, owned)


def created(bounds: ScaleBounds = MIN_ONE, routed: bool = True) -> State:
    outcome = reconcile([], Autoscaler(), observe(None, bounds=bounds, routed=routed, now=T0))
    return State(outcome.conditions, outcome.autoscaler)


def step(state: State, obs: Observation) -> tuple[State, Outcome]:
    outcome = reconcile(state.conditions, state.autoscaler, obs)
    return State(outcome.conditions, outcome.autoscaler), outcome


def cond(outcome: Outcome | State, type_: str) -> tuple[str, str, str]:
    for c in outcome.conditions:
        if c["type"] == type_:
            return (c["status"], c.get("reason", ""), c.get("message", ""))
    raise AssertionError(f"no {type_}")


def test_creating_the_deployment_makes_the_revision_deploying() -> None:
    outcome = reconcile([], Autoscaler(), observe(None, now=T0))
    assert cond(outcome, "Ready") == ("Unknown", "Deploying", "")
    assert cond(outcome, "ResourcesAvailable") == ("Unknown", "Deploying", "")
    assert cond(outcome, "ContainerHealthy") == ("Unknown", "Deploying", "")
    assert cond(outcome, "Active") == ("Unknown", "Deploying", "")
    assert next(c for c in outcome.conditions if c["type"] == "Active")["severity"] == "Info"
    assert outcome.replicas == 1


@dataclass(frozen=True)
class Row:
    name: str
    deployment: Mapping[str, Any]
    pods: Sequence[Mapping[str, Any]]
    ready: tuple[str, str, str]
    active: tuple[str, str, str] = (
        "Unknown",
        "Queued",
        "Requests to the target are being buffered as resources are provisioned.",
    )
    readiness: Readiness = "pods"
    extra: dict[str, tuple[str, str, str]] = field(default_factory=dict)


ROWS = [
    Row(
        "pods ready",
        deployment(1, 1, AVAILABLE),
        [RUNNING_READY],
        ("True", "", ""),
        ("True", "", ""),
        extra={"ResourcesAvailable": ("True", "", ""), "ContainerHealthy": ("True", "", "")},
    ),
    Row(
        "pod running, not ready yet",
        deployment(1, 0, PROGRESSING),
        [RUNNING_UNREADY],
        ("Unknown", "Deploying", ""),
    ),
    Row(
        "image pull back-off before the deadline",
        deployment(1, 0, PROGRESSING),
        [PULL_BACKOFF],
        ("Unknown", "Deploying", ""),
    ),
    Row(
        "image pull back-off after the deadline",
        deployment(1, 0, DEADLINE),
        [PULL_BACKOFF],
        ("False", "ImagePullBackOff", 'Back-off pulling image "kserve/sklearnserver:nope"'),
        extra={
            "ResourcesAvailable": (
                "False",
                "ImagePullBackOff",
                'Back-off pulling image "kserve/sklearnserver:nope"',
            )
        },
    ),
    Row(
        "image pull error after the deadline",
        deployment(1, 0, DEADLINE),
        [ERR_IMAGE_PULL],
        ("False", "ErrImagePull", 'rpc error: code = NotFound desc = failed to pull "x"'),
    ),
    Row(
        "crash loop: the last termination, without waiting for the deadline",
        deployment(1, 0, PROGRESSING),
        [CRASH_LOOP],
        ("False", "ExitCode1", "Container failed with: model not found: /mnt/models"),
        extra={
            "ContainerHealthy": ("False", "ExitCode1", "Container failed with: model not found: /mnt/models")
        },
    ),
    Row(
        "a clean exit without a message",
        deployment(1, 0, PROGRESSING),
        [CLEAN_EXIT],
        ("False", "ExitCode0", "Container failed with: container exited with no error"),
    ),
    Row(
        "failing init container before the deadline",
        deployment(1, 0, PROGRESSING),
        [INIT_FAILING],
        ("Unknown", "Deploying", ""),
    ),
    Row(
        "failing init container after the deadline: only the user container's PodInitializing is read",
        deployment(1, 0, DEADLINE),
        [INIT_FAILING],
        ("False", "PodInitializing", ""),
    ),
    Row(
        "unschedulable pod",
        deployment(1, 0, PROGRESSING),
        [UNSCHEDULABLE],
        ("False", "Unschedulable", "0/1 nodes are available: 1 Insufficient cpu."),
    ),
    Row(
        "pods the API server rejects",
        deployment(1, 0, PROGRESSING, REPLICA_FAILURE),
        [],
        ("False", "FailedCreate", FORBIDDEN),
    ),
    Row(
        "node-less: rejected pods",
        deployment(1, 0, PROGRESSING, REPLICA_FAILURE),
        [],
        ("False", "FailedCreate", FORBIDDEN),
        readiness="deployment",
    ),
    Row(
        "node-less: an admitted pod is ready",
        deployment(1, 0, PROGRESSING),
        [NODELESS_POD],
        ("True", "", ""),
        ("True", "", ""),
        "deployment",
    ),
    Row(
        "node-less: the progress deadline is ignored",
        deployment(1, 0, DEADLINE),
        [NODELESS_POD],
        ("True", "", ""),
        ("True", "", ""),
        "deployment",
    ),
    Row("node-less: no pod yet", deployment(1, 0), [], ("Unknown", "Deploying", ""), readiness="deployment"),
    Row(
        "pods mode: a pod without status is not ready",
        deployment(1, 0, PROGRESSING),
        [NODELESS_POD],
        ("Unknown", "Deploying", ""),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_a_first_revision_after_one_observation(row: Row) -> None:
    _state, outcome = step(created(), observe(row.deployment, row.pods, readiness=row.readiness))
    assert cond(outcome, "Ready") == row.ready
    assert cond(outcome, "Active") == row.active
    for type_, expected in row.extra.items():
        assert cond(outcome, type_) == expected
    assert outcome.replicas == 1


def test_a_failure_stays_once_the_pods_are_gone_and_activation_times_out() -> None:
    state, _ = step(created(), observe(deployment(1, 0, DEADLINE), [PULL_BACKOFF]))
    failed = cond(state, "Ready")
    state, outcome = step(state, observe(deployment(1, 0, DEADLINE), [PULL_BACKOFF], routed=False, now=T1))
    assert outcome.replicas is None, "an unrouted failed revision keeps its pods until activation times out"
    assert outcome.recheck_after is not None
    assert outcome.recheck_after > 0
    state, outcome = step(state, observe(deployment(1, 0, DEADLINE), [PULL_BACKOFF], routed=False, now=LATER))
    assert outcome.replicas == 0
    assert cond(outcome, "Active") == ("False", "TimedOut", "The target could not be activated.")
    assert cond(outcome, "Ready") == failed
    state, outcome = step(state, observe(deployment(0, 0, AVAILABLE), [], routed=False, now=LATER))
    assert cond(outcome, "Ready") == failed
    assert outcome.replicas == 0


def test_a_routed_first_revision_that_fails_keeps_min_scale_pods() -> None:
    _, outcome = step(created(), observe(deployment(1, 0, PROGRESSING), [CRASH_LOOP], now=LATER))
    assert cond(outcome, "Ready")[1] == "ExitCode1"
    assert outcome.replicas == 1


def test_a_routed_revision_with_min_scale_zero_that_never_gets_ready_times_out() -> None:
    bounds = ScaleBounds(min_scale=0)
    state = created(bounds)
    state, outcome = step(state, observe(deployment(1, 0, PROGRESSING), [RUNNING_UNREADY], bounds=bounds))
    assert outcome.replicas is None
    _, outcome = step(state, observe(deployment(1, 0, DEADLINE), [RUNNING_UNREADY], bounds=bounds, now=LATER))
    assert outcome.replicas == 0
    assert cond(outcome, "Ready") == ("False", "ProgressDeadlineExceeded", "Initial scale was never achieved")


def test_a_superseded_ready_revision_scales_to_zero_and_stays_ready() -> None:
    state, _ = step(created(), observe(deployment(1, 1, AVAILABLE), [RUNNING_READY]))
    _, outcome = step(state, observe(deployment(1, 1, AVAILABLE), [RUNNING_READY], routed=False))
    assert outcome.replicas == 0
    assert cond(outcome, "Ready") == ("True", "", "")
    assert cond(outcome, "Active") == ("False", "NoTraffic", "The target is not receiving traffic.")


def test_a_ready_revision_whose_pod_crashes_stays_ready_as_in_v1_10() -> None:
    state, _ = step(created(), observe(deployment(1, 1, AVAILABLE), [RUNNING_READY]))
    _, outcome = step(state, observe(deployment(1, 0, AVAILABLE), [CRASH_LOOP]))
    assert cond(outcome, "Ready") == ("True", "", "")
    assert cond(outcome, "Active")[1] == "Queued"


def test_an_active_revision_that_loses_its_pods_reports_its_deployments_progress_deadline() -> None:
    state, _ = step(created(), observe(deployment(1, 1, AVAILABLE), [RUNNING_READY]))
    _, outcome = step(state, observe(deployment(1, 1, DEADLINE), [RUNNING_READY]))
    assert cond(outcome, "Ready") == ("True", "", ""), "ready pods keep the autoscaler Active, which wins"
    _, outcome = step(state, observe(deployment(1, 0, DEADLINE), [RUNNING_UNREADY]))
    assert cond(outcome, "Ready") == ("False", "ProgressDeadlineExceeded", DEADLINE["message"])


def test_someone_elses_deployment_is_not_owned() -> None:
    _, outcome = step(created(), observe(deployment(1, 0), [], owned=False))
    assert cond(outcome, "Ready") == (
        "False",
        "NotOwned",
        'There is an existing Deployment "iris-predictor-00001-deployment" that we do not own.',
    )
    assert outcome.replicas is None


@pytest.mark.parametrize(
    ("bounds", "before", "after"),
    [
        (ScaleBounds(min_scale=3), 3, 3),
        (ScaleBounds(min_scale=0, initial_scale=2), 2, 1),
        (ScaleBounds(min_scale=2, max_scale=3), 2, 2),
    ],
)
def test_replicas_follow_min_initial_and_max_scale(bounds: ScaleBounds, before: int, after: int) -> None:
    outcome = reconcile([], Autoscaler(), observe(None, bounds=bounds, now=T0))
    assert outcome.replicas == before
    ready = [pod(f"p{i}", phase="Running", ready=True) for i in range(max(before, bounds.initial_scale))]
    state = State(outcome.conditions, outcome.autoscaler)
    state, outcome = step(state, observe(deployment(before, before, AVAILABLE), ready, bounds=bounds))
    assert cond(outcome, "Ready") == ("True", "", "")
    assert outcome.replicas == before, "the autoscaler sees the initial scale reached on its next pass"
    _, outcome = step(state, observe(deployment(before, before, AVAILABLE), ready, bounds=bounds))
    assert outcome.replicas == after


def test_ready_needs_the_initial_scale_of_ready_pods() -> None:
    bounds = ScaleBounds(min_scale=2)
    state = created(bounds)
    one = [pod("a", phase="Running", ready=True), pod("b", phase="Running")]
    state, outcome = step(state, observe(deployment(2, 1, PROGRESSING), one, bounds=bounds))
    assert cond(outcome, "Ready")[0] == "Unknown"
    two = [pod("a", phase="Running", ready=True), pod("b", phase="Running", ready=True)]
    _, outcome = step(state, observe(deployment(2, 2, AVAILABLE), two, bounds=bounds))
    assert cond(outcome, "Ready")[0] == "True"


def test_a_terminating_pod_is_not_ready() -> None:
    leaving = dict(RUNNING_READY, metadata={"name": "x", "deletionTimestamp": T0})
    _, outcome = step(created(), observe(deployment(1, 1, AVAILABLE), [leaving]))
    assert cond(outcome, "Ready")[0] == "Unknown"


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], ("Unknown", "", "")),
        ([AVAILABLE], ("True", "", "")),
        ([DEADLINE], ("False", "ProgressDeadlineExceeded", DEADLINE["message"])),
        ([PROGRESSING, REPLICA_FAILURE], ("False", "FailedCreate", FORBIDDEN)),
        ([REPLICA_FAILURE, DEADLINE], ("False", "ProgressDeadlineExceeded", DEADLINE["message"])),
        ([{**REPLICA_FAILURE, "status": "False"}, AVAILABLE], ("True", "", "")),
        (
            [{"type": "Progressing", "status": "Unknown", "reason": "R", "message": "m"}],
            ("Unknown", "R", "m"),
        ),
    ],
)
def test_deployment_status_is_transformed_as_knative_does(
    conditions: list[dict[str, Any]], expected: tuple[str, str, str]
) -> None:
    got = deployment_ready({"conditions": conditions}, "pods")
    assert (got.status, got.reason, got.message) == expected


def test_the_most_recently_failed_dependent_explains_ready_when_another_recovers() -> None:
    c = Conditions.load(("A", "B"), [], T0)
    c.initialize()
    c.mark_false("A", "AFailed", "a")
    c.mark_false("B", "BFailed", "b")
    c.mark_true("B")
    assert c.get("Ready") == Cond("False", "AFailed", "a")
    c.mark_true("A")
    assert c.get("Ready") == Cond("True")


def test_a_pass_that_ends_where_it_started_keeps_transition_times() -> None:
    stored = [
        {"type": "A", "status": "False", "lastTransitionTime": T0, "reason": "X", "message": "x"},
        {"type": "B", "status": "False", "lastTransitionTime": T0, "reason": "Y", "message": "y"},
        {"type": "Ready", "status": "False", "lastTransitionTime": T0, "reason": "Y", "message": "y"},
    ]
    c = Conditions.load(("A", "B"), stored, LATER)
    c.mark_false("A", "X", "x")  # Ready briefly says X ...
    c.mark_false("B", "Y", "y")  # ... and ends on Y, as stored
    assert c.to_json() == stored


def test_max_scale_caps_the_replicas() -> None:
    outcome = reconcile([], Autoscaler(), observe(None, bounds=ScaleBounds(min_scale=5, max_scale=2), now=T0))
    assert outcome.replicas == 2


def test_a_ready_revision_whose_deployment_is_deleted_stays_ready_while_it_is_made_again() -> None:
    state, _ = step(created(), observe(deployment(1, 1, AVAILABLE), [RUNNING_READY]))
    _, outcome = step(state, observe(None, [], now=LATER))
    assert cond(outcome, "Ready") == ("True", "", "")
    assert cond(outcome, "Active")[1] == "Queued"
    assert outcome.replicas == 1
