"""Knative ConditionSet semantics: every happiness rule, transition times, ordering, severities."""

from __future__ import annotations

import itertools

import pytest

from apis.conditions import (
    ClearTerminalConditionError,
    Condition,
    ConditionManager,
    ConditionSet,
    rfc3339_now,
    semantic_equal,
)

CS = ConditionSet.living("A", "B")


class Clock:
    """A fake clock: every call returns a new, increasing RFC 3339 time."""

    def __init__(self) -> None:
        self._ticks = itertools.count(1)

    def __call__(self) -> str:
        return f"2024-01-01T00:00:{next(self._ticks):02d}Z"


def manage(conditions: list[Condition] | None = None) -> ConditionManager:
    return CS.manage(conditions if conditions is not None else [], now=Clock())


def status(m: ConditionManager, t: str) -> str | None:
    c = m.get(t)
    return c.status if c is not None else None


def test_living_set_has_ready_as_happy_and_dedups_dependents() -> None:
    cs = ConditionSet.living("A", "B", "A", "Ready")
    assert cs.happy == "Ready"
    assert cs.dependents == ("A", "B")
    assert ConditionSet.batch("X").happy == "Succeeded"


def test_initialize_sets_happy_and_dependents_unknown_with_error_severity() -> None:
    m = manage()
    m.initialize()
    assert [(c.type, c.status, c.severity) for c in m.conditions] == [
        ("A", "Unknown", ""),
        ("B", "Unknown", ""),
        ("Ready", "Unknown", ""),
    ]


def test_initialize_with_happy_true_sets_missing_dependents_true() -> None:
    m = manage([Condition(type="Ready", status="True")])
    m.initialize()
    assert status(m, "A") == "True"
    assert status(m, "B") == "True"


def test_initialize_keeps_existing_conditions() -> None:
    m = manage([Condition(type="A", status="False", reason="r")])
    m.initialize()
    a = m.get("A")
    assert a is not None
    assert (a.status, a.reason) == ("False", "r")
    assert status(m, "Ready") == "Unknown"


def test_mark_true_on_one_dependent_is_not_enough() -> None:
    m = manage()
    m.initialize()
    m.mark_true("A")
    assert status(m, "A") == "True"
    assert status(m, "Ready") == "Unknown"
    assert not m.is_happy()


def test_mark_true_on_all_dependents_makes_happy_true() -> None:
    m = manage()
    m.initialize()
    m.mark_true("A")
    m.mark_true("B")
    assert m.is_happy()


def test_mark_true_with_missing_dependent_does_not_make_happy() -> None:
    m = manage()
    m.mark_true("A")
    assert m.get("Ready") is None
    assert not m.is_happy()


def test_mark_true_with_reason_carries_reason_to_happy() -> None:
    m = manage()
    m.mark_true("A")
    m.mark_true_with_reason("B", "AllGood", "fine")
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason, happy.message) == ("True", "AllGood", "fine")


def test_mark_false_on_dependent_makes_happy_false_with_its_reason() -> None:
    m = manage()
    m.initialize()
    m.mark_false("A", "RevisionFailed", "image pull failed")
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason, happy.message) == ("False", "RevisionFailed", "image pull failed")


def test_most_recent_false_dependent_wins() -> None:
    m = manage()
    m.initialize()
    m.mark_false("A", "First", "a")
    m.mark_false("B", "Second", "b")
    happy = m.happy()
    assert happy is not None
    assert (happy.reason, happy.message) == ("Second", "b")


def test_mark_unknown_on_dependent_makes_happy_unknown_with_its_reason() -> None:
    m = manage()
    m.mark_true("A")
    m.mark_true("B")
    m.mark_unknown("A", "Deploying", "rolling out")
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason, happy.message) == ("Unknown", "Deploying", "rolling out")


def test_false_dependent_outranks_unknown() -> None:
    m = manage()
    m.initialize()
    m.mark_false("A", "Broken", "a is broken")
    m.mark_unknown("B", "Deploying", "b in progress")
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason) == ("False", "Broken")
    assert status(m, "B") == "Unknown"


def test_mark_unknown_when_happy_not_false_but_dependent_false_marks_happy_false() -> None:
    # Happy True while A is False can only come from outside writes; knative then forces happy False
    # with the reason of the Unknown being marked.
    m = manage([Condition(type="A", status="False"), Condition(type="Ready", status="True")])
    m.mark_unknown("B", "Deploying", "b")
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason) == ("False", "Deploying")


def test_mark_true_after_false_recovers_only_when_all_true() -> None:
    m = manage()
    m.initialize()
    m.mark_false("A", "Broken", "x")
    m.mark_true("B")
    assert status(m, "Ready") == "False"
    m.mark_true("A")
    assert m.is_happy()


def test_non_dependent_conditions_do_not_touch_happy_and_get_info_severity() -> None:
    m = manage()
    m.mark_true("A")
    m.mark_true("B")
    m.mark_false("Other", "Nope", "not terminal")
    m.mark_unknown("Other2", "Maybe", "")
    assert m.is_happy()
    other = m.get("Other")
    assert other is not None
    assert other.severity == "Info"
    a = m.get("A")
    assert a is not None
    assert a.severity == ""


def test_mark_true_on_non_dependent_makes_happy_true_if_dependents_true() -> None:
    m = manage([Condition(type="A", status="True"), Condition(type="B", status="True")])
    m.mark_true("Other")
    assert m.is_happy()


def test_mark_unknown_on_happy_itself() -> None:
    m = manage()
    m.mark_true("A")
    m.mark_true("B")
    m.mark_unknown("Ready", "Reset", "")
    assert status(m, "Ready") == "Unknown"
    assert status(m, "A") == "True"


def test_mark_false_on_happy_itself_leaves_dependents() -> None:
    m = manage()
    m.initialize()
    m.mark_false("Ready", "Stopped", "stopped")
    assert status(m, "Ready") == "False"
    assert status(m, "A") == "Unknown"


def test_last_transition_time_kept_when_nothing_changes() -> None:
    m = manage()
    m.mark_false("A", "R", "m")
    first = m.get("A")
    assert first is not None
    t0 = first.last_transition_time
    m.mark_false("A", "R", "m")
    again = m.get("A")
    assert again is not None
    assert again.last_transition_time == t0


def test_last_transition_time_changes_with_reason_or_message_or_status() -> None:
    m = manage()
    m.mark_false("A", "R", "m")
    times = []
    for change in (("R2", "m"), ("R2", "m2")):
        m.mark_false("A", *change)
        c = m.get("A")
        assert c is not None
        times.append(c.last_transition_time)
    m.mark_true("A")
    c = m.get("A")
    assert c is not None
    times.append(c.last_transition_time)
    assert len(set(times)) == 3


def test_set_ignores_caller_supplied_time_and_stamps_now() -> None:
    m = manage()
    m.set(Condition(type="X", status="True", lastTransitionTime="1999-01-01T00:00:00Z"))
    c = m.get("X")
    assert c is not None
    assert c.last_transition_time == "2024-01-01T00:00:01Z"


def test_conditions_stay_sorted_by_type_and_list_identity_is_kept() -> None:
    conditions: list[Condition] = []
    m = manage(conditions)
    for t in ("Zeta", "Alpha", "Mid", "B", "A"):
        m.mark_true(t)
    assert [c.type for c in conditions] == sorted(c.type for c in conditions)
    assert conditions is m.conditions


def test_clear_removes_non_terminal_and_refuses_terminal() -> None:
    m = manage()
    m.initialize()
    m.mark_true("Extra")
    m.clear("Extra")
    assert m.get("Extra") is None
    m.clear("Missing")
    with pytest.raises(ClearTerminalConditionError):
        m.clear("A")
    with pytest.raises(ClearTerminalConditionError):
        m.clear("Ready")


def test_propagate_copies_status_reason_message() -> None:
    m = manage()
    m.initialize()
    m.propagate("A", None)
    assert status(m, "A") == "Unknown"
    m.propagate("A", Condition(type="Ready", status="False", reason="RevisionMissing", message="gone"))
    happy = m.happy()
    assert happy is not None
    assert (happy.status, happy.reason, happy.message) == ("False", "RevisionMissing", "gone")
    m.propagate("A", Condition(type="Ready", status="Unknown", reason="Deploying", message="wait"))
    a = m.get("A")
    assert a is not None
    assert (a.status, a.reason) == ("Unknown", "Deploying")
    m.propagate("A", Condition(type="Ready", status="True", reason="ignored"))
    a = m.get("A")
    assert a is not None
    assert (a.status, a.reason) == ("True", "")


def test_serialisation_omits_empty_fields_and_keeps_extras() -> None:
    c = Condition.model_validate({"type": "Ready", "status": "True", "severity": "", "custom": {"x": 1}})
    assert c.model_dump() == {"type": "Ready", "status": "True", "custom": {"x": 1}}
    info = Condition(
        type="X", status="False", severity="Info", reason="R", message="M", lastTransitionTime="t"
    )
    assert info.to_object() == {
        "type": "X",
        "status": "False",
        "severity": "Info",
        "lastTransitionTime": "t",
        "reason": "R",
        "message": "M",
    }


def test_semantic_equal_ignores_time_and_order() -> None:
    a = [Condition(type="A", status="True", lastTransitionTime="t1"), Condition(type="B", status="False")]
    b = [Condition(type="B", status="False", lastTransitionTime="t9"), Condition(type="A", status="True")]
    assert semantic_equal(a, b)
    assert not semantic_equal(a, [*b, Condition(type="C")])
    assert not semantic_equal(a, [Condition(type="A", status="True"), Condition(type="B", status="True")])
    assert not semantic_equal(
        [Condition(type="A", reason="x")],
        [Condition(type="A", reason="y")],
    )


def test_rfc3339_now_format() -> None:
    now = rfc3339_now()
    assert len(now) == 20
    assert now.endswith("Z")
    assert now[10] == "T"
