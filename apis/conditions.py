"""Status conditions with knative's ConditionSet semantics.

KServe's user-visible status (`kubectl get isvc` READY, the reasons users read when something is stuck) is
produced by knative.dev/pkg's condition manager, so this module reproduces its rules rather than inventing
ours:

- A set has one *happy* condition (`Ready` for a living set) and *dependents*; both are "terminal" and carry
  the Error severity (`""`), every other condition type is written with severity `Info`.
- `set` keeps `lastTransitionTime` when nothing but the time would change and keeps the list sorted by type,
  so re-running a reconcile produces a byte-identical status (which is what lets us skip status writes).
- `mark_false(dependent)` makes the happy condition False with the same reason and message, so the most
  recently failed dependent explains why the resource is not Ready.
- `mark_unknown(dependent)` makes the happy condition Unknown with that reason, unless some dependent is
  False: then the happy condition is (or stays) False.
- `mark_true(x)` makes the happy condition True only when every dependent is True.
- `mark_*` on a condition outside the set only touches that condition (and `mark_unknown` still makes the
  happy condition False when a dependent is False, as knative does).

Conditions live in a plain `list[Condition]` owned by a status model; a `ConditionManager` edits that list in
place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

ConditionStatus = Literal["True", "False", "Unknown"]
ConditionSeverity = Literal["", "Warning", "Info"]

TRUE: ConditionStatus = "True"
FALSE: ConditionStatus = "False"
UNKNOWN: ConditionStatus = "Unknown"

SEVERITY_ERROR: ConditionSeverity = ""
SEVERITY_WARNING: ConditionSeverity = "Warning"
SEVERITY_INFO: ConditionSeverity = "Info"

READY = "Ready"
"""The happy condition of a living condition set."""

SUCCEEDED = "Succeeded"
"""The happy condition of a batch condition set."""


def rfc3339_now() -> str:
    """The current time as Kubernetes serialises `metav1.Time` (second precision, UTC, `Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(BaseModel):
    """One entry of `status.conditions` (knative's `apis.Condition`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str
    status: ConditionStatus = UNKNOWN
    severity: ConditionSeverity = SEVERITY_ERROR
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")
    reason: str = ""
    message: str = ""

    @property
    def is_true(self) -> bool:
        return self.status == TRUE

    @property
    def is_false(self) -> bool:
        return self.status == FALSE

    @property
    def is_unknown(self) -> bool:
        return self.status == UNKNOWN

    @model_serializer(mode="plain")
    def to_object(self) -> dict[str, Any]:
        """The JSON form: empty severity, reason and message are omitted, as knative's omitempty does."""
        out: dict[str, Any] = {"type": self.type, "status": self.status}
        if self.severity:
            out["severity"] = self.severity
        if self.last_transition_time is not None:
            out["lastTransitionTime"] = self.last_transition_time
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        if self.model_extra:
            out.update(self.model_extra)
        return out

    def same_as(self, other: Condition) -> bool:
        """Equal in everything but `lastTransitionTime` (knative's VolatileTime is ignored by equality)."""
        return _key(self) == _key(other)


def _key(c: Condition) -> tuple[Any, ...]:
    extra = tuple(sorted((c.model_extra or {}).items(), key=lambda kv: kv[0]))
    return (c.type, c.status, c.severity, c.reason, c.message, repr(extra))


def semantic_equal(a: Sequence[Condition], b: Sequence[Condition]) -> bool:
    """Whether two condition lists are equal ignoring `lastTransitionTime` and order."""
    if len(a) != len(b):
        return False
    return sorted(map(_key, a)) == sorted(map(_key, b))


class ConditionSet:
    """The happy condition and the dependents that decide it (knative `NewLivingConditionSet`)."""

    def __init__(self, happy: str, dependents: Sequence[str]) -> None:
        self.happy = happy
        self.dependents: tuple[str, ...] = tuple(d for d in dict.fromkeys(dependents) if d != happy)

    @classmethod
    def living(cls, *dependents: str) -> ConditionSet:
        """A set whose happy condition is `Ready`."""
        return cls(READY, dependents)

    @classmethod
    def batch(cls, *dependents: str) -> ConditionSet:
        """A set whose happy condition is `Succeeded`."""
        return cls(SUCCEEDED, dependents)

    def is_terminal(self, condition_type: str) -> bool:
        """Whether the type is the happy condition or one of its dependents."""
        return condition_type == self.happy or condition_type in self.dependents

    def severity(self, condition_type: str) -> ConditionSeverity:
        """Error (`""`) for terminal conditions, Info for everything else."""
        return SEVERITY_ERROR if self.is_terminal(condition_type) else SEVERITY_INFO

    def manage(
        self, conditions: list[Condition], *, now: Callable[[], str] | None = None
    ) -> ConditionManager:
        """A manager editing `conditions` in place; `now` supplies transition times (RFC 3339)."""
        return ConditionManager(self, conditions, now or rfc3339_now)

    def __repr__(self) -> str:
        return f"ConditionSet(happy={self.happy!r}, dependents={list(self.dependents)!r})"


class ClearTerminalConditionError(ValueError):
    """Terminal conditions (the happy one and its dependents) can not be cleared."""


class ConditionManager:
    """Reads and edits one list of conditions according to a `ConditionSet`."""

    def __init__(self, condition_set: ConditionSet, conditions: list[Condition], now: Callable[[], str]):
        self.condition_set = condition_set
        self.conditions = conditions
        self._now = now

    def get(self, condition_type: str) -> Condition | None:
        """The condition of that type, or None."""
        for c in self.conditions:
            if c.type == condition_type:
                return c
        return None

    def happy(self) -> Condition | None:
        """The happy (top-level) condition, or None before `initialize`."""
        return self.get(self.condition_set.happy)

    def is_happy(self) -> bool:
        """Whether the happy condition is present and True."""
        c = self.happy()
        return c is not None and c.is_true

    def set(self, condition: Condition) -> None:
        """Replace the condition of that type; keep its transition time if nothing else changed."""
        existing = self.get(condition.type)
        if existing is not None and existing.same_as(condition):
            return
        stamped = condition.model_copy(update={"last_transition_time": self._now()})
        rest = [c for c in self.conditions if c.type != condition.type]
        rest.append(stamped)
        rest.sort(key=lambda c: c.type)
        self.conditions[:] = rest

    def clear(self, condition_type: str) -> None:
        """Remove a non-terminal condition; clearing a terminal one is an error (as in knative)."""
        if self.condition_set.is_terminal(condition_type):
            raise ClearTerminalConditionError(
                f"clearing terminal condition {condition_type!r} is not allowed"
            )
        self.conditions[:] = [c for c in self.conditions if c.type != condition_type]

    def initialize(self) -> None:
        """Add missing terminal conditions: Unknown, or True when the happy condition is already True."""
        cs = self.condition_set
        happy = self.happy()
        if happy is None:
            happy = Condition(type=cs.happy, status=UNKNOWN, severity=SEVERITY_ERROR)
            self.set(happy)
        status = TRUE if happy.is_true else UNKNOWN
        for t in cs.dependents:
            if self.get(t) is None:
                self.set(Condition(type=t, status=status, severity=SEVERITY_ERROR))

    def _condition(
        self, condition_type: str, status: ConditionStatus, reason: str, message: str
    ) -> Condition:
        return Condition(
            type=condition_type,
            status=status,
            severity=self.condition_set.severity(condition_type),
            reason=reason,
            message=message,
        )

    def mark_true(self, condition_type: str, reason: str = "", message: str = "") -> None:
        """Set True; the happy condition becomes True (with this reason) once every dependent is True."""
        cs = self.condition_set
        self.set(self._condition(condition_type, TRUE, reason, message))
        for t in cs.dependents:
            c = self.get(t)
            if c is None or not c.is_true:
                return
        self.set(self._condition(cs.happy, TRUE, reason, message))

    def mark_true_with_reason(self, condition_type: str, reason: str, message: str) -> None:
        """`mark_true` with an explicit reason and message (knative `MarkTrueWithReason`)."""
        self.mark_true(condition_type, reason, message)

    def mark_false(self, condition_type: str, reason: str, message: str) -> None:
        """Set False; a dependent also makes the happy condition False with the same reason and message."""
        cs = self.condition_set
        self.set(self._condition(condition_type, FALSE, reason, message))
        if condition_type in cs.dependents:
            self.set(self._condition(cs.happy, FALSE, reason, message))

    def mark_unknown(self, condition_type: str, reason: str, message: str) -> None:
        """Set Unknown; the happy condition follows unless some dependent is False (then it is False)."""
        cs = self.condition_set
        self.set(self._condition(condition_type, UNKNOWN, reason, message))
        for t in cs.dependents:
            c = self.get(t)
            if c is not None and c.is_false:
                happy = self.happy()
                if happy is None or not happy.is_false:
                    self.mark_false(cs.happy, reason, message)
                return
        if condition_type in cs.dependents:
            self.set(self._condition(cs.happy, UNKNOWN, reason, message))

    def propagate(self, condition_type: str, source: Condition | None) -> None:
        """Copy another object's condition onto `condition_type` (KServe's `SetCondition`).

        None leaves the condition unchanged; True is marked without reason; False and Unknown carry the
        source's reason and message, so the happy condition explains itself.
        """
        if source is None:
            return
        if source.is_true:
            self.mark_true(condition_type)
        elif source.is_false:
            self.mark_false(condition_type, source.reason, source.message)
        else:
            self.mark_unknown(condition_type, source.reason, source.message)
