"""The TrainedModel validating admission webhook (KServe v0.11 `TrainedModel.ValidateCreate/ValidateUpdate`).

A TrainedModel is loaded into a running multi-model server whose memory was sized for the models it holds
(the controller's MemoryResourceAvailable condition sums `spec.model.memory`), so KServe refuses to change a
model's memory after creation; the model must be deleted and recreated. The other checks catch, at `kubectl
apply` time, what the model puller would otherwise fail on later: a name it cannot use as a model directory
and a storage URI scheme it cannot download from.

Every problem is reported at once in one line; a malformed object is denied with the field named, never an
exception. Memory is compared as a quantity, so rewriting "1Gi" as "1024Mi" is not a change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from apis.constants import KSERVE_GROUP
from apis.quantity import QuantityError, parse_quantity
from apis.storage import STORAGE_URI_PREFIXES
from webhooks.admission import AdmissionRequest, AdmissionResponse, allowed, denied, errored, wrong_kind
from webhooks.inferenceservice import describe, type_name

__all__ = ["TrainedModelValidator", "validate_trained_model"]

log = logging.getLogger(__name__)

_TM_NAME_FMT: Final = "[a-zA-Z0-9_-]+"
_TM_NAME_RE: Final = re.compile(_TM_NAME_FMT)
_KIND: Final = "Trained Model"
"""KServe's spelling in its TrainedModel messages."""


def _model(obj: Mapping[str, Any], errors: list[str]) -> Mapping[str, Any] | None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errors.append(
            "spec is required" if spec is None else f"spec must be an object, got {type_name(spec)}"
        )
        return None
    parent = spec.get("inferenceService")
    if not isinstance(parent, str) or not parent:
        errors.append("spec.inferenceService is required: the name of the InferenceService to load into")
    model = spec.get("model")
    if not isinstance(model, dict):
        errors.append(
            "spec.model is required"
            if model is None
            else f"spec.model must be an object, got {type_name(model)}"
        )
        return None
    return model


def _memory(model: Mapping[str, Any] | None) -> Any:
    return None if model is None else model.get("memory")


def _same_quantity(old: Any, new: Any) -> bool:
    if old == new:
        return True
    try:
        return parse_quantity(str(old)) == parse_quantity(str(new))
    except QuantityError:
        return False


def validate_trained_model(obj: Any, old: Any = None) -> list[str]:
    """The problems of a TrainedModel ([] when valid); with `old` (an UPDATE) also a changed memory."""
    if not isinstance(obj, dict):
        return [f"a TrainedModel must be a JSON object, got {type_name(obj)}"]
    errors: list[str] = []
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if name is None or name == "":
        if not (isinstance(metadata, dict) and metadata.get("generateName")):
            errors.append("metadata.name is required")
    elif not isinstance(name, str) or not _TM_NAME_RE.fullmatch(name):
        errors.append(
            f"metadata.name {name!r} is invalid: use letters, digits, '_' and '-' only "
            f"(regex '{_TM_NAME_FMT}'), e.g. 'my_model-1'"
        )
    model = _model(obj, errors)
    if model is not None:
        uri = model.get("storageUri")
        if not isinstance(uri, str) or not uri:
            errors.append(
                f"spec.model.storageUri is required: a URI starting with {', '.join(STORAGE_URI_PREFIXES)}"
            )
        elif not uri.startswith(STORAGE_URI_PREFIXES):
            errors.append(
                f'spec.model.storageUri "{uri}" is not supported: use a URI starting with '
                f"{', '.join(STORAGE_URI_PREFIXES)}"
            )
        memory = model.get("memory")
        if memory is not None:
            try:
                parse_quantity(str(memory) if isinstance(memory, int | float) else memory)
            except QuantityError as exc:
                errors.append(f"spec.model.memory: {exc}")
    if isinstance(old, dict):
        old_memory = _memory(_model(old, []))
        new_memory = _memory(model)
        if not _same_quantity(old_memory, new_memory):
            errors.append(
                f"memory field is immutable (was {old_memory!r}, now {new_memory!r}); delete and recreate "
                "the Trained Model to change it"
            )
    return errors


class TrainedModelValidator:
    """`/validate-serving-kserve-io-v1alpha1-trainedmodel`: denies with every problem in one message."""

    reads_raw_object = False

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        """Validate CREATE and UPDATE; an object being deleted is always admitted."""
        if (wrong := wrong_kind(request, KSERVE_GROUP, "TrainedModel")) is not None:
            return wrong
        obj = request.object
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return allowed()
        metadata = obj.get("metadata")
        if request.operation == "UPDATE" and isinstance(metadata, dict) and metadata.get("deletionTimestamp"):
            return allowed()
        try:
            old = request.old_object if request.operation == "UPDATE" else None
            errors = validate_trained_model(obj, old)
        except Exception as exc:  # a bug must still answer with a message, never EOF
            log.exception("validating TrainedModel %s/%s failed", request.namespace, request.name)
            return errored(500, f"internal error while validating the Trained Model: {exc!r}")
        if errors:
            name = metadata.get("name") if isinstance(metadata, dict) else None
            return denied(describe(name or request.name, errors, _KIND))
        return allowed()
