"""Ready explains the root cause instead of "Predictor ingress not created"."""

from __future__ import annotations

from apis import constants as c
from apis.inferenceservice import InferenceServiceStatus
from reconcilers.inferenceservice import explain_not_ready


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
