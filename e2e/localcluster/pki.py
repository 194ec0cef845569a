"""Generate the throw-away PKI a local control plane needs.

kube-apiserver refuses to serve without TLS and needs a key to sign service-account tokens, and
kube-controller-manager needs the CA (published to pods as ``ca.crt``), the service-account private key
(to mint token secrets) and a CA key pair (for its CSR signing controller). Everything is generated fresh
per cluster so no secret material lives in the repository. The CA and serving certificates come from the
same code that makes the webhook server's self-signed certificates (ECDSA P-256, milliseconds to
generate); the service-account key is RSA because that is what Kubernetes documents and every client
verifies.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from webhooks.certs import generate_ca, issue_serving_cert

VALIDITY = datetime.timedelta(days=7)

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    controller_manager_cert: Path
    controller_manager_key: Path
    service_account_key: Path
    service_account_pub: Path


def _write_key(path: Path, key: _PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate_pki(directory: Path, *, service_ip: str) -> Pki:
    """Write a CA, serving certificates and the service-account key pair into ``directory``.

    ``service_ip`` is the first address of the service CIDR: in-cluster clients reach the apiserver there.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = generate_ca("kserve-py-localcluster-ca", valid_for=VALIDITY)
    apiserver = issue_serving_cert(
        ca,
        [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ["127.0.0.1", "::1", service_ip],
        valid_for=VALIDITY,
    )
    kcm = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"], valid_for=VALIDITY)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        apiserver_cert=directory / "apiserver.crt",
        apiserver_key=directory / "apiserver.key",
        controller_manager_cert=directory / "controller-manager.crt",
        controller_manager_key=directory / "controller-manager.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    for cert_path, key_path, pair in (
        (pki.ca_cert, pki.ca_key, ca),
        (pki.apiserver_cert, pki.apiserver_key, apiserver),
        (pki.controller_manager_cert, pki.controller_manager_key, kcm),
    ):
        _write_cert(cert_path, pair.cert)
        _write_key(key_path, pair.key)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
