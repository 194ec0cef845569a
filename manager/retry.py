"""The one way to retry a write that lost an optimistic-concurrency race: re-read, recompute, write again.

A 409 Conflict means our copy was older than the server's. Waiting does not make it newer; reading does. So
each retry gets a fresh copy (the caller's `attempt(n)` reads from the API server when `n > 0`) and is tried
at once, without client-go's sleep between attempts. Should the object keep changing under us for every
attempt, the last Conflict is raised and the controller's rate-limited queue takes over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from manager.errors import AlreadyExists, Conflict

DEFAULT_ATTEMPTS: Final = 5
"""client-go's `retry.DefaultRetry` allows five attempts as well."""

T = TypeVar("T")


async def retry_on_conflict(attempt: Callable[[int], Awaitable[T]], *, attempts: int = DEFAULT_ATTEMPTS) -> T:
    """Await `attempt(0)`, then `attempt(1)`, ... while it raises `Conflict`; at most `attempts` calls.

    `attempt(n)` must work from a fresh read when `n > 0`. `AlreadyExists` (a 409 too) is not retried: a
    create that finds its name taken is a different problem.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for n in range(attempts - 1):
        try:
            return await attempt(n)
        except AlreadyExists:
            raise
        except Conflict:
            continue
    return await attempt(attempts - 1)
