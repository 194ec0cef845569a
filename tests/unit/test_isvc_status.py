"""Ready explains the root cause instead of "Predictor ingress not created"; Knative conditions fold in."""

from __future__ import annotations

from typing import Any

import pytest

from apis import constants as c
from apis.inferenceservice import InferenceServiceStatus
from apis.knative import KnativeServiceStatus
from reconcilers.inferenceservice import explain_not_ready, hold_ingress_for


def status_with(
    predictor: tuple[str, str, str], ingress_reason: str = c.PREDICTOR_INGRESS_NOT_CREATED
) -> InferenceServiceStatus:
    status = InferenceServiceStatus()
    manager = status.conditions_manager()
    manager.initialize()
    state, reason, message = predictor
    if state == "False":
        manager.mark_false(c.PREDICTOR_READY, reason, message)
    else:
        manager.mark_unknown(c.PREDICTOR_READY, reason, message)
    manager.mark_false(c.INGRESS_READY, ingress_reason, "")
    return status


def test_ready_takes_the_component_failure_not_the_ingress_wait() -> None:
    status = status_with(
        ("False", "RevisionFailed", 'Revision "x-predictor-00002" failed with message: boom.')
    )
    assert status.get_condition(c.READY).reason == c.PREDICTOR_INGRESS_NOT_CREATED  # type: ignore[union-attr]
    explain_not_ready(status, [c.PREDICTOR])
    ready = status.get_condition(c.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "RevisionFailed")
    assert ready.message == 'Revision "x-predictor-00002" failed with message: boom.'
    ingress = status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert ingress.reason == c.PREDICTOR_INGRESS_NOT_CREATED


def test_unknown_component_keeps_ready_unknown_with_its_reason() -> None:
    status = status_with(
        ("Unknown", "RevisionMissing", "Configuration is waiting for a Revision to become ready.")
    )
    explain_not_ready(status, [c.PREDICTOR])
    ready = status.get_condition(c.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("Unknown", "RevisionMissing")


def test_other_ready_reasons_are_left_alone() -> None:
    status = status_with(("False", "RevisionFailed", "boom"), ingress_reason="InvalidConfiguration")
    explain_not_ready(status, [c.PREDICTOR])
    ready = status.get_condition(c.READY)
    assert ready is not None
    assert ready.reason == "InvalidConfiguration"


@pytest.mark.parametrize("bad_status", ["", "Maybe", None])
def test_a_knative_condition_without_a_known_status_is_ignored_as_kserve_ignores_it(
    bad_status: str | None,
) -> None:
    """KServe's SetCondition copies only True, False and Unknown; anything else leaves ours alone."""
    ready: dict[str, Any] = {"type": "Ready", "reason": "Odd", "message": "?"}
    if bad_status is not None:
        ready["status"] = bad_status
    ksvc = KnativeServiceStatus.from_object(
        {
            "latestCreatedRevisionName": "sk-predictor-00001",
            "conditions": [
                ready,
                {"type": "RoutesReady", "status": "True", "severity": "Error"},
                {"type": "ConfigurationsReady", "status": "Unknown", "reason": "Deploying"},
            ],
        }
    )
    assert ksvc.get_condition("Ready") is None
    status = InferenceServiceStatus()
    status.initialize_conditions()
    before = status.get_condition(c.PREDICTOR_READY)
    status.propagate_status(c.PREDICTOR, ksvc)
    assert status.get_condition(c.PREDICTOR_READY) == before
    routes = status.get_condition(c.PREDICTOR_ROUTE_READY)
    assert routes is not None
    assert routes.is_true
    deployment = status.get_condition(c.PREDICTOR_CONFIGURATION_READY)
    assert deployment is not None
    assert (deployment.status, deployment.reason) == ("Unknown", "Deploying")


def test_a_broken_explainer_holds_the_ingress_back_and_ready_says_why() -> None:
    status = InferenceServiceStatus()
    manager = status.conditions_manager()
    manager.initialize()
    manager.mark_true(c.PREDICTOR_READY)
    manager.mark_true(c.INGRESS_READY)
    manager.mark_false(c.EXPLAINER_READY, "InvalidConfiguration", 'key "explainers": broken')
    hold_ingress_for(status, c.EXPLAINER_READY)
    ingress = status.get_condition(c.INGRESS_READY)
    ready = status.get_condition(c.READY)
    assert ingress is not None
    assert ready is not None
    assert (ingress.status, ingress.reason) == ("False", c.EXPLAINER_INGRESS_NOT_CREATED)
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "InvalidConfiguration",
        'key "explainers": broken',
    )
    # A predictor problem needs no gate: PredictorReady is itself a dependent of Ready.
    other = InferenceServiceStatus()
    other.initialize_conditions()
    before = other.to_object()
    hold_ingress_for(other, c.PREDICTOR_READY)
    assert other.to_object() == before
