"""AdmissionReview models and response helpers: wire format, versions, completion, JSON Patch building."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhooks.admission import (
    ADMISSION_V1,
    ADMISSION_V1BETA1,
    MAX_NESTING,
    AdmissionRequest,
    AdmissionResponse,
    AdmissionReview,
    AdmissionVersion,
    InvalidReview,
    allowed,
    decode_review,
    denied,
    encode_review,
    errored,
    patch_response_from_raw,
)

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "1"}},
    "spec": {"containers": [{"name": "kserve-container", "image": "img", "futureField": {"k": [1, 2.5]}}]},
}


def review(api_version: str = ADMISSION_V1, **request: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ns",
        "operation": "CREATE",
        "userInfo": {"username": "admin", "groups": ["system:masters"], "extra": {"scopes": ["a"]}},
        "object": copy.deepcopy(POD),
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    body.update(request)
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": body}


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize("version", [ADMISSION_V1, ADMISSION_V1BETA1])
def test_decode_a_full_request_in_either_version(version: str) -> None:
    incoming = decode_review(encode(review(version)))
    assert incoming.api_version == version
    request = incoming.request
    assert request.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert (request.kind.group, request.kind.version, request.kind.kind) == ("", "v1", "Pod")
    assert request.resource.resource == "pods"
    assert request.request_kind is not None
    assert request.request_kind.kind == "Pod"
    assert request.operation == "CREATE"
    assert request.namespace == "ns"
    assert request.name == ""
    assert request.user_info.username == "admin"
    assert request.user_info.extra == {"scopes": ["a"]}
    assert request.object == POD
    assert request.old_object is None
    assert request.dry_run is False
    assert request.options == {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}


def test_unknown_request_fields_round_trip() -> None:
    request = decode_review(encode(review(futureField={"x": 1}))).request
    assert request.model_dump(by_alias=True)["futureField"] == {"x": 1}


def test_raw_object_is_a_snapshot_taken_before_the_handler_runs() -> None:
    request = decode_review(encode(review())).request
    assert request.object is not None
    request.object["metadata"]["labels"]["added"] = "later"
    assert request.raw_object is not None
    assert json.loads(request.raw_object) == POD


def test_raw_object_is_not_taken_when_the_handler_does_not_read_it() -> None:
    request = decode_review(encode(review()), snapshot=False).request
    assert request.object == POD
    assert request.raw_object is None


@pytest.mark.parametrize("version", [ADMISSION_V1, ADMISSION_V1BETA1])
@pytest.mark.parametrize(
    "response",
    [
        allowed(),
        allowed("fine"),
        denied("no"),
        errored(500, "boom"),
        patch_response_from_raw(POD, {**POD, "kind": "Other"}),
        AdmissionResponse(allowed=True, warnings=["w"], audit_annotations={"a": "b"}),
    ],
)
def test_the_encoded_review_is_the_models_wire_form(
    version: AdmissionVersion, response: AdmissionResponse
) -> None:
    completed = response.complete("u-1")
    wire = AdmissionReview(api_version=version, response=completed).to_wire()
    assert encode_review(version, completed) == wire


def test_raw_object_is_none_without_an_object() -> None:
    request = decode_review(encode(review(object=None, operation="DELETE"))).request
    assert request.raw_object is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"\xff\xfe\x00", "body is not valid JSON"),
        (b'{"a": NaN}', "body is not valid JSON: NaN is not valid JSON"),
        (b'{"a": 1e999}', "is out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
        (b"[]", "body must be a JSON object (an AdmissionReview), got list"),
        (b'"AdmissionReview"', "got str"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}', 'kind must be AdmissionReview, got "Pod"'),
        (
            b'{"kind": "AdmissionReview"}',
            "apiVersion must be one of admission.k8s.io/v1, admission.k8s.io/v1beta1",
        ),
        (b'{"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview"}', 'got "admission.k8s.io/v2"'),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request is missing"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": 1}', "not an object"),
    ],
)
def test_unanswerable_bodies_have_no_uid_or_version(body: bytes, message: str) -> None:
    with pytest.raises(InvalidReview) as caught:
        decode_review(body)
    assert message in caught.value.message
    assert caught.value.uid is None


@pytest.mark.parametrize("uid", [None, "", 42, ["x"]])
def test_a_request_without_a_string_uid_is_unanswerable(uid: Any) -> None:
    body = review()
    if uid is None:
        del body["request"]["uid"]
    else:
        body["request"]["uid"] = uid
    with pytest.raises(InvalidReview, match=r"request\.uid is missing") as caught:
        decode_review(encode(body))
    assert caught.value.api_version == ADMISSION_V1
    assert caught.value.uid is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"operation": "PATCH"},
            "request.operation: Input should be 'CREATE', 'UPDATE', 'DELETE' or 'CONNECT'",
        ),
        ({"kind": None}, "request.kind: Input should be a valid dictionary"),
        ({"object": ["not", "an", "object"]}, "request.object: Input should be a valid dictionary"),
        ({"namespace": 7}, "request.namespace: Input should be a valid string"),
        (
            {"object": {"a": [1e308, {"b": "ok"}]}, "name": ["x"]},
            "request.name: Input should be a valid string",
        ),
    ],
)
def test_malformed_fields_of_an_answerable_request_keep_uid_and_version(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidReview) as caught:
        decode_review(encode(review(ADMISSION_V1BETA1, **change)))
    assert caught.value.message.startswith(message)
    assert caught.value.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert caught.value.api_version == ADMISSION_V1BETA1


def nested_object(levels: int) -> dict[str, Any]:
    """An object whose objects and arrays nest `levels` deep (the object itself is level 1)."""
    value: Any = {}
    for i in range(levels - 2):
        value = [value] if i % 2 else {"k": value}
    return {"metadata": {"name": "p"}, "data": value} if levels > 1 else {}


@pytest.mark.parametrize("depth", [MAX_NESTING - 1, MAX_NESTING])
def test_nesting_up_to_the_limit_is_accepted(depth: int) -> None:
    # review (1) -> request (2) -> object (3): an object may nest MAX_NESTING - 2 levels.
    body = review(object=nested_object(depth - 2))
    assert decode_review(encode(body)).request.object is not None


@pytest.mark.parametrize(
    "obj",
    [
        {"metadata": {"name": "p"}, "data": {"note": "[{" * 300}},  # brackets in a string do not nest
        {"metadata": {"name": "p"}, "data": [{"k": [i]} for i in range(200)]},  # wide, 6 levels
    ],
)
def test_many_brackets_that_do_not_nest_deeply_are_accepted(obj: dict[str, Any]) -> None:
    body = encode(review(object=obj))
    assert body.count(b"{") + body.count(b"[") > MAX_NESTING  # the depth is walked, not just bounded
    assert decode_review(body).request.object == obj


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 600, 900])
def test_nesting_past_the_limit_is_refused_with_uid_and_version(depth: int) -> None:
    body = review(ADMISSION_V1BETA1, object=nested_object(depth - 2))
    with pytest.raises(InvalidReview) as caught:
        decode_review(encode(body))
    assert caught.value.message == f"request is nested deeper than {MAX_NESTING} levels"
    assert caught.value.uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert caught.value.api_version == ADMISSION_V1BETA1


def test_missing_kind_and_resource_are_both_reported() -> None:
    body = review()
    del body["request"]["kind"], body["request"]["resource"]
    with pytest.raises(InvalidReview) as caught:
        decode_review(encode(body))
    assert caught.value.message == "request.kind: Field required; request.resource: Field required"


def test_allowed_denied_errored_on_the_wire() -> None:
    assert allowed().complete("u").model_dump(by_alias=True, exclude_none=True) == {
        "uid": "u",
        "allowed": True,
        "status": {"code": 200},
    }
    assert allowed("fine").status is not None
    assert allowed("fine").complete("u").status.message == "fine"  # type: ignore[union-attr]
    assert denied("name is invalid").complete("u").model_dump(by_alias=True, exclude_none=True) == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "name is invalid", "status": "Failure"},
    }
    assert denied("nope", code=422).model_dump(exclude_none=True)["status"] == {
        "code": 422,
        "message": "nope",
        "status": "Failure",
    }
    assert errored(500, "boom").complete("u").model_dump(by_alias=True, exclude_none=True) == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 500, "message": "boom", "status": "Failure"},
    }


def test_complete_overrides_the_uid_and_defaults_code_and_patch_type() -> None:
    response = AdmissionResponse(uid="wrong", allowed=True, patch=base64.b64encode(b"[]").decode())
    done = response.complete("right")
    assert done.uid == "right"
    assert done.status is not None
    assert done.status.code == 200
    assert done.patch_type == "JSONPatch"
    assert response.uid == "wrong"


@pytest.mark.parametrize("version", [ADMISSION_V1, ADMISSION_V1BETA1])
def test_encode_review_answers_in_the_version_asked(version: Any) -> None:
    wire = encode_review(version, denied("no").complete("abc"))
    assert wire == {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "response": {
            "uid": "abc",
            "allowed": False,
            "status": {"code": 403, "reason": "Forbidden", "message": "no", "status": "Failure"},
        },
    }


def test_patch_from_raw_bytes_is_a_base64_json_patch_that_reproduces_the_mutation() -> None:
    request = decode_review(encode(review())).request
    mutated = copy.deepcopy(request.object)
    assert mutated is not None
    mutated["metadata"]["labels"]["new"] = "label/with~special"
    mutated["spec"]["initContainers"] = [{"name": "storage-initializer"}]
    del mutated["metadata"]["annotations"]
    assert request.raw_object is not None
    response = patch_response_from_raw(request.raw_object, mutated).complete(request.uid)
    assert response.allowed
    assert response.patch_type == "JSONPatch"
    operations = json.loads(base64.b64decode(response.patch or ""))
    assert operations == response.json_patch()
    assert {op["op"] for op in operations} == {"add", "remove"}
    assert jsonpatch.apply_patch(POD, operations) == mutated
    wire = encode_review(ADMISSION_V1, response)["response"]
    assert wire["patchType"] == "JSONPatch"
    assert isinstance(wire["patch"], str)


def test_patch_from_a_dict_equals_patch_from_bytes() -> None:
    mutated = copy.deepcopy(POD)
    mutated["spec"]["containers"][0]["image"] = "other"
    from_dict = patch_response_from_raw(POD, mutated)
    from_bytes = patch_response_from_raw(json.dumps(POD).encode(), mutated)
    assert (
        from_dict.json_patch()
        == from_bytes.json_patch()
        == [{"op": "replace", "path": "/spec/containers/0/image", "value": "other"}]
    )


def test_an_unchanged_object_is_allowed_without_a_patch() -> None:
    response = patch_response_from_raw(json.dumps(POD).encode(), copy.deepcopy(POD)).complete("u")
    assert response.allowed
    assert response.patch is None
    assert response.patch_type is None
    assert response.json_patch() == []


def test_type_changes_are_patched_even_when_python_compares_equal() -> None:
    assert patch_response_from_raw({"a": 1}, {"a": True}).json_patch() == [
        {"op": "replace", "path": "/a", "value": True}
    ]


_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
)
_OBJECTS = st.dictionaries(st.text(max_size=3), _VALUES, max_size=5)


@settings(max_examples=200, deadline=None)
@given(_OBJECTS, _OBJECTS)
def test_any_mutation_is_reproduced_exactly_by_its_patch(
    original: dict[str, Any], mutated: dict[str, Any]
) -> None:
    response = patch_response_from_raw(json.dumps(original).encode(), mutated)
    patched = jsonpatch.apply_patch(copy.deepcopy(original), response.json_patch())
    assert json.dumps(patched, sort_keys=True) == json.dumps(mutated, sort_keys=True)
    assert (response.patch is None) == (
        json.dumps(original, sort_keys=True) == json.dumps(mutated, sort_keys=True)
    )


def test_admission_request_can_be_built_directly() -> None:
    request = AdmissionRequest.model_validate(review()["request"])
    assert request.raw_object is not None
    assert json.loads(request.raw_object) == POD
