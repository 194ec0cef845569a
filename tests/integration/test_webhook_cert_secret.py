"""Self-signed mode with several replicas: the certificate Secret against the real kube-apiserver.

Each "replica" is a `CertificateManager` with its own cert dir and a `WebhookServer` on its own loopback port,
as pods behind the webhook Service would be. One webhook configuration lists both replicas' URLs
(`clientConfig.url`, covered by the IP SAN), so an admission goes through both servers and fails unless both
serve a certificate that the configuration's caBundle trusts. The Role the replicas need is exercised with a
token user bound to the shipped Role (config/overlays/self-signed/certificate_secret_role.yaml).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from e2e.localcluster.cluster import LocalCluster
from manager.client import CONFIGMAPS, SECRETS, Client, Object, load_client
from manager.errors import Forbidden, NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from tests.integration.isvc_harness import install_crds
from tests.integration.test_webhook_tls import configmap, eventually, peer_serial, registered
from webhooks.admission import AdmissionRequest, AdmissionResponse, patch_response_from_raw
from webhooks.certs import (
    MUTATING_WEBHOOK_CONFIGURATIONS,
    READYZ_CHECK,
    CertificateManager,
    CertificateSet,
    SecretStore,
    Snapshot,
    decode_certificates,
    generate_ca,
    issue_serving_cert,
    read_cert_dir,
)
from webhooks.server import WebhookServer
from webhooks.setup import setup_webhooks

HANG_GUARD = 60.0
REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "config" / "overlays" / "self-signed" / "certificate_secret_role.yaml"
SECRET = "kserve-webhook-server-cert"
SHORT_CA = dt.timedelta(days=300)
"""A CA validity below the serving certificate's (365 days): every rotation then makes a new CA."""


class Stamp:
    """Labels the object with the replica that admitted it."""

    def __init__(self, replica: str) -> None:
        self.replica = replica

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        assert request.object is not None
        assert request.raw_object is not None
        mutated = copy.deepcopy(request.object)
        mutated["metadata"].setdefault("labels", {})[f"via-{self.replica}"] = "yes"
        return patch_response_from_raw(request.raw_object, mutated)


class Replica:
    def __init__(self, name: str, certificates: CertificateManager, server: WebhookServer) -> None:
        self.name = name
        self.certificates = certificates
        self.server = server

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.bound_port}/stamp"

    async def served_serial(self, bundle: bytes) -> int:
        """The serial of the certificate this replica's server presents, verified against `bundle`."""
        return await peer_serial(self.server, bundle)

    def files(self) -> tuple[bytes, bytes, bytes]:
        stored = read_cert_dir(self.certificates.cert_dir)
        assert stored is not None
        return stored.files()


def certificate_manager(
    client: Client, namespace: str, cert_dir: Path, configs: Sequence[str], **kwargs: Any
) -> CertificateManager:
    store = kwargs.pop("store", None) or SecretStore(client, namespace, SECRET)
    return CertificateManager(
        client,
        cert_dir,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        store=store,
        mutating_configs=configs,
        validating_configs=[],
        **kwargs,
    )


@asynccontextmanager
async def serving(
    name: str, certificates: CertificateManager, *, started: bool = False
) -> AsyncIterator[Replica]:
    """Start the replica's certificate manager (unless `started`), then its server, as the manager does."""
    server = WebhookServer(host="127.0.0.1", port=0, cert_dir=certificates.cert_dir, reload_interval=0.05)
    server.register("/stamp", Stamp(name))
    try:
        if not started:
            await certificates.start()
        await server.start()
        yield Replica(name, certificates, server)
    finally:
        await server.stop()
        await certificates.stop()


def configuration(name: str, replicas: Sequence[Replica], selector: dict[str, str]) -> Object:
    """One webhook per replica, each calling that replica's server, with a placeholder caBundle."""
    webhooks = [
        {
            "name": f"{r.name}.{name}.webhooks.kserve.io",
            "clientConfig": {"url": r.url, "caBundle": base64.b64encode(b"\n").decode()},
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["configmaps"],
                }
            ],
            "objectSelector": {"matchLabels": selector},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
        }
        for r in replicas
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": webhooks,
    }


async def configured_bundle(admin: Client, name: str) -> bytes:
    stored = await admin.get(MUTATING_WEBHOOK_CONFIGURATIONS, name)
    values = {hook["clientConfig"]["caBundle"] for hook in stored["webhooks"]}
    assert len(values) == 1, "the webhooks of one configuration trust different CAs"
    return base64.b64decode(values.pop())


async def shared(client: Client, namespace: str) -> CertificateSet:
    """The certificate set in the Secret."""
    secret = await client.get(SECRETS, SECRET, namespace)
    assert secret["type"] == "kubernetes.io/tls"
    return decode_certificates({k: base64.b64decode(v) for k, v in secret["data"].items()})


async def admitted_by_all(
    admin: Client, namespace: str, selector: dict[str, str], replicas: Sequence[Replica]
) -> None:
    """Eventually a create goes through every replica's webhook (the API server's informer lags a little)."""
    wanted = {f"via-{r.name}": "yes" for r in replicas}

    async def attempt(n: int) -> bool:
        body = configmap(namespace, f"cm-{n}-{secrets.token_hex(2)}", selector)
        labels = (await admin.create(CONFIGMAPS, body))["metadata"]["labels"]
        return bool(wanted.items() <= labels.items())

    await eventually(attempt)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_GUARD
    while not await condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RacingStore(SecretStore):
    """The Secret, with each replica's first read held until the other replica has read too."""

    def __init__(self, client: Client, namespace: str, barrier: asyncio.Barrier) -> None:
        super().__init__(client, namespace, SECRET)
        self.barrier = barrier
        self.held = False

    async def load(self) -> Snapshot:
        snapshot = await super().load()
        if not self.held:
            self.held = True
            await asyncio.wait_for(self.barrier.wait(), HANG_GUARD)
        return snapshot


async def test_two_replicas_serve_one_certificate_that_the_bundle_trusts(
    admin: Client, namespace: str, tmp_path: Path
) -> None:
    token = secrets.token_hex(4)
    name, selector = f"it-replicas-{token}", {"webhook-it": token}
    a = certificate_manager(admin, namespace, tmp_path / "a", [name])
    b = certificate_manager(admin, namespace, tmp_path / "b", [name])
    async with serving("a", a) as ra, serving("b", b) as rb:
        body = configuration(name, [ra, rb], selector)
        async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
            assert await b.sync() is True
            secret = await shared(admin, namespace)
            assert ra.files() == rb.files() == secret.files()
            bundle = await configured_bundle(admin, name)
            assert bundle == pem(secret.ca)
            serial = secret.cert.serial_number
            assert await ra.served_serial(bundle) == await rb.served_serial(bundle) == serial
            await admitted_by_all(admin, namespace, selector, [ra, rb])
            a.check()
            b.check()
    tls = [
        s for s in (await admin.list_page(SECRETS, namespace))["items"] if s["type"] == "kubernetes.io/tls"
    ]
    assert [s["metadata"]["name"] for s in tls] == [SECRET]


async def test_a_rotation_by_one_replica_reaches_the_other(
    admin: Client, namespace: str, tmp_path: Path
) -> None:
    token = secrets.token_hex(4)
    name, selector = f"it-rotation-{token}", {"webhook-it": token}
    a = certificate_manager(admin, namespace, tmp_path / "a", [name], ca_validity=SHORT_CA)
    # b's own loop re-reads the Secret every second (the shipped interval is five minutes).
    b = certificate_manager(
        admin, namespace, tmp_path / "b", [name], ca_validity=SHORT_CA, resync_interval=1.0
    )
    async with serving("a", a) as ra, serving("b", b) as rb:
        body = configuration(name, [ra, rb], selector)
        async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
            assert await a.sync() is True
            await admitted_by_all(admin, namespace, selector, [ra, rb])
            old = await shared(admin, namespace)

            assert await a.rotate() is True
            new = await shared(admin, namespace)
            assert new.ca != old.ca
            assert new.trusted == (new.ca, old.ca)
            bundle = await configured_bundle(admin, name)
            assert bundle == pem(new.ca) + pem(old.ca)
            # Until b catches up, its certificate of the old CA is still trusted.
            assert await rb.served_serial(bundle) in (old.cert.serial_number, new.cert.serial_number)

            async def b_serves_the_new_certificate() -> bool:
                return await rb.served_serial(bundle) == new.cert.serial_number

            await until(b_serves_the_new_certificate, "replica b never served the rotated certificate")
            assert rb.files() == ra.files() == new.files()
            assert await ra.served_serial(pem(new.ca)) == new.cert.serial_number
            await admitted_by_all(admin, namespace, selector, [ra, rb])


async def test_a_concurrent_first_start_ends_with_one_secret_both_replicas_use(
    admin: Client, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_hex(4)
    name, selector = f"it-race-{token}", {"webhook-it": token}
    barrier = asyncio.Barrier(2)
    a = certificate_manager(
        admin, namespace, tmp_path / "a", [name], store=RacingStore(admin, namespace, barrier)
    )
    b = certificate_manager(
        admin, namespace, tmp_path / "b", [name], store=RacingStore(admin, namespace, barrier)
    )
    with caplog.at_level(logging.INFO, logger="webhooks.certs"):
        await asyncio.wait_for(asyncio.gather(a.start(), b.start()), HANG_GUARD)
    assert sum("wrote a webhook certificate" in m for m in caplog.messages) == 1
    assert (
        f"Secret {namespace}/{SECRET} changed meanwhile (AlreadyExists); reading it again" in caplog.messages
    )
    async with serving("a", a, started=True) as ra, serving("b", b, started=True) as rb:
        secret = await shared(admin, namespace)
        assert ra.files() == rb.files() == secret.files()
        a.check()
        b.check()
        body = configuration(name, [ra, rb], selector)
        async with registered(admin, MUTATING_WEBHOOK_CONFIGURATIONS, body):
            assert await a.sync() is True
            await admitted_by_all(admin, namespace, selector, [ra, rb])


async def test_bad_secret_content_is_one_clear_line_and_is_replaced(
    admin: Client, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = {key: b64(b"junk") for key in ("ca.crt", "tls.crt", "tls.key")}
    metadata = {"name": SECRET, "namespace": namespace}
    await admin.create(SECRETS, {"metadata": metadata, "type": "kubernetes.io/tls", "data": junk})
    a = certificate_manager(admin, namespace, tmp_path, [])
    with caplog.at_level(logging.INFO, logger="webhooks.certs"):
        async with serving("a", a) as ra:
            assert (
                f"Secret {namespace}/{SECRET} holds no usable webhook certificate "
                "(ca.crt is not a PEM certificate); replacing it"
            ) in caplog.messages
            replaced = await shared(admin, namespace)
            assert ra.files() == replaced.files()
            a.check()

            # Broken again while running: replaced from the running replica's CA, which peers already trust.
            secret = await admin.get(SECRETS, SECRET, namespace)
            secret["data"]["tls.key"] = b64(b"junk")
            await admin.replace(SECRETS, secret)
            assert await a.sync() is True
            assert "(tls.key is not an unencrypted PEM private key)" in caplog.text
            again = await shared(admin, namespace)
            assert again.ca == replaced.ca
            assert again.cert != replaced.cert
            assert ra.files() == again.files()


async def test_a_secret_without_a_ca_key_is_served_until_due_then_renewed_with_a_new_ca(
    admin: Client, namespace: str, tmp_path: Path
) -> None:
    """A Secret made by hand or by KServe's script (no `ca.key`) keeps working."""
    ca = generate_ca()
    pair = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
    data = {"ca.crt": b64(ca.cert_pem), "tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)}
    created = await admin.create(
        SECRETS,
        {"metadata": {"name": SECRET, "namespace": namespace}, "type": "kubernetes.io/tls", "data": data},
    )
    a = certificate_manager(admin, namespace, tmp_path, [])
    async with serving("a", a) as ra:
        assert (await admin.get(SECRETS, SECRET, namespace))["metadata"]["resourceVersion"] == (
            created["metadata"]["resourceVersion"]
        )
        assert await ra.served_serial(ca.cert_pem) == pair.cert.serial_number
        assert await a.rotate() is True
        renewed = await shared(admin, namespace)
        assert renewed.ca != ca.cert
        assert renewed.ca_key is not None
        assert renewed.trusted == (renewed.ca, ca.cert)
        assert ra.files() == renewed.files()


async def test_the_shipped_role_is_all_the_replicas_need(
    local_cluster: LocalCluster, admin: Client, namespace: str, tmp_path: Path
) -> None:
    role, binding = (d for d in yaml.safe_load_all(ROLE.read_text()) if d)
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = namespace
    binding["subjects"] = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "manager"}]
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/" + namespace
    await admin.request("POST", f"{rbac}/roles", body=role)
    await admin.request("POST", f"{rbac}/rolebindings", body=binding)
    await admin.create(SECRETS, {"metadata": {"name": "other", "namespace": namespace}, "data": {}})
    own = await load_client(str(local_cluster.kubeconfig_for("manager")))
    try:

        async def granted() -> bool:  # the authorizer sees new bindings a moment later
            try:
                await own.get(SECRETS, SECRET, namespace)
            except Forbidden:
                return False
            except NotFound:
                return True
            return True

        await until(granted, "the Role never took effect")
        a = certificate_manager(own, namespace, tmp_path / "a", [], ca_validity=SHORT_CA)
        b = certificate_manager(own, namespace, tmp_path / "b", [], ca_validity=SHORT_CA)
        async with serving("a", a) as ra, serving("b", b) as rb:
            a.check()
            b.check()
            assert await a.rotate() is True
            assert await b.sync() is True
            assert ra.files() == rb.files() == (await shared(admin, namespace)).files()
        with pytest.raises(Forbidden):
            await own.list_page(SECRETS, namespace)
        with pytest.raises(Forbidden):
            await own.get(SECRETS, "other", namespace)
        other = await admin.get(SECRETS, "other", namespace)
        with pytest.raises(Forbidden):
            await own.replace(SECRETS, other)
        with pytest.raises(Forbidden):
            await own.delete(SECRETS, SECRET, namespace)
    finally:
        await own.close()


async def test_setup_webhooks_shares_the_certificate_through_the_secret_named_by_secret_name(
    admin: Client, namespace: str, tmp_path: Path, local_cluster: LocalCluster
) -> None:
    # The webhooks cache ClusterStorageContainers, whose CRD must exist for the manager to sync.
    await asyncio.to_thread(install_crds, local_cluster.kubeconfig_path)
    options = ManagerOptions(
        metrics_addr="0",
        health_probe_addr="0",
        namespace=namespace,
        webhook_host="127.0.0.1",
        webhook_port=0,
        webhook_cert_dir=str(tmp_path),
        webhook_self_signed=True,
        webhook_cert_ips=("127.0.0.1",),
    )
    manager = Manager(admin, options, metrics=Metrics(CollectorRegistry()))
    server = setup_webhooks(manager, environ={"SECRET_NAME": SECRET})
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await asyncio.wait_for(manager.wait_leading(), HANG_GUARD)
        secret = await shared(admin, namespace)
        assert await peer_serial(server, pem(secret.ca)) == secret.cert.serial_number
        assert (READYZ_CHECK, None) in await manager.readyz.run()
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_GUARD)
