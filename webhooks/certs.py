"""Self-signed webhook certificates for clusters without cert-manager, and `caBundle` patching.

The API server only calls a webhook whose serving certificate chains to the `caBundle` of its
Mutating/ValidatingWebhookConfiguration. With cert-manager, the Certificate in `config/certmanager/` fills
the cert directory and cainjector fills the bundles; without it, KServe ships a shell script, and users keep
hitting "x509: certificate signed by unknown authority" when a certificate is renewed but the bundle is not
(kserve/kserve#980, #1359). In self-signed mode the `CertificateManager` does both jobs in-process:

- at start it reuses the certificate in the cert dir when it chains to `ca.crt`, covers the Service names
  and stays valid for more than `renew_before` (30 days); otherwise it issues a new CA and serving cert;
- it sets `caBundle` on every webhook of our configurations, and re-asserts it periodically, because a
  `kubectl apply` of the manifests resets it to the placeholder;
- it rotates the serving certificate before expiry. When the CA itself changes, the bundle first lists the
  new and the old CA, and only then are the files replaced, so no call fails during the switch.

Files are written atomically (temp file + rename) so the server's reloader never reads half a file; it loads
the pair only when key and certificate match, so a reload between the two renames is simply retried.

The CA lives in the process (and `ca.crt` on disk); with several replicas, each would mint its own CA and
they would overwrite each other's bundle, so self-signed mode is for single-replica deployments and local
runs. Keys are ECDSA P-256: fast to generate and accepted by every supported API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from manager.client import Client, PatchType, Resource
from manager.errors import ApiError, ConfigurationError, Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)

DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
RESYNC_INTERVAL = 300.0
RETRY_INTERVAL = 10.0
CLOCK_SKEW = dt.timedelta(hours=1)

WEBHOOK_SERVICE = "kserve-webhook-server-service"
MUTATING_CONFIGS: tuple[str, ...] = ("inferenceservice.serving.kserve.io",)
VALIDATING_CONFIGS: tuple[str, ...] = ("inferenceservice.serving.kserve.io", "trainedmodel.serving.kserve.io")

MUTATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
VALIDATING_WEBHOOK_CONFIGURATIONS = Resource(
    "admissionregistration.k8s.io",
    "v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    namespaced=False,
)

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time (timezone-aware UTC)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a Service is reached by from the API server (`<svc>.<ns>.svc` is the one it uses)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def generate_ca(
    common_name: str = "kserve-webhook-ca",
    *,
    valid_for: dt.timedelta = CA_VALIDITY,
    now: dt.datetime | None = None,
) -> KeyPair:
    """A new self-signed CA."""
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_serving_cert(
    ca: KeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    valid_for: dt.timedelta = SERVING_VALIDITY,
    now: dt.datetime | None = None,
) -> KeyPair:
    """A TLS server certificate for `dns_names` and `ip_addresses`, signed by `ca`."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + valid_for, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def write_cert_dir(cert_dir: str | Path, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """Write `ca.crt`, `tls.key` and `tls.crt`, each atomically; raises `ConfigurationError` on failure."""
    directory = Path(cert_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(directory / CA_FILE, ca_pem, 0o644)
        _write_atomic(directory / KEY_FILE, key_pem, 0o600)
        _write_atomic(directory / CERT_FILE, cert_pem, 0o644)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write webhook certificates to {directory}: {exc.strerror or exc}"
        ) from exc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@dataclass(frozen=True)
class StoredCertificates:
    """What a cert dir holds, parsed."""

    ca: x509.Certificate
    cert: x509.Certificate
    key: PrivateKeyTypes


def read_cert_dir(cert_dir: str | Path) -> StoredCertificates | None:
    """The CA, certificate and key in `cert_dir`, or None when any is missing or unreadable."""
    directory = Path(cert_dir)
    try:
        ca = x509.load_pem_x509_certificate((directory / CA_FILE).read_bytes())
        cert = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return StoredCertificates(ca, cert, key)


def reusable(
    stored: StoredCertificates,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    *,
    renew_before: dt.timedelta,
    now: dt.datetime,
) -> str | None:
    """Why `stored` cannot serve on (a one-line reason), or None when it can."""
    if stored.cert.not_valid_after_utc - now <= renew_before:
        return f"certificate expires at {stored.cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    if stored.cert.not_valid_before_utc > now:
        return "certificate is not valid yet"
    try:
        stored.cert.verify_directly_issued_by(stored.ca)
    except (ValueError, TypeError, InvalidSignature):
        return f"certificate is not signed by {CA_FILE}"
    if _spki(stored.key.public_key()) != _spki(stored.cert.public_key()):
        return f"{KEY_FILE} does not match {CERT_FILE}"
    try:
        san = stored.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "certificate has no subject alternative names"
    missing = [n for n in dns_names if n not in san.get_values_for_type(x509.DNSName)]
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    missing += [ip for ip in ip_addresses if str(ipaddress.ip_address(ip)) not in ips]
    if missing:
        return f"certificate does not cover {', '.join(missing)}"
    return None


def _spki(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


async def patch_ca_bundle(
    client: Client, ca_pem: bytes, mutating: Sequence[str], validating: Sequence[str]
) -> int:
    """Set `caBundle` on every webhook of the named configurations; returns how many entries changed.

    Configurations that do not exist are skipped with a log line. Each patch is a JSON Patch guarded by a
    `test` of the resourceVersion, re-read and retried when someone else changed the object meanwhile.
    """
    value = base64.b64encode(ca_pem).decode("ascii")
    changed = 0
    for resource, names in (
        (MUTATING_WEBHOOK_CONFIGURATIONS, mutating),
        (VALIDATING_WEBHOOK_CONFIGURATIONS, validating),
    ):
        for name in names:
            changed += await _patch_one(client, resource, name, value)
    return changed


async def _patch_one(client: Client, resource: Resource, name: str, value: str, attempts: int = 5) -> int:
    for attempt in range(attempts):
        try:
            current = await client.get(resource, name)
        except NotFound:
            log.info("%s %s does not exist; not setting its caBundle", resource.kind, name)
            return 0
        version = str((current.get("metadata") or {}).get("resourceVersion") or "")
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version}
        ]
        for index, webhook in enumerate(current.get("webhooks") or []):
            config = webhook.get("clientConfig")
            if isinstance(config, dict) and config.get("caBundle") != value:
                path = f"/webhooks/{index}/clientConfig/caBundle"
                operations.append({"op": "add", "path": path, "value": value})
        if len(operations) == 1:
            return 0
        try:
            await client.patch(resource, name, operations, patch_type=PatchType.JSON)
        except (Conflict, Invalid):
            if attempt + 1 == attempts:
                raise
            continue
        except NotFound:
            return 0
        log.info("set caBundle on %d webhook(s) of %s %s", len(operations) - 1, resource.kind, name)
        return len(operations) - 1
    return 0


class CertificateManager:
    """Issues, reuses and rotates the self-signed webhook certificate; keeps the caBundles pointing at it."""

    def __init__(
        self,
        client: Client,
        cert_dir: str | Path,
        *,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        mutating_configs: Sequence[str] = MUTATING_CONFIGS,
        validating_configs: Sequence[str] = VALIDATING_CONFIGS,
        renew_before: dt.timedelta = RENEW_BEFORE,
        ca_validity: dt.timedelta = CA_VALIDITY,
        serving_validity: dt.timedelta = SERVING_VALIDITY,
        resync_interval: float = RESYNC_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        clock: Clock = utcnow,
    ) -> None:
        if serving_validity <= renew_before:
            raise ValueError("serving certificate validity must be longer than renew_before")
        self.client = client
        self.cert_dir = Path(cert_dir)
        self.dns_names = list(dns_names)
        self.ip_addresses = list(ip_addresses)
        self.mutating_configs = list(mutating_configs)
        self.validating_configs = list(validating_configs)
        self.renew_before = renew_before
        self.ca_validity = ca_validity
        self.serving_validity = serving_validity
        self.resync_interval = resync_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self._ca: KeyPair | None = None
        self._trusted: list[x509.Certificate] = []
        self._cert: x509.Certificate | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def certificate(self) -> x509.Certificate | None:
        """The serving certificate currently in the cert dir (after `start`)."""
        return self._cert

    def ca_bundle(self) -> bytes:
        """The PEM bundle the API server must trust: the current CA, plus the previous one while valid."""
        self._trusted = self._unexpired(self._trusted)
        return _pem_bundle(self._trusted)

    def _unexpired(self, certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        now = self.clock()
        return [c for c in certificates if c.not_valid_after_utc > now]

    def ensure(self) -> bool:
        """Reuse the certificate in the cert dir or issue a new one; True when new files were written."""
        now = self.clock()
        stored = read_cert_dir(self.cert_dir)
        problem = (
            "no certificate"
            if stored is None
            else reusable(stored, self.dns_names, self.ip_addresses, renew_before=self.renew_before, now=now)
        )
        if stored is not None and problem is None:
            log.info("reusing the webhook certificate in %s", self.cert_dir)
            self._trusted = [stored.ca]
            self._cert = stored.cert
            return False
        log.info("issuing a self-signed webhook certificate in %s (%s)", self.cert_dir, problem)
        ca = generate_ca(valid_for=self.ca_validity, now=now)
        self._issue(now, ca)
        self._trusted = [ca.cert]
        return True

    async def rotate(self) -> None:
        """Issue a new serving certificate (and a new CA when ours is unknown or expiring), bundle first."""
        now = self.clock()
        ca = self._ca
        if ca is None or ca.cert.not_valid_after_utc - now <= self.serving_validity:
            ca = generate_ca(valid_for=self.ca_validity, now=now)
            trusted = self._unexpired([ca.cert, *self._trusted])
            await patch_ca_bundle(
                self.client, _pem_bundle(trusted), self.mutating_configs, self.validating_configs
            )
            self._trusted = trusted
            log.info("rotating the webhook certificate with a new CA")
        self._issue(now, ca)
        log.info("rotated the webhook certificate; the new one expires at %s", self._cert_expiry())

    def _issue(self, now: dt.datetime, ca: KeyPair) -> None:
        serving = issue_serving_cert(
            ca, self.dns_names, self.ip_addresses, valid_for=self.serving_validity, now=now
        )
        write_cert_dir(self.cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
        self._ca = ca
        self._cert = serving.cert

    async def sync_ca_bundles(self) -> int:
        """Make every webhook of our configurations trust our CA; returns how many entries changed."""
        return await patch_ca_bundle(
            self.client, self.ca_bundle(), self.mutating_configs, self.validating_configs
        )

    async def start(self) -> None:
        """Have a valid certificate on disk, set the caBundles (retried in the background), keep rotating."""
        self.ensure()
        synced = await self._try_sync()
        self._task = asyncio.create_task(self._run(synced), name="webhook-certificates")

    async def stop(self) -> None:
        """Stop rotating."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _try_sync(self) -> bool:
        try:
            await self.sync_ca_bundles()
        except ApiError as exc:
            log.error("cannot set the webhook caBundle (retrying in %.0fs): %s", self.retry_interval, exc)
            return False
        return True

    def _cert_expiry(self) -> str:
        return f"{self._cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z" if self._cert is not None else "-"

    def _seconds_to_rotation(self) -> float:
        if self._cert is None:
            return 0.0
        due = self._cert.not_valid_after_utc - self.renew_before
        return max(0.0, (due - self.clock()).total_seconds())

    async def _run(self, synced: bool) -> None:
        while True:
            wait = self.resync_interval if synced else self.retry_interval
            rotation = self._seconds_to_rotation()
            await asyncio.sleep(min(wait, rotation))
            if self._seconds_to_rotation() <= 0:
                try:
                    await self.rotate()
                except (ApiError, ConfigurationError) as exc:
                    log.error(
                        "webhook certificate rotation failed (retrying in %.0fs): %s",
                        self.retry_interval,
                        exc,
                    )
                    await asyncio.sleep(self.retry_interval)
                    continue
            synced = await self._try_sync()


def _pem_bundle(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def setup_self_signed(
    manager: Manager,
    *,
    namespace: str,
    cert_dir: str | Path = DEFAULT_CERT_DIR,
    service_name: str = WEBHOOK_SERVICE,
    mutating_configs: Sequence[str] = MUTATING_CONFIGS,
    validating_configs: Sequence[str] = VALIDATING_CONFIGS,
    extra_dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> CertificateManager:
    """Register self-signed certificate management on `manager`; call it BEFORE adding the WebhookServer.

    Runnables start in the order they were added, so the certificate is on disk before the server loads it.
    """
    certificates = CertificateManager(
        manager.client,
        cert_dir,
        dns_names=[*service_dns_names(service_name, namespace), *extra_dns_names],
        ip_addresses=ip_addresses,
        mutating_configs=mutating_configs,
        validating_configs=validating_configs,
    )
    manager.add_runnable(certificates, needs_leader=False)
    return certificates
