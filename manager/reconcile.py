"""What a reconciler is: a key in, a `Result` out.

Reconciles are level-based (controller-runtime's model): a `Request` carries only the object's namespace and
name, never the event that caused it, so the reconciler always reads the current state from the cache and
converges on it. Deletions are noticed because the object is gone. Requeueing is data (`Result.requeue_after`)
and failure is an exception (see `manager.errors`), so a reconciler never sleeps or loops to retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, order=True)
class Request:
    """The key of one object to reconcile; hashable so the work queue can de-duplicate it."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Result:
    """What to do after a successful reconcile: nothing, or reconcile again after `requeue_after` seconds."""

    requeue_after: float | None = None


class Reconciler(Protocol):
    """Converges the world towards the desired state of one object."""

    async def reconcile(self, request: Request) -> Result:
        """Reconcile one key; raise to retry with backoff, `TerminalError` to give up."""
        ...
