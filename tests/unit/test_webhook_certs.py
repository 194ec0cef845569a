"""Self-signed certificates: issuance, atomic files, reuse decisions, caBundle patching, rotation, and the
store several replicas share (here an in-memory stand-in for the Secret; the real Secret is exercised in
tests/integration/test_webhook_cert_secret.py)."""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import ipaddress
import logging
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import jsonpatch
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from manager.client import Client, Object, PatchType, Resource
from manager.errors import ConfigurationError, Forbidden, Invalid, NotFound, ServerUnavailable
from webhooks.certs import (
    BUNDLE_FILE,
    CA_FILE,
    CA_KEY_FILE,
    CERT_FILE,
    KEY_FILE,
    CertificateManager,
    CertificateSet,
    MemoryStore,
    Snapshot,
    StoreConflict,
    decode_certificates,
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
RENEW = dt.timedelta(days=30)
SHORT_CA = dt.timedelta(days=300)
"""A CA validity below the serving certificate's: every renewal then needs a new CA."""


class FakeClient:
    """Just enough of `Client` for caBundle patching: JSON Patch with `test` ops, resourceVersions."""

    def __init__(self, objects: dict[str, Object]) -> None:
        self.objects = objects
        self.patches: list[tuple[str, list[dict[str, Any]]]] = []
        self.interfere = 0
        self.down = False
        self.before_patch: Callable[[], Awaitable[None]] | None = None

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> Object:
        if self.down:
            raise ServerUnavailable(503, "ServiceUnavailable", "down")
        key = f"{resource.kind}/{name}"
        if key not in self.objects:
            raise NotFound(404, "NotFound", f"{key} not found")
        return copy.deepcopy(self.objects[key])

    async def patch(self, resource: Resource, name: str, patch: Any, *, patch_type: PatchType) -> Object:
        assert patch_type == PatchType.JSON
        if self.before_patch is not None:
            hook, self.before_patch = self.before_patch, None
            await hook()
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


class SharedStore:
    """The Secret's semantics in memory: versions, conflicts on stale writes, and injectable failures."""

    description = "Secret test/webhook-cert"
    shared = True

    def __init__(self, data: Mapping[str, bytes] | None = None) -> None:
        self.snapshot = Snapshot(None if data is None else dict(data), None if data is None else "1")
        self.writes = 0
        self.error: Exception | None = None
        self.after_load: Callable[[], Awaitable[bool]] | None = None
        """Awaited after each read until it returns False."""

    async def load(self) -> Snapshot:
        if self.error is not None:
            raise self.error
        snapshot = self.snapshot
        if self.after_load is not None and not await self.after_load():
            self.after_load = None
        return snapshot

    async def save(self, data: Mapping[str, bytes], previous: Snapshot) -> Snapshot:
        if previous.version != self.snapshot.version:
            raise StoreConflict(f"{self.description} changed meanwhile")
        self.writes += 1
        self.snapshot = Snapshot(dict(data), str(int(self.snapshot.version or "0") + 1))
        return self.snapshot

    def current(self) -> CertificateSet:
        assert self.snapshot.data is not None
        return decode_certificates(self.snapshot.data)


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


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def manager(client: FakeClient, cert_dir: Path, **kwargs: Any) -> CertificateManager:
    return CertificateManager(
        cast(Client, client),
        cert_dir,
        dns_names=kwargs.pop("dns_names", NAMES),
        ip_addresses=["127.0.0.1"],
        mutating_configs=["m"],
        validating_configs=["v"],
        **kwargs,
    )


def on_disk(cert_dir: Path) -> CertificateSet:
    stored = read_cert_dir(cert_dir)
    assert stored is not None
    return stored


# --- issuance and files ------------------------------------------------------------------------------


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
    stored = on_disk(target)
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
    stored = on_disk(tmp_path)
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
    other_ca = on_disk(tmp_path)
    assert reusable(other_ca, NAMES, [], renew_before=month, now=now) == "certificate is not signed by ca.crt"
    stranger = issue_serving_cert(ca, NAMES)
    write_cert_dir(tmp_path, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=stranger.key_pem)
    mismatched = on_disk(tmp_path)
    assert reusable(mismatched, NAMES, [], renew_before=month, now=now) == "tls.key does not match tls.crt"


# --- the store's content ------------------------------------------------------------------------------


def test_store_content_round_trips_with_the_ca_key_and_the_bundle() -> None:
    old, ca = generate_ca(), generate_ca()
    serving = issue_serving_cert(ca, NAMES)
    original = CertificateSet(ca.cert, serving.cert, serving.key, ca.key, (ca.cert, old.cert))
    data = original.encode()
    assert sorted(data) == sorted([CA_FILE, CERT_FILE, KEY_FILE, CA_KEY_FILE, BUNDLE_FILE])
    decoded = decode_certificates(data)
    assert decoded.files() == original.files()
    assert decoded.ca_key is not None
    assert decoded.trusted == (ca.cert, old.cert)
    without_key = {k: v for k, v in data.items() if k not in (CA_KEY_FILE, BUNDLE_FILE)}
    partial = decode_certificates(without_key)
    assert partial.ca_key is None
    assert partial.trusted == (ca.cert,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({CERT_FILE: b""}, "tls.crt is missing"),
        ({CA_FILE: b"junk"}, "ca.crt is not a PEM certificate"),
        ({KEY_FILE: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "tls.key is not an"),
        ({CA_KEY_FILE: "other"}, "ca.key does not match ca.crt"),
        ({BUNDLE_FILE: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, "ca-bundle.crt"),
    ],
)
def test_bad_store_content_names_the_key_and_the_problem(change: dict[str, Any], message: str) -> None:
    ca = generate_ca()
    serving = issue_serving_cert(ca, NAMES)
    data = CertificateSet(ca.cert, serving.cert, serving.key, ca.key, (ca.cert,)).encode()
    data.update({k: generate_ca().key_pem if v == "other" else v for k, v in change.items()})
    with pytest.raises(ValueError, match=message):
        decode_certificates(data)


async def test_the_memory_store_refuses_a_stale_write(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    first = await store.load()
    assert first.data is None
    await store.save({"a": b"1"}, first)
    with pytest.raises(StoreConflict):
        await store.save({"a": b"2"}, first)
    assert (await store.load()).data == {"a": b"1"}


# --- caBundle patching ---------------------------------------------------------------------------------


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


# --- one process (cert dir only) -----------------------------------------------------------------------


async def test_start_issues_then_a_restart_reuses_and_new_names_reissue(tmp_path: Path) -> None:
    client = fake_cluster()
    first = manager(client, tmp_path)
    await first.start()
    await first.stop()
    ca_pem = (tmp_path / CA_FILE).read_bytes()
    assert bundles(client) == [ca_pem] * 3
    assert first.certificate is not None
    first.check()
    second = manager(client, tmp_path)
    await second.start()
    await second.stop()
    assert second.certificate == first.certificate
    assert (tmp_path / CA_FILE).read_bytes() == ca_pem
    renamed = manager(client, tmp_path, dns_names=["new.example"])
    await renamed.start()
    await renamed.stop()
    # The CA key of the first process was never written, so the new certificate needs a new CA.
    assert (tmp_path / CA_FILE).read_bytes() != ca_pem
    assert (
        reusable(on_disk(tmp_path), ["new.example"], [], renew_before=dt.timedelta(0), now=utcnow()) is None
    )
    assert bundles(client) == [(tmp_path / CA_FILE).read_bytes() + ca_pem] * 3


async def test_an_expiring_certificate_is_reissued_at_start(tmp_path: Path) -> None:
    client = fake_cluster()
    first = manager(client, tmp_path)
    await first.start()
    await first.stop()
    later = manager(client, tmp_path, clock=lambda: utcnow() + dt.timedelta(days=340))
    await later.start()
    await later.stop()
    assert later.certificate != first.certificate
    assert on_disk(tmp_path).cert == later.certificate


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
        stored = on_disk(tmp_path)
        stored.cert.verify_directly_issued_by(stored.ca)
        assert (tmp_path / CA_FILE).read_bytes() == ca_pem
        assert bundles(client) == [ca_pem] * 3
    finally:
        await rotating.stop()


def test_validity_must_exceed_the_renewal_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="longer than renew_before"):
        manager(fake_cluster(), tmp_path, serving_validity=dt.timedelta(days=30))


async def test_an_unreachable_api_server_does_not_stop_start(tmp_path: Path) -> None:
    client = fake_cluster()
    client.down = True
    certificates = manager(client, tmp_path, retry_interval=3600.0)
    await certificates.start()
    await certificates.stop()
    assert read_cert_dir(tmp_path) is not None
    certificates.check()


async def test_a_new_ca_is_served_only_once_the_bundles_trust_it(tmp_path: Path) -> None:
    client = fake_cluster()
    certificates = manager(client, tmp_path, ca_validity=SHORT_CA)
    await certificates.start()
    await certificates.stop()
    old = on_disk(tmp_path)
    client.down = True
    with pytest.raises(ServerUnavailable):
        await certificates.rotate()
    assert on_disk(tmp_path).files() == old.files(), "switched to a CA the API server does not trust yet"
    assert bundles(client) == [pem(old.ca)] * 3
    client.down = False
    assert await certificates.sync() is True
    new = on_disk(tmp_path)
    assert new.ca != old.ca
    assert bundles(client) == [pem(new.ca) + pem(old.ca)] * 3


# --- several replicas sharing a store -----------------------------------------------------------------


def replica(client: FakeClient, store: SharedStore, cert_dir: Path, **kwargs: Any) -> CertificateManager:
    return manager(client, cert_dir, store=store, **kwargs)


async def test_replicas_converge_on_one_certificate_covering_every_replicas_names(tmp_path: Path) -> None:
    client, store = fake_cluster(), SharedStore()
    a = replica(client, store, tmp_path / "a", dns_names=[*NAMES, "a.example"])
    b = replica(client, store, tmp_path / "b", dns_names=[*NAMES, "b.example"])
    await a.start()
    await b.start()
    await a.stop()
    await b.stop()
    assert store.writes == 2  # a issued; b renewed with the same CA to cover its extra name
    assert a.certificate is not None
    assert store.current().ca == on_disk(tmp_path / "a").ca
    assert await a.sync() is True
    assert await b.sync() is True
    assert store.writes == 2, "the replicas keep re-issuing for their own names"
    assert reusable(store.current(), ["a.example", "b.example"], [], renew_before=RENEW, now=utcnow()) is None
    assert on_disk(tmp_path / "a").files() == on_disk(tmp_path / "b").files() == store.current().files()
    assert bundles(client) == [pem(store.current().ca)] * 3
    a.check()
    b.check()


async def test_a_rotation_by_one_replica_reaches_the_other(tmp_path: Path) -> None:
    client, store = fake_cluster(), SharedStore()
    a = replica(client, store, tmp_path / "a", ca_validity=SHORT_CA)
    b = replica(client, store, tmp_path / "b", ca_validity=SHORT_CA)
    await a.start()
    await b.start()
    await a.stop()
    await b.stop()
    old = store.current()
    assert await a.rotate() is True
    new = store.current()
    assert new.ca != old.ca
    assert new.trusted == (new.ca, old.ca)
    assert on_disk(tmp_path / "b").files() == old.files()
    # b has not read the store since, yet its periodic bundle sync keeps the new CA (it reads the store).
    assert await b.sync_ca_bundles() == 0
    assert bundles(client) == [pem(new.ca) + pem(old.ca)] * 3
    assert await b.sync() is True
    assert on_disk(tmp_path / "b").files() == new.files()


async def test_a_bundle_patch_racing_a_rotation_is_redone_from_the_new_store(tmp_path: Path) -> None:
    client, store = fake_cluster(), SharedStore()
    a = replica(client, store, tmp_path / "a", ca_validity=SHORT_CA)
    b = replica(client, store, tmp_path / "b", ca_validity=SHORT_CA)
    await a.start()
    await b.start()
    await a.stop()
    await b.stop()
    old = store.current()
    client.objects["MutatingWebhookConfiguration/m"]["webhooks"][0]["clientConfig"]["caBundle"] = "Cg=="

    async def a_rotates() -> None:  # between b's read of the store and b's patch
        await a.rotate()

    client.before_patch = a_rotates
    await b.sync_ca_bundles()
    new = store.current()
    assert new.ca != old.ca
    assert bundles(client) == [pem(new.ca) + pem(old.ca)] * 3


async def test_concurrent_first_writes_end_with_the_winners_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = fake_cluster(), SharedStore()
    a = replica(client, store, tmp_path / "a")
    b = replica(client, store, tmp_path / "b")
    both_read = asyncio.Barrier(2)
    reads = 0

    async def wait_for_the_other() -> bool:  # the first two reads both see an empty store
        nonlocal reads
        reads += 1
        await both_read.wait()
        return reads < 2

    store.after_load = wait_for_the_other
    with caplog.at_level(logging.INFO, logger="webhooks.certs"):
        await asyncio.wait_for(asyncio.gather(a.start(), b.start()), HANG_GUARD)
    await a.stop()
    await b.stop()
    assert store.writes == 1
    assert "changed meanwhile; reading it again" in caplog.text
    assert on_disk(tmp_path / "a").files() == on_disk(tmp_path / "b").files() == store.current().files()


async def test_bad_store_content_is_one_clear_line_and_is_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = fake_cluster()
    store = SharedStore({CA_FILE: b"junk", CERT_FILE: b"junk", KEY_FILE: b"junk"})
    a = replica(client, store, tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="webhooks.certs"):
        await a.start()
    await a.stop()
    assert (
        "Secret test/webhook-cert holds no usable webhook certificate (ca.crt is not a PEM certificate); "
        "replacing it"
    ) in caplog.messages
    shared = store.current()
    assert on_disk(tmp_path / "a").files() == shared.files()
    # Garbage written later is replaced from the running replica's CA, so other replicas keep working.
    store.snapshot = Snapshot({**shared.encode(), KEY_FILE: b"junk"}, store.snapshot.version)
    assert await a.sync() is True
    assert store.current().ca == shared.ca
    assert store.current().cert != shared.cert


async def test_an_unreadable_store_at_start_serves_a_provisional_certificate_not_ready(
    tmp_path: Path,
) -> None:
    client, store = fake_cluster(), SharedStore()
    store.error = Forbidden(403, "Forbidden", 'secrets "webhook-cert" is forbidden')
    a = replica(client, store, tmp_path, retry_interval=3600.0)
    await a.start()
    await a.stop()
    provisional = on_disk(tmp_path)
    with pytest.raises(RuntimeError, match="not yet serving the webhook certificate of Secret"):
        a.check()
    assert bundles(client) == [b"\n"] * 3
    store.error = None
    assert await a.sync() is True
    a.check()
    assert on_disk(tmp_path).ca != provisional.ca
    assert on_disk(tmp_path).files() == store.current().files()
