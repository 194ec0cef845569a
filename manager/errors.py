"""The runtime's error taxonomy.

Two families live here. `ApiError` and its subclasses describe what the Kubernetes API server answered, so
callers branch on a type (`except NotFound`) rather than on status integers scattered through the code. The
reconcile-outcome errors (`TerminalError`) tell the controller how to treat a failed reconcile: everything
else is retried with backoff, a 409 conflict is retried quietly, and a terminal error is counted and dropped.
`ConfigurationError` is for start-up problems the user must fix (bad kubeconfig, port in use): the CLI turns
it into one line on stderr and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import json
from typing import Any


class ConfigurationError(Exception):
    """A start-up problem the user must fix; printed as one line, never as a traceback."""


class ApiError(Exception):
    """A non-2xx answer from the API server (or no answer at all: `status` 0)."""

    def __init__(self, status: int, reason: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @classmethod
    def from_response(cls, status: int, text: str) -> ApiError:
        """Build the most specific subclass from a status code and the API server's Status body."""
        body: dict[str, Any] = {}
        try:
            parsed = json.loads(text) if text else {}
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or text.strip()[:500] or "no message")
        klass = _BY_STATUS.get(status, ApiError)
        if status == 409 and reason == "AlreadyExists":
            klass = AlreadyExists
        return klass(status, reason, message, body)


class NotFound(ApiError):
    """404: the object (or its namespace, or the resource type) does not exist."""


class Conflict(ApiError):
    """409: a stale resourceVersion; re-read and retry."""


class AlreadyExists(Conflict):
    """409 with reason AlreadyExists: a create of a name that is taken."""


class Forbidden(ApiError):
    """403: RBAC denies the call."""


class Unauthorized(ApiError):
    """401: the credentials were rejected."""


class Gone(ApiError):
    """410: the resourceVersion is too old (expired watch); list again."""


class Invalid(ApiError):
    """422: the object failed validation."""


class ServerUnavailable(ApiError):
    """The API server did not answer (connection refused, timeout) or answered 5xx/429."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: ServerUnavailable,
    500: ServerUnavailable,
    502: ServerUnavailable,
    503: ServerUnavailable,
    504: ServerUnavailable,
}


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix: logged and counted, never re-queued.

    The object is reconciled again only when something about it changes (a new event).
    """
