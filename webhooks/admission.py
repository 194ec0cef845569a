"""Typed AdmissionReview requests and responses, and the helpers every admission handler answers with.

The API server speaks `admission.k8s.io/v1` or `v1beta1` (same shape) and insists that the answer carries
the request's uid and is in the version it asked for; the server (`webhooks/server.py`) takes care of both,
so handlers only build an `AdmissionResponse` with `allowed`, `denied`, `errored` or
`patch_response_from_raw` (and `wrong_kind` for a request routed to the wrong handler).

Mutations are answered with an RFC 6902 JSON Patch computed by the `jsonpatch` library between the object as
received and the mutated object (controller-runtime's `PatchResponseFromRaw`). The diff base is a byte
snapshot of `request.object` taken before any handler runs (`AdmissionRequest.raw_object`), so a handler
that edits `request.object` in place, or decodes it into a typed model that drops or reorders fields, cannot
corrupt the patch. The snapshot is a compact re-encoding of the decoded JSON, which is value-for-value what
the API server sent (non-standard constants such as `NaN` are rejected at decode time).

Reviews nested deeper than `MAX_NESTING` levels are refused at decode time. Go decodes 10,000 levels; the
handlers here (deep copies, JSON Patch diffs, recursive merges) recurse a few Python frames per level, and
at 600-900 levels they hit the interpreter's recursion limit. No Kubernetes object comes near 100 levels
(a pod's deepest paths, in its affinity terms, nest about a dozen).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jsonpatch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic.alias_generators import to_camel

AdmissionVersion = Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
ADMISSION_V1: AdmissionVersion = "admission.k8s.io/v1"
ADMISSION_V1BETA1: AdmissionVersion = "admission.k8s.io/v1beta1"
SUPPORTED_VERSIONS: tuple[AdmissionVersion, ...] = (ADMISSION_V1, ADMISSION_V1BETA1)
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]

SNAPSHOT_CONTEXT = "snapshot_object"
"""Validation-context key: False skips `AdmissionRequest.raw_object`."""

MAX_NESTING = 100
"""The deepest nesting of objects and arrays accepted in an AdmissionReview (the review itself is level 1)."""

_MODEL_CONFIG = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)


class GroupVersionKind(BaseModel):
    """`request.kind` / `request.requestKind`."""

    model_config = _MODEL_CONFIG

    group: str = ""
    version: str
    kind: str


class GroupVersionResource(BaseModel):
    """`request.resource` / `request.requestResource`."""

    model_config = _MODEL_CONFIG

    group: str = ""
    version: str
    resource: str


class UserInfo(BaseModel):
    """Who made the request (`authentication.k8s.io/v1` UserInfo)."""

    model_config = _MODEL_CONFIG

    username: str = ""
    uid: str = ""
    groups: list[str] = Field(default_factory=list)
    extra: dict[str, list[str]] = Field(default_factory=dict)


class AdmissionRequest(BaseModel):
    """What the API server asks us to admit."""

    model_config = _MODEL_CONFIG

    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str | None = None
    request_kind: GroupVersionKind | None = None
    request_resource: GroupVersionResource | None = None
    request_sub_resource: str | None = None
    name: str = ""
    namespace: str = ""
    operation: Operation
    user_info: UserInfo = Field(default_factory=UserInfo)
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    dry_run: bool | None = None
    options: dict[str, Any] | None = None

    _raw_object: bytes | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        """Snapshot `object` as received, before any handler can modify it (unless the handler said it
        does not read the snapshot: `decode_review(..., snapshot=False)`)."""
        wanted = not isinstance(context, Mapping) or context.get(SNAPSHOT_CONTEXT, True)
        if self.object is not None and wanted:
            self._raw_object = _encode(self.object)

    @property
    def raw_object(self) -> bytes | None:
        """`request.object` as received (JSON bytes), the diff base for `patch_response_from_raw`."""
        return self._raw_object


class Status(BaseModel):
    """The `metav1.Status` of a response: the code and message the API server passes on to the user."""

    model_config = _MODEL_CONFIG

    code: int | None = None
    message: str | None = None
    reason: str | None = None
    status: str | None = None


class AdmissionResponse(BaseModel):
    """Our answer; `complete()` fills in the uid and the defaults before it is sent."""

    model_config = _MODEL_CONFIG

    uid: str = ""
    allowed: bool
    status: Status | None = None
    patch: str | None = None
    patch_type: Literal["JSONPatch"] | None = None
    audit_annotations: dict[str, str] | None = None
    warnings: list[str] | None = None

    def complete(self, uid: str) -> AdmissionResponse:
        """A copy answering request `uid`: status code defaulted to 200, `patchType` set with a patch."""
        update: dict[str, Any] = {"uid": uid}
        if self.status is None:
            update["status"] = Status(code=200)
        elif self.status.code is None:
            update["status"] = self.status.model_copy(update={"code": 200})
        if self.patch is not None:
            update["patch_type"] = "JSONPatch"
        return self.model_copy(update=update)

    def json_patch(self) -> list[dict[str, Any]]:
        """The decoded JSON Patch operations ([] without a patch)."""
        if self.patch is None:
            return []
        operations: list[dict[str, Any]] = json.loads(base64.b64decode(self.patch))
        return operations


class AdmissionReview(BaseModel):
    """The envelope of both directions."""

    model_config = _MODEL_CONFIG

    api_version: AdmissionVersion = ADMISSION_V1
    kind: Literal["AdmissionReview"] = "AdmissionReview"
    request: AdmissionRequest | None = None
    response: AdmissionResponse | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON form (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class AdmissionHandler(Protocol):
    """Answers one admission request; the server completes the response with the uid.

    A handler that never reads `request.raw_object` (it copies what it mutates, as the pod mutator does)
    may say so with a class attribute `reads_raw_object = False`: the server then skips the snapshot, a
    re-encoding of the whole object, for its requests."""

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        """Decide on `request`."""
        ...


def reads_raw_object(handler: AdmissionHandler) -> bool:
    """Whether `handler` needs `request.raw_object` (True unless it declares otherwise)."""
    return bool(getattr(handler, "reads_raw_object", True))


class InvalidReview(ValueError):
    """A body that is not a usable AdmissionReview; `uid`/`api_version` are set when they could be read."""

    def __init__(
        self, message: str, *, api_version: AdmissionVersion | None = None, uid: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.api_version = api_version
        self.uid = uid


@dataclass(frozen=True, slots=True)
class IncomingReview:
    """A parsed request and the version to answer in."""

    api_version: AdmissionVersion
    request: AdmissionRequest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def decode_review(body: bytes, *, snapshot: bool = True) -> IncomingReview:
    """Parse an AdmissionReview request body; raise `InvalidReview` with a one-line reason otherwise.

    `snapshot=False`: no `request.raw_object` (for a handler that does not read it)."""
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidReview("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise InvalidReview(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidReview(f"body must be a JSON object (an AdmissionReview), got {type(data).__name__}")
    if data.get("kind") != "AdmissionReview":
        raise InvalidReview(f"kind must be AdmissionReview, got {_show(data.get('kind'))}")
    asked = data.get("apiVersion")
    api_version = next((v for v in SUPPORTED_VERSIONS if v == asked), None)
    if api_version is None:
        raise InvalidReview(f"apiVersion must be one of {', '.join(SUPPORTED_VERSIONS)}, got {_show(asked)}")
    request = data.get("request")
    if not isinstance(request, dict):
        raise InvalidReview("request is missing or not an object", api_version=api_version)
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise InvalidReview("request.uid is missing or not a non-empty string", api_version=api_version)
    # Depth is at most the number of opening brackets (those inside strings only add to the count): a
    # typical review has fewer than the limit, and then the walk is not needed.
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > MAX_NESTING and _nested_deeper_than(data, MAX_NESTING):
        raise InvalidReview(
            f"request is nested deeper than {MAX_NESTING} levels", api_version=api_version, uid=uid
        )
    try:
        parsed = AdmissionRequest.model_validate(request, context={SNAPSHOT_CONTEXT: snapshot})
    except ValidationError as exc:
        raise InvalidReview(_describe(exc), api_version=api_version, uid=uid) from None
    except (RecursionError, ValueError) as exc:
        message = "request is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidReview(message, api_version=api_version, uid=uid) from None
    return IncomingReview(api_version, parsed)


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """True when objects and arrays in `value` (decoded JSON) nest more than `limit` deep.

    Recursive, but never deeper than `limit` + 1 frames; 3.5x faster than an explicit stack, which cost
    twice the JSON parse of a typical pod review (issue 13).
    """
    kind = type(value)
    return (kind is dict or kind is list) and _exceeds(value, limit)


def _exceeds(container: dict[str, Any] | list[Any], budget: int) -> bool:
    if budget == 0:
        return True
    budget -= 1
    children: Iterable[Any] = container.values() if type(container) is dict else container
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and _exceeds(child, budget):
            return True
    return False


def encode_review(api_version: AdmissionVersion, response: AdmissionResponse) -> dict[str, Any]:
    """The response envelope in the version the request came in (what `AdmissionReview.to_wire` gives)."""
    return {
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def allowed(message: str = "") -> AdmissionResponse:
    """Admit unchanged."""
    return AdmissionResponse(allowed=True, status=Status(code=200, message=message or None))


def denied(message: str, code: int = 403) -> AdmissionResponse:
    """Reject with a message the user sees ("admission webhook ... denied the request: <message>")."""
    reason = "Forbidden" if code == 403 else None
    return AdmissionResponse(
        allowed=False, status=Status(code=code, reason=reason, message=message, status="Failure")
    )


def errored(code: int, message: str) -> AdmissionResponse:
    """Reject because we could not decide (bad input: 400, our failure: 500)."""
    return AdmissionResponse(allowed=False, status=Status(code=code, message=message, status="Failure"))


def wrong_kind(request: AdmissionRequest, group: str, kind: str) -> AdmissionResponse | None:
    """`errored(400, ...)` when the request is not for `group`/`kind` (a misrouted webhook), else None."""
    if request.kind.group == group and request.kind.kind == kind:
        return None
    got = f"{request.kind.group}/{request.kind.kind}" if request.kind.group else request.kind.kind
    return errored(400, f"expected a {group}/{kind}, got {got}")


def patch_response_from_raw(
    raw_object: bytes | Mapping[str, Any], mutated: Mapping[str, Any]
) -> AdmissionResponse:
    """Admit with the JSON Patch that turns `raw_object` into `mutated` (no patch when they are equal)."""
    original = json.loads(raw_object) if isinstance(raw_object, bytes | bytearray) else raw_object
    operations = jsonpatch.make_patch(original, mutated).patch
    if not operations:
        return allowed()
    encoded = base64.b64encode(_encode(operations)).decode("ascii")
    return AdmissionResponse(allowed=True, status=Status(code=200), patch=encoded, patch_type="JSONPatch")


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _show(value: Any) -> str:
    text = json.dumps(value) if value is not None else "nothing"
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"])
        problems.append(f"request.{where}: {error['msg']}" if where else error["msg"])
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
