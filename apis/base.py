"""The base of every typed API model: lenient parsing and a lossless JSON round trip.

Controllers read objects written by users, by other controllers and by newer KServe versions, and they write
back only what they own. So a model must (1) keep every field it does not know about, verbatim, and (2) emit
nothing the input did not have: a field that was absent stays absent, even when its Python default is an
empty list, and a known field set to None is absent, like a nil pointer under Go's omitempty (unknown fields
keep their nulls). Pydantic's `exclude_unset` does (2) for assigned fields but not for defaults mutated in
place (`status.conditions.append(...)`); `to_object` therefore first marks such fields as set.

Parsing failures become `InvalidObjectError` with one line naming the offending field, because a malformed
object is bad input to report, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class InvalidObjectError(ValueError):
    """An object that does not fit its schema; the message is one line naming the field."""


class KubeModel(BaseModel):
    """A Kubernetes JSON fragment: camelCase on the wire, snake_case in Python, unknown fields kept."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        alias_generator=to_camel,
        protected_namespaces=(),
    )

    @classmethod
    def from_object(cls, obj: Any, *, where: str = "") -> Self:
        """Parse a JSON object; raise `InvalidObjectError` (one line) when it does not fit."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise InvalidObjectError(describe_validation_error(exc, where or cls.__name__)) from None

    def to_object(self) -> dict[str, Any]:
        """The JSON form: fields the input had, fields assigned or changed since, and unknown fields."""
        _mark_changed(self)
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class KubeObject(KubeModel):
    """A whole object: apiVersion, kind and `metadata` as a plain dict (the runtime works on JSON metadata).

    Subclasses set the defaults of `api_version` and `kind` and add `spec` and `status`.
    """

    api_version: str = ""
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Any, *, where: str = "") -> Self:
        if where == "" and isinstance(obj, Mapping):
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace")
            where = f"{cls.__name__} {ns + '/' if ns else ''}{meta.get('name', '')}"
        return super().from_object(obj, where=where)

    def to_object(self) -> dict[str, Any]:
        """The JSON form, apiVersion and kind first and always present."""
        body = super().to_object()
        return {"apiVersion": self.api_version, "kind": self.kind, **body}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def generation(self) -> int | None:
        gen = self.metadata.get("generation")
        return gen if isinstance(gen, int) else None

    @property
    def labels(self) -> dict[str, str]:
        """The labels (a copy; edit `metadata` to change them)."""
        return dict(self.metadata.get("labels") or {})

    @property
    def annotations(self) -> dict[str, str]:
        """The annotations (a copy; edit `metadata` to change them)."""
        return dict(self.metadata.get("annotations") or {})

    @property
    def finalizers(self) -> list[str]:
        return list(self.metadata.get("finalizers") or [])

    @property
    def is_deleting(self) -> bool:
        return self.metadata.get("deletionTimestamp") is not None


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """`<what>: <field path>: <problem>` for the first error, plus a count of the others."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{what}: {loc}: {first['msg']}{more}"


def _mark_changed(model: BaseModel) -> None:
    fields_set = model.model_fields_set
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.is_required():
            pass
        elif value is None:
            fields_set.discard(name)
        elif name not in fields_set and value != info.get_default(call_default_factory=True):
            fields_set.add(name)
        _mark_nested(value)


def _mark_nested(value: Any) -> None:
    if isinstance(value, BaseModel):
        _mark_changed(value)
    elif isinstance(value, list | tuple):
        for item in value:
            _mark_nested(item)
    elif isinstance(value, dict):
        for item in value.values():
            _mark_nested(item)
