"""Knative's condition manager as the double needs it: which failed dependent explains `Ready`.

`apis.conditions` models knative.dev/pkg's ConditionSet for KServe's own status, where a dependent marked
True leaves the happy condition alone until every dependent is True. Knative's revision, route and service
reconcilers depend on one more rule of knative.dev/pkg (apis/condition_set.go at the commit Serving v1.10.2
pins, dfad48e): marking any condition recomputes the happy condition from the *most recently changed*
unhappy dependent (False before Unknown). Which reason a user reads on a failed revision or Service (an
exit code, an image pull error, `RevisionMissing`) hangs on that rule, so the double carries its own small
manager instead of approximating it.

Conditions are plain JSON objects (`type`, `status`, `severity` unless empty, `lastTransitionTime`,
`reason`/`message` unless empty), kept sorted by type as knative keeps them. Recency within one reconcile is
tracked by a sequence number next to the second-precision transition time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"
READY = "Ready"
SEVERITY_INFO = "Info"


@dataclass(frozen=True, slots=True)
class Cond:
    """A condition's verdict without its type and time: what one object tells another."""

    status: str
    reason: str = ""
    message: str = ""


@dataclass(slots=True)
class _Entry:
    type: str
    status: str
    severity: str
    reason: str
    message: str
    time: str
    seq: int

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.type, self.status, self.severity, self.reason, self.message)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "status": self.status}
        if self.severity:
            out["severity"] = self.severity
        out["lastTransitionTime"] = self.time
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class Conditions:
    """One object's conditions under a living condition set (happy `Ready` plus `dependents`)."""

    dependents: tuple[str, ...]
    now: str
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _previous: dict[str, _Entry] = field(default_factory=dict)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def load(cls, dependents: Iterable[str], previous: Iterable[Mapping[str, Any]], now: str) -> Conditions:
        """Start from an object's stored conditions; `now` stamps the transitions made from here on."""
        out = cls(tuple(dependents), now)
        for raw in previous:
            entry = _Entry(
                type=str(raw.get("type", "")),
                status=str(raw.get("status", UNKNOWN)),
                severity=str(raw.get("severity", "")),
                reason=str(raw.get("reason", "")),
                message=str(raw.get("message", "")),
                time=str(raw.get("lastTransitionTime", now)),
                seq=0,
            )
            out._entries[entry.type] = entry
            out._previous[entry.type] = entry
        return out

    def get(self, type_: str) -> Cond | None:
        entry = self._entries.get(type_)
        return None if entry is None else Cond(entry.status, entry.reason, entry.message)

    def status(self, type_: str) -> str | None:
        entry = self._entries.get(type_)
        return None if entry is None else entry.status

    def is_true(self, type_: str) -> bool:
        return self.status(type_) == TRUE

    def is_false(self, type_: str) -> bool:
        return self.status(type_) == FALSE

    def transition_time(self, type_: str) -> str | None:
        entry = self._entries.get(type_)
        return None if entry is None else entry.time

    def _terminal(self, type_: str) -> bool:
        return type_ == READY or type_ in self.dependents

    def _set(self, type_: str, status: str, reason: str = "", message: str = "") -> None:
        severity = "" if self._terminal(type_) else SEVERITY_INFO
        new = _Entry(type_, status, severity, reason, message, self.now, next(self._seq))
        old = self._entries.get(type_)
        if old is not None and old.key() == new.key():
            return
        self._entries[type_] = new

    def initialize(self) -> None:
        """Add a missing `Ready` (Unknown) and missing dependents (True if `Ready` is True, else Unknown)."""
        if READY not in self._entries:
            self._set(READY, UNKNOWN)
        status = TRUE if self.is_true(READY) else UNKNOWN
        for dependent in self.dependents:
            if dependent not in self._entries:
                self._set(dependent, status)

    def mark_true(self, type_: str) -> None:
        self._set(type_, TRUE)
        self._recompute(type_)

    def mark_false(self, type_: str, reason: str, message: str) -> None:
        self._set(type_, FALSE, reason, message)
        if type_ in self.dependents:
            self._set(READY, FALSE, reason, message)

    def mark_unknown(self, type_: str, reason: str, message: str) -> None:
        self._set(type_, UNKNOWN, reason, message)
        for dependent in self.dependents:
            if self.is_false(dependent):
                if not self.is_false(READY):
                    self.mark_false(READY, reason, message)
                return
        if type_ in self.dependents:
            self._set(READY, UNKNOWN, reason, message)

    def propagate(self, type_: str, cond: Cond) -> None:
        """Copy another object's verdict onto `type_` (True without reason, as knative does)."""
        if cond.status == TRUE:
            self.mark_true(type_)
        elif cond.status == FALSE:
            self.mark_false(type_, cond.reason, cond.message)
        else:
            self.mark_unknown(type_, cond.reason, cond.message)

    def _recompute(self, type_: str) -> None:
        unhappy = self._unhappy_dependent()
        if unhappy is not None:
            self._set(READY, *unhappy)
        elif type_ != READY:
            self._set(READY, TRUE)

    def _unhappy_dependent(self) -> tuple[str, str, str] | None:
        if not self.dependents:
            return None
        terminal = [e for e in self._entries.values() if e.severity == "" and e.type != READY]
        terminal.sort(key=lambda e: (e.time, e.seq), reverse=True)
        for wanted in (FALSE, UNKNOWN):
            for entry in terminal:
                if entry.status == wanted:
                    return (entry.status, entry.reason, entry.message)
        if len(self.dependents) > len(terminal):
            return (UNKNOWN, "", "")
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The conditions sorted by type; one equal to its stored self keeps its stored transition time
        (a reconcile that ends where it started changes nothing, as knative's semantic equality sees it)."""
        out = []
        for type_ in sorted(self._entries):
            entry = self._entries[type_]
            before = self._previous.get(type_)
            if before is not None and before.key() == entry.key():
                entry = before
            out.append(entry.to_json())
        return out
