"""The real kube-apiserver calls our webhook server over TLS, trusting a CA we generated.

There is no Service routing to loopback, so the configurations use `clientConfig.url`
(`https://127.0.0.1:<port>/...`, covered by the serving cert's IP SAN). Webhook configurations are
cluster-scoped: each test uses unique names and an objectSelector matching only its own objects, and deletes
its configurations afterwards, so other tests (and their pods) are never sent to a server that is gone.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from manager.client import CONFIGMAPS, SERVICES, Client, Object, Resource
from manager.errors import ApiError, NotFound
from webhooks.admission import AdmissionRequest, AdmissionResponse, denied, patch_response_from_raw
from webhooks.certs import (
    CA_FILE,
    MUTATING_WEBHOOK_CONFIGURATIONS,
    VALIDATING_WEBHOOK_CONFIGURATIONS,
    CertificateManager,
    KeyPair,
    generate_ca,
    issue_serving_cert,
    patch_ca_bundle,
    write_cert_dir,
)
from webhooks.server import WebhookServer

HANG_GUARD = 30.0
REPO = Path(__file__).resolve().parents[2]


class Labeller:
    """Adds a label, so the created object shows that the API server applied our patch."""

    def __init__(self) -> None:
        self.versions: list[str] = []

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        assert request.object is not None
        assert request.raw_object is not None
        mutated = copy.deepcopy(request.object)
        mutated["metadata"].setdefault("labels", {})["mutated-by"] = "kserve-py"
        return patch_response_from_raw(request.raw_object, mutated)


class Denier:
    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        return denied(f"configmap {request.name} is not allowed: rename it")


@pytest.fixture
def ca() -> KeyPair:
    return generate_ca("webhook-it-ca")


@pytest.fixture
def cert_dir(tmp_path: Path, ca: KeyPair) -> Path:
    install(tmp_path, ca)
    return tmp_path


@pytest.fixture
async def server(cert_dir: Path) -> AsyncIterator[WebhookServer]:
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=cert_dir, reload_interval=0.05)
    server.register("/test-mutate", Labeller())
    server.register("/test-deny", Denier())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def install(cert_dir: Path, ca: KeyPair) -> KeyPair:
    serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    write_cert_dir(cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    return serving


def webhook_configuration(
    kind: str, name: str, url: str, selector: dict[str, str], ca_pem: bytes, versions: list[str]
) -> Object:
    webhook: dict[str, Any] = {
        "name": f"{name}.webhooks.kserve.io",
        "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
        ],
        "objectSelector": {"matchLabels": selector},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": versions,
        "timeoutSeconds": 5,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [webhook],
    }


@asynccontextmanager
async def registered(admin: Client, resource: Resource, body: Object) -> AsyncIterator[Object]:
    created = await admin.create(resource, body)
    try:
        yield created
    finally:
        with suppress(NotFound):
            await admin.delete(resource, body["metadata"]["name"])


def configmap(namespace: str, name: str, labels: dict[str, str]) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": {"k": "v"},
    }


async def eventually(attempt: Callable[[int], Awaitable[bool]]) -> None:
    """Retry until the API server has picked up a new webhook configuration (its informer lags a little)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    n = 0
    while not await attempt(n):
        assert loop.time() < deadline, "the API server never used the webhook configuration"
        n += 1
        await asyncio.sleep(0.05)


async def create_until_mutated(admin: Client, namespace: str, selector: dict[str, str]) -> Object:
    result: Object = {}

    async def attempt(n: int) -> bool:
        nonlocal result
        result = await admin.create(
            CONFIGMAPS, configmap(namespace, f"cm-{n}-{secrets.token_hex(2)}", selector)
        )
        return bool(result["metadata"]["labels"].get("mutated-by") == "kserve-py")

    await eventually(attempt)
    return result


async def peer_serial(server: WebhookServer, ca_pem: bytes) -> int:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.bound_port, ssl=context, server_hostname="127.0.0.1"),
        HANG_GUARD,
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        serial: int = x509.load_der_x509_certificate(der).serial_number
        return serial
    finally:
        writer.close()


@pytest.mark.parametrize("versions", [["v1"], ["v1beta1"]])
async def test_the_api_server_applies_our_patch_over_tls(
    admin: Client, namespace: str, server: WebhookServer, ca: KeyPair, versions: list[str]
) -> None:
    token = secrets.token_hex(4)
    selector = {"webhook-it": token}
    body = webhook_configuration(
        "MutatingWebhookConfiguration",
        f"it-mutate-{token}",
        f"https://127.0.0.1:{server.bound_port}/test-mutate",
        selector,
        ca.cert_pem,
        versions,
    )
    async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
        mutated = await create_until_mutated(admin, namespace, selector)
        assert mutated["metadata"]["labels"] == {"webhook-it": token, "mutated-by": "kserve-py"}
        stored = await admin.get(CONFIGMAPS, mutated["metadata"]["name"], namespace)
        assert stored["metadata"]["labels"]["mutated-by"] == "kserve-py"
        untouched = await admin.create(CONFIGMAPS, configmap(namespace, "unselected", {"other": token}))
        assert untouched["metadata"]["labels"] == {"other": token}


async def test_a_denial_reaches_the_user_with_our_message(
    admin: Client, namespace: str, server: WebhookServer, ca: KeyPair
) -> None:
    token = secrets.token_hex(4)
    selector = {"webhook-it": token}
    name = f"it-deny-{token}"
    body = webhook_configuration(
        "ValidatingWebhookConfiguration",
        name,
        f"https://127.0.0.1:{server.bound_port}/test-deny",
        selector,
        ca.cert_pem,
        ["v1", "v1beta1"],
    )
    error: ApiError | None = None
    attempted = ""

    async def attempt(n: int) -> bool:
        nonlocal error, attempted
        attempted = f"forbidden-{n}"
        try:
            await admin.create(CONFIGMAPS, configmap(namespace, attempted, selector))
        except ApiError as exc:
            error = exc
            return True
        return False

    async with registered(admin, VALIDATING_WEBHOOK_CONFIGURATIONS, body):
        await eventually(attempt)
    assert error is not None
    assert error.status == 403
    assert error.message == (
        f'admission webhook "{name}.webhooks.kserve.io" denied the request: '
        f"configmap {attempted} is not allowed: rename it"
    )


async def test_rotated_files_are_served_to_the_api_server_without_restart(
    admin: Client, namespace: str, server: WebhookServer, ca: KeyPair, cert_dir: Path
) -> None:
    token = secrets.token_hex(4)
    selector = {"webhook-it": token}
    body = webhook_configuration(
        "MutatingWebhookConfiguration",
        f"it-rotate-{token}",
        f"https://127.0.0.1:{server.bound_port}/test-mutate",
        selector,
        ca.cert_pem,
        ["v1"],
    )
    async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
        await create_until_mutated(admin, namespace, selector)
        before = await peer_serial(server, ca.cert_pem)
        renewed = install(cert_dir, ca)

        async def served(_: int) -> bool:
            return await peer_serial(server, ca.cert_pem) == renewed.cert.serial_number

        await eventually(served)
        assert renewed.cert.serial_number != before
        again = await admin.create(CONFIGMAPS, configmap(namespace, "after-rotation", selector))
        assert again["metadata"]["labels"]["mutated-by"] == "kserve-py"


async def test_certificate_manager_sets_the_ca_bundle_and_rotates_to_a_new_ca(
    admin: Client, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_hex(4)
    selector = {"webhook-it": token}
    name = f"it-certmanager-{token}"
    cert_dir = tmp_path / "certs"
    certificates = CertificateManager(
        admin,
        cert_dir,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        mutating_configs=[name],
        validating_configs=[f"absent-{token}"],
    )
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=cert_dir, reload_interval=0.05)
    server.register("/test-mutate", Labeller())
    # The manager starts the certificate manager first, so the server finds its files.
    await certificates.start()
    await server.start()
    body = webhook_configuration(
        "MutatingWebhookConfiguration",
        name,
        f"https://127.0.0.1:{server.bound_port}/test-mutate",
        selector,
        b"\n",
        ["v1"],
    )
    try:
        async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
            with caplog.at_level(logging.INFO, logger="webhooks.certs"):
                assert await certificates.sync_ca_bundles() == 1
            assert f"ValidatingWebhookConfiguration absent-{token} does not exist" in caplog.text
            assert await certificates.sync_ca_bundles() == 0
            first_ca = (cert_dir / CA_FILE).read_bytes()
            await create_until_mutated(admin, namespace, selector)

            # A restarted process reuses the files but not the CA key: rotating it mints a new CA.
            restarted = CertificateManager(
                admin,
                cert_dir,
                dns_names=["localhost"],
                ip_addresses=["127.0.0.1"],
                mutating_configs=[name],
                validating_configs=[],
            )
            await restarted.start()
            await restarted.stop()
            assert restarted.certificate == certificates.certificate
            assert (cert_dir / CA_FILE).read_bytes() == first_ca
            assert await restarted.rotate() is True
            second_ca = (cert_dir / CA_FILE).read_bytes()
            assert second_ca != first_ca
            stored = await admin.get(MUTATING_WEBHOOK_CONFIGURATIONS, name)
            bundle = base64.b64decode(stored["webhooks"][0]["clientConfig"]["caBundle"])
            assert bundle == second_ca + first_ca
            assert restarted.certificate is not None

            expected = restarted.certificate.serial_number

            async def served(_: int) -> bool:
                try:
                    return await peer_serial(server, second_ca) == expected
                except ssl.SSLCertVerificationError:
                    return False  # still the certificate of the first CA

            await eventually(served)
            again = await admin.create(CONFIGMAPS, configmap(namespace, "new-ca", selector))
            assert again["metadata"]["labels"]["mutated-by"] == "kserve-py"
    finally:
        await server.stop()
        await certificates.stop()


async def test_patch_ca_bundle_skips_missing_configurations(admin: Client) -> None:
    assert await patch_ca_bundle(admin, b"pem", [f"missing-{secrets.token_hex(4)}"], ["missing-too"]) == 0


def _documents(path: Path) -> list[Object]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


async def test_the_shipped_webhook_manifests_are_accepted_by_the_api_server(
    admin: Client, namespace: str
) -> None:
    documents = _documents(REPO / "config/webhook/manifests.yaml")
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("MutatingWebhookConfiguration", "inferenceservice.serving.kserve.io"),
        ("ValidatingWebhookConfiguration", "inferenceservice.serving.kserve.io"),
        ("ValidatingWebhookConfiguration", "trainedmodel.serving.kserve.io"),
    ]
    resources = {
        "MutatingWebhookConfiguration": MUTATING_WEBHOOK_CONFIGURATIONS,
        "ValidatingWebhookConfiguration": VALIDATING_WEBHOOK_CONFIGURATIONS,
    }
    for document in documents:
        accepted = await admin.request(
            "POST", resources[document["kind"]].path(), query={"dryRun": "All"}, body=document
        )
        for webhook in accepted["webhooks"]:
            assert webhook["failurePolicy"] == "Fail"
            assert webhook["sideEffects"] == "None"
            assert webhook["admissionReviewVersions"] == ["v1", "v1beta1"]
            assert webhook["clientConfig"]["service"]["name"] == "kserve-webhook-server-service"
    pod_mutator = documents[0]["webhooks"][1]
    assert pod_mutator["reinvocationPolicy"] == "IfNeeded"
    assert pod_mutator["clientConfig"]["service"]["path"] == "/mutate-pods"
    (service,) = _documents(REPO / "config/webhook/service.yaml")
    service["metadata"]["namespace"] = namespace
    accepted = await admin.request("POST", SERVICES.path(namespace), query={"dryRun": "All"}, body=service)
    assert accepted["spec"]["ports"][0]["port"] == 443
