"""`webhooks.json_patch`: the pod webhook's patch is `jsonpatch.make_patch`'s, computed from what changed.

The property tests compare the two on generated documents and on generated pods sent through the real
injectors: the operations must be identical (same order, paths and values, byte for byte once encoded), and
applying them to the original must give the mutated document exactly (as JSON text: `1`, `1.0` and `true`
differ). Spies on `jsonpatch.make_patch` show which edits the fast path answers by itself.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from webhooks.admission import AdmissionRequest, patch_response_from_raw
from webhooks.json_patch import copy_json, make_patch
from webhooks.pod_mutator import MutationError, PodMutator, PodMutatorHandler

ISVC_LABEL = "serving.kserve.io/inferenceservice"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"

FULL_DIFF = jsonpatch.make_patch


@pytest.fixture
def full_diffs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every call `webhooks.json_patch` makes to the full diff."""
    calls: list[tuple[Any, Any]] = []

    def spy(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((src, dst))
        return FULL_DIFF(src, dst, *args, **kwargs)

    monkeypatch.setattr(jsonpatch, "make_patch", spy)
    return calls


def text(value: Any) -> str:
    """JSON text that tells `1`, `1.0` and `true` apart, whatever the member order."""
    return json.dumps(value, sort_keys=True)


def loosely_equal_places(original: Any, mutated: Any, path: str = "") -> Iterator[str]:
    """Paths in both documents whose values are `==` but differ as JSON (the fast path's precondition)."""
    if original == mutated and text(original) != text(mutated):
        yield path or "/"
    if isinstance(original, dict) and isinstance(mutated, dict):
        for key in original.keys() & mutated.keys():
            yield from loosely_equal_places(original[key], mutated[key], f"{path}/{key}")
    elif isinstance(original, list) and isinstance(mutated, list):
        for index, (old, new) in enumerate(zip(original, mutated, strict=False)):
            yield from loosely_equal_places(old, new, f"{path}/{index}")


def assert_same_patch(original: Any, mutated: Any) -> list[dict[str, Any]]:
    """make_patch == jsonpatch.make_patch (byte for byte), and it turns `original` into `mutated` exactly."""
    before = text(original)
    expected = FULL_DIFF(original, mutated).patch
    ours = make_patch(original, mutated)
    assert json.dumps(ours) == json.dumps(expected)
    assert text(jsonpatch.apply_patch(original, ours)) == text(mutated)
    assert text(original) == before
    return ours


# --- fixed cases ------------------------------------------------------------------------------------------


def edited(original: Any, edit: Callable[[Any], object]) -> Any:
    mutated = copy_json(original)
    edit(mutated)
    return mutated


BASE: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "labels": {"a": "1"},
        "annotations": {"x/y~z": "v"},
        "finalized": True,
        "ratio": 1.5,
    },
    "spec": {
        "containers": [
            {"name": "c", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [1, 2]},
            {"name": "q", "port": 8080},
        ],
        "volumes": None,
        "long": [{"name": str(i)} for i in range(200)],
    },
}

FAST_EDITS: dict[str, Callable[[Any], object]] = {
    "member added": lambda d: d["metadata"]["annotations"].update({"new": "1"}),
    "member added, key with ~ and /": lambda d: d["metadata"].update({"a/b~c": {"d": [1]}}),
    "string replaced": lambda d: d["spec"]["containers"][0]["env"][1].update({"value": "3"}),
    "true replaced by 1 and 1.5 by 1, beside another change": lambda d: d["metadata"].update(
        {"finalized": 1, "ratio": 1, "name": "q"}
    ),
    "number in a list item replaced": lambda d: d["spec"]["containers"][1].update({"port": 8080.5}),
    "null replaced by a list": lambda d: d["spec"].update({"volumes": [{"name": "v"}]}),
    "object replaced by a list": lambda d: d["metadata"].update({"labels": ["a"]}),
    "an item equal to one in the unchanged start appended": lambda d: d["spec"]["containers"][0][
        "env"
    ].append({"name": "B", "value": "2"}),
    "items appended": lambda d: d["spec"]["containers"][0]["env"].extend([{"name": "C"}, {"name": "D"}]),
    "item edited in place and items appended": lambda d: (
        d["spec"]["containers"][0]["env"][0].update({"value": "9"}),
        d["spec"]["containers"].append({"name": "agent"}),
    ),
    "item replaced by an equal-named one": lambda d: d["spec"]["containers"][0]["env"].__setitem__(
        1, {"name": "B", "value": "4"}
    ),
    "nothing": lambda d: None,
}

FULL_EDITS: dict[str, Callable[[Any], object]] = {
    "member removed": lambda d: d["metadata"].pop("labels"),
    "member moved elsewhere": lambda d: d["spec"].update({"moved": d["metadata"].pop("labels")}),
    "list item removed": lambda d: d["spec"]["containers"][0]["env"].pop(0),
    "list item inserted in front": lambda d: d["spec"]["containers"][0]["env"].insert(0, {"name": "Z"}),
    "scalar list item changed": lambda d: d["spec"]["containers"][0]["ports"].__setitem__(0, 7),
    "list item changed type": lambda d: d["spec"]["containers"][0]["env"].__setitem__(0, "A"),
    "an item equal to another one appended after a change": lambda d: (
        d["spec"]["containers"][0]["env"][0].update({"value": "0"}),
        d["spec"]["containers"][0]["env"].append({"name": "B", "value": "2"}),
    ),
    "items swapped": lambda d: d["spec"]["containers"].reverse(),
    "an item changed at the start of a long list": lambda d: d["spec"].update(
        {"long": [{"name": "changed"}] + [{"name": str(i)} for i in range(1, 200)]}
    ),
}


@pytest.mark.parametrize("name", FAST_EDITS)
def test_edits_like_the_injectors_are_answered_without_the_full_diff(
    name: str, full_diffs: list[tuple[Any, Any]]
) -> None:
    assert_same_patch(BASE, edited(BASE, FAST_EDITS[name]))
    assert full_diffs == []


@pytest.mark.parametrize("name", FULL_EDITS)
def test_removals_insertions_and_reorderings_get_the_full_diff(
    name: str, full_diffs: list[tuple[Any, Any]]
) -> None:
    assert_same_patch(BASE, edited(BASE, FULL_EDITS[name]))
    assert len(full_diffs) == 1


def test_a_value_moved_across_the_document_is_one_move_as_in_the_full_diff() -> None:
    mutated = edited(BASE, FULL_EDITS["member moved elsewhere"])
    assert assert_same_patch(BASE, mutated) == [
        {"op": "move", "from": "/metadata/labels", "path": "/spec/moved"}
    ]


@pytest.mark.parametrize(
    ("original", "mutated"),
    [
        ([1, 2], [1, 2, 3]),
        ("a", "b"),
        ({"a": 1}, [1]),
    ],
)
def test_documents_that_are_no_json_objects_get_the_full_diff(
    original: Any, mutated: Any, full_diffs: list[tuple[Any, Any]]
) -> None:
    assert make_patch(original, mutated) == FULL_DIFF(original, mutated).patch
    assert len(full_diffs) == 1


def test_a_differing_member_that_no_path_can_name_raises_like_the_full_diff() -> None:
    with pytest.raises(TypeError):
        FULL_DIFF({1: "a"}, {1: "b"})
    with pytest.raises(TypeError):
        make_patch({1: "a"}, {1: "b"})


# --- copy_json --------------------------------------------------------------------------------------------


def test_copy_json_copies_every_container_and_keeps_every_type() -> None:
    original: dict[str, Any] = {"a": [{"b": True, "c": 1, "d": 1.0, "e": -0.0, "f": None, "g": "s"}], "h": {}}
    copied = copy_json(original)
    assert text(copied) == text(original)
    assert [type(v) for v in copied["a"][0].values()] == [bool, int, float, float, type(None), str]
    copied["a"][0]["b"] = False
    copied["a"].append(1)
    copied["h"]["i"] = 1
    assert original == {"a": [{"b": True, "c": 1, "d": 1.0, "e": -0.0, "f": None, "g": "s"}], "h": {}}


def test_copy_json_deep_copies_what_is_not_json() -> None:
    inner = [1]
    original = {"a": (inner,), "b": {1, 2}}
    copied = copy_json(original)
    assert copied == original
    assert copied["a"][0] is not inner
    assert copied["b"] is not original["b"]


# --- property: generated documents and edits ---------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "name", "x/y", "t~1", ""])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, 1.5]),
    st.sampled_from(["", "a", "b", "1"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)


def containers_in(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(document, dict | list):
        yield path, document
        items = document.items() if isinstance(document, dict) else enumerate(document)
        for key, value in items:
            yield from containers_in(value, (*path, key))


@st.composite
def edited_documents(draw: st.DrawFn, grow_only: bool) -> tuple[Any, Any]:
    """A JSON object and an edited copy; `grow_only`: only the kinds of edits the injectors make."""
    original = draw(st.dictionaries(KEYS, JSON, min_size=1, max_size=5))
    mutated = copy_json(original)
    kinds = ["add", "set", "append"] if grow_only else ["add", "set", "append", "remove", "insert", "pop"]
    for _ in range(draw(st.integers(1, 4))):
        places = list(containers_in(mutated))
        _, target = places[draw(st.integers(0, len(places) - 1))]
        kind = draw(st.sampled_from(kinds))
        value = draw(JSON)
        if isinstance(target, dict):
            keys = sorted(target)
            if kind == "add" or not keys:
                target.setdefault(draw(KEYS), value)
            elif kind in ("set", "append", "insert"):
                target[draw(st.sampled_from(keys))] = value
            else:
                del target[draw(st.sampled_from(keys))]
        elif kind in ("add", "append") or not target:
            target.append(value)
        elif kind == "set":
            target[draw(st.integers(0, len(target) - 1))] = value
        elif kind == "insert":
            target.insert(draw(st.integers(0, len(target))), value)
        else:
            target.pop(draw(st.integers(0, len(target) - 1)))
    return original, mutated


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_documents(grow_only=False))
def test_any_edit_gives_the_full_diffs_patch(documents: tuple[Any, Any]) -> None:
    original, mutated = documents
    # The documented precondition of the fast path: the edits never swap a value for an `==` one of another
    # JSON type at the same place (the injectors never do; `test_injectors_*` checks that they don't).
    assume(not list(loosely_equal_places(original, mutated)))
    assert_same_patch(original, mutated)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_documents(grow_only=True))
def test_edits_that_only_add_and_overwrite_give_the_full_diffs_patch(documents: tuple[Any, Any]) -> None:
    original, mutated = documents
    assume(not list(loosely_equal_places(original, mutated)))
    assert_same_patch(original, mutated)


# --- property: generated pods through the real injectors ------------------------------------------------


class Lookup:
    """A ServiceAccount `sa` listing one Secret of each kind the credential builder knows, and more."""

    SECRETS: Mapping[str, dict[str, Any]] = {
        "s3": {
            "metadata": {"annotations": {"serving.kserve.io/s3-endpoint": "minio:9000"}},
            "data": {"AWS_ACCESS_KEY_ID": "YQ==", "AWS_SECRET_ACCESS_KEY": "Yg=="},
        },
        "gcs": {"data": {"gcloud-application-credentials.json": "e30="}},
        "azure": {"data": {"AZ_CLIENT_ID": "YQ==", "AZURE_TENANT_ID": "Yg=="}},
        "https": {"data": {"https-host": "aG9zdA==", "headers": "e30="}},
        "hdfs": {"data": {"HDFS_NAMENODE": "bm4="}},
        "storage-config": {"data": {"default_s3": base64.b64encode(b'{"type":"s3","bucket":"b"}').decode()}},
    }

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if name == "missing":
            return None
        return {"metadata": {"name": name}, "secrets": [{"name": s} for s in self.secrets]}

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.SECRETS.get(name)


ENV_NAMES = [
    "STORAGE_URI",
    "USER_PORT",
    "PORT",
    "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT",
    "AGGREGATE_PROMETHEUS_METRICS_PORT",
    "AWS_ACCESS_KEY_ID",
    "X",
]
EXTRA = st.dictionaries(st.sampled_from(["x-int", "x-bool", "x-float", "x-null"]), SCALARS, max_size=2)


@st.composite
def env_vars(draw: st.DrawFn) -> dict[str, Any]:
    var: dict[str, Any] = {"name": draw(st.sampled_from(ENV_NAMES))}
    if draw(st.booleans()):
        var["value"] = draw(st.sampled_from(["", "8080", "s3://b/m", "9088"]))
    else:
        var["valueFrom"] = {
            "fieldRef": {"fieldPath": draw(st.sampled_from(["status.podIP", "spec.nodeName"]))}
        }
    return var


@st.composite
def pod_containers(draw: st.DrawFn, name: str) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "image": "img", **draw(EXTRA)}
    if draw(st.booleans()):
        item["env"] = draw(st.lists(env_vars(), max_size=6))
    if draw(st.booleans()):
        ports = st.fixed_dictionaries(
            {
                "name": st.sampled_from(["http", "aggr-metric", "user-port", "metrics"]),
                "containerPort": st.sampled_from([8080, 9088, 9091, 8012]),
            }
        )
        item["ports"] = draw(st.lists(ports, max_size=3))
    if draw(st.booleans()):
        mount = st.fixed_dictionaries(
            {
                "name": st.sampled_from(
                    ["kserve-provision-location", "kserve-pvc-source", "model-dir", "data"]
                ),
                "mountPath": st.sampled_from(["/mnt/models", "/mnt/pvc", "/data"]),
                "readOnly": st.booleans(),
            }
        )
        item["volumeMounts"] = draw(st.lists(mount, max_size=2))
    if draw(st.booleans()):
        item["securityContext"] = draw(
            st.fixed_dictionaries({"runAsUser": st.sampled_from([0, 1000]), "privileged": st.booleans()})
        )
    if draw(st.booleans()):
        item["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": draw(st.integers(1, 10))}
    if draw(st.booleans()):
        item["resources"] = {"limits": {"nvidia.com/gpu": draw(st.sampled_from(["1", 1]))}}
    return item


ANNOTATIONS: dict[str, st.SearchStrategy[str]] = {
    SOURCE_URI: st.sampled_from(
        [
            "s3://b/m",
            "gs://b/m",
            "pvc://claim/path",
            "pvc://claim",
            "https://h/m.tgz",
            "<scheme-placeholder>://m",
        ]
    ),
    "internal.serving.kserve.io/storage-spec": st.just("true"),
    "internal.serving.kserve.io/storage-spec-param": st.sampled_from(['{"type":"s3","bucket":"b"}', "{}"]),
    "serving.kserve.io/enable-metric-aggregation": st.sampled_from(["true", "false"]),
    "serving.kserve.io/enable-prometheus-scraping": st.sampled_from(["true", "false"]),
    "prometheus.kserve.io/port": st.sampled_from(["8080", "9000"]),
    "prometheus.kserve.io/path": st.just("/stats"),
    "internal.serving.kserve.io/logger": st.just("true"),
    "internal.serving.kserve.io/batcher": st.just("true"),
    "internal.serving.kserve.io/agent": st.just("true"),
    "internal.serving.kserve.io/configVolumeName": st.just("models-config"),
    "serving.kserve.io/storage-initializer-uid": st.sampled_from(["1337", "0"]),
    "serving.kserve.io/gke-accelerator": st.just("nvidia-tesla-t4"),
    "prometheus.io/port": st.just("1"),
}


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    others = st.sampled_from(["queue-proxy", "transformer-container", "agent", "sidecar"])
    names = ["kserve-container", *draw(st.lists(others, unique=True))]
    spec: dict[str, Any] = {"containers": [draw(pod_containers(name)) for name in names], **draw(EXTRA)}
    if draw(st.booleans()):
        volume = st.fixed_dictionaries(
            {
                "name": st.sampled_from(["kserve-provision-location", "model-dir", "data"]),
                "emptyDir": st.just({}),
            }
        )
        spec["volumes"] = draw(st.lists(volume, max_size=2))
    if draw(st.booleans()):
        spec["initContainers"] = [
            draw(pod_containers(draw(st.sampled_from(["storage-initializer", "init"]))))
        ]
    if draw(st.booleans()):
        spec["nodeSelector"] = draw(st.sampled_from([{}, {"cloud.google.com/gke-accelerator": "a100"}, None]))
    if draw(st.booleans()):
        spec["securityContext"] = draw(
            st.fixed_dictionaries(
                {
                    "runAsNonRoot": st.booleans(),
                    "runAsUser": st.sampled_from([0, 1000]),
                    "seccompProfile": st.just({"type": "RuntimeDefault"}),
                }
            )
        )
    if draw(st.booleans()):
        spec["serviceAccountName"] = draw(st.sampled_from(["sa", "missing", "default"]))
    keys = draw(st.lists(st.sampled_from(sorted(ANNOTATIONS)), unique=True))
    annotations: dict[str, str] = {key: draw(ANNOTATIONS[key]) for key in keys}
    keep_empty: bool = draw(st.booleans())
    metadata: dict[str, Any] = {
        "generateName": "p-",
        "labels": {ISVC_LABEL: "m", "component": "predictor"},
        "annotations": annotations if annotations or keep_empty else None,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


CONFIGS = st.sampled_from(
    [
        {},
        {"storageInitializer": json.dumps({"enableDirectPvcVolumeMount": True})},
        {
            "metricsAggregator": json.dumps(
                {"enableMetricAggregation": "true", "enablePrometheusScraping": "true"}
            )
        },
    ]
)
SECRETS = st.lists(st.sampled_from(sorted(Lookup.SECRETS)), max_size=3)


async def mutated_pod(
    pod: dict[str, Any], config: dict[str, str], secrets: list[str]
) -> dict[str, Any] | None:
    try:
        return await PodMutator(lambda: config, Lookup(secrets)).mutate(pod, "models")
    except MutationError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), CONFIGS, SECRETS)
async def test_injectors_patch_equals_the_full_diff_on_generated_pods(
    pod: dict[str, Any], config: dict[str, str], secrets: list[str]
) -> None:
    original = copy.deepcopy(pod)
    mutated = await mutated_pod(pod, config, secrets)
    assume(mutated is not None)
    assert mutated is not None
    assert text(pod) == text(original), "the mutator changed its input"
    assert not list(loosely_equal_places(pod, mutated)), "an injector wrote an == value of another JSON type"
    assert_same_patch(pod, mutated)


# --- the handler --------------------------------------------------------------------------------------------


def typical_pod() -> dict[str, Any]:
    env = [{"name": f"SERVING_{i}", "value": str(i)} for i in range(20)] + [
        {"name": "USER_PORT", "value": "8080"}
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "m-predictor-00001-deployment-",
            "labels": {ISVC_LABEL: "m", "component": "predictor"},
            "annotations": {
                SOURCE_URI: "s3://b/m",
                "serving.kserve.io/enable-metric-aggregation": "true",
                "serving.kserve.io/enable-prometheus-scraping": "true",
            },
        },
        "spec": {
            "serviceAccountName": "sa",
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "img",
                    "ports": [{"name": "user-port", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": "STORAGE_URI", "value": "s3://b/m"}],
                },
                {"name": "queue-proxy", "image": "qp", "env": env},
            ],
        },
    }


def admission_request(pod: dict[str, Any]) -> AdmissionRequest:
    return AdmissionRequest.model_validate(
        {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "models",
            "operation": "CREATE",
            "object": pod,
        }
    )


async def test_the_handler_answers_the_patch_it_answered_with_the_full_diff(
    full_diffs: list[tuple[Any, Any]],
) -> None:
    mutator = PodMutator(lambda: {}, Lookup(["s3"]))
    request = admission_request(typical_pod())
    assert request.raw_object is not None
    mutated = await mutator.mutate(request.object, "models")
    response = await PodMutatorHandler(mutator).handle(request)
    assert full_diffs == [], "the typical revision pod needed the full diff"
    assert response.patch == patch_response_from_raw(request.raw_object, mutated).patch
    assert response.patch_type == "JSONPatch"
    assert {op["path"] for op in response.json_patch()} >= {"/spec/initContainers", "/spec/volumes"}


async def test_the_handler_answers_without_a_patch_when_nothing_changes() -> None:
    mutator = PodMutator(lambda: {}, Lookup(["s3"]))
    once = await mutator.mutate(typical_pod(), "models")
    response = await PodMutatorHandler(mutator).handle(admission_request(once))
    assert response.allowed
    assert response.patch is None
