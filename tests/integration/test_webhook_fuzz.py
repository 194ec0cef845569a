"""10,000 hostile or broken requests in a row against the running webhook server, over TLS on loopback.

With `failurePolicy: Fail` a webhook that crashes, hangs or answers garbage blocks every pod and
InferenceService write in the cluster, and in KServe v0.11 malformed ConfigMap JSON or a nil securityContext
panicked the handler (the user saw "EOF"). Here every request must get either a well-formed AdmissionReview
(uid and version echoed, `allowed` a bool, a message and an error code when not allowed, a patch that
applies to the object sent) or an HTTP 4xx with a one-line reason, within a per-request timeout, and the
server must keep serving a normal request afterwards.

The requests come from a seeded generator (reproducible; the seed is in the assertion messages) rather than
hypothesis, which is too slow for 10,000 HTTP round trips. They run in batches; each batch has one
ConfigMap state (good, one key holding malformed JSON, the wrong JSON type or an unparsable quantity, or no
ConfigMap at all), so the expected verdict for a valid pod is known exactly. No API server is needed: the
handlers are the production ones (`PodMutator` with the config provider and an in-memory credential lookup,
the InferenceService defaulter and validator, the TrainedModel validator).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import ssl
import string
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest

from apis.config import KEYS
from tests.integration.isvc_harness import config_data
from webhooks.certs import KeyPair, generate_ca, issue_serving_cert, write_cert_dir
from webhooks.inferenceservice import InferenceServiceDefaulter, InferenceServiceValidator
from webhooks.pod_mutator import PodMutator, PodMutatorHandler
from webhooks.server import MAX_BODY_BYTES, WebhookServer
from webhooks.setup import ISVC_DEFAULTER_PATH, ISVC_VALIDATOR_PATH, POD_MUTATOR_PATH, TM_VALIDATOR_PATH
from webhooks.trainedmodel import TrainedModelValidator

SEED = 20240611
TOTAL = 10_000
BATCH = 200
CONCURRENCY = 16
REQUEST_TIMEOUT = 10.0
HUGE_PER_RUN = 6

# ConfigMap keys the typical pod below needs; a broken one must deny it with the key's name.
USED_BY_POD = {"storageInitializer", "credentials", "logger", "agent", "metricsAggregator"}


class MemoryLookup:
    """A ServiceAccount `models` listing one S3 Secret."""

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if name != "models":
            return None
        return {"metadata": {"name": name}, "secrets": [{"name": "s3"}]}

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if name != "s3":
            return None
        b64 = base64.b64encode(b"x").decode()
        return {"metadata": {"name": name}, "data": {"AWS_ACCESS_KEY_ID": b64, "AWS_SECRET_ACCESS_KEY": b64}}


class ConfigState:
    """What the config provider returns; the test switches it between batches."""

    def __init__(self) -> None:
        self.data: dict[str, str] | None = config_data()
        self.broken: str | None = None

    def provide(self) -> Mapping[str, str] | None:
        return None if self.data is None else dict(self.data)

    def set(self, rnd: random.Random) -> str:
        """A random state; returns its description."""
        self.data, self.broken = config_data(), None
        choice = rnd.randrange(6)
        if choice == 0:
            return "good"
        if choice == 1:
            self.data = None
            return "no ConfigMap"
        key = rnd.choice(sorted(KEYS))
        self.broken = key
        if choice == 2:
            self.data[key] = rnd.choice(['{"image": ', "{]", "nul", '{"a": 1,}', "\x00", "{" * 5000])
            return f"malformed JSON in {key}"
        if choice == 3:
            self.data[key] = rnd.choice(["[]", "42", '"text"', "null", "true"])
            return f"wrong JSON type in {key}"
        self.broken = rnd.choice(["storageInitializer", "agent"])
        value = json.loads(self.data[self.broken])
        value[rnd.choice(["cpuLimit", "memoryRequest", "cpuRequest", "memoryLimit"])] = rnd.choice(
            # Go's ParseQuantity (which the config follows) reads a lone sign as zero: not in this list.
            ["lots", "1.5.5", "--1", "1Zi", "1e", "0x10"]
        )
        self.data[self.broken] = json.dumps(value)
        return f"unparsable quantity in {self.broken}: {value}"


def typical_pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "sklearn-predictor-00001-deployment-",
            "labels": {"serving.kserve.io/inferenceservice": "sklearn", "component": "predictor"},
            "annotations": {
                "internal.serving.kserve.io/storage-initializer-sourceuri": "s3://models/iris",
                "serving.kserve.io/enable-metric-aggregation": "true",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "internal.serving.kserve.io/logger": "true",
            },
        },
        "spec": {
            "serviceAccountName": "models",
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "kserve/sklearnserver",
                    "env": [{"name": "STORAGE_URI", "value": "s3://models/iris"}],
                },
                {"name": "queue-proxy", "image": "qp", "env": [{"name": "USER_PORT", "value": "8080"}]},
            ],
        },
    }


def isvc() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sklearn", "namespace": "ns"},
        "spec": {"predictor": {"sklearn": {"storageUri": "gs://b/m"}}},
    }


def trained_model() -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "TrainedModel",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "inferenceService": "p",
            "model": {"storageUri": "gs://b/m", "framework": "x", "memory": "1Gi"},
        },
    }


KINDS = {
    POD_MUTATOR_PATH: ("", "v1", "Pod", "pods", typical_pod),
    ISVC_DEFAULTER_PATH: ("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", isvc),
    ISVC_VALIDATOR_PATH: ("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", isvc),
    TM_VALIDATOR_PATH: ("serving.kserve.io", "v1alpha1", "TrainedModel", "trainedmodels", trained_model),
}


def review(
    path: str, obj: Any, *, version: str = "admission.k8s.io/v1", uid: str | None = None
) -> dict[str, Any]:
    group, api_version, kind, resource, _ = KINDS[path]
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": group, "version": api_version, "kind": kind},
            "resource": {"group": group, "version": api_version, "resource": resource},
            "namespace": "ns",
            "operation": "CREATE",
            "object": obj,
        },
    }


def random_json(rnd: random.Random, depth: int = 0) -> Any:
    choice = rnd.randrange(9 if depth < 4 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rnd.random() < 0.5
    if choice == 2:
        return rnd.randint(-(2**70), 2**70)
    if choice == 3:
        return rnd.uniform(-1e300, 1e300)
    if choice in (4, 5):
        return "".join(rnd.choice(string.printable + "ü€\u2028") for _ in range(rnd.randrange(12)))
    if choice in (6, 7):
        return {
            rnd.choice(
                ["name", "spec", "containers", "env", "metadata", "x", "annotations", "labels"]
            ): random_json(rnd, depth + 1)
            for _ in range(rnd.randrange(4))
        }
    return [random_json(rnd, depth + 1) for _ in range(rnd.randrange(4))]


def mutate_somewhere(rnd: random.Random, value: Any) -> Any:
    """Replace one randomly chosen node of `value` with random JSON."""
    if not isinstance(value, dict | list) or not value or rnd.random() < 0.25:
        return random_json(rnd)
    if isinstance(value, dict):
        key = rnd.choice(list(value))
        value[key] = mutate_somewhere(rnd, value[key])
    else:
        index = rnd.randrange(len(value))
        value[index] = mutate_somewhere(rnd, value[index])
    return value


@dataclass
class Case:
    """One request and what must come back."""

    category: str
    path: str
    body: bytes
    version: str | None = None
    uid: str | None = None
    obj: Any = None
    expect_status: int | None = None  # an HTTP 4xx instead of a review
    expect_allowed: bool | None = None
    expect_in_message: str | None = None
    content_type: str = "application/json"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)


def generate(rnd: random.Random, state: ConfigState) -> Case:
    """One fuzzed request; expectations where the category determines them."""
    path = rnd.choice(list(KINDS))
    obj = KINDS[path][4]()
    category = rnd.choice(
        [
            "valid-pod",
            "valid-pod",
            "malformed-json",
            "wrong-kind",
            "wrong-version",
            "missing-uid",
            "wrong-request-kind",
            "not-a-pod",
            "mutated-object",
            "mutated-object",
            "mutated-review",
            "bad-annotation",
            "content-type",
            "method",
        ]
    )
    version = rnd.choice(["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
    uid = str(uuid.UUID(int=rnd.getrandbits(128)))
    if category == "valid-pod":
        body = review(POD_MUTATOR_PATH, typical_pod(), version=version, uid=uid)
        case = Case(category, POD_MUTATOR_PATH, encode(body), version, uid, body["request"]["object"])
        if state.data is None:
            case.expect_allowed, case.expect_in_message = False, "inferenceservice-config not found"
        elif state.broken in USED_BY_POD:
            case.expect_allowed, case.expect_in_message = False, f'key "{state.broken}"'
        else:
            case.expect_allowed = True
        return case
    if category == "malformed-json":
        text = encode(review(path, obj, version=version, uid=uid))
        cut = text[: rnd.randrange(len(text))] + rnd.choice([b"", b"}", b"\xff", b"NaN", b"]]"])
        return Case(category, path, cut if not parses(cut) else cut + b",", expect_status=400)
    if category == "wrong-kind":
        body = review(path, obj, version=version, uid=uid)
        body["kind"] = random_json(rnd)
        return Case(category, path, encode(body), expect_status=400)
    if category == "wrong-version":
        body = review(path, obj, uid=uid)
        body["apiVersion"] = rnd.choice(["admission.k8s.io/v2", "v1", None, 3])
        return Case(category, path, encode(body), expect_status=400)
    if category == "missing-uid":
        body = review(path, obj, version=version, uid=uid)
        if rnd.random() < 0.5:
            del body["request"]["uid"]
        else:
            body["request"]["uid"] = rnd.choice(["", 7, None, []])
        return Case(category, path, encode(body), expect_status=400)
    if category == "wrong-request-kind":
        wrong = {POD_MUTATOR_PATH: ISVC_VALIDATOR_PATH}.get(path, POD_MUTATOR_PATH)
        body = review(wrong, KINDS[wrong][4](), version=version, uid=uid)
        return Case(
            category, path, encode(body), version, uid, expect_allowed=False, expect_in_message="expected"
        )
    if category == "not-a-pod":
        thing = rnd.choice(
            [
                [],
                "pod",
                42,
                {"spec": []},
                {
                    "metadata": {"labels": {"serving.kserve.io/inferenceservice": "x"}},
                    "spec": {"containers": "no"},
                },
            ]
        )
        body = review(POD_MUTATOR_PATH, thing, version=version, uid=uid)
        return Case(category, POD_MUTATOR_PATH, encode(body), version, uid, thing)
    if category == "mutated-object":
        obj = mutate_somewhere(rnd, obj)
        body = review(path, obj, version=version, uid=uid)
        return Case(category, path, encode(body), version, uid, obj)
    if category == "mutated-review":
        body = review(path, obj, version=version, uid=uid)
        request = mutate_somewhere(rnd, {k: v for k, v in body["request"].items() if k != "uid"})
        body["request"] = {**request, "uid": uid} if isinstance(request, dict) else request
        encoded = encode(body)
        return Case(
            category,
            path,
            encoded,
            version if isinstance(request, dict) else None,
            uid,
            body["request"].get("object") if isinstance(request, dict) else None,
        )
    if category == "bad-annotation":
        pod = typical_pod()
        key, value = rnd.choice(
            [
                (
                    "serving.kserve.io/storage-initializer-uid",
                    rnd.choice(["root", "-1", "1e3", "99999999999999999999"]),
                ),
                (
                    "internal.serving.kserve.io/storage-initializer-sourceuri",
                    rnd.choice(["pvc://", "pvc:///x", ""]),
                ),
                ("internal.serving.kserve.io/storage-spec", "true"),
                ("internal.serving.kserve.io/storage-spec-param", rnd.choice(["{", "[]", '{"a": 1}'])),
                ("internal.serving.kserve.io/batcher", "true"),
                ("internal.serving.kserve.io/agent", "true"),
                ("serving.kserve.io/gke-accelerator", rnd.choice(["", "x" * 300])),
                ("serving.kserve.io/enable-metric-aggregation", rnd.choice(["TRUE", "", "yes"])),
            ]
        )
        pod["metadata"]["annotations"][key] = value
        body = review(POD_MUTATOR_PATH, pod, version=version, uid=uid)
        return Case(category, POD_MUTATOR_PATH, encode(body), version, uid, pod)
    if category == "content-type":
        body = review(path, obj, version=version, uid=uid)
        ctype = rnd.choice(["text/plain", "application/yaml", "application/x-www-form-urlencoded", ""])
        return Case(category, path, encode(body), content_type=ctype, expect_status=415)
    method = rnd.choice(["GET", "PUT", "DELETE"])
    return Case(category, path, b"", method=method, expect_status=405)


def parses(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def huge_case(rnd: random.Random, chunked: bool) -> Case:
    filler = "x" * (MAX_BODY_BYTES + rnd.randrange(1, 4096))
    body = encode(review(POD_MUTATOR_PATH, {"metadata": {"annotations": {"a": filler}}}))
    return Case("huge-chunked" if chunked else "huge", POD_MUTATOR_PATH, body, expect_status=413)


@dataclass
class Tally:
    by_outcome: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1


def check_review(case: Case, status: int, content_type: str, text: str, where: str) -> str:
    """Raise AssertionError unless the answer is what `case` may get; returns an outcome label."""
    if case.expect_status is not None:
        assert status == case.expect_status, f"{where}: HTTP {status}: {text[:300]}"
        assert text.endswith("\n"), f"{where}: {text[:300]!r}"
        assert text.count("\n") == 1, f"{where}: not one line: {text[:300]!r}"
        assert "Traceback" not in text, where
        return f"http-{status}"
    if case.version is None and status == 400:  # the review itself was destroyed
        assert text.count("\n") == 1, f"{where}: {text[:300]!r}"
        return "http-400"
    assert status == 200, f"{where}: HTTP {status}: {text[:300]}"
    assert content_type == "application/json", where
    answer = json.loads(text)
    assert answer["kind"] == "AdmissionReview", where
    if case.version is not None:
        assert answer["apiVersion"] == case.version, where
    response = answer["response"]
    assert response["uid"] == case.uid, where
    assert isinstance(response["allowed"], bool), where
    code = response["status"]["code"]
    message = response["status"].get("message") or ""
    if not response["allowed"]:
        assert 400 <= code < 600, f"{where}: code {code}"
        assert message.strip(), f"{where}: denied without a message"
        assert "\n" not in message, f"{where}: multi-line message {message!r}"
        assert "internal error" not in message, f"{where}: a handler bug: {message}"
    if case.expect_allowed is not None:
        assert response["allowed"] is case.expect_allowed, f"{where}: {response}"
    if case.expect_in_message is not None:
        assert case.expect_in_message in message, f"{where}: {message!r}"
    if "patch" in response:
        assert response["patchType"] == "JSONPatch", where
        operations = json.loads(base64.b64decode(response["patch"]))
        patched = jsonpatch.apply_patch(copy.deepcopy(case.obj), operations)
        assert patched != case.obj, f"{where}: empty patch"
        return "patched"
    return "allowed" if response["allowed"] else f"denied-{code}"


@pytest.fixture
def ca() -> KeyPair:
    return generate_ca("fuzz-ca")


@pytest.fixture
async def running(tmp_path: Path, ca: KeyPair) -> AsyncIterator[tuple[WebhookServer, ConfigState]]:
    serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    write_cert_dir(tmp_path, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    state = ConfigState()
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=tmp_path, handler_timeout=5.0)
    server.register(POD_MUTATOR_PATH, PodMutatorHandler(PodMutator(state.provide, MemoryLookup())))
    server.register(ISVC_DEFAULTER_PATH, InferenceServiceDefaulter(state.provide))
    server.register(ISVC_VALIDATOR_PATH, InferenceServiceValidator(state.provide))
    server.register(TM_VALIDATOR_PATH, TrainedModelValidator())
    await server.start()
    try:
        yield server, state
    finally:
        await server.stop()


async def send(
    session: aiohttp.ClientSession, base: str, case: Case, chunked: bool = False
) -> tuple[int, str, str]:
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    data: Any = case.body
    if chunked:

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(case.body), 1 << 20):
                yield case.body[start : start + (1 << 20)]

        data = chunks()
    async with session.request(case.method, base + case.path, data=data, headers=headers) as response:
        return response.status, response.content_type, await response.text()


async def test_ten_thousand_fuzzed_requests_leave_the_server_serving(
    running: tuple[WebhookServer, ConfigState], ca: KeyPair
) -> None:
    server, state = running
    rnd = random.Random(SEED)
    base = f"https://127.0.0.1:{server.bound_port}"
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    connector = aiohttp.TCPConnector(ssl=context, limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    tally = Tally()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int, case: Case, config: str) -> None:
        where = f"seed {SEED} request {index} ({case.category}, {case.path}, config: {config})"
        async with semaphore:
            try:
                status, content_type, text = await send(session, base, case)
            except TimeoutError:
                tally.failures.append(f"{where}: no answer within {REQUEST_TIMEOUT}s")
                return
            except aiohttp.ClientError as exc:
                tally.failures.append(f"{where}: {exc!r}")
                return
        try:
            tally.count(check_review(case, status, content_type, text, where))
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            tally.failures.append(f"{where}: {exc!r}")

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for start in range(0, TOTAL - HUGE_PER_RUN, BATCH):
            config = state.set(rnd)
            count = min(BATCH, TOTAL - HUGE_PER_RUN - start)
            cases = [generate(rnd, state) for _ in range(count)]
            await asyncio.gather(*(one(start + i, c, config) for i, c in enumerate(cases)))
        state.data, state.broken = config_data(), None
        for n in range(HUGE_PER_RUN):
            chunked = n % 2 == 1
            case = huge_case(rnd, chunked)
            try:
                status, _, text = await send(session, base, case, chunked=chunked)
            except aiohttp.ClientError:
                # The server answers 413 and closes before the client has written everything: with a
                # known Content-Length the write may fail with a reset instead of reading the 413.
                tally.count("huge-reset")
                continue
            try:
                tally.count(check_review(case, status, "", text, f"huge request {n}"))
            except AssertionError as exc:
                tally.failures.append(str(exc))

        assert tally.failures == [], f"{len(tally.failures)} bad answers, first: {tally.failures[:5]}"
        assert sum(tally.by_outcome.values()) == TOTAL
        # The mix really exercised each kind of answer.
        for outcome in (
            "patched",
            "allowed",
            "denied-400",
            "denied-500",
            "http-400",
            "http-405",
            "http-415",
            "http-413",
        ):
            assert tally.by_outcome.get(outcome, 0) > 0, tally.by_outcome

        valid = typical_pod()
        case = Case("after", POD_MUTATOR_PATH, b"", "admission.k8s.io/v1", "after", valid)
        case.body = encode(review(POD_MUTATOR_PATH, valid, uid="after"))
        status, content_type, text = await send(session, base, case)
        assert check_review(case, status, content_type, text, "the request after the fuzzing") == "patched"
    await server.check()


def deeply_nested(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [600, 900])
async def test_deeply_nested_objects_get_400_and_one_log_line_on_every_webhook(
    running: tuple[WebhookServer, ConfigState], ca: KeyPair, caplog: pytest.LogCaptureFixture, levels: int
) -> None:
    server, _ = running
    base = f"https://127.0.0.1:{server.bound_port}"
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    ) as session:
        for path, (*_, make) in KINDS.items():
            obj = make()
            # Where a real object could hide it: under an annotation-like free-form map of the spec.
            obj.setdefault("spec", {})["nested"] = deeply_nested(levels)
            caplog.clear()
            case = Case(
                "nested", path, encode(review(path, obj, uid="deep")), "admission.k8s.io/v1", "deep", obj
            )
            status, content_type, text = await send(session, base, case)
            assert (status, content_type) == (200, "application/json"), text[:300]
            response = json.loads(text)["response"]
            assert response["uid"] == "deep"
            assert response["allowed"] is False
            assert response["status"]["code"] == 400, (path, response)
            assert "nested deeper than 100 levels" in response["status"]["message"]
            lines = [r for r in caplog.records if r.name.startswith("webhooks")]
            assert [(r.levelname, r.exc_info) for r in lines] == [("WARNING", None)], path
            assert len(lines[0].getMessage()) < 300
