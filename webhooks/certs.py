"""Self-signed webhook certificates for clusters without cert-manager, and `caBundle` patching.

The API server only calls a webhook whose serving certificate chains to the `caBundle` of its
Mutating/ValidatingWebhookConfiguration. With cert-manager, the Certificate in `config/certmanager/` fills
the cert directory and cainjector fills the bundles; without it, KServe ships a shell script, and users keep
hitting "x509: certificate signed by unknown authority" when a certificate is renewed but the bundle is not
(kserve/kserve#980, #1359). In self-signed mode the `CertificateManager` of every replica does both jobs:

- The CA with its key, the serving certificate and the list of trusted CAs live in one store. In a cluster
  that is a Secret (`SECRET_NAME` in the manager's namespace, as in KServe's Deployment), so that all
  replicas behind the webhook Service serve one certificate and agree on one bundle. A replica that finds
  the Secret absent, unusable or due for renewal writes a new one with optimistic concurrency (create, or
  update at the resourceVersion it read); one that loses the race (AlreadyExists, Conflict) reads it again
  and uses the winner's. Each replica copies the certificate into its own cert dir, which the server reloads.
  Without a Secret name the store is the process's memory, seeded from the cert dir: one process (`make
  run`, tests); its CA key is never written to disk, so a restarted process renews with a new CA.
- Bundles are patched from a read of the store made *after* the read of the webhook configuration, and the
  patch is guarded by that configuration's resourceVersion, while a renewing replica writes the store before
  it patches. So a replica with an older view of the store cannot overwrite a newer bundle: its patch either
  lands first (and is overwritten) or fails the resourceVersion test and is redone from a fresh read.
- Renewal keeps the CA while its key is known and it outlives a new serving certificate; otherwise it makes
  a new CA, and the bundle lists the new and the previous CAs until those expire. A replica installs a
  certificate of a new CA only once the bundles trust it, and keeps serving its old one (still trusted) until
  then; the others pick the new one up at their next read of the store (every resync, and when due).
- The bundles are re-asserted every resync, because a `kubectl apply` of the manifests resets them.
- Content that cannot be parsed is one log line naming the key and the problem, and is replaced. A replica
  that cannot read the Secret at start serves a provisional certificate and stays not ready (readyz check
  `webhook-certificate`), so the Service never routes calls to a certificate the API server would reject.

Files are written atomically (temp file + rename) so the server's reloader never reads half a file; it loads
the pair only when key and certificate match, so a reload between the two renames is simply retried.
Keys are ECDSA P-256: fast to generate and accepted by every supported API server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import datetime as dt
import ipaddress
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from manager.client import SECRETS, Client, Object, PatchType, Resource
from manager.errors import ApiError, ConfigurationError, Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from manager.manager import Manager

log = logging.getLogger(__name__)

DEFAULT_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
BUNDLE_FILE = "ca-bundle.crt"
"""Secret keys: the cert dir's three files, plus the CA key and the trusted CAs (current first)."""

SECRET_NAME_ENV = "SECRET_NAME"
SECRET_TYPE = "kubernetes.io/tls"
READYZ_CHECK = "webhook-certificate"

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=30)
RESYNC_INTERVAL = 300.0
RETRY_INTERVAL = 10.0
MIN_INTERVAL = 1.0
"""Seconds between two syncs at least, so that no state of the store or the clock can make the loop spin."""
STORE_ATTEMPTS = 5
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
IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def utcnow() -> dt.datetime:
    """The current time (timezone-aware UTC)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: IssuerKey

    @property
    def cert_pem(self) -> bytes:
        """The certificate in PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key in unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
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
class CertificateSet:
    """A CA, the serving certificate it signed, and the CAs the webhook configurations must trust.

    `ca_key` is None when only the CA certificate is known (files from a previous process, or a Secret made
    by hand): the serving certificate is used until it is due, and its renewal then needs a new CA.
    `trusted` starts with `ca`.
    """

    ca: x509.Certificate
    cert: x509.Certificate
    key: PrivateKeyTypes
    ca_key: IssuerKey | None = None
    trusted: tuple[x509.Certificate, ...] = ()

    def files(self) -> tuple[bytes, bytes, bytes]:
        """`ca.crt`, `tls.crt` and `tls.key` as the cert dir holds them."""
        return _pem(self.ca), _pem(self.cert), _key_pem(self.key)

    def encode(self) -> dict[str, bytes]:
        """The store's content: the cert dir's files, the CA key (when known) and the trusted CAs."""
        ca_pem, cert_pem, key_pem = self.files()
        data = {
            CA_FILE: ca_pem,
            CERT_FILE: cert_pem,
            KEY_FILE: key_pem,
            BUNDLE_FILE: _pem_bundle(self.trusted),
        }
        if self.ca_key is not None:
            data[CA_KEY_FILE] = _key_pem(self.ca_key)
        return data


def decode_certificates(data: Mapping[str, bytes]) -> CertificateSet:
    """Parse a store's content; raises `ValueError` saying which key is missing or wrong."""
    ca = _certificate(data, CA_FILE)
    cert = _certificate(data, CERT_FILE)
    key = _private_key(data, KEY_FILE)
    ca_key: IssuerKey | None = None
    if data.get(CA_KEY_FILE, b"").strip():
        loaded = _private_key(data, CA_KEY_FILE)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{CA_KEY_FILE} is neither an EC nor an RSA key")
        if _spki(loaded.public_key()) != _spki(ca.public_key()):
            raise ValueError(f"{CA_KEY_FILE} does not match {CA_FILE}")
        ca_key = loaded
    trusted: list[x509.Certificate] = [ca]
    if data.get(BUNDLE_FILE, b"").strip():
        try:
            bundle = x509.load_pem_x509_certificates(data[BUNDLE_FILE])
        except ValueError:
            raise ValueError(f"{BUNDLE_FILE} is not a bundle of PEM certificates") from None
        trusted += [c for c in bundle if c != ca]
    return CertificateSet(ca, cert, key, ca_key, tuple(trusted))


def _certificate(data: Mapping[str, bytes], name: str) -> x509.Certificate:
    if not data.get(name, b"").strip():
        raise ValueError(f"{name} is missing")
    try:
        return x509.load_pem_x509_certificate(data[name])
    except ValueError:
        raise ValueError(f"{name} is not a PEM certificate") from None


def _private_key(data: Mapping[str, bytes], name: str) -> PrivateKeyTypes:
    if not data.get(name, b"").strip():
        raise ValueError(f"{name} is missing")
    try:
        return serialization.load_pem_private_key(data[name], password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{name} is not an unencrypted PEM private key") from None


def read_cert_dir(cert_dir: str | Path) -> CertificateSet | None:
    """The CA, certificate and key in `cert_dir`, or None when any is missing or unreadable."""
    directory = Path(cert_dir)
    try:
        data = {name: (directory / name).read_bytes() for name in (CA_FILE, CERT_FILE, KEY_FILE)}
        return decode_certificates(data)
    except (OSError, ValueError):
        return None


def reusable(
    stored: CertificateSet,
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
    dns, ips = _subject_alt_names(stored.cert)
    if not dns and not ips:
        return "certificate has no subject alternative names"
    missing = [n for n in dns_names if n not in dns]
    missing += [ip for ip in ip_addresses if str(ipaddress.ip_address(ip)) not in ips]
    if missing:
        return f"certificate does not cover {', '.join(missing)}"
    return None


def _subject_alt_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _spki(key: Any) -> bytes:
    encoded: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_bundle(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(_pem(c) for c in certificates)


BundleSource = Callable[[], Awaitable[bytes]]
"""Returns the PEM bundle to set; called after each read of a configuration, before patching it."""


async def patch_ca_bundle(
    client: Client, ca_pem: bytes, mutating: Sequence[str], validating: Sequence[str]
) -> int:
    """Set `caBundle` on every webhook of the named configurations; returns how many entries changed.

    Configurations that do not exist are skipped with a log line. Each patch is a JSON Patch guarded by a
    `test` of the resourceVersion, re-read and retried when someone else changed the object meanwhile.
    """

    async def constant() -> bytes:
        return ca_pem

    changed, _ = await _patch_all(client, constant, mutating, validating)
    return changed


async def _patch_all(
    client: Client, source: BundleSource, mutating: Sequence[str], validating: Sequence[str]
) -> tuple[int, list[bytes]]:
    """Patch every named configuration from `source`; returns the entries changed and the bundles now set."""
    changed = 0
    bundles: list[bytes] = []
    for resource, names in (
        (MUTATING_WEBHOOK_CONFIGURATIONS, mutating),
        (VALIDATING_WEBHOOK_CONFIGURATIONS, validating),
    ):
        for name in names:
            outcome = await _patch_one(client, resource, name, source)
            if outcome is not None:
                changed += outcome[0]
                bundles.append(outcome[1])
    return changed, bundles


async def _patch_one(
    client: Client, resource: Resource, name: str, source: BundleSource, attempts: int = 5
) -> tuple[int, bytes] | None:
    for attempt in range(attempts):
        try:
            current = await client.get(resource, name)
        except NotFound:
            log.info("%s %s does not exist; not setting its caBundle", resource.kind, name)
            return None
        bundle = await source()
        value = base64.b64encode(bundle).decode("ascii")
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
            return 0, bundle
        try:
            await client.patch(resource, name, operations, patch_type=PatchType.JSON)
        except (Conflict, Invalid):
            if attempt + 1 == attempts:
                raise
            continue
        except NotFound:
            return None
        log.info("set caBundle on %d webhook(s) of %s %s", len(operations) - 1, resource.kind, name)
        return len(operations) - 1, bundle
    return None


@dataclass(frozen=True)
class Snapshot:
    """A store's content as read (None: there is none) and what a write needs to replace exactly it."""

    data: Mapping[str, bytes] | None
    version: str | None = None
    source: Mapping[str, Any] | None = None


class StoreConflict(Exception):
    """The store changed since it was read (another replica wrote it): read it again."""


class CertificateStore(Protocol):
    """Where the replicas' shared certificates live."""

    description: str
    shared: bool
    """True when other processes read and write it too (so a read can fail and be stale)."""

    async def load(self) -> Snapshot:
        """The current content."""

    async def save(self, data: Mapping[str, bytes], previous: Snapshot) -> Snapshot:
        """Replace `previous` with `data`; raises `StoreConflict` when the store holds something else now."""


class MemoryStore:
    """One process's store: its memory, first filled from the cert dir so that a restart reuses the files."""

    shared = False

    def __init__(self, cert_dir: str | Path) -> None:
        self.cert_dir = Path(cert_dir)
        self.description = f"the cert dir {self.cert_dir}"
        self._snapshot: Snapshot | None = None

    async def load(self) -> Snapshot:
        if self._snapshot is None:
            stored = read_cert_dir(self.cert_dir)
            self._snapshot = Snapshot(None if stored is None else stored.encode(), "0")
        return self._snapshot

    async def save(self, data: Mapping[str, bytes], previous: Snapshot) -> Snapshot:
        current = await self.load()
        if previous.version != current.version:
            raise StoreConflict(f"{self.description} changed meanwhile")
        self._snapshot = Snapshot(dict(data), str(int(current.version or "0") + 1))
        return self._snapshot


class SecretStore:
    """A Secret that every replica reads and writes with optimistic concurrency."""

    shared = True

    def __init__(self, client: Client, namespace: str, name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.description = f"Secret {namespace}/{name}"

    async def load(self) -> Snapshot:
        try:
            secret = await self.client.get(SECRETS, self.name, self.namespace)
        except NotFound:
            return Snapshot(None)
        data: dict[str, bytes] = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                data[key] = b""
        version = str((secret.get("metadata") or {}).get("resourceVersion") or "")
        return Snapshot(data, version, secret)

    async def save(self, data: Mapping[str, bytes], previous: Snapshot) -> Snapshot:
        encoded = {key: base64.b64encode(value).decode("ascii") for key, value in data.items()}
        try:
            if previous.source is None:
                body: Object = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "type": SECRET_TYPE,
                    "data": encoded,
                }
                written = await self.client.create(SECRETS, body, self.namespace)
            else:
                body = copy.deepcopy(dict(previous.source))
                body.pop("stringData", None)
                body["data"] = encoded
                written = await self.client.replace(SECRETS, body)
        except (Conflict, NotFound) as exc:
            raise StoreConflict(f"{self.description} changed meanwhile ({exc.reason or exc.status})") from exc
        version = str((written.get("metadata") or {}).get("resourceVersion") or "")
        return Snapshot(dict(data), version, written)


class CertificateManager:
    """Keeps this replica serving the shared self-signed certificate and the caBundles trusting it."""

    def __init__(
        self,
        client: Client,
        cert_dir: str | Path,
        *,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str] = (),
        store: CertificateStore | None = None,
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
        self.store: CertificateStore = store if store is not None else MemoryStore(cert_dir)
        self.dns_names = list(dns_names)
        self.ip_addresses = [str(ipaddress.ip_address(ip)) for ip in ip_addresses]
        self.mutating_configs = list(mutating_configs)
        self.validating_configs = list(validating_configs)
        self.renew_before = renew_before
        self.ca_validity = ca_validity
        self.serving_validity = serving_validity
        self.resync_interval = resync_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self._serving: CertificateSet | None = None
        self._confirmed = False
        self._task: asyncio.Task[None] | None = None

    @property
    def certificate(self) -> x509.Certificate | None:
        """The serving certificate in the cert dir."""
        return None if self._serving is None else self._serving.cert

    @property
    def confirmed(self) -> bool:
        """True once the cert dir holds the store's certificate (not a provisional one)."""
        return self._serving is not None and self._confirmed

    def check(self) -> None:
        """Readiness: raises until this replica serves the certificate of the store."""
        if not self.confirmed:
            raise RuntimeError(f"not yet serving the webhook certificate of {self.store.description}")

    def _unexpired(self, certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        now = self.clock()
        unique: list[x509.Certificate] = []
        for c in certificates:
            if c.not_valid_after_utc > now and c not in unique:
                unique.append(c)
        return unique

    async def start(self) -> None:
        """Serve the store's certificate (or a provisional one until it is readable), then keep in step."""
        self._serving = read_cert_dir(self.cert_dir)
        self._confirmed = not self.store.shared and self._serving is not None
        try:
            settled = await self.sync()
        except (ApiError, StoreConflict) as exc:
            log.error(
                "cannot sync the webhook certificate with %s (retrying in %.0fs): %s",
                self.store.description,
                self.retry_interval,
                exc,
            )
            settled = False
        if self._serving is None:
            self._install_provisional()
        self._task = asyncio.create_task(self._run(settled), name="webhook-certificates")

    async def stop(self) -> None:
        """Stop keeping in step."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def rotate(self) -> bool:
        """Renew the serving certificate now (with a new CA when ours cannot sign one); see `sync`."""
        return await self.sync(force=True)

    async def sync(self, *, force: bool = False) -> bool:
        """Read the store, renew its certificate when due (or `force`), set the bundles, serve the result.

        Returns True when this replica serves the store's certificate and the bundles trust its CA. Raises
        `ApiError` or `StoreConflict` when the store or the bundles could not be read or written.
        """
        shared = await self._settle_store(force)
        try:
            _, bundles = await _patch_all(
                self.client,
                lambda: self._desired_bundle(shared),
                self.mutating_configs,
                self.validating_configs,
            )
        except ApiError:
            self._install(shared, trusted=False)
            raise
        ca_pem = _pem(shared.ca)
        return self._install(shared, trusted=all(ca_pem in bundle for bundle in bundles))

    async def sync_ca_bundles(self) -> int:
        """Make every webhook of our configurations trust the store's CAs; returns the entries changed."""
        fallback = self._serving
        if fallback is None:
            raise RuntimeError("no webhook certificate yet: call start() first")
        changed, _ = await _patch_all(
            self.client,
            lambda: self._desired_bundle(fallback),
            self.mutating_configs,
            self.validating_configs,
        )
        return changed

    async def _settle_store(self, force: bool) -> CertificateSet:
        """The store's certificate set, after writing a renewed one when it is absent, unusable or due."""
        for _ in range(STORE_ATTEMPTS):
            now = self.clock()
            snapshot = await self.store.load()
            shared: CertificateSet | None = None
            if snapshot.data is None:
                log.info("no webhook certificate in %s; issuing one", self.store.description)
            else:
                try:
                    shared = decode_certificates(snapshot.data)
                except ValueError as exc:
                    log.warning(
                        "%s holds no usable webhook certificate (%s); replacing it",
                        self.store.description,
                        exc,
                    )
                else:
                    problem = "renewal requested" if force else self._problem(shared, now)
                    if problem is None:
                        return shared
                    log.info("renewing the webhook certificate of %s (%s)", self.store.description, problem)
            base = shared if shared is not None else self._base()
            renewed = self._renew(base, now)
            try:
                await self.store.save(renewed.encode(), snapshot)
            except StoreConflict as exc:
                log.info("%s; reading it again", exc)
                force = False
                continue
            log.info(
                "wrote a webhook certificate%s to %s; it expires at %s",
                " of a new CA" if base is None or renewed.ca != base.ca else "",
                self.store.description,
                _when(renewed.cert.not_valid_after_utc),
            )
            return renewed
        raise StoreConflict(f"{self.store.description} kept changing ({STORE_ATTEMPTS} attempts)")

    def _problem(self, shared: CertificateSet, now: dt.datetime) -> str | None:
        return reusable(shared, self.dns_names, self.ip_addresses, renew_before=self.renew_before, now=now)

    def _base(self) -> CertificateSet | None:
        """What to renew from when the store has nothing usable: what this replica serves, if it is shared."""
        return self._serving if self.confirmed else None

    def _renew(self, base: CertificateSet | None, now: dt.datetime) -> CertificateSet:
        dns_names, ip_addresses = list(self.dns_names), list(self.ip_addresses)
        if base is not None:
            # Other replicas may be configured with more names; keep covering them so no one re-issues back.
            dns, ips = _subject_alt_names(base.cert)
            dns_names += [n for n in dns if n not in dns_names]
            ip_addresses += [ip for ip in ips if ip not in ip_addresses]
        if (
            base is not None
            and base.ca_key is not None
            and base.ca.not_valid_after_utc - now > self.serving_validity
        ):
            ca = KeyPair(base.ca, base.ca_key)
            trusted = base.trusted
        else:
            ca = generate_ca(valid_for=self.ca_validity, now=now)
            trusted = (ca.cert, *(base.trusted if base is not None else ()))
        serving = issue_serving_cert(ca, dns_names, ip_addresses, valid_for=self.serving_validity, now=now)
        return CertificateSet(ca.cert, serving.cert, serving.key, ca.key, tuple(self._unexpired(trusted)))

    async def _desired_bundle(self, fallback: CertificateSet) -> bytes:
        """The trusted CAs of the store as it is now (`fallback`'s when it holds nothing usable)."""
        snapshot = await self.store.load()
        current = fallback
        if snapshot.data is not None:
            with contextlib.suppress(ValueError):
                current = decode_certificates(snapshot.data)
        return _pem_bundle(self._unexpired(current.trusted))

    def _install(self, shared: CertificateSet, *, trusted: bool) -> bool:
        """Serve `shared` unless that would switch from a trusted certificate to a CA the bundles lack."""
        serving = self._serving
        if serving is not None and serving.files() == shared.files():
            self._serving, self._confirmed = shared, True
            return trusted
        keep = (
            serving is not None
            and self._confirmed
            and not trusted
            and serving.ca != shared.ca
            and serving.cert.not_valid_after_utc > self.clock()
        )
        if keep:
            log.info("keeping the current webhook certificate until the caBundles trust the new CA")
            return False
        ca_pem, cert_pem, key_pem = shared.files()
        write_cert_dir(self.cert_dir, ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)
        self._serving, self._confirmed = shared, True
        log.info(
            "serving the webhook certificate of %s (serial %x, expires at %s)",
            self.store.description,
            shared.cert.serial_number,
            _when(shared.cert.not_valid_after_utc),
        )
        return trusted

    def _install_provisional(self) -> None:
        """A certificate of a throw-away CA, so the server can start; readiness stays red until `sync`."""
        now = self.clock()
        ca = generate_ca("kserve-webhook-provisional-ca", valid_for=self.serving_validity, now=now)
        serving = issue_serving_cert(
            ca, self.dns_names, self.ip_addresses, valid_for=self.serving_validity, now=now
        )
        write_cert_dir(self.cert_dir, ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
        self._serving = CertificateSet(ca.cert, serving.cert, serving.key, None, (ca.cert,))
        self._confirmed = False
        log.warning("serving a provisional webhook certificate until %s can be read", self.store.description)

    def _seconds_to_renewal(self) -> float:
        if self._serving is None:
            return 0.0
        due = self._serving.cert.not_valid_after_utc - self.renew_before
        return max(0.0, (due - self.clock()).total_seconds())

    async def _run(self, settled: bool) -> None:
        while True:
            wait = min(self.resync_interval, self._seconds_to_renewal()) if settled else self.retry_interval
            await asyncio.sleep(max(wait, MIN_INTERVAL))
            try:
                settled = await self.sync()
            except (ApiError, StoreConflict, ConfigurationError) as exc:
                log.error(
                    "cannot sync the webhook certificate with %s (retrying in %.0fs): %s",
                    self.store.description,
                    self.retry_interval,
                    exc,
                )
                settled = False


def _when(moment: dt.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def setup_self_signed(
    manager: Manager,
    *,
    namespace: str,
    cert_dir: str | Path = DEFAULT_CERT_DIR,
    secret_name: str = "",
    service_name: str = WEBHOOK_SERVICE,
    mutating_configs: Sequence[str] = MUTATING_CONFIGS,
    validating_configs: Sequence[str] = VALIDATING_CONFIGS,
    extra_dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> CertificateManager:
    """Register self-signed certificate management on `manager`; call it BEFORE adding the WebhookServer.

    With `secret_name` the certificate is shared by every replica through that Secret in `namespace`;
    without, it lives in this process. Runnables start in the order they were added, so the certificate
    is on disk before the server loads it.
    """
    store: CertificateStore = (
        SecretStore(manager.client, namespace, secret_name) if secret_name else MemoryStore(cert_dir)
    )
    certificates = CertificateManager(
        manager.client,
        cert_dir,
        dns_names=[*service_dns_names(service_name, namespace), *extra_dns_names],
        ip_addresses=ip_addresses,
        store=store,
        mutating_configs=mutating_configs,
        validating_configs=validating_configs,
    )
    manager.add_runnable(certificates, needs_leader=False)
    manager.add_readyz_check(READYZ_CHECK, certificates.check)
    return certificates
