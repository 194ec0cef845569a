"""The revisions of one Knative Service as the double remembers them, and how they are persisted.

There are no Revision objects on the local control plane (only the Service CRD is installed), so each
revision's template, its Knative conditions and its autoscaler state live in one ConfigMap
`<service>-knative-double` owned by the Service. A restarted double continues the numbering and keeps
failures that no live object shows any more (a failed revision's pods are scaled away).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from e2e.knative_double.conditions import FALSE, READY, TRUE, Cond
from e2e.knative_double.resources import child_name
from e2e.knative_double.revision import CONTAINER_HEALTHY, Autoscaler
from manager.client import Object

MAX_HISTORY = 20
"""Revisions remembered per Service (plus the latest ready one), as config-gc's min-non-active-revisions;
older ones are garbage collected with their Deployment and Services."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a revision failed: Knative's revision-level reason and the message users see."""

    reason: str
    message: str

    @classmethod
    def parse(cls, text: str) -> Failure:
        """`"<reason>: <message>"`; without a reason the reason is `RevisionFailed`."""
        reason, sep, message = text.partition(":")
        reason, message = reason.strip(), message.strip()
        if not sep or not reason or " " in reason:
            reason, message = "RevisionFailed", text.strip()
        return cls(reason, message or "failed (knative serving double)")


@dataclass(slots=True)
class Revision:
    """One revision of a Service's configuration: its template, Knative conditions and autoscaler state."""

    name: str
    generation: int
    template_hash: str
    template: Object
    conditions: list[Object] = field(default_factory=list)
    autoscaler: Autoscaler = field(default_factory=Autoscaler)
    deployed: bool = True
    """False when it never gets a Deployment (failed by the double's switch, or its creation failed)."""
    creation_error: str | None = None
    """The API server's message when it refused the revision's Deployment: Knative's webhook would have
    refused the Revision, so the Configuration reports `Revision creation failed`."""

    def condition(self, type_: str) -> Cond | None:
        for raw in self.conditions:
            if raw.get("type") == type_:
                return Cond(str(raw.get("status")), str(raw.get("reason", "")), str(raw.get("message", "")))
        return None

    @property
    def ready(self) -> bool:
        cond = self.condition(READY)
        return cond is not None and cond.status == TRUE

    @property
    def failure(self) -> Failure | None:
        """The reason and message of Ready=False, or None."""
        cond = self.condition(READY)
        if cond is None or cond.status != FALSE:
            return None
        return Failure(cond.reason, cond.message)

    def fail(self, failure: Failure, now: str) -> None:
        """Fail by the double's switch: ContainerHealthy (and so Ready) False with the given words."""
        self.conditions = [
            {
                "type": t,
                "status": FALSE,
                "lastTransitionTime": now,
                "reason": failure.reason,
                "message": failure.message,
            }
            for t in (CONTAINER_HEALTHY, READY)
        ]
        self.deployed = False

    def to_json(self) -> Object:
        out: Object = {
            "name": self.name,
            "generation": self.generation,
            "templateHash": self.template_hash,
            "template": self.template,
            "conditions": self.conditions,
            "autoscaler": self.autoscaler.to_json(),
            "deployed": self.deployed,
        }
        if self.creation_error is not None:
            out["creationError"] = self.creation_error
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Revision:
        creation = data.get("creationError")
        return cls(
            name=str(data["name"]),
            generation=int(data["generation"]),
            template_hash=str(data["templateHash"]),
            template=dict(data.get("template") or {}),
            conditions=[dict(c) for c in data.get("conditions") or []],
            autoscaler=Autoscaler.from_json(data.get("autoscaler")),
            deployed=bool(data.get("deployed", True)),
            creation_error=None if creation is None else str(creation),
        )


@dataclass(slots=True)
class History:
    """A Service's revisions, oldest first, and the version of the ConfigMap that persists them."""

    service_uid: str
    revisions: list[Revision] = field(default_factory=list)
    configmap_version: str | None = None
    configmap_exists: bool = False
    saved: str | None = None
    """The encoding last written (or read): the ConfigMap is written only when this changes."""

    @property
    def latest(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    @property
    def latest_created(self) -> Revision | None:
        """The newest revision that exists (a refused creation leaves the previous one latest)."""
        return next((r for r in reversed(self.revisions) if r.creation_error is None), None)

    @property
    def next_generation(self) -> int:
        return self.revisions[-1].generation + 1 if self.revisions else 1

    def find(self, name: str | None) -> Revision | None:
        return next((r for r in self.revisions if r.name == name and r.creation_error is None), None)

    def add(self, revision: Revision, keep: str | None) -> list[Revision]:
        """Append (replacing a namesake, as a reused bring-your-own name does) and trim to `MAX_HISTORY`,
        keeping the revision named `keep` (the latest ready one); returns the revisions dropped."""
        before = self.revisions
        self.revisions = [r for r in before if r.name != revision.name] + [revision]
        if len(self.revisions) > MAX_HISTORY:
            kept = self.revisions[-MAX_HISTORY:]
            ready = self.find(keep)
            if ready is not None and ready not in kept:
                kept.insert(0, ready)
            self.revisions = kept
        return [r for r in before if r not in self.revisions]

    def encode(self) -> str:
        return json.dumps({"revisions": [r.to_json() for r in self.revisions]}, sort_keys=True)

    @staticmethod
    def decode(text: str) -> list[Revision]:
        data = json.loads(text)
        return [Revision.from_json(r) for r in data.get("revisions") or []]


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable digest of a revision template (key order does not matter)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def revision_name(service: str, template: Mapping[str, Any], generation: int) -> str:
    """The template's own `metadata.name`, or Knative's `<service>-<generation:05d>`."""
    own = (template.get("metadata") or {}).get("name")
    return str(own) if own else child_name(service, f"-{generation:05d}")
