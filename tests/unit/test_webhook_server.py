"""The webhook server in-process over real TLS on 127.0.0.1 with a generated CA.

Covers the HTTP contract (status codes for bad bodies, versions, timeouts, handler failures), certificate
hot reload (new connections see the new serial, no restart), the readiness check, and a fuzz run asserting
that every answer is a well-formed AdmissionReview or a 4xx and that the server keeps serving.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manager import httpserver
from manager.errors import ConfigurationError
from manager.httpserver import ConnectionLimits
from webhooks.admission import (
    ADMISSION_V1,
    ADMISSION_V1BETA1,
    AdmissionRequest,
    AdmissionResponse,
    allowed,
    denied,
    patch_response_from_raw,
)
from webhooks.certs import CA_FILE, KeyPair, generate_ca, issue_serving_cert, write_cert_dir
from webhooks.server import MAX_BODY_BYTES, WebhookServer, parse_go_duration

HANG_GUARD = 10.0
UID = "0b5ac1a0-1111-2222-3333-444455556666"


class Labeller:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        assert request.object is not None
        assert request.raw_object is not None
        mutated = copy.deepcopy(request.object)
        mutated.setdefault("metadata", {}).setdefault("labels", {})["mutated"] = "yes"
        return patch_response_from_raw(request.raw_object, mutated)


class Denier:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        return denied(f"{request.name} is not welcome")


class Exploder:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        raise KeyError("spec")


class Sleeper:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return allowed()


class WrongType:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        return {"allowed": True}  # type: ignore[return-value]


def make_ca() -> KeyPair:
    return generate_ca("test-ca")


def install(cert_dir: Path, ca: KeyPair) -> KeyPair:
    serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    write_cert_dir(cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    return serving


def client_context(cert_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert_dir / CA_FILE))


@pytest.fixture
def ca() -> KeyPair:
    return make_ca()


@pytest.fixture
def cert_dir(tmp_path: Path, ca: KeyPair) -> Path:
    install(tmp_path, ca)
    return tmp_path


@pytest.fixture
async def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
async def server(cert_dir: Path, sleeper: Sleeper) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(
        host="127.0.0.1", port=0, cert_dir=cert_dir, handler_timeout=0.3, reload_interval=0.02
    )
    server.register("/mutate", Labeller())
    server.register("/deny", Denier())
    server.register("/boom", Exploder())
    server.register("/slow", sleeper)
    server.register("/wrong", WrongType())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def session(cert_dir: Path) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_context(cert_dir))
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=HANG_GUARD)
    ) as s:
        yield s


def review(api_version: str = ADMISSION_V1, **request: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": UID,
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "name": "cm",
        "namespace": "ns",
        "operation": "CREATE",
        "userInfo": {"username": "u"},
        "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}},
    }
    body.update(request)
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": body}


async def post(
    session: aiohttp.ClientSession,
    server: WebhookServer,
    path: str,
    body: bytes | dict[str, Any],
    content_type: str = "application/json",
) -> tuple[int, str, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    url = f"https://127.0.0.1:{server.bound_port}{path}"
    async with session.post(url, data=data, headers={"Content-Type": content_type}) as response:
        text = await response.text()
        parsed = json.loads(text) if response.content_type == "application/json" else None
        return response.status, text, parsed


async def peer_serial(server: WebhookServer, context: ssl.SSLContext) -> int:
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.bound_port, ssl=context, server_hostname="127.0.0.1"),
        HANG_GUARD,
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("version", [ADMISSION_V1, ADMISSION_V1BETA1])
async def test_a_mutation_is_answered_with_a_json_patch_in_the_version_asked(
    server: WebhookServer, session: aiohttp.ClientSession, version: str
) -> None:
    status, _, answer = await post(session, server, "/mutate?timeout=10s", review(version))
    assert status == 200
    assert answer["apiVersion"] == version
    assert answer["kind"] == "AdmissionReview"
    response = AdmissionResponse.model_validate(answer["response"])
    assert response.uid == UID
    assert response.allowed
    assert answer["response"]["patchType"] == "JSONPatch"
    assert response.json_patch() == [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]


async def test_a_denial_carries_the_handlers_message(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    status, _, answer = await post(session, server, "/deny", review())
    assert status == 200
    assert answer["response"] == {
        "uid": UID,
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": "cm is not welcome", "status": "Failure"},
    }


async def test_a_denial_quoting_user_input_stays_on_one_line(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    body = review()
    body["request"]["name"] = "evil\nname\t"
    status, _, answer = await post(session, server, "/deny", body)
    assert status == 200
    assert answer["response"]["status"]["message"] == "evil\\nname\\t is not welcome"


async def test_a_body_over_7_mib_is_rejected_with_413(server: WebhookServer, cert_dir: Path) -> None:
    padded = review()
    padded["request"]["object"]["data"] = {"big": "x" * MAX_BODY_BYTES}
    body = json.dumps(padded).encode()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.bound_port, ssl=client_context(cert_dir)), HANG_GUARD
    )
    head = (
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    try:
        writer.write(head.encode() + body)
        await asyncio.wait_for(writer.drain(), HANG_GUARD)
        answer = await asyncio.wait_for(reader.read(), HANG_GUARD)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(f"request body of {len(body)} bytes exceeds 7340032\n".encode())


async def test_a_chunked_body_over_the_limit_is_rejected_with_413(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * (1024 * 1024)

    url = f"https://127.0.0.1:{server.bound_port}/mutate"
    async with session.post(url, data=chunks(), headers={"Content-Type": "application/json"}) as response:
        assert response.status == 413
        assert "exceeds 7340032 bytes" in await response.text()


@pytest.mark.parametrize("content_type", ["text/plain", "application/yaml", "application/json-patch+json"])
async def test_a_wrong_content_type_is_rejected_with_415(
    server: WebhookServer, session: aiohttp.ClientSession, content_type: str
) -> None:
    status, text, _ = await post(session, server, "/mutate", review(), content_type=content_type)
    assert status == 415
    assert f"Content-Type must be application/json, got {content_type}" in text


async def test_json_with_a_charset_parameter_is_accepted(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    status, _, answer = await post(session, server, "/deny", review(), "application/json; charset=utf-8")
    assert status == 200
    assert answer["response"]["allowed"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "request body is empty"),
        (b"{oops", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}', "kind must be AdmissionReview"),
        (
            b'{"apiVersion": "v1", "kind": "AdmissionReview", "request": {"uid": "x"}}',
            "apiVersion must be one of",
        ),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request is missing"),
    ],
)
async def test_unanswerable_bodies_get_400_with_a_reason(
    server: WebhookServer, session: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    status, text, _ = await post(session, server, "/mutate", body)
    assert status == 400
    assert message in text
    assert text.count("\n") == 1


async def test_a_missing_uid_gets_400(server: WebhookServer, session: aiohttp.ClientSession) -> None:
    body = review()
    del body["request"]["uid"]
    status, text, _ = await post(session, server, "/mutate", body)
    assert status == 400
    assert text == "request.uid is missing or not a non-empty string\n"


async def test_a_malformed_request_with_a_uid_is_answered_errored_400_in_its_version(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    status, _, answer = await post(session, server, "/mutate", review(ADMISSION_V1BETA1, operation="EXPLODE"))
    assert status == 200
    assert answer["apiVersion"] == ADMISSION_V1BETA1
    assert answer["response"]["uid"] == UID
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert answer["response"]["status"]["message"].startswith("request.operation: Input should be")


async def test_a_handler_exception_is_errored_500_and_logged(
    server: WebhookServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, answer = await post(session, server, "/boom", review())
    assert status == 200
    assert answer["response"]["uid"] == UID
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"] == {
        "code": 500,
        "message": "webhook /boom failed: KeyError: 'spec'",
        "status": "Failure",
    }
    failure = next(
        r for r in caplog.records if "webhook /boom failed on CREATE ConfigMap ns/cm" in r.getMessage()
    )
    assert failure.exc_info is not None
    status, _, answer = await post(session, server, "/deny", review())
    assert (status, answer["response"]["allowed"]) == (200, False)


async def test_a_handler_returning_garbage_is_errored_500(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    _, _, answer = await post(session, server, "/wrong", review())
    assert answer["response"]["status"]["code"] == 500
    assert "handler returned no AdmissionResponse" in answer["response"]["status"]["message"]


async def test_a_slow_handler_is_cancelled_and_answered_504(
    server: WebhookServer, session: aiohttp.ClientSession, sleeper: Sleeper
) -> None:
    status, _, answer = await post(session, server, "/slow", review())
    assert status == 200
    assert answer["response"]["uid"] == UID
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 504
    assert answer["response"]["status"]["message"] == "webhook /slow did not answer within 0.3s"
    assert sleeper.cancelled.is_set()


async def test_the_deadline_stays_inside_the_api_servers_timeout(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    server.handler_timeout = 60.0
    _, _, answer = await post(session, server, "/slow?timeout=1s", review())
    assert answer["response"]["status"]["message"] == "webhook /slow did not answer within 0.5s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("", None),
        ("10", None),
        ("s", None),
        ("1x", None),
    ],
)
def test_parse_go_duration(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


async def test_unknown_paths_and_other_methods(server: WebhookServer, session: aiohttp.ClientSession) -> None:
    status, text, _ = await post(session, server, "/nothing-here", review())
    assert (status, text) == (404, "no webhook is registered at /nothing-here\n")
    async with session.get(f"https://127.0.0.1:{server.bound_port}/mutate") as response:
        assert response.status == 405


async def test_register_rejects_duplicates_and_relative_paths(server: WebhookServer) -> None:
    with pytest.raises(ValueError, match="already registered at /mutate"):
        server.register("/mutate", Denier())
    with pytest.raises(ValueError, match="must start with '/'"):
        server.register("mutate", Denier())


async def test_a_handler_registered_after_start_is_served(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    server.register("/late", Denier())
    status, _, answer = await post(session, server, "/late", review())
    assert (status, answer["response"]["status"]["message"]) == (200, "cm is not welcome")
    assert "/late" in server.paths


class SnapshotProbe:
    """Denies with whether it was given `request.raw_object`."""

    def __init__(self, reads: bool) -> None:
        self.reads_raw_object = reads

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        return denied(f"snapshot={request.raw_object is not None}")


async def test_the_snapshot_is_taken_only_for_handlers_that_read_it(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    server.register("/reads", SnapshotProbe(True))
    server.register("/copies", SnapshotProbe(False))
    for path, want in (("/reads", "snapshot=True"), ("/copies", "snapshot=False")):
        status, _, answer = await post(session, server, path, review())
        assert (status, answer["response"]["status"]["message"]) == (200, want)
    # A handler that says nothing (Labeller) gets the snapshot: its patch is built from it.
    status, _, answer = await post(session, server, "/mutate", review())
    assert (status, answer["response"]["patchType"]) == (200, "JSONPatch")


async def test_tls_below_1_2_is_not_offered(server: WebhookServer, cert_dir: Path) -> None:
    assert server._context is not None
    assert server._context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = client_context(cert_dir)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await peer_serial(server, tls12) > 0


async def test_an_untrusted_client_cannot_complete_the_handshake(server: WebhookServer) -> None:
    stranger = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        await peer_serial(server, stranger)


async def test_replaced_certificate_files_are_served_to_new_connections_without_restart(
    server: WebhookServer, cert_dir: Path, ca: KeyPair
) -> None:
    context = client_context(cert_dir)
    first = await peer_serial(server, context)
    assert server.certificate is not None
    assert first == server.certificate.serial_number
    renewed = install(cert_dir, ca)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while await peer_serial(server, context) != renewed.cert.serial_number:
        assert loop.time() < deadline, "the new certificate was never served"
        await asyncio.sleep(0.02)
    assert server.certificate is not None
    assert server.certificate.serial_number == renewed.cert.serial_number != first


async def test_a_new_ca_is_served_after_rotation(server: WebhookServer, cert_dir: Path) -> None:
    install(cert_dir, make_ca())
    assert server.reload_if_changed()
    assert await peer_serial(server, client_context(cert_dir)) == server.certificate.serial_number  # type: ignore[union-attr]


async def test_a_half_written_pair_keeps_the_old_certificate_until_complete(
    server: WebhookServer, cert_dir: Path, ca: KeyPair
) -> None:
    server.reload_interval = 3600.0
    context = client_context(cert_dir)
    old = await peer_serial(server, context)
    renewed = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    (cert_dir / "tls.key").write_bytes(renewed.key_pem)
    assert not server.reload_if_changed()
    assert await peer_serial(server, context) == old
    (cert_dir / "tls.crt").write_bytes(renewed.cert_pem)
    assert server.reload_if_changed()
    assert not server.reload_if_changed()
    assert await peer_serial(server, context) == renewed.cert.serial_number


async def test_readiness_check(cert_dir: Path) -> None:
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=cert_dir)
    with pytest.raises(RuntimeError, match="not listening"):
        await server.check()
    await server.start()
    try:
        await server.check()
    finally:
        await server.stop()
    with pytest.raises(RuntimeError, match="not listening"):
        await server.check()


async def test_missing_certificates_are_a_one_line_configuration_error(tmp_path: Path) -> None:
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=tmp_path / "absent")
    with pytest.raises(ConfigurationError, match=r"webhook server: cannot load .*tls\.crt and .*tls\.key"):
        await server.start()


async def test_a_port_in_use_is_a_configuration_error(server: WebhookServer, cert_dir: Path) -> None:
    second = WebhookServer(host="127.0.0.1", port=server.bound_port, cert_dir=cert_dir)
    with pytest.raises(ConfigurationError, match="address already in use"):
        await second.start()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_REQUEST_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "uid": st.one_of(st.just(UID), _JSON),
        "kind": st.one_of(st.just({"group": "", "version": "v1", "kind": "ConfigMap"}), _JSON),
        "resource": st.one_of(st.just({"group": "", "version": "v1", "resource": "configmaps"}), _JSON),
        "operation": st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT"]), _JSON),
        "object": st.one_of(st.just({"metadata": {"name": "x"}}), _JSON),
        "userInfo": _JSON,
        "name": _JSON,
    },
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda version, kind, request: json.dumps(
            {"apiVersion": version, "kind": kind, "request": request}
        ).encode(),
        st.sampled_from([ADMISSION_V1, ADMISSION_V1BETA1, "v1", None]),
        st.sampled_from(["AdmissionReview", "Pod", None]),
        _REQUEST_FIELDS,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, path=st.sampled_from(["/mutate", "/deny", "/boom"]))
async def test_fuzzed_bodies_get_an_admission_review_or_a_4xx(
    server: WebhookServer, session: aiohttp.ClientSession, body: bytes, path: str
) -> None:
    status, text, answer = await post(session, server, path, body)
    if status == 200:
        assert answer["kind"] == "AdmissionReview"
        assert answer["apiVersion"] in (ADMISSION_V1, ADMISSION_V1BETA1)
        response = AdmissionResponse.model_validate(answer["response"])
        assert response.uid
        assert response.allowed or (response.status is not None and response.status.message)
    else:
        assert 400 <= status < 500, (status, text)
        assert text.strip()
    ok, _, answer = await post(session, server, "/deny", review())
    assert (ok, answer["response"]["uid"]) == (200, UID)


# --- deeply nested JSON (issue 11, item 8) -------------------------------------------------------------


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [150, 600, 900])
async def test_deeply_nested_json_is_refused_with_400_and_one_log_line(
    server: WebhookServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    body = review()
    body["request"]["object"]["data"] = nested(depth)
    with caplog.at_level(logging.INFO):
        status, _, answer = await post(session, server, "/mutate", body)
    assert status == 200
    assert answer["response"]["uid"] == UID
    assert answer["response"]["status"] == {
        "code": 400,
        "message": "request is nested deeper than 100 levels",
        "status": "Failure",
    }
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("webhooks")]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None
    assert "nested deeper than 100 levels" in lines[0].getMessage()
    assert len(lines[0].getMessage()) < 300


class Recurser:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        def down(n: int) -> int:
            return down(n + 1) + 1

        return allowed(str(down(0)))


async def test_a_handler_hitting_the_recursion_limit_is_a_400_and_one_log_line(
    server: WebhookServer, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    server.register("/recurse", Recurser())
    with caplog.at_level(logging.INFO):
        status, _, answer = await post(session, server, "/recurse", review())
    assert status == 200
    assert answer["response"]["status"] == {
        "code": 400,
        "message": "the ConfigMap is nested too deeply to process",
        "status": "Failure",
    }
    lines = [r for r in caplog.records if r.name.startswith("webhooks")]
    assert [(r.levelno, r.exc_info) for r in lines] == [(logging.WARNING, None)]


# --- connections: timeouts, the bound, memory (issue 11, item 1) ----------------------------------------


LIMITS = ConnectionLimits(read_header_timeout=0.3, idle_timeout=0.6, max_connections=3)


class Blocker:
    """Holds requests until released, so that their connections stay busy."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        self.entered += 1
        await self.release.wait()
        return allowed()


@pytest.fixture
async def blocker() -> Blocker:
    return Blocker()


@pytest.fixture
async def limited(cert_dir: Path, blocker: Blocker) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(
        host="127.0.0.1", port=0, cert_dir=cert_dir, handler_timeout=HANG_GUARD, limits=LIMITS
    )
    server.register("/deny", Denier())
    server.register("/block", blocker)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(server: WebhookServer, cert_dir: Path | None) -> Stream:
    """A TLS connection with its handshake done, or (without `cert_dir`) a bare TCP one."""
    context = client_context(cert_dir) if cert_dir is not None else None
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.bound_port, ssl=context), HANG_GUARD
    )


async def closed_by_server(stream: Stream) -> bool:
    """Reads until the server closes the connection (True), or until HANG_GUARD (False)."""
    reader, writer = stream
    try:
        async with asyncio.timeout(HANG_GUARD):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
    return True


def request_bytes(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def exchange(stream: Stream, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request over a keep-alive connection; returns the decoded JSON answer."""
    reader, writer = stream
    writer.write(request_bytes(path, body))
    await writer.drain()
    async with asyncio.timeout(HANG_GUARD):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer: dict[str, Any] = json.loads(await reader.readexactly(length))
    assert head.startswith(b"HTTP/1.1 200 "), head
    return answer


async def test_a_connection_that_sends_nothing_after_the_handshake_is_closed(
    limited: WebhookServer, cert_dir: Path
) -> None:
    stream = await connect(limited, cert_dir)
    assert await closed_by_server(stream)
    assert limited.open_connections == 0


async def test_a_connection_that_never_starts_the_handshake_is_closed(limited: WebhookServer) -> None:
    assert await closed_by_server(await connect(limited, None))


async def test_request_headers_that_stop_halfway_are_cut_off(limited: WebhookServer, cert_dir: Path) -> None:
    stream = await connect(limited, cert_dir)
    stream[1].write(b"POST /deny HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert await closed_by_server(stream)


async def test_a_keep_alive_connection_serves_requests_then_closes_when_idle(
    limited: WebhookServer, cert_dir: Path
) -> None:
    stream = await connect(limited, cert_dir)
    for _ in range(3):
        answer = await exchange(stream, "/deny", review())
        assert answer["response"]["uid"] == UID
        await asyncio.sleep(
            LIMITS.read_header_timeout * 1.5
        )  # longer than the header timeout, shorter than idle
    assert await closed_by_server(stream)


async def test_at_the_limit_the_longest_idle_connection_makes_room(
    limited: WebhookServer, cert_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oldest = await connect(limited, cert_dir)
    others = [await connect(limited, cert_dir) for _ in range(LIMITS.max_connections - 1)]
    used = others[0]
    await exchange(used, "/deny", review())  # now the most recently active
    with caplog.at_level(logging.WARNING, logger="manager.httpserver"):
        newest = await connect(limited, cert_dir)
        assert await closed_by_server(oldest)
        answer = await exchange(newest, "/deny", review())
    assert answer["response"]["uid"] == UID
    await exchange(used, "/deny", review())
    assert limited.open_connections == LIMITS.max_connections
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "webhook server: at its limit of 3 open connections: closed 1 idle connection(s) to admit new ones "
        "and refused 0 new connection(s) while all were busy"
    ]
    for stream in [newest, *others]:
        stream[1].close()


async def test_at_the_limit_with_every_connection_busy_a_new_one_is_refused(
    limited: WebhookServer, cert_dir: Path, blocker: Blocker, caplog: pytest.LogCaptureFixture
) -> None:
    busy = [await connect(limited, cert_dir) for _ in range(LIMITS.max_connections)]
    for _, writer in busy:
        writer.write(request_bytes("/block", review()))
    async with asyncio.timeout(HANG_GUARD):
        while blocker.entered < LIMITS.max_connections:
            await asyncio.sleep(0.01)
    with (
        caplog.at_level(logging.WARNING, logger="manager.httpserver"),
        pytest.raises((ConnectionError, ssl.SSLError, asyncio.IncompleteReadError)),
    ):
        await connect(limited, cert_dir)
    assert any("refused 1 new connection(s) while all were busy" in r.getMessage() for r in caplog.records)
    blocker.release.set()
    for stream in busy:
        reader, writer = stream
        async with asyncio.timeout(HANG_GUARD):
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200 ")
        writer.close()


async def test_stop_closes_connections_still_in_their_handshake(cert_dir: Path) -> None:
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=cert_dir)  # the 32 s default deadlines
    await server.start()
    try:
        bare = await connect(server, None)
        async with asyncio.timeout(HANG_GUARD):
            while server.open_connections < 1:
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
    assert await closed_by_server(bare)
    assert server.open_connections == 0


async def test_memory_is_handed_back_after_a_burst_of_closed_connections(
    limited: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[None] = []
    monkeypatch.setattr(httpserver, "release_memory", lambda: trims.append(None))
    monkeypatch.setattr(httpserver, "TRIM_DELAY", 0.0)
    for _ in range(httpserver.TRIM_AFTER_CLOSES):
        _, writer = await connect(limited, None)
        writer.close()
        await writer.wait_closed()
    async with asyncio.timeout(HANG_GUARD):
        while not trims:
            await asyncio.sleep(0.01)
    assert len(trims) == 1


async def test_a_body_of_several_mib_is_read_whole_through_the_small_tls_buffer(
    server: WebhookServer, session: aiohttp.ClientSession
) -> None:
    body = review()
    body["request"]["object"]["data"] = {"big": "x" * (6 * 1024 * 1024)}
    status, _, answer = await post(session, server, "/mutate", body)
    assert status == 200
    assert answer["response"]["allowed"] is True
    assert len(answer["response"]["patch"]) > 0


async def test_a_body_that_stops_arriving_gets_408_within_the_deadline(
    server: WebhookServer, cert_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(server, cert_dir)
    writer.write(
        b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"apiVersion": '
    )
    with caplog.at_level(logging.WARNING, logger="webhooks.server"):
        async with asyncio.timeout(HANG_GUARD):
            head = await reader.readuntil(b"\r\n\r\n")
            answer = await reader.readexactly(len(b"request body not received within 0.3s\n"))
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Connection: close" in head
    assert answer == b"request body not received within 0.3s\n"
    assert [r.getMessage() for r in caplog.records] == [
        "webhook /mutate: refused a request from 127.0.0.1: body not received"
    ]
