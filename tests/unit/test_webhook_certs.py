"""Self-signed certificates: issuance, atomic files, reuse decisions, caBundle patching and rotation."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import ipaddress
import stat
from pathlib import Path
from typing import Any, cast

import jsonpatch
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from manager.client import Client, Object, PatchType, Resource
from manager.errors import ConfigurationError, Invalid, NotFound, ServerUnavailable
from webhooks.certs import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateManager,
    generate_ca,
    issue_serving_cert,
    patch_ca_bundle,
    read_cert_dir,
    reusable,
    service_dns_names,
    utcnow,
    write_cert_dir,
)

HANG_GUARD = 10.0
NAMES = service_dns_names("kserve-webhook-server-service", "kserve")


class FakeClient:
    """Just enough of `Client` for caBundle patching: JSON Patch with `test` ops, resourceVersions."""

    def __init__(self, objects: dict[str, Object]) -> None:
        self.objects = objects
        self.patches: list[tuple[str, list[dict[str, Any]]]] = []
        self.interfere = 0

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        key = f"{resource.kind}/{name}"
        if key not in self.objects:
            raise NotFound(404, "NotFound", f"{key} not found")
        return copy.deepcopy(self.objects[key])

    async def patch(self, resource: Resource, name: str, patch: Any, *, patch_type: PatchType) -> Object:
        assert patch_type == PatchType.JSON
        key = f"{resource.kind}/{name}"
        if self.interfere:
            self.interfere -= 1
            self._bump(key)
        try:
            patched = jsonpatch.apply_patch(self.objects[key], patch)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise Invalid(422, "Invalid", str(exc)) from exc
        self.objects[key] = patched
        self._bump(key)
        self.patches.append((key, patch))
        return copy.deepcopy(patched)

    def _bump(self, key: str) -> None:
        meta = self.objects[key]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def configuration(kind: str, name: str, hooks: int) -> Object:
    return {
        "kind": kind,
        "metadata": {"name": name, "resourceVersion": "1"},
        "webhooks": [{"name": f"h{i}.x.io", "clientConfig": {"caBundle": "Cg=="}} for i in range(hooks)],
    }


def fake_cluster() -> FakeClient:
    return FakeClient(
        {
            "MutatingWebhookConfiguration/m": configuration("MutatingWebhookConfiguration", "m", 2),
            "ValidatingWebhookConfiguration/v": configuration("ValidatingWebhookConfiguration", "v", 1),
        }
    )


def bundles(client: FakeClient) -> list[bytes]:
    return [
        base64.b64decode(hook["clientConfig"]["caBundle"])
        for obj in client.objects.values()
        for hook in obj["webhooks"]
    ]


def test_serving_certificate_chains_to_the_ca_and_covers_the_service() -> None:
    ca = generate_ca()
    serving = issue_serving_cert(ca, NAMES, ["127.0.0.1"])
    serving.cert.verify_directly_issued_by(ca.cert)
    san = serving.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "kserve-webhook-server-service",
        "kserve-webhook-server-service.kserve",
        "kserve-webhook-server-service.kserve.svc",
        "kserve-webhook-server-service.kserve.svc.cluster.local",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = serving.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not serving.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    ca = generate_ca(valid_for=dt.timedelta(days=10))
    serving = issue_serving_cert(ca, ["a"], valid_for=dt.timedelta(days=365))
    assert serving.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_a_serving_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        issue_serving_cert(generate_ca(), [])


def test_files_are_written_atomically_with_a_private_key_mode(tmp_path: Path) -> None:
    ca = generate_ca()
    serving = issue_serving_cert(ca, NAMES)
    target = tmp_path / "nested" / "certs"
    write_cert_dir(target, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    assert sorted(p.name for p in target.iterdir()) == [CA_FILE, CERT_FILE, KEY_FILE]
    assert stat.S_IMODE((target / KEY_FILE).stat().st_mode) == 0o600
    stored = read_cert_dir(target)
    assert stored is not None
    assert stored.cert == serving.cert
    assert stored.ca == ca.cert


def test_an_unwritable_cert_dir_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot write webhook certificates to"):
        write_cert_dir(blocker / "certs", ca_pem=b"a", cert_pem=b"b", key_pem=b"c")


def test_read_cert_dir_is_none_for_missing_or_garbage_files(tmp_path: Path) -> None:
    assert read_cert_dir(tmp_path) is None
    write_cert_dir(tmp_path, ca_pem=b"junk", cert_pem=b"junk", key_pem=b"junk")
    assert read_cert_dir(tmp_path) is None


def test_reuse_decisions(tmp_path: Path) -> None:
    now = utcnow()
    ca = generate_ca(now=now)
    serving = issue_serving_cert(ca, NAMES, ["127.0.0.1"], valid_for=dt.timedelta(days=90), now=now)
    write_cert_dir(tmp_path, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
    stored = read_cert_dir(tmp_path)
    assert stored is not None
    month = dt.timedelta(days=30)
    assert reusable(stored, NAMES, ["127.0.0.1"], renew_before=month, now=now) is None
    late = now + dt.timedelta(days=61)
    assert (reusable(stored, NAMES, [], renew_before=month, now=late) or "").startswith(
        "certificate expires at"
    )
    assert reusable(stored, [*NAMES, "extra.example"], [], renew_before=month, now=now) == (
        "certificate does not cover extra.example"
    )
    assert (
        reusable(stored, [], ["10.0.0.1"], renew_before=month, now=now)
        == "certificate does not cover 10.0.0.1"
    )
    write_cert_dir(
        tmp_path, ca_pem=generate_ca().cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem
    )
    other_ca = read_cert_dir(tmp_path)
    assert other_ca is not None
    assert reusable(other_ca, NAMES, [], renew_before=month, now=now) == "certificate is not signed by ca.crt"
    stranger = issue_serving_cert(ca, NAMES)
    write_cert_dir(tmp_path, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=stranger.key_pem)
    mismatched = read_cert_dir(tmp_path)
    assert mismatched is not None
    assert reusable(mismatched, NAMES, [], renew_before=month, now=now) == "tls.key does not match tls.crt"


async def test_patch_ca_bundle_sets_every_webhook_once_and_skips_missing() -> None:
    client = fake_cluster()
    api = cast(Client, client)
    assert await patch_ca_bundle(api, b"PEM", ["m", "absent"], ["v"]) == 3
    assert bundles(client) == [b"PEM", b"PEM", b"PEM"]
    assert await patch_ca_bundle(api, b"PEM", ["m"], ["v"]) == 0
    assert len(client.patches) == 2
    assert client.patches[0][1][0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "1"}


async def test_patch_ca_bundle_retries_after_a_concurrent_change() -> None:
    client = fake_cluster()
    client.interfere = 1
    assert await patch_ca_bundle(cast(Client, client), b"PEM", ["m"], []) == 2
    assert bundles(client)[:2] == [b"PEM", b"PEM"]


async def test_patch_ca_bundle_gives_up_after_repeated_conflicts() -> None:
    client = fake_cluster()
    client.interfere = 100
    with pytest.raises(Invalid):
        await patch_ca_bundle(cast(Client, client), b"PEM", ["m"], [])


def manager(client: FakeClient, cert_dir: Path, **kwargs: Any) -> CertificateManager:
    return CertificateManager(
        cast(Client, client),
        cert_dir,
        dns_names=NAMES,
        ip_addresses=["127.0.0.1"],
        mutating_configs=["m"],
        validating_configs=["v"],
        **kwargs,
    )


async def test_start_issues_then_a_restart_reuses_and_new_names_reissue(tmp_path: Path) -> None:
    client = fake_cluster()
    first = manager(client, tmp_path)
    await first.start()
    await first.stop()
    ca_pem = (tmp_path / CA_FILE).read_bytes()
    assert bundles(client) == [ca_pem] * 3
    assert first.certificate is not None
    second = manager(client, tmp_path)
    assert second.ensure() is False
    assert second.certificate == first.certificate
    renamed = CertificateManager(cast(Client, client), tmp_path, dns_names=["new.example"])
    assert renamed.ensure() is True
    assert (tmp_path / CA_FILE).read_bytes() != ca_pem


async def test_an_expiring_certificate_is_reissued_at_start(tmp_path: Path) -> None:
    client = fake_cluster()
    first = manager(client, tmp_path)
    first.ensure()
    later = manager(client, tmp_path, clock=lambda: utcnow() + dt.timedelta(days=340))
    assert later.ensure() is True
    assert later.certificate != first.certificate


async def test_the_background_task_rotates_before_expiry_with_the_same_ca(tmp_path: Path) -> None:
    client = fake_cluster()
    rotating = manager(
        client,
        tmp_path,
        serving_validity=dt.timedelta(days=1),
        renew_before=dt.timedelta(days=1) - dt.timedelta(seconds=0.2),
    )
    await rotating.start()
    try:
        assert rotating.certificate is not None
        first = rotating.certificate.serial_number
        ca_pem = (tmp_path / CA_FILE).read_bytes()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while read_cert_dir(tmp_path) is None or rotating.certificate.serial_number == first:
            assert loop.time() < deadline, "never rotated"
            await asyncio.sleep(0.02)
        stored = read_cert_dir(tmp_path)
        assert stored is not None
        stored.cert.verify_directly_issued_by(stored.ca)
        assert (tmp_path / CA_FILE).read_bytes() == ca_pem
        assert bundles(client) == [ca_pem] * 3
    finally:
        await rotating.stop()


def test_validity_must_exceed_the_renewal_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than renew_before"):
        manager(fake_cluster(), tmp_path, serving_validity=dt.timedelta(days=30))


async def test_an_unreachable_api_server_does_not_stop_start(tmp_path: Path) -> None:
    class Down(FakeClient):
        async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
            raise ServerUnavailable(503, "ServiceUnavailable", "down")

    certificates = manager(Down({}), tmp_path, retry_interval=3600.0)
    await certificates.start()
    await certificates.stop()
    assert read_cert_dir(tmp_path) is not None
